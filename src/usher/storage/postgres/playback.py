"""Live sessions on PostgreSQL (a mixin of :class:`PostgresStorage`).

Starts ride in the check batches (:mod:`usher.storage.postgres.checks`),
which read a handle's latest session and a ticket's open sessions with the
ticket locked, so every node counts ``max_viewers`` against the same rows.
The rest is here: lookups and listings on the pool, ends and sweeps as
short transactions. The SQL is :mod:`usher.storage.sessions`'.
"""

from __future__ import annotations

from typing import Final

from usher.storage.base import SWEEP_BATCH, SessionCursor, SessionFilter, SessionsToEnd
from usher.storage.postgres.runner import PgRunner
from usher.storage.postgres.sql import VIEWERS, Conn
from usher.storage.rows import ticket_from_row
from usher.storage.schema import SESSION_WIDTH, TICKET_COLUMNS, TICKET_FROM
from usher.storage.sessions import (
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
)
from usher.tickets.model import EndReason, Page, PlaybackSession, Ticket
from usher.tickets.text import storable

_BY_ID: Final = lookup_sql("%s", by_handle=False)
_BY_HANDLE: Final = lookup_sql("%s", by_handle=True)
_RENEW: Final = renew_sql("%s")
_SWEEP: Final = sweep_sql("%s")
_PRUNE: Final = prune_sql("%s")


async def end_in(
    conn: Conn, which: SessionsToEnd, now: int, reason: EndReason
) -> list[PlaybackSession]:
    """End matching open sessions inside the caller's transaction."""
    (idle, params), (ending, _) = end_sql("%s", which)
    await conn.execute(idle, end_params(0, params, now, reason))
    cursor = await conn.execute(ending, end_params(1, params, now, reason))
    return [session_from_row(row) for row in await cursor.fetchall()]


class PostgresPlaybackMixin:
    """Live sessions; needs the storage's :class:`PgRunner`."""

    _db: PgRunner

    async def lookup_ticket(self, key: str) -> Ticket | None:
        row = await self._db.fetchone(
            f"SELECT {TICKET_COLUMNS} {TICKET_FROM} WHERE t.key = %s", (storable(key),)
        )
        return None if row is None else ticket_from_row(row)

    async def lookup_session(
        self, *, session_id: str | None = None, handle: str | None = None
    ) -> tuple[PlaybackSession, Ticket | None] | None:
        if (session_id is None) == (handle is None):
            raise ValueError("Look a session up by its id or by its handle, not both.")
        sql, name = (_BY_ID, session_id) if handle is None else (_BY_HANDLE, handle)
        assert name is not None
        row = await self._db.fetchone(sql, (storable(name),))
        if row is None:
            return None
        width = SESSION_WIDTH
        ticket = None if row[width] is None else ticket_from_row(row[width:])
        return session_from_row(row[:width]), ticket

    async def renew_session(self, session_id: str, *, now: int, expires_at: int) -> bool:
        _, changed = await self._db.write(_RENEW, renew_params(session_id, now, expires_at))
        return changed > 0

    async def _end_sessions(
        self, which: SessionsToEnd, now: int, reason: EndReason
    ) -> list[PlaybackSession]:
        async def work(conn: Conn) -> list[PlaybackSession]:
            return await end_in(conn, which, now, reason)

        return await self._db.run(work, transaction=True)

    async def sweep_sessions(self, now: int, limit: int = SWEEP_BATCH) -> int:
        _, changed = await self._db.write(_SWEEP, (now, limit, now))
        return changed

    async def count_viewers(self, keys: list[str], now: int) -> dict[str, int]:
        wanted = sorted({storable(key) for key in keys})
        if not wanted:
            return {}
        rows = await self._db.fetchall(VIEWERS, (now, wanted), prepare=False)
        return {str(key): int(count) for key, count in rows}

    async def count_open_sessions(self, now: int, cdn: int | None = None) -> int:
        params: tuple[int, ...] = (now,) if cdn is None else (now, cdn)
        row = await self._db.fetchone(count_open_sql("%s", by_cdn=cdn is not None), params)
        return 0 if row is None else int(row[0])

    async def list_sessions(
        self, cdn: int, where: SessionFilter, page: Page, now: int
    ) -> tuple[list[PlaybackSession], int]:
        count, count_params = count_sql(cdn, where, now, "%s")
        listing, listing_params = page_sql(cdn, where, now, "%s", page)
        # One statement, so the page and the total come from one snapshot.
        # The count row is always there; a page past the end joins nothing.
        rows = await self._db.fetchall(
            f"SELECT c.total, p.* FROM ({count}) AS c (total)"
            f" LEFT JOIN LATERAL ({listing}) AS p ON TRUE",
            [*count_params, *listing_params],
        )
        total = int(rows[0][0]) if rows else 0
        return [session_from_row(row[1:]) for row in rows if row[1] is not None], total

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
        sql, params = browse_sql(cdn, where, now, "%s", rows=page.rows, before=before, after=after)
        return [session_from_row(row) for row in await self._db.fetchall(sql, params)]

    async def count_sessions_upto(self, cdn: int, where: SessionFilter, now: int, cap: int) -> int:
        sql, params = count_upto_sql(cdn, where, now, cap, "%s")
        row = await self._db.fetchone(sql, params)
        return 0 if row is None else int(row[0])

    async def prune_sessions(self, before: int, batch: int) -> int:
        _, changed = await self._db.write(_PRUNE, (before, max(1, batch)))
        return changed
