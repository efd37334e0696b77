"""The access paths of the v2 REST API's storage statements on SQLite.

``ticket_ids`` must probe the unique key index once per key, never read the
account's tickets; an ``appinst`` filter (no index holds it) must leave the
listing on the path the other filters choose, tested on the rows it reads.
The contract suite proves the answers.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from tests.helpers import NOW
from tests.storage.test_sqlite_counts import _insert_attempts, migrated  # noqa: F401  # fixture
from usher.storage.counting import sorting_is_cheaper
from usher.storage.sqlite import SQLiteStorage
from usher.storage.sqlite.counts import (
    index_rows_worth_reading,
    list_query,
    walk_is_cheaper,
)
from usher.storage.sqlite.sql import ticket_ids_sql
from usher.tickets.model import MAX_PAGE_ROWS, AttemptFilter, Page

PAGE = Page(limit=50, seek=50)


def _plan(conn: sqlite3.Connection, sql: str, params: list[object]) -> str:
    rows = conn.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()
    return " | ".join(str(row[-1]) for row in rows)


@pytest.mark.parametrize("count", [1, 2, MAX_PAGE_ROWS])
def test_ticket_ids_probe_the_key_index(
    migrated: sqlite3.Connection,  # noqa: F811  # the imported fixture
    count: int,
) -> None:
    keys: list[object] = [f"k{i}" for i in range(count)]
    plan = _plan(migrated, ticket_ids_sql(count), [*keys, 1])
    assert plan.startswith("SEARCH tickets USING INDEX sqlite_autoindex_tickets_1 (key=?)"), plan
    assert "tickets_cdn_id" not in plan, plan


@pytest.mark.parametrize(
    ("where", "start"),
    [
        # No other filter: the walk in id order a page's LIMIT stops.
        (AttemptFilter(appinst="i"), "SCAN attempts"),
        (AttemptFilter(appinst="i", key="k1"), "SEARCH attempts USING INDEX attempts_cdn_key"),
        (AttemptFilter(appinst="i", ip="10.0.0.1"), "SEARCH attempts USING INDEX attempts_cdn_ip"),
        (
            AttemptFilter(appinst="i", start=1000),
            "SEARCH attempts USING INDEX attempts_cdn_at_success (cdn=? AND at>?)",
        ),
    ],
    ids=["alone", "key", "ip", "range"],
)
@pytest.mark.parametrize("newest_first", [False, True], ids=["oldest-first", "newest-first"])
def test_appinst_rides_on_the_other_filters_path(
    migrated: sqlite3.Connection,  # noqa: F811  # the imported fixture
    where: AttemptFilter,
    start: str,
    newest_first: bool,
) -> None:
    sql, params = list_query(1, where, PAGE, newest_first=newest_first)
    assert "appinst = ?" in sql
    plan = _plan(migrated, sql, params)
    assert plan.startswith(start), plan


def test_an_appinst_listing_answers_what_the_plain_one_does(
    migrated: sqlite3.Connection,  # noqa: F811  # the imported fixture
) -> None:
    _insert_attempts(migrated, 300)
    migrated.execute("UPDATE attempts SET appinst = 'i' || (id % 7)")
    for where in (AttemptFilter(appinst="i3"), AttemptFilter(appinst="i3", key="k2")):
        sql, params = list_query(1, where, Page(limit=7, seek=1), newest_first=True)
        got = [row[0] for row in migrated.execute(sql, params)]
        assert got == [row[0] for row in migrated.execute(sql.replace("+", ""), params)]
        assert got  # the comparison compared something


def test_an_oldest_first_range_at_the_end_of_the_log_reads_its_index(
    migrated: sqlite3.Connection,  # noqa: F811  # the imported fixture
    tmp_path: Path,
) -> None:
    """Listing a recent range oldest first (the v2 API's order) must not walk
    the table from its oldest row: the rows before the range are what that
    walk passes, as the rows after it are for a newest-first walk. (At 10.9 M
    attempts the walk took 1.6 s for the last 24 hours; the index, 80 ms.)"""
    _insert_attempts(migrated, 2000)
    migrated.close()
    # The last 5% of the log: a newest-first walk fills a page of 5 within
    # about 100 rows; an oldest-first one would pass the other 95% first.
    recent = AttemptFilter(start=NOW + 1900)
    page = Page(limit=5)

    async def paths() -> tuple[object, object, list[int]]:
        storage = SQLiteStorage(str(tmp_path / "new.db"))
        await storage.open()
        try:
            oldest = await storage._list_path(
                1, recent, page, by_app_video=False, newest_first=False
            )
            newest = await storage._list_path(
                1, recent, page, by_app_video=False, newest_first=True
            )
            rows = await storage.list_attempts(1, recent, page)
            return oldest, newest, [a.at for a in rows]
        finally:
            await storage.close()

    oldest, newest, listed = asyncio.run(paths())
    assert oldest == (False, None)  # through the time index
    assert newest == (True, None)  # a newest-first walk starts inside the range
    assert listed == sorted(listed) and listed[0] >= NOW + 1900 and len(listed) == 5


def test_with_appinst_a_walk_is_priced_as_passing_every_attempt() -> None:
    # 100,000 matches of 1 M without appinst: a page is 10,000 walked rows
    # away, far fewer than the index's entries cost. With a rare appinst
    # the walk may pass all 1 M, so the index's 100,000 entries win.
    page = Page()
    assert walk_is_cheaper(index_rows=100_000, newer=0, matches=100_000, total=1_000_000, page=page)
    assert not walk_is_cheaper(
        index_rows=100_000, newer=0, matches=100_000, total=1_000_000, page=page, sparse=True
    )
    assert not sorting_is_cheaper(100_000, 1_000_000, page)
    assert sorting_is_cheaper(100_000, 1_000_000, page, sparse=True)
    # Past 250,000 entries (a quarter of the log) the walk wins again.
    assert walk_is_cheaper(
        index_rows=250_001, newer=0, matches=100_000, total=1_000_000, page=page, sparse=True
    )
    assert index_rows_worth_reading(
        newer=0, matches=1, total=1_000_000, page=page, sparse=True
    ) == (250_000)
