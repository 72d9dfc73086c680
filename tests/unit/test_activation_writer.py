"""The activation writer and its spool: one COPY per round, not one per record that arrives
while a COPY is in flight; a spool that a steady stream of calls does not keep from emptying."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import pytest

from calls.activations import ActivationWriter, new_activation_id
from calls.spool import ActivationSpool
from gateway.platform import _flush
from store import Activation, DatabaseUnavailable, Store


def _record(n: int) -> Activation:
    return Activation(
        id=new_activation_id(),
        function="echo",
        version=1,
        started_at=dt.datetime.now(dt.UTC),
        duration_ms=float(n),
        cold=False,
        status="ok",
        http_status=200,
    )


class SlowStore:
    """A store whose next COPY, once `hold` is set, lasts until the test lets it finish:
    meanwhile calls add records. Later COPYs go through at once."""

    def __init__(self) -> None:
        self.batches: list[list[Activation]] = []
        self.hold = False
        self.copying = asyncio.Event()
        self.finish = asyncio.Event()

    async def record_activations(self, activations: Sequence[Activation]) -> None:
        if self.hold:
            self.hold = False
            self.copying.set()
            await self.finish.wait()
            self.finish.clear()
            self.copying.clear()
        self.batches.append(list(activations))


def _writer(store: SlowStore, spool: ActivationSpool | None = None) -> ActivationWriter:
    return ActivationWriter(cast(Store, store), spool=spool)


async def _flush_while(
    store: SlowStore, writer: ActivationWriter, arriving: list[int]
) -> list[Activation]:
    """One flush, with records added while its first COPY is in flight; returns those."""
    store.hold = True
    flushing = asyncio.create_task(writer.flush())
    await store.copying.wait()
    added = [_record(n) for n in arriving]
    for a in added:
        writer.add(a)
    store.finish.set()
    await flushing
    return added


async def test_a_flush_writes_what_was_pending_and_leaves_later_records_to_the_next_round() -> None:
    store = SlowStore()
    writer = _writer(store)
    for n in range(3):
        writer.add(_record(n))
    later = await _flush_while(store, writer, [3, 4])
    assert [[a.duration_ms for a in b] for b in store.batches] == [[0, 1, 2]]
    assert all(writer.pending(a.id) is not None for a in later)  # pending, not lost
    await _flush_while(store, writer, [])
    assert [[a.duration_ms for a in b] for b in store.batches] == [[0, 1, 2], [3, 4]]
    assert not writer._has_pending.is_set()


async def test_the_spool_empties_under_a_steady_stream_of_calls(tmp_path: Path) -> None:
    store = SlowStore()
    spool = ActivationSpool(tmp_path / "activations.spool")
    writer = _writer(store, spool)
    try:
        writer.add(_record(0))
        sizes = []
        for round_ in range(1, 5):  # records always arrive during each COPY
            await _flush_while(store, writer, [round_])
            sizes.append([p.stat().st_size for p in spool.paths])
        # One of the two files is emptied every round: neither grows for as long as calls come.
        assert all(0 in pair for pair in sizes), sizes
        assert len(spool.read()) == 1  # only the record that arrived during the last COPY
        await _flush_while(store, writer, [])
        assert spool.read() == []
        assert [p.stat().st_size for p in spool.paths] == [0, 0]
    finally:
        spool.close()


async def test_a_spool_keeps_every_record_not_yet_stored(tmp_path: Path) -> None:
    store = SlowStore()
    spool = ActivationSpool(tmp_path / "activations.spool")
    writer = _writer(store, spool)
    try:
        first = [_record(n) for n in range(3)]
        for a in first:
            writer.add(a)
        store.hold = True
        flushing = asyncio.create_task(writer.flush())
        await store.copying.wait()
        later = [_record(n) for n in range(3, 5)]
        for a in later:
            writer.add(a)
        # Mid-COPY, a crash would replay the batch in flight and the records added since.
        assert {a.id for a in spool.read()} == {a.id for a in first + later}
        store.finish.set()
        await flushing
        assert {a.id for a in spool.read()} == {a.id for a in later}
    finally:
        spool.close()


def test_a_torn_line_in_one_spool_file_does_not_swallow_the_other_files_first(
    tmp_path: Path,
) -> None:
    spool = ActivationSpool(tmp_path / "activations.spool")
    try:
        spool.append(_record(0))
        spool.turn()  # the other file is empty: appends go there now
        spool.append(_record(1))
        with spool.paths[0].open("ab") as f:
            f.write(b'{"id": "torn')
        assert [a.duration_ms for a in spool.read()] == [0, 1]
    finally:
        spool.close()


class AwayStore:
    """A database that is away: every COPY fails as asyncpg's would, translated."""

    async def record_activations(self, activations: Sequence[Activation]) -> None:
        raise DatabaseUnavailable("connection refused")


