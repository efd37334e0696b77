"""The control panel's queries on PostgreSQL: chart statistics and sign-in.

A mixin of :class:`~usher.storage.postgres.PostgresStorage`, kept apart so
each module stays about one concern.
"""

from __future__ import annotations

from typing import Final

from usher.storage.base import (
    MAX_RECENT_DENIALS,
    AttemptColumn,
    MinuteTail,
    PanelSession,
    PanelSessionFilter,
    TimelineBucket,
    check_cap,
)
from usher.storage.counting import attempt_timeline, minute_tail_of, minute_tail_query
from usher.storage.postgres.runner import PgRunner
from usher.storage.postgres.sql import attempts_where
from usher.storage.rows import clauses, panel_session_criteria, top_values_where
from usher.tickets.model import AttemptFilter

#: ``recent_denials``: attempts_cdn_at walked backwards from ``end``.
RECENT_DENIALS_SQL: Final = (
    "SELECT reason, ip, key FROM attempts WHERE cdn = %s AND at >= %s AND at <= %s"
    " AND NOT success ORDER BY at DESC LIMIT %s"
)


class PostgresPanelMixin:
    """Panel statistics and sign-in; needs the storage's :class:`PgRunner`."""

    _db: PgRunner

    # -- attempt statistics --------------------------------------------------------

    async def attempt_timeline(
        self, cdn: int, where: AttemptFilter, bucket: int
    ) -> list[TimelineBucket]:
        return await attempt_timeline(self, cdn, where, bucket)

    async def minute_timeline(
        self, cdn: int, first: int, last: int, bucket: int
    ) -> list[TimelineBucket]:
        # The merged rows and the pending deltas, in one snapshot.
        part = "SELECT minute, success, n FROM {} WHERE cdn = %s AND minute >= %s AND minute <= %s"
        rows = await self._db.fetchall(
            "SELECT (minute / %s) * %s AS b, COALESCE(sum(n) FILTER (WHERE success), 0),"
            " COALESCE(sum(n) FILTER (WHERE NOT success), 0) FROM ("
            + part.format("attempt_minutes")
            + " UNION ALL "
            + part.format("attempt_minute_deltas")
            + ") AS m GROUP BY b ORDER BY b",
            [bucket, bucket, cdn, first, last, cdn, first, last],
        )
        return [TimelineBucket(int(row[0]), int(row[1]), int(row[2])) for row in rows]

    async def minute_tail(self, cdn: int, since: int) -> MinuteTail:
        # The merged rows and the pending deltas, in one statement: each
        # committed attempt is in exactly one of the two.
        sql, params = minute_tail_query(cdn, since, "%s", deltas=True)
        return minute_tail_of(await self._db.fetchall(sql, params))

    async def scan_timeline(
        self, cdn: int, where: AttemptFilter, bucket: int
    ) -> list[TimelineBucket]:
        sql, params = attempts_where(cdn, where)
        # Integer division of non-negative integers floors, so every attempt
        # lands in the bucket that starts at a multiple of ``bucket``.
        rows = await self._db.fetchall(
            "SELECT (at / %s) * %s AS b, count(*) FILTER (WHERE success),"
            f" count(*) FILTER (WHERE NOT success) FROM attempts WHERE {sql}"
            " GROUP BY b ORDER BY b",
            [bucket, bucket, *params],
        )
        return [TimelineBucket(int(row[0]), int(row[1]), int(row[2])) for row in rows]

    async def top_attempt_values(
        self, cdn: int, where: AttemptFilter, column: AttemptColumn, limit: int
    ) -> list[tuple[str, int]]:
        name, sql, params = top_values_where(cdn, where, column, limit, "%s")
        # COLLATE "C": ties break by code point, as in SQLite, whatever the
        # database's own collation.
        rows = await self._db.fetchall(
            f"SELECT {name}, count(*) AS n FROM attempts WHERE {sql}"
            f' GROUP BY {name} ORDER BY n DESC, {name} COLLATE "C" LIMIT %s',
            [*params, limit],
        )
        return [(str(row[0]), int(row[1])) for row in rows]

    async def recent_denials(
        self, cdn: int, start: int, end: int, limit: int
    ) -> list[tuple[str, str, str]]:
        check_cap("limit", limit, MAX_RECENT_DENIALS)
        rows = await self._db.fetchall(RECENT_DENIALS_SQL, (cdn, start, end, limit))
        return [(str(reason), str(ip), str(key)) for reason, ip, key in rows]

    # -- control-panel sign-in -----------------------------------------------------

    async def set_panel_password(self, cdn: int, password_hash: str | None, *, now: int) -> bool:
        if password_hash is None:
            row, _ = await self._db.write(
                "WITH gone AS (DELETE FROM panel_passwords WHERE cdn = %s)"
                " SELECT EXISTS (SELECT 1 FROM accounts WHERE cdn = %s)",
                (cdn, cdn),
            )
            return bool(row and row[0])
        # Selecting from accounts makes an unknown cdn insert nothing.
        row, _ = await self._db.write(
            "INSERT INTO panel_passwords (cdn, hash, updated_at)"
            " SELECT cdn, %s, %s FROM accounts WHERE cdn = %s"
            " ON CONFLICT (cdn) DO UPDATE SET hash = EXCLUDED.hash,"
            " updated_at = EXCLUDED.updated_at RETURNING 1",
            (password_hash, now, cdn),
        )
        return row is not None

    async def get_panel_password(self, cdn: int) -> str | None:
        row = await self._db.fetchone("SELECT hash FROM panel_passwords WHERE cdn = %s", (cdn,))
        return None if row is None else str(row[0])

    async def create_panel_session(self, session: PanelSession) -> None:
        await self._db.write(
            "INSERT INTO panel_sessions (token_hash, cdn, created_at, seen_at)"
            " VALUES (%s, %s, %s, %s)",
            (session.token_hash, session.cdn, session.created_at, session.seen_at),
        )

    async def get_panel_session(self, token_hash: bytes) -> PanelSession | None:
        row = await self._db.fetchone(
            "SELECT token_hash, cdn, created_at, seen_at FROM panel_sessions WHERE token_hash = %s",
            (token_hash,),
        )
        return None if row is None else PanelSession(bytes(row[0]), row[1], row[2], row[3])

    async def touch_panel_session(self, token_hash: bytes, *, now: int) -> None:
        # GREATEST: two nodes touching at once never move seen_at backwards.
        await self._db.write(
            "UPDATE panel_sessions SET seen_at = GREATEST(seen_at, %s) WHERE token_hash = %s",
            (now, token_hash),
        )

    async def delete_panel_sessions(self, where: PanelSessionFilter) -> int:
        condition, params = clauses(panel_session_criteria(where), "%s", joiner=" OR ")
        if not params:
            return 0
        _, count = await self._db.write(f"DELETE FROM panel_sessions WHERE {condition}", params)
        return count
