"""The SQLite writer's fast path: checks run as groups against a ticket cache.

The storage contract (tests/storage/contract/) already holds every backend to
the observable rules. These tests pin what only the SQLite writer can get wrong:
the cache must follow every change made elsewhere (another connection, a
non-check job, a failed group), a group must hand out the right attempt ids,
and the WAL must be checkpointed without the writer.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import DEMO_CDN, NOW, make_ticket, request_for, session_ticket, viewer
from usher.config import Settings
from usher.storage import counting
from usher.storage.sqlite import SQLiteStorage
from usher.storage.sqlite import checks as sqlite_checks
from usher.storage.sqlite import engine as sqlite_engine
from usher.storage.sqlite import playback as sqlite_playback
from usher.storage.sqlite.cache import TicketCache
from usher.storage.sqlite.checks import CheckGroup, CheckItem
from usher.tickets.decision import decide
from usher.tickets.model import (
    Account,
    AttemptFilter,
    CheckOutcome,
    Page,
    Reason,
    SessionStart,
)
from usher.web.state import AppState
from usher.web.upkeep import SessionSweeper

pytestmark = pytest.mark.anyio


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "writer.db"


@pytest.fixture
async def storage(db_path: Path) -> AsyncIterator[SQLiteStorage]:
    s = SQLiteStorage(str(db_path))
    await s.open()
    yield s
    await s.close()


@pytest.fixture
async def demo(storage: SQLiteStorage) -> Account:
    return await storage.create_account(
        username="demo", api_key="DEMOKEY", secret="demo-secret", cdn=DEMO_CDN, now=NOW
    )


def other_connection(db_path: Path) -> sqlite3.Connection:
    """What another process (the CLI, a second server) writes through."""
    conn = sqlite3.connect(db_path, isolation_level=None, timeout=5)
    conn.execute("PRAGMA busy_timeout = 5000")
    return conn


@pytest.fixture
def group_sizes(storage: SQLiteStorage, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every group of checks the writer runs."""
    sizes: list[int] = []
    run_group = CheckGroup.run_group

    def spy(self: CheckGroup, conn: sqlite3.Connection, items: list[CheckItem]) -> Any:
        sizes.append(len(items))
        return run_group(self, conn, items)

    monkeypatch.setattr(CheckGroup, "run_group", spy)
    return sizes


async def test_concurrent_checks_run_as_groups_with_their_own_attempt_ids(
    storage: SQLiteStorage, demo: Account, group_sizes: list[int]
) -> None:
    ticket = make_ticket()
    await storage.insert_ticket(ticket)
    clients = [f"198.51.{i // 250}.{i % 250}" for i in range(600)]
    outcomes = await asyncio.gather(
        *(storage.record_check(request_for(ticket, ip=ip), decide, NOW) for ip in clients)
    )
    # More checks than fit one batch, queued at once: several multi-check groups.
    assert max(group_sizes) > 1 and sum(group_sizes) == 600
    attempts = await storage.list_attempts(DEMO_CDN, AttemptFilter(), Page())
    by_id = {a.id: a for a in attempts}
    assert len(by_id) == 600
    # Each caller got the id of the row that logged its own request.
    assert all(by_id[o.attempt_id].ip == ip for o, ip in zip(outcomes, clients, strict=True))
    stored = await storage.get_ticket(DEMO_CDN, ticket.key)
    assert stored is not None and stored.use_count == 600


