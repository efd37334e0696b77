"""The access paths of the control panel's attempt queries on SQLite (issue 13).

At 10 M attempts, a ticket's page and the attempts explorer took 20 s each
because SQLite read every attempt of the account through some ``(cdn, ...)``
index and sorted or grouped them all. These tests pin the statements the
storage runs to the paths that read one page, or one key's rows, whatever
the table's size; the contract suite proves the answers.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.helpers import DEMO_CDN, NOW, make_ticket, request_for
from tests.storage.test_sqlite_counts import _insert_attempts, migrated  # noqa: F401  # fixture
from usher.storage import sqlite as sqlite_storage
from usher.storage.counting import minute_tail_query, sorting_is_cheaper
from usher.storage.sqlite import SQLiteStorage
from usher.storage.sqlite.counts import (
    RECENT_DENIALS_SQL,
    count_upto_query,
    index_rows_worth_reading,
    list_query,
    top_values_query,
    walk_is_cheaper,
)
from usher.tickets.decision import decide
from usher.tickets.model import AttemptFilter, Page

PAGE = Page(limit=50, seek=50)


def _plan(conn: sqlite3.Connection, statement: tuple[str, list[object]]) -> str:
    sql, params = statement
    rows = conn.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()
    return " | ".join(str(row[-1]) for row in rows)


@pytest.mark.parametrize(
    "where",
    [
        AttemptFilter(),
        AttemptFilter(success=False),
        AttemptFilter(video="v1"),
        AttemptFilter(app="demo-1"),
        AttemptFilter(video="v1", success=False),
    ],
    ids=["none", "success", "video", "app", "video+success"],
)
@pytest.mark.parametrize("newest_first", [False, True], ids=["oldest-first", "newest-first"])
def test_a_broad_list_walks_the_table_in_id_order(
    migrated: sqlite3.Connection,  # noqa: F811  # the imported fixture
    where: AttemptFilter,
    newest_first: bool,
) -> None:
    # A walk in id order needs no sort, so LIMIT stops it after one page;
    # through an index, SQLite reads every attempt of the account first.
    plan = _plan(migrated, list_query(1, where, PAGE, newest_first=newest_first))
    assert plan == "SCAN attempts", plan


def test_app_and_video_walk_the_table_or_sort_their_few_matches(
    migrated: sqlite3.Connection,  # noqa: F811  # the imported fixture
) -> None:
    where = AttemptFilter(app="demo-1", video="v1", success=True)
    plan = _plan(migrated, list_query(1, where, PAGE, newest_first=True))
    assert plan == "SCAN attempts", plan
    sorted_plan = _plan(migrated, list_query(1, where, PAGE, newest_first=True, sort_matches=True))
    assert sorted_plan.startswith(
        "SEARCH attempts USING INDEX attempts_cdn_app_video (cdn=? AND app=? AND video=?)"
    ), sorted_plan


@pytest.mark.parametrize(
    ("where", "index"),
    [
        (AttemptFilter(key="k1"), "attempts_cdn_key"),
        (AttemptFilter(key="k1", success=False), "attempts_cdn_key"),
        (AttemptFilter(password="pw", video="v1"), "attempts_cdn_pass"),
        (AttemptFilter(ip="10.0.0.1", app="demo-1"), "attempts_cdn_ip"),
    ],
    ids=["key", "key+success", "pass+video", "ip+app"],
)
def test_a_selective_list_searches_its_index(
    migrated: sqlite3.Connection,  # noqa: F811  # the imported fixture
    where: AttemptFilter,
    index: str,
) -> None:
    plan = _plan(migrated, list_query(1, where, Page(limit=20), newest_first=True))
    assert plan.startswith(f"SEARCH attempts USING INDEX {index} (cdn=? AND "), plan


def test_a_recent_range_reads_the_time_index(
    migrated: sqlite3.Connection,  # noqa: F811  # the imported fixture
) -> None:
    where = AttemptFilter(success=False, start=1000)
    plan = _plan(migrated, list_query(1, where, PAGE, newest_first=True))
    assert "USING INDEX attempts_cdn_at_success (cdn=? AND at>?)" in plan, plan


@pytest.mark.parametrize("column", ["ip", "app", "video"])
def test_a_tickets_top_values_read_only_its_key(
    migrated: sqlite3.Connection,  # noqa: F811  # the imported fixture
    column: str,
) -> None:
    # The ticket page's addresses: never the account's whole (cdn, ip) index.
    plan = _plan(migrated, top_values_query(1, AttemptFilter(key="k1"), column, 10))  # type: ignore[arg-type]
    assert "SEARCH attempts USING INDEX attempts_cdn_key (cdn=? AND key=?)" in plan, plan
    assert "attempts_cdn_ip" not in plan and "SCAN attempts" not in plan, plan


@pytest.mark.parametrize(
    "where",
    [
        AttemptFilter(),
        AttemptFilter(success=False),
        AttemptFilter(video="v2"),
        AttemptFilter(app="demo-2", video="v2"),
        AttemptFilter(key="k2", success=True),
        AttemptFilter(ip="10.0.0.2", start=1, end=2**40),
    ],
)
def test_the_driven_statements_answer_what_the_plain_ones_do(
    migrated: sqlite3.Connection,  # noqa: F811  # the imported fixture
    where: AttemptFilter,
) -> None:
    _insert_attempts(migrated, 300)
    for newest_first in (False, True):
        sql, params = list_query(1, where, Page(limit=7, seek=3), newest_first=newest_first)
        got = [row[0] for row in migrated.execute(sql, params)]
        plain = sql.replace("+", "")
        assert got == [row[0] for row in migrated.execute(plain, params)]
        assert got  # the comparison compared something
    sql, params = top_values_query(1, where, "ip", 10)
    assert migrated.execute(sql, params).fetchall() == (
        migrated.execute(sql.replace("+", ""), params).fetchall()
    )


@pytest.mark.parametrize(
    "where",
    [
        AttemptFilter(video="v2"),
        AttemptFilter(app="demo-2"),
        AttemptFilter(video="v2", success=True),
    ],
    ids=["video", "app", "video+success"],
)
def test_few_matches_are_read_through_the_app_video_index(
    migrated: sqlite3.Connection,  # noqa: F811  # the imported fixture
    where: AttemptFilter,
) -> None:
    _insert_attempts(migrated, 300)
    statement = list_query(1, where, PAGE, newest_first=True, sort_matches=True)
    plan = _plan(migrated, statement)
    assert plan.startswith("SEARCH attempts USING INDEX attempts_cdn_app_video (cdn=? AND app=?"), (
        plan
    )
    assert "SCAN attempts" not in plan, plan
    walked = list_query(1, where, PAGE, newest_first=True)
    assert migrated.execute(*statement).fetchall() == migrated.execute(*walked).fetchall()


def test_sorting_is_chosen_for_sparse_matches_and_deep_pages() -> None:
    assert not sorting_is_cheaper(3_500_000, 10_000_000, Page(limit=50))
    assert sorting_is_cheaper(1_636, 10_000_000, Page(limit=50))
    assert not sorting_is_cheaper(33_000, 10_000_000, Page(limit=50))
    assert sorting_is_cheaper(33_000, 10_000_000, Page(limit=50, seek=5_000))


@pytest.mark.parametrize(
    "where",
    [AttemptFilter(), AttemptFilter(success=False), AttemptFilter(video="v1")],
    ids=["none", "success", "video"],
)
@pytest.mark.parametrize(
    ("before", "after", "range_"),
    [(5000, None, "rowid<?"), (None, 5000, "rowid>?")],
    ids=["before", "after"],
)
def test_a_cursor_page_starts_its_walk_at_the_cursor(
    migrated: sqlite3.Connection,  # noqa: F811  # the imported fixture
    where: AttemptFilter,
    before: int | None,
    after: int | None,
    range_: str,
) -> None:
    # The explorer's Older/Newer pages: one rowid range, however deep.
    statement = list_query(
        1, where, Page(limit=51), newest_first=after is None, before=before, after=after
    )
    plan = _plan(migrated, statement)
    assert plan == f"SEARCH attempts USING INTEGER PRIMARY KEY ({range_})", plan


def test_a_cursor_page_of_app_and_video_starts_at_the_cursor(
    migrated: sqlite3.Connection,  # noqa: F811  # the imported fixture
) -> None:
    where = AttemptFilter(app="demo-1", video="v1")
    plan = _plan(migrated, list_query(1, where, Page(limit=51), newest_first=True, before=9))
    assert plan == "SEARCH attempts USING INTEGER PRIMARY KEY (rowid<?)", plan


@pytest.mark.parametrize(
    ("where", "index"),
    [
        (AttemptFilter(key="k1"), "COVERING INDEX attempts_cdn_key (cdn=? AND key=?)"),
        (AttemptFilter(ip="10.0.0.1"), "COVERING INDEX attempts_cdn_ip (cdn=? AND ip=?)"),
        (
            AttemptFilter(success=False, start=1000),
            "COVERING INDEX attempts_cdn_at_success (cdn=? AND at>?)",
        ),
    ],
    ids=["key", "ip", "recent-denied"],
)
def test_a_capped_count_reads_its_index_only(
    migrated: sqlite3.Connection,  # noqa: F811  # the imported fixture
    where: AttemptFilter,
    index: str,
) -> None:
    plan = _plan(migrated, count_upto_query(1, where, 10_000))
    assert f"SEARCH attempts USING {index}" in plan, plan
    assert "LIMIT" in count_upto_query(1, where, 10_000)[0]


def test_recent_denials_walk_the_time_index_backwards(
    migrated: sqlite3.Connection,  # noqa: F811  # the imported fixture
) -> None:
    plan = _plan(migrated, (RECENT_DENIALS_SQL, [1, 0, 2**40, 20_000]))
    # No sort: the index is read newest first, and LIMIT stops it.
    assert plan == (
        "SEARCH attempts USING INDEX attempts_cdn_at_success (cdn=? AND at>? AND at<?)"
    ), plan


@pytest.mark.parametrize(
    "where",
    [
        AttemptFilter(ip="10.0.0.1"),
        AttemptFilter(key="k1", success=False),
        AttemptFilter(password="pw", app="demo-1"),
        AttemptFilter(start=1, end=2**40),
        AttemptFilter(start=1, success=False, video="v1"),
    ],
    ids=["ip", "key+success", "pass+app", "time", "time+success+video"],
)
def test_a_walk_of_the_table_uses_no_index_and_lists_the_same(
    migrated: sqlite3.Connection,  # noqa: F811  # the imported fixture
    where: AttemptFilter,
) -> None:
    _insert_attempts(migrated, 300)
    walk = list_query(1, where, PAGE, newest_first=True, walk_table=True)
    assert _plan(migrated, walk) == "SCAN attempts", _plan(migrated, walk)
    through_index = list_query(1, where, PAGE, newest_first=True)
    assert "SCAN attempts" not in _plan(migrated, through_index)
    assert migrated.execute(*walk).fetchall() == migrated.execute(*through_index).fetchall()
    cursor = list_query(1, where, PAGE, newest_first=True, walk_table=True, before=200)
    assert _plan(migrated, cursor) == "SEARCH attempts USING INTEGER PRIMARY KEY (rowid<?)"


def test_the_walk_is_chosen_for_busy_values_and_recent_ranges() -> None:
    page = Page(limit=50)
    # A busy address: 600 k of 10.9 M attempts, the matches 5% of the log.
    assert walk_is_cheaper(index_rows=600_000, newer=0, matches=10_001, total=10_900_000, page=page)
    # A typical address: its index holds a few rows.
    assert not walk_is_cheaper(index_rows=12, newer=0, matches=12, total=10_900_000, page=page)
    # The last day (360 k rows, nothing newer) against a day a month ago.
    assert walk_is_cheaper(index_rows=360_000, newer=0, matches=10_001, total=10_900_000, page=page)
    assert not walk_is_cheaper(
        index_rows=360_000, newer=8_000_000, matches=10_001, total=10_900_000, page=page
    )


@pytest.mark.parametrize("lone", [False, True])
@pytest.mark.parametrize(
    ("newer", "matches", "total", "rows"),
    [(0, 10_001, 10_900_000, 1000), (0, 10_001, 10_900_000, 51), (500, 7, 3_000, 25)],
)
def test_a_size_counted_up_to_its_bound_settles_the_walk(
    lone: bool, newer: int, matches: int, total: int, rows: int
) -> None:
    # The planner counts a busy value's index entries only up to this bound
    # (it makes no count filter): one more must mean "walk", and any count
    # within it must be decided as walk_is_cheaper decides it.
    page = Page(limit=rows)
    bound = index_rows_worth_reading(
        newer=newer, matches=matches, total=total, page=page, lone=lone
    )

    def walk(size: int) -> bool:
        # Alone, the value's index entries are the matches, as the planner takes them.
        seen = size if lone else matches
        return walk_is_cheaper(index_rows=size, newer=newer, matches=seen, total=total, page=page)

    assert walk(bound + 1)
    assert not walk(bound)
    assert not walk(1)


@pytest.mark.parametrize(
    "where",
    [
        AttemptFilter(app="demo-1", start=1, end=2**40),
        AttemptFilter(video="v1", start=1),
        AttemptFilter(app="demo-1", video="v1", success=False, end=2**40),
    ],
    ids=["app", "video", "app+video+success"],
)
def test_a_time_range_with_an_app_or_video_reads_the_smaller_index(
    migrated: sqlite3.Connection,  # noqa: F811  # the imported fixture
    where: AttemptFilter,
) -> None:
    _insert_attempts(migrated, 300)
    by_time = count_upto_query(1, where, 100)
    by_app = count_upto_query(1, where, 100, by_app_video=True)
    assert "attempts_cdn_at_success" in _plan(migrated, by_time), _plan(migrated, by_time)
    assert "attempts_cdn_app_video" in _plan(migrated, by_app), _plan(migrated, by_app)
    assert migrated.execute(*by_time).fetchall() == migrated.execute(*by_app).fetchall()


def test_a_video_finds_its_apps_through_the_rollups_video_index(
    migrated: sqlite3.Connection,  # noqa: F811  # the imported fixture
) -> None:
    where = AttemptFilter(video="v1")
    plan = _plan(migrated, list_query(1, where, PAGE, newest_first=True, sort_matches=True))
    assert (
        "SEARCH attempt_counts USING INDEX attempt_counts_video (cdn=? AND grain=? AND video=?)"
        in plan
    ), plan


@pytest.mark.anyio
async def test_a_page_past_the_planning_cap_is_still_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The list plan counts matches only up to a cap; past it the count is
    # a lower bound, never a reason to answer an empty page.
    monkeypatch.setattr(sqlite_storage, "LIST_PLANNING_CAP", 3)
    storage = SQLiteStorage(str(tmp_path / "cap.db"))
    await storage.open()
    try:
        await storage.create_account(
            username="demo", api_key="K", secret="S", cdn=DEMO_CDN, now=NOW
        )
        ticket = make_ticket(key="k1", password="p1", video="*")
        await storage.insert_ticket(ticket)
        for n in range(10):
            await storage.record_check(request_for(ticket), decide, NOW + n)
        where = AttemptFilter(key="k1")
        page = await storage.list_attempts(DEMO_CDN, where, Page(limit=5, seek=8))
        assert [a.at for a in page] == [NOW + 8, NOW + 9]
        assert await storage.list_attempts(DEMO_CDN, where, Page(limit=5, seek=10)) == []
    finally:
        await storage.close()


def test_a_list_can_be_driven_by_its_rarer_named_value(
    migrated: sqlite3.Connection,  # noqa: F811  # the imported fixture
) -> None:
    # A leaked key with a rare address: the address's rows, not the key's.
    where = AttemptFilter(key="k1", ip="10.0.0.1")
    by_key = _plan(migrated, list_query(1, where, PAGE, newest_first=True))
    by_ip = _plan(migrated, list_query(1, where, PAGE, newest_first=True, driver_column="ip"))
    assert "attempts_cdn_key" in by_key, by_key
    assert "attempts_cdn_ip" in by_ip and "attempts_cdn_key" not in by_ip, by_ip


def test_a_live_refresh_seeks_the_minutes_from_its_tail_on(
    migrated: sqlite3.Connection,  # noqa: F811  # the imported fixture
) -> None:
    plan = _plan(migrated, minute_tail_query(1, NOW - NOW % 60, "?", deltas=False))
    assert plan == (
        "COMPOUND QUERY | LEFT-MOST SUBQUERY"
        " | SEARCH attempt_minutes USING PRIMARY KEY (cdn=? AND minute>?)"
        " | UNION ALL | SEARCH attempt_counts USING INDEX attempt_counts_video"
        " (cdn=? AND grain=? AND video=? AND app=?)"
    ), plan
