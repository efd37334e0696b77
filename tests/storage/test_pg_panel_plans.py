"""Access paths of the panel's reads on PostgreSQL (issue 13)."""

from __future__ import annotations

from collections.abc import Iterable

import psycopg
import pytest

from tests.helpers import GENERATED_ATTEMPTS, pg_plan
from usher.storage.counting import (
    BUSY_AT,
    EVERYTHING,
    MAX_FILTERS_PER_ACCOUNT,
    Broad,
    FirstRead,
    ValueFilter,
    minute_tail_query,
)
from usher.storage.postgres import PostgresStorage
from usher.storage.postgres.counts import (
    INDEX_PATHS_ONLY,
    bounded_count_params,
    bounded_count_sql,
    capped_count_sql,
    find_then_bound_sql,
)
from usher.storage.postgres.panel import RECENT_DENIALS_SQL
from usher.storage.postgres.sql import TICKET_IDS, attempts_where
from usher.tickets.model import AttemptFilter, Page

pytestmark = pytest.mark.anyio


async def test_recent_denials_walk_the_time_index_backwards(pg_url: str) -> None:
    # A range holding far more denials than the limit, as at scale.
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await conn.execute(
            GENERATED_ATTEMPTS
            + "SELECT 1 + i % 3, 1000000 + i, 'k' || i % 500, 'p', '10.0.' || i % 200 || '.1',"
            " 'v', 'a', '', '', '', i % 3 <> 0, CASE WHEN i % 3 = 0 THEN 'Invalid IP Address'"
            " ELSE '' END, '' FROM generate_series(1, 60000) AS i"
        )
        await conn.execute("ANALYZE attempts")
        sql = RECENT_DENIALS_SQL.replace("%s", "{}").format(1, 1000000, 1060000, 200)
        text = await pg_plan(conn, sql)
    assert "Index Scan Backward using attempts_cdn_at" in text, text
    assert "Sort" not in text, text


async def test_a_video_with_a_time_range_reads_the_app_video_index(pg_url: str) -> None:
    # Many apps and videos over a long range: the time index would read the
    # whole range, the (cdn, app, video, at) index only the video's rows.
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await conn.execute(
            GENERATED_ATTEMPTS
            + "SELECT 1, 1000000 + i, 'k' || i % 500, 'p', '10.0.0.1', 'v' || i % 400,"
            " 'a' || i % 20, '', '', '', true, '', '' FROM generate_series(1, 80000) AS i"
        )
        await conn.execute("SELECT merge_rollup_deltas()")
        await conn.execute("ANALYZE")
        sql, params = attempts_where(1, AttemptFilter(video="v7", start=1000000))
        query = f"SELECT count(*) FROM attempts WHERE {sql}"
        text = await pg_plan(conn, query, params)
        (count,) = await (await conn.execute(query, params)).fetchone() or (None,)
    assert "attempts_cdn_app_video" in text, text
    assert "attempts_cdn_at" not in text, text
    assert count == 200


async def test_ticket_ids_probe_the_key_index(pg_url: str) -> None:
    # A listing's default page of keys (100) in an account of many tickets:
    # one probe each, never the account's range. (For 1000 keys in a table
    # this small, PostgreSQL rightly prefers one pass over the table.)
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO accounts (cdn, username, api_key, secret, disabled, created_at)"
            " VALUES (1, 'demo', 'K', 'S', false, 0)"
        )
        await conn.execute(
            "INSERT INTO tickets (key, cdn, pass, ip, video, app, uses, use_count, active,"
            " created_at, expire_at, used_at, bound_ips, max_viewers)"
            " SELECT 'k' || i, 1, 'p', '', 'v', 'demo-live', 0, 0, true, 0, 1, NULL, '', 0"
            " FROM generate_series(1, 50000) AS i"
        )
        await conn.execute("ANALYZE tickets")
        keys = [f"k{i * 537}" for i in range(1, 101)]
        text = await pg_plan(conn, TICKET_IDS, (keys, 1))
        found = await (await conn.execute(TICKET_IDS, (keys, 1))).fetchall()

    assert "tickets_key_key" in text, text
    assert "tickets_cdn_id" not in text and "Seq Scan" not in text, text
    assert len(found) == len([k for k in keys if int(k[1:]) <= 50000])


