"""``usher seed-data`` leaves a database the ordinary code paths would have made.

The bulk loader drops the attempt indexes and triggers, appends rows, writes
the rollup from tallies kept in Python and rebuilds the indexes with
different pragmas. None of that may show afterwards: the schema, the rollup
and the use counts must be exactly what migrations and triggers produce.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

from tests.storage.test_sqlite_counts import _rollup_matches_attempts
from usher.seed import (
    BRUTE_FORCE_ADDRESS,
    EDGE_ADDRESS,
    TIME_ORDERED_INDEXES,
    _key_tails,
    seed_database,
)
from usher.storage.sqlite import SQLiteStorage
from usher.tickets.keys import new_ticket_key


def _schema(path: Path) -> list[tuple[str, str, str, str]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"
        ).fetchall()
    finally:
        conn.close()


def _migrated(path: Path) -> None:
    async def create() -> None:
        storage = SQLiteStorage(str(path))
        await storage.open()
        await storage.close()

    asyncio.run(create())


def test_a_seeded_database_equals_one_built_the_ordinary_way(tmp_path: Path) -> None:
    seeded = tmp_path / "seeded.db"
    url = f"sqlite:///{seeded}"
    # Twice: the second load adds to a database that already holds data, so
    # the rollup rows of existing (cdn, app, video) groups must be added to.
    reports: list[tuple[str, int, int]] = []
    for seed in (1, 2):
        seed_database(
            url,
            tickets=400,
            attempts_total=5_000,
            accounts=2,
            seed=seed,
            progress=lambda *report: reports.append(report),
        )
    # Each phase reports from 0 to its whole, in order (the CLI draws the bars).
    phases = [phase for phase, done, _ in reports if done == 0]
    assert phases == ["plan", "attempts", "indexes"] * 2
    assert ("attempts", 5_000, 5_000) in reports
    assert all(done <= total for _, done, total in reports)
    plain = tmp_path / "plain.db"
    _migrated(plain)
    assert _schema(seeded) == _schema(plain)
    # The index the load keeps while the rows go in names a real one (a
    # renamed index would quietly be dropped and sorted again).
    attempt_indexes = {
        name for kind, name, table, _ in _schema(plain) if kind == "index" and table == "attempts"
    }
    assert set(TIME_ORDERED_INDEXES) <= attempt_indexes

    conn = sqlite3.connect(seeded)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("SELECT COUNT(*) FROM attempts").fetchone()[0] == 10_000
        assert conn.execute("SELECT COUNT(*) FROM tickets").fetchone()[0] == 800
        # The rollup equals a plain COUNT(*) ... GROUP BY at every grain.
        _rollup_matches_attempts(conn)
        # Every use a ticket counts is an allowed attempt in the log.
        mismatched = conn.execute(
            "SELECT COUNT(*) FROM tickets t WHERE t.use_count !="
            " (SELECT COUNT(*) FROM attempts a WHERE a.key = t.key AND a.success = 1)"
        ).fetchone()[0]
        assert mismatched == 0
        # About a third refused, as the module promises.
        refused = conn.execute("SELECT AVG(success = 0) FROM attempts").fetchone()[0]
        assert 0.2 < refused < 0.45
    finally:
        conn.close()


def test_the_seed_has_the_heavy_hitters_real_logs_have(tmp_path: Path) -> None:
    path = tmp_path / "seeded.db"
    result = seed_database(f"sqlite:///{path}", tickets=2_000, attempts_total=40_000, accounts=3)
    first_cdn = result.accounts[0]["cdn"]
    conn = sqlite3.connect(path)
    try:

        def one(sql: str, *params: object) -> tuple[Any, ...]:
            row: tuple[Any, ...] = conn.execute(sql, params).fetchone()
            return row

        # All three in the first account, as a busy publisher's log has them.
        by_address = "SELECT COUNT(*), COUNT(DISTINCT key), SUM(success), MIN(cdn), MAX(cdn)"
        by_address += " FROM attempts WHERE ip = ?"
        # A CDN edge: about 5% of all attempts, many tickets, mostly allowed.
        edge, edge_keys, edge_allowed, low, high = one(by_address, EDGE_ADDRESS)
        assert 0.04 < edge / 40_000 < 0.06
        assert edge_keys >= 10 and edge_allowed > edge / 2
        assert low == high == first_cdn
        # A bot guessing keys: about 2%, every guess a different unknown key,
        # every one refused.
        guesses, guessed_keys, guessed_allowed, low, high = one(by_address, BRUTE_FORCE_ADDRESS)
        assert 0.015 < guesses / 40_000 < 0.025
        assert guessed_keys == guesses and guessed_allowed == 0
        assert low == high == first_cdn
        known = "SELECT COUNT(*) FROM tickets WHERE key IN (SELECT key FROM attempts WHERE ip = ?)"
        assert one(known, BRUTE_FORCE_ADDRESS) == (0,)
        # A leaked key: the busiest key by far, about 3%, from many addresses.
        leaked, plays, addresses, cdn = one(
            "SELECT key, COUNT(*), COUNT(DISTINCT ip), cdn FROM attempts"
            " GROUP BY key ORDER BY 2 DESC LIMIT 1"
        )
        assert 0.025 < plays / 40_000 < 0.035
        assert addresses > 200 and cdn == first_cdn
        assert one("SELECT uses, ip, active FROM tickets WHERE key = ?", leaked) == (0, "", 1)
        # The two busiest addresses.
        busiest = conn.execute(
            "SELECT ip FROM attempts GROUP BY ip ORDER BY COUNT(*) DESC LIMIT 2"
        ).fetchall()
        assert busiest == [(EDGE_ADDRESS,), (BRUTE_FORCE_ADDRESS,)]
    finally:
        conn.close()


def test_seeded_keys_look_like_issued_keys() -> None:
    issued = new_ticket_key("vod/1/title1.mp4").split(".")
    for tail in _key_tails(50):
        hex_part, digits = tail.split(".")
        assert len(hex_part) == len(issued[1]) and int(hex_part, 16) >= 0
        assert len(digits) == len(issued[2]) and digits.isdigit()
    assert len(set(_key_tails(1000))) == 1000
