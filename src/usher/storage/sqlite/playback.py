"""Playback sessions on SQLite (a mixin of :class:`SQLiteStorage`).

A session opens atomically with its counted check, in the writer's
transaction; lookups run on the reader pool.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from typing import Final

from usher.storage.base import Decider, SessionTerms
from usher.storage.rows import (
    new_session,
    session_from_row,
    storable_request,
    ticket_from_row,
)
from usher.storage.schema import (
    SESSION_COLUMNS,
    SESSION_WIDTH,
    TICKET_COLUMNS,
    TICKET_FROM,
)
from usher.storage.sqlite.cache import TicketCache
from usher.storage.sqlite.checks import apply_check, resume_session
from usher.storage.sqlite.engine import SQLiteAccess
from usher.storage.sqlite.sql import SESSION_REPLACE
from usher.tickets.model import CheckRequest, PlaybackSession, SessionOutcome, Ticket
from usher.tickets.text import storable

#: How often (in session opens) expired session rows are purged.
_PURGE_EVERY: Final = 1000
#: Seconds an expired session row is kept before a purge may delete it; the
#: rows are tiny, and a little slack keeps purges away from live rows.
_SESSION_GRACE: Final = 3600


class SQLitePlaybackMixin(SQLiteAccess):
    _tickets: TicketCache
    _session_opens: int

    async def lookup_ticket(self, key: str) -> Ticket | None:
        row = await self._read(
            lambda conn: conn.execute(
                f"SELECT {TICKET_COLUMNS} {TICKET_FROM} WHERE t.key = ?", (storable(key),)
            ).fetchone()
        )
        return None if row is None else ticket_from_row(row)

    async def lookup_session(self, session_id: str) -> tuple[PlaybackSession, Ticket | None] | None:
        # One statement, so the session and its ticket come from one snapshot.
        row = await self._read(
            lambda conn: conn.execute(
                f"SELECT {SESSION_COLUMNS}, {TICKET_COLUMNS} FROM playback_sessions s"
                " LEFT JOIN tickets t ON t.key = s.key LEFT JOIN accounts a ON a.cdn = t.cdn"
                " WHERE s.id = ?",
                (session_id,),
            ).fetchone()
        )
        if row is None:
            return None
        width = SESSION_WIDTH
        return session_from_row(row[:width]), (
            None if row[width] is None else ticket_from_row(row[width:])
        )

    async def open_session(
        self, request: CheckRequest, decide: Decider, now: int, terms: SessionTerms
    ) -> SessionOutcome:
        session_id, ttl, reuse = terms.id, terms.ttl, terms.reuse
        request = storable_request(request)
        self._session_opens += 1
        purge = self._session_opens % _PURGE_EVERY == 0

        def run(conn: sqlite3.Connection) -> SessionOutcome:
            if purge:
                conn.execute(
                    "DELETE FROM playback_sessions WHERE expires_at < ?", (now - _SESSION_GRACE,)
                )
            row = conn.execute(
                f"SELECT {SESSION_COLUMNS} FROM playback_sessions s WHERE s.id = ?",
                (session_id,),
            ).fetchone()
            found = None if row is None else session_from_row(row)
            if reuse and found is not None and found.expires_at > now:
                return resume_session(conn, self._tickets, found, request, decide, now, ttl)
            outcome, ticket = apply_check(conn, self._tickets, request, decide, now, log=True)
            session = None
            if outcome.decision.allowed:
                session = new_session(request, ticket, session_id, ttl, now)
                conn.execute(
                    SESSION_REPLACE,
                    dataclasses.astuple(session),
                )
            return SessionOutcome(outcome.decision, outcome.attempt_id, ticket, session, False)

        return await self._write(run, keeps_state=True)

    async def renew_session(self, session_id: str, *, expires_at: int) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "UPDATE playback_sessions SET expires_at = MAX(expires_at, ?) WHERE id = ?",
                (expires_at, session_id),
            )
            return cursor.rowcount > 0

        return await self._write(run, keeps_state=True)

    async def close_session(self, session_id: str) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute("DELETE FROM playback_sessions WHERE id = ?", (session_id,))
            return cursor.rowcount > 0

        return await self._write(run, keeps_state=True)
