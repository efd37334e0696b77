"""Live sessions on SQLite (a mixin of :class:`SQLiteStorage`).

A session opens and ends inside the writer's transactions (starts ride in
the check groups, see :mod:`usher.storage.sqlite.checks`); lookups and
listings run on the reader pool. The SQL is :mod:`usher.storage.sessions`'.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Final

from usher.storage.base import SWEEP_BATCH, SessionCursor, SessionFilter, SessionsToEnd
from usher.storage.rows import ticket_from_row
from usher.storage.schema import SESSION_WIDTH, TICKET_COLUMNS, TICKET_FROM
from usher.storage.sessions import (
    SESSIONS,
    browse_sql,
    count_open_sql,
    count_sql,
    count_upto_sql,
    end_params,
    end_sql,
    lookup_sql,
    page_sql,
    prune_sql,
    renew_params,
    renew_sql,
    session_from_row,
    sweep_sql,
    viewers_sql,
)
from usher.storage.sqlite.engine import SQLiteAccess
from usher.storage.sqlite.sql import OPEN_BY_EXPIRY, OPEN_BY_KEY, sessions_hint
from usher.tickets.model import EndReason, Page, PlaybackSession, Ticket
from usher.tickets.text import storable

_BY_ID: Final = lookup_sql("?", by_handle=False)
_BY_HANDLE: Final = lookup_sql("?", by_handle=True)
_RENEW: Final = renew_sql("?")
_SWEEP: Final = sweep_sql("?")
#: Sessions one sweep statement ends; a sweep write runs such statements
#: until :data:`SWEEP_SLICE` has passed.
SWEEP_CHUNK: Final = 16
#: Seconds of statements one sweep write runs before it commits. SQLite has
#: one writer, so a check or API call that arrives during a sweep write waits
#: for all of it, ``COMMIT`` included, and the commit is the larger part:
#: ending a session dirties pages of the table and of its open-session
#: indexes at random places. On the full-size database (1 M sessions), with
#: 20,000 sessions expiring together, a replay-protection write waited 19 to
#: 22 ms median (p99 48 ms) behind writes of 200 sessions, 17 ms behind 5 ms
#: slices and 7.4 ms (p99 22 ms) behind 1 ms slices of about 36 sessions,
#: which still end 3,400 a second. The writer runs sweep writes in the
#: background (see ``usher.storage.sqlite.engine``).
SWEEP_SLICE: Final = 0.001
_PRUNE: Final = prune_sql("?")
#: Keys per viewers statement (SQLite binds at most 32,766 values).
_KEYS_PER_READ: Final = 500


def end_in(
    conn: sqlite3.Connection, which: SessionsToEnd, now: int, reason: EndReason
) -> list[PlaybackSession]:
    """End matching open sessions inside the caller's write transaction."""
    by_key = which.key is not None and which.session_id is None and which.handle is None
    (idle, params), (ending, _) = end_sql("?", which, OPEN_BY_KEY if by_key else SESSIONS)
    conn.execute(idle, end_params(0, params, now, reason))
    rows = conn.execute(ending, end_params(1, params, now, reason)).fetchall()
    return [session_from_row(row) for row in rows]