async def test_a_batch_takes_the_jobs_its_time_allows(
    storage: SQLiteStorage, demo: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Checks made slow (5 ms each, as on a database whose pages are not in
    # memory): a batch of 512 would hold its checks for 2.5 s.
    sizes: list[int] = []
    run_group = CheckGroup.run_group

    def slow(self: CheckGroup, conn: sqlite3.Connection, items: list[CheckItem]) -> Any:
        sizes.append(len(items))
        time.sleep(0.005 * len(items))
        return run_group(self, conn, items)

    monkeypatch.setattr(CheckGroup, "run_group", slow)
    storage.max_write_wait = 5.0  # this test is about batches, not shedding
    ticket = make_ticket()
    await storage.insert_ticket(ticket)
    for _ in range(3):  # the writer learns what a check costs
        await storage.record_check(request_for(ticket), decide, NOW)
    sizes.clear()
    await asyncio.gather(
        *(storage.record_check(request_for(ticket), decide, NOW) for _ in range(300))
    )
    assert sum(sizes) == 300
    fit = int(sqlite_engine.BATCH_SECONDS / 0.005)
    assert max(sizes) <= 2 * fit, sizes


class SlowCommit:
    """A connection whose ``COMMIT`` takes 0.1 s, as on a disk with a slow fsync."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql == "COMMIT":
            time.sleep(0.1)
        return self.conn.execute(sql, *args)


@pytest.mark.xdist_group("timing")  # bounds a duration (see conftest.py, xdist)
async def test_a_slow_commit_does_not_shrink_batches(db_path: Path) -> None:
    # Counted per job, the fsync of a slow disk made every batch look slow
    # and shrank it to a few jobs: less capacity, no less latency.
    engine = sqlite_engine.SQLiteEngine(str(db_path), state=TicketCache())
    conn = SlowCommit(sqlite3.connect(db_path, isolation_level=None))
    loop = asyncio.get_running_loop()
    batch = [
        sqlite_engine._Job(lambda c: c.execute("SELECT 1"), loop.create_future())
        for _ in range(100)
    ]
    started = time.perf_counter()
    worked = engine._run_batch(conn, batch)  # type: ignore[arg-type]  # a stand-in with execute()
    assert time.perf_counter() - started >= 0.1
    assert worked < 0.05
    await asyncio.gather(*(job.future for job in batch))
    assert sqlite_engine.SQLiteEngine._batch_size(worked / len(batch)) == sqlite_engine.BATCH_MAX


async def test_a_group_mixing_tickets_unknown_keys_and_unlogged_checks(
    storage: SQLiteStorage, demo: Account, group_sizes: list[int]
) -> None:
    limited = make_ticket(key="limited.0001", uses=3)
    open_ = make_ticket(key="open.0001")
    await storage.insert_ticket(limited)
    await storage.insert_ticket(open_)
    calls = []
    for i in range(40):
        if i % 4 == 0:
            calls.append(storage.record_check(request_for(limited), decide, NOW))
        elif i % 4 == 1:
            calls.append(storage.record_check(request_for(open_), decide, NOW, log=False))
        elif i % 4 == 2:
            unknown = request_for(open_, key=f"unknown.{i}", app="demo-live")
            calls.append(storage.record_check(unknown, decide, NOW))
        else:
            calls.append(storage.record_check(request_for(open_, app="nobody-live"), decide, NOW))
    outcomes: list[CheckOutcome] = await asyncio.gather(*calls)
    assert max(group_sizes) > 1
    limited_reasons = [o.decision.reason for o in outcomes[0::4]]
    assert limited_reasons == [None] * 3 + [Reason.USES_EXHAUSTED] * 7
    assert all(o.decision.allowed and o.attempt_id == 0 for o in outcomes[1::4])
    assert all(o.decision.reason is Reason.INVALID_AUTH_TOKEN for o in outcomes[2::4])
    assert all(o.decision.reason is Reason.INVALID_APPLICATION for o in outcomes[3::4])
    # Unknown keys are still attributed to the account their app names.
    assert await storage.count_attempts(DEMO_CDN, AttemptFilter(success=False)) == 27
    assert await storage.count_attempts(DEMO_CDN, AttemptFilter(success=True)) == 3
    stored_open = await storage.get_ticket(DEMO_CDN, open_.key)
    assert stored_open is not None and stored_open.use_count == 10
    stored_limited = await storage.get_ticket(DEMO_CDN, limited.key)
    assert stored_limited is not None and stored_limited.use_count == 3


async def test_a_revocation_by_another_process_bites_at_the_next_check(
    storage: SQLiteStorage, demo: Account, db_path: Path
) -> None:
    ticket = make_ticket()
    await storage.insert_ticket(ticket)
    assert (await storage.record_check(request_for(ticket), decide, NOW)).decision.allowed
    with other_connection(db_path) as conn:
        conn.execute("UPDATE tickets SET active = 0 WHERE key = ?", (ticket.key,))
    outcome = await storage.record_check(request_for(ticket), decide, NOW)
    assert outcome.decision.reason is Reason.TICKET_REVOKED


async def test_uses_spent_by_another_process_are_counted(
    storage: SQLiteStorage, demo: Account, db_path: Path
) -> None:
    ticket = make_ticket(uses=3)
    await storage.insert_ticket(ticket)
    assert (await storage.record_check(request_for(ticket), decide, NOW)).decision.allowed
    with other_connection(db_path) as conn:
        # Another server on the same file spent the other two uses.
        conn.execute("UPDATE tickets SET use_count = use_count + 2 WHERE key = ?", (ticket.key,))
    outcome = await storage.record_check(request_for(ticket), decide, NOW)
    assert outcome.decision.reason is Reason.USES_EXHAUSTED
    stored = await storage.get_ticket(DEMO_CDN, ticket.key)
    assert stored is not None and stored.use_count == 3


async def test_writer_jobs_that_change_tickets_or_accounts_drop_the_cache(
    storage: SQLiteStorage, demo: Account
) -> None:
    ticket = make_ticket()
    await storage.insert_ticket(ticket)
    assert (await storage.record_check(request_for(ticket), decide, NOW)).decision.allowed
    await storage.revoke_ticket(DEMO_CDN, ticket.key, now=NOW)
    revoked = await storage.record_check(request_for(ticket), decide, NOW)
    assert revoked.decision.reason is Reason.TICKET_REVOKED

    second = make_ticket(key="second.0001")
    await storage.insert_ticket(second)
    assert (await storage.record_check(request_for(second), decide, NOW)).decision.allowed
    await storage.update_account(DEMO_CDN, disabled=True)
    disabled = await storage.record_check(request_for(second), decide, NOW)
    assert disabled.decision.reason is Reason.TICKET_REVOKED
    await storage.update_account(DEMO_CDN, disabled=False)
    assert (await storage.record_check(request_for(second), decide, NOW)).decision.allowed


async def test_a_failed_group_leaves_the_cache_matching_the_database(
    storage: SQLiteStorage, demo: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    ticket = make_ticket(uses=2)
    await storage.insert_ticket(ticket)
    insert = CheckGroup._insert_attempts
    failures = iter([True])

    def fail_once(conn: sqlite3.Connection, logged: Any) -> None:
        # The group's decisions and cache updates are done by now; the insert
        # failing must undo both, or the next check would see a spent use.
        if next(failures, False):
            raise sqlite3.OperationalError("disk I/O error")
        insert(conn, logged)

    monkeypatch.setattr(CheckGroup, "_insert_attempts", staticmethod(fail_once))
    first = await asyncio.gather(
        *(storage.record_check(request_for(ticket), decide, NOW) for _ in range(2))
    )
    # Re-run check by check after the failed group: both allowed, once each.
    assert all(o.decision.allowed for o in first)
    stored = await storage.get_ticket(DEMO_CDN, ticket.key)
    assert stored is not None and stored.use_count == 2
    exhausted = await storage.record_check(request_for(ticket), decide, NOW)
    assert exhausted.decision.reason is Reason.USES_EXHAUSTED
    assert await storage.count_attempts(DEMO_CDN, AttemptFilter()) == 3


async def test_the_wal_is_checkpointed_without_the_writer(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_engine, "CHECKPOINT_EVERY", 0.01)
    storage = SQLiteStorage(str(db_path))
    await storage.open()
    try:
        await storage.create_account(
            username="demo", api_key="DEMOKEY", secret="demo-secret", cdn=DEMO_CDN, now=NOW
        )
        ticket = make_ticket()
        await storage.insert_ticket(ticket)
        for _ in range(60):
            await asyncio.gather(
                *(storage.record_check(request_for(ticket), decide, NOW) for _ in range(20))
            )
            await asyncio.sleep(0.02)
        # Each commit appends about ten pages. Unless they are copied back and
        # the WAL restarted, 60 commits leave it at about 2.4 MB (and SQLite's
        # own auto-checkpoint lets it reach 4 MB).
        wal = db_path.with_name(db_path.name + "-wal")
        assert wal.stat().st_size < 1_000_000
    finally:
        await storage.close()


def wal_frames(db_path: Path) -> int:
    """The frames the WAL holds: ``mxFrame`` of the wal-index header in the
    ``-shm`` file (a u32 at offset 16, native byte order; see SQLite's wal.c)."""
    with open(db_path.with_name(db_path.name + "-shm"), "rb") as shm:
        header = shm.read(20)
    return int.from_bytes(header[16:20], sys.byteorder)


async def test_the_wal_restarts_under_writes_that_never_pause(
    storage: SQLiteStorage, demo: Account, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The checkpoint thread alone never catches up with a writer that always
    # has the next batch: the WAL grew for as long as the load lasted.
    monkeypatch.setattr(sqlite_engine, "WAL_RESTART_FRAMES", 64)
    tickets = [make_ticket(key=f"steady{i:04d}") for i in range(200)]
    for ticket in tickets:
        await storage.insert_ticket(ticket)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 3.0
    frames: list[int] = []

    async def viewer(n: int) -> None:
        i = n
        while loop.time() < deadline:
            request = request_for(tickets[i % len(tickets)], ip=f"198.51.{n}.{i % 250}")
            await storage.record_check(request, decide, NOW)
            i += 7

    async def watch() -> None:
        while loop.time() < deadline:
            await asyncio.sleep(0.05)
            frames.append(wal_frames(db_path))

    await asyncio.gather(watch(), *(viewer(n) for n in range(64)))
    assert await storage.count_attempts(DEMO_CDN, AttemptFilter()) > 1000
    restarts = sum(later < earlier for earlier, later in itertools.pairwise(frames))
    assert restarts >= 3, frames


def test_the_cache_keeps_the_newest_tickets_and_holds_a_whole_batch() -> None:
    with pytest.raises(ValueError, match="at least"):
        TicketCache(limit=10)
    cache = TicketCache(limit=1024)
    for i in range(1500):
        cache.put(f"k{i}", i, make_ticket(key=f"k{i}"))
    assert "k0" not in cache and "k475" not in cache
    assert "k476" in cache and "k1499" in cache
    cache.invalidate()
    assert "k1499" not in cache


async def test_a_group_on_a_full_cache_keeps_its_own_tickets(
    storage: SQLiteStorage, demo: Account, db_path: Path
) -> None:
    # A full cache evicts its oldest entry for each ticket loaded. A group
    # holding that oldest ticket and new ones once evicted its own ticket
    # while loading the others, and refused its valid viewer.
    tickets = [make_ticket(key=f"full.{i:04d}") for i in range(1024 + 100)]
    await asyncio.gather(*(storage.insert_ticket(ticket) for ticket in tickets))
    conn = other_connection(db_path)
    try:
        cache = TicketCache(limit=1024)
        sqlite_checks.load_tickets(conn, cache, [ticket.key for ticket in tickets[:1024]])
        group = [tickets[0], *tickets[1024:]]  # the oldest cached and 100 not cached
        conn.execute("BEGIN IMMEDIATE")
        outcomes = CheckGroup(cache).run_group(
            conn, [CheckItem(request_for(ticket), decide, NOW, True, None) for ticket in group]
        )
        conn.execute("ROLLBACK")
    finally:
        conn.close()
    assert [o.decision.reason for o in outcomes] == [None] * len(group)
    assert all(ticket.key in cache for ticket in group)


@pytest.mark.parametrize(("chosen", "pragma"), [("full", 2), ("normal", 1)])
async def test_the_writer_syncs_as_usher_sqlite_synchronous_says(
    db_path: Path, chosen: Any, pragma: int
) -> None:
    """FULL by default (every group commit fsynced); NORMAL only when an
    operator opts in with USHER_SQLITE_SYNCHRONOUS=normal."""
    s = SQLiteStorage(str(db_path), synchronous=chosen)
    await s.open()
    try:

        def synchronous(conn: sqlite3.Connection) -> int:
            return int(conn.execute("PRAGMA synchronous").fetchone()[0])

        assert await s._write(synchronous) == pragma
    finally:
        await s.close()
    assert SQLiteStorage(str(db_path))._engine._synchronous == "full"


async def _start_sessions(storage: SQLiteStorage, count: int) -> None:
    ticket = session_ticket()
    await storage.insert_ticket(ticket)
    for i in range(count):
        start = SessionStart(f"s-{i}", f"http:{i}", "hls", SWEPT_TTL, resume=True)
        await storage.record_check(viewer(ticket), decide, NOW, session=start)


SWEPT_TTL = 60


async def test_a_sweep_write_stops_when_its_time_slice_is_spent(
    storage: SQLiteStorage, demo: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every check and API call queued behind a sweep write waits for all of
    # it; with no time left, a write ends one statement's worth and returns.
    await _start_sessions(storage, 40)
    monkeypatch.setattr(sqlite_playback, "SWEEP_SLICE", 0.0)
    ended = [await storage.sweep_sessions(NOW + SWEPT_TTL, 200) for _ in range(4)]
    assert ended == [sqlite_playback.SWEEP_CHUNK] * 2 + [40 - 2 * sqlite_playback.SWEEP_CHUNK, 0]
    assert await storage.count_open_sessions(NOW) == 0


async def test_the_sweeper_ends_every_expired_session_when_writes_are_cut_short(
    storage: SQLiteStorage, demo: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _start_sessions(storage, 40)
    monkeypatch.setattr(sqlite_playback, "SWEEP_SLICE", 0.0)
    state = AppState(Settings(), storage, clock=lambda: NOW + SWEPT_TTL)
    assert await SessionSweeper(state).sweep() == 40
    assert await storage.count_open_sessions(NOW) == 0


async def test_background_writes_run_alone_after_the_writes_waiting(
    storage: SQLiteStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A sweep write (and its large COMMIT) batched with a signed call's
    # replay claim made the claim wait for it: upkeep goes last, alone.
    engine = storage._engine
    gate = threading.Event()
    ran: list[str] = []
    batches: list[int] = []
    run_batch = engine._run_batch

    def counted(conn: sqlite3.Connection, batch: list[Any]) -> float:
        batches.append(len(batch))
        return run_batch(conn, batch)

    monkeypatch.setattr(engine, "_run_batch", counted)

    def job(name: str) -> Any:
        def run(conn: sqlite3.Connection) -> None:
            ran.append(name)
            if name == "blocker":
                gate.wait(10)

        return run

    def write(name: str, **kw: Any) -> asyncio.Future[Any]:
        return asyncio.ensure_future(engine.write(job(name), max_wait=10.0, **kw))

    blocker = write("blocker")
    await asyncio.sleep(0.05)  # the writer holds the blocker
    later = [write("upkeep", background=True), write("claim-1"), write("claim-2")]
    await asyncio.sleep(0.05)
    gate.set()
    await asyncio.gather(blocker, *later)
    assert ran == ["blocker", "claim-1", "claim-2", "upkeep"]
    assert batches == [1, 2, 1]

    # Under writes that never stop, upkeep still runs once it waited its turn.
    monkeypatch.setattr(sqlite_engine, "BACKGROUND_WAIT", 0.0)
    ran.clear()
    batches.clear()
    gate.clear()
    blocker = write("blocker")
    await asyncio.sleep(0.05)
    later = [write("upkeep", background=True), write("claim-1")]
    await asyncio.sleep(0.05)
    gate.set()
    await asyncio.gather(blocker, *later)
    assert ran == ["blocker", "upkeep", "claim-1"]
    assert batches == [1, 1, 1]


async def test_an_account_is_read_on_the_event_loop(storage: SQLiteStorage, demo: Account) -> None:
    threads: list[threading.Thread] = []

    def read(conn: sqlite3.Connection) -> Any:
        threads.append(threading.current_thread())
        return conn.execute("SELECT username FROM accounts WHERE cdn = ?", (demo.cdn,)).fetchone()

    assert await storage._engine.read_at_once(read) == (demo.username,)
    assert threads == [threading.current_thread()]
    assert await storage.get_account(demo.cdn) == demo
    # A lock it meets sends the read to a thread (below) instead of holding
    # the event loop for the busy timeout.
    loop_conn = storage._engine._loop_conn
    assert loop_conn is not None
    assert loop_conn.execute("PRAGMA busy_timeout").fetchone() == (0,)


async def test_a_read_at_once_that_finds_the_database_busy_goes_to_a_reader_thread(
    storage: SQLiteStorage, demo: Account
) -> None:
    threads: list[threading.Thread] = []

    def read(conn: sqlite3.Connection) -> Any:
        threads.append(threading.current_thread())
        if len(threads) == 1:  # what a reader meets while the WAL is reset
            raise sqlite3.OperationalError("database is locked")
        return conn.execute("SELECT username FROM accounts WHERE cdn = ?", (demo.cdn,)).fetchone()

    assert await storage._engine.read_at_once(read) == (demo.username,)
    assert threads[0] is threading.current_thread()
    assert threads[1] is not threading.current_thread()


async def test_count_filters_are_found_on_the_event_loop(
    storage: SQLiteStorage, demo: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    where = AttemptFilter(ip="192.0.2.1")
    assert await storage.count_attempts(demo.cdn, where) == 0

    async def no_reader_thread(_fn: Any) -> Any:
        raise AssertionError("find_filters went to a reader thread")

    monkeypatch.setattr(storage._engine, "read", no_reader_thread)
    selective = counting.value_filter(demo.cdn, where)
    assert selective is not None
    assert await storage.find_filters([selective]) == {}
