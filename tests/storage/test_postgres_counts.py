"""What only PostgreSQL's count rollups can show: delta rows, their merge,
a count filter made while another node's check is still uncommitted, and a
filter filled while other nodes go on inserting and deleting attempts.

The contract (tests/storage/contract/busy_counts.py) proves the counts
through the interface; these tests reach under it with a second connection.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import anyio
import psycopg
import pytest

from tests.helpers import DEMO_CDN, NOW
from usher.protocol.errors import StorageBusy
from usher.storage.counting import EVERYTHING, Broad, ValueFilter
from usher.storage.postgres import PostgresStorage, counts
from usher.storage.schema import ROLLUP_TABLES
from usher.tickets.model import AttemptFilter

pytestmark = pytest.mark.anyio

_INSERT = (
    "INSERT INTO attempts (cdn, at, key, pass, ip, video, app, appinst, pageurl, refurl,"
    " success, reason, server_ip) VALUES (%s, %s, %s, 'pw', %s, 'v', 'demo-live', '', '', '',"
    " true, '', '')"
)


async def _node(url: str) -> PostgresStorage:
    node = PostgresStorage(url)
    await node.open()
    await node.stop_merging()  # these tests merge when they choose
    return node


@pytest.fixture
async def storage(pg_url: str) -> AsyncIterator[PostgresStorage]:
    s = await _node(pg_url)
    await s.create_account(username="demo", api_key="DEMOKEY", secret="s", cdn=DEMO_CDN, now=NOW)
    yield s
    await s.close()


@pytest.fixture
async def other_node(storage: PostgresStorage, pg_url: str) -> AsyncIterator[PostgresStorage]:
    """A second server on the same database."""
    node = await _node(pg_url)
    yield node
    await node.close()


async def _pending(url: str) -> int:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        row = await (await conn.execute("SELECT count(*) FROM attempt_count_deltas")).fetchone()
        return 0 if row is None else int(row[0])


async def test_checks_add_delta_rows_and_a_merge_moves_them(
    storage: PostgresStorage, pg_url: str
) -> None:
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        for i in range(10):
            await conn.execute(_INSERT, (DEMO_CDN, NOW + i, f"k{i % 2}", "10.0.0.1"))
    assert await _pending(pg_url) > 0
    assert await storage.count_attempts(DEMO_CDN, AttemptFilter(app="demo-live")) == 10
    assert await storage.merge_rollups() > 0
    assert await _pending(pg_url) == 0
    assert await storage.count_attempts(DEMO_CDN, AttemptFilter(app="demo-live")) == 10
    assert await storage.sum_minutes(DEMO_CDN, NOW - NOW % 60, NOW + 60, None) == 10


async def test_a_filter_made_during_an_uncommitted_check_counts_it_once(
    storage: PostgresStorage, pg_url: str
) -> None:
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        for i in range(5):
            await conn.execute(_INSERT, (DEMO_CDN, NOW + i, "k1", "10.0.0.1"))
    busy = ValueFilter(DEMO_CDN, 4, "", "", "10.0.0.1")
    other = await psycopg.AsyncConnection.connect(pg_url)
    try:
        # Another node's check: inserted, trigger run, not yet committed.
        await other.execute(_INSERT, (DEMO_CDN, NOW + 9, "k1", "10.0.0.1"))
        async with anyio.create_task_group() as tg:
            made: list[int | None] = []

            async def promote() -> None:
                made.append(await storage.add_filter(busy, cap=10))

            tg.start_soon(promote)
            await anyio.sleep(0.5)
            # The filter waits for that check's transaction to end.
            assert made == []
            await other.commit()
        filter_id = made[0]
        assert filter_id is not None
        assert await storage.sum_filter_counts(filter_id, EVERYTHING) == 6
        # And attempts after it are counted by the trigger, once.
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            await conn.execute(_INSERT, (DEMO_CDN, NOW + 10, "k2", "10.0.0.1"))
        assert await storage.sum_filter_counts(filter_id, EVERYTHING) == 7
        await storage.merge_rollups()
        assert await storage.sum_filter_counts(filter_id, EVERYTHING) == 7
    finally:
        await other.close()


async def test_pruning_everything_leaves_no_rollup_rows(
    storage: PostgresStorage, pg_url: str
) -> None:
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        for i in range(8):
            await conn.execute(_INSERT, (DEMO_CDN, NOW + 60 * i, "k1", "10.0.0.1"))
    busy = ValueFilter(DEMO_CDN, 1, "k1", "", "")
    assert await storage.add_filter(busy, cap=10) is not None
    await storage.merge_rollups()
    while await storage.prune_attempts(NOW + 3600, 3):
        pass
    async with await psycopg.AsyncConnection.connect(pg_url) as conn:
        for table in (*ROLLUP_TABLES, "attempt_count_deltas", "filter_count_deltas"):
            row = await (await conn.execute(f"SELECT count(*) FROM {table}")).fetchone()
            assert row == (0,), table
    assert await storage.count_attempts(DEMO_CDN, AttemptFilter(key="k1")) == 0


# Attempts of any app, video, address and outcome (the last four parameters).
_INSERT_ANY = (
    "INSERT INTO attempts (cdn, at, key, pass, ip, video, app, appinst, pageurl, refurl,"
    " success, reason, server_ip) SELECT %s, %s, 'k1', 'pw', ip, video, app, '', '', '',"
    " success, '', '' FROM unnest(%s::text[], %s::text[], %s::text[], %s::boolean[])"
    " AS r (ip, video, app, success)"
)
_BUSY = ValueFilter(DEMO_CDN, 4, "", "", "10.0.0.1")
#: Every app/video/success combination a count of the busy address can ask for.
_BROADS = [
    Broad(app, video, success)
    for app in (None, "a1", "a2")
    for video in (None, "v1", "v2")
    for success in (None, True, False)
]


async def _insert_random(
    conn: psycopg.AsyncConnection[tuple[object, ...]], rng: random.Random, n: int
) -> None:
    rows = [
        (
            rng.choice(["10.0.0.1", "10.0.0.2"]),
            rng.choice(["v1", "v2"]),
            rng.choice(["a1", "a2"]),
            rng.random() < 0.7,
        )
        for _ in range(n)
    ]
    await conn.execute(_INSERT_ANY, (DEMO_CDN, NOW, *map(list, zip(*rows, strict=True))))


async def _delete_random(
    conn: psycopg.AsyncConnection[tuple[object, ...]], rng: random.Random, n: int
) -> None:
    await conn.execute(
        "DELETE FROM attempts WHERE id IN"
        # SKIP LOCKED, as pruning does: writers that hold rows across
        # statements do not deadlock on each other's.
        " (SELECT id FROM attempts ORDER BY md5(id::text || %s) LIMIT %s FOR UPDATE SKIP LOCKED)",
        (str(rng.random()), n),
    )


async def _assert_exact(storage: PostgresStorage, pg_url: str, filter_id: int) -> None:
    """The filter's counts equal ``count(*)`` of the busy address, for every
    app/video/success combination."""
    async with await psycopg.AsyncConnection.connect(pg_url) as conn:
        for broad in _BROADS:
            row = await (
                await conn.execute(
                    "SELECT count(*) FROM attempts WHERE cdn = %s AND ip = %s"
                    " AND (%s::text IS NULL OR app = %s) AND (%s::text IS NULL OR video = %s)"
                    " AND (%s::boolean IS NULL OR success = %s)",
                    (
                        DEMO_CDN,
                        _BUSY.ip,
                        broad.app,
                        broad.app,
                        broad.video,
                        broad.video,
                        broad.success,
                        broad.success,
                    ),
                )
            ).fetchone()
            assert row is not None
            assert await storage.sum_filter_counts(filter_id, broad) == row[0], broad


async def _wait_until(url: str, sql: str) -> None:
    """Poll ``sql`` (one boolean) from another connection until it holds;
    at most 5 s."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        with anyio.fail_after(5):
            while not (await (await conn.execute(sql)).fetchone() or (False,))[0]:
                await anyio.sleep(0.01)


