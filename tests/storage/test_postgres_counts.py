"""What only PostgreSQL's count rollups can show: delta rows, their merge,
and a count filter made while another node's check is still uncommitted.

The contract (tests/storage/contract/busy_counts.py) proves the counts
through the interface; these tests reach under it with a second connection.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import psycopg
import pytest

from tests.helpers import DEMO_CDN, NOW
from usher.storage.counting import EVERYTHING, ValueFilter
from usher.storage.postgres import PostgresStorage
from usher.storage.schema import ROLLUP_TABLES
from usher.tickets.model import AttemptFilter

pytestmark = pytest.mark.anyio

_INSERT = (
    "INSERT INTO attempts (cdn, at, key, pass, ip, video, app, appinst, pageurl, refurl,"
    " success, reason, server_ip) VALUES (%s, %s, %s, 'pw', %s, 'v', 'demo-live', '', '', '',"
    " true, '', '')"
)


@pytest.fixture
async def storage(pg_url: str) -> AsyncIterator[PostgresStorage]:
    s = PostgresStorage(pg_url)
    await s.open()
    await s.stop_merging()  # these tests merge when they choose
    await s.create_account(username="demo", api_key="DEMOKEY", secret="s", cdn=DEMO_CDN, now=NOW)
    yield s
    await s.close()


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
