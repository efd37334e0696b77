"""The storage contract: attempt statistics (``attempt_timeline``, ``top_attempt_values``)."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from tests.helpers import DEMO_CDN, NOW, OTHER_CDN, make_ticket, request_for
from tests.storage.contract.attempt_log import ATTEMPT_FILTERS, LOG_ROWS, AttemptLogFixture
from usher.storage.base import MAX_TIMELINE_BUCKETS, MAX_TOP_VALUES, Storage, TimelineBucket
from usher.tickets.decision import decide
from usher.tickets.model import Account, AttemptFilter, Reason


class StatisticsContract(AttemptLogFixture):
    """Attempt statistics: timeline buckets and top values, bounded and per account."""

    @pytest.mark.parametrize("bucket", [1, 7, 20, 60, 120, 3600])
    @pytest.mark.parametrize(
        ("where", "expected"),
        [(where, expected) for _, where, expected in ATTEMPT_FILTERS],
        ids=[name for name, _, _ in ATTEMPT_FILTERS],
    )
    async def test_timeline_counts_each_bucket(
        self,
        storage: Storage,
        attempt_log: list[int],
        where: AttemptFilter,
        expected: list[int],
        bucket: int,
    ) -> None:
        # The timeline needs a bounded range; default to the whole log's.
        bounded = dataclasses.replace(
            where,
            start=NOW if where.start is None else where.start,
            end=NOW + 60 if where.end is None else where.end,
        )
        allowed = {0, 2, 4, 5}
        counts: dict[int, list[int]] = {}
        for i in expected:
            at = LOG_ROWS[i][0]
            slot = counts.setdefault(at - at % bucket, [0, 0])
            slot[0 if i in allowed else 1] += 1
        timeline = await storage.attempt_timeline(DEMO_CDN, bounded, bucket)
        assert timeline == [TimelineBucket(start, a, d) for start, (a, d) in sorted(counts.items())]
        assert sum(b.allowed + b.denied for b in timeline) == len(expected)

    async def test_minute_timelines_match_the_log_at_any_edges(
        self, storage: Storage, demo: Account
    ) -> None:
        # Attempts every 37 s over about 15 minutes, a third of them denied:
        # ranges that start and end inside minutes read their edges from the
        # log and the whole minutes from the per-minute rollup.
        ticket = make_ticket(key="k1", password="p1", video="*")
        await storage.insert_ticket(ticket)
        ats = [NOW + 37 * i for i in range(25)]
        for i, at in enumerate(ats):
            password = "p1" if i % 3 else "bad"
            await storage.record_check(request_for(ticket, password=password), decide, at)
        offsets = [(0, 900), (13, 887), (59, 61), (61, 119), (100, 100), (-600, 5000)]
        for start, end in ((NOW + low, NOW + high) for low, high in offsets):
            for bucket in (60, 300):
                counts: dict[int, list[int]] = {}
                for i, at in enumerate(ats):
                    if start <= at <= end:
                        slot = counts.setdefault(at - at % bucket, [0, 0])
                        slot[0 if i % 3 else 1] += 1
                where = AttemptFilter(start=start, end=end)
                timeline = await storage.attempt_timeline(DEMO_CDN, where, bucket)
                expected = [TimelineBucket(b, a, d) for b, (a, d) in sorted(counts.items())]
                assert timeline == expected, (start, end, bucket)
                total = sum(a + d for a, d in counts.values())
                assert await storage.count_attempts(DEMO_CDN, where) == total
                denied = dataclasses.replace(where, success=False)
                assert await storage.count_attempts(DEMO_CDN, denied) == sum(
                    d for _, d in counts.values()
                )

    async def test_timeline_is_isolated_by_account(
        self, storage: Storage, attempt_log: list[int]
    ) -> None:
        whole = AttemptFilter(start=NOW, end=NOW + 60)
        assert await storage.attempt_timeline(OTHER_CDN, whole, 60) == [
            TimelineBucket(NOW + 40 - (NOW + 40) % 60, 1, 0)
        ]
        assert await storage.attempt_timeline(999, whole, 60) == []

    @pytest.mark.parametrize(
        ("where", "bucket"),
        [
            (AttemptFilter(end=NOW), 60),
            (AttemptFilter(start=NOW), 60),
            (AttemptFilter(start=NOW, end=NOW + 60), 0),
            (AttemptFilter(start=NOW, end=NOW + 60), -5),
            (AttemptFilter(start=NOW, end=NOW + MAX_TIMELINE_BUCKETS * 60), 60),
        ],
        ids=["no-start", "no-end", "zero-bucket", "negative-bucket", "too-many-buckets"],
    )
    async def test_timeline_refuses_unbounded_requests(
        self, storage: Storage, demo: Account, where: AttemptFilter, bucket: int
    ) -> None:
        with pytest.raises(ValueError, match=r"\.$"):
            await storage.attempt_timeline(DEMO_CDN, where, bucket)

    async def test_timeline_accepts_the_largest_bounded_range(
        self, storage: Storage, demo: Account
    ) -> None:
        start = NOW - NOW % 60
        where = AttemptFilter(start=start, end=start + MAX_TIMELINE_BUCKETS * 60 - 1)
        assert await storage.attempt_timeline(DEMO_CDN, where, 60) == []

    @pytest.mark.parametrize(
        ("column", "where", "limit", "expected"),
        [
            ("ip", AttemptFilter(), 10, [("10.0.0.1", 2), ("10.0.0.2", 2), ("10.0.0.3", 1)]),
            ("ip", AttemptFilter(), 1, [("10.0.0.1", 2)]),
            ("key", AttemptFilter(), 10, [("k1", 3), ("k2", 2)]),
            ("key", AttemptFilter(success=False), 10, [("k1", 1), ("k2", 1)]),
            (
                "reason",
                AttemptFilter(success=False),
                10,
                [(Reason.INVALID_APPLICATION.value, 1), (Reason.INVALID_AUTH_TOKEN.value, 1)],
            ),
            ("reason", AttemptFilter(success=True), 10, [("", 3)]),
            ("app", AttemptFilter(), 10, [("demo-live", 4), ("demo-vod", 1)]),
            ("video", AttemptFilter(start=NOW + 20, end=NOW + 30), 10, [("b", 2)]),
            ("ip", AttemptFilter(key="nope"), 10, []),
        ],
        ids=[
            "ip",
            "ip-limit",
            "key",
            "key-denied",
            "reason-denied",
            "reason-allowed",
            "app",
            "video-range",
            "no-match",
        ],
    )
    async def test_top_values_count_and_order(
        self,
        storage: Storage,
        attempt_log: list[int],
        column: Any,
        where: AttemptFilter,
        limit: int,
        expected: list[tuple[str, int]],
    ) -> None:
        assert await storage.top_attempt_values(DEMO_CDN, where, column, limit) == expected

    async def test_top_values_are_isolated_by_account(
        self, storage: Storage, attempt_log: list[int]
    ) -> None:
        assert await storage.top_attempt_values(OTHER_CDN, AttemptFilter(), "key", 10) == [
            ("k3", 1)
        ]
        assert await storage.top_attempt_values(999, AttemptFilter(), "key", 10) == []

    @pytest.mark.parametrize("limit", [0, -1, MAX_TOP_VALUES + 1])
    async def test_top_values_refuse_an_unbounded_limit(
        self, storage: Storage, demo: Account, limit: int
    ) -> None:
        with pytest.raises(ValueError, match=r"\.$"):
            await storage.top_attempt_values(DEMO_CDN, AttemptFilter(), "ip", limit)

    async def test_top_values_cap_many_distinct_values(
        self, storage: Storage, demo: Account
    ) -> None:
        ticket = make_ticket()
        await storage.insert_ticket(ticket)
        checks = [
            storage.record_check(request_for(ticket, ip=f"10.1.0.{i}"), decide, NOW + i)
            for i in range(MAX_TOP_VALUES + 20)
        ]
        await asyncio.gather(*checks)
        top = await storage.top_attempt_values(DEMO_CDN, AttemptFilter(), "ip", MAX_TOP_VALUES)
        assert len(top) == MAX_TOP_VALUES
        # All counts tie at 1, so values come in ascending order.
        assert [value for value, _ in top] == sorted(value for value, _ in top)
