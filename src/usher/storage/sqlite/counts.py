"""How SQLite counts and lists attempts without scanning millions of rows.

Counts (``sevu.errorcount``) are described here; lists (the panel,
``sevu.errorlog``) in :func:`match_where`.

The schema (``0004_counts.sql``) gives two kinds of access path:

* **Selective filters** (key, pass, ip) each have an index that starts with
  ``(cdn, column)``. One value matches a handful to a few hundred attempts,
  so the count walks that short index range and checks the other filters on
  the rows it finds.
* **Broad filters** (app, video, success) are answered from
  ``attempt_counts``, the rollup the triggers keep exact in the same
  transaction as each attempt. Any of their eight combinations is a lookup
  of at most two rows.

The planner is told which index drives the count instead of guessing: with
no statistics it cannot tell that ``key = ?`` matches ten rows and
``app = ?`` a million, and picking wrong costs a thousandfold. The unary
``+`` on the other columns is SQLite's documented way to keep an index off a
term; if an index were ever missing, the statement would still run (slowly)
rather than fail the way ``INDEXED BY`` does.

Time bounds (``starttime``/``endtime``) are not in the rollup, so a count
with time bounds and only broad filters goes to the ordinary indexes.
"""

from __future__ import annotations

import math
import sqlite3
import time
from typing import Final

from usher.storage.base import AttemptColumn, grouped_column
from usher.storage.counting import (
    EVERYTHING,
    WALK_PER_FETCH,
    Broad,
    FirstRead,
    ValueFilter,
    broad_of,
    count_attempts,
    find_then_bound,
    timed,
    value_filter,
    walk_cost,
)
from usher.storage.rows import (
    GRAIN_APP,
    GRAIN_VIDEO,
    GRAINS,
    filter_counts_where,
    find_filters_sql,
    matching_expression,
)
from usher.storage.schema import ATTEMPT_COLUMNS
from usher.storage.sqlite.engine import SQLiteAccess
from usher.storage.sqlite.sql import page_sql
from usher.tickets.model import AttemptFilter, Page
from usher.tickets.text import storable

#: Selective columns in the order they are preferred as the driving index:
#: a key has the fewest attempts, then a pass, then an address.
_DRIVERS: Final = ("key", "pass", "ip")

ROLLUP_SQL: Final = (
    "SELECT COALESCE(SUM(n), 0) FROM attempt_counts"
    " WHERE cdn = ? AND grain = ? AND app = ? AND video = ?"
)


def _filters(where: AttemptFilter) -> dict[str, object]:
    """The equality filters that are set, by column name."""
    found: dict[str, object] = {}
    for column, value in (
        ("key", where.key),
        ("pass", where.password),
        ("app", where.app),
        ("video", where.video),
        ("ip", where.ip),
        ("success", None if where.success is None else int(where.success)),
        # No index holds it: always tested on the rows the others read.
        ("appinst", where.appinst),
    ):
        if value is not None:
            found[column] = storable(value) if isinstance(value, str) else value
    return found


def rollup_count_query(cdn: int, broad: Broad) -> tuple[str, list[object]]:
    """The statement that sums ``attempt_counts`` at ``broad``'s grain."""
    params: list[object] = [
        cdn,
        broad.grain,
        "" if broad.app is None else broad.app,
        "" if broad.video is None else broad.video,
    ]
    if broad.success is None:
        return ROLLUP_SQL, params
    return ROLLUP_SQL + " AND success = ?", [*params, int(broad.success)]


def scan_count_query(cdn: int, where: AttemptFilter) -> tuple[str, list[object]]:
    """``COUNT(*)`` through the designed driving index (see the module's docstring)."""
    return scan_count_by(cdn, where, by_app_video=False)


def scan_count_by(
    cdn: int, where: AttemptFilter, *, by_app_video: bool
) -> tuple[str, list[object]]:
    """:func:`scan_count_query` with the time range's driver chosen (see :func:`_driven`)."""
    return _counted(*_driven(cdn, where, walk=False, by_app_video=by_app_video))