async def test_a_live_refresh_seeks_the_minutes_from_its_tail_on(pg_url: str) -> None:
    # A month of minutes merged, and a backlog of deltas: the refresh reads
    # the minutes from its tail on and the two total rows, by their keys,
    # never the month.
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await conn.execute(
            GENERATED_ATTEMPTS
            + "SELECT 1 + i % 3, 1000020 + 60 * (i / 2), 'k', 'p', '10.0.0.1', 'v', 'a', '',"
            " '', '', i % 2 = 0, '', '' FROM generate_series(0, 60000) AS i"
        )
        await conn.execute("SELECT merge_rollup_deltas()")
        await conn.execute(
            GENERATED_ATTEMPTS
            + "SELECT 1, 1000020 + 60 * (i / 2), 'k', 'p', '10.0.0.1', 'v', 'a', '', '', '',"
            " true, '', '' FROM generate_series(59000, 60000) AS i"
        )
        await conn.execute("ANALYZE")
        sql, params = minute_tail_query(1, 1000020 + 60 * 29990, "%s", deltas=True)
        text = await pg_plan(conn, sql, params)

    # (The total rows' tables hold a dozen rows here: a scan is right.)
    assert "Seq Scan on attempt_minute" not in text, text
    assert "attempt_minutes_pkey" in text, text
    assert "attempt_minute_deltas_key" in text, text


async def test_a_bounded_count_of_a_busy_value_stops_at_its_limit(pg_url: str) -> None:
    # A leaked key among five accounts' attempts, with denials among them:
    # the count reads the key's first entries from its index alone and
    # stops, never a bitmap of every entry of the key.
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await conn.execute(
            GENERATED_ATTEMPTS + "SELECT 1 + i % 5, 1000000 + i, CASE WHEN i % 10 = 0 THEN 'hot'"
            " WHEN i % 10 = 5 THEN 'k' || i / 10000 ELSE 'k' || i END, 'p', '10.0.0.1', 'v',"
            " 'a', '', '', '', i % 3 <> 0, '', '' FROM generate_series(1, 200000) AS i"
        )
        await conn.execute("VACUUM ANALYZE attempts")
        sql = bounded_count_sql("success = %s", "key")
        limit = BUSY_AT + 1

        async def bounded(key: str) -> tuple[list[str], tuple[int, int]]:
            params = bounded_count_params(limit, 1, key, [False])
            explain = "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF)"
            plan = (await pg_plan(conn, sql, params, explain=explain)).splitlines()
            row = await (await conn.execute(sql, params)).fetchone()
            assert row is not None
            return plan, (int(row[0]), int(row[1]))

        busy_plan, busy = await bounded("hot")
        _, quiet = await bounded("k7")
    text = "\n".join(busy_plan)
    assert "Index Only Scan using attempts_cdn_key" in text, text
    # The matches' count (its scan is the second of attempts, ``attempts_1``)
    # is not run for a busy key.
    matches = [line for line in busy_plan if "attempts_1" in line]
    assert matches and all("never executed" in line for line in matches), text
    assert busy == (limit, 0)
    # k7: attempts 70005, 70015, ... 79995 (1000), every third of them denied.
    assert quiet == (1000, sum(1 for i in range(70005, 80000, 10) if i % 3 == 0))


async def test_a_bounded_count_tests_its_other_filters_on_the_values_rows(pg_url: str) -> None:
    # A video of one app that holds 4 % of the attempts: PostgreSQL takes
    # app and video for independent and expects 0.16 % of the attempts to
    # match both, fewer than the key's 800; given the filters with the
    # key, it read the app and video index (all 3,200 of that video's).
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await conn.execute(
            GENERATED_ATTEMPTS + "SELECT 1, 1000000 + i, CASE WHEN i % 100 = 1 THEN 'k7'"
            " ELSE 'key' || i END, 'p', '10.0.0.1', CASE WHEN i % 25 = 1 THEN 'hot-video'"
            " ELSE 'v' || i % 97 END, CASE WHEN i % 25 = 1 THEN 'hot-app' ELSE 'a' || i % 89"
            " END, '', '', '', true, '', '' FROM generate_series(1, 80000) AS i"
        )
        await conn.execute("VACUUM ANALYZE attempts")
        sql = bounded_count_sql("app = %s AND video = %s", "key")
        params = bounded_count_params(BUSY_AT + 1, 1, "k7", ["hot-app", "hot-video"])
        text = await pg_plan(conn, sql, params, explain="EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF)")
        row = await (await conn.execute(sql, params)).fetchone()
    assert "attempts_cdn_app_video" not in text, text
    # Both the entries and the matches are read by the key (an index scan or
    # a bitmap of the key's entries, whichever the planner costs lower).
    assert text.count("Index Cond: ((cdn = '1'::smallint) AND (key = 'k7'::text))") == 2, text
    # k7: i % 100 = 1 (800 attempts), all of them of the hot app and video.
    assert row == (800, 800)


