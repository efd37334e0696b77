"""Pruning old attempts on PostgreSQL.

A delete only has to stay out of the checks' way, and it does: a check locks
its ticket row and appends a new attempt, never an old one. The rollups stay
exact through the same statement trigger as inserts (negative delta rows,
see ``0006_rollups.sql``); a pass that finds nothing left to delete merges
the deltas and removes the rollup rows that count nothing. Each batch is one
transaction whose rows are taken with ``FOR UPDATE SKIP LOCKED``, so pruners
on several nodes share the work instead of waiting on one another's rows."""

from __future__ import annotations

from usher.storage.postgres.runner import PgRunner
from usher.storage.postgres.sql import Conn
from usher.storage.retention import count_sql, delete_sql, next_owner_sql
from usher.storage.schema import ROLLUP_TABLES

_SKIP_LOCKED = " FOR UPDATE SKIP LOCKED"


async def _owners(conn: Conn) -> list[int | None]:
    """``None`` (attempts no account owns), then each cdn that has attempts."""
    found: list[int | None] = [None]
    cdn: int | None = -(2**63)
    while True:
        row = await (await conn.execute(next_owner_sql("%s"), (cdn,))).fetchone()
        cdn = None if row is None or row[0] is None else int(row[0])
        if cdn is None:
            return found
        found.append(cdn)


class PostgresRetentionMixin:
    """``count_attempts_before`` and ``prune_attempts``; needs the storage's
    :class:`PgRunner`."""

    _db: PgRunner

    async def count_attempts_before(self, before: int) -> int:
        async def work(conn: Conn) -> int:
            total = 0
            for cdn in await _owners(conn):
                sql, params = count_sql(cdn, before, "%s")
                row = await (await conn.execute(sql, params)).fetchone()
                total += int(row[0]) if row else 0
            return total

        return await self._db.run(work, read=True, transaction=True)

    async def prune_attempts(self, before: int, batch: int) -> int:
        if batch < 1:
            raise ValueError(f"The batch must be at least 1 attempt, got {batch}.")

        async def work(conn: Conn) -> int:
            deleted = 0
            for cdn in await _owners(conn):
                sql, params = delete_sql(cdn, before, batch - deleted, "%s", lock=_SKIP_LOCKED)
                deleted += (await conn.execute(sql, params)).rowcount
                if deleted >= batch:
                    break
            if deleted == 0:
                await conn.execute("SELECT merge_rollup_deltas()")
                for table in ROLLUP_TABLES:
                    await conn.execute(f"DELETE FROM {table} WHERE n = 0")
            return deleted

        return await self._db.run(work, transaction=True)
