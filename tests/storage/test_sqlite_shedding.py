"""The SQLite writer sheds new writes once the oldest queued one waited too
long, or once the work queued ahead would take too long."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import NOW
from usher.protocol.errors import StorageBusy
from usher.storage.sqlite import SQLiteStorage
from usher.storage.sqlite import engine as sqlite_engine
from usher.storage.sqlite.cache import TicketCache
from usher.storage.sqlite.checks import CheckGroup, CheckItem
from usher.tickets.decision import decide
from usher.tickets.model import CheckRequest, Decision, Ticket

pytestmark = pytest.mark.anyio

REQUEST = CheckRequest(key="nope", password="pw", app="x-live", video="v", ip="10.0.0.1")


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[SQLiteStorage]:
    s = SQLiteStorage(str(tmp_path / "shed.db"))
    await s.open()
    yield s
    await s.close()


async def test_writes_are_shed_while_the_queue_is_stale_and_accepted_after(
    storage: SQLiteStorage,
) -> None:
    storage.max_write_wait = 0.05
    gate = threading.Event()

    def stuck(ticket: Ticket | None, request: CheckRequest, now: int) -> Decision:
        # Runs on the writer thread: holds the writer as a stalled disk would.
        gate.wait(10)
        return decide(ticket, request, now)

    blocking = asyncio.ensure_future(storage.record_check(REQUEST, stuck, NOW))
    await asyncio.sleep(0.05)  # the writer has taken the blocking job
    queued = asyncio.ensure_future(storage.record_check(REQUEST, decide, NOW))
    await asyncio.sleep(0.15)  # the queued job is now older than the budget
    assert storage.sheds_checks()  # the hot path's early look agrees
    with pytest.raises(StorageBusy):
        await storage.record_check(REQUEST, decide, NOW)
    gate.set()
    # Everything accepted before the shedding still completes, durably.
    assert (await blocking).attempt_id and (await queued).attempt_id
    # With the queue drained, writes are accepted again.
    assert not storage.sheds_checks()
    assert (await storage.record_check(REQUEST, decide, NOW)).attempt_id


@pytest.mark.xdist_group("timing")  # bounds a duration (see conftest.py, xdist)
async def test_writes_are_shed_when_the_work_queued_ahead_would_take_too_long(
    storage: SQLiteStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Checks made slow (5 ms each, as on a database whose pages are not in
    # memory). All 300 arrive at once, when the queue's oldest write has not
    # waited at all: by age alone every one was accepted, and the last waited
    # 1.5 s for the 299 ahead of it.
    run_group = CheckGroup.run_group

    def slow(self: CheckGroup, conn: sqlite3.Connection, items: list[CheckItem]) -> Any:
        time.sleep(0.005 * len(items))
        return run_group(self, conn, items)

    monkeypatch.setattr(CheckGroup, "run_group", slow)
    # A budget that holds a batch (0.1 s of jobs: 20 of these) and about as
    # much again queued ahead, so that some of the 300 are accepted.
    storage.max_write_wait = 0.25
    for _ in range(3):  # the writer learns what a check costs
        await storage.record_check(REQUEST, decide, NOW)

    async def timed() -> float | None:
        started = time.perf_counter()
        try:
            await storage.record_check(REQUEST, decide, NOW)
        except StorageBusy:
            return None
        return time.perf_counter() - started

    waited = await asyncio.gather(*(timed() for _ in range(300)))
    accepted = [w for w in waited if w is not None]
    assert 10 <= len(accepted) < 300
    # The budget (own batch included) and some slack for a busy machine.
    assert max(accepted) < 0.45, sorted(accepted)[-5:]


def _engine_with_queue(tmp_path: Path, queued: int) -> sqlite_engine.SQLiteEngine:
    """An engine that was never opened, with ``queued`` jobs waiting."""
    engine = sqlite_engine.SQLiteEngine(str(tmp_path / "never-opened.db"), state=TicketCache())
    engine._queue.extend(
        sqlite_engine._Job(lambda _conn: None, asyncio.Future()) for _ in range(queued)
    )
    return engine


async def test_shedding_expects_the_writers_wall_clock_not_its_median_job(
    tmp_path: Path,
) -> None:
    engine = _engine_with_queue(tmp_path, 99)
    now = 1000.0
    # Batches whose jobs took 0.2 ms each by the median, but whose COMMIT,
    # GIL waits and slow batches made the writer commit one every 0.5 ms
    # (as measured under a flood at 4,096 connections: 0.14-0.3 vs 0.39 ms).
    for worked_ms, wall_ms in ((0.2, 0.4), (0.2, 0.4), (0.2, 0.4), (0.6, 0.8)):
        engine._learn(worked_ms / 1000 * 500, 500, wall_ms / 1000 * 500, now)
    assert engine._per_job == pytest.approx(0.0002)
    # The 99 queued ahead, then the job's own batch: as many again, itself
    # included (a batch holds 500 at 0.2 ms, the median), all at 0.5 ms.
    expected = 99 * 0.0005 + 100 * 0.0005
    assert engine._expected_wait(now) == pytest.approx(expected)
    # A lone slow job (a count filter filled: 2 s) moves neither figure.
    engine._learn(2.0, 1, 2.0, now)
    assert engine._per_job == pytest.approx(0.0002)
    assert engine._expected_wait(now) == pytest.approx(expected)
    # Half of a batch of 200 still being written comes on top.
    engine._in_flight = (now - 0.05, 200)
    assert engine._expected_wait(now) == pytest.approx(0.05 + expected)
    # Behind a queue longer than a batch, its own batch is a full one.
    engine._queue.extend(engine._queue[:1] * 900)
    assert engine._expected_wait(now) == pytest.approx(0.05 + (999 + 500) * 0.0005)


async def test_shedding_forgets_old_bursts_and_falls_back_to_the_median(
    tmp_path: Path,
) -> None:
    engine = _engine_with_queue(tmp_path, 9)
    now = 1000.0
    assert engine._expected_wait(now) == 0.0  # nothing learned: the age rule alone
    engine._learn(0.001 * 8, 8, 0.004 * 8, now)  # a burst: 4 ms a job
    # Nine ahead, then its own batch of ten (up to 100 would fit in 0.1 s
    # at the median of 1 ms a job).
    assert engine._expected_wait(now) == pytest.approx((9 + 10) * 0.004)
    # Small batches alone: their commit is one per job and says little of a
    # burst's cost, so the median of the jobs' own time stands in for it.
    later = now + sqlite_engine.DRAIN_WINDOW + 1
    engine._learn(0.001, 1, 0.003, later)
    assert engine._expected_wait(later) == pytest.approx((9 + 10) * 0.001)
