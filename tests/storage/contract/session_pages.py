"""The storage contract: what the control panel's sessions page reads at
scale (issue 14): cursor pages of the session history and a capped count,
as the attempts explorer reads the attempt log."""

from __future__ import annotations

import pytest

from tests.helpers import DEMO_CDN, NOW, OTHER_CDN, make_ticket, request_for
from tests.storage.contract.base import ContractBase
from usher.storage.base import MAX_COUNT_CAP, SessionCursor, SessionFilter, Storage
from usher.tickets.decision import decide
from usher.tickets.model import Account, EndReason, Page, PlaybackSession, SessionStart

LIFETIME = 600
#: (id, seconds after NOW it starts, address): ties of one second on
#: purpose, with ids out of insertion order, so the tie order (id
#: descending) is tested, not the order rows were written in.
STARTS = [
    ("c3", 0, "198.51.100.1"),
    ("a1", 0, "198.51.100.2"),
    ("b2", 0, "198.51.100.1"),
    ("e5", 1, "198.51.100.2"),
    ("d4", 2, "198.51.100.1"),
    ("g7", 2, "198.51.100.1"),
    ("f6", 3, "198.51.100.2"),
]
#: Ended (kicked) before the reads; the others stay open.
ENDED = {"b2", "e5", "g7"}
#: Every read happens then: all sessions started, none idle yet.
READ_AT = NOW + 10
FILTERS = {
    "all": SessionFilter(),
    "ip": SessionFilter(ip="198.51.100.1"),
    "open": SessionFilter(open=True),
    "ended": SessionFilter(open=False),
    "ip-ended": SessionFilter(ip="198.51.100.1", open=False),
}


def _expected(where: SessionFilter) -> list[str]:
    """The ids the filter keeps, newest start first, ties by id descending."""
    kept = [
        (NOW + offset, sid)
        for sid, offset, ip in STARTS
        if (where.ip is None or where.ip == ip)
        and (where.open is None or where.open == (sid not in ENDED))
    ]
    return [sid for _, sid in sorted(kept, reverse=True)]


def _cursor(session: PlaybackSession) -> SessionCursor:
    return session.started_at, session.id


