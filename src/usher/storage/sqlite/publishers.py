"""Stream users and the publish log (publishers) on SQLite: a mixin of
:class:`SQLiteStorage`."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Final

from usher.storage.publish_log import (
    PublishLogSQL,
    denials_params,
    prune_params,
    publish_from_row,
    records_params,
)
from usher.storage.publishers import (
    COLUMNS,
    StreamUserSQL,
    list_where,
    publish_params,
    save_params,
    stream_user_from_row,
)
from usher.storage.sqlite.engine import SQLiteAccess
from usher.tickets.publishers import PublishAttempt, PublishFilter, StreamUser, StreamUserName

SQL: Final = StreamUserSQL.build("?")
LOG: Final = PublishLogSQL.build("?", hinted=True)


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

    async def record_publishes(self, attempts: Sequence[PublishAttempt]) -> list[int]:
        rows = records_params(attempts)
        if not rows:
            return []

        def run(conn: sqlite3.Connection) -> list[int]:
            return [int(conn.execute(LOG.record, params).fetchone()[0]) for params in rows]

        # The writer caches tickets and accounts only; the log is neither.
        return await self._write(run, keeps_state=True)

    async def publish_denials(self, ip: str, since: int, limit: int) -> list[int]:
        params = denials_params(ip, since, limit)
        rows = await self._read(lambda conn: conn.execute(LOG.denials, params).fetchall())
        return [int(row[0]) for row in rows]

    async def list_publishes(
        self, cdn: int, where: PublishFilter, rows: int, *, before: int | None = None
    ) -> list[PublishAttempt]:
        sql, params = LOG.listing(cdn, where, rows, before)
        found = await self._read(lambda conn: conn.execute(sql, params).fetchall())
        return [publish_from_row(row) for row in found]

    async def prune_publishes(self, before: int, batch: int) -> int:
        params = prune_params(before, batch)

        def run(conn: sqlite3.Connection) -> int:
            return conn.execute(LOG.prune, params).rowcount

        return await self._write(run, keeps_state=True)