#: The fill has begun: its filter's row is visible, or (a fill that locks
#: the attempts) it waits for a lock on them.
_FILL_BEGUN = (
    "SELECT EXISTS (SELECT 1 FROM count_filters) OR EXISTS (SELECT 1 FROM pg_locks"
    " WHERE NOT granted AND relation = 'attempts'::regclass)"
)


async def _hold_fills(conn: psycopg.AsyncConnection[tuple[object, ...]]) -> None:
    """Make fills wait, in their last transaction, at locking their filter's
    row, until ``conn``'s transaction ends. Triggers and lookups read
    ``count_filters`` as before, and ``conn`` takes no transaction id, which
    fills would wait for before their last transaction."""
    await conn.execute("LOCK TABLE count_filters IN EXCLUSIVE MODE")
    row = await (await conn.execute("SELECT pg_current_xact_id_if_assigned()")).fetchone()
    assert row == (None,)


#: The fill waits for the filter's row, held by the test, in step 3.
_FILL_HELD = (
    "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
    " AND query LIKE 'UPDATE count_filters%')"
)


async def test_checks_and_pruning_go_on_while_a_filter_is_filled(
    storage: PostgresStorage, pg_url: str
) -> None:
    rng = random.Random(1)
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await _insert_random(conn, rng, 50)
    in_flight = await psycopg.AsyncConnection.connect(pg_url)
    locker = await psycopg.AsyncConnection.connect(pg_url)
    writer = await psycopg.AsyncConnection.connect(pg_url, autocommit=True)
    try:
        # Another node's check, not yet committed: the fill waits for it.
        await _insert_random(in_flight, rng, 3)
        made: list[int | None] = []
        async with anyio.create_task_group() as tg:

            async def fill() -> None:
                made.append(await storage.add_filter(_BUSY, cap=10))

            tg.start_soon(fill)
            await _wait_until(pg_url, _FILL_BEGUN)
            # Checks (inserts) and pruning (deletes) on other nodes go on.
            with anyio.fail_after(5):
                for _ in range(5):
                    await _insert_random(writer, rng, 10)
                    await _delete_random(writer, rng, 3)
            # Hold the fill inside its last transaction: snapshot taken,
            # attempts counted, waiting for the filter's row.
            await _hold_fills(locker)
            await _insert_random(in_flight, rng, 3)
            await in_flight.commit()
            await _wait_until(pg_url, _FILL_HELD)
            with anyio.fail_after(5):
                for _ in range(5):
                    await _insert_random(writer, rng, 10)
                    await _delete_random(writer, rng, 3)
                    await storage.merge_rollups()
            assert made == []
            await locker.rollback()
        filter_id = made[0]
        assert filter_id is not None
        await _assert_exact(storage, pg_url, filter_id)
        await storage.merge_rollups()
        await _assert_exact(storage, pg_url, filter_id)
    finally:
        for conn in (in_flight, locker, writer):
            await conn.close()


