"""Group commit of playback checks on PostgreSQL (storage/postgres/checks.py).

The shared contract already checks the rules; these tests pin what batching
many checks into one transaction can get wrong: pairing each caller with its
own attempt row, exact use counts across nodes, a failing decider taking its
neighbours down, shedding, and closing with checks queued.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import anyio
import psycopg
import pytest

from tests.helpers import NOW, DeciderAbort
from usher.protocol.errors import StorageBusy, StorageUnavailable
from usher.storage.postgres import PostgresStorage
from usher.storage.postgres.checks import IN_FLIGHT, CheckBatcher
from usher.storage.postgres.sql import Conn
from usher.tickets.decision import decide
from usher.tickets.model import (
    AttemptFilter,
    CheckOutcome,
    CheckRequest,
    Decision,
    Page,
    Ticket,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
async def storage(pg_url: str) -> AsyncIterator[PostgresStorage]:
    s = PostgresStorage(pg_url)
    await s.open()
    yield s
    await s.close()


@pytest.fixture
def batch_sizes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every batch transaction run (batches of one run alone)."""
    sizes: list[int] = []
    original = CheckBatcher._transaction

    async def spy(self: CheckBatcher, batch: list[object], conn: Conn) -> object:
        sizes.append(len(batch))
        return await original(self, batch, conn)  # type: ignore[arg-type]

    monkeypatch.setattr(CheckBatcher, "_transaction", spy)
    return sizes


async def _with_ticket(storage: PostgresStorage, uses: int) -> None:
    await storage.create_account(username="demo", api_key="K", secret="S", cdn=1, now=NOW)
    await storage.insert_ticket(
        Ticket("k.1", 1, "pw", "", "v", "demo-live", uses, 0, True, NOW - 10, NOW + 3600)
    )


def _request(ip: str = "192.0.2.1", video: str = "v") -> CheckRequest:
    return CheckRequest(key="k.1", password="pw", app="demo-live", video=video, ip=ip)


def _ip(i: int) -> str:
    return f"10.0.{i // 256}.{i % 256}"


async def test_one_transaction_holds_many_checks_each_paired_with_its_attempt(
    storage: PostgresStorage, batch_sizes: list[int]
) -> None:
    await _with_ticket(storage, uses=0)
    outcomes = await asyncio.gather(
        *(storage.record_check(_request(ip=_ip(i)), decide, NOW) for i in range(300))
    )
    assert all(outcome.decision.allowed for outcome in outcomes)
    assert max(batch_sizes) >= 50, batch_sizes
    attempts = await storage.list_attempts(1, AttemptFilter(), Page(limit=1000))
    ip_of = {attempt.id: attempt.ip for attempt in attempts}
    assert len(ip_of) == 300
    for i, outcome in enumerate(outcomes):
        assert ip_of[outcome.attempt_id] == _ip(i)
    # Each caller saw the ticket as the checks before it left it.
    assert sorted(o.ticket.use_count for o in outcomes if o.ticket) == list(range(300))
    ticket = await storage.get_ticket(1, "k.1")
    assert ticket is not None and ticket.use_count == 300


async def test_two_nodes_allow_exactly_the_ticket_uses_between_them(
    storage: PostgresStorage, pg_url: str, batch_sizes: list[int]
) -> None:
    await _with_ticket(storage, uses=25)
    other = PostgresStorage(pg_url)
    await other.open()

    async def check(node: PostgresStorage, i: int) -> CheckOutcome:
        # In waves, so each node runs many batches that overlap the other's.
        await asyncio.sleep((i % 12) * 0.002)
        return await node.record_check(_request(ip=_ip(i)), decide, NOW)

    try:
        results = await asyncio.gather(
            *(check(node, i) for i in range(60) for node in (storage, other))
        )
    finally:
        await other.close()
    assert sum(outcome.decision.allowed for outcome in results) == 25, batch_sizes
    assert max(batch_sizes) > 1
    assert len(batch_sizes) >= 4, batch_sizes
    ticket = await storage.get_ticket(1, "k.1")
    assert ticket is not None and ticket.use_count == 25
    assert await storage.count_attempts(1, AttemptFilter()) == 120


@pytest.mark.parametrize("error", [RuntimeError("boom"), DeciderAbort()])
async def test_a_raising_decider_fails_only_its_check_in_a_batch(
    storage: PostgresStorage, batch_sizes: list[int], error: BaseException
) -> None:
    await _with_ticket(storage, uses=0)

    def decider(ticket: Ticket | None, request: CheckRequest, now: int) -> Decision:
        if request.video == "boom":
            raise error
        return decide(ticket, request, now)

    videos = ["v"] * 20 + ["boom"] + ["v"] * 20
    results = await asyncio.gather(
        *(storage.record_check(_request(video=v), decider, NOW) for v in videos),
        return_exceptions=True,
    )
    assert max(batch_sizes) > 1
    assert results[20] is error
    neighbours = [r for i, r in enumerate(results) if i != 20]
    assert all(isinstance(r, CheckOutcome) and r.decision.allowed for r in neighbours)
    ticket = await storage.get_ticket(1, "k.1")
    assert ticket is not None and ticket.use_count == 40
    attempts = await storage.list_attempts(1, AttemptFilter(), Page(limit=100))
    assert len(attempts) == 40 and all(a.video == "v" for a in attempts)
    # The batcher lives on.
    assert (await storage.record_check(_request(), decide, NOW)).decision.allowed


