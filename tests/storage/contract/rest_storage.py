"""The storage contract: what the v2 REST API (SPEC §7) adds.

Token listings filtered by ``uses`` and ``active``, attempt listings by
``appinst`` (which the counts refuse), the tickets' row ids
(``ticket_ids``), and changing a ticket's ``active`` and ``expire_at``
(``update_ticket``), which a check sees at once.
"""

from __future__ import annotations

import dataclasses

import pytest

from tests.helpers import DEMO_CDN, NOW, OTHER_CDN, make_ticket, request_for, session_ticket, viewer
from tests.storage.contract.base import ContractBase
from usher.storage.base import SessionFilter, Storage
from usher.tickets.decision import decide
from usher.tickets.model import (
    MAX_PAGE_ROWS,
    Account,
    AttemptFilter,
    EndReason,
    Page,
    Reason,
    SessionStart,
    TicketFilter,
)

# (key, uses, active) of the demo tickets, oldest first.
TOKENS = [("u0", 0, True), ("u1", 5, True), ("u2", 5, False), ("u3", 0, False), ("u4", 1, True)]
# (at, key, appinst, app, video) of the attempts, in order; "o1" is other's.
APPINST_ROWS = [
    (NOW, "a1", "inst1", "demo-live", "stream"),
    (NOW + 10, "a2", "inst2", "demo-live", "stream"),
    (NOW + 20, "a1", "inst2", "demo-live", "stream"),
    (NOW + 30, "o1", "inst1", "other-live", "stream"),
    (NOW + 40, "a2", "", "demo-live", "stream"),
    (NOW + 50, "a1", "inst1", "demo-vod", "stream"),
]


