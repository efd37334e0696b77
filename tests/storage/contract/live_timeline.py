"""The storage contract: ``minute_tail``, and the live overview's timeline
(:mod:`usher.web.panel.live`) built on it, exact against a full read."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Final

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import DEMO_CDN, NOW, OTHER_CDN, make_ticket, request_for
from tests.storage.contract.base import ContractBase
from usher.storage.base import MinuteTail, Storage, TimelineBucket
from usher.tickets.decision import decide
from usher.tickets.model import Account, AttemptFilter
from usher.web.panel import live

TICKET: Final = make_ticket(key="live.1", password="p1", video="*", expire_at=NOW + 10**9)
#: Each Hypothesis example runs this far after the last one, on the same
#: storage: pruning in one example only deletes older examples' attempts.
#: Whole days, so that every example meets the same bucket boundaries.
EXAMPLE_SPAN: Final = 2 * 86400
_examples = itertools.count(1)


@dataclass
class Reads:
    """A storage as a refresh sees it, counting what it reads."""

    storage: Storage
    #: (since, minutes returned) of each ``minute_tail``.
    tails: list[tuple[int, int]] = field(default_factory=list)
    wholes: int = 0

    async def minute_tail(self, cdn: int, since: int) -> MinuteTail:
        tail = await self.storage.minute_tail(cdn, since)
        self.tails.append((since, len(tail.minutes)))
        return tail

    async def attempt_timeline(
        self, cdn: int, where: AttemptFilter, bucket: int
    ) -> list[TimelineBucket]:
        self.wholes += 1
        return await self.storage.attempt_timeline(cdn, where, bucket)


async def log_at(storage: Storage, ats: list[int], *, allowed: bool = True) -> None:
    password = TICKET.password if allowed else "bad"
    for at in ats:
        await storage.record_check(request_for(TICKET, password=password), decide, at)


async def prune(storage: Storage, before: int) -> int:
    gone = 0
    while went := await storage.prune_attempts(before, 1000):
        gone += went
    return gone


def range_of(end: int, span: int, bucket: int) -> int:
    """The first bucket of a range ending at ``end``, as the overview picks it."""
    first = end - span + 1
    return first - first % bucket


async def whole(storage: Storage, first: int, end: int, bucket: int) -> list[TimelineBucket]:
    """The timeline a full read gives: every minute up to the one holding ``end``."""
    last = end - end % 60 + 59
    return await storage.attempt_timeline(DEMO_CDN, AttemptFilter(start=first, end=last), bucket)


_STEP = st.one_of(
    # Attempts timed from three hours before the clock to 90 s after it
    # (another node's clock ahead), most of them near the clock.
    st.tuples(
        st.just("log"),
        st.one_of(st.integers(-150, 90), st.integers(-3 * 3600, 90)),
        st.booleans(),
        st.integers(1, 3),
    ),
    st.tuples(st.just("wait"), st.integers(0, 400)),
    st.tuples(st.just("prune"), st.integers(-3 * 3600, 0)),
    st.tuples(st.just("refresh")),
)


class LiveTimelineContract(ContractBase):
    """``minute_tail`` and the incremental timeline on every backend."""

    async def test_minute_tail_reads_from_a_minute_on_and_the_total(
        self, storage: Storage, demo: Account, other: Account
    ) -> None:
        await storage.insert_ticket(TICKET)
        other_ticket = make_ticket(key="o.1", cdn=OTHER_CDN, app="other-live", video="*")
        await storage.insert_ticket(other_ticket)
        await log_at(storage, [NOW + 5, NOW + 61, NOW + 62, NOW + 200])
        await log_at(storage, [NOW + 70, NOW + 3600], allowed=False)
        request = request_for(other_ticket, app="other-live")
        await storage.record_check(request, decide, NOW + 61)
        tail = await storage.minute_tail(DEMO_CDN, NOW + 60)
        # Later minutes too (NOW + 3600 is "the future" for a clock at NOW + 200).
        assert tail == MinuteTail(
            {NOW + 60: (2, 1), NOW + 180: (1, 0), NOW + 3600: (0, 1)}, total=(4, 2)
        )
        assert await storage.minute_tail(DEMO_CDN, NOW + 3660) == MinuteTail({}, (4, 2))
        assert await storage.minute_tail(999, 0) == MinuteTail({}, (0, 0))
        # Pruned attempts leave both the minutes and the total.
        assert await prune(storage, NOW + 62) == 3  # two of demo, one of other
        assert await storage.minute_tail(DEMO_CDN, 0) == MinuteTail(
            {NOW + 60: (1, 1), NOW + 180: (1, 0), NOW + 3600: (0, 1)}, total=(2, 2)
        )

    @pytest.mark.parametrize("since", [-60, NOW + 1, 59])
    async def test_minute_tail_refuses_a_since_that_is_not_a_minute(
        self, storage: Storage, demo: Account, since: int
    ) -> None:
        with pytest.raises(ValueError, match=r"multiple of 60.*\.$"):
            await storage.minute_tail(DEMO_CDN, since)

    async def test_a_refresh_reads_only_the_newest_minutes(
        self, storage: Storage, demo: Account
    ) -> None:
        await storage.insert_ticket(TICKET)
        span, bucket = 30 * 86400, 21600
        end = NOW + 40
        # A month of attempts, one a minute for the last day, some earlier.
        await log_at(storage, [end - 60 * i for i in range(0, 1440, 7)])
        await log_at(storage, [end - 86400 * d for d in range(1, 30)], allowed=False)
        reads = Reads(storage)
        first = range_of(end, span, bucket)
        got, held = await live.refresh(reads, DEMO_CDN, first, end, bucket, None, 0.0)
        assert got == await whole(storage, first, end, bucket)
        assert reads.wholes == 1
        for step in range(1, 8):
            end += 5  # a poll every five seconds, across a minute boundary
            # One just now, one committed 40 s after its check arrived (a
            # slow writer): the tail re-reads it, no need for the range.
            await log_at(storage, [end - 1, end - 40])
            reads = Reads(storage)
            first = range_of(end, span, bucket)
            got, held = await live.refresh(reads, DEMO_CDN, first, end, bucket, held, step * 5.0)
            assert got == await whole(storage, first, end, bucket)
            # One read: from the last refresh's settled minute on, that is
            # the two-minute tail and the new minute (at most four minutes'
            # rows of the 43,200 the range holds); never the range again.
            assert reads.wholes == 0
            ((since, minutes),) = reads.tails
            assert end - since <= live.TAIL + 60 + 5
            assert minutes <= 4

    async def test_a_pruned_minute_inside_the_range_is_read_again(
        self, storage: Storage, demo: Account
    ) -> None:
        await storage.insert_ticket(TICKET)
        end, span, bucket = NOW + 7200, 7200, 60
        await log_at(storage, [NOW + 30, NOW + 600, NOW + 601, end - 10])
        first = range_of(end, span, bucket)
        _, held = await live.refresh(storage, DEMO_CDN, first, end, bucket, None, 0.0)
        assert await prune(storage, NOW + 601) == 2
        reads = Reads(storage)
        got, _ = await live.refresh(reads, DEMO_CDN, first, end + 5, bucket, held, 5.0)
        assert got == await whole(storage, first, end + 5, bucket)
        assert reads.wholes == 1

    async def test_a_late_write_and_a_prune_that_cancel_show_within_full_every(
        self, storage: Storage, demo: Account
    ) -> None:
        # The one change the totals cannot see; the periodic full read
        # bounds how long it shows (the docs state the bound).
        await storage.insert_ticket(TICKET)
        end, span, bucket = NOW + 7200, 7200, 60
        await log_at(storage, [NOW - 100, end - 10])
        first = range_of(end, span, bucket)
        _, held = await live.refresh(storage, DEMO_CDN, first, end, bucket, None, 0.0)
        await log_at(storage, [end - 1800])  # half an hour late
        assert await prune(storage, NOW) == 1
        got, held = await live.refresh(storage, DEMO_CDN, first, end, bucket, held, 5.0)
        assert got != await whole(storage, first, end, bucket)
        later = live.FULL_EVERY + 1
        got, _ = await live.refresh(storage, DEMO_CDN, first, end, bucket, held, later)
        assert got == await whole(storage, first, end, bucket)

    @settings(
        max_examples=100,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(
        steps=st.lists(_STEP, min_size=1, max_size=24),
        bucket=st.sampled_from([60, 300, 900]),
        second=st.integers(0, 59),
    )
    async def test_the_incremental_timeline_is_the_full_one(
        self,
        storage: Storage,
        demo: Account,
        steps: list[tuple[object, ...]],
        bucket: int,
        second: int,
    ) -> None:
        if await storage.get_ticket(DEMO_CDN, TICKET.key) is None:
            await storage.insert_ticket(TICKET)
        span = 3 * 3600
        base = NOW + next(_examples) * EXAMPLE_SPAN
        clock = base + second
        held: live.Settled | None = None
        # An insert before the settled minute and a prune between the same
        # two refreshes may cancel in the totals (see the module docstring
        # of usher.web.panel.live): only then may a bar be off, and only
        # until the next full read.
        late = pruned = tainted = False
        for step in [*steps, ("refresh",)]:
            match step:
                case ("log", int(offset), bool(allowed), int(count)):
                    at = clock + offset
                    await log_at(storage, [at] * count, allowed=allowed)
                    late |= held is not None and at < held.settled
                case ("wait", int(seconds)):
                    clock += seconds
                case ("prune", int(offset)):
                    pruned |= await prune(storage, clock + offset) > 0
                case _:
                    reads = Reads(storage)
                    first = range_of(clock, span, bucket)
                    got, keep = await live.refresh(
                        reads, DEMO_CDN, first, clock, bucket, held, float(clock)
                    )
                    tainted = (tainted or (late and pruned)) and not reads.wholes
                    expected = await whole(storage, first, clock, bucket)
                    assert got == expected or tainted, (got, expected)
                    if reads.wholes == 0 and held is not None:
                        assert [since for since, _ in reads.tails] == [held.settled]
                    held, late, pruned = keep, False, False
