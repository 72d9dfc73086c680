"""A local append-only file of the activation records not yet in Postgres, so that a killed
gateway (SIGKILL, OOM) loses none: the next start on the same state dir writes them.

Each record is appended with one `write(2)` as the call finishes: once the call returns, the
record is in the kernel's page cache, which outlives the process. The writer syncs the file to
disk before each batch (off the call path), and empties it whenever every record in it is
stored. A record torn by a crash mid-write is skipped at replay.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import uuid
from pathlib import Path
from typing import Any

import orjson

from store import Activation, ActivationId, DatabaseUnavailable, Store

log = logging.getLogger("ember.gateway.activations")


def _encode(a: Activation) -> bytes:
    return orjson.dumps(
        {
            "id": a.id,
            "function": a.function,
            "version": a.version,
            "started_at": a.started_at,
            "duration_ms": a.duration_ms,
            "cold": a.cold,
            "status": a.status,
            "http_status": a.http_status,
            "error": a.error,
            "logs": a.logs,
        },
        option=orjson.OPT_APPEND_NEWLINE,
    )


def _decode(line: bytes) -> Activation:
    d: dict[str, Any] = orjson.loads(line)
    return Activation(
        id=ActivationId(uuid.UUID(d["id"])),
        function=d["function"],
        version=int(d["version"]),
        started_at=dt.datetime.fromisoformat(d["started_at"]),
        duration_ms=float(d["duration_ms"]),
        cold=bool(d["cold"]),
        status=d["status"],
        http_status=int(d["http_status"]),
        error=d["error"],
        logs=d["logs"],
    )


class ActivationSpool:
    """`<state_dir>/activations.spool`: one JSON line per record not yet stored. One platform
    per state dir (its lock) writes it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._dirty = os.fstat(self._fd).st_size > 0
        self.failed = False

    def append(self, activation: Activation) -> None:
        try:
            os.write(self._fd, _encode(activation))
        except OSError as exc:  # a full disk: the record is still written to Postgres
            if not self.failed:
                log.error("cannot append to %s: %s", self.path, exc)
            self.failed = True
            return
        self._dirty = True

    def sync(self) -> None:
        """To disk (what a machine crash would lose); a thread may call it."""
        os.fdatasync(self._fd)

    def clear(self) -> None:
        """Every record appended so far is stored: start the file afresh."""
        if self._dirty:
            os.ftruncate(self._fd, 0)
            self._dirty = False

    def read(self) -> list[Activation]:
        """The records a previous run left (a torn last line is skipped)."""
        records = []
        skipped = 0
        for line in self.path.read_bytes().splitlines():
            try:
                records.append(_decode(line))
            except (ValueError, KeyError, TypeError):
                skipped += 1
        if skipped:
            log.warning("skipped %d unreadable lines of %s", skipped, self.path)
        return records

    def close(self) -> None:
        os.close(self._fd)


async def replay_spool(spool: ActivationSpool, store: Store) -> int:
    """Store what a previous run left in the spool, then empty it; returns how many records
    were new. Records the database refuses are set aside in `<spool>.refused`, never block
    the start."""
    records = spool.read()
    restored = 0
    if records:
        try:
            restored = await store.restore_activations(records)
        except DatabaseUnavailable:
            raise
        except Exception as exc:
            aside = spool.path.with_name(spool.path.name + ".refused")
            log.error(
                "could not restore %d activation records from %s (%r); kept in %s",
                len(records),
                spool.path,
                exc,
                aside,
            )
            with aside.open("ab") as f:
                f.write(spool.path.read_bytes())
        else:
            log.warning(
                "restored activation records a killed gateway had not written",
                extra={"records": len(records), "new": restored},
            )
    spool.clear()
    return restored
