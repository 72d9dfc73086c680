"""`python -m scheduler`: the scheduler process on Kubernetes (see `scheduler.service`)."""

from __future__ import annotations

import sys

from config.env import SettingsError
from scheduler.logs import configure_logging
from scheduler.service import ServiceSettings, serve


def main() -> None:
    configure_logging()
    try:
        settings = ServiceSettings.from_env()
    except SettingsError as exc:
        print(f"ember scheduler: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    import uvloop

    try:
        code = uvloop.run(serve(settings))
    except OSError as exc:
        print(
            f"ember scheduler: cannot serve on {settings.host}:{settings.port}: {exc}",
            file=sys.stderr,
        )
        raise SystemExit(1) from None
    raise SystemExit(code)


if __name__ == "__main__":
    main()