#: The apps an account logged a video under, from the rollup's finest grain.
#: ``INDEXED BY``: SQLite otherwise walks the primary key's (cdn, grain)
#: prefix, every (app, video) row of the account, to find one video's.
_APPS_OF_VIDEO: Final = (
    "app IN (SELECT app FROM attempt_counts INDEXED BY attempt_counts_video"
    " WHERE cdn = ? AND grain = 3 AND video = ? AND n > 0)"
)


def match_where(
    cdn: int,
    where: AttemptFilter,
    *,
    in_id_order: bool,
    sort_matches: bool = False,
    walk_table: bool = False,
    by_app_video: bool = False,
    driver_column: str | None = None,
) -> tuple[str, list[object]]:
    """The ``WHERE`` body (time bounds included) that reads the account's matching attempts on the
    designed access path. A selective filter (key, pass, ip) drives its index, as for a count.
    Without one, ``in_id_order`` (a list ``ORDER BY id`` with a ``LIMIT``) walks the table in id
    order, so the ``LIMIT`` stops the read after one page, unless ``sort_matches`` says an app's
    or video's few matches are cheaper to read through ``(cdn, app, video, at)`` and sort. Left
    to itself, SQLite instead reads every attempt of the account through some ``(cdn, ...)``
    index and sorts them all: 20 s at 10 M attempts. Time bounds without a selective filter keep
    the ``(cdn, at)`` range (a recent range is short; a table walk would read everything newer
    first). ``walk_table`` walks the table in id order whatever the filters (see
    :func:`walk_is_cheaper`).
    """
    clauses, params = (
        _unindexed(cdn, where)
        if walk_table
        else _driven(
            cdn,
            where,
            walk=in_id_order,
            sort_matches=sort_matches,
            by_app_video=by_app_video,
            driver_column=driver_column,
        )
    )
    return " AND ".join(clauses), params


def list_query(
    cdn: int,
    where: AttemptFilter,
    page: Page,
    *,
    newest_first: bool,
    sort_matches: bool = False,
    walk_table: bool = False,
    by_app_video: bool = False,
    driver_column: str | None = None,
    before: int | None = None,
    after: int | None = None,
) -> tuple[str, list[object]]:
    """The statement ``list_attempts`` runs: one page in id order.

    ``sort_matches``: an app or video filter reads every match through
    ``(cdn, app, video)`` and sorts them (see :func:`sorting_is_cheaper`).
    ``before``/``after``: only ids below/above it. Every access path ends in
    the rowid (the table, and each index's entries after its columns), so
    the walk in id order starts at the cursor instead of the table's end:
    a deep page costs what the first one does.
    """
    sql, params = match_where(
        cdn,
        where,
        in_id_order=True,
        sort_matches=sort_matches,
        walk_table=walk_table,
        by_app_video=by_app_video,
        driver_column=driver_column,
    )
    for clause, bound in (("id < ?", before), ("id > ?", after)):
        if bound is not None:
            sql += f" AND {clause}"
            params.append(bound)
    order = "id DESC" if newest_first else "id"
    return f"SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE {sql} ORDER BY {order}" + page_sql(
        page
    ), params


def count_upto_query(
    cdn: int, where: AttemptFilter, cap: int, *, by_app_video: bool = False
) -> tuple[str, list[object]]:
    """The statement ``count_attempts_upto`` runs when the rollup cannot
    answer: the count's driving index (see :func:`scan_count_query`), read no
    further than ``cap + 1`` matches."""
    sql, params = match_where(cdn, where, in_id_order=False, by_app_video=by_app_video)
    return (
        f"SELECT COUNT(*) FROM (SELECT 1 FROM attempts WHERE {sql} LIMIT {int(cap) + 1})",
        params,
    )


#: ``recent_denials``: the ``(cdn, at, success)`` range walked backwards,
#: ``success`` checked in the index, one row fetched per denial kept.
RECENT_DENIALS_SQL: Final = (
    "SELECT reason, ip, key FROM attempts"
    " WHERE cdn = ? AND at >= ? AND at <= ? AND success = 0 ORDER BY at DESC LIMIT ?"
)


