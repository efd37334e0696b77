"""Stream users (publishers) on SQLite: a mixin of :class:`SQLiteStorage`."""

from __future__ import annotations

import sqlite3
from typing import Final

from usher.storage.publishers import (
    COLUMNS,
    StreamUserSQL,
    list_where,
    publish_params,
    save_params,
    stream_user_from_row,
)
from usher.storage.sqlite.engine import SQLiteAccess
from usher.tickets.publishers import StreamUser, StreamUserName

SQL: Final = StreamUserSQL.build("?")


class SQLitePublishersMixin(SQLiteAccess):
    async def save_stream_user(self, user: StreamUser) -> StreamUser:
        params = save_params(user)

        def run(conn: sqlite3.Connection) -> StreamUser:
            return stream_user_from_row(conn.execute(SQL.save, params).fetchone())

        return await self._write(run)

    async def remove_stream_user(
        self, cdn: int, *, id: int | None = None, name: StreamUserName | None = None
    ) -> bool:
        where, params = SQL.which(cdn, id, name)

        def run(conn: sqlite3.Connection) -> bool:
            return conn.execute(f"DELETE FROM stream_users WHERE {where}", params).rowcount > 0

        return await self._write(run)

    async def get_stream_user(
        self, cdn: int, *, id: int | None = None, name: StreamUserName | None = None
    ) -> StreamUser | None:
        where, params = SQL.which(cdn, id, name)
        row = await self._read(
            lambda conn: conn.execute(
                f"SELECT {COLUMNS} FROM stream_users WHERE {where}", params
            ).fetchone()
        )
        return None if row is None else stream_user_from_row(row)

    async def list_stream_users(
        self, cdn: int, *, app: str | None = None, stream: str | None = None
    ) -> list[StreamUser]:
        where, params = list_where(cdn, app, stream, "?")
        rows = await self._read(
            lambda conn: conn.execute(
                f"SELECT {COLUMNS} FROM stream_users WHERE {where} ORDER BY app, stream, login",
                params,
            ).fetchall()
        )
        return [stream_user_from_row(row) for row in rows]

    async def stream_users_for(self, app: str, stream: str) -> list[StreamUser]:
        rows = await self._read(
            lambda conn: conn.execute(SQL.for_publish, publish_params(app, stream)).fetchall()
        )
        return [stream_user_from_row(row) for row in rows]
