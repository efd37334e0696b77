"""The storage contract: storing, revoking and searching tickets."""

from __future__ import annotations

import dataclasses

import pytest

from tests.helpers import DEMO_CDN, NOW, OTHER_CDN, make_ticket
from tests.storage.contract.base import OVER_CAP, ContractBase
from usher.protocol.errors import AlreadyExists
from usher.storage.base import Storage
from usher.tickets.model import MAX_PAGE_ROWS, Account, Page, Ticket, TicketFilter


class TicketsContract(ContractBase):
    """Tickets: round trips, account scoping, revocation, ``search_tickets``."""

    async def test_ticket_round_trips_every_field(
        self, storage: Storage, demo: Account, other: Account
    ) -> None:
        fresh = make_ticket(key="fresh.1", ip="auto|auto/24|2001:db8::/32", uses=3)
        used = make_ticket(
            key="used.1",
            cdn=OTHER_CDN,
            password="pässwörd ✓",
            ip="auto|auto/48",
            video="vod/*.mp4|live",
            app="other-live|other-vod-*",
            uses=9,
            use_count=4,
            active=False,
            created_at=NOW - 5000,
            expire_at=NOW + 5000,
            used_at=NOW - 10,
            # Binding order is meaningful (slot n holds value n), so keep it.
            bound_ips=("203.0.113.9", "2001:db8:1::/48"),
        )
        await storage.insert_ticket(fresh)
        await storage.insert_ticket(used)
        got_fresh = await storage.get_ticket(DEMO_CDN, "fresh.1")
        assert got_fresh == fresh
        assert got_fresh is not None
        assert got_fresh.used_at is None and got_fresh.bound_ips == ()
        assert await storage.get_ticket(OTHER_CDN, "used.1") == used

    async def test_get_ticket_is_scoped_to_its_account(
        self, storage: Storage, demo: Account, other: Account
    ) -> None:
        await storage.insert_ticket(make_ticket())
        assert await storage.get_ticket(OTHER_CDN, "stream.0001") is None
        assert await storage.get_ticket(999, "stream.0001") is None
        assert await storage.get_ticket(DEMO_CDN, "stream.0002") is None

    async def test_ticket_keys_are_unique_across_accounts(
        self, storage: Storage, demo: Account, other: Account
    ) -> None:
        original = make_ticket()
        await storage.insert_ticket(original)
        with pytest.raises(AlreadyExists):
            await storage.insert_ticket(make_ticket(cdn=OTHER_CDN, password="stolen"))
        assert await storage.get_ticket(DEMO_CDN, original.key) == original
        assert await storage.get_ticket(OTHER_CDN, original.key) is None

    async def test_ticket_shows_its_account_disabled(self, storage: Storage, demo: Account) -> None:
        ticket = make_ticket()
        await storage.insert_ticket(ticket)
        await storage.update_account(DEMO_CDN, disabled=True)
        assert await storage.get_ticket(DEMO_CDN, ticket.key) == dataclasses.replace(
            ticket, account_disabled=True
        )

    async def test_revoke_ticket(self, storage: Storage, demo: Account, other: Account) -> None:
        mine = make_ticket(key="mine")
        theirs = make_ticket(key="theirs", cdn=OTHER_CDN, app="other-live")
        await storage.insert_ticket(mine)
        await storage.insert_ticket(theirs)

        assert await storage.revoke_ticket(DEMO_CDN, "mine", now=NOW)
        assert await storage.get_ticket(DEMO_CDN, "mine") == dataclasses.replace(mine, active=False)
        # It still exists, so revoking again reports it was found.
        assert await storage.revoke_ticket(DEMO_CDN, "mine", now=NOW)
        assert not await storage.revoke_ticket(DEMO_CDN, "missing", now=NOW)
        # An account cannot revoke another account's ticket by its key.
        assert not await storage.revoke_ticket(DEMO_CDN, "theirs", now=NOW)
        assert await storage.get_ticket(OTHER_CDN, "theirs") == theirs

    # -- search_tickets -------------------------------------------------------------

    @pytest.fixture
    async def searchable(self, storage: Storage, demo: Account, other: Account) -> list[Ticket]:
        """Five demo tickets inserted oldest first, and one of ``other`` that
        matches every filter below, so isolation is tested by each of them."""
        specs = [
            ("t0", "pa", "demo-live", "v1", ""),
            ("t1", "pb", "demo-live", "v2", "auto"),
            ("t2", "pa", "demo-vod", "v1", "10.0.0.0/8"),
            ("t3", "pa", "demo-live", "v1", "auto"),
            ("t4", "pc", "demo-live", "v3", ""),
        ]
        tickets = [
            # "Newest" is both the later insert and the later created_at, so a
            # backend may order by either.
            make_ticket(key=key, password=pw, app=app, video=video, ip=ip, created_at=NOW + i)
            for i, (key, pw, app, video, ip) in enumerate(specs)
        ]
        for ticket in tickets:
            await storage.insert_ticket(ticket)
        await storage.insert_ticket(
            make_ticket(
                key="foreign",
                cdn=OTHER_CDN,
                password="pa",
                app="demo-live",
                video="v1",
                ip="auto",
                created_at=NOW + 99,
            )
        )
        return tickets

    @pytest.mark.parametrize(
        ("where", "expected"),
        [
            (TicketFilter(), ["t4", "t3", "t2", "t1", "t0"]),
            (TicketFilter(key="t2"), ["t2"]),
            (TicketFilter(key="foreign"), []),
            (TicketFilter(app="demo-live"), ["t4", "t3", "t1", "t0"]),
            (TicketFilter(video="v1"), ["t3", "t2", "t0"]),
            (TicketFilter(ip="auto"), ["t3", "t1"]),
            # "" is a real value (any address), not "unfiltered".
            (TicketFilter(ip=""), ["t4", "t0"]),
            (TicketFilter(password="pa"), ["t3", "t2", "t0"]),
            (TicketFilter(password="pa", app="demo-live", video="v1"), ["t3", "t0"]),
            # Exact match only: no wildcard or prefix semantics in filters.
            (TicketFilter(app="demo-*"), []),
            (TicketFilter(video="v"), []),
        ],
        ids=[
            "none",
            "key",
            "foreign-key",
            "app",
            "video",
            "ip",
            "ip-empty",
            "password",
            "combined",
            "no-wildcards",
            "no-prefix",
        ],
    )
    async def test_search_filters_match_exactly_newest_first(
        self,
        storage: Storage,
        searchable: list[Ticket],
        where: TicketFilter,
        expected: list[str],
    ) -> None:
        found, total = await storage.search_tickets(DEMO_CDN, where, Page())
        assert [t.key for t in found] == expected
        assert total == len(expected)
        by_key = {t.key: t for t in searchable}
        assert found == [by_key[key] for key in expected]

    @pytest.mark.parametrize(
        ("page", "expected"),
        [
            (Page(limit=2), ["t4", "t3"]),
            (Page(limit=2, seek=2), ["t2", "t1"]),
            (Page(limit=2, seek=4), ["t0"]),
            (Page(seek=3), ["t1", "t0"]),
            (Page(seek=5), []),
            (Page(seek=50), []),
            (Page(limit=0), []),
            (Page(limit=100), ["t4", "t3", "t2", "t1", "t0"]),
        ],
        ids=["limit", "seek", "half", "seek-only", "seek-to-end", "seek-beyond", "zero", "big"],
    )
    async def test_search_pages_but_total_counts_all_matches(
        self, storage: Storage, searchable: list[Ticket], page: Page, expected: list[str]
    ) -> None:
        found, total = await storage.search_tickets(DEMO_CDN, TicketFilter(), page)
        assert [t.key for t in found] == expected
        assert total == 5
        # Without the count: the same page, and -1 for the total.
        assert await storage.search_tickets(DEMO_CDN, TicketFilter(), page, count=False) == (
            found,
            -1,
        )

    async def test_search_is_isolated_by_account(
        self, storage: Storage, searchable: list[Ticket]
    ) -> None:
        found, total = await storage.search_tickets(OTHER_CDN, TicketFilter(), Page())
        assert ([t.key for t in found], total) == (["foreign"], 1)
        assert await storage.search_tickets(999, TicketFilter(), Page()) == ([], 0)

    @pytest.mark.parametrize("page", [Page(), Page(limit=10**12)], ids=["no-limit", "huge-limit"])
    async def test_search_holds_at_most_max_page_rows_but_counts_all(
        self, storage: Storage, demo: Account, page: Page
    ) -> None:
        keys = [f"many.{i:05}" for i in range(OVER_CAP)]
        # One at a time: "newest first" is insertion order.
        for i, key in enumerate(keys):
            await storage.insert_ticket(make_ticket(key=key, created_at=NOW + i))
        newest_first = sorted(keys, reverse=True)
        found, total = await storage.search_tickets(DEMO_CDN, TicketFilter(), page)
        assert total == OVER_CAP
        assert [t.key for t in found] == newest_first[:MAX_PAGE_ROWS]
        # ``seek`` pages on to the rest, and the total stays the same.
        rest, total = await storage.search_tickets(
            DEMO_CDN, TicketFilter(), dataclasses.replace(page, seek=MAX_PAGE_ROWS)
        )
        assert ([t.key for t in rest], total) == (newest_first[MAX_PAGE_ROWS:], OVER_CAP)