@pytest.mark.xdist_group("timing")  # bounds a duration (see conftest.py, xdist)
async def test_checks_queued_too_long_are_shed(storage: PostgresStorage, pg_url: str) -> None:
    await _with_ticket(storage, uses=0)
    storage.max_write_wait = 0.05
    with psycopg.connect(pg_url) as holder:
        # Another client holds the ticket, so the first batches wait on the
        # lock (as many as the node keeps open) and the checks behind them queue.
        holder.execute("SELECT 1 FROM tickets WHERE key = 'k.1' FOR UPDATE")
        first = []
        for _ in range(IN_FLIGHT):
            first.append(asyncio.ensure_future(storage.record_check(_request(), decide, NOW)))
            await asyncio.sleep(0.05)
        queued = [
            asyncio.ensure_future(storage.record_check(_request(), decide, NOW)) for _ in range(5)
        ]
        await asyncio.sleep(0.1)
        assert storage.pending_writes >= 5
        assert storage.sheds_checks()  # the hot path's early look agrees
        with anyio.fail_after(1), pytest.raises(StorageBusy, match="waiting"):
            await storage.record_check(_request(), decide, NOW)
        holder.rollback()
    with anyio.fail_after(10):
        outcomes = await asyncio.gather(*first, *queued)
    assert all(outcome.decision.allowed for outcome in outcomes)
    assert not storage.sheds_checks()
    ticket = await storage.get_ticket(1, "k.1")
    assert ticket is not None and ticket.use_count == IN_FLIGHT + 5


@pytest.mark.xdist_group("timing")  # waits on a lock held for a while (see conftest.py)
async def test_a_node_keeps_more_than_one_batch_open_while_one_waits(
    storage: PostgresStorage, pg_url: str
) -> None:
    """A second batch does not wait for the first's COMMIT; one past IN_FLIGHT does."""
    assert IN_FLIGHT >= 2, "a node is meant to keep more than one batch open"
    await _with_ticket(storage, uses=IN_FLIGHT)
    open_now = most_open = 0
    original = CheckBatcher._run

    async def counted(self: CheckBatcher, batch: list[object]) -> None:
        nonlocal open_now, most_open
        open_now += 1
        most_open = max(most_open, open_now)
        try:
            await original(self, batch)  # type: ignore[arg-type]
        finally:
            open_now -= 1

    with (
        pytest.MonkeyPatch.context() as patch,
        psycopg.connect(pg_url) as holder,
        psycopg.connect(pg_url, autocommit=True) as watcher,
    ):
        patch.setattr(CheckBatcher, "_run", counted)
        holder.execute("SELECT 1 FROM tickets WHERE key = 'k.1' FOR UPDATE")
        checks = []
        for i in range(IN_FLIGHT + 1):
            check = storage.record_check(_request(_ip(i)), decide, NOW)
            checks.append(asyncio.ensure_future(check))
            await asyncio.sleep(0.05)

        def waiting_on_locks() -> int:
            row = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE wait_event_type = 'Lock' AND datname = current_database()"
            ).fetchone()
            return 0 if row is None else int(row[0])

        # IN_FLIGHT transactions come to wait on the holder's lock (each may
        # first wait for a pooled connection); the last check stays queued.
        with anyio.fail_after(10):
            while waiting_on_locks() < IN_FLIGHT:
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        assert waiting_on_locks() == IN_FLIGHT
        assert (open_now, storage._checks.waiting) == (IN_FLIGHT, 1)
        holder.rollback()
        with anyio.fail_after(10):
            outcomes = await asyncio.gather(*checks)
    assert most_open == IN_FLIGHT
    # Serialised on the ticket's lock: exactly its uses, whatever the order.
    assert sum(o.decision.allowed for o in outcomes) == IN_FLIGHT
    ticket = await storage.get_ticket(1, "k.1")
    assert ticket is not None and ticket.use_count == IN_FLIGHT


async def test_closing_answers_every_queued_check(pg_url: str) -> None:
    storage = PostgresStorage(pg_url)
    await storage.open()
    await _with_ticket(storage, uses=0)
    tasks = [
        asyncio.ensure_future(storage.record_check(_request(ip=_ip(i)), decide, NOW))
        for i in range(200)
    ]
    await asyncio.sleep(0)
    with anyio.fail_after(15):
        await storage.close()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, CheckOutcome | StorageUnavailable) for r in results), results
    with pytest.raises(StorageUnavailable):
        await storage.record_check(_request(), decide, NOW)
    await storage.open()
    try:
        ticket = await storage.get_ticket(1, "k.1")
        committed = sum(isinstance(r, CheckOutcome) for r in results)
        assert ticket is not None and ticket.use_count == committed
    finally:
        await storage.close()


class _Interrupt(BaseException):
    """Something no check path catches, like a KeyboardInterrupt."""


async def test_a_batch_ended_by_an_uncaught_error_is_answered_logged_and_not_fatal(
    storage: PostgresStorage, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    await _with_ticket(storage, uses=0)
    transaction = CheckBatcher._transaction
    interrupted = False

    async def interrupt_once(self: CheckBatcher, batch: list[Any], conn: Conn) -> Any:
        nonlocal interrupted
        if not interrupted:
            interrupted = True
            raise _Interrupt
        return await transaction(self, batch, conn)

    monkeypatch.setattr(CheckBatcher, "_transaction", interrupt_once)
    with anyio.fail_after(10):
        first = await asyncio.gather(
            *(storage.record_check(_request(ip=_ip(i)), decide, NOW) for i in range(3)),
            return_exceptions=True,
        )
        assert all(isinstance(r, StorageUnavailable) for r in first), first
        assert "A batch of playback checks ended with _Interrupt()" in caplog.text
        # The batcher lives on.
        assert (await storage.record_check(_request(), decide, NOW)).decision.allowed
