"""How both backends count attempts without reading millions of rows.

``sevu.errorcount`` (and the panel) count an account's attempts by any of
key, pass, app, video, ip and success, optionally within a time range. The
rule that picks how a count is answered lives here, once; each backend
supplies the few statements it needs (:class:`CountSource`). Every answer is
exact.

* **No key, pass or ip, no time range**: ``attempt_counts``, the per
  (account, app, video, outcome) rollup at four grains. Any of the eight
  app/video/success combinations is a lookup of at most two rows.
* **Only a time range (and success)**: ``attempt_minutes`` for the whole
  minutes inside the range, and the attempts themselves for the partial
  minutes at its edges (under two minutes of the log).
* **A key, pass or ip, no time range**: that column's index. Almost every
  value has a handful of attempts, so the count reads them and checks the
  other filters. A *busy* value (a NAT gateway, a leaked ticket, an attacker)
  can have hundreds of thousands; reading those is what made such counts
  take 80 ms on SQLite and over a second on PostgreSQL. So the count first
  reads at most :data:`BUSY_AT` index entries of one named column; if the
  value has more, that value gets a count filter of its own (so later counts
  naming it skip the read) and the next named column is tried; when every
  named column is busy, the combination of their values becomes a *count
  filter*: a row in
  ``count_filters`` whose ``filter_counts`` (per app, video, outcome) are
  filled from the attempts (SQLite in the same transaction, PostgreSQL
  without holding up writers) and kept exact from then on by the same
  triggers as the other rollups. That costs one slow count per
  busy combination, ever; later counts read its rollup rows.
  Only :func:`count_attempts` (``sevu.errorcount``) makes count filters.
  The panel's counts (:func:`count_attempts_upto`, SQLite's list plans)
  use the filters that exist, and where none counts a busy combination
  they count at most ``cap + 1`` matching attempts: a fill reads every
  attempt of a busy value, more than one panel view may read.
* **Anything else** (a time range with app, video, key, pass or ip): the
  driving index, time-bounded. Such counts read what the range holds.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Final, Protocol

from usher.storage.base import (
    MinuteTail,
    TimelineBucket,
    check_countable,
    check_timeline_bounds,
)
from usher.tickets.model import AttemptFilter, Page
from usher.tickets.text import storable

log = logging.getLogger(__name__)

#: A value with more attempts than this is busy: counting it reads its
#: count filter's rollup rather than its index entries. Reading this many
#: entries costs about a millisecond on SQLite.
BUSY_AT: Final = 2000
#: Count filters one account may have. Each costs a few index probes per
#: logged attempt of that account; past the cap, busy combinations are
#: counted from their index (exact, slower) and a warning is logged.
MAX_FILTERS_PER_ACCOUNT: Final = 256

#: The selective columns, in the order they are tried as the driving index
#: (a key has the fewest attempts, then a pass, then an address), with the
#: bit each has in ``count_filters.mask``.
SELECTIVE: Final = (("key", 1), ("pass", 2), ("ip", 4))
MINUTE: Final = 60


@dataclass(frozen=True, slots=True)
class Broad:
    """The app, video and success filters (``None``: not filtered)."""

    app: str | None
    video: str | None
    success: bool | None

    @property
    def grain(self) -> int:
        """Which ``attempt_counts`` grain answers these filters."""
        return (1 if self.app is not None else 0) | (2 if self.video is not None else 0)


@dataclass(frozen=True, slots=True)
class ValueFilter:
    """An account and the key, pass and ip values a count names: a row of
    ``count_filters``. Columns outside ``mask`` hold ''."""

    cdn: int
    mask: int
    key: str
    password: str
    ip: str

    @property
    def named(self) -> list[tuple[str, str]]:
        """(column, value) of each column the filter compares, in driving order."""
        values = (self.key, self.password, self.ip)
        return [
            (column, value)
            for (column, bit), value in zip(SELECTIVE, values, strict=True)
            if self.mask & bit
        ]

    @property
    def row(self) -> list[object]:
        """Its ``count_filters`` columns: cdn, mask, key, pass, ip."""
        return [self.cdn, self.mask, self.key, self.password, self.ip]

    def where(self) -> AttemptFilter:
        """The attempts this filter counts, as a filter of ``count_attempts``."""
        return AttemptFilter(
            key=self.key if self.mask & 1 else None,
            password=self.password if self.mask & 2 else None,
            ip=self.ip if self.mask & 4 else None,
        )

    def alone(self, column: str) -> ValueFilter:
        """The filter on ``column``'s value only."""
        bit = dict(SELECTIVE)[column]
        values = (self.key, self.password, self.ip)
        key, password, ip = (
            value if b == bit else "" for (_, b), value in zip(SELECTIVE, values, strict=True)
        )
        return ValueFilter(self.cdn, bit, key, password, ip)


