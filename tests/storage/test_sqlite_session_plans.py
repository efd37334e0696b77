"""The access paths of the session statements on SQLite.

SQLite keeps no statistics here, and without them it chose the
``(key|cdn, started_at)`` history indexes for questions about open sessions:
at 1 M session rows a ticket's viewer count and the account's "watching now"
took 1.6 to 4 s. These tests pin every session statement to the index that
reads only the rows it needs; the contract suite proves the answers.
"""

from __future__ import annotations

import sqlite3

import pytest

from tests.helpers import NOW
from tests.storage.test_sqlite_counts import migrated  # noqa: F401  # fixture
from usher.storage.base import SessionFilter, SessionsToEnd
from usher.storage.sessions import (
    count_open_sql,
    count_sql,
    count_upto_sql,
    end_params,
    end_sql,
    page_sql,
    sweep_sql,
    viewers_sql,
)
from usher.storage.sqlite.sql import OPEN_BY_EXPIRY, OPEN_BY_KEY, sessions_hint
from usher.tickets.model import EndReason, Page


def _plan(conn: sqlite3.Connection, sql: str, params: list[object]) -> str:
    rows = conn.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()
    return " | ".join(str(row[-1]) for row in rows)


def test_open_session_counts_read_the_open_indexes(migrated: sqlite3.Connection) -> None:  # noqa: F811
    plan = _plan(migrated, viewers_sql(2, "?", OPEN_BY_KEY), ["a", "b", NOW])
    assert "USING INDEX sessions_open_key" in plan
    plan = _plan(migrated, count_open_sql("?", by_cdn=True, table=OPEN_BY_EXPIRY), [NOW, 1])
    assert "USING INDEX sessions_open_expiry" in plan
    assert "sessions_open_expiry" in _plan(migrated, sweep_sql("?"), [NOW, 1000, NOW])
    (idle, params), (ending, _) = end_sql("?", SessionsToEnd(cdn=1, key="k"), OPEN_BY_KEY)
    assert "sessions_open_key" in _plan(
        migrated, idle, end_params(0, params, NOW, EndReason.KICKED)
    )
    assert "sessions_open_key" in _plan(
        migrated, ending, end_params(1, params, NOW, EndReason.KICKED)
    )


@pytest.mark.parametrize(
    ("where", "index"),
    [
        (SessionFilter(), "sessions_cdn_started"),
        (SessionFilter(open=True), "sessions_open_expiry"),
        (SessionFilter(key="k"), "sessions_key_started"),
        (SessionFilter(key="k", open=True), "sessions_open_key"),
        (SessionFilter(ip="192.0.2.1", open=False), "sessions_cdn_ip_started"),
    ],
)
def test_listings_read_their_filters_index(
    migrated: sqlite3.Connection,  # noqa: F811
    where: SessionFilter,
    index: str,
) -> None:
    for sql, params in (
        page_sql(1, where, NOW, "?", Page(limit=50), sessions_hint),
        count_upto_sql(1, where, NOW, 10_000, "?", sessions_hint),
    ):
        plan = _plan(migrated, sql, params)
        assert f"INDEX {index}" in plan
        # No table scan: only the capped count's own subquery is scanned.
        assert "SCAN sessions" not in plan


def test_counting_ended_sessions_reads_indexes_only(migrated: sqlite3.Connection) -> None:  # noqa: F811
    sql, params = count_sql(1, SessionFilter(open=False), NOW, "?", sessions_hint)
    plan = _plan(migrated, sql, params)
    assert "USING COVERING INDEX sessions_cdn_started" in plan
    assert "sessions_open_expiry" in plan
