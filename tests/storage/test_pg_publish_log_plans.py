"""Access paths of the publish log's reads on PostgreSQL.

A flood of publishes (one account's, from many addresses, most of them
denied) must leave every read one index range: an account's listing with
each filter, the brute-force read of one address, and pruning by time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import psycopg
import pytest

from tests.helpers import pg_plan
from usher.storage.postgres.publishers import LOG
from usher.storage.publish_log import denials_params, prune_params
from usher.tickets.publishers import PublishFilter

pytestmark = pytest.mark.anyio

AT = 1_000_000


@pytest.fixture
async def flooded(pg_url: str) -> AsyncIterator[psycopg.AsyncConnection]:
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        # Account 2 floods from 500 addresses over 40 apps; account 1 logs
        # one publish in 100; a few have no account.
        await conn.execute(
            "INSERT INTO publish_log (cdn, at, ip, app, stream, login, allowed, reason, server,"
            " server_ip, stream_user_id)"
            " SELECT CASE WHEN i % 100 = 0 THEN 1 WHEN i % 100 = 1 THEN NULL ELSE 2 END,"
            " 1000000 + i, '10.0.' || i % 500 || '.1', 'a' || i % 40, 's', '', i % 10 = 0,"
            " CASE WHEN i % 10 = 0 THEN 'open' WHEN i % 3 = 0 THEN 'blocked'"
            " ELSE 'bad_credentials' END, 'srs', '', NULL FROM generate_series(1, 80000) AS i"
        )
        await conn.execute("ANALYZE publish_log")
        yield conn


@pytest.mark.parametrize(
    ("cdn", "where", "index"),
    [
        (1, PublishFilter(), "publish_log_cdn"),
        (2, PublishFilter(allowed=True), "publish_log_cdn_allowed"),
        (2, PublishFilter(ip="10.0.7.1"), "publish_log_cdn_ip"),
        (2, PublishFilter(app="a7"), "publish_log_cdn_app"),
        (2, PublishFilter(ip="10.0.7.1", allowed=False), "publish_log_cdn_ip"),
    ],
)
async def test_listings_walk_their_filters_index_backwards(
    flooded: psycopg.AsyncConnection, cdn: int, where: PublishFilter, index: str
) -> None:
    sql, params = LOG.listing(cdn, where, 50, 60_000)
    text = await pg_plan(flooded, sql, params)
    assert f"Index Scan Backward using {index} on publish_log" in text, text
    assert "Sort" not in text, text


async def test_denials_read_the_partial_index(
    flooded: psycopg.AsyncConnection,
) -> None:
    # One range of the partial index either way: walked backwards when the
    # address has many denials since ``since``, else gathered and sorted.
    for ip, since in (("10.0.7.1", AT), ("10.0.7.1", AT + 79_000)):
        text = await pg_plan(flooded, LOG.denials, denials_params(ip, since, 10))
        assert "Scan Backward using publish_log_denials" in text or (
            "Bitmap Index Scan on publish_log_denials" in text
        ), text
        assert "Seq Scan" not in text, text


async def test_pruning_reads_the_time_index(flooded: psycopg.AsyncConnection) -> None:
    text = await pg_plan(flooded, LOG.prune, prune_params(AT + 1000, 1000))
    assert "Index Scan using publish_log_at" in text, text
    assert "publish_log_pkey" in text and "Seq Scan" not in text, text
