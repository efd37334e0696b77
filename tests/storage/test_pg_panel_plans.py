"""The access path of the overview's top-list read on PostgreSQL (issue 13)."""

from __future__ import annotations

import psycopg
import pytest

from usher.storage.postgres.panel import RECENT_DENIALS_SQL

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
