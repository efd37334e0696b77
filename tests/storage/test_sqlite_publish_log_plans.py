"""The access paths of the publish log's statements on SQLite.

A flood of publishes must not make a read scan: each listing reads one
range of its filter's index in id order (no sort), the brute-force read one
range of the denials' partial index, and pruning the time index. The
contract suite proves the answers; these pin the paths.
"""

from __future__ import annotations

import sqlite3

import pytest

from tests.helpers import NOW
from tests.storage.test_sqlite_counts import migrated  # noqa: F401  # fixture
from usher.storage.publish_log import denials_params, prune_params
from usher.storage.sqlite.publishers import LOG
from usher.tickets.publishers import PublishFilter


def _plan(conn: sqlite3.Connection, sql: str, params: list[object] | tuple[object, ...]) -> str:
    rows = conn.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()
    return " | ".join(str(row[-1]) for row in rows)


@pytest.mark.parametrize(
    ("where", "index"),
    [
        (PublishFilter(), "publish_log_cdn"),
        (PublishFilter(allowed=False), "publish_log_cdn_allowed"),
        (PublishFilter(ip="192.0.2.1"), "publish_log_cdn_ip"),
        (PublishFilter(app="demo-live"), "publish_log_cdn_app"),
        (PublishFilter(ip="192.0.2.1", allowed=True), "publish_log_cdn_ip"),
        (PublishFilter(app="demo-live", allowed=False), "publish_log_cdn_app"),
    ],
)
@pytest.mark.parametrize("before", [None, 500])
def test_listings_read_their_filters_index_in_id_order(
    migrated: sqlite3.Connection,  # noqa: F811
    where: PublishFilter,
    index: str,
    before: int | None,
) -> None:
    sql, params = LOG.listing(1, where, 50, before)
    plan = _plan(migrated, sql, params)
    assert f"USING INDEX {index} (" in plan, plan
    assert "SCAN" not in plan and "TEMP B-TREE" not in plan, plan


def test_denials_read_the_partial_index_newest_first(
    migrated: sqlite3.Connection,  # noqa: F811
) -> None:
    plan = _plan(migrated, LOG.denials, denials_params("192.0.2.1", NOW - 360, 100))
    # Not covering (SQLite reads each row the index yields, to re-check the
    # index's own condition), but the walk stops after ``limit`` rows.
    assert "SEARCH publish_log USING INDEX publish_log_denials (ip=? AND at>?)" in plan, plan
    # Only the outer turn-round scans and sorts: at most ``limit`` rows.
    assert "SCAN publish_log" not in plan and plan.count("TEMP B-TREE") == 1, plan


def test_pruning_reads_the_time_index(migrated: sqlite3.Connection) -> None:  # noqa: F811
    plan = _plan(migrated, LOG.prune, prune_params(NOW, 1000))
    assert "USING COVERING INDEX publish_log_at (at<?)" in plan, plan
    assert "TEMP B-TREE" not in plan, plan
