"""Playback sessions on PostgreSQL (streaming-server integrations).

A mixin of :class:`~usher.storage.postgres.PostgresStorage`. The session row
is the truth, for every node, about whether a playback already spent its
use. Opening one locks the ticket first and the session row second, always
in that order (so two opens cannot deadlock), which makes concurrent opens
of one session, on any nodes, count exactly one use between them: the later
one waits for the ticket lock and then reads the session the first created.
"""

from __future__ import annotations

from dataclasses import astuple, replace
from typing import Final

from usher.storage.base import Decider, SessionTerms
from usher.storage.postgres.runner import PgRunner
from usher.storage.postgres.sql import (
    CHECK_LOCK,
    Conn,
    Cursor,
    apply_decision,
    inserted_id,
    log_attempt,
)
from usher.storage.rows import (
    new_session,
    placeholders,
    session_from_row,
    storable_request,
    ticket_from_row,
)
from usher.storage.schema import (
    SESSION_COLUMNS,
    SESSION_INSERT,
    SESSION_WIDTH,
    TICKET_COLUMNS,
    TICKET_FROM,
)
from usher.tickets.model import CheckRequest, PlaybackSession, SessionOutcome, Ticket
from usher.tickets.text import storable

_SESSION_LOCK: Final = (
    f"SELECT {SESSION_COLUMNS} FROM playback_sessions s WHERE s.id = %s FOR UPDATE"
)
_SESSION_UPSERT: Final = (
    f"INSERT INTO playback_sessions ({SESSION_INSERT})"
    f" VALUES {placeholders(SESSION_WIDTH, '%s')}"
    " ON CONFLICT (id) DO UPDATE SET key = EXCLUDED.key, cdn = EXCLUDED.cdn, ip = EXCLUDED.ip,"
    " app = EXCLUDED.app, video = EXCLUDED.video, created_at = EXCLUDED.created_at,"
    " expires_at = EXCLUDED.expires_at"
)
#: Seconds an expired session row is kept before a purge may delete it (as
#: in SQLite): the rows are tiny, and the slack keeps purges off live rows.
_SESSION_GRACE: Final = 3600
#: How often (in opens, per node) long-expired sessions are purged.
_PURGE_EVERY: Final = 1000


class PostgresPlaybackMixin:
    """Playback sessions; needs the storage's :class:`PgRunner`."""

    _db: PgRunner
    _session_opens: int = 0

    async def lookup_ticket(self, key: str) -> Ticket | None:
        row = await self._db.fetchone(
            f"SELECT {TICKET_COLUMNS} {TICKET_FROM} WHERE t.key = %s", (storable(key),)
        )
        return None if row is None else ticket_from_row(row)

    async def lookup_session(self, session_id: str) -> tuple[PlaybackSession, Ticket | None] | None:
        # One statement, so the session and its ticket come from one snapshot.
        row = await self._db.fetchone(
            f"SELECT {SESSION_COLUMNS}, {TICKET_COLUMNS} FROM playback_sessions s"
            " LEFT JOIN tickets t ON t.key = s.key LEFT JOIN accounts a ON a.cdn = t.cdn"
            " WHERE s.id = %s",
            (storable(session_id),),
        )
        if row is None:
            return None
        width = SESSION_WIDTH
        ticket = None if row[width] is None else ticket_from_row(row[width:])
        return session_from_row(row[:width]), ticket

    async def open_session(
        self, request: CheckRequest, decide: Decider, now: int, terms: SessionTerms
    ) -> SessionOutcome:
        session_id, ttl, reuse = terms.id, terms.ttl, terms.reuse
        request = storable_request(request)
        session_id = storable(session_id)
        self._session_opens += 1
        purge = self._session_opens % _PURGE_EVERY == 0

        async def work(conn: Conn) -> SessionOutcome:
            logged: Cursor | None = None
            async with conn.pipeline():
                if purge:
                    # Its own statement before the check's transaction, so the
                    # check holds its locks no longer than it must.
                    await conn.execute(
                        "DELETE FROM playback_sessions WHERE expires_at < %s",
                        (now - _SESSION_GRACE,),
                    )
                async with conn.transaction():
                    ticket_cursor = await conn.execute(CHECK_LOCK, (request.key,))
                    session_cursor = await conn.execute(_SESSION_LOCK, (session_id,))
                    locked = await ticket_cursor.fetchone()
                    found_row = await session_cursor.fetchone()
                    ticket = None if locked is None else ticket_from_row(locked[1:])
                    found = None if found_row is None else session_from_row(found_row)
                    if reuse and found is not None and found.expires_at > now:
                        # A re-check of an open session: nothing counted or bound.
                        decision = decide(ticket, replace(request, count_use=False), now)
                        if not decision.allowed:
                            logged = await log_attempt(conn, request, ticket, decision, now)
                        elif now + ttl > found.expires_at:
                            found = replace(found, expires_at=now + ttl)
                            await conn.execute(
                                "UPDATE playback_sessions SET expires_at = %s WHERE id = %s",
                                (found.expires_at, session_id),
                            )
                        result = SessionOutcome(decision, 0, ticket, found, True)
                    else:
                        decision = decide(ticket, request, now)
                        after = ticket
                        if locked is not None and ticket is not None:
                            after = await apply_decision(
                                conn, int(locked[0]), ticket, decision, now
                            )
                        logged = await log_attempt(conn, request, ticket, decision, now)
                        session = None
                        if decision.allowed:
                            session = new_session(request, ticket, session_id, ttl, now)
                            await conn.execute(_SESSION_UPSERT, astuple(session))
                        result = SessionOutcome(decision, 0, after, session, False)
            # Committed by now, so the id belongs to an attempt on disk.
            result.attempt_id = await inserted_id(logged)
            return result

        return await self._db.run(work)

    async def renew_session(self, session_id: str, *, expires_at: int) -> bool:
        _, changed = await self._db.write(
            "UPDATE playback_sessions SET expires_at = GREATEST(expires_at, %s) WHERE id = %s",
            (expires_at, storable(session_id)),
        )
        return changed > 0

    async def close_session(self, session_id: str) -> bool:
        _, changed = await self._db.write(
            "DELETE FROM playback_sessions WHERE id = %s", (storable(session_id),)
        )
        return changed > 0
