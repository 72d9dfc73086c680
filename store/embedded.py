"""An embedded, private Postgres (the `pgserver` package) for one machine and for tests.

The data directory is kept, so the next start reuses it; the server listens on a Unix socket in
that directory only, never on a TCP port.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

log = logging.getLogger("ember.store.embedded")


@dataclass(slots=True)
class EmbeddedPostgres:
    data_dir: Path
    url: str
    _server: Any

    def stop(self) -> None:
        self._server.cleanup()


def start_embedded_postgres(data_dir: Path) -> EmbeddedPostgres:
    """Start (or reuse, when already running) the Postgres whose data lives in `data_dir`."""
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    data_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI): harmless here.
        warnings.simplefilter("ignore")
        import pgserver  # imported here: only needed when no DATABASE_URL is given

        server = pgserver.get_server(data_dir, cleanup_mode="stop")  # type: ignore[attr-defined]
    url = server.get_uri()
    log.info("embedded postgres ready", extra={"data_dir": str(data_dir)})
    return EmbeddedPostgres(data_dir=data_dir, url=url, _server=server)


def with_database(url: str, database: str) -> str:
    """The same server URL, pointing at another database."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + quote(database)))