def top_values_query(
    cdn: int, where: AttemptFilter, column: AttemptColumn, limit: int
) -> tuple[str, list[object]]:
    """The statement ``top_attempt_values`` runs."""
    name = grouped_column(where, column, limit)
    sql, params = match_where(cdn, where, in_id_order=False)
    # ``+``: never group by walking a (cdn, column) index. Left to itself,
    # SQLite groups a ticket's addresses by reading the account's whole
    # (cdn, ip) index, to skip sorting: 20 s at 10 M attempts, where the
    # key's index finds its few rows at once.
    return (
        f"SELECT {name}, COUNT(*) AS n FROM attempts WHERE {sql}"
        f" GROUP BY +{name} ORDER BY n DESC, {name} LIMIT {int(limit)}"
    ), params


def _driven(
    cdn: int,
    where: AttemptFilter,
    *,
    walk: bool,
    sort_matches: bool = False,
    by_app_video: bool = False,
    driver_column: str | None = None,
) -> tuple[list[str], list[object]]:
    """``cdn`` and the equality filters, with ``+`` on every column that must
    not choose the index (see the module's docstring).

    ``driver_column``: which of the named key, pass and ip drives (by
    default the first of them); a list names the one with the fewest
    attempts, so a busy key with a rare address reads the address's rows.

    ``by_app_video``: a time range with an app or video filter (and no key,
    pass or ip) reads that app's or video's ``(cdn, app, video)`` entries
    instead of the time range's ``(cdn, at)`` ones; the caller picks the
    smaller of the two from the rollups (see ``SQLiteStorage.app_video_first``).
    """
    filters = _filters(where)
    timed = where.start is not None or where.end is not None
    driver: tuple[str, ...] = ()
    extra: list[tuple[str, list[object]]] = []
    selective = [name for name in _DRIVERS if name in filters]
    if selective:
        chosen = driver_column if driver_column in selective else selective[0]
        driver = ("cdn", chosen, "at")
    else:
        named = "app" in filters or "video" in filters
        if walk and not timed:
            if named and sort_matches:
                driver = ("cdn", "app", "video")
                if "app" not in filters:
                    extra.append((_APPS_OF_VIDEO, [cdn, filters["video"]]))
            # An empty driver leaves even cdn unindexed: the table walk.
        elif timed and named:
            if by_app_video:
                # ``+at``: the (cdn, at, success) range must not win; ``at``
                # is still tested on each (cdn, app, video, at) entry before
                # its row is read.
                driver = ("cdn", "app", "video")
                if "app" not in filters:
                    extra.append((_APPS_OF_VIDEO, [cdn, filters["video"]]))
            else:
                driver = ("cdn", "at", "success")
        else:
            # No selective filter: the planner picks among the others.
            driver = ("cdn", *filters, "at")
    clauses = [f"{'' if 'cdn' in driver else '+'}cdn = ?"]
    params: list[object] = [cdn]
    for column, value in filters.items():
        clauses.append(f"{'' if column in driver else '+'}{column} = ?")
        params.append(value)
    for clause, values in extra:
        clauses.append(clause)
        params.extend(values)
    # Time bounds go to the index only when it continues with ``at``.
    at = "at" if "at" in driver else "+at"
    for clause, bound in ((f"{at} >= ?", where.start), (f"{at} <= ?", where.end)):
        if bound is not None:
            clauses.append(clause)
            params.append(bound)
    return clauses, params


def _unindexed(cdn: int, where: AttemptFilter) -> tuple[list[str], list[object]]:
    """``cdn`` and the equality filters, each kept off every index."""
    clauses = ["+cdn = ?"]
    params: list[object] = [cdn]
    for column, value in _filters(where).items():
        clauses.append(f"+{column} = ?")
        params.append(value)
    for clause, bound in (("+at >= ?", where.start), ("+at <= ?", where.end)):
        if bound is not None:
            clauses.append(clause)
            params.append(bound)
    return clauses, params


