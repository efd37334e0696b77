"""Pruning old attempts on SQLite without stalling checks.

A prune job runs on the writer thread like any write, so checks queued
behind it wait for its commit. It therefore deletes in chunks and stops once
it has used :data:`JOB_BUDGET` seconds, however many rows that was: on a
cold cache one deleted attempt costs far more than on a warm one (six
indexes lose an entry, and the rollups' delete triggers update four
``attempt_counts`` rows, an ``attempt_minutes`` row and any count filters'),
so a row count alone would not bound the stall.

The rollups stay exact because the triggers run in the same statement as
each delete. A decrement leaves a row at ``n = 0`` rather than deleting it
(an attempt of that app and video may come next); such rows count nothing,
and a pass that finds nothing more to delete removes them.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from typing import Final

from usher.storage.retention import count_sql, delete_sql, next_owner_sql
from usher.storage.schema import ROLLUP_TABLES
from usher.storage.sqlite.engine import SQLiteAccess

#: Seconds one prune job may hold the write transaction (checked per chunk).
JOB_BUDGET: Final = 0.05
#: Attempts deleted per statement inside a job.
CHUNK: Final = 200


def owners(conn: sqlite3.Connection) -> Iterator[int | None]:
    """``None`` (attempts no account owns), then each cdn that has attempts."""
    yield None
    cdn = conn.execute(next_owner_sql("?"), (-(2**63),)).fetchone()[0]
    while cdn is not None:
        yield int(cdn)
        cdn = conn.execute(next_owner_sql("?"), (cdn,)).fetchone()[0]


def count_before(conn: sqlite3.Connection, before: int) -> int:
    total = 0
    for cdn in owners(conn):
        sql, params = count_sql(cdn, before, "?")
        total += int(conn.execute(sql, params).fetchone()[0])
    return total


def prune(conn: sqlite3.Connection, before: int, batch: int) -> int:
    """Delete up to ``batch`` old attempts within :data:`JOB_BUDGET`; how many went."""
    deadline = time.monotonic() + JOB_BUDGET
    deleted = 0
    for cdn in owners(conn):
        while deleted < batch:
            limit = min(CHUNK, batch - deleted)
            sql, params = delete_sql(cdn, before, limit, "?")
            went = conn.execute(sql, params).rowcount
            deleted += went
            # Out of time only counts once something went: 0 must mean "none left".
            if deleted and time.monotonic() >= deadline:
                return deleted
            if went < limit:
                break  # this owner has nothing older left
        if deleted >= batch:
            return deleted
    # Every owner was walked and nothing old is left.
    for table in ROLLUP_TABLES:
        conn.execute(f"DELETE FROM {table} WHERE n = 0")
    return deleted


class SQLiteRetentionMixin(SQLiteAccess):
    """``count_attempts_before`` and ``prune_attempts`` of the SQLite storage."""

    async def count_attempts_before(self, before: int) -> int:
        return await self._read(lambda conn: count_before(conn, before))

    async def prune_attempts(self, before: int, batch: int) -> int:
        if batch < 1:
            raise ValueError(f"The batch must be at least 1 attempt, got {batch}.")
        # Deleting attempts leaves tickets, which the writer caches, alone.
        return await self._write(lambda conn: prune(conn, before, batch), keeps_state=True)