@pytest.mark.parametrize("seed", range(6))
async def test_a_fill_during_random_writes_counts_every_attempt_once(
    storage: PostgresStorage, other_node: PostgresStorage, pg_url: str, seed: int
) -> None:
    rng = random.Random(seed)
    connections = [await psycopg.AsyncConnection.connect(pg_url) for _ in range(3)]
    try:
        await _insert_random(connections[0], rng, rng.randint(0, 300))
        await connections[0].commit()
        # Transactions open across the filter's row commit: written both
        # before it (their triggers cannot see it) and after.
        for conn in connections[1:]:
            await _insert_random(conn, rng, rng.randint(1, 20))
        made: list[int | None] = []
        filled = anyio.Event()
        async with anyio.create_task_group() as tg:

            async def fill(node: PostgresStorage) -> None:
                made.append(await node.add_filter(_BUSY, cap=10))
                if len(made) == 2:
                    filled.set()

            async def write(conn: psycopg.AsyncConnection[tuple[object, ...]]) -> None:
                for _ in range(200):  # bounded; ends soon after the fills
                    if rng.random() < 0.6:
                        await _insert_random(conn, rng, rng.randint(1, 10))
                    else:
                        await _delete_random(conn, rng, rng.randint(1, 5))
                    if rng.random() < 0.5:
                        await conn.commit()
                    if rng.random() < 0.1:
                        await storage.merge_rollups()
                    await anyio.sleep(rng.random() * 0.01)
                    if filled.is_set() and rng.random() < 0.2:
                        break
                await conn.commit()

            # Two nodes fill the same filter at once: it is counted once.
            tg.start_soon(fill, storage)
            tg.start_soon(fill, other_node)
            for conn in connections:
                tg.start_soon(write, conn)
        assert made[0] is not None and made[0] == made[1]
        await _assert_exact(storage, pg_url, made[0])
        await storage.merge_rollups()
        await _assert_exact(storage, pg_url, made[0])
    finally:
        for conn in connections:
            await conn.close()


