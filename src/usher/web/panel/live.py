"""The overview's timeline, refreshed at the cost of its newest minutes.

A chart's bars are sums of the per-minute rollup (``attempt_minutes``):
43,200 rows for 30 days, read again at every refresh of every open
overview. Only the last minutes still change, so per (account, range) this
module keeps the bars' sums of the *settled* minutes, those before
``settled``, and a refresh reads (:meth:`Storage.minute_tail`) only the
minutes from ``settled`` on, and the account's total, in one statement.

Which minutes still change: an attempt is timed when its check arrives and
commits after the writer's queue and transaction. The queue takes no new
write once its oldest has waited ``USHER_MAX_WRITE_WAIT_MS`` (0.5 s); a
transaction waits at most SQLite's 5 s busy timeout or PostgreSQL's
statement timeout (10 s by default); a batch is committed before any of its
checks is answered. So a minute stops changing some seconds after it ends,
and :data:`TAIL` (two minutes, re-read at every refresh) leaves a wide
margin, also for nodes whose clocks differ by less than a minute.

Everything else that can change a settled minute changes the account's
total by more than the tail explains: a write later than the tail (a node
whose clock is minutes behind, a stalled transaction), pruning (the
server's pruner, or ``usher db prune`` in another process, may delete
attempts inside a 30-day range), loading attempts (``usher db copy`` or
``seed-data``). So each refresh checks that the total minus the re-read
minutes (every attempt before ``settled``) is what it was at the last read,
allowed and denied apart, and reads the whole range again when it is not.
The one change this check cannot see is an insert and a delete that cancel
exactly between two refreshes (a late write and a pruned attempt of the same
outcome); the whole range is read again every :data:`FULL_EVERY` seconds in
any case, which bounds how long such a bar can be off.

Memory: one entry per (account, range), at most the overview's ``MAX_BARS``-odd bucket
sums and a few integers each (a few kB), and at most ``size`` entries.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Final, Protocol

from usher.storage.base import MinuteTail, TimelineBucket
from usher.storage.counting import MINUTE, add_counts, buckets_of
from usher.tickets.model import AttemptFilter

#: Seconds before the current minute's start that every refresh reads again
#: (see the module docstring for why two minutes are plenty).
TAIL: Final = 2 * MINUTE
#: Seconds after which a refresh reads the whole range again regardless.
FULL_EVERY: Final = 300.0


class TimelineReads(Protocol):
    """The two reads of :class:`~usher.storage.base.Storage` a refresh uses."""

    async def minute_tail(self, cdn: int, since: int) -> MinuteTail: ...

    async def attempt_timeline(
        self, cdn: int, where: AttemptFilter, bucket: int
    ) -> list[TimelineBucket]: ...


@dataclass(frozen=True, slots=True)
class Settled:
    """What a refresh keeps of the last read of one (account, range)."""

    bucket: int
    #: The range's first bucket when this was read.
    first: int
    #: The first minute not folded into ``bars``; the next refresh reads from here.
    settled: int
    #: Bucket start -> (allowed, denied) of the minutes from ``first`` to
    #: before ``settled``; buckets without attempts are left out.
    bars: Mapping[int, tuple[int, int]]
    #: (allowed, denied) of every attempt of the account before ``settled``.
    before: tuple[int, int]
    #: The clock when the whole range was last read.
    full_at: float


def _before(tail: MinuteTail, since: int) -> tuple[int, int]:
    """The account's attempts before minute ``since``: its total less the
    tail's minutes from ``since`` on."""
    allowed, denied = tail.total
    for minute, (a, d) in tail.minutes.items():
        if minute >= since:
            allowed, denied = allowed - a, denied - d
    return allowed, denied


async def refresh(
    storage: TimelineReads,
    cdn: int,
    first: int,
    end: int,
    bucket: int,
    held: Settled | None,
    now: float,
) -> tuple[list[TimelineBucket], Settled]:
    """The timeline of ``cdn``'s attempts from ``first`` (a bucket's start;
    ``bucket`` a whole number of minutes) through the minute holding ``end``,
    as :meth:`Storage.attempt_timeline` counts it, and what to keep for the
    next refresh. ``held`` is what the last call returned (or ``None``);
    ``now`` the clock, for :data:`FULL_EVERY`."""
    last = end - end % MINUTE
    settle = max(first, last - TAIL)
    whole = (
        held is None
        or held.bucket != bucket
        or not held.first <= first <= held.settled <= settle
        or not 0 <= now - held.full_at < FULL_EVERY
    )
    bars: dict[int, tuple[int, int]]
    if held is not None and not whole:
        tail = await storage.minute_tail(cdn, held.settled)
        whole = _before(tail, held.settled) != held.before
    if held is None or whole:
        # The tail and the total first, then the settled minutes: an attempt
        # committed or pruned between the two reads is in the bars but not in
        # ``before``, so the next refresh sees the difference and reads the
        # whole range again (the other order would hide it for good).
        tail = await storage.minute_tail(cdn, settle)
        bars = {}
        if settle > first:
            closed = AttemptFilter(start=first, end=settle - 1)
            for part in await storage.attempt_timeline(cdn, closed, bucket):
                bars[part.start] = (part.allowed, part.denied)
        full_at = now
    else:
        bars = {start: pair for start, pair in held.bars.items() if start >= first}
        for minute, pair in tail.minutes.items():
            if first <= minute < settle:
                add_counts(bars, minute - minute % bucket, *pair)
        full_at = held.full_at
    keep = Settled(bucket, first, settle, bars, _before(tail, settle), full_at)
    shown = dict(bars)
    for minute, pair in tail.minutes.items():
        if settle <= minute <= last:
            add_counts(shown, minute - minute % bucket, *pair)
    return buckets_of(shown), keep


class LiveTimelines:
    """The :class:`Settled` of at most ``size`` (account, range) pairs, least
    recently used dropped first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._held: OrderedDict[Hashable, Settled] = OrderedDict()

    def __len__(self) -> int:
        return len(self._held)

    async def timeline(
        self,
        key: Hashable,
        storage: TimelineReads,
        cdn: int,
        first: int,
        end: int,
        bucket: int,
        now: float,
    ) -> list[TimelineBucket]:
        timeline, keep = await refresh(storage, cdn, first, end, bucket, self._held.get(key), now)
        # Two refreshes of one key may overlap (the charts' cache starts a
        # new one once the last is stale); each keeps a state derived from
        # its own reads, so whichever lands last is a correct start.
        self._held[key] = keep
        self._held.move_to_end(key)
        while len(self._held) > self.size:
            self._held.popitem(last=False)
        return timeline
