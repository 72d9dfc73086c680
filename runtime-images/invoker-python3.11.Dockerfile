# The invoker runtime for Python 3.11: a generic invoker that the scheduler specializes by pushing
# a function's code over the invoker protocol. Build from the repository root:
#   docker build -f runtime-images/invoker-python3.11.Dockerfile -t ember/invoker:0.1.0-py3.11 .
# It holds the invoker package only (no gateway, scheduler or store code, no credentials).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MALLOC_ARENA_MAX=2 \
    HOME=/tmp \
    PYTHONPATH=/opt/ember \
    EMBER_INVOKER_HOST=0.0.0.0 \
    EMBER_INVOKER_PORT=8080

RUN pip install "orjson>=3.9" "uvloop>=0.19" \
    && groupadd --gid 10001 ember \
    && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin ember

COPY invoker/ /opt/ember/invoker/

USER 10001:10001
WORKDIR /tmp
EXPOSE 8080
# The same command the local backend and tests/k8s run (scheduler.backends.kubernetes.INVOKER_COMMAND).
CMD ["python", "-m", "invoker"]
