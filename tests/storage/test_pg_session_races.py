"""Live sessions on PostgreSQL when another node changes them mid-batch.

A batch reads a ticket's sessions with the ticket locked, but a kick or an
end notice takes no ticket lock, and a start of another ticket locks only
its own: the batch's write must never undo or overwrite what committed in
between (found in review; both tests failed before the upsert's guard).
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading

import psycopg
import pytest

from tests.helpers import DEMO_CDN, NOW, session_ticket, viewer
from usher.storage.base import SessionsToEnd
from usher.storage.postgres import PostgresStorage
from usher.storage.sessions import end_params, end_sql
from usher.tickets.decision import decide
from usher.tickets.model import CheckRequest, Decision, EndReason, Reason, SessionStart, Ticket

pytestmark = pytest.mark.anyio
HANDLE = "http:" + "ab" * 32


def hls(session_id: str) -> SessionStart:
    return SessionStart(session_id, HANDLE, "hls", 120, resume=True)


@pytest.fixture
def storage(pg_demo: PostgresStorage) -> PostgresStorage:
    return pg_demo


async def test_a_kick_during_a_resuming_batch_stands(storage: PostgresStorage, pg_url: str) -> None:
    ticket = session_ticket()
    await storage.insert_ticket(ticket)
    await storage.record_check(viewer(ticket), decide, NOW, session=hls("s-1"))
    kicked: list[int] = []

    def kick_meanwhile(t: Ticket | None, request: CheckRequest, now: int) -> Decision:
        # sevu.kick on another node commits after this batch read the session.
        if not kicked:
            with psycopg.connect(pg_url, autocommit=True) as other, other.transaction():
                which = SessionsToEnd(session_id="s-1", cdn=DEMO_CDN, key=ticket.key)
                (idle, params), (ending, _) = end_sql("%s", which)
                other.execute(idle, end_params(0, params, now, EndReason.KICKED))
                cursor = other.execute(ending, end_params(1, params, now, EndReason.KICKED))
                kicked.append(len(cursor.fetchall()))
        return decide(t, request, now)

    again = await storage.record_check(viewer(ticket), kick_meanwhile, NOW + 40, session=hls("s-2"))
    assert kicked == [1]
    # Decided again against the kick: refused, and the session stays ended.
    assert again.decision.reason is Reason.SESSION_ENDED
    found = await storage.lookup_session(session_id="s-1")
    assert found is not None and found[0].end_reason == "kicked"


async def test_a_new_id_named_for_two_tickets_on_two_nodes_keeps_both_apart(
    storage: PostgresStorage, pg_url: str
) -> None:
    first = session_ticket()
    second = dataclasses.replace(session_ticket(), key="hls.0002", max_viewers=1)
    await storage.insert_ticket(first)
    await storage.insert_ticket(second)
    start = SessionStart("player-1", "player-1", "check", 120, resume=True)
    other: list[object] = []

    def node_two() -> None:
        async def run() -> None:
            s2 = PostgresStorage(pg_url)
            await s2.open()
            try:
                other.append(await s2.record_check(viewer(second), decide, NOW, session=start))
            finally:
                await s2.close()

        asyncio.run(run())

    def meanwhile(t: Ticket | None, request: CheckRequest, now: int) -> Decision:
        if not other:
            thread = threading.Thread(target=node_two)
            thread.start()
            thread.join()
        return decide(t, request, now)

    mine = await storage.record_check(viewer(first), meanwhile, NOW, session=start)
    assert other and other[0].decision.allowed  # type: ignore[attr-defined]
    # The id is the second ticket's now: naming it with the first's key is refused,
    # and the second ticket's viewer keeps its session.
    assert mine.decision.reason is Reason.INVALID_AUTH_TOKEN
    assert await storage.count_viewers([first.key, second.key], NOW) == {second.key: 1}
