"""``usher db copy``: SQLite to PostgreSQL and back, resuming, and refusing.

The data is made and compared only through the Storage interface, so the
tests say what a publisher sees after moving: the same accounts, tickets
(bound slots, use counts) and attempts, with the same ids and order.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import subprocess
import sys
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest

from tests.helpers import NOW
from usher.protocol.errors import ConfigError
from usher.storage import storage_for_url
from usher.storage.base import Claim, Storage
from usher.storage.copy import DEFERRED_INDEXES, PostgresEndpoint, copy_database
from usher.storage.postgres.config import parse_url
from usher.storage.schema import TABLES
from usher.tickets.decision import decide
from usher.tickets.model import AttemptFilter, CheckRequest, Page, Ticket, TicketFilter
from usher.tickets.publishers import PublishAttempt, PublishFilter, StreamUser, StreamUserSettings
from usher.tickets.text import storable as pg_storable

T = TypeVar("T")


def run(work: Awaitable[T]) -> T:
    async def main() -> T:
        return await work

    return asyncio.run(main())


async def _opened(url: str) -> Storage:
    storage = storage_for_url(url)
    await storage.open()
    return storage


def fill(url: str, tickets: int = 12, plays: int = 40) -> None:
    """Two accounts, tickets with slots bound and uses spent, attempts of both
    outcomes (some unattributed), a replay signature and a panel password."""

    async def work() -> None:
        storage = await _opened(url)
        try:
            for cdn, name in ((3, "demo"), (8, "other")):
                await storage.create_account(
                    username=name, api_key=f"K{cdn}", secret=f"S{cdn}", cdn=cdn, now=NOW
                )
            await storage.update_account(8, disabled=True)
            await storage.set_panel_password(3, "scrypt$hash", now=NOW)
            for n in range(tickets):
                cdn, app = (3, "demo-live") if n % 3 else (8, "other-live")
                await storage.insert_ticket(
                    Ticket(f"v{n}.key", cdn, f"p{n}", "auto|auto/24", "v", app, 5, 0, n != 4,
                           NOW - 100, NOW + 3600)
                )  # fmt: skip
            for n in range(plays):
                t = n % tickets
                app = "demo-live" if t % 3 else "other-live"
                request = CheckRequest(
                    key=f"v{t}.key" if n % 7 else "nope",
                    password=f"p{t}",
                    app=app if n % 11 else "ghost-live",
                    video="v",
                    ip=f"10.{n % 4}.0.{n}",
                    pageurl=f"https://example.com/{n}",
                )
                await storage.record_check(request, decide, NOW + n)
            demo = await storage.get_account(3)
            assert demo is not None
            claimed = await storage.claim_signature(
                b"sig-1", now=NOW, expires_at=NOW + 300, account=demo
            )
            assert claimed is Claim.SPENT
            # Stream users: a named one with settings (booleans both ways) and an open one.
            settings = StreamUserSettings(record=True, segment_value=60, enable_dvr=False)
            await storage.save_stream_user(
                StreamUser(0, 3, "demo-live", "cam", "alice", "scrypt$h", settings, NOW, NOW)
            )
            await storage.save_stream_user(
                StreamUser(0, 8, "other-live", "*", None, None, StreamUserSettings(), NOW, NOW)
            )
            # The publish log: allowed and denied (booleans both ways), unowned,
            # with and without a user and a stream user.
            for publish in (
                PublishAttempt(0, 3, NOW, "10.1.0.0", "demo-live", "cam", "alice", True,
                               "credentials", "srs", "192.0.2.9", 1),
                PublishAttempt(0, None, NOW + 1, "10.1.0.1", "ghost-live", "cam", None, False,
                               "no_stream_user", "srs", "192.0.2.9", None),
                PublishAttempt(0, 8, NOW + 2, "10.1.0.1", "other-live", "cam", None, False,
                               "blocked", "nginx-rtmp", "", None),
            ):  # fmt: skip
                await storage.record_publish(publish)
        finally:
            await storage.close()

    run(work())


def snapshot(url: str) -> dict[str, Any]:
    """What the publishers' commands would see."""

    async def work() -> dict[str, Any]:
        storage = await _opened(url)
        try:
            seen: dict[str, Any] = {"accounts": await storage.list_accounts()}
            for account in seen["accounts"]:
                cdn = account.cdn
                seen[f"tickets {cdn}"] = await storage.search_tickets(cdn, TicketFilter(), Page())
                seen[f"attempts {cdn}"] = await storage.list_attempts(cdn, AttemptFilter(), Page())
                seen[f"count {cdn}"] = await storage.count_attempts(
                    cdn, AttemptFilter(success=False)
                )
                seen[f"panel {cdn}"] = await storage.get_panel_password(cdn)
                seen[f"stream users {cdn}"] = await storage.list_stream_users(cdn)
                seen[f"publishes {cdn}"] = await storage.list_publishes(cdn, PublishFilter(), 10)
            seen["publish denials"] = await storage.publish_denials("10.1.0.1", NOW, 10)
            return seen
        finally:
            await storage.close()

    return run(work())


