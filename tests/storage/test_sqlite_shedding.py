"""The SQLite writer sheds new writes once the oldest queued one waited too long."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.helpers import NOW
from usher.protocol.errors import StorageBusy
from usher.storage.sqlite import SQLiteStorage
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
    with pytest.raises(StorageBusy):
        await storage.record_check(REQUEST, decide, NOW)
    gate.set()
    # Everything accepted before the shedding still completes, durably.
    assert (await blocking).attempt_id and (await queued).attempt_id
    # With the queue drained, writes are accepted again.
    assert (await storage.record_check(REQUEST, decide, NOW)).attempt_id