async def test_records_a_failed_copy_held_stay_pending_and_in_the_spool(tmp_path: Path) -> None:
    spool = ActivationSpool(tmp_path / "activations.spool")
    writer = ActivationWriter(cast(Store, AwayStore()), spool=spool)
    try:
        records = [_record(n) for n in range(3)]
        for a in records:
            writer.add(a)
        for _ in range(2):  # the round turns the spool to the other file, then fails
            with pytest.raises(DatabaseUnavailable):
                await writer.flush()
        assert writer.backlog == 3
        assert {a.id for a in spool.read()} == {a.id for a in records}
    finally:
        spool.close()


async def test_the_writer_empties_spool_files_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A truncation can wait for the file system's journal (5-7 ms seen on a busy disk): never
    on the thread that serves calls. Safe in a thread because the file appends go to is left
    alone."""
    truncating_threads = []
    real_ftruncate = os.ftruncate

    def ftruncate(fd: int, length: int) -> None:
        truncating_threads.append(threading.get_ident())
        real_ftruncate(fd, length)

    monkeypatch.setattr(os, "ftruncate", ftruncate)
    store = SlowStore()
    spool = ActivationSpool(tmp_path / "activations.spool")
    writer = _writer(store, spool)
    try:
        writer.add(_record(0))
        await _flush_while(store, writer, [1])
        await _flush_while(store, writer, [])
        assert len(truncating_threads) == 2  # each file once
        assert threading.get_ident() not in truncating_threads
        assert [p.stat().st_size for p in spool.paths] == [0, 0]
    finally:
        spool.close()


def test_a_spool_leaves_the_file_appends_go_to_alone(tmp_path: Path) -> None:
    spool = ActivationSpool(tmp_path / "activations.spool")
    try:
        spool.append(_record(0))
        spool.stored(1)  # stored, but appends still go to that file: kept until turned from
        assert len(spool.read()) == 1
        mark = spool.turn()
        spool.append(_record(1))
        spool.stored(mark)
        assert [a.duration_ms for a in spool.read()] == [1]
    finally:
        spool.close()


async def test_a_writer_stopped_mid_copy_leaves_that_batch_to_the_last_flush(
    tmp_path: Path,
) -> None:
    """A gateway stopping cancels the writer task (tasks.close), then flushes (`_flush`): a
    COPY in flight at the cancel did not store its batch, which must be written by that flush
    or stay in the spool for the next start, not be dropped from both."""
    store = SlowStore()
    spool = ActivationSpool(tmp_path / "activations.spool")
    writer = ActivationWriter(cast(Store, store), spool=spool, batch_delay_s=0.0)
    try:
        records = [_record(n) for n in range(3)]
        for a in records:
            writer.add(a)
        store.hold = True
        running = asyncio.create_task(writer.run(), name="activation writer")
        await store.copying.wait()  # the COPY of the three is in flight
        later = _record(3)
        writer.add(later)
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        assert store.batches == []  # the cancelled COPY stored nothing
        await _flush(writer)  # what a stopping platform does next
        stored = {a.id for batch in store.batches for a in batch}
        spooled = {a.id for a in spool.read()}
        assert stored | spooled == {a.id for a in [*records, later]}
    finally:
        spool.close()


class OutageStore(SlowStore):
    """Away (as AwayStore) until `back` is set; restores as Store does (skips stored ids)."""

    def __init__(self) -> None:
        super().__init__()
        self.back = False
        self.ids: set[object] = set()

    async def record_activations(self, activations: Sequence[Activation]) -> None:
        if not self.back:
            raise DatabaseUnavailable("connection refused")
        await super().record_activations(activations)
        self.ids |= {a.id for a in activations}

    async def restore_activations(self, activations: Sequence[Activation]) -> int:
        await self.record_activations([a for a in activations if a.id not in self.ids])
        return len(activations)


async def test_records_dropped_from_memory_in_an_outage_are_written_from_the_spool(
    tmp_path: Path,
) -> None:
    """Past `max_pending` (100,000: 17 s of calls at 6,000/s) the oldest records leave memory
    while Postgres is away; they are in the spool, so they are written from it when Postgres
    is back, not lost when that spool file is emptied."""
    store = OutageStore()
    spool = ActivationSpool(tmp_path / "activations.spool")
    writer = ActivationWriter(cast(Store, store), spool=spool, max_pending=3)
    try:
        records = []
        for n in range(8):  # an outage: each round fails, calls go on
            records.append(_record(n))
            writer.add(records[-1])
            if n % 3 == 2:
                with pytest.raises(DatabaseUnavailable):
                    await writer.flush()
        assert writer.backlog == 3
        store.back = True
        for _ in range(3):  # two rounds turn away from and empty each file
            await writer.flush()
        assert store.ids == {a.id for a in records}
        assert writer.dropped == 0
        assert spool.read() == []
    finally:
        spool.close()