@pytest.fixture
def source(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'source.db'}"
    fill(url)
    return url


def test_sqlite_to_postgres_and_back_keeps_everything(
    source: str, pg_url: str, tmp_path: Path
) -> None:
    reports: list[tuple[str, int, int]] = []
    result = copy_database(
        source, pg_url, signatures=True, batch=7, progress=lambda *r: reports.append(r)
    )
    assert result.verified, result.counts
    assert {name: n for name, n, _ in result.counts} == {
        "accounts": 2, "panel_passwords": 1, "tickets": 12, "attempts": 40, "used_signatures": 1,
        "stream_users": 2, "publish_log": 3,
    }  # fmt: skip
    before = snapshot(source)
    assert snapshot(pg_url) == before
    # Progress is reported table by table (the CLI draws it on stderr).
    assert [r for r in reports if r[0] == "attempts"][-1] == ("attempts", 40, 40)
    assert reports[-1] == ("used_signatures: indexes and id sequence", 1, 1)

    back = f"sqlite:///{tmp_path / 'back.db'}"
    assert copy_database(pg_url, back, signatures=True, batch=5).verified
    assert snapshot(back) == before

    async def carry_on(url: str) -> tuple[int, Claim, int]:
        # The copy is a working database: new rows get new ids after the
        # copied ones, and the copied signature is still spent.
        storage = await _opened(url)
        try:
            await storage.insert_ticket(
                Ticket("new.key", 3, "pw", "", "v", "demo-live", 0, 0, True, NOW, NOW + 60)
            )
            request = CheckRequest(key="new.key", password="pw", app="demo-live", video="v",
                                   ip="10.9.9.9")  # fmt: skip
            outcome = await storage.record_check(request, decide, NOW)
            demo = await storage.get_account(3)
            assert demo is not None
            replayed = await storage.claim_signature(
                b"sig-1", now=NOW + 1, expires_at=NOW + 300, account=demo
            )
            published = await storage.record_publish(before["publishes 3"][0])
            return outcome.attempt_id, replayed, published
        finally:
            await storage.close()

    highest = max(a.id for key, seen in before.items() if key.startswith("attempts ") for a in seen)
    for url in (pg_url, back):
        attempt_id, replayed, published = run(carry_on(url))
        assert attempt_id > highest
        assert replayed is Claim.REPLAYED
        assert published > 3  # the publish log's ids go on too


class Interrupted(Exception):
    pass


def test_an_interrupted_copy_resumes_without_duplicates(source: str, pg_url: str) -> None:
    def stop_in_attempts(table: str, done: int, total: int) -> None:
        if table == "attempts" and done >= 20:
            raise Interrupted

    indexes = pg_indexes(pg_url)
    with pytest.raises(Interrupted):
        copy_database(source, pg_url, batch=10, progress=stop_in_attempts)
    partial = snapshot(pg_url)
    assert sum(len(v) for k, v in partial.items() if k.startswith("attempts ")) < 40
    # The attempts' plain indexes wait, recorded, for the table to be complete.
    waiting = pg_indexes(pg_url)
    assert "attempts_pkey" in waiting and "attempts_cdn_key" not in waiting
    assert DEFERRED_INDEXES in waiting
    assert waiting["tickets_cdn_id"] == indexes["tickets_cdn_id"]

    reports: list[tuple[str, int, int]] = []
    result = copy_database(source, pg_url, batch=10, progress=lambda *r: reports.append(r))
    assert result.verified, result.counts
    assert snapshot(pg_url) == snapshot(source)
    # The re-run started where the first stopped, not at zero.
    assert next(r for r in reports if r[0] == "attempts") == ("attempts", 20, 40)
    # Every index is back as it was, and the record of them is gone.
    assert pg_indexes(pg_url) == indexes
    # A third run has nothing left to do and still verifies.
    assert copy_database(source, pg_url, batch=10).verified
    assert pg_indexes(pg_url) == indexes


def pg_indexes(url: str) -> dict[str, str]:
    """Every index in the database, and every table: by name, its definition."""
    with psycopg.connect(parse_url(url).conninfo) as pg:
        rows = pg.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"
            " UNION ALL SELECT tablename, '' FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
    return dict(rows)


