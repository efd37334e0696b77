"""The storage contract: listing and counting attempts (``list_attempts``, ``count_attempts``)."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import anyio
import pytest

from tests.helpers import CLIENT, DEMO_CDN, NOW, OTHER_CDN, make_ticket, request_for
from tests.storage.contract.attempt_log import (
    ATTEMPT_FILTERS,
    DEMO_ROWS,
    LOG_ROWS,
    AttemptLogFixture,
)
from tests.storage.contract.base import HANG_LIMIT_S, OVER_CAP
from usher.storage.base import Storage
from usher.tickets.decision import decide
from usher.tickets.model import (
    MAX_PAGE_ROWS,
    Account,
    Attempt,
    AttemptFilter,
    CheckRequest,
    Page,
    Reason,
)


class AttemptsContract(AttemptLogFixture):
    """The attempt log: filters, paging, order, account isolation and exact counts."""

    @pytest.mark.parametrize(
        ("where", "expected"),
        [(where, expected) for _, where, expected in ATTEMPT_FILTERS],
        ids=[name for name, _, _ in ATTEMPT_FILTERS],
    )
    async def test_attempt_filters(
        self,
        storage: Storage,
        attempt_log: list[int],
        where: AttemptFilter,
        expected: list[int],
    ) -> None:
        attempts = await storage.list_attempts(DEMO_CDN, where, Page())
        # Oldest first.
        assert [a.id for a in attempts] == [attempt_log[i] for i in expected]
        assert [a.at for a in attempts] == [LOG_ROWS[i][0] for i in expected]
        assert all(a.cdn == DEMO_CDN for a in attempts)
        assert await storage.count_attempts(DEMO_CDN, where) == len(expected)

    async def test_attempt_success_and_reason_are_logged(
        self, storage: Storage, attempt_log: list[int]
    ) -> None:
        attempts = await storage.list_attempts(DEMO_CDN, AttemptFilter(), Page())
        assert [(a.success, a.reason) for a in attempts] == [
            (True, ""),
            (False, Reason.INVALID_AUTH_TOKEN.value),
            (True, ""),
            (False, Reason.INVALID_APPLICATION.value),
            (True, ""),
        ]

    @pytest.mark.parametrize(
        ("page", "expected"),
        [
            (Page(limit=2), [0, 1]),
            (Page(limit=2, seek=2), [2, 3]),
            (Page(limit=2, seek=4), [5]),
            (Page(seek=3), [3, 5]),
            (Page(seek=5), []),
            (Page(limit=0), []),
            (Page(limit=50), DEMO_ROWS),
        ],
        ids=["limit", "seek", "last", "seek-only", "seek-to-end", "zero", "big"],
    )
    async def test_attempt_pages(
        self, storage: Storage, attempt_log: list[int], page: Page, expected: list[int]
    ) -> None:
        attempts = await storage.list_attempts(DEMO_CDN, AttemptFilter(), page)
        assert [a.id for a in attempts] == [attempt_log[i] for i in expected]
        # Paging applies after filtering.
        failed = await storage.list_attempts(DEMO_CDN, AttemptFilter(success=False), Page(seek=1))
        assert [a.id for a in failed] == [attempt_log[3]]

    async def test_attempts_are_isolated_by_account(
        self, storage: Storage, attempt_log: list[int]
    ) -> None:
        attempts = await storage.list_attempts(OTHER_CDN, AttemptFilter(), Page())
        assert [a.id for a in attempts] == [attempt_log[4]]
        assert await storage.count_attempts(OTHER_CDN, AttemptFilter()) == 1
        assert await storage.count_attempts(OTHER_CDN, AttemptFilter(key="k1")) == 0
        assert await storage.list_attempts(999, AttemptFilter(), Page()) == []
        assert await storage.count_attempts(999, AttemptFilter()) == 0

    @pytest.mark.parametrize("page", [Page(), Page(limit=10**12)], ids=["no-limit", "huge-limit"])
    @pytest.mark.parametrize("newest_first", [False, True], ids=["oldest-first", "newest-first"])
    async def test_attempt_list_holds_at_most_max_page_rows(
        self, storage: Storage, demo: Account, page: Page, newest_first: bool
    ) -> None:
        ticket = make_ticket(key="busy")
        await storage.insert_ticket(ticket)
        outcomes = await asyncio.gather(
            *(storage.record_check(request_for(ticket), decide, NOW) for _ in range(OVER_CAP))
        )
        ids = sorted(outcome.attempt_id for outcome in outcomes)
        if newest_first:
            ids.reverse()
        where = AttemptFilter(key="busy")
        assert await storage.count_attempts(DEMO_CDN, where) == OVER_CAP
        first = await storage.list_attempts(DEMO_CDN, where, page, newest_first=newest_first)
        assert [a.id for a in first] == ids[:MAX_PAGE_ROWS]
        rest = await storage.list_attempts(
            DEMO_CDN,
            where,
            dataclasses.replace(page, seek=MAX_PAGE_ROWS),
            newest_first=newest_first,
        )
        assert [a.id for a in rest] == ids[MAX_PAGE_ROWS:]

    async def test_attempts_newest_first(self, storage: Storage, attempt_log: list[int]) -> None:
        newest = await storage.list_attempts(DEMO_CDN, AttemptFilter(), Page(), newest_first=True)
        assert [a.id for a in newest] == [attempt_log[i] for i in reversed(DEMO_ROWS)]
        # Paging counts from the newest end, after filtering.
        page = await storage.list_attempts(
            DEMO_CDN, AttemptFilter(key="k1"), Page(limit=2, seek=1), newest_first=True
        )
        assert [a.id for a in page] == [attempt_log[1], attempt_log[0]]

    # -- errorcount: every filter combination ----------------------------------------

    @pytest.fixture
    async def varied_log(self, storage: Storage, demo: Account, other: Account) -> list[Attempt]:
        """A few dozen attempts over several apps, videos, addresses, passes
        and outcomes, in both accounts and unattributed; demo's, oldest first."""
        tickets = [
            make_ticket(key="va", password="pa", app="demo-*", video="v1|v2"),
            make_ticket(key="vb", password="pb", app="demo-live", video="*", uses=3),
            make_ticket(key="vc", cdn=OTHER_CDN, password="pc", app="other-*", video="v1"),
        ]
        for ticket in tickets:
            await storage.insert_ticket(ticket)
        apps = ["demo-live", "demo-vod", "", "other-live", "nobody-live"]
        for i in range(60):
            ticket = tickets[i % 3]
            request = CheckRequest(
                key=ticket.key if i % 11 else "unknown",
                password=ticket.password if i % 7 else "wrong",
                app=apps[(i * 7) % 5] if i % 4 == 0 else apps[i % 2],
                video=f"v{i % 3}",
                ip=f"10.0.0.{i % 4}",
            )
            await storage.record_check(request, decide, NOW + i)
        return await storage.list_attempts(DEMO_CDN, AttemptFilter(), Page())

    async def test_counts_match_the_log_for_every_filter_combination(
        self, storage: Storage, varied_log: list[Attempt]
    ) -> None:
        assert {a.success for a in varied_log} == {True, False}
        assert len({(a.app, a.video) for a in varied_log}) > 3
        names = ["key", "password", "app", "video", "ip", "success"]
        # Values from real attempts (so most combinations match something),
        # plus one that matches nothing.
        samples = [varied_log[0], varied_log[len(varied_log) // 2], varied_log[-1]]
        bounds = [(None, None), (NOW + 10, None), (None, NOW + 30), (NOW + 20, NOW + 20)]
        for mask in range(64):
            for sample in samples:
                chosen = {n: getattr(sample, n) for i, n in enumerate(names) if mask >> i & 1}
                for start, end in bounds:
                    where = AttemptFilter(**chosen, start=start, end=end)
                    expected = len(await storage.list_attempts(DEMO_CDN, where, Page()))
                    assert await storage.count_attempts(DEMO_CDN, where) == expected, where
            if mask:
                missing: dict[str, Any] = {
                    n: "no-such-value" for i, n in enumerate(names[:5]) if mask >> i & 1
                }
                if missing:
                    where = AttemptFilter(**missing)
                    assert await storage.count_attempts(DEMO_CDN, where) == 0

    async def test_counts_of_an_empty_app_or_video_are_exact(
        self, storage: Storage, varied_log: list[Attempt]
    ) -> None:
        # An empty string is a value like any other at this layer (the API
        # turns empty filters into None before it gets here).
        empty_app = sum(1 for a in varied_log if a.app == "")
        assert empty_app > 0
        assert await storage.count_attempts(DEMO_CDN, AttemptFilter(app="")) == empty_app
        assert await storage.count_attempts(DEMO_CDN, AttemptFilter(video="")) == 0

    async def test_counts_stay_exact_under_concurrent_checks(
        self, storage: Storage, demo: Account, other: Account
    ) -> None:
        limited = make_ticket(key="lim", uses=7, video="*")
        unlimited = make_ticket(key="unl", video="v1|v2")
        foreign = make_ticket(key="for", cdn=OTHER_CDN, app="other-*", video="*")
        for ticket in (limited, unlimited, foreign):
            await storage.insert_ticket(ticket)
        requests = [
            CheckRequest(
                key=(limited, unlimited, foreign)[i % 3].key,
                password="pw",
                app="other-live" if i % 3 == 2 else ("demo-live", "demo-vod")[i % 2],
                video=f"v{i % 4}",
                ip=CLIENT,
            )
            for i in range(300)
        ]
        with anyio.fail_after(HANG_LIMIT_S * 5):
            await asyncio.gather(*(storage.record_check(r, decide, NOW) for r in requests))
        logged = await storage.list_attempts(DEMO_CDN, AttemptFilter(), Page())
        assert len(logged) == 200
        for app in (None, "demo-live", "demo-vod"):
            for video in (None, "v0", "v1", "v3"):
                for success in (None, True, False):
                    where = AttemptFilter(app=app, video=video, success=success)
                    expected = sum(
                        1
                        for a in logged
                        if (app is None or a.app == app)
                        and (video is None or a.video == video)
                        and (success is None or a.success == success)
                    )
                    assert await storage.count_attempts(DEMO_CDN, where) == expected, where
        limited_plays = AttemptFilter(key="lim", success=True)
        assert await storage.count_attempts(DEMO_CDN, limited_plays) == 7
        assert await storage.count_attempts(OTHER_CDN, AttemptFilter()) == 100
