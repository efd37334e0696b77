"""How PostgreSQL counts a ticket's open sessions (max_viewers, listings).

Every playback start on a ticket with a viewer limit counts that ticket's
open sessions inside its batch's transaction. The count must stay one probe
of ``sessions_open_key`` under each ticket however many sessions are open,
planned afresh at each run so that it follows the table's statistics as
soon as autovacuum has taken them, and a batch must count only the
tickets that have a limit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from tests.helpers import NOW, make_ticket, pg_plan, request_for
from usher.storage.postgres import PostgresStorage
from usher.storage.postgres.sql import BATCH_VIEWERS, VIEWERS
from usher.tickets.decision import decide
from usher.tickets.model import SessionStart

pytestmark = pytest.mark.anyio

LIMITED = [f"limited.{i}" for i in range(40)]
FREE = [f"free.{i}" for i in range(40)]
#: Open sessions per ticket; each ticket also has expired and ended ones.
OPEN = 250


@pytest.fixture
async def crowded(pg_url: str) -> AsyncIterator[psycopg.AsyncConnection]:
    storage = PostgresStorage(pg_url)
    await storage.open()
    try:
        await storage.create_account(username="demo", api_key="K", secret="S", cdn=1, now=NOW)
        for key in LIMITED + FREE:
            limit = 1_000 if key in LIMITED else 0
            await storage.insert_ticket(make_ticket(key=key, max_viewers=limit))
    finally:
        await storage.close()
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        # Per ticket: OPEN open sessions, then 10 idle past their expiry,
        # then 10 ended.
        await conn.execute(
            "INSERT INTO sessions (id, handle, cdn, key, ip, app, video, protocol, started_at,"
            " last_seen_at, expires_at, ended_at, end_reason)"
            " SELECT t.key || '/' || i, t.key || '/' || i, 1, t.key, '10.0.0.1', 'demo-live',"
            " 'v', 'hls', %(at)s - 30, %(at)s - 5,"
            " CASE WHEN i <= %(open)s THEN %(at)s + 60 ELSE %(at)s - 1 END,"
            " CASE WHEN i > %(open)s + 10 THEN %(at)s - 2 END,"
            " CASE WHEN i > %(open)s + 10 THEN 'done' END"
            " FROM unnest(%(keys)s::text[]) AS t (key)"
            " CROSS JOIN generate_series(1, %(open)s + 20) AS i",
            {"at": NOW, "open": OPEN, "keys": LIMITED + FREE},
        )
        # As autovacuum leaves the table once the sessions have come. Before
        # that, with no column statistics at all (a new database), the
        # planner takes ``ended_at IS NULL`` for a rare condition and may
        # read either open-session index (test_the_counts_are_planned_at_each_run).
        await conn.execute("ANALYZE sessions")
        yield conn


async def test_a_batch_counts_the_open_sessions_of_limited_tickets_only(
    crowded: psycopg.AsyncConnection,
) -> None:
    keys = sorted([*LIMITED[:5], *FREE[:5]])
    rows = await (await crowded.execute(BATCH_VIEWERS, (NOW, keys))).fetchall()
    assert dict(rows) == dict.fromkeys(LIMITED[:5], OPEN)


async def test_a_listing_counts_every_ticket_with_open_sessions(
    crowded: psycopg.AsyncConnection,
) -> None:
    keys = [LIMITED[0], FREE[0], "no.such.key"]
    rows = await (await crowded.execute(VIEWERS, (NOW, keys))).fetchall()
    assert dict(rows) == {LIMITED[0]: OPEN, FREE[0]: OPEN}


@pytest.mark.parametrize("sql", [BATCH_VIEWERS, VIEWERS], ids=["batch", "listing"])
async def test_the_count_probes_each_tickets_open_sessions(
    crowded: psycopg.AsyncConnection, sql: str
) -> None:
    text = await pg_plan(crowded, sql, (NOW, sorted(LIMITED + FREE)))
    assert "sessions_open_key" in text, text
    assert "sessions_open_expiry" not in text, text
    assert "Seq Scan on sessions" not in text, text


async def test_the_counts_are_planned_at_each_run(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Prepared, they would keep the plan made while the table was small: on
    the benchmark's load that plan read every open session once per ticket."""
    sent: list[tuple[str, bool | None]] = []
    execute = psycopg.AsyncConnection.execute

    async def spy(
        self: psycopg.AsyncConnection[Any], query: Any, params: Any = None, **options: Any
    ) -> Any:
        if query in (BATCH_VIEWERS, VIEWERS):
            sent.append((query, options.get("prepare")))
        return await execute(self, query, params, **options)

    monkeypatch.setattr(psycopg.AsyncConnection, "execute", spy)
    storage = PostgresStorage(pg_url)
    await storage.open()
    try:
        await storage.create_account(username="demo", api_key="K", secret="S", cdn=1, now=NOW)
        ticket = make_ticket(max_viewers=100)
        await storage.insert_ticket(ticket)
        # More starts than psycopg runs before it prepares a statement (5).
        for i in range(8):
            start = SessionStart(f"s{i}", f"h{i}", "hls", 120, resume=True, unseen=True)
            outcome = await storage.record_check(request_for(ticket), decide, NOW, session=start)
            assert outcome.decision.allowed
        assert await storage.count_viewers([ticket.key], NOW) == {ticket.key: 8}
    finally:
        await storage.close()
    assert {query for query, _ in sent} == {BATCH_VIEWERS, VIEWERS}
    assert all(prepare is False for _, prepare in sent), sent
