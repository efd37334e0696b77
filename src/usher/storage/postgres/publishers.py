"""Stream users and the publish log (publishers) on PostgreSQL: a mixin of
:class:`~usher.storage.postgres.PostgresStorage`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from usher.storage.postgres.runner import Conn, PgRunner
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
from usher.tickets.publishers import PublishAttempt, PublishFilter, StreamUser, StreamUserName

SQL: Final = StreamUserSQL.build("%s")
LOG: Final = PublishLogSQL.build("%s", arrays=True)


class PostgresPublishersMixin:
    """Stream users and the publish log; needs the storage's :class:`PgRunner`."""

    _db: PgRunner

    async def save_stream_user(self, user: StreamUser) -> StreamUser:
        row, _ = await self._db.write(SQL.save, save_params(user))
        assert row is not None  # INSERT … ON CONFLICT DO UPDATE RETURNING always returns it
        return stream_user_from_row(row)

    async def remove_stream_user(
        self, cdn: int, *, id: int | None = None, name: StreamUserName | None = None
    ) -> bool:
        where, params = SQL.which(cdn, id, name)
        _, count = await self._db.write(f"DELETE FROM stream_users WHERE {where}", params)
        return count > 0

    async def get_stream_user(
        self, cdn: int, *, id: int | None = None, name: StreamUserName | None = None
    ) -> StreamUser | None:
        where, params = SQL.which(cdn, id, name)
        row = await self._db.fetchone(f"SELECT {COLUMNS} FROM stream_users WHERE {where}", params)
        return None if row is None else stream_user_from_row(row)

    async def list_stream_users(
        self, cdn: int, *, app: str | None = None, stream: str | None = None
    ) -> list[StreamUser]:
        where, params = list_where(cdn, app, stream, "%s")
        # COLLATE "C": the order SQLite gives, whatever the database's collation.
        rows = await self._db.fetchall(
            f"SELECT {COLUMNS} FROM stream_users WHERE {where}"
            ' ORDER BY app COLLATE "C", stream COLLATE "C", login COLLATE "C"',
            params,
        )
        return [stream_user_from_row(row) for row in rows]

    async def stream_users_for(self, app: str, stream: str) -> list[StreamUser]:
        rows = await self._db.fetchall(SQL.for_publish, publish_params(app, stream))
        return [stream_user_from_row(row) for row in rows]

    async def record_publishes(self, attempts: Sequence[PublishAttempt]) -> list[int]:
        rows = records_params(attempts)
        if not rows:
            return []

        async def work(conn: Conn) -> list[int]:
            ids: list[int] = []
            async with conn.cursor() as cursor:
                # One pipelined round trip for the batch; each INSERT's
                # RETURNING is its own result set, in order.
                await cursor.executemany(LOG.record, rows, returning=True)
                while True:
                    row = await cursor.fetchone()
                    assert row is not None  # INSERT … RETURNING returns its row
                    ids.append(int(row[0]))
                    if not cursor.nextset():
                        return ids

        return await self._db.run(work, transaction=True)

    async def publish_denials(self, ip: str, since: int, limit: int) -> list[int]:
        rows = await self._db.fetchall(LOG.denials, denials_params(ip, since, limit))
        return [int(row[0]) for row in rows]

    async def list_publishes(
        self, cdn: int, where: PublishFilter, rows: int, *, before: int | None = None
    ) -> list[PublishAttempt]:
        sql, params = LOG.listing(cdn, where, rows, before)
        return [publish_from_row(row) for row in await self._db.fetchall(sql, params)]

    async def prune_publishes(self, before: int, batch: int) -> int:
        _, deleted = await self._db.write(LOG.prune, prune_params(before, batch))
        return deleted
