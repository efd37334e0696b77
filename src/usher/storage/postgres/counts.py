"""Counting attempts on PostgreSQL: the statements behind
:func:`usher.storage.counting.count_attempts`, and the job that merges the
rollups' delta rows (see ``migrations/postgresql/0006_rollups.sql``).

Every rollup read adds the merged rows and the pending deltas in one
statement, so it reads one snapshot: each committed attempt is in exactly
one of the two.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Final

from usher.protocol.errors import StorageBusy, StorageError
from usher.storage.counting import EVERYTHING, Broad, FirstRead, ValueFilter, count_attempts
from usher.storage.postgres.runner import PgRunner
from usher.storage.postgres.sql import Conn, attempts_where
from usher.storage.rows import (
    GRAIN_APP,
    GRAIN_VIDEO,
    GRAINS,
    filter_counts_where,
    find_filters_sql,
    matching_expression,
)
from usher.tickets.model import AttemptFilter

log = logging.getLogger(__name__)

#: Seconds between merges of the rollups' delta rows on each node (only one
#: node merges at a time). Readers are exact whatever the backlog; merging
#: keeps the backlog, and so each read's work, small.
MERGE_EVERY: Final = 1.0

#: Seconds a count filter's fill waits for the transactions that were open
#: when its row committed (checks take milliseconds); past it, the count
#: fails with code 1000 and the filter stays unused until a later count
#: finishes it.
FILL_WAIT: Final = 10.0

_FIND_FILTER: Final = (
    "SELECT id, ready FROM count_filters"
    " WHERE cdn = %s AND mask = %s AND key = %s AND pass = %s AND ip = %s"
)


def _both(rollup: str, deltas: str, where: str) -> str:
    """``SUM(n)`` over a rollup and its delta table, in one snapshot; the
    parameters of ``where`` are passed twice."""
    return (
        f"SELECT COALESCE(sum(n), 0) FROM (SELECT n FROM {rollup} WHERE {where}"
        f" UNION ALL SELECT n FROM {deltas} WHERE {where}) AS both_parts"
    )


def bounded_count_sql(condition: str, column: str) -> str:
    """``bounded_count``'s statement (parameters: :func:`bounded_count_params`):
    how many index entries of ``column``'s value it read, at most the limit,
    and, when that is fewer than the limit, how many of those attempts match
    ``condition`` (0 otherwise: a busy value's matches are not used).

    The entries are read on their own, so the read is index-only and stops
    at the limit. Read with the rows (``condition`` names ``success``, say),
    PostgreSQL chose a bitmap scan, which reads every entry of the value
    before the LIMIT applies: all of a leaked key's (289,000 in the bench at
    10 M attempts), twice for its ticket page alone. The matches are counted
    only for a value with fewer entries than the limit (an InitPlan runs
    when used), and among that value's rows alone: ``condition`` is tested
    above a LIMIT, which PostgreSQL never pushes a condition through, so the
    value's index is the one path. Given the condition, the planner could
    pick another index: it took an app and video (correlated columns, whose
    rows it underestimates) for more selective than a ticket's key, and read
    the video's thousands of attempts, 8-13 ms a count at 10 M attempts."""
    return (
        f"SELECT e.n, CASE WHEN e.n < %s THEN (SELECT count(*) FILTER (WHERE {condition})"
        f" FROM (SELECT * FROM attempts WHERE cdn = %s AND {column} = %s LIMIT %s) AS v)"
        " ELSE 0 END"
        f" FROM (SELECT count(*) AS n FROM (SELECT 1 FROM attempts"
        f" WHERE cdn = %s AND {column} = %s LIMIT %s) AS entries) AS e"
    )


def bounded_count_params(
    limit: int, cdn: int, value: str, condition_params: list[object]
) -> list[object]:
    """The parameters of :func:`bounded_count_sql`, in the order it names them."""
    return [limit, *condition_params, cdn, value, limit, cdn, value, limit]


def find_then_bound_sql(filters: list[ValueFilter], first: FirstRead) -> tuple[str, list[object]]:
    """``find_filters_then_bound``'s one statement: a row ``(mask, id, NULL,
    NULL)`` per filter found, then, unless one of ``first.unless`` was
    found, a row ``(NULL, NULL, read, matched)``: the bounded read, under a
    one-time filter, so that PostgreSQL does not run it at all when a filter
    was found."""
    found, params = find_filters_sql(filters, "%s", ready_only=True)
    condition, condition_params = matching_expression(first.f, first.column, first.broad, "%s")
    value = dict(first.f.named)[first.column]
    bounded_sql = bounded_count_sql(condition, first.column)
    sql = (
        f"WITH found AS ({found})"
        " SELECT mask, id, NULL::bigint, NULL::bigint FROM found"
        f" UNION ALL SELECT NULL, NULL, b.n, b.m FROM ({bounded_sql}) AS b (n, m)"
        " WHERE NOT EXISTS (SELECT 1 FROM found WHERE mask = ANY (%s))"
    )
    bounded = bounded_count_params(first.limit, first.f.cdn, value, condition_params)
    return sql, [*params, *bounded, sorted(first.unless)]