class SessionPagesContract(ContractBase):
    """``browse_sessions`` and ``count_sessions_upto`` on any backend."""

    @pytest.fixture
    async def history(self, storage: Storage, demo: Account, other: Account) -> None:
        ticket = make_ticket()
        rival = make_ticket(key="stream.other", cdn=OTHER_CDN, app="other-live")
        await storage.insert_ticket(ticket)
        await storage.insert_ticket(rival)
        for sid, offset, ip in STARTS:
            start = SessionStart(sid, f"handle-{sid}", "check", LIFETIME, resume=False)
            outcome = await storage.record_check(
                request_for(ticket, ip=ip), decide, NOW + offset, session=start
            )
            assert outcome.decision.allowed and outcome.session is not None
        # Another account's sessions, newer than all of the demo's: never shown.
        for n in range(3):
            start = SessionStart(f"z{n}", f"handle-z{n}", "check", LIFETIME, resume=False)
            outcome = await storage.record_check(
                request_for(rival, app="other-live"), decide, NOW + 4, session=start
            )
            assert outcome.decision.allowed
        for sid in ENDED:
            ended = await storage.end_sessions(
                now=NOW + 5, reason=EndReason.KICKED, cdn=DEMO_CDN, session_id=sid
            )
            assert [s.id for s in ended] == [sid]

    @pytest.mark.parametrize("name", FILTERS)
    async def test_pages_before_a_cursor_walk_the_listing_order_once(
        self, storage: Storage, history: None, name: str
    ) -> None:
        where = FILTERS[name]
        listed, total = await storage.list_sessions(DEMO_CDN, where, Page(), READ_AT)
        assert [s.id for s in listed] == _expected(where)
        seen: list[str] = []
        page = await storage.browse_sessions(DEMO_CDN, where, Page(limit=2), READ_AT)
        while page:
            assert len(page) <= 2
            seen += [s.id for s in page]
            page = await storage.browse_sessions(
                DEMO_CDN, where, Page(limit=2), READ_AT, before=_cursor(page[-1])
            )
        assert seen == _expected(where)
        assert total == len(seen)

    @pytest.mark.parametrize("name", FILTERS)
    async def test_after_a_cursor_lists_the_newer_sessions_nearest_first(
        self, storage: Storage, history: None, name: str
    ) -> None:
        where = FILTERS[name]
        listed, _ = await storage.list_sessions(DEMO_CDN, where, Page(), READ_AT)
        for i, session in enumerate(listed):
            newer = await storage.browse_sessions(
                DEMO_CDN, where, Page(limit=2), READ_AT, after=_cursor(session)
            )
            assert [s.id for s in newer] == [s.id for s in reversed(listed[:i])][:2]
            older = await storage.browse_sessions(
                DEMO_CDN, where, Page(limit=50), READ_AT, before=_cursor(session)
            )
            assert [s.id for s in older] == [s.id for s in listed[i + 1 :]]

    async def test_a_cursor_of_no_session_still_bounds_the_page(
        self, storage: Storage, history: None
    ) -> None:
        # Between e5 (NOW+1) and the ties at NOW+2; and within the NOW ties.
        gone = await storage.browse_sessions(
            DEMO_CDN, SessionFilter(), Page(), READ_AT, before=(NOW + 1, "zz")
        )
        assert [s.id for s in gone] == ["e5", "c3", "b2", "a1"]
        within = await storage.browse_sessions(
            DEMO_CDN, SessionFilter(), Page(), READ_AT, after=(NOW, "b")
        )
        assert [s.id for s in within] == ["b2", "c3", "e5", "d4", "g7", "f6"]

    async def test_pages_show_sessions_as_they_are_now(
        self, storage: Storage, history: None
    ) -> None:
        # Past every expiry, the open ones read as ended idle: no sweep needed.
        later = NOW + LIFETIME + 100
        still_open = await storage.browse_sessions(
            DEMO_CDN, SessionFilter(open=True), Page(), later
        )
        assert still_open == []
        ended = await storage.browse_sessions(DEMO_CDN, SessionFilter(open=False), Page(), later)
        assert len(ended) == len(STARTS)
        assert await storage.count_sessions_upto(DEMO_CDN, SessionFilter(open=True), later, 10) == 0

    async def test_both_cursors_are_refused(self, storage: Storage, history: None) -> None:
        with pytest.raises(ValueError, match="before or after"):
            await storage.browse_sessions(
                DEMO_CDN, SessionFilter(), Page(), READ_AT, before=(NOW, "a"), after=(NOW, "a")
            )

    @pytest.mark.parametrize("name", FILTERS)
    async def test_the_capped_count_is_exact_up_to_the_cap(
        self, storage: Storage, history: None, name: str
    ) -> None:
        where = FILTERS[name]
        exact = len(_expected(where))
        for cap in range(1, exact + 2):
            counted = await storage.count_sessions_upto(DEMO_CDN, where, READ_AT, cap)
            assert counted == min(exact, cap + 1), cap
        assert await storage.count_sessions_upto(DEMO_CDN, where, READ_AT, MAX_COUNT_CAP) == exact

    async def test_the_capped_count_refuses_caps_out_of_range(
        self, storage: Storage, history: None
    ) -> None:
        for cap in (0, -1, MAX_COUNT_CAP + 1):
            with pytest.raises(ValueError, match="cap"):
                await storage.count_sessions_upto(DEMO_CDN, SessionFilter(), READ_AT, cap)

    async def test_another_accounts_sessions_are_neither_listed_nor_counted(
        self, storage: Storage, history: None
    ) -> None:
        mine = await storage.browse_sessions(DEMO_CDN, SessionFilter(), Page(), READ_AT)
        assert not any(s.id.startswith("z") for s in mine)
        theirs = await storage.browse_sessions(OTHER_CDN, SessionFilter(), Page(), READ_AT)
        assert sorted(s.id for s in theirs) == ["z0", "z1", "z2"]
        assert await storage.count_sessions_upto(OTHER_CDN, SessionFilter(), READ_AT, 100) == 3