async def test_a_capped_count_of_a_busy_key_walks_its_index_to_the_cap(pg_url: str) -> None:
    # The ticket page's allowed and denied counts of a leaked key: read in
    # the key index's order up to the cap, never a bitmap of every entry.
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await conn.execute(
            GENERATED_ATTEMPTS
            + "SELECT 1 + i % 5, 1000000 + i, CASE WHEN i % 10 = 0 THEN 'hot' ELSE 'k' || i END,"
            " 'p', '10.0.0.1', 'v', 'a', '', '', '', i % 3 <> 0, '', ''"
            " FROM generate_series(1, 200000) AS i"
        )
        await conn.execute("VACUUM ANALYZE attempts")
        statement, params, by_value = capped_count_sql(1, AttemptFilter(key="hot", success=False))
        cap = 5000
        async with conn.transaction():
            if by_value:
                await conn.execute(INDEX_PATHS_ONLY)
            query = [*params, cap + 1]
            text = await pg_plan(
                conn, statement, query, explain="EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF)"
            )
            row = await (await conn.execute(statement, query)).fetchone()
    assert "Index Scan using attempts_cdn_key" in text, text
    assert "Bitmap" not in text and "Sort" not in text, text
    # 20,000 attempts of the key, every third denied: more than the cap.
    assert row == (cap + 1,)


async def test_a_busy_video_without_an_app_is_listed_by_walking_the_time_index(
    pg_url: str,
) -> None:
    # A video logged under forty apps in a fifth of the attempts: its page
    # is a few hundred entries into the time index walked backwards, where
    # reading its apps' index entries reads and sorts all of its 20,000
    # attempts.
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await conn.execute(
            GENERATED_ATTEMPTS + "SELECT 1, 1000000 + i, 'k' || i, 'p', '10.0.0.1',"
            " CASE WHEN i % 5 = 0 THEN 'hot' ELSE 'v' || i % 2000 END, 'a' || i % 40, '',"
            " '', '', true, '', '' FROM generate_series(1, 100000) AS i"
        )
        await conn.execute("SELECT merge_rollup_deltas()")
        await conn.execute("VACUUM ANALYZE")
    storage = PostgresStorage(pg_url)
    await storage.open()
    ran: list[tuple[str, list[object]]] = []
    fetchall = storage._db.fetchall

    async def logged(
        sql: str, params: Iterable[object] = (), *, prepare: bool | None = None
    ) -> list[tuple[object, ...]]:
        ran.append((sql, list(params)))
        return await fetchall(sql, params, prepare=prepare)

    try:
        storage._db.fetchall = logged  # type: ignore[method-assign]  # to see the statement
        rows = await storage.list_attempts(
            1, AttemptFilter(video="hot"), Page(limit=51), newest_first=True
        )
    finally:
        await storage.close()
    (sql, params), *_ = [(s, p) for s, p in ran if s.startswith("SELECT id,")]
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        text = await pg_plan(conn, sql, params)

    assert "attempt_counts" not in sql, sql
    assert "Index Scan Backward using attempts_cdn_at" in text, text
    # Only ties of one second are sorted, by id.
    assert "Incremental Sort" in text and "Presorted Key: at" in text, text
    assert [row.id for row in rows] == list(range(100000, 100000 - 51 * 5, -5))


async def test_a_counts_first_bounded_read_is_not_run_once_a_filter_is_found(
    pg_url: str,
) -> None:
    # One round trip finds the count filters and makes the first bounded
    # read; once the key has a filter of its own, the read is skipped inside
    # PostgreSQL (a one-time filter), not merely ignored by the caller.
    storage = PostgresStorage(pg_url)
    await storage.open()
    try:
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            await conn.execute(
                GENERATED_ATTEMPTS + "SELECT 1, 1000000 + i, CASE WHEN i % 4 = 0 THEN 'k1'"
                " ELSE 'key' || i END, 'p', '10.0.0.1', 'v', 'a', '', '', '', i % 3 <> 0, '', ''"
                " FROM generate_series(1, 400) AS i"
            )
            await conn.execute("VACUUM ANALYZE attempts")
            key = ValueFilter(1, 1, "k1", "", "")
            denied = Broad(None, None, False)
            first = FirstRead(key, "key", denied, BUSY_AT + 1, frozenset({key.mask}))
            # k1: i = 4, 8, ..., 400 (100 attempts), denied where i % 3 = 0.
            expected = (100, sum(1 for i in range(4, 401, 4) if i % 3 == 0))

            assert await storage.find_filters_then_bound([key], first) == ({}, expected)
            assert await storage.bounded_count(key, "key", denied, BUSY_AT + 1) == expected

            filter_id = await storage.add_filter(key, cap=MAX_FILTERS_PER_ACCOUNT)
            assert filter_id is not None
            assert await storage.find_filters_then_bound([key], first) == (
                {key.mask: filter_id},
                None,
            )
            sql, params = find_then_bound_sql([key], first)
            explain = "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF)"
            plan = (await pg_plan(conn, sql, params, explain=explain)).splitlines()
            reads = [line for line in plan if " on attempts" in line]
            assert reads and all("never executed" in line for line in reads), "\n".join(plan)
            # Another account's value: nothing found, the read is made.
            other = ValueFilter(2, 1, "k1", "", "")
            assert await storage.find_filters_then_bound(
                [other], FirstRead(other, "key", EVERYTHING, BUSY_AT + 1, frozenset({1}))
            ) == ({}, (0, 0))
    finally:
        await storage.close()