#: No app, video or success filter.
EVERYTHING: Final = Broad(None, None, None)


def broad_of(where: AttemptFilter) -> Broad:
    return Broad(
        None if where.app is None else storable(where.app),
        None if where.video is None else storable(where.video),
        where.success,
    )


def value_filter(cdn: int, where: AttemptFilter) -> ValueFilter | None:
    """The count filter for ``where``'s key, pass and ip; ``None`` when it
    names none of them."""
    values = (where.key, where.password, where.ip)
    mask = sum(bit for (_, bit), value in zip(SELECTIVE, values, strict=True) if value is not None)
    if not mask:
        return None
    key, password, ip = ("" if value is None else storable(value) for value in values)
    return ValueFilter(cdn, mask, key, password, ip)


def indexed_part(where: AttemptFilter) -> AttemptFilter:
    """``where`` without ``appinst``, which no index or rollup holds: what
    plans a listing; ``appinst`` is then tested on the rows it reads."""
    return where if where.appinst is None else replace(where, appinst=None)


def timed(where: AttemptFilter) -> bool:
    return where.start is not None or where.end is not None


def uses_rollup(where: AttemptFilter) -> bool:
    """Whether ``attempt_counts`` alone answers this count."""
    return value_filter(0, where) is None and not timed(where)


@dataclass(frozen=True, slots=True)
class MinuteSplit:
    """A time range as whole minutes (``first``..``last``, the start second
    of each; ``None`` when the range holds no whole minute) and the partial
    ranges at its edges (inclusive second bounds)."""

    first: int | None
    last: int | None
    edges: tuple[tuple[int, int], ...]