def walk_is_cheaper(
    *, index_rows: int, newer: int, matches: int, total: int, page: Page, sparse: bool = False
) -> bool:
    """Whether walking the table in id order (newest first) reaches the
    page sooner than reading ``index_rows`` entries of the designed index
    and sorting them.

    A busy address (5% of the log) fills a page after about a thousand
    walked rows (:func:`walk_cost`) where its index holds 600,000; a time
    range ending now has nothing newer. An index read costs
    :data:`WALK_PER_FETCH` walked rows per entry, as in
    :func:`sorting_is_cheaper`. ``sparse``: see :func:`walk_cost`.
    """
    return walk_cost(newer=newer, matches=matches, total=total, page=page, sparse=sparse) < (
        index_rows * WALK_PER_FETCH
    )


def index_rows_worth_reading(
    *, newer: int, matches: int, total: int, page: Page, lone: bool = False, sparse: bool = False
) -> int:
    """The most index entries a list reads rather than walk the table: with
    one more, :func:`walk_is_cheaper` says walk. A count of a named value's
    index entries needs to read no further than this plus one to settle the
    choice, and costs less than the walk it may choose.

    ``lone``: the list names that value and nothing else, so its matches
    are those index entries, and each one more also shortens the walk: the
    walk wins past the ``n`` where ``WALK_PER_FETCH * n * n`` reaches
    ``newer * n + (seek + rows) * total``, 52,000 entries for a page of
    1,000 at 10.9 M attempts rather than the 272,000 that ``matches``
    counted up to 10,000 gives. ``sparse``: see :func:`walk_cost`.
    """
    if sparse:
        return int(total // WALK_PER_FETCH)
    if lone:
        reach = (page.seek + page.rows) * total
        root = math.sqrt(newer * newer + 4 * WALK_PER_FETCH * reach)
        return int((newer + root) / (2 * WALK_PER_FETCH))
    return int(walk_cost(newer=newer, matches=matches, total=total, page=page) // WALK_PER_FETCH)


def plain_count_query(cdn: int, where: AttemptFilter) -> tuple[str, list[object]]:
    """The same count as one plain ``COUNT(*)`` left to SQLite's planner.

    This is the baseline the benchmark compares against; the server never
    runs it.
    """
    clauses = ["cdn = ?"]
    params: list[object] = [cdn]
    for column, value in _filters(where).items():
        clauses.append(f"{column} = ?")
        params.append(value)
    for clause, bound in (("at >= ?", where.start), ("at <= ?", where.end)):
        if bound is not None:
            clauses.append(clause)
            params.append(bound)
    return _counted(clauses, params)


def _counted(clauses: list[str], params: list[object]) -> tuple[str, list[object]]:
    """The ``COUNT(*)`` over ``clauses``."""
    return "SELECT COUNT(*) FROM attempts WHERE " + " AND ".join(clauses), params


class SQLiteCountsMixin(SQLiteAccess):
    """:class:`~usher.storage.counting.CountSource` on SQLite."""

    async def count_attempts(self, cdn: int, where: AttemptFilter) -> int:
        return await count_attempts(self, cdn, where)

    async def flush_rollups(self) -> None:
        # The triggers update the rollups in place, in each write's transaction.
        return

    async def sum_account_counts(self, cdn: int, broad: Broad) -> int:
        sql, params = rollup_count_query(cdn, broad)
        return await self._one_int(sql, params)

    async def sum_minutes(self, cdn: int, first: int, last: int, success: bool | None) -> int:
        sql = (
            "SELECT COALESCE(SUM(n), 0) FROM attempt_minutes"
            " WHERE cdn = ? AND minute >= ? AND minute <= ?"
        )
        if success is None:
            return await self._one_int(sql, [cdn, first, last])
        return await self._one_int(sql + " AND success = ?", [cdn, first, last, int(success)])

    async def find_filters(self, filters: list[ValueFilter]) -> dict[int, int]:
        sql, params = find_filters_sql(filters, "?")
        # count_filters holds at most 256 rows an account and stays cached:
        # read on the event loop (SQLiteEngine.read_at_once), like an account.
        rows = await self._engine.read_at_once(lambda conn: conn.execute(sql, params).fetchall())
        return {int(mask): int(filter_id) for mask, filter_id in rows}

    async def find_filters_then_bound(
        self, filters: list[ValueFilter], first: FirstRead
    ) -> tuple[dict[int, int], tuple[int, int] | None]:
        # The filters are read on the event loop: no round trip to save.
        return await find_then_bound(self, filters, first)

    async def sum_filter_counts(self, filter_id: int, broad: Broad) -> int:
        where, params = filter_counts_where(filter_id, broad, "?")
        return await self._one_int(
            f"SELECT COALESCE(SUM(n), 0) FROM filter_counts WHERE {where}", params
        )

    async def bounded_count(
        self, f: ValueFilter, column: str, broad: Broad, limit: int
    ) -> tuple[int, int]:
        condition, params = matching_expression(f, column, broad, "?")
        value = dict(f.named)[column]
        # The inner SELECT names only cdn and the driving column, so the
        # (cdn, column, at) index is the one path it has; the other filters
        # are evaluated on the rows it reads.
        row = await self._read(
            lambda conn: conn.execute(
                f"SELECT COUNT(*), TOTAL(m) FROM (SELECT ({condition}) AS m FROM attempts"
                f" WHERE cdn = ? AND {column} = ? LIMIT ?)",
                [*params, f.cdn, value, limit],
            ).fetchone()
        )
        return int(row[0]), int(row[1])

    async def add_filter(self, f: ValueFilter, *, cap: int) -> int | None:
        named, values = matching_expression(f, "", EVERYTHING, "?")
        now = int(time.time())

        def run(conn: sqlite3.Connection) -> int | None:
            # The writer is the only connection that writes, so the fill below
            # and every later attempt's trigger see each attempt exactly once.
            row = conn.execute(FIND_FILTER, f.row).fetchone()
            if row is not None:
                return int(row[0])
            (count,) = conn.execute(
                "SELECT COUNT(*) FROM count_filters WHERE cdn = ?", (f.cdn,)
            ).fetchone()
            if count >= cap:
                return None
            filter_id = conn.execute(
                "INSERT INTO count_filters (cdn, mask, key, pass, ip, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [*f.row, now],
            ).lastrowid
            # ``+``: group after reading the named column's index range; left
            # to itself SQLite walks (cdn, app, video) to skip the sort,
            # which reads the whole account (a minute at 10 M attempts).
            conn.execute(
                "WITH fine AS (SELECT app, video, success, COUNT(*) AS n FROM attempts"
                f" WHERE cdn = ? AND {named} GROUP BY +app, +video, +success)"
                " INSERT INTO filter_counts (filter, grain, app, video, success, n)"
                f" SELECT ?, g.grain, {GRAIN_APP}, {GRAIN_VIDEO}, success, SUM(n)"
                f" FROM fine CROSS JOIN {GRAINS} WHERE true GROUP BY 2, 3, 4, 5",
                [f.cdn, *values, filter_id],
            )
            return filter_id

        return await self._write(run)

    async def scan_count(self, cdn: int, where: AttemptFilter) -> int:
        by_app_video = await self.app_video_first(cdn, where)
        return await self._one_int(*scan_count_by(cdn, where, by_app_video=by_app_video))

    async def app_video_first(self, cdn: int, where: AttemptFilter) -> bool:
        """Whether a time range with an app or video filter (and no key, pass
        or ip) reads fewer index entries through ``(cdn, app, video)`` than
        through the range's ``(cdn, at)``: both sizes come from rollups."""
        broad = broad_of(where)
        if not timed(where) or broad.grain == 0 or value_filter(cdn, where) is not None:
            return False
        in_app_video = await self.sum_account_counts(cdn, Broad(broad.app, broad.video, None))
        in_range = await self.count_attempts(cdn, AttemptFilter(start=where.start, end=where.end))
        return in_app_video < in_range

    async def _one_int(self, sql: str, params: list[object]) -> int:
        row = await self._read(lambda conn: conn.execute(sql, params).fetchone())
        return int(row[0])


FIND_FILTER: Final = (
    "SELECT id FROM count_filters WHERE cdn = ? AND mask = ? AND key = ? AND pass = ? AND ip = ?"
)
