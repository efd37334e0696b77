"""The storage contract: what the control panel's explorer and overview read
at scale (issue 13): id cursors, capped counts, the latest denials, and
reads bounded in time."""

from __future__ import annotations

import time

import pytest

from tests.helpers import DEMO_CDN, NOW, OTHER_CDN
from tests.storage.contract.attempt_log import ATTEMPT_FILTERS, LOG_ROWS, AttemptLogFixture
from usher.storage.base import (
    MAX_COUNT_CAP,
    MAX_RECENT_DENIALS,
    ReadBoundExceeded,
    Storage,
    bounded_reads,
)
from usher.tickets.model import Account, AttemptFilter, Page, Reason

_FILTERS = [(where, expected) for _, where, expected in ATTEMPT_FILTERS]
_IDS = [name for name, _, _ in ATTEMPT_FILTERS]


class ExplorerContract(AttemptLogFixture):
    """Cursor paging, capped counts, recent denials and bounded reads."""

    @pytest.mark.parametrize(("where", "expected"), _FILTERS, ids=_IDS)
    async def test_before_a_cursor_lists_older_attempts_newest_first(
        self,
        storage: Storage,
        attempt_log: list[int],
        where: AttemptFilter,
        expected: list[int],
    ) -> None:
        ids = [attempt_log[i] for i in expected]
        for cursor in {*attempt_log, attempt_log[-1] + 1}:
            got = await storage.list_attempts(
                DEMO_CDN, where, Page(limit=2), newest_first=True, before=cursor
            )
            assert [a.id for a in got] == sorted((i for i in ids if i < cursor), reverse=True)[:2]

    @pytest.mark.parametrize(("where", "expected"), _FILTERS, ids=_IDS)
    async def test_after_a_cursor_lists_newer_attempts_oldest_first(
        self,
        storage: Storage,
        attempt_log: list[int],
        where: AttemptFilter,
        expected: list[int],
    ) -> None:
        ids = [attempt_log[i] for i in expected]
        for cursor in {*attempt_log, 0}:
            got = await storage.list_attempts(DEMO_CDN, where, Page(limit=2), after=cursor)
            assert [a.id for a in got] == sorted(i for i in ids if i > cursor)[:2]

    async def test_paging_by_cursor_visits_every_attempt_once(
        self, storage: Storage, attempt_log: list[int]
    ) -> None:
        seen: list[int] = []
        cursor: int | None = None
        while True:
            page = await storage.list_attempts(
                DEMO_CDN, AttemptFilter(), Page(limit=2), newest_first=True, before=cursor
            )
            if not page:
                break
            seen += [a.id for a in page]
            cursor = page[-1].id
        assert seen == sorted((attempt_log[i] for i in (0, 1, 2, 3, 5)), reverse=True)

    async def test_a_cursor_is_one_bound_or_the_other(
        self, storage: Storage, attempt_log: list[int]
    ) -> None:
        with pytest.raises(ValueError, match=r"\.$"):
            await storage.list_attempts(DEMO_CDN, AttemptFilter(), Page(), before=5, after=1)

    @pytest.mark.parametrize("cap", [1, 2, 3, 10])
    @pytest.mark.parametrize(("where", "expected"), _FILTERS, ids=_IDS)
    async def test_count_upto_is_exact_up_to_the_cap(
        self,
        storage: Storage,
        attempt_log: list[int],
        where: AttemptFilter,
        expected: list[int],
        cap: int,
    ) -> None:
        assert await storage.count_attempts_upto(DEMO_CDN, where, cap) == min(
            len(expected), cap + 1
        )

    @pytest.mark.parametrize("cap", [0, -1, MAX_COUNT_CAP + 1])
    async def test_count_upto_refuses_an_unbounded_cap(
        self, storage: Storage, demo: Account, cap: int
    ) -> None:
        with pytest.raises(ValueError, match=r"\.$"):
            await storage.count_attempts_upto(DEMO_CDN, AttemptFilter(), cap)

    async def test_recent_denials_are_the_latest_denied_in_range(
        self, storage: Storage, attempt_log: list[int]
    ) -> None:
        denied = [
            (Reason.INVALID_APPLICATION.value, "10.0.0.3", "k2"),
            (Reason.INVALID_AUTH_TOKEN.value, "10.0.0.1", "k1"),
        ]
        whole = (NOW, NOW + 60)
        assert await storage.recent_denials(DEMO_CDN, *whole, 10) == denied
        assert await storage.recent_denials(DEMO_CDN, *whole, 1) == denied[:1]
        # Inclusive bounds: LOG_ROWS[1] is at NOW + 10, LOG_ROWS[3] at NOW + 30.
        assert await storage.recent_denials(DEMO_CDN, NOW + 10, NOW + 29, 10) == denied[1:]
        assert await storage.recent_denials(DEMO_CDN, NOW + 11, NOW + 30, 10) == denied[:1]
        # The other account's only attempt (LOG_ROWS[4]) was allowed.
        assert LOG_ROWS[4][1] == "k3"
        assert await storage.recent_denials(OTHER_CDN, *whole, 10) == []

    @pytest.mark.parametrize("limit", [0, MAX_RECENT_DENIALS + 1])
    async def test_recent_denials_refuse_an_unbounded_limit(
        self, storage: Storage, demo: Account, limit: int
    ) -> None:
        with pytest.raises(ValueError, match=r"\.$"):
            await storage.recent_denials(DEMO_CDN, NOW, NOW + 60, limit)

    async def test_reads_within_their_bound_answer(
        self, storage: Storage, attempt_log: list[int]
    ) -> None:
        with bounded_reads(30):
            assert await storage.count_attempts(DEMO_CDN, AttemptFilter()) == 5
            assert len(await storage.list_attempts(DEMO_CDN, AttemptFilter(), Page())) == 5
        # The bound ends with its block.
        assert await storage.count_attempts(DEMO_CDN, AttemptFilter()) == 5

    async def test_a_read_past_its_bound_is_stopped_but_writes_are_not(
        self, storage: Storage, attempt_log: list[int]
    ) -> None:
        with bounded_reads(0.001) as bound:
            time.sleep(0.002)
            with pytest.raises(ReadBoundExceeded) as stopped:
                await storage.count_attempts(DEMO_CDN, AttemptFilter())
            assert stopped.value.seconds == bound.seconds
            # A write is never cut short.
            assert await storage.revoke_ticket(DEMO_CDN, "k1", now=NOW)
        ticket = await storage.get_ticket(DEMO_CDN, "k1")
        assert ticket is not None and not ticket.active