def split_minutes(start: int, end: int) -> MinuteSplit:
    """Split the inclusive range ``start..end`` into whole minutes and edges."""
    first = -(-start // MINUTE) * MINUTE  # the first minute starting at or after start
    stop = (end + 1) // MINUTE * MINUTE  # the first second after the last whole minute
    if first >= stop:
        return MinuteSplit(None, None, ((start, end),) if start <= end else ())
    edges = []
    if start < first:
        edges.append((start, first - 1))
    if stop <= end:
        edges.append((stop, end))
    return MinuteSplit(first, stop - MINUTE, tuple(edges))


class CountSource(Protocol):
    """The statements a backend runs for :func:`count_attempts`."""

    async def sum_account_counts(self, cdn: int, broad: Broad) -> int:
        """Sum of ``attempt_counts`` at ``broad``'s grain."""

    async def sum_minutes(self, cdn: int, first: int, last: int, success: bool | None) -> int:
        """Sum of ``attempt_minutes`` for minutes ``first``..``last``."""

    async def find_filters(self, filters: list[ValueFilter]) -> dict[int, int]:
        """The ids of those of ``filters`` (all of one account, of distinct
        masks) that ``count_filters`` holds, by mask; one round trip."""

    async def find_filters_then_bound(
        self, filters: list[ValueFilter], first: FirstRead
    ) -> tuple[dict[int, int], tuple[int, int] | None]:
        """:meth:`find_filters`, then ``first``'s :meth:`bounded_count`
        unless a filter of ``first.unless`` was found (``None`` then): what
        :func:`find_then_bound` does, in one round trip where the backend
        can (a count's first two reads, one after the other otherwise)."""

    async def sum_filter_counts(self, filter_id: int, broad: Broad) -> int:
        """Sum of the filter's ``filter_counts`` rows matching ``broad``."""

    async def bounded_count(
        self, f: ValueFilter, column: str, broad: Broad, limit: int
    ) -> tuple[int, int]:
        """Read at most ``limit`` attempts of ``f.cdn`` with ``column`` equal
        to ``f``'s value, through that column's index; return how many were
        read and how many of those match all of ``f`` and ``broad`` (which
        only matters, and may be 0, when ``limit`` were read)."""

    async def add_filter(self, f: ValueFilter, *, cap: int) -> int | None:
        """Add ``f`` to ``count_filters`` and fill its ``filter_counts`` from
        the attempts, so that every attempt, whatever is written meanwhile,
        is counted exactly once; return its id (also when it was there
        already), or ``None`` when the account already has ``cap`` filters.
        A filter is read (:meth:`find_filters`) only once filled."""

    async def scan_count(self, cdn: int, where: AttemptFilter) -> int:
        """``COUNT(*)`` of the matching attempts through the best index."""


@dataclass(frozen=True, slots=True)
class FirstRead:
    """The bounded read a count makes first (of its first named column),
    unless a filter whose mask is in ``unless`` exists: the combination's
    own, or that value's alone."""

    f: ValueFilter
    column: str
    broad: Broad
    limit: int
    unless: frozenset[int]


async def find_then_bound(
    source: CountSource, filters: list[ValueFilter], first: FirstRead
) -> tuple[dict[int, int], tuple[int, int] | None]:
    """``CountSource.find_filters_then_bound`` as two statements."""
    known = await source.find_filters(filters)
    if known.keys() & first.unless:
        return known, None
    return known, await source.bounded_count(first.f, first.column, first.broad, first.limit)


async def count_attempts(source: CountSource, cdn: int, where: AttemptFilter) -> int:
    """The number of ``cdn``'s attempts matching ``where`` (see the module's
    docstring for how it is found). This is the one count that makes count
    filters (``sevu.errorcount``'s). An ``appinst`` filter is refused
    (``ValueError``): nothing counts by it."""
    check_countable(where, "count_attempts")
    found = await _from_rollups(source, cdn, where, fill=True)
    return await source.scan_count(cdn, where) if found is None else found


async def _from_rollups(
    source: CountSource, cdn: int, where: AttemptFilter, *, fill: bool
) -> int | None:
    """The count of ``where`` from rollups, count filters, or a read of at
    most :data:`BUSY_AT` entries of a named value that is not busy; ``None``
    when none of these answers and the attempts must be counted: a time range
    with anything but success, or a combination whose named values are all
    busy and that has no count filter. With ``fill``, such a combination (and
    each busy value alone) gets one first, so ``None`` then only means that
    the account has no room for another."""
    broad = broad_of(where)
    selective = value_filter(cdn, where)
    if timed(where):
        if selective is None and broad.grain == 0:
            return await _count_by_minutes(source, cdn, where, broad.success)
        return None
    if selective is None:
        return await source.sum_account_counts(cdn, broad)

    # The combination's own filter, and each named value's alone, and (in
    # the same round trip where the backend can) the first named value's
    # bounded read, which the loop below would make next.
    alone = {column: selective.alone(column) for column, _ in selective.named}
    first_column = selective.named[0][0]
    first = FirstRead(
        selective,
        first_column,
        broad,
        BUSY_AT + 1,
        frozenset({selective.mask, alone[first_column].mask}),
    )
    known, first_read = await source.find_filters_then_bound(
        [selective, *(f for f in alone.values() if f != selective)], first
    )
    filter_id = known.get(selective.mask)
    if filter_id is None:
        for column, _ in selective.named:
            # A value known to be busy alone (it has a count filter of its
            # own) is not worth reading up to BUSY_AT entries of.
            if alone[column].mask in known:
                continue
            if column == first_column:
                # Here neither mask of first.unless was found (the
                # combination's filter would be summed, the value's alone
                # skipped), so find_filters_then_bound made the read.
                assert first_read is not None
                read, matched = first_read
            else:
                read, matched = await source.bounded_count(selective, column, broad, first.limit)
            if read <= BUSY_AT:
                return matched
            if fill and alone[column] != selective:
                # Busy alone too: give the value its own filter now, so the
                # next combination naming it skips this read.
                await source.add_filter(alone[column], cap=MAX_FILTERS_PER_ACCOUNT)
        if not fill:
            return None
        filter_id = await source.add_filter(selective, cap=MAX_FILTERS_PER_ACCOUNT)
        if filter_id is None:
            log.warning(
                "Account %s has %s count filters already; counting a busy combination"
                " from the attempts instead (exact, slower).",
                cdn,
                MAX_FILTERS_PER_ACCOUNT,
            )
            return None
    return await source.sum_filter_counts(filter_id, broad)


async def _count_by_minutes(
    source: CountSource, cdn: int, where: AttemptFilter, success: bool | None
) -> int:
    # An open side of the range extends to the oldest or newest attempt;
    # 0 and 2**62 bound every stored time.
    split = split_minutes(
        0 if where.start is None else where.start, 2**62 if where.end is None else where.end
    )
    total = 0
    if split.first is not None and split.last is not None:
        total += await source.sum_minutes(cdn, split.first, split.last, success)
    for low, high in split.edges:
        total += await source.scan_count(cdn, AttemptFilter(success=success, start=low, end=high))
    return total


class TimelineSource(Protocol):
    """The statements a backend runs for :func:`attempt_timeline`."""

    async def minute_timeline(
        self, cdn: int, first: int, last: int, bucket: int
    ) -> list[TimelineBucket]:
        """``attempt_minutes`` for minutes ``first``..``last`` summed per
        bucket (a multiple of a minute)."""

    async def scan_timeline(
        self, cdn: int, where: AttemptFilter, bucket: int
    ) -> list[TimelineBucket]:
        """The matching attempts themselves counted per bucket."""


async def attempt_timeline(
    source: TimelineSource, cdn: int, where: AttemptFilter, bucket: int
) -> list[TimelineBucket]:
    """``Storage.attempt_timeline``: from ``attempt_minutes`` when the
    buckets are whole minutes and only the time is filtered (the overview's
    chart), with the partial minutes at the range's edges read from the
    attempts; from the attempts otherwise."""
    check_timeline_bounds(where, bucket)
    only_time = value_filter(cdn, where) is None and broad_of(where) == EVERYTHING
    if bucket % MINUTE or not only_time or where.start is None or where.end is None:
        return await source.scan_timeline(cdn, where, bucket)
    split = split_minutes(where.start, where.end)
    parts: list[TimelineBucket] = []
    if split.first is not None and split.last is not None:
        parts += await source.minute_timeline(cdn, split.first, split.last, bucket)
    for low, high in split.edges:
        parts += await source.scan_timeline(cdn, AttemptFilter(start=low, end=high), bucket)
    merged: dict[int, tuple[int, int]] = {}
    for part in parts:
        add_counts(merged, part.start, part.allowed, part.denied)
    return buckets_of(merged)


def add_counts(into: dict[int, tuple[int, int]], start: int, allowed: int, denied: int) -> None:
    """Add ``allowed`` and ``denied`` to the (allowed, denied) pair of ``start``."""
    was_allowed, was_denied = into.get(start, (0, 0))
    into[start] = (was_allowed + allowed, was_denied + denied)


def buckets_of(sums: Mapping[int, tuple[int, int]]) -> list[TimelineBucket]:
    """The buckets of ``sums`` (start -> (allowed, denied)) in order, empty ones left out."""
    return [
        TimelineBucket(start, allowed, denied)
        for start, (allowed, denied) in sorted(sums.items())
        if allowed or denied
    ]


def minute_tail_query(cdn: int, since: int, mark: str, *, deltas: bool) -> tuple[str, list[object]]:
    """``Storage.minute_tail`` as ONE statement, so that it reads one
    snapshot: rows of (minute, success, n), the minute NULL on the rows of
    the account's total (``attempt_counts`` at grain 0). With ``deltas``
    (PostgreSQL), each rollup's pending delta rows are added as well."""
    if since < 0 or since % MINUTE:
        raise ValueError(f"since must be a minute's start (a multiple of 60), got {since}.")
    minutes = f"SELECT minute, success, n FROM {{}} WHERE cdn = {mark} AND minute >= {mark}"
    totals = (
        f"SELECT NULL, success, n FROM {{}} WHERE cdn = {mark}"
        " AND grain = 0 AND app = '' AND video = ''"
    )
    parts = [(minutes, "attempt_minutes", [cdn, since]), (totals, "attempt_counts", [cdn])]
    if deltas:
        parts += [
            (minutes, "attempt_minute_deltas", [cdn, since]),
            (totals, "attempt_count_deltas", [cdn]),
        ]
    sql = " UNION ALL ".join(part.format(table) for part, table, _ in parts)
    return sql, [value for _, _, params in parts for value in params]


def minute_tail_of(rows: Iterable[tuple[Any, ...]]) -> MinuteTail:
    """The rows of :func:`minute_tail_query`, added up."""
    minutes: dict[int, tuple[int, int]] = {}
    total = (0, 0)
    for minute, success, n in rows:
        count = int(n)
        if minute is None:
            total = (total[0] + count, total[1]) if success else (total[0], total[1] + count)
            continue
        add_counts(minutes, int(minute), count if success else 0, 0 if success else count)
    # SQLite keeps a minute's row at 0 once its attempts are pruned.
    return MinuteTail({m: pair for m, pair in sorted(minutes.items()) if pair != (0, 0)}, total)


#: How many table rows a walk in id order reads for the cost of fetching one
#: row through an index (a guess; only the order of magnitude matters).
WALK_PER_FETCH: Final = 4


def sorting_is_cheaper(matches: int, total: int, page: Page, *, sparse: bool = False) -> bool:
    """Whether reading all ``matches`` of ``total`` attempts through an index
    and sorting them beats walking the table in id order until the page is
    full (about ``total / matches`` rows per match, the matches spread
    evenly). A sparse video's later pages would otherwise walk most of the
    table (2 s at 10 M attempts). ``sparse``: see :func:`walk_cost`."""
    walked = walk_cost(newer=0, matches=matches, total=total, page=page, sparse=sparse)
    return matches * WALK_PER_FETCH <= walked


def walk_cost(*, newer: int, matches: int, total: int, page: Page, sparse: bool = False) -> float:
    """The rows a walk of the table in id order (newest first) passes to
    reach the page: first the ``newer`` attempts logged after the range,
    then about ``total / matches`` rows per match (matches spread evenly
    over the log).

    ``sparse``: a filter no count knows (``appinst``) keeps an unknown part
    of the ``matches``, maybe none, so the walk may pass every attempt:
    ``total``. The index path reads its ``matches`` whatever that filter
    keeps, so a rare ``appinst`` with a key or an app reads those and no
    more."""
    if sparse:
        return float(total)
    return newer + (page.seek + page.rows) * total / max(matches, 1)


class CappedSource(CountSource, Protocol):
    async def capped_count(self, cdn: int, where: AttemptFilter, cap: int) -> int:
        """How many attempts match, reading no more than ``cap + 1`` of them."""


async def count_attempts_upto(
    source: CappedSource, cdn: int, where: AttemptFilter, cap: int
) -> int:
    """``Storage.count_attempts_upto``, the panel's count: the exact count
    when it is at most ``cap``, else ``cap + 1``.

    It never makes a count filter: filling one reads every attempt of a busy
    value, far more than the panel may read for one view. What the rollups
    and existing count filters answer (as for :func:`count_attempts`) is
    exact; anything else is a count that reads at most ``cap + 1`` matching
    attempts. An ``appinst`` filter is refused (``ValueError``), as in
    :func:`count_attempts`."""
    check_countable(where, "count_attempts_upto")
    found = await _from_rollups(source, cdn, where, fill=False)
    if found is None:
        return await source.capped_count(cdn, where, cap)
    return min(found, cap + 1)
