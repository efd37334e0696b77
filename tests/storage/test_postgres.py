"""What only the PostgreSQL backend has: migrations on a server, the URL's
pool settings, and how it answers when the database goes away or fills up.

Everything a backend must do is in the shared contract (tests/storage/contract/,
run by ``TestPostgres`` in test_contract.py); these tests cover the failure
paths that contract cannot provoke without knowing it talks to PostgreSQL.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import anyio
import psycopg
import pytest

from tests.helpers import NOW
from tests.pgcluster import PostgresCluster
from usher.protocol.errors import (
    ConfigError,
    SchemaError,
    StorageBusy,
    StorageUnavailable,
)
from usher.storage import migrations, storage_for_url
from usher.storage.postgres import PostgresStorage
from usher.storage.postgres.config import PoolSettings, parse_url
from usher.tickets.decision import decide
from usher.tickets.model import AttemptFilter, CheckRequest, Ticket

pytestmark = pytest.mark.anyio

NEWEST = migrations.load("postgresql")[-1].version


@pytest.fixture
def empty_url(pg_cluster: PostgresCluster) -> Iterator[str]:
    """A database with no schema at all (dropped afterwards, not recycled)."""
    name = pg_cluster.create_database(empty=True)
    yield pg_cluster.url(name)
    pg_cluster.drop_database(name)


@pytest.fixture
async def storage(pg_url: str) -> AsyncIterator[PostgresStorage]:
    s = PostgresStorage(pg_url)
    await s.open()
    yield s
    await s.close()


def _ticket(key: str = "k.1") -> Ticket:
    return Ticket(key, 1, "pw", "", "v", "demo-live", 0, 0, True, NOW - 10, NOW + 3600)


def _request(key: str = "k.1") -> CheckRequest:
    return CheckRequest(key=key, password="pw", app="demo-live", video="v", ip="192.0.2.1")


async def _with_demo(storage: PostgresStorage) -> None:
    await storage.create_account(username="demo", api_key="K", secret="S", cdn=1, now=NOW)
    await storage.insert_ticket(_ticket())


# -- the URL ----------------------------------------------------------------------


def test_url_pool_settings_are_taken_out_of_the_libpq_part() -> None:
    target = parse_url(
        "postgresql://u:pw@db.example:6432/usher?sslmode=require&pool_max_size=40"
        "&pool_min_size=0&pool_timeout=2.5&pool_max_waiting=100&statement_timeout_ms=3000"
    )
    assert target.pool == PoolSettings(
        min_size=0, max_size=40, timeout=2.5, max_waiting=100, statement_timeout_ms=3000
    )
    assert target.conninfo == "postgresql://u:pw@db.example:6432/usher?sslmode=require"
    # Messages name the database but never carry the password.
    assert target.display == "u@db.example:6432/usher"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("postgresql://h/db?pool_max_size=lots", "not a number"),
        ("postgresql://h/db?pool_max_size=0", "at least 1"),
        ("postgresql://h/db?pool_min_size=5&pool_max_size=2", "above pool_max_size=2"),
        ("postgresql://h/db?no_such_option=1", "not valid"),
        ("mysql://h/db", "not a PostgreSQL URL"),
    ],
)
def test_bad_urls_are_refused_with_a_sentence(url: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says) as caught:
        parse_url(url)
    assert str(caught.value).endswith(".")


def test_storage_for_url_picks_postgres_for_both_schemes() -> None:
    for scheme in ("postgresql", "postgres"):
        assert isinstance(storage_for_url(f"{scheme}://h/db"), PostgresStorage)
    with pytest.raises(ConfigError) as caught:
        storage_for_url("mysql://root:hunter2@h/db")
    assert "hunter2" not in str(caught.value)


# -- migrations -----------------------------------------------------------------------


async def test_an_empty_database_is_migrated_to_the_newest_schema(empty_url: str) -> None:
    storage = PostgresStorage(empty_url)
    await storage.open()
    try:
        assert await storage.schema_version() == NEWEST
        account = await storage.create_account(
            username="demo", api_key="K", secret="S", cdn=None, now=NOW
        )
        assert account.cdn == 1
    finally:
        await storage.close()


async def test_nodes_starting_together_migrate_once(empty_url: str) -> None:
    nodes = [PostgresStorage(empty_url) for _ in range(5)]
    await asyncio.gather(*(node.open() for node in nodes))
    try:
        versions = await asyncio.gather(*(node.schema_version() for node in nodes))
        assert versions == [NEWEST] * 5
        with psycopg.connect(empty_url) as conn:
            assert conn.execute("SELECT count(*) FROM schema_version").fetchone() == (1,)
    finally:
        await asyncio.gather(*(node.close() for node in nodes))


async def test_a_newer_schema_is_refused_and_left_alone(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE schema_version SET version = %s", (NEWEST + 1,))
    storage = PostgresStorage(pg_url)
    with pytest.raises(SchemaError, match=f"schema version {NEWEST + 1}") as caught:
        await storage.open()
    assert "Upgrade Usher" in str(caught.value)
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchone() == (NEWEST + 1,)


async def test_an_unreachable_server_is_one_clear_error(pg_cluster: PostgresCluster) -> None:
    url = pg_cluster.url("postgres").replace(str(pg_cluster.port), "1") + "&password=hunter2"
    with pytest.raises(StorageUnavailable, match="Cannot connect to PostgreSQL") as caught:
        await PostgresStorage(url).open()
    assert "hunter2" not in str(caught.value)


# -- losing the database, and a full pool ------------------------------------------------


def _kill_sessions(url: str) -> int:
    """Terminate every Usher connection to the test's database, as a restart would."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = 'usher'"
        ).fetchone()
    assert row is not None
    return int(row[0])