def test_a_destination_with_other_data_is_refused(source: str, tmp_path: Path) -> None:
    other = f"sqlite:///{tmp_path / 'other.db'}"

    async def someone_else() -> None:
        storage = await _opened(other)
        await storage.create_account(username="someone", api_key="K", secret="S", cdn=3, now=NOW)
        await storage.close()

    run(someone_else())
    with pytest.raises(ConfigError, match="did not come from this source"):
        copy_database(source, other)
    with pytest.raises(ConfigError, match="same database"):
        copy_database(source, source)


def test_cli_copy_reports_the_verified_counts(source: str, tmp_path: Path) -> None:
    target = f"sqlite:///{tmp_path / 'cli.db'}"
    result = subprocess.run(
        [sys.executable, "-m", "usher", "db", "copy", "--from", source, "--to", target],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Copy complete; every table's row count matches the source." in result.stdout
    assert "attempts" in result.stderr  # the progress bar
    assert "used_signatures" not in result.stdout  # only with --signatures


#: Text that COPY's text format must escape, that PostgreSQL cannot store, or
#: that merely looks like COPY's own markers.
AWKWARD = ["tab\there", "line\nbreak", "cr\rlf\r\n", "back\\slash", "end\\", "\\N", "\\.",
           "nul\x00byte\x00", "ünïcødé ✓ 𝄞", "", "plain"]  # fmt: skip


def test_awkward_text_arrives_as_postgresql_can_store_it(pg_url: str, tmp_path: Path) -> None:
    source = f"sqlite:///{tmp_path / 'awkward.db'}"

    async def account() -> None:
        storage = await _opened(source)
        await storage.create_account(username="demo", api_key="K", secret="S\t\\", cdn=3, now=NOW)
        await storage.update_account(3, disabled=True)
        await storage.close()

    run(account())
    texts = len(ATTEMPT_TEXTS)
    rows = [
        # Unattributed attempts (NULL cdn) among the account's, both outcomes.
        (n + 1, None if n % 3 == 0 else 3, NOW + n,
         *(AWKWARD[(n + i) % len(AWKWARD)] for i in range(texts - 2)), n % 2,
         *(AWKWARD[(n + i) % len(AWKWARD)] for i in range(texts - 2, texts)))
        for n in range(2 * len(AWKWARD))
    ]  # fmt: skip
    with contextlib.closing(sqlite3.connect(source.removeprefix("sqlite:///"))) as db:
        db.executemany(f"INSERT INTO attempts VALUES ({', '.join('?' * 14)})", rows)
        db.commit()

    def cleaned(value: object) -> object:
        # The cleaning Usher applies to everything it stores in PostgreSQL.
        return pg_storable(value) if isinstance(value, str) else value

    expected = [(*map(cleaned, row[:11]), bool(row[11]), *map(cleaned, row[12:])) for row in rows]

    assert copy_database(source, pg_url, batch=4).verified
    with psycopg.connect(parse_url(pg_url).conninfo) as pg:
        assert pg.execute("SELECT * FROM attempts ORDER BY id").fetchall() == expected
        assert pg.execute("SELECT secret, disabled FROM accounts").fetchall() == [("S\t\\", True)]

    back = f"sqlite:///{tmp_path / 'back.db'}"
    assert copy_database(pg_url, back).verified
    with contextlib.closing(sqlite3.connect(back.removeprefix("sqlite:///"))) as db:
        assert db.execute("SELECT * FROM attempts ORDER BY id").fetchall() == [
            (*row[:11], int(bool(row[11])), *row[12:]) for row in expected
        ]


ATTEMPT_TEXTS = ("key", "pass", "ip", "video", "app", "appinst", "pageurl", "refurl",
                 "reason", "server_ip")  # fmt: skip


def test_lone_surrogates_and_nul_are_replaced_on_the_way_into_postgresql(pg_url: str) -> None:
    # SQLite hands out no lone surrogates (its text is UTF-8), but whatever
    # reaches the PostgreSQL writer is cleaned like everything Usher stores.
    table = next(t for t in TABLES if t.name == "attempts")
    odd = ["\ud800", "a\udfffb\x00", "\ud83d\ude00", "tab\t\\"]
    row = (1, None, NOW, *odd, "app", "", "", "", True, "ok", "")
    target = PostgresEndpoint(pg_url)
    try:
        target.write(table, target.prepare(table, [row]))
        assert target.read(table, None, 10) == [
            (1, None, NOW, "\ufffd", "a\ufffdb\ufffd", "\ufffd\ufffd", "tab\t\\", "app", "",
             "", "", True, "ok", "")
        ]  # fmt: skip
    finally:
        target.close()
