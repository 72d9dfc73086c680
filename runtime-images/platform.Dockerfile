# The platform image: the gateway (`python -m gateway`), the scheduler (`python -m scheduler`) and
# the node environment cache (`python -m gateway.envcache`).
# Build from the repository root:
#   docker build -f runtime-images/platform.Dockerfile -t ember/platform:0.1.0 .
FROM python:3.11-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY builds/ builds/
COPY calls/ calls/
COPY config/ config/
COPY events/ events/
COPY fn/ fn/
COPY gateway/ gateway/
COPY invoker/ invoker/
COPY scheduler/ scheduler/
COPY store/ store/
RUN python -m venv /opt/ember && /opt/ember/bin/pip install .

FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/ember/bin:$PATH \
    HOME=/tmp \
    FN_HOST=0.0.0.0 \
    FN_PORT=8080

RUN groupadd --gid 10001 ember \
    && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin ember
COPY --from=build /opt/ember /opt/ember

USER 10001:10001
WORKDIR /tmp
EXPOSE 8080 8081
# The gateway by default; the scheduler Deployment runs ["python", "-m", "scheduler"].
CMD ["python", "-m", "gateway"]