#: Set for a capped count driven by a key, pass or ip (see :func:`capped_count_sql`):
#: a walk of that value's index in its order is then the cheapest plan left.
INDEX_PATHS_ONLY: Final = "SET LOCAL enable_bitmapscan = off; SET LOCAL enable_seqscan = off"


def capped_count_sql(cdn: int, where: AttemptFilter) -> tuple[str, list[object], bool]:
    """``capped_count``'s statement without its limit parameter, and
    whether it must run with :data:`INDEX_PATHS_ONLY`.

    A count that names a key, pass or ip reaches here with a time range or
    when the value is busy. A bitmap scan of the value's index reads every
    entry of it before the LIMIT applies (57,722 entries for 10,001 denials
    of a leaked key at 2 M attempts; the bench's has 289,000 at 10 M), and
    PostgreSQL chose one whenever the other filters need the row: its
    estimate for a value of one account is several times too low, so it
    expects to read them all anyway (and a small table gets a sequential
    scan for the same reason). In the index's own order, with neither
    allowed, the read stops at the cap."""
    sql, params = attempts_where(cdn, where)
    by_value = any(value is not None for value in (where.key, where.password, where.ip))
    order = " ORDER BY at" if by_value else ""
    statement = f"SELECT count(*) FROM (SELECT 1 FROM attempts WHERE {sql}{order} LIMIT %s) AS a"
    return statement, params, by_value


_ACCOUNT_WHERE: Final = "cdn = %s AND grain = %s AND app = %s AND video = %s"
_MINUTE_WHERE: Final = "cdn = %s AND minute >= %s AND minute <= %s"


