"""SQLite specifics of the errorcount rollup (migration 0004).

The contract suite proves the counts are right through the interface; these
tests pin what only SQLite can show: the migration counts attempts logged
before it, the triggers follow deletes and updates, and each filter
combination runs on the access path it was designed for.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import NOW
from usher.storage import migrations
from usher.storage.sqlite import SQLiteStorage
from usher.storage.sqlite.counts import plain_count_query, scan_count_query
from usher.storage.sqlite.engine import split_sql
from usher.tickets.model import AttemptFilter

ROLLUP_VERSION = 4


def _rollup_matches_attempts(conn: sqlite3.Connection) -> None:
    """Every rollup row equals a GROUP BY over the attempts, at every grain."""
    grains = {0: "'', ''", 1: "app, ''", 2: "'', video", 3: "app, video"}
    for grain, columns in grains.items():
        expected = conn.execute(
            f"SELECT cdn, {columns}, success, COUNT(*) FROM attempts WHERE cdn IS NOT NULL"
            f" GROUP BY cdn, {columns}, success ORDER BY 1, 2, 3, 4"
        ).fetchall()
        stored = conn.execute(
            "SELECT cdn, app, video, success, n FROM attempt_counts WHERE grain = ? AND n > 0"
            " ORDER BY 1, 2, 3, 4",
            (grain,),
        ).fetchall()
        assert stored == expected, f"grain {grain}"
    minutes = conn.execute(
        "SELECT cdn, at - at % 60, success, COUNT(*) FROM attempts WHERE cdn IS NOT NULL"
        " GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
    ).fetchall()
    stored_minutes = conn.execute(
        "SELECT cdn, minute, success, n FROM attempt_minutes WHERE n > 0 ORDER BY 1, 2, 3"
    ).fetchall()
    assert stored_minutes == minutes
    for filter_id, cdn, mask, key, password, ip in conn.execute(
        "SELECT id, cdn, mask, key, pass, ip FROM count_filters"
    ).fetchall():
        named = [
            (c, v)
            for c, bit, v in (("key", 1, key), ("pass", 2, password), ("ip", 4, ip))
            if mask & bit
        ]
        where = " AND ".join(f"{c} = ?" for c, _ in named)
        for grain, columns in grains.items():
            expected = conn.execute(
                f"SELECT {columns}, success, COUNT(*) FROM attempts WHERE cdn = ? AND {where}"
                f" GROUP BY {columns}, success ORDER BY 1, 2, 3",
                [cdn, *(v for _, v in named)],
            ).fetchall()
            stored = conn.execute(
                "SELECT app, video, success, n FROM filter_counts"
                " WHERE filter = ? AND grain = ? AND n > 0 ORDER BY 1, 2, 3",
                (filter_id, grain),
            ).fetchall()
            assert stored == expected, f"filter {filter_id}, grain {grain}"


def _insert_attempts(conn: sqlite3.Connection, count: int) -> None:
    conn.executemany(
        "INSERT INTO attempts (cdn, at, key, pass, ip, video, app, appinst, pageurl, refurl,"
        " success, reason, server_ip) VALUES (?, ?, ?, ?, ?, ?, ?, '', '', '', ?, '', '')",
        [
            (
                None if i % 13 == 0 else 1 + i % 2,
                NOW + i,
                f"k{i % 5}",
                "pw",
                f"10.0.0.{i % 3}",
                f"v{i % 4}",
                f"demo-{i % 3}",
                i % 3 != 0,
            )
            for i in range(count)
        ],
    )


def test_migration_counts_attempts_logged_before_it(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for migration in migrations.load("sqlite")[: ROLLUP_VERSION - 1]:
        for statement in split_sql(migration.sql):
            conn.execute(statement)
    conn.execute("INSERT INTO schema_version (version) VALUES (?)", (ROLLUP_VERSION - 1,))
    conn.execute(
        "INSERT INTO accounts VALUES (1, 'demo', 'K', 'S', 0, 0), (2, 'b', 'K', 'S', 0, 0)"
    )
    _insert_attempts(conn, 200)
    conn.close()

    async def migrate() -> None:
        storage = SQLiteStorage(str(path))
        await storage.open()
        await storage.close()

    asyncio.run(migrate())
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT version FROM schema_version").fetchone()[0] >= ROLLUP_VERSION
    _rollup_matches_attempts(conn)
    conn.close()


@pytest.fixture
def migrated(tmp_path: Path) -> sqlite3.Connection:
    path = tmp_path / "new.db"

    async def create() -> None:
        storage = SQLiteStorage(str(path))
        await storage.open()
        await storage.close()

    asyncio.run(create())
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(
        "INSERT INTO accounts VALUES (1, 'demo', 'K', 'S', 0, 0), (2, 'b', 'K', 'S', 0, 0)"
    )
    return conn


def test_triggers_follow_inserts_deletes_and_updates(migrated: sqlite3.Connection) -> None:
    # Count filters of every shape, as add_filter makes them (empty; filled
    # by the triggers from here on, as every attempt comes after them).
    migrated.executemany(
        "INSERT INTO count_filters (cdn, mask, key, pass, ip, created_at)"
        " VALUES (?, ?, ?, ?, ?, 0)",
        [
            (1, 1, "k1", "", ""),
            (1, 2, "", "pw", ""),
            (2, 4, "", "", "10.0.0.2"),
            (1, 5, "k2", "", "10.0.0.2"),
            (2, 7, "k3", "pw", "10.0.0.0"),
            (1, 6, "", "pw", "10.0.0.1"),
            (2, 3, "k4", "pw", ""),
        ],
    )
    _insert_attempts(migrated, 300)
    _rollup_matches_attempts(migrated)
    migrated.execute("DELETE FROM attempts WHERE id % 5 = 0")
    _rollup_matches_attempts(migrated)
    migrated.execute(
        "UPDATE attempts SET app = 'demo-moved', success = 1 - success WHERE id % 7 = 0"
    )
    migrated.execute("UPDATE attempts SET cdn = 2 WHERE cdn IS NULL AND id % 2 = 0")
    migrated.execute("UPDATE attempts SET cdn = NULL WHERE id % 11 = 0")
    _rollup_matches_attempts(migrated)


def test_a_failed_statement_leaves_the_rollup_unchanged(migrated: sqlite3.Connection) -> None:
    _insert_attempts(migrated, 50)
    migrated.execute("BEGIN")
    _insert_attempts(migrated, 50)
    migrated.execute("ROLLBACK")
    _rollup_matches_attempts(migrated)
    assert (
        migrated.execute("SELECT SUM(n) FROM attempt_counts WHERE grain = 0").fetchone()[0]
        == (migrated.execute("SELECT COUNT(*) FROM attempts WHERE cdn IS NOT NULL").fetchone()[0])
    )


FIELDS = ("key", "password", "app", "video", "ip", "success")
VALUES: dict[str, Any] = {
    "key": "k1",
    "password": "pw",
    "app": "demo-1",
    "video": "v1",
    "ip": "10.0.0.1",
    "success": True,
}
#: A time range: with it, no all-time rollup answers, so every combination
#: counts through an index.
SPAN_START, SPAN_END = NOW + 10, NOW + 60


def _plan(conn: sqlite3.Connection, where: AttemptFilter) -> str:
    sql, params = scan_count_query(1, where)
    rows = conn.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()
    return " | ".join(str(row[-1]) for row in rows)


@pytest.mark.parametrize(
    "names",
    [c for r in range(len(FIELDS) + 1) for c in itertools.combinations(FIELDS, r)],
    ids=lambda names: "+".join(names) or "none",
)
def test_each_timed_combination_drives_its_designed_index(
    migrated: sqlite3.Connection, names: tuple[str, ...]
) -> None:
    _insert_attempts(migrated, 100)
    where = AttemptFilter(**{name: VALUES[name] for name in names}, start=SPAN_START, end=SPAN_END)
    plan = _plan(migrated, where)
    if "key" in names:
        assert "attempts_cdn_key" in plan, plan
    elif "password" in names:
        assert "attempts_cdn_pass" in plan, plan
    elif "ip" in names:
        assert "attempts_cdn_ip" in plan, plan
    # And it counts what the plain statement counts.
    fast = migrated.execute(*scan_count_query(1, where)).fetchone()[0]
    plain = migrated.execute(*plain_count_query(1, where)).fetchone()[0]
    assert fast == plain


def test_an_attempt_finds_its_count_filters_by_index(migrated: sqlite3.Connection) -> None:
    """The insert trigger's probe of count_filters is seven index lookups,
    not a walk through the account's filters."""
    trigger = migrated.execute(
        "SELECT sql FROM sqlite_master WHERE name = 'attempts_filter_insert'"
    ).fetchone()[0]
    probe = trigger[trigger.index("FROM (SELECT 1 AS mask") + 5 : trigger.index("WHERE true")]
    for name in ("NEW.key", "NEW.pass", "NEW.ip", "NEW.cdn"):
        probe = probe.replace(name, "'x'" if name != "NEW.cdn" else "1")
    plan = " | ".join(
        str(row[-1])
        for row in migrated.execute("EXPLAIN QUERY PLAN SELECT f.id FROM " + probe).fetchall()
    )
    assert "SEARCH f USING COVERING INDEX" in plan and "SCAN f" not in plan, plan
