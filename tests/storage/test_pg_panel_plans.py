"""Access paths of the panel's reads on PostgreSQL (issue 13)."""

from __future__ import annotations

import psycopg
import pytest

from usher.storage.postgres.panel import RECENT_DENIALS_SQL
from usher.storage.postgres.sql import attempts_where
from usher.tickets.model import AttemptFilter

pytestmark = pytest.mark.anyio


async def test_recent_denials_walk_the_time_index_backwards(pg_url: str) -> None:
    # A range holding far more denials than the limit, as at scale.
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO attempts (cdn, at, key, pass, ip, video, app, appinst, pageurl,"
            " refurl, success, reason, server_ip)"
            " SELECT 1 + i % 3, 1000000 + i, 'k' || i % 500, 'p', '10.0.' || i % 200 || '.1',"
            " 'v', 'a', '', '', '', i % 3 <> 0, CASE WHEN i % 3 = 0 THEN 'Invalid IP Address'"
            " ELSE '' END, '' FROM generate_series(1, 60000) AS i"
        )
        await conn.execute("ANALYZE attempts")
        sql = RECENT_DENIALS_SQL.replace("%s", "{}").format(1, 1000000, 1060000, 200)
        plan = [row[0] async for row in await conn.execute("EXPLAIN " + sql)]
    text = "\n".join(plan)
    assert "Index Scan Backward using attempts_cdn_at_success" in text, text
    assert "Sort" not in text, text


async def test_a_video_with_a_time_range_reads_the_app_video_index(pg_url: str) -> None:
    # Many apps and videos over a long range: the time index would read the
    # whole range, the (cdn, app, video, at) index only the video's rows.
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO attempts (cdn, at, key, pass, ip, video, app, appinst, pageurl,"
            " refurl, success, reason, server_ip)"
            " SELECT 1, 1000000 + i, 'k' || i % 500, 'p', '10.0.0.1', 'v' || i % 400,"
            " 'a' || i % 20, '', '', '', true, '', '' FROM generate_series(1, 80000) AS i"
        )
        await conn.execute("SELECT merge_rollup_deltas()")
        await conn.execute("ANALYZE")
        sql, params = attempts_where(1, AttemptFilter(video="v7", start=1000000))
        query = f"SELECT count(*) FROM attempts WHERE {sql}"
        plan = [row[0] async for row in await conn.execute("EXPLAIN " + query, params)]
        (count,) = await (await conn.execute(query, params)).fetchone() or (None,)
    text = "\n".join(plan)
    assert "attempts_cdn_app_video" in text, text
    assert "attempts_cdn_at_success" not in text, text
    assert count == 200