class PostgresCountsMixin:
    """:class:`~usher.storage.counting.CountSource` on PostgreSQL; needs
    the storage's :class:`PgRunner`."""

    _db: PgRunner
    _merger: asyncio.Task[None] | None = None

    async def count_attempts(self, cdn: int, where: AttemptFilter) -> int:
        return await count_attempts(self, cdn, where)

    async def sum_account_counts(self, cdn: int, broad: Broad) -> int:
        params: list[object] = [
            cdn,
            broad.grain,
            "" if broad.app is None else broad.app,
            "" if broad.video is None else broad.video,
        ]
        where = _ACCOUNT_WHERE
        if broad.success is not None:
            where += " AND success = %s"
            params.append(broad.success)
        sql = _both("attempt_counts", "attempt_count_deltas", where)
        return await self._one_int(sql, params + params)

    async def sum_minutes(self, cdn: int, first: int, last: int, success: bool | None) -> int:
        where = _MINUTE_WHERE
        params: list[object] = [cdn, first, last]
        if success is not None:
            where += " AND success = %s"
            params.append(success)
        sql = _both("attempt_minutes", "attempt_minute_deltas", where)
        return await self._one_int(sql, params + params)

    async def find_filters(self, filters: list[ValueFilter]) -> dict[int, int]:
        sql, params = find_filters_sql(filters, "%s", ready_only=True)
        rows = await self._db.fetchall(sql, params)
        return {int(mask): int(filter_id) for mask, filter_id in rows}

    async def find_filters_then_bound(
        self, filters: list[ValueFilter], first: FirstRead
    ) -> tuple[dict[int, int], tuple[int, int] | None]:
        sql, params = find_then_bound_sql(filters, first)
        known: dict[int, int] = {}
        bounded = None
        for mask, filter_id, read, matched in await self._db.fetchall(sql, params):
            if mask is None:
                bounded = (int(read), int(matched))
            else:
                known[int(mask)] = int(filter_id)
        return known, bounded

    async def sum_filter_counts(self, filter_id: int, broad: Broad) -> int:
        where, params = filter_counts_where(filter_id, broad, "%s")
        sql = _both("filter_counts", "filter_count_deltas", where)
        return await self._one_int(sql, params + params)

    async def bounded_count(
        self, f: ValueFilter, column: str, broad: Broad, limit: int
    ) -> tuple[int, int]:
        condition, params = matching_expression(f, column, broad, "%s")
        value = dict(f.named)[column]
        row = await self._db.fetchone(
            bounded_count_sql(condition, column),
            bounded_count_params(limit, f.cdn, value, params),
        )
        return (0, 0) if row is None else (int(row[0]), int(row[1]))

    async def add_filter(self, f: ValueFilter, *, cap: int) -> int | None:
        # Filled in three steps so that no check ever waits for a fill (a
        # fill reads every attempt of a busy value: seconds at full size):
        #
        # 1. The filter's row commits, not ready. From then on every INSERT
        #    or DELETE of attempts whose trigger statement sees it writes its
        #    filter_count_deltas, in the writer's own transaction.
        # 2. Wait until every transaction that might have written attempts
        #    without seeing the row has ended (_wait_for_writers_before).
        # 3. In one REPEATABLE READ snapshot S, add as deltas, per (grain,
        #    app, video, success), the matching attempts of S minus the
        #    filter's counts and deltas in S, and mark the filter ready.
        #
        # Why each attempt is then counted exactly once: let D(T) be the
        # matching attempts minus the filter's counts and deltas in snapshot
        # T; merging moves deltas to counts in one transaction, so it never
        # changes D. Step 3 adds -D(S), so D is 0 at S (and only one fill of
        # a filter commits, see _fill). A transaction W not visible in S was
        # still running at S or began later. Before S was taken, step 2 saw
        # no transaction running with an id below Z, an id given after the
        # row committed; so W's id is above Z, given after the row committed.
        # W got its id at its first write, so every trigger statement of its
        # attempt writes took its snapshot later (READ COMMITTED: a new one
        # per statement in the trigger's function), saw the filter, and
        # wrote a delta for
        # every attempt W inserted (+1) or deleted (-1), pruning included:
        # W changes the attempts and the deltas alike and leaves D as it
        # was. So for every snapshot after step 3, D is 0. Every writer of
        # attempts runs at READ COMMITTED, PostgreSQL's default, which is
        # what this needs: a REPEATABLE READ writer's triggers would read
        # count_filters as of its first statement.
        made = await self._filter_row(f, cap=cap)
        if made is None:
            return None
        filter_id, ready = made
        if not ready:
            # A filter left not ready (by a fill still running on another
            # node, or by one that crashed or gave up) is finished here:
            # the steps hold for any number of fills of one filter.
            await self._wait_for_writers_before()
            await self._fill(f, filter_id)
        return filter_id

    async def _filter_row(self, f: ValueFilter, *, cap: int) -> tuple[int, bool] | None:
        """Step 1: the filter's (id, ready), its row committed; ``None``
        when the account has ``cap`` filters already."""

        async def work(conn: Conn) -> tuple[int, bool] | None:
            # One new filter at a time, so the cap holds; nothing else takes
            # this lock, and it is held for a few row reads.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('usher.add_filter'))")
            row = await (await conn.execute(_FIND_FILTER, f.row)).fetchone()
            if row is not None:
                return int(row[0]), bool(row[1])
            count = await (
                await conn.execute("SELECT count(*) FROM count_filters WHERE cdn = %s", (f.cdn,))
            ).fetchone()
            if count is not None and int(count[0]) >= cap:
                return None
            made = await (
                await conn.execute(
                    "INSERT INTO count_filters (cdn, mask, key, pass, ip, created_at, ready)"
                    " VALUES (%s, %s, %s, %s, %s, %s, false) RETURNING id",
                    [*f.row, int(time.time())],
                )
            ).fetchone()
            if made is None:
                raise StorageError("PostgreSQL did not return the new count filter's id.")
            return int(made[0]), False

        return await self._db.run(work, transaction=True)

    async def capped_count(self, cdn: int, where: AttemptFilter, cap: int) -> int:
        statement, params, by_value = capped_count_sql(cdn, where)

        async def work(conn: Conn) -> int:
            if by_value:
                await conn.execute(INDEX_PATHS_ONLY, prepare=False)
            row = await (await conn.execute(statement, [*params, cap + 1])).fetchone()
            return 0 if row is None else int(row[0])

        return await self._db.run(work, read=True, transaction=by_value)

    async def _wait_for_writers_before(self) -> None:
        """Step 2: return once every transaction that had written anything
        (so holds a transaction id) before this call has ended. Ids are
        given in order, so a new one (``pg_current_xact_id``, in its own
        committed transaction) is above every id given before; polling,
        rather than a lock, keeps every writer free to go."""
        row, _ = await self._db.write("SELECT pg_current_xact_id()::text")
        if row is None:
            raise StorageError("PostgreSQL did not return a transaction id.")
        mark = str(row[0])
        deadline = time.monotonic() + FILL_WAIT
        pause = 0.005
        while True:
            done = await self._db.fetchone(
                "SELECT pg_snapshot_xmin(pg_current_snapshot()) >= %s::xid8", [mark]
            )
            if done is not None and done[0]:
                return
            if time.monotonic() >= deadline:
                raise StorageBusy(
                    "A count filter is waiting for database transactions that were open for"
                    f" more than {FILL_WAIT:g} s; try the count again later (the next count"
                    " finishes the filter)."
                )
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.1)

    async def _fill(self, f: ValueFilter, filter_id: int) -> None:
        """Step 3: add what the triggers did not count, in one snapshot, as
        deltas (so a merge may run meanwhile), and mark the filter ready."""
        named, values = matching_expression(f, "", EVERYTHING, "%s")

        async def work(conn: Conn) -> None:
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            # The snapshot is taken here, and the count below only reads:
            # the transaction gets an id (which every other fill's step 2
            # would wait for) only when it writes, after the long part.
            row = await (
                await conn.execute("SELECT ready FROM count_filters WHERE id = %s", (filter_id,))
            ).fetchone()
            if row is None:
                raise StorageError(f"The count filter {filter_id} was removed while it was filled.")
            if row[0]:
                return
            missing = await (
                await conn.execute(
                    "SELECT grain, app, video, success, sum(n)::bigint FROM ("
                    f" SELECT g.grain, {GRAIN_APP} AS app, {GRAIN_VIDEO} AS video, success,"
                    f" count(*) AS n FROM attempts CROSS JOIN {GRAINS}"
                    f" WHERE cdn = %s AND {named} GROUP BY 1, 2, 3, 4"
                    " UNION ALL SELECT grain, app, video, success, -n FROM filter_counts"
                    " WHERE filter = %s"
                    " UNION ALL SELECT grain, app, video, success, -n FROM filter_count_deltas"
                    " WHERE filter = %s"
                    ") AS parts GROUP BY 1, 2, 3, 4 HAVING sum(n) <> 0",
                    [f.cdn, *values, filter_id, filter_id],
                )
            ).fetchall()
            if missing:
                await conn.execute(
                    "INSERT INTO filter_count_deltas (filter, grain, app, video, success, n)"
                    " SELECT %s, * FROM unnest(%s::smallint[], %s::text[], %s::text[],"
                    " %s::boolean[], %s::bigint[])",
                    [filter_id, *(list(column) for column in zip(*missing, strict=True))],
                )
            # A fill of this filter that committed after this snapshot (or
            # commits while this waits for the row) makes this UPDATE a
            # serialisation failure (REPEATABLE READ: the first updater
            # wins), which undoes this one's deltas too; the runner tries
            # again, and the new snapshot finds the filter ready.
            await conn.execute("UPDATE count_filters SET ready = true WHERE id = %s", (filter_id,))

        await self._db.run(work, transaction=True)

    async def scan_count(self, cdn: int, where: AttemptFilter) -> int:
        sql, params = attempts_where(cdn, where)
        return await self._one_int(f"SELECT count(*) FROM attempts WHERE {sql}", params)

    async def _one_int(self, sql: str, params: list[object]) -> int:
        row = await self._db.fetchone(sql, params)
        return 0 if row is None else int(row[0])

    # -- the merge job -------------------------------------------------------

    async def merge_rollups(self) -> int:
        """Move the pending deltas into the rollups now; the number of rollup
        rows changed, or -1 when another node was merging."""
        row, _ = await self._db.write("SELECT merge_rollup_deltas()")
        return -1 if row is None else int(row[0])

    async def flush_rollups(self) -> None:
        # Another node's merge holds the lock only briefly; wait it out.
        for _ in range(100):
            if await self.merge_rollups() >= 0:
                return
            await asyncio.sleep(0.05)
        raise StorageError("Another node kept merging the count rollups; try again.")

    def start_merging(self) -> None:
        self._merger = asyncio.create_task(self._merge_forever(), name="usher-rollup-merge")

    async def stop_merging(self) -> None:
        if self._merger is not None:
            self._merger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._merger
            self._merger = None

    async def _merge_forever(self) -> None:
        while True:
            await asyncio.sleep(MERGE_EVERY)
            try:
                await self.merge_rollups()
            except StorageError as exc:
                # The database is down or busy: the deltas wait, and reads
                # stay exact; the next round tries again.
                log.warning(
                    "Merging the count rollups failed; retrying in %ss: %s", MERGE_EVERY, exc
                )
