"""PostgreSQL lists attempts in time order, ties by id (postgres/sql.py,
``log_order``): what that means when ids and times disagree, as they do
between nodes whose clocks differ, and the access path it buys.

The storage contract (tests/storage/contract/explorer.py) checks cursors on
a log whose ids follow its times, where id order and time order agree.
"""

from __future__ import annotations

import re

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import DEMO_CDN, GENERATED_ATTEMPTS, NOW, pg_plan
from usher.storage.postgres import PostgresStorage
from usher.storage.postgres.sql import attempts_where, log_order
from usher.tickets.model import AttemptFilter, Page

pytestmark = pytest.mark.anyio

_INSERT = (
    "INSERT INTO attempts (cdn, at, key, pass, ip, video, app, appinst, pageurl, refurl,"
    " success, reason, server_ip) VALUES (%s, %s, %s, 'pw', '10.0.0.1', 'v', 'demo-live',"
    " '', '', '', %s, '', '') RETURNING id"
)


@pytest.fixture
def storage(pg_demo: PostgresStorage) -> PostgresStorage:
    return pg_demo


async def _log(url: str, times: list[int]) -> list[tuple[int, int]]:
    """Attempts logged in this order at these times; their (at, id)."""
    logged = []
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for n, at in enumerate(times):
            row = await (
                await conn.execute(_INSERT, (DEMO_CDN, at, f"k{n % 2}", n % 3 > 0))
            ).fetchone()
            assert row is not None
            logged.append((at, int(row[0])))
    return logged


async def _page_through(
    storage: PostgresStorage, where: AttemptFilter, *, newest: bool
) -> list[int]:
    seen: list[int] = []
    cursor: int | None = None
    while True:
        bound = {"before": cursor} if newest else {"after": cursor}
        page = await storage.list_attempts(
            DEMO_CDN, where, Page(limit=2), newest_first=newest, **bound
        )
        if not page:
            return seen
        seen += [a.id for a in page]
        cursor = page[-1].id
        assert len(seen) <= 100, "paging did not end"


async def test_a_node_behind_lists_its_attempts_by_their_time(
    storage: PostgresStorage, pg_url: str
) -> None:
    # The second node's clock runs 30 s behind: its attempts, logged later,
    # are listed among the first node's by time.
    logged = await _log(pg_url, [NOW + 40, NOW + 50, NOW + 20, NOW + 60, NOW + 25, NOW + 50])
    newest = await storage.list_attempts(DEMO_CDN, AttemptFilter(), Page(), newest_first=True)
    assert [a.id for a in newest] == [i for _, i in sorted(logged, reverse=True)]
    oldest = await storage.list_attempts(DEMO_CDN, AttemptFilter(), Page(limit=3, seek=1))
    assert [a.id for a in oldest] == [i for _, i in sorted(logged)][1:4]


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    times=st.lists(st.integers(min_value=0, max_value=5), min_size=1, max_size=9),
    key=st.sampled_from([None, "k0", "k1"]),
)
async def test_cursors_visit_every_attempt_once_in_time_order(
    storage: PostgresStorage, pg_url: str, times: list[int], key: str | None
) -> None:
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await conn.execute("DELETE FROM attempts")
    logged = await _log(pg_url, [NOW + t for t in times])
    keys = {i: f"k{n % 2}" for n, (_, i) in enumerate(logged)}
    wanted = [(at, i) for at, i in logged if key is None or keys[i] == key]
    where = AttemptFilter(key=key)
    assert await _page_through(storage, where, newest=True) == [
        i for _, i in sorted(wanted, reverse=True)
    ]
    assert await _page_through(storage, where, newest=False) == [i for _, i in sorted(wanted)]


async def test_a_cursor_whose_attempt_is_gone_still_bounds_the_page(
    storage: PostgresStorage, pg_url: str
) -> None:
    logged = await _log(pg_url, [NOW + 10, NOW + 20, NOW + 30, NOW + 40])
    ids = [i for _, i in logged]
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await conn.execute("DELETE FROM attempts WHERE id = %s", (ids[2],))
    older = await storage.list_attempts(
        DEMO_CDN, AttemptFilter(), Page(), newest_first=True, before=ids[2]
    )
    assert [a.id for a in older] == [ids[1], ids[0]]
    newer = await storage.list_attempts(DEMO_CDN, AttemptFilter(), Page(), after=ids[2])
    assert [a.id for a in newer] == [ids[3]]
    past_the_end = await storage.list_attempts(
        DEMO_CDN, AttemptFilter(), Page(), newest_first=True, before=ids[3] + 100
    )
    assert [a.id for a in past_the_end] == [ids[3], ids[1], ids[0]]


async def test_one_apps_failures_are_tested_on_the_time_index(pg_url: str) -> None:
    # The newest 50,000 attempts are another app's, as during a live event
    # (a quarter of them denied, as this app's are): the page of this app's
    # failures reads past them on the time index's entries, fetching no
    # table row it does not list. (On (cdn, at, success) it fetched 12,857
    # rows to drop them, 1,491 buffers.)
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await conn.execute(
            GENERATED_ATTEMPTS + "SELECT 1, 1000000 + i / 10, 'k' || i, 'p',"
            " '10.0.0.1', 'v' || i % 50, CASE WHEN i > 150000 THEN 'event' ELSE 'a' || i % 32"
            " END, '', '', '', i % 4 > 0, '', '' FROM generate_series(1, 200000) AS i"
        )
        await conn.execute("VACUUM ANALYZE attempts")
        sql, params = attempts_where(1, AttemptFilter(app="a8", success=False))
        _, order, _ = log_order(newest_first=True, before=None, after=None)
        query = f"SELECT id FROM attempts WHERE {sql} ORDER BY {order} LIMIT 51"
        text = await pg_plan(conn, query, params, explain="EXPLAIN (ANALYZE, COSTS OFF, BUFFERS)")
    assert "Index Scan Backward using attempts_cdn_at on attempts" in text, text
    assert "rows=51 loops=1" in text.splitlines()[0], text
    # Every filter is an index condition: the newer rows cost index pages.
    assert "Rows Removed by Filter" not in text, text
    buffers = int(re.search(r"Buffers: shared hit=(\d+)", text).group(1))  # type: ignore[union-attr]  # in every ANALYZE plan with BUFFERS
    assert buffers < 600, text
