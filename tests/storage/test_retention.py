"""Retention on every backend: ``count_attempts_before`` and ``prune_attempts``.

Each test runs once on SQLite and once on PostgreSQL (the ``database_url``
fixture). After pruning, every count the storage answers is compared with a
plain ``COUNT(*)`` read behind its back, so the SQLite rollup cannot drift
from the rows that remain.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conftest import Harness
from tests.live.conftest import query_database
from tests.storage.test_sqlite_counts import _rollup_matches_attempts
from usher.storage import retention, storage_for_url
from usher.storage.base import Storage
from usher.storage.schema import ROLLUP_TABLES
from usher.storage.sqlite import retention as sqlite_retention
from usher.tickets.decision import decide
from usher.tickets.model import AttemptFilter, CheckRequest, Page, Ticket
from usher.tickets.publishers import PublishAttempt

pytestmark = pytest.mark.anyio

NOW = 1_800_000_000
#: Attempts logged a minute apart from NOW on; the first CUT of them are old.
LOGGED = 150
CUT = 90
BEFORE = NOW + 60 * CUT


@pytest.fixture
async def storage(database_url: str) -> AsyncIterator[Storage]:
    s = storage_for_url(database_url)
    await s.open()
    yield s
    await s.close()


def _ticket(key: str, cdn: int, app: str) -> Ticket:
    return Ticket(
        key=key,
        cdn=cdn,
        password="pw",
        ip="",
        video="*",
        app=app,
        uses=0,
        use_count=0,
        active=True,
        created_at=NOW - 100,
        expire_at=NOW + 86_400,
    )


def _request(i: int) -> CheckRequest:
    """Attempt ``i``: demo's and other's tickets, refusals, unknown keys, and
    attempts no account owns, over a few apps and videos."""
    kind = i % 5
    key = ("d1", "d2", "o1", "nokey", "nokey")[kind]
    app = ("demo-live", "demo-vod", "other-live", "demo-live", "nobody-live")[kind]
    return CheckRequest(
        key=key,
        password="pw" if i % 7 else "bad",
        app=app if i % 11 else "demo-wrong",
        video=f"v{i % 3}",
        ip=f"10.0.0.{i % 4}",
    )


@pytest.fixture
async def logged(storage: Storage) -> Storage:
    for cdn, name in ((1, "demo"), (2, "other")):
        await storage.create_account(
            username=name, api_key=f"{name}KEY", secret="s", cdn=cdn, now=NOW
        )
    await storage.insert_ticket(_ticket("d1", 1, "demo-live"))
    await storage.insert_ticket(_ticket("d2", 1, "demo-*"))
    await storage.insert_ticket(_ticket("o1", 2, "other-live"))
    for i in range(LOGGED):
        await storage.record_check(_request(i), decide, NOW + 60 * i)
    return storage


#: Filters whose counts are compared with COUNT(*): the rollup's
#: combinations (SQLite answers them from attempt_counts) and the indexed ones.
FILTERS: list[tuple[AttemptFilter, str]] = [
    (AttemptFilter(), "TRUE"),
    (AttemptFilter(success=True), "success"),
    (AttemptFilter(success=False), "NOT success"),
    (AttemptFilter(app="demo-live"), "app = 'demo-live'"),
    (AttemptFilter(video="v1"), "video = 'v1'"),
    (AttemptFilter(app="demo-vod", video="v2", success=True),
     "app = 'demo-vod' AND video = 'v2' AND success"),
    (AttemptFilter(app="demo-wrong"), "app = 'demo-wrong'"),
    (AttemptFilter(key="d1"), "key = 'd1'"),
    (AttemptFilter(password="bad"), "pass = 'bad'"),
    (AttemptFilter(ip="10.0.0.2", success=False), "ip = '10.0.0.2' AND NOT success"),
    (AttemptFilter(start=BEFORE - 600), f"at >= {BEFORE - 600}"),
]  # fmt: skip


async def _assert_counts_match_rows(storage: Storage, url: str) -> None:
    for cdn in (1, 2):
        for where, sql in FILTERS:
            (expected,) = query_database(
                url, f"SELECT COUNT(*) FROM attempts WHERE cdn = {cdn} AND ({sql})"
            )[0]
            assert await storage.count_attempts(cdn, where) == expected, (cdn, where)


def _count(url: str, where: str = "TRUE") -> int:
    count: int = query_database(url, f"SELECT COUNT(*) FROM attempts WHERE {where}")[0][0]
    return count


async def test_prune_deletes_exactly_the_old_attempts_batch_by_batch(
    logged: Storage, database_url: str
) -> None:
    old = _count(database_url, f"at < {BEFORE}")
    assert old == CUT
    assert _count(database_url, f"at < {BEFORE} AND cdn IS NULL") > 0
    assert await logged.count_attempts_before(BEFORE) == old

    batches = []
    while went := await logged.prune_attempts(BEFORE, 7):
        assert went <= 7
        batches.append(went)
    assert sum(batches) == old
    assert await logged.prune_attempts(BEFORE, 7) == 0  # idempotent
    assert await logged.count_attempts_before(BEFORE) == 0
    assert _count(database_url) == LOGGED - CUT
    assert _count(database_url, f"at < {BEFORE}") == 0
    # What remains is untouched, whoever owns it.
    kept = await logged.list_attempts(1, AttemptFilter(), Page())
    assert kept and min(a.at for a in kept) == BEFORE


async def test_counts_equal_count_star_before_and_after_pruning(
    logged: Storage, database_url: str
) -> None:
    await _assert_counts_match_rows(logged, database_url)
    deleted = await retention.prune_all(logged, BEFORE, batch=13, pause=0)
    assert deleted.attempts == CUT
    await _assert_counts_match_rows(logged, database_url)
    # Pruning everything leaves every count at zero, not below.
    await retention.prune_all(logged, NOW + 60 * LOGGED, batch=1000, pause=0)
    assert _count(database_url) == 0
    await _assert_counts_match_rows(logged, database_url)


async def test_checks_and_concurrent_pruners_keep_the_counts_exact(
    logged: Storage, database_url: str
) -> None:
    async def checks() -> None:
        for i in range(LOGGED, LOGGED + 60):
            await logged.record_check(_request(i), decide, NOW + 60 * i)

    results = await asyncio.gather(
        retention.prune_all(logged, BEFORE, batch=5, pause=0),
        retention.prune_all(logged, BEFORE, batch=3, pause=0),
        checks(),
    )
    assert results[0].attempts + results[1].attempts == CUT  # each old attempt deleted once
    assert _count(database_url) == LOGGED + 60 - CUT
    await _assert_counts_match_rows(logged, database_url)


async def test_prune_refuses_an_empty_batch(storage: Storage) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        await storage.prune_attempts(NOW, 0)


async def test_errorcount_equals_count_star_after_pruning(
    harness: Harness, database_url: str
) -> None:
    ticket = await harness.ticket(uses=0)
    for i in range(40):
        harness.clock.advance(3600)
        status, _ = await harness.check(
            key=ticket["key"] if i % 3 else "unknown.key",
            app="demo-live" if i % 4 else "demo-vod",
            video="mystream",
            **{"pass": "pw" if i % 5 else "bad"},
        )
        assert status in (200, 403)
    before = int(harness.clock()) - 20 * 3600
    deleted = await retention.prune_all(harness.app.state.storage, before, batch=4, pause=0)
    assert deleted.attempts > 0
    cdn = harness.account.cdn
    assert _count(database_url, f"at < {before}") == 0
    for fields, sql in (
        ({}, "TRUE"),
        ({"success": "1"}, "success"),
        ({"success": "0"}, "NOT success"),
        ({"app": "demo-vod"}, "app = 'demo-vod'"),
        ({"app": "demo-live", "video": "mystream", "success": "0"},
         "app = 'demo-live' AND video = 'mystream' AND NOT success"),
        ({"key": ticket["key"]}, f"key = '{ticket['key']}'"),
        ({"pass": "bad"}, "pass = 'bad'"),
    ):  # fmt: skip
        expected = _count(database_url, f"cdn = {cdn} AND ({sql})")
        status, body = await harness.call("sevu.errorcount", **fields)
        assert status == 200, body
        assert int(body["error_count"]) == expected, (fields, body)


# -- SQLite: the rollup table itself, and the write lock's budget ---------------


def _sqlite_file(url: str) -> str:
    return url.removeprefix("sqlite:///")


async def test_sqlite_rollup_rows_match_the_attempts_after_pruning(
    logged: Storage, database_url: str
) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("reads the SQLite file; on PostgreSQL, test_postgres_counts.py")
    await retention.prune_all(logged, BEFORE, batch=11, pause=0)
    with sqlite3.connect(_sqlite_file(database_url)) as conn:
        _rollup_matches_attempts(conn)
        # The final pass removed the rows pruning brought to zero.
        for table in ROLLUP_TABLES:
            assert conn.execute(f"SELECT COUNT(*) FROM {table} WHERE n <= 0").fetchone() == (0,)


async def test_sqlite_job_stops_at_its_time_budget_but_never_returns_zero_early(
    logged: Storage, database_url: str, monkeypatch: Any
) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("only SQLite bounds a batch by time")
    monkeypatch.setattr(sqlite_retention, "JOB_BUDGET", 0.0)
    monkeypatch.setattr(sqlite_retention, "CHUNK", 4)
    batches = []
    while went := await logged.prune_attempts(BEFORE, 1000):
        batches.append(went)
    # Out of time after every chunk: many small jobs, none empty until the end.
    assert max(batches) <= 4 and len(batches) >= CUT // 4
    assert sum(batches) == CUT
    assert _count(database_url, f"at < {BEFORE}") == 0


async def _log_publishes(storage: Storage) -> None:
    """A publish a minute from NOW on, as many as the attempts, some unowned."""
    for i in range(LOGGED):
        await storage.record_publish(
            PublishAttempt(0, (1, None)[i % 2], NOW + 60 * i, "10.0.0.1", "demo-live", "cam",
                           None, False, "no_credentials", "srs", "", None)
        )  # fmt: skip


def _publishes(url: str, where: str = "TRUE") -> int:
    count: int = query_database(url, f"SELECT COUNT(*) FROM publish_log WHERE {where}")[0][0]
    return count


async def test_prune_all_prunes_the_publish_log_as_far_as_the_attempts(
    logged: Storage, database_url: str
) -> None:
    await _log_publishes(logged)
    pruned = await retention.prune_all(logged, BEFORE, batch=7, pause=0)
    assert (pruned.attempts, pruned.publishes) == (CUT, CUT)
    assert _publishes(database_url, f"at < {BEFORE}") == 0
    assert _publishes(database_url) == LOGGED - CUT


async def test_background_pass_prunes_the_publish_log_too(
    logged: Storage, database_url: str
) -> None:
    await _log_publishes(logged)
    now = NOW + 60 * LOGGED
    pruner = retention.Pruner(logged, now - BEFORE, clock=lambda: now, batch=7, pause=0)
    assert await pruner.one_pass() == CUT
    assert pruner.publishes_deleted == CUT
    assert _publishes(database_url, f"at < {BEFORE}") == 0
    assert _publishes(database_url) == LOGGED - CUT