async def test_lost_connections_fail_one_write_then_recover(
    storage: PostgresStorage, pg_url: str
) -> None:
    await _with_demo(storage)
    assert (await storage.record_check(_request(), decide, NOW)).decision.allowed
    assert _kill_sessions(pg_url) >= 1

    # A read is retried on a fresh connection and succeeds.
    assert await storage.get_ticket(1, "k.1") is not None
    # Writes are never retried (a lost commit is ambiguous): each either
    # succeeds or says the database is unavailable, never anything else.
    outcomes: list[str] = []
    with anyio.fail_after(10):
        for _ in range(5):
            try:
                await storage.record_check(_request(), decide, NOW)
                outcomes.append("ok")
            except StorageUnavailable:
                outcomes.append("unavailable")
    # The pool replaced its dead connections: the last writes went through.
    assert outcomes[-2:] == ["ok", "ok"], outcomes
    counted = outcomes.count("ok") + 1
    ticket = await storage.get_ticket(1, "k.1")
    assert ticket is not None and ticket.use_count == counted
    assert await storage.count_attempts(1, AttemptFilter()) == counted


@pytest.mark.xdist_group("timing")  # bounds a duration (see conftest.py, xdist)
async def test_a_stopped_server_answers_unavailable_fast_and_recovers(
    pg_cluster: PostgresCluster, pg_url: str
) -> None:
    storage = PostgresStorage(pg_url)
    await storage.open()
    try:
        await _with_demo(storage)
        pg_cluster.stop()
        try:
            for _ in range(3):
                # Bounded: the pool timeout while the database seemed up, a
                # half-second wait once it is known to be down.
                with anyio.fail_after(8), pytest.raises(StorageUnavailable):
                    await storage.record_check(_request(), decide, NOW)
            with anyio.fail_after(1.5), pytest.raises(StorageUnavailable):
                await storage.ping()
        finally:
            pg_cluster.start()
        with anyio.fail_after(15):
            while True:
                try:
                    outcome = await storage.record_check(_request(), decide, NOW)
                    break
                except StorageUnavailable:
                    await asyncio.sleep(0.2)
        assert outcome.decision.allowed
    finally:
        await storage.close()


async def test_a_saturated_pool_answers_busy(pg_cluster: PostgresCluster, pg_url: str) -> None:
    name = pg_url.rsplit("/", 1)[1].split("?", 1)[0]
    url = pg_cluster.url(name, pool_min_size="1", pool_max_size="1", pool_timeout="0.5")
    storage = PostgresStorage(url + "&statement_timeout_ms=1500")
    await storage.open()
    try:
        await _with_demo(storage)
        # Another client holds the ticket's row lock, so the check on the
        # pool's only connection waits, and a second request finds no
        # connection free.
        with psycopg.connect(pg_url) as holder:
            holder.execute("SELECT 1 FROM tickets WHERE key = 'k.1' FOR UPDATE")
            blocked = asyncio.ensure_future(storage.record_check(_request(), decide, NOW))
            await asyncio.sleep(0.2)
            with anyio.fail_after(3), pytest.raises(StorageBusy):
                await storage.get_account(1)
            # statement_timeout ends the blocked check: busy, not a hang.
            with anyio.fail_after(5), pytest.raises(StorageBusy):
                await blocked
            holder.rollback()
        assert (await storage.record_check(_request(), decide, NOW)).decision.allowed
    finally:
        await storage.close()
