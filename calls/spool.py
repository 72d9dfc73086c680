"""A local append-only file of the activation records not yet in Postgres, so that a killed
gateway (SIGKILL, OOM) loses none: the next start on the same state dir writes them.

Each record is appended with one `write(2)` as the call finishes: once the call returns, the
record is in the kernel's page cache, which outlives the process. The writer syncs the files to
disk before each batch (off the call path), and empties a file once every record in it is
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
    """`<state_dir>/activations.spool` and `activations.spool.1`: one JSON line per record not
    yet stored. Appends go to one of the two files; when the writer takes a batch it turns
    appends to the other file if that one is empty (`turn`), and empties each file whose
    records are all stored (`stored`). So a steady stream of calls, which always leaves a few
    records pending, does not keep a file from being emptied. One platform per state dir (its
    lock) writes it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.paths = (path, path.with_name(path.name + ".1"))
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        self._fds = [os.open(p, flags, 0o600) for p in self.paths]
        self._current = 0
        self._appended = 0
        """Records appended so far: the mark of the latest."""
        self._last: list[int | None] = [0 if os.fstat(fd).st_size > 0 else None for fd in self._fds]
        """Per file, the mark of the last record appended to it; None when it is empty."""
        self._overflowed = [False, False]
        """Per file: it may hold a record the writer dropped from memory (`overflowed`)."""
        self.failed = False

    def append(self, activation: Activation) -> None:
        try:
            os.write(self._fds[self._current], _encode(activation))
        except OSError as exc:  # a full disk: the record is still written to Postgres
            if not self.failed:
                log.error("cannot append to %s: %s", self.paths[self._current], exc)
            self.failed = True
            return
        self._appended += 1
        self._last[self._current] = self._appended

    def turn(self) -> int:
        """The mark of the latest record appended; later ones go to the other file if it is
        empty."""
        other = 1 - self._current
        if self._last[other] is None:
            self._current = other
        return self._appended

    def overflowed(self) -> None:
        """The writer dropped its oldest record from memory (Postgres away past its
        `max_pending`): the files holding records hold it, and are written before they are
        emptied (`stored`)."""
        for i, last in enumerate(self._last):
            if last is not None:
                self._overflowed[i] = True

    def stored(self, mark: int) -> list[int]:
        """Every record the writer had in memory up to `mark` is stored: empty the files that
        hold no later one, except the one appends go to (emptied once `turn` has moved away
        from it). Returns those left because they hold records the writer dropped: write
        their `records_of`, then `empty` them. A thread may call it while appends go on,
        though not alongside `turn`: the writer does, as a truncation can wait milliseconds
        for the file system's journal on a busy disk."""
        left = []
        for i, last in enumerate(self._last):
            if i != self._current and last is not None and last <= mark:
                if self._overflowed[i]:
                    left.append(i)
                else:
                    self.empty(i)
        return left

    def records_of(self, i: int) -> list[Activation]:
        """The records of file `i` (a thread may call it, as `stored`)."""
        return self._decoded(self.paths[i].read_bytes().splitlines())

    def empty(self, i: int) -> None:
        """Every record of file `i` is stored (not the file appends go to)."""
        os.ftruncate(self._fds[i], 0)
        self._last[i] = None
        self._overflowed[i] = False

    def sync(self) -> None:
        """To disk (what a machine crash would lose); a thread may call it."""
        for fd in self._fds:
            os.fdatasync(fd)

    def clear(self) -> None:
        """Every record appended so far is stored, and none is being appended (at a start)."""
        for i, fd in enumerate(self._fds):
            os.ftruncate(fd, 0)
            self._last[i] = None
            self._overflowed[i] = False

    def read_bytes(self) -> bytes:
        return b"".join(p.read_bytes() for p in self.paths)

    def read(self) -> list[Activation]:
        """The records a previous run left (a torn last line is skipped)."""
        # (per file: a line torn in one must not swallow the next file's)
        return self._decoded([line for p in self.paths for line in p.read_bytes().splitlines()])

    def _decoded(self, lines: list[bytes]) -> list[Activation]:
        records = []
        skipped = 0
        for line in lines:
            try:
                records.append(_decode(line))
            except (ValueError, KeyError, TypeError):
                skipped += 1
        if skipped:
            log.warning("skipped %d unreadable lines of %s", skipped, self.path)
        return records

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)


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
                f.write(spool.read_bytes())
        else:
            log.warning(
                "restored activation records a killed gateway had not written",
                extra={"records": len(records), "new": restored},
            )
    spool.clear()
    return restored