class RestStorageContract(ContractBase):
    """The storage calls behind the v2 tokens and attempts."""

    # -- search_tickets by uses and active -----------------------------------------

    @pytest.fixture
    async def tokens(self, storage: Storage, demo: Account, other: Account) -> None:
        for i, (key, uses, active) in enumerate(TOKENS):
            await storage.insert_ticket(
                make_ticket(key=key, uses=uses, active=active, created_at=NOW + i)
            )
        # Matches every filter below: isolation is tested by each of them.
        await storage.insert_ticket(
            make_ticket(key="theirs", cdn=OTHER_CDN, app="other-live", uses=5, active=True)
        )

    @pytest.mark.parametrize(
        ("where", "expected"),
        [
            (TicketFilter(uses=5), ["u2", "u1"]),
            (TicketFilter(uses=0), ["u3", "u0"]),
            (TicketFilter(uses=7), []),
            (TicketFilter(active=True), ["u4", "u1", "u0"]),
            (TicketFilter(active=False), ["u3", "u2"]),
            (TicketFilter(uses=5, active=True), ["u1"]),
            (TicketFilter(uses=0, active=False, key="u3"), ["u3"]),
            (TicketFilter(uses=1, active=False), []),
        ],
        ids=["uses", "uses-0", "uses-none", "active", "inactive", "both", "with-key", "neither"],
    )
    async def test_search_by_uses_and_active(
        self, storage: Storage, tokens: None, where: TicketFilter, expected: list[str]
    ) -> None:
        found, total = await storage.search_tickets(DEMO_CDN, where, Page())
        assert ([t.key for t in found], total) == (expected, len(expected))
        found, total = await storage.search_tickets(DEMO_CDN, where, Page(limit=1, seek=1))
        assert ([t.key for t in found], total) == (expected[1:2], len(expected))

    async def test_active_is_the_tickets_own_flag(self, storage: Storage, tokens: None) -> None:
        # A disabled account's active tickets stay active in the filter; the
        # ticket read shows the account's flag apart.
        await storage.update_account(DEMO_CDN, disabled=True)
        found, _ = await storage.search_tickets(DEMO_CDN, TicketFilter(active=True), Page())
        assert [t.key for t in found] == ["u4", "u1", "u0"]
        assert all(t.account_disabled for t in found)

    # -- list_attempts by appinst -------------------------------------------------

    @pytest.fixture
    async def appinst_log(self, storage: Storage, demo: Account, other: Account) -> list[int]:
        """Record ``APPINST_ROWS``; the attempt id of each."""
        await storage.insert_ticket(make_ticket(key="a1"))
        await storage.insert_ticket(make_ticket(key="a2"))
        await storage.insert_ticket(make_ticket(key="o1", cdn=OTHER_CDN, app="other-live"))
        ids = []
        for at, key, appinst, app, video in APPINST_ROWS:
            request = request_for(make_ticket(key=key), app=app, video=video, appinst=appinst)
            ids.append((await storage.record_check(request, decide, at)).attempt_id)
        return ids

    @pytest.mark.parametrize(
        ("where", "expected"),
        [
            (AttemptFilter(appinst="inst1"), [0, 5]),
            (AttemptFilter(appinst="inst2"), [1, 2]),
            # "" is a value (an attempt without an instance), not "unfiltered".
            (AttemptFilter(appinst=""), [4]),
            (AttemptFilter(appinst="inst"), []),
            (AttemptFilter(appinst="inst1", key="a1"), [0, 5]),
            (AttemptFilter(appinst="inst2", key="a1"), [2]),
            (AttemptFilter(appinst="inst1", app="demo-vod"), [5]),
            (AttemptFilter(appinst="inst1", video="stream"), [0, 5]),
            (AttemptFilter(appinst="inst2", start=NOW + 15), [2]),
            (AttemptFilter(appinst="inst2", start=NOW, end=NOW + 15, app="demo-live"), [1]),
            (AttemptFilter(appinst="inst1", success=False), [5]),
            (AttemptFilter(appinst="inst1", ip="192.0.2.1"), []),
        ],
        ids=[
            "alone",
            "alone-2",
            "empty",
            "no-prefix",
            "key",
            "key-2",
            "app",
            "video",
            "start",
            "range-app",
            "success",
            "ip",
        ],
    )
    async def test_list_attempts_by_appinst(
        self,
        storage: Storage,
        appinst_log: list[int],
        where: AttemptFilter,
        expected: list[int],
    ) -> None:
        attempts = await storage.list_attempts(DEMO_CDN, where, Page())
        assert [a.id for a in attempts] == [appinst_log[i] for i in expected]
        newest = await storage.list_attempts(DEMO_CDN, where, Page(), newest_first=True)
        assert [a.id for a in newest] == [appinst_log[i] for i in reversed(expected)]
        paged = await storage.list_attempts(DEMO_CDN, where, Page(limit=1, seek=1))
        assert [a.id for a in paged] == [appinst_log[i] for i in expected[1:2]]

    async def test_appinst_listing_pages_by_cursor_and_is_isolated(
        self, storage: Storage, appinst_log: list[int]
    ) -> None:
        where = AttemptFilter(appinst="inst1")
        later = await storage.list_attempts(DEMO_CDN, where, Page(), after=appinst_log[0])
        assert [a.id for a in later] == [appinst_log[5]]
        theirs = await storage.list_attempts(OTHER_CDN, where, Page())
        assert [a.id for a in theirs] == [appinst_log[3]]
        assert [a.appinst for a in theirs] == ["inst1"]

    async def test_counts_and_statistics_refuse_appinst(
        self, storage: Storage, appinst_log: list[int]
    ) -> None:
        where = AttemptFilter(appinst="inst1", start=NOW, end=NOW + 60)
        with pytest.raises(ValueError, match="appinst"):
            await storage.count_attempts(DEMO_CDN, where)
        with pytest.raises(ValueError, match="appinst"):
            await storage.count_attempts_upto(DEMO_CDN, where, 10)
        with pytest.raises(ValueError, match="appinst"):
            await storage.attempt_timeline(DEMO_CDN, where, 60)
        with pytest.raises(ValueError, match="appinst"):
            await storage.top_attempt_values(DEMO_CDN, where, "ip", 10)

    # -- ticket_ids -----------------------------------------------------------------

    async def test_ticket_ids(self, storage: Storage, tokens: None) -> None:
        ids = await storage.ticket_ids(DEMO_CDN, ["u3", "u0", "missing", "theirs", "u3"])
        assert set(ids) == {"u0", "u3"}
        # Row ids follow insertion: search_tickets lists newest (highest id) first.
        found, _ = await storage.search_tickets(DEMO_CDN, TicketFilter(), Page())
        every = await storage.ticket_ids(DEMO_CDN, [t.key for t in found])
        assert list(every) == [t.key for t in found]
        assert sorted(every.values(), reverse=True) == list(every.values())
        assert len(set(every.values())) == len(TOKENS)
        assert (every["u0"], every["u3"]) == (ids["u0"], ids["u3"])
        assert await storage.ticket_ids(OTHER_CDN, ["u0", "theirs"]) == {
            "theirs": (await storage.ticket_ids(OTHER_CDN, ["theirs"]))["theirs"]
        }
        assert "theirs" not in every and await storage.ticket_ids(DEMO_CDN, []) == {}

    async def test_ticket_ids_takes_at_most_a_page_of_keys(
        self, storage: Storage, tokens: None
    ) -> None:
        keys = ["u1", *(f"nope.{i}" for i in range(MAX_PAGE_ROWS - 1))]
        assert list(await storage.ticket_ids(DEMO_CDN, keys)) == ["u1"]
        with pytest.raises(ValueError, match=str(MAX_PAGE_ROWS)):
            await storage.ticket_ids(DEMO_CDN, [*keys, "u0"])

    # -- update_ticket ----------------------------------------------------------------

    async def test_update_ticket_sets_what_it_is_given(
        self, storage: Storage, demo: Account, other: Account
    ) -> None:
        ticket = make_ticket()
        theirs = make_ticket(key="theirs", cdn=OTHER_CDN, app="other-live")
        await storage.insert_ticket(ticket)
        await storage.insert_ticket(theirs)
        key = ticket.key

        assert await storage.update_ticket(DEMO_CDN, key, active=None, expire_at=None, now=NOW)
        assert await storage.get_ticket(DEMO_CDN, key) == ticket
        assert await storage.update_ticket(DEMO_CDN, key, active=None, expire_at=NOW + 9, now=NOW)
        ticket = dataclasses.replace(ticket, expire_at=NOW + 9)
        assert await storage.get_ticket(DEMO_CDN, key) == ticket
        assert await storage.update_ticket(DEMO_CDN, key, active=False, expire_at=None, now=NOW)
        ticket = dataclasses.replace(ticket, active=False)
        assert await storage.get_ticket(DEMO_CDN, key) == ticket
        assert await storage.update_ticket(DEMO_CDN, key, active=True, expire_at=NOW + 1, now=NOW)
        ticket = dataclasses.replace(ticket, active=True, expire_at=NOW + 1)
        assert await storage.get_ticket(DEMO_CDN, key) == ticket

        # Another account's ticket, or none: False, and nothing changes.
        for cdn, other_key in ((DEMO_CDN, "theirs"), (DEMO_CDN, "missing"), (999, key)):
            assert not await storage.update_ticket(
                cdn, other_key, active=False, expire_at=NOW, now=NOW
            )
        assert await storage.get_ticket(OTHER_CDN, "theirs") == theirs
        assert await storage.get_ticket(DEMO_CDN, key) == ticket

    async def test_a_check_right_after_an_update_sees_it(
        self, storage: Storage, demo: Account
    ) -> None:
        ticket = make_ticket()
        await storage.insert_ticket(ticket)
        request = request_for(ticket)
        # A first check, so a writer that caches tickets holds this one.
        assert (await storage.record_check(request, decide, NOW)).decision.allowed

        assert await storage.update_ticket(
            DEMO_CDN, ticket.key, active=None, expire_at=NOW - 1, now=NOW
        )
        refused = await storage.record_check(request, decide, NOW + 1)
        assert refused.decision.reason is Reason.EXPIRED

        assert await storage.update_ticket(
            DEMO_CDN, ticket.key, active=False, expire_at=NOW + 3600, now=NOW + 2
        )
        refused = await storage.record_check(request, decide, NOW + 3)
        assert refused.decision.reason is Reason.TICKET_REVOKED

        assert await storage.update_ticket(
            DEMO_CDN, ticket.key, active=True, expire_at=None, now=NOW + 4
        )
        allowed = await storage.record_check(request, decide, NOW + 5)
        assert allowed.decision.allowed
        stored = await storage.get_ticket(DEMO_CDN, ticket.key)
        assert stored is not None and stored.use_count == 2

    async def test_deactivating_is_revoking(self, storage: Storage, demo: Account) -> None:
        ticket = session_ticket()
        await storage.insert_ticket(ticket)
        start = SessionStart("s-1", "http:" + "cd" * 32, "hls", 120, resume=True)
        assert (await storage.record_check(viewer(ticket), decide, NOW, session=start)).session
        # Only the expiry: the session stays open.
        assert await storage.update_ticket(
            DEMO_CDN, ticket.key, active=None, expire_at=NOW + 7200, now=NOW + 1
        )
        assert await storage.count_open_sessions(NOW + 1, DEMO_CDN) == 1

        assert await storage.update_ticket(
            DEMO_CDN, ticket.key, active=False, expire_at=None, now=NOW + 2
        )
        sessions, _ = await storage.list_sessions(DEMO_CDN, SessionFilter(), Page(), NOW + 2)
        assert [(s.id, s.ended_at, s.end_reason) for s in sessions] == [
            ("s-1", NOW + 2, EndReason.REVOKED.value)
        ]
        # Reactivated: the ended session stays ended; a new start opens one.
        assert await storage.update_ticket(
            DEMO_CDN, ticket.key, active=True, expire_at=None, now=NOW + 3
        )
        again = SessionStart("s-2", "http:" + "ef" * 32, "hls", 120, resume=True)
        opened = await storage.record_check(viewer(ticket), decide, NOW + 4, session=again)
        assert opened.decision.allowed and opened.session is not None
        assert await storage.count_open_sessions(NOW + 4, DEMO_CDN) == 1