class SQLitePlaybackMixin(SQLiteAccess):
    async def lookup_ticket(self, key: str) -> Ticket | None:
        row = await self._read(
            lambda conn: conn.execute(
                f"SELECT {TICKET_COLUMNS} {TICKET_FROM} WHERE t.key = ?", (storable(key),)
            ).fetchone()
        )
        return None if row is None else ticket_from_row(row)

    async def lookup_session(
        self, *, session_id: str | None = None, handle: str | None = None
    ) -> tuple[PlaybackSession, Ticket | None] | None:
        if (session_id is None) == (handle is None):
            raise ValueError("Look a session up by its id or by its handle, not both.")
        sql, name = (_BY_ID, session_id) if handle is None else (_BY_HANDLE, handle)
        assert name is not None
        row = await self._read(lambda conn: conn.execute(sql, (storable(name),)).fetchone())
        if row is None:
            return None
        width = SESSION_WIDTH
        ticket = None if row[width] is None else ticket_from_row(row[width:])
        return session_from_row(row[:width]), ticket

    async def renew_session(self, session_id: str, *, now: int, expires_at: int) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            return conn.execute(_RENEW, renew_params(session_id, now, expires_at)).rowcount > 0

        return await self._write(run, keeps_state=True)

    async def _end_sessions(
        self, which: SessionsToEnd, now: int, reason: EndReason
    ) -> list[PlaybackSession]:
        return await self._write(lambda conn: end_in(conn, which, now, reason), keeps_state=True)

    async def sweep_sessions(self, now: int, limit: int = SWEEP_BATCH) -> int:
        def run(conn: sqlite3.Connection) -> int:
            deadline = time.perf_counter() + SWEEP_SLICE
            ended = 0
            while ended < limit:
                chunk = min(SWEEP_CHUNK, limit - ended)
                done = conn.execute(_SWEEP, (now, chunk, now)).rowcount
                ended += done
                if done < chunk or time.perf_counter() >= deadline:
                    break
            return ended

        return await self._write(run, keeps_state=True, background=True)

    async def count_viewers(self, keys: list[str], now: int) -> dict[str, int]:
        wanted = sorted({storable(key) for key in keys})

        def run(conn: sqlite3.Connection) -> dict[str, int]:
            found: dict[str, int] = {}
            for start in range(0, len(wanted), _KEYS_PER_READ):
                chunk = wanted[start : start + _KEYS_PER_READ]
                sql = viewers_sql(len(chunk), "?", OPEN_BY_KEY)
                rows = conn.execute(sql, [*chunk, now]).fetchall()
                found.update((str(key), int(count)) for key, count in rows)
            return found

        return await self._read(run) if wanted else {}

    async def count_open_sessions(self, now: int, cdn: int | None = None) -> int:
        params: tuple[int, ...] = (now,) if cdn is None else (now, cdn)
        sql = count_open_sql("?", by_cdn=cdn is not None, table=OPEN_BY_EXPIRY)
        row = await self._read(lambda conn: conn.execute(sql, params).fetchone())
        return int(row[0])

    async def list_sessions(
        self, cdn: int, where: SessionFilter, page: Page, now: int
    ) -> tuple[list[PlaybackSession], int]:
        counting = count_sql(cdn, where, now, "?", sessions_hint)
        listing = page_sql(cdn, where, now, "?", page, sessions_hint)

        def run(conn: sqlite3.Connection) -> tuple[list[PlaybackSession], int]:
            # One read transaction so the page and the total agree.
            conn.execute("BEGIN")
            try:
                count = int(conn.execute(*counting).fetchone()[0])
                rows = conn.execute(*listing).fetchall()
            finally:
                conn.execute("COMMIT")
            return [session_from_row(row) for row in rows], count

        return await self._read(run)

    async def browse_sessions(
        self,
        cdn: int,
        where: SessionFilter,
        page: Page,
        now: int,
        *,
        before: SessionCursor | None = None,
        after: SessionCursor | None = None,
    ) -> list[PlaybackSession]:
        sql, params = browse_sql(
            cdn, where, now, "?", rows=page.rows, before=before, after=after, hint=sessions_hint
        )
        rows = await self._read(lambda conn: conn.execute(sql, params).fetchall())
        return [session_from_row(row) for row in rows]

    async def count_sessions_upto(self, cdn: int, where: SessionFilter, now: int, cap: int) -> int:
        sql, params = count_upto_sql(cdn, where, now, cap, "?", sessions_hint)
        row = await self._read(lambda conn: conn.execute(sql, params).fetchone())
        return int(row[0])

    async def prune_sessions(self, before: int, batch: int) -> int:
        def run(conn: sqlite3.Connection) -> int:
            return conn.execute(_PRUNE, (before, max(1, batch))).rowcount

        return await self._write(run, keeps_state=True)
