"""The SQLite side of the control panel: chart aggregations, panel
passwords and panel sessions (a mixin of :class:`SQLiteStorage`)."""

from __future__ import annotations

import sqlite3

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
from usher.storage.rows import clauses, panel_session_criteria
from usher.storage.sqlite.counts import RECENT_DENIALS_SQL, match_where, top_values_query
from usher.storage.sqlite.engine import SQLiteAccess
from usher.tickets.model import AttemptFilter


class SQLitePanelMixin(SQLiteAccess):
    # -- attempt statistics ------------------------------------------------------------

    async def attempt_timeline(
        self, cdn: int, where: AttemptFilter, bucket: int
    ) -> list[TimelineBucket]:
        return await attempt_timeline(self, cdn, where, bucket)

    async def minute_timeline(
        self, cdn: int, first: int, last: int, bucket: int
    ) -> list[TimelineBucket]:
        rows = await self._read(
            lambda conn: conn.execute(
                "SELECT (minute / ?) * ? AS b, SUM(CASE WHEN success THEN n ELSE 0 END),"
                " SUM(CASE WHEN success THEN 0 ELSE n END) FROM attempt_minutes"
                " WHERE cdn = ? AND minute >= ? AND minute <= ? GROUP BY b ORDER BY b",
                [bucket, bucket, cdn, first, last],
            ).fetchall()
        )
        return [TimelineBucket(int(row[0]), int(row[1]), int(row[2])) for row in rows]

    async def minute_tail(self, cdn: int, since: int) -> MinuteTail:
        sql, params = minute_tail_query(cdn, since, "?", deltas=False)
        return minute_tail_of(await self._read(lambda conn: conn.execute(sql, params).fetchall()))

    async def scan_timeline(
        self, cdn: int, where: AttemptFilter, bucket: int
    ) -> list[TimelineBucket]:
        sql, params = match_where(cdn, where, in_id_order=False)
        # Integer division of non-negative integers floors, so every attempt
        # lands in the bucket that starts at a multiple of ``bucket``.
        rows = await self._read(
            lambda conn: conn.execute(
                f"SELECT (at / ?) * ? AS b, SUM(success), COUNT(*) - SUM(success)"
                f" FROM attempts WHERE {sql} GROUP BY b ORDER BY b",
                [bucket, bucket, *params],
            ).fetchall()
        )
        return [TimelineBucket(int(row[0]), int(row[1]), int(row[2])) for row in rows]

    async def top_attempt_values(
        self, cdn: int, where: AttemptFilter, column: AttemptColumn, limit: int
    ) -> list[tuple[str, int]]:
        sql, params = top_values_query(cdn, where, column, limit)
        rows = await self._read(lambda conn: conn.execute(sql, params).fetchall())
        return [(str(row[0]), int(row[1])) for row in rows]

    async def recent_denials(
        self, cdn: int, start: int, end: int, limit: int
    ) -> list[tuple[str, str, str]]:
        check_cap("limit", limit, MAX_RECENT_DENIALS)
        rows = await self._read(
            lambda conn: conn.execute(RECENT_DENIALS_SQL, (cdn, start, end, limit)).fetchall()
        )
        return [(str(reason), str(ip), str(key)) for reason, ip, key in rows]

    # -- control-panel sign-in -------------------------------------------------------

    async def set_panel_password(self, cdn: int, password_hash: str | None, *, now: int) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            if not conn.execute("SELECT 1 FROM accounts WHERE cdn = ?", (cdn,)).fetchone():
                return False
            if password_hash is None:
                conn.execute("DELETE FROM panel_passwords WHERE cdn = ?", (cdn,))
            else:
                conn.execute(
                    "INSERT OR REPLACE INTO panel_passwords (cdn, hash, updated_at)"
                    " VALUES (?, ?, ?)",
                    (cdn, password_hash, now),
                )
            return True

        return await self._write(run)

    async def get_panel_password(self, cdn: int) -> str | None:
        row = await self._read(
            lambda conn: conn.execute(
                "SELECT hash FROM panel_passwords WHERE cdn = ?", (cdn,)
            ).fetchone()
        )
        return None if row is None else str(row[0])

    async def create_panel_session(self, session: PanelSession) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO panel_sessions (token_hash, cdn, created_at, seen_at)"
                " VALUES (?, ?, ?, ?)",
                (session.token_hash, session.cdn, session.created_at, session.seen_at),
            )

        await self._write(run)

    async def get_panel_session(self, token_hash: bytes) -> PanelSession | None:
        row = await self._read(
            lambda conn: conn.execute(
                "SELECT token_hash, cdn, created_at, seen_at FROM panel_sessions"
                " WHERE token_hash = ?",
                (token_hash,),
            ).fetchone()
        )
        return None if row is None else PanelSession(bytes(row[0]), row[1], row[2], row[3])

    async def touch_panel_session(self, token_hash: bytes, *, now: int) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE panel_sessions SET seen_at = MAX(seen_at, ?) WHERE token_hash = ?",
                (now, token_hash),
            )

        await self._write(run)

    async def delete_panel_sessions(self, where: PanelSessionFilter) -> int:
        condition, params = clauses(panel_session_criteria(where), "?", joiner=" OR ")
        if not params:
            return 0

        def run(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(f"DELETE FROM panel_sessions WHERE {condition}", params)
            return cursor.rowcount

        return await self._write(run)