async def test_an_unfinished_filter_is_not_read_and_the_next_fill_finishes_it(
    storage: PostgresStorage, pg_url: str
) -> None:
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await _insert_random(conn, random.Random(2), 40)
        # A node died between its filter's row and its fill.
        await conn.execute(
            "INSERT INTO count_filters (cdn, mask, key, pass, ip, created_at, ready)"
            " VALUES (%s, 4, '', '', %s, 0, false)",
            (DEMO_CDN, _BUSY.ip),
        )
        await _insert_random(conn, random.Random(3), 10)
    assert await storage.find_filters([_BUSY]) == {}
    filter_id = await storage.add_filter(_BUSY, cap=10)
    assert filter_id is not None
    assert await storage.find_filters([_BUSY]) == {4: filter_id}
    await _assert_exact(storage, pg_url, filter_id)


async def test_a_fill_gives_up_on_a_transaction_left_open(
    storage: PostgresStorage, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(counts, "FILL_WAIT", 0.3)
    rng = random.Random(4)
    async with await psycopg.AsyncConnection.connect(pg_url) as stuck:
        await _insert_random(stuck, rng, 5)
        with pytest.raises(StorageBusy, match="try the count again later"):
            await storage.add_filter(_BUSY, cap=10)
        # Counts meanwhile do not use the unfinished filter.
        assert await storage.find_filters([_BUSY]) == {}
        await stuck.commit()
    filter_id = await storage.add_filter(_BUSY, cap=10)
    assert filter_id is not None
    await _assert_exact(storage, pg_url, filter_id)


async def test_two_nodes_filling_one_filter_at_once_count_it_once(
    storage: PostgresStorage, other_node: PostgresStorage, pg_url: str
) -> None:
    rng = random.Random(5)
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await _insert_random(conn, rng, 60)
    in_flight = await psycopg.AsyncConnection.connect(pg_url)
    locker = await psycopg.AsyncConnection.connect(pg_url)
    try:
        # Both fills wait for this check, so both count in about one moment.
        await _insert_random(in_flight, rng, 4)
        made: list[int | None] = []
        async with anyio.create_task_group() as tg:

            async def fill(node: PostgresStorage) -> None:
                made.append(await node.add_filter(_BUSY, cap=10))

            tg.start_soon(fill, storage)
            await _wait_until(pg_url, _FILL_BEGUN)
            tg.start_soon(fill, other_node)
            await _hold_fills(locker)
            await in_flight.commit()
            # Both have counted and wait to lock the filter's row (or, were
            # it not locked, to mark it ready).
            await _wait_until(
                pg_url,
                "SELECT count(*) = 2 FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND query LIKE '%count_filters%'",
            )
            await locker.rollback()
        assert made[0] is not None and made[0] == made[1]
        await _assert_exact(storage, pg_url, made[0])
    finally:
        for conn in (in_flight, locker):
            await conn.close()
