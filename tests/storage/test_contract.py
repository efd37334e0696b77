"""The storage contract: what every backend must do, written once.

:class:`StorageContract` talks only to the :class:`~usher.storage.base.Storage`
interface, so each backend reuses it by inheritance and supplies an open
storage through the ``storage`` fixture (``TestSQLite`` below; a PostgreSQL
backend adds ``class TestPostgres(StorageContract)``). Nothing backend-specific
belongs in the contract class: no SQL, no driver imports, no file paths.

Time is a fixed ``NOW`` passed explicitly, never the real clock, so expiry
boundaries are exact and the suite is deterministic.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, ClassVar

import anyio
import pytest

from tests.storage.session_contract import SessionContract
from usher.protocol.errors import AlreadyExists, StorageUnavailable
from usher.storage import migrations
from usher.storage.base import (
    MAX_ATTEMPT_FIELD,
    MAX_TIMELINE_BUCKETS,
    MAX_TOP_VALUES,
    Decider,
    PanelSession,
    Storage,
    TimelineBucket,
)
from usher.storage.postgres import PostgresStorage
from usher.storage.sqlite import SQLiteStorage
from usher.tickets.decision import decide
from usher.tickets.model import (
    MAX_PAGE_ROWS,
    Account,
    Attempt,
    AttemptFilter,
    CheckRequest,
    Decision,
    Page,
    Reason,
    Ticket,
    TicketFilter,
)

pytestmark = pytest.mark.anyio

NOW = 1_800_000_000
DEMO_CDN = 1
OTHER_CDN = 2
CLIENT = "203.0.113.7"
#: Far above any single operation on a working backend; turns a hang into a failure.
HANG_LIMIT_S = 2


def make_ticket(**changes: Any) -> Ticket:
    """A ticket of account ``demo`` that ``request_for`` passes, unless changed."""
    ticket = Ticket(
        key="stream.0001",
        cdn=DEMO_CDN,
        password="pw",
        ip="",
        video="stream",
        app="demo-live",
        uses=0,
        use_count=0,
        active=True,
        created_at=NOW - 100,
        expire_at=NOW + 3600,
    )
    return dataclasses.replace(ticket, **changes)


def request_for(ticket: Ticket, **changes: Any) -> CheckRequest:
    """A playback request that ``decide`` allows against a fresh ``ticket``."""
    request = CheckRequest(
        key=ticket.key,
        password=ticket.password,
        app="demo-live",
        video="stream",
        ip=CLIENT,
    )
    return dataclasses.replace(request, **changes)


def recording(seen: list[tuple[Ticket | None, int]]) -> Decider:
    """``decide``, remembering the ticket state and time each call was given."""

    def run(ticket: Ticket | None, request: CheckRequest, now: int) -> Decision:
        seen.append((ticket, now))
        return decide(ticket, request, now)

    return run


class DeciderFailure(RuntimeError):
    """Raised by a test decider; must reach only the call that triggered it."""


class DeciderAbort(BaseException):
    """Not an ``Exception``: what a decider could raise by way of
    ``SystemExit``, ``KeyboardInterrupt`` or a cancellation."""


def failing_on_video(video: str) -> Decider:
    def run(ticket: Ticket | None, request: CheckRequest, now: int) -> Decision:
        if request.video == video:
            raise DeciderFailure(video)
        return decide(ticket, request, now)

    return run


# Every operation once, with arguments that would be valid on an open storage,
# for the "closed storage fails fast" test.
CLOSED_OPS: list[tuple[str, Callable[[Storage], Awaitable[object]]]] = [
    ("ping", lambda s: s.ping()),
    ("schema_version", lambda s: s.schema_version()),
    (
        "create_account",
        lambda s: s.create_account(username="late", api_key="K", secret="S", cdn=None, now=NOW),
    ),
    ("list_accounts", lambda s: s.list_accounts()),
    ("get_account", lambda s: s.get_account(DEMO_CDN)),
    ("get_account_by_username", lambda s: s.get_account_by_username("demo")),
    ("update_account", lambda s: s.update_account(DEMO_CDN, disabled=True)),
    ("claim_signature", lambda s: s.claim_signature(b"d" * 32, now=NOW, expires_at=NOW + 60)),
    ("insert_ticket", lambda s: s.insert_ticket(make_ticket(key="late"))),
    ("get_ticket", lambda s: s.get_ticket(DEMO_CDN, "stream.0001")),
    ("revoke_ticket", lambda s: s.revoke_ticket(DEMO_CDN, "stream.0001")),
    ("search_tickets", lambda s: s.search_tickets(DEMO_CDN, TicketFilter(), Page())),
    ("record_check", lambda s: s.record_check(request_for(make_ticket()), decide, NOW)),
    ("list_attempts", lambda s: s.list_attempts(DEMO_CDN, AttemptFilter(), Page())),
    ("count_attempts", lambda s: s.count_attempts(DEMO_CDN, AttemptFilter())),
    ("lookup_ticket", lambda s: s.lookup_ticket("stream.0001")),
    ("lookup_session", lambda s: s.lookup_session("http:0")),
    (
        "open_session",
        lambda s: s.open_session(
            request_for(make_ticket()), decide, NOW, session_id="http:0", ttl=60, reuse=True
        ),
    ),
    ("renew_session", lambda s: s.renew_session("http:0", expires_at=NOW + 60)),
    ("close_session", lambda s: s.close_session("http:0")),
    (
        "attempt_timeline",
        lambda s: s.attempt_timeline(DEMO_CDN, AttemptFilter(start=NOW, end=NOW + 60), 60),
    ),
    ("top_attempt_values", lambda s: s.top_attempt_values(DEMO_CDN, AttemptFilter(), "ip", 5)),
    ("set_panel_password", lambda s: s.set_panel_password(DEMO_CDN, "h", now=NOW)),
    ("get_panel_password", lambda s: s.get_panel_password(DEMO_CDN)),
    (
        "create_panel_session",
        lambda s: s.create_panel_session(PanelSession(b"t" * 32, DEMO_CDN, NOW, NOW)),
    ),
    ("get_panel_session", lambda s: s.get_panel_session(b"t" * 32)),
    ("touch_panel_session", lambda s: s.touch_panel_session(b"t" * 32, now=NOW)),
    ("delete_panel_sessions", lambda s: s.delete_panel_sessions(cdn=DEMO_CDN)),
]


# The attempt log built by the ``attempt_log`` fixture, one row per attempt:
# (at, key, password, app, video, ip). Tickets: k1/p1 and k2/p2 of demo,
# k3/p3 of other. Index 4 belongs to ``other`` and must never show for demo.
LOG_ROWS: list[tuple[int, str, str, str, str, str]] = [
    (NOW, "k1", "p1", "demo-live", "a", "10.0.0.1"),  # 0 allowed
    (NOW + 10, "k1", "bad", "demo-live", "a", "10.0.0.1"),  # 1 Invalid Auth Token
    (NOW + 20, "k2", "p2", "demo-live", "b", "10.0.0.2"),  # 2 allowed
    (NOW + 30, "k2", "p2", "demo-vod", "b", "10.0.0.3"),  # 3 Invalid Application
    (NOW + 40, "k3", "p3", "other-live", "a", "10.0.0.2"),  # 4 allowed, other's
    (NOW + 50, "k1", "p1", "demo-live", "a", "10.0.0.2"),  # 5 allowed
]
DEMO_ROWS = [0, 1, 2, 3, 5]

ATTEMPT_FILTERS: list[tuple[str, AttemptFilter, list[int]]] = [
    ("none", AttemptFilter(), DEMO_ROWS),
    ("key", AttemptFilter(key="k1"), [0, 1, 5]),
    ("password", AttemptFilter(password="bad"), [1]),
    ("app", AttemptFilter(app="demo-vod"), [3]),
    ("video", AttemptFilter(video="b"), [2, 3]),
    ("ip", AttemptFilter(ip="10.0.0.2"), [2, 5]),
    ("success-true", AttemptFilter(success=True), [0, 2, 5]),
    ("success-false", AttemptFilter(success=False), [1, 3]),
    # Bounds are inclusive: an attempt exactly at start or end is in.
    ("start", AttemptFilter(start=NOW + 20), [2, 3, 5]),
    ("end", AttemptFilter(end=NOW + 20), [0, 1, 2]),
    ("start-equals-end", AttemptFilter(start=NOW + 20, end=NOW + 20), [2]),
    ("empty-range", AttemptFilter(start=NOW + 21, end=NOW + 29), []),
    ("combined", AttemptFilter(key="k1", success=True, ip="10.0.0.2"), [5]),
    ("no-match", AttemptFilter(key="nope"), []),
    # Another account's key gives nothing, even though the attempt exists.
    ("foreign-key", AttemptFilter(key="k3"), []),
]


class StorageContract(SessionContract):
    """Behaviour every :class:`Storage` backend must show.

    Subclasses override ``storage`` to yield an open, empty backend and close
    it afterwards. Closing must tolerate an already closed storage, because
    some tests close (and reopen) it themselves. They also set
    ``expected_schema_version`` to the newest schema the backend ships.
    """

    expected_schema_version: ClassVar[int]

    @pytest.fixture
    def storage(self, *args: Any, **kwargs: Any) -> AsyncIterator[Storage]:
        # Typed like the async-generator overrides (which may take any
        # fixtures they need), so mypy checks every override against it.
        raise NotImplementedError("a backend's test class provides an open storage")

    @pytest.fixture
    async def demo(self, storage: Storage) -> Account:
        return await storage.create_account(
            username="demo", api_key="DEMOKEY", secret="demo-secret", cdn=DEMO_CDN, now=NOW
        )

    @pytest.fixture
    async def other(self, storage: Storage) -> Account:
        return await storage.create_account(
            username="other", api_key="OTHERKEY", secret="other-secret", cdn=OTHER_CDN, now=NOW
        )

    # -- lifecycle -----------------------------------------------------------

    async def test_fresh_storage_is_at_the_newest_schema_and_answers_ping(
        self, storage: Storage
    ) -> None:
        assert await storage.schema_version() == self.expected_schema_version
        await storage.ping()
        assert storage.pending_writes == 0

    async def test_reopen_keeps_everything(self, storage: Storage, demo: Account) -> None:
        ticket = make_ticket(bound_ips=("198.51.100.1",))
        await storage.insert_ticket(ticket)
        outcome = await storage.record_check(request_for(ticket), decide, NOW)
        assert await storage.claim_signature(b"sig", now=NOW, expires_at=NOW + 60)
        await storage.close()

        # A second open must find the schema in place, not recreate or refuse it.
        await storage.open()
        assert await storage.schema_version() == self.expected_schema_version
        await storage.ping()
        assert await storage.list_accounts() == [demo]
        stored = await storage.get_ticket(DEMO_CDN, ticket.key)
        assert stored == dataclasses.replace(ticket, use_count=1, used_at=NOW)
        attempts = await storage.list_attempts(DEMO_CDN, AttemptFilter(), Page())
        assert [a.id for a in attempts] == [outcome.attempt_id]
        assert not await storage.claim_signature(b"sig", now=NOW, expires_at=NOW + 60)

    @pytest.mark.parametrize(("name", "op"), CLOSED_OPS, ids=[name for name, _ in CLOSED_OPS])
    async def test_closed_storage_raises_unavailable(
        self, storage: Storage, demo: Account, name: str, op: Callable[[Storage], Awaitable[object]]
    ) -> None:
        await storage.close()
        with anyio.fail_after(HANG_LIMIT_S), pytest.raises(StorageUnavailable):
            await op(storage)

    async def test_writes_racing_close_either_persist_or_fail_cleanly(
        self, storage: Storage
    ) -> None:
        # close() must finish writes already handed to the backend. A write
        # that arrives too late may fail, but only with StorageUnavailable,
        # and nothing may hang or claim success without being durable.
        digests = [i.to_bytes(4, "big") for i in range(20)]
        tasks = [
            asyncio.ensure_future(storage.claim_signature(d, now=NOW, expires_at=NOW + 60))
            for d in digests
        ]
        await asyncio.sleep(0)  # let every claim reach the backend
        with anyio.fail_after(HANG_LIMIT_S):
            await storage.close()
            results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            assert result is True or isinstance(result, StorageUnavailable), result
        await storage.open()
        for digest, result in zip(digests, results, strict=True):
            if result is True:
                assert not await storage.claim_signature(digest, now=NOW, expires_at=NOW + 60)

    # -- accounts --------------------------------------------------------------

    async def test_create_account_with_explicit_cdn(self, storage: Storage) -> None:
        account = await storage.create_account(
            username="demo", api_key="KEY", secret="SECRET", cdn=158, now=NOW
        )
        assert account == Account(158, "demo", "KEY", "SECRET", disabled=False, created_at=NOW)
        assert account.secret == "SECRET"  # __eq__ covers it, but repr hides it
        assert await storage.get_account(158) == account
        assert await storage.get_account_by_username("demo") == account

    async def test_cdn_none_takes_max_plus_one_starting_at_1(self, storage: Storage) -> None:
        async def create(username: str, cdn: int | None) -> int:
            account = await storage.create_account(
                username=username, api_key="K", secret="S", cdn=cdn, now=NOW
            )
            return account.cdn

        assert await create("a", None) == 1
        assert await create("b", None) == 2
        assert await create("c", 10) == 10
        # Next free means above the highest, not the first gap (3..9).
        assert await create("d", None) == 11
        assert await create("e", 5) == 5
        assert await create("f", None) == 12

    async def test_cdn_zero_is_a_valid_explicit_cdn(self, storage: Storage) -> None:
        # `usher account create --cdn 0` is allowed, so 0 must not read as "unset".
        zero = await storage.create_account(username="z", api_key="K", secret="S", cdn=0, now=NOW)
        assert zero.cdn == 0
        assert await storage.get_account(0) == zero
        nxt = await storage.create_account(username="n", api_key="K", secret="S", cdn=None, now=NOW)
        assert nxt.cdn == 1

    @pytest.mark.parametrize("cdn", [None, 7], ids=["auto-cdn", "free-cdn"])
    async def test_duplicate_username_is_refused(
        self, storage: Storage, demo: Account, cdn: int | None
    ) -> None:
        with pytest.raises(AlreadyExists):
            await storage.create_account(username="demo", api_key="X", secret="Y", cdn=cdn, now=NOW)
        assert await storage.list_accounts() == [demo]

    async def test_duplicate_cdn_is_refused(self, storage: Storage, demo: Account) -> None:
        with pytest.raises(AlreadyExists):
            await storage.create_account(
                username="fresh", api_key="X", secret="Y", cdn=DEMO_CDN, now=NOW
            )
        assert await storage.list_accounts() == [demo]
        assert await storage.get_account_by_username("fresh") is None

    async def test_concurrent_creates_get_distinct_cdns(self, storage: Storage) -> None:
        accounts = await asyncio.gather(
            *(
                storage.create_account(username=f"u{i}", api_key="K", secret="S", cdn=None, now=NOW)
                for i in range(10)
            )
        )
        assert sorted(a.cdn for a in accounts) == list(range(1, 11))
        assert [a.cdn for a in await storage.list_accounts()] == list(range(1, 11))

    async def test_concurrent_creates_of_one_username_admit_exactly_one(
        self, storage: Storage
    ) -> None:
        results = await asyncio.gather(
            *(
                storage.create_account(username="dup", api_key="K", secret="S", cdn=None, now=NOW)
                for _ in range(10)
            ),
            return_exceptions=True,
        )
        created = [r for r in results if isinstance(r, Account)]
        assert len(created) == 1
        assert all(isinstance(r, AlreadyExists) for r in results if r not in created)
        assert await storage.list_accounts() == created

    async def test_unknown_account_lookups_give_none(self, storage: Storage, demo: Account) -> None:
        assert await storage.get_account(999) is None
        assert await storage.get_account_by_username("nobody") is None
        # Usernames are exact: no prefix or case folding.
        assert await storage.get_account_by_username("dem") is None
        assert await storage.get_account_by_username("DEMO") is None

    async def test_list_accounts_is_ordered_by_cdn(self, storage: Storage) -> None:
        assert await storage.list_accounts() == []
        for username, cdn in [("five", 5), ("two", 2), ("nine", 9)]:
            await storage.create_account(
                username=username, api_key="K", secret="S", cdn=cdn, now=NOW
            )
        listed = await storage.list_accounts()
        assert [(a.cdn, a.username) for a in listed] == [(2, "two"), (5, "five"), (9, "nine")]

    async def test_update_account_secret(
        self, storage: Storage, demo: Account, other: Account
    ) -> None:
        updated = await storage.update_account(DEMO_CDN, secret="rotated")
        assert updated == dataclasses.replace(demo, secret="rotated")
        assert await storage.get_account(DEMO_CDN) == updated
        assert await storage.get_account(OTHER_CDN) == other

    async def test_update_account_disabled_flag_both_ways(
        self, storage: Storage, demo: Account, other: Account
    ) -> None:
        disabled = await storage.update_account(DEMO_CDN, disabled=True)
        assert disabled == dataclasses.replace(demo, disabled=True)
        assert await storage.get_account_by_username("demo") == disabled
        assert await storage.get_account(OTHER_CDN) == other
        enabled = await storage.update_account(DEMO_CDN, disabled=False)
        assert enabled == demo
        assert await storage.get_account(DEMO_CDN) == demo

    async def test_update_account_both_fields_and_neither(
        self, storage: Storage, demo: Account
    ) -> None:
        both = await storage.update_account(DEMO_CDN, secret="new", disabled=True)
        assert both == dataclasses.replace(demo, secret="new", disabled=True)
        # No change requested: the current account comes back unchanged.
        assert await storage.update_account(DEMO_CDN) == both

    async def test_update_unknown_account_gives_none(self, storage: Storage, demo: Account) -> None:
        assert await storage.update_account(999, secret="x", disabled=True) is None
        assert await storage.list_accounts() == [demo]

    # -- replay protection -----------------------------------------------------

    async def test_signature_is_refused_until_it_expires(self, storage: Storage) -> None:
        digest = b"\x01" * 32
        assert await storage.claim_signature(digest, now=NOW, expires_at=NOW + 60)
        assert not await storage.claim_signature(digest, now=NOW, expires_at=NOW + 60)
        assert not await storage.claim_signature(digest, now=NOW + 59, expires_at=NOW + 119)
        # expires_at itself is still inside the window: the freshness check
        # accepts a timestamp exactly `tolerance` old, so the replay check must
        # still refuse it then.
        assert not await storage.claim_signature(digest, now=NOW + 60, expires_at=NOW + 120)
        assert await storage.claim_signature(digest, now=NOW + 61, expires_at=NOW + 121)
        # The new claim restarted the window.
        assert not await storage.claim_signature(digest, now=NOW + 100, expires_at=NOW + 160)

    async def test_distinct_signatures_are_independent(self, storage: Storage) -> None:
        assert await storage.claim_signature(b"a" * 32, now=NOW, expires_at=NOW + 60)
        assert await storage.claim_signature(b"b" * 32, now=NOW, expires_at=NOW + 60)
        # A digest that is a prefix of another is still a different digest.
        assert await storage.claim_signature(b"a" * 31, now=NOW, expires_at=NOW + 60)
        assert not await storage.claim_signature(b"a" * 32, now=NOW, expires_at=NOW + 60)

    async def test_concurrent_claims_of_one_signature_admit_exactly_one(
        self, storage: Storage
    ) -> None:
        results = await asyncio.gather(
            *(storage.claim_signature(b"race", now=NOW, expires_at=NOW + 60) for _ in range(30))
        )
        assert results.count(True) == 1

    async def test_claims_survive_many_later_claims(self, storage: Storage) -> None:
        # Enough traffic for a backend to purge expired rows on the way: the
        # purge may drop expired digests but never one still in its window.
        assert await storage.claim_signature(b"live", now=NOW, expires_at=NOW + 300)
        assert await storage.claim_signature(b"dead", now=NOW, expires_at=NOW + 1)
        later = NOW + 10
        results = await asyncio.gather(
            *(
                storage.claim_signature(i.to_bytes(4, "big"), now=later, expires_at=later + 60)
                for i in range(1100)
            )
        )
        assert all(results)
        assert not await storage.claim_signature(b"live", now=later, expires_at=later + 60)
        assert await storage.claim_signature(b"dead", now=later, expires_at=later + 60)

    # -- tickets -----------------------------------------------------------------

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

        assert await storage.revoke_ticket(DEMO_CDN, "mine")
        assert await storage.get_ticket(DEMO_CDN, "mine") == dataclasses.replace(mine, active=False)
        # It still exists, so revoking again reports it was found.
        assert await storage.revoke_ticket(DEMO_CDN, "mine")
        assert not await storage.revoke_ticket(DEMO_CDN, "missing")
        # An account cannot revoke another account's ticket by its key.
        assert not await storage.revoke_ticket(DEMO_CDN, "theirs")
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

    async def test_search_is_isolated_by_account(
        self, storage: Storage, searchable: list[Ticket]
    ) -> None:
        found, total = await storage.search_tickets(OTHER_CDN, TicketFilter(), Page())
        assert ([t.key for t in found], total) == (["foreign"], 1)
        assert await storage.search_tickets(999, TicketFilter(), Page()) == ([], 0)

    #: One page more than a listing may hold, and a few rows over.
    OVER_CAP: ClassVar[int] = MAX_PAGE_ROWS + 5

    @pytest.mark.parametrize("page", [Page(), Page(limit=10**12)], ids=["no-limit", "huge-limit"])
    async def test_search_holds_at_most_max_page_rows_but_counts_all(
        self, storage: Storage, demo: Account, page: Page
    ) -> None:
        keys = [f"many.{i:05}" for i in range(self.OVER_CAP)]
        # One at a time: "newest first" is insertion order.
        for i, key in enumerate(keys):
            await storage.insert_ticket(make_ticket(key=key, created_at=NOW + i))
        newest_first = sorted(keys, reverse=True)
        found, total = await storage.search_tickets(DEMO_CDN, TicketFilter(), page)
        assert total == self.OVER_CAP
        assert [t.key for t in found] == newest_first[:MAX_PAGE_ROWS]
        # ``seek`` pages on to the rest, and the total stays the same.
        rest, total = await storage.search_tickets(
            DEMO_CDN, TicketFilter(), dataclasses.replace(page, seek=MAX_PAGE_ROWS)
        )
        assert ([t.key for t in rest], total) == (newest_first[MAX_PAGE_ROWS:], self.OVER_CAP)

    # -- record_check: applying a decision ---------------------------------------------

    async def test_allowed_check_counts_a_use_and_logs_every_field(
        self, storage: Storage, demo: Account
    ) -> None:
        ticket = make_ticket(uses=3)
        await storage.insert_ticket(ticket)
        request = request_for(
            ticket,
            appinst="_definst_",
            pageurl="https://example.com/page",
            refurl="https://example.com/ref",
            server_ip="192.0.2.10",
        )
        outcome = await storage.record_check(request, decide, NOW)
        assert outcome.decision.allowed
        assert outcome.decision.reason is None

        stored = await storage.get_ticket(DEMO_CDN, ticket.key)
        assert stored == dataclasses.replace(ticket, use_count=1, used_at=NOW)

        attempts = await storage.list_attempts(DEMO_CDN, AttemptFilter(), Page())
        assert attempts == [
            Attempt(
                id=outcome.attempt_id,
                cdn=DEMO_CDN,
                at=NOW,
                key=ticket.key,
                password="pw",
                ip=CLIENT,
                video="stream",
                app="demo-live",
                appinst="_definst_",
                pageurl="https://example.com/page",
                refurl="https://example.com/ref",
                success=True,
                reason="",
                server_ip="192.0.2.10",
            )
        ]

    async def test_used_at_follows_the_latest_counted_play(
        self, storage: Storage, demo: Account
    ) -> None:
        ticket = make_ticket()
        await storage.insert_ticket(ticket)
        await storage.record_check(request_for(ticket), decide, NOW)
        await storage.record_check(request_for(ticket), decide, NOW + 30)
        assert await storage.get_ticket(DEMO_CDN, ticket.key) == dataclasses.replace(
            ticket, use_count=2, used_at=NOW + 30
        )

    @pytest.mark.parametrize(
        ("changes", "reason"),
        [
            ({"password": "wrong"}, Reason.INVALID_AUTH_TOKEN),
            ({"app": "demo-other"}, Reason.INVALID_APPLICATION),
            ({"video": "other"}, Reason.INVALID_VIDEO),
            ({"ip": "not-an-address"}, Reason.INVALID_IP),
        ],
        ids=["auth", "app", "video", "ip"],
    )
    async def test_denied_check_logs_the_reason_and_changes_nothing(
        self, storage: Storage, demo: Account, changes: dict[str, str], reason: Reason
    ) -> None:
        ticket = make_ticket(ip="auto", uses=1)
        await storage.insert_ticket(ticket)
        outcome = await storage.record_check(request_for(ticket, **changes), decide, NOW)
        assert outcome.decision == Decision(allowed=False, reason=reason)
        assert await storage.get_ticket(DEMO_CDN, ticket.key) == ticket
        [attempt] = await storage.list_attempts(DEMO_CDN, AttemptFilter(), Page())
        # A known key's attempt belongs to the ticket's account whatever app was sent.
        assert (attempt.id, attempt.cdn, attempt.success, attempt.reason) == (
            outcome.attempt_id,
            DEMO_CDN,
            False,
            reason.value,
        )

    async def test_revoked_and_expired_tickets_are_refused(
        self, storage: Storage, demo: Account
    ) -> None:
        revoked = make_ticket(key="revoked")
        expiring = make_ticket(key="expiring", expire_at=NOW + 10)
        await storage.insert_ticket(revoked)
        await storage.insert_ticket(expiring)
        await storage.revoke_ticket(DEMO_CDN, "revoked")

        outcome = await storage.record_check(request_for(revoked), decide, NOW)
        assert outcome.decision.reason is Reason.TICKET_REVOKED
        # `now` is the caller's, not the backend's clock.
        outcome = await storage.record_check(request_for(expiring), decide, NOW + 10)
        assert outcome.decision.reason is Reason.EXPIRED
        assert await storage.get_ticket(DEMO_CDN, "expiring") == expiring

    async def test_uses_run_out(self, storage: Storage, demo: Account) -> None:
        ticket = make_ticket(uses=2)
        await storage.insert_ticket(ticket)
        reasons = [
            (await storage.record_check(request_for(ticket), decide, NOW + i)).decision.reason
            for i in range(3)
        ]
        assert reasons == [None, None, Reason.USES_EXHAUSTED]
        assert await storage.get_ticket(DEMO_CDN, ticket.key) == dataclasses.replace(
            ticket, use_count=2, used_at=NOW + 1
        )

    async def test_auto_slots_bind_in_order(self, storage: Storage, demo: Account) -> None:
        ticket = make_ticket(ip="auto|auto/24")
        await storage.insert_ticket(ticket)

        async def play(ip: str) -> Decision:
            return (await storage.record_check(request_for(ticket, ip=ip), decide, NOW)).decision

        assert await play("203.0.113.7") == Decision(True, bind="203.0.113.7", count_use=True)
        assert await play("198.51.100.9") == Decision(True, bind="198.51.100.0/24", count_use=True)
        # Bound addresses play again without taking anything.
        assert await play("203.0.113.7") == Decision(True, count_use=True)
        assert await play("198.51.100.200") == Decision(True, count_use=True)
        assert (await play("192.0.2.1")).reason is Reason.INVALID_IP
        stored = await storage.get_ticket(DEMO_CDN, ticket.key)
        assert stored is not None
        assert stored.bound_ips == ("203.0.113.7", "198.51.100.0/24")
        assert stored.use_count == 4

    async def test_unlogged_check_applies_but_writes_no_attempt(
        self, storage: Storage, demo: Account
    ) -> None:
        ticket = make_ticket(ip="auto")
        await storage.insert_ticket(ticket)
        outcome = await storage.record_check(request_for(ticket), decide, NOW, log=False)
        assert outcome.decision.allowed
        assert await storage.get_ticket(DEMO_CDN, ticket.key) == dataclasses.replace(
            ticket, use_count=1, used_at=NOW, bound_ips=(CLIENT,)
        )
        denied = await storage.record_check(
            request_for(ticket, password="x"), decide, NOW, log=False
        )
        assert not denied.decision.allowed
        assert await storage.count_attempts(DEMO_CDN, AttemptFilter()) == 0
        assert await storage.list_attempts(DEMO_CDN, AttemptFilter(), Page()) == []

    async def test_recheck_neither_counts_nor_binds(self, storage: Storage, demo: Account) -> None:
        spent = make_ticket(key="spent", uses=1, use_count=1, used_at=NOW - 50)
        auto = make_ticket(key="auto", ip="auto")
        await storage.insert_ticket(spent)
        await storage.insert_ticket(auto)

        # An open session's re-check passes even with every use spent...
        outcome = await storage.record_check(
            request_for(spent, count_use=False), decide, NOW, log=True
        )
        assert outcome.decision == Decision(allowed=True, count_use=False)
        assert await storage.get_ticket(DEMO_CDN, "spent") == spent
        # ...and cannot take a free auto slot.
        outcome = await storage.record_check(request_for(auto, count_use=False), decide, NOW)
        assert outcome.decision.reason is Reason.INVALID_IP
        assert await storage.get_ticket(DEMO_CDN, "auto") == auto
        # Re-checks are still logged like any attempt.
        assert await storage.count_attempts(DEMO_CDN, AttemptFilter()) == 2

    async def test_decide_sees_the_current_ticket_and_now(
        self, storage: Storage, demo: Account
    ) -> None:
        ticket = make_ticket(ip="auto")
        await storage.insert_ticket(ticket)
        seen: list[tuple[Ticket | None, int]] = []
        await storage.record_check(request_for(ticket), recording(seen), NOW)
        await storage.record_check(request_for(ticket), recording(seen), NOW + 5)
        after_first = dataclasses.replace(ticket, use_count=1, used_at=NOW, bound_ips=(CLIENT,))
        assert seen == [(ticket, NOW), (after_first, NOW + 5)]
        await storage.record_check(request_for(make_ticket(key="unknown")), recording(seen), NOW)
        assert seen[-1] == (None, NOW)

    async def test_disabled_account_revokes_its_tickets_in_checks(
        self, storage: Storage, demo: Account
    ) -> None:
        ticket = make_ticket()
        await storage.insert_ticket(ticket)
        await storage.update_account(DEMO_CDN, disabled=True)
        seen: list[tuple[Ticket | None, int]] = []
        outcome = await storage.record_check(request_for(ticket), recording(seen), NOW)
        assert seen == [(dataclasses.replace(ticket, account_disabled=True), NOW)]
        assert outcome.decision.reason is Reason.TICKET_REVOKED
        assert await storage.get_ticket(DEMO_CDN, ticket.key) == dataclasses.replace(
            ticket, account_disabled=True
        )

        await storage.update_account(DEMO_CDN, disabled=False)
        outcome = await storage.record_check(request_for(ticket), decide, NOW)
        assert outcome.decision.allowed

    # -- record_check: attribution and clipping of the attempt log ---------------------

    @pytest.mark.parametrize(
        ("app", "owner"),
        [
            ("demo-live", DEMO_CDN),
            ("other-vod-x", OTHER_CDN),
            # The username must be followed by "-": a longer name is someone else.
            ("demox-live", None),
            ("demo", None),
            ("nobody-live", None),
            ("", None),
        ],
        ids=["demo", "other", "longer-name", "no-dash", "unknown-user", "empty"],
    )
    async def test_unknown_key_is_attributed_by_app_prefix(
        self, storage: Storage, demo: Account, other: Account, app: str, owner: int | None
    ) -> None:
        request = CheckRequest(key="no-such-key", password="pw", app=app, video="v", ip=CLIENT)
        outcome = await storage.record_check(request, decide, NOW)
        assert outcome.decision == Decision(allowed=False, reason=Reason.INVALID_AUTH_TOKEN)
        for cdn in (DEMO_CDN, OTHER_CDN):
            attempts = await storage.list_attempts(cdn, AttemptFilter(), Page())
            count = await storage.count_attempts(cdn, AttemptFilter())
            if cdn == owner:
                assert [(a.id, a.cdn, a.key) for a in attempts] == [
                    (outcome.attempt_id, cdn, "no-such-key")
                ]
                assert count == 1
            else:
                # An unattributed attempt is logged but no account may see it.
                assert (attempts, count) == ([], 0)

    async def test_long_attempt_fields_are_clipped(self, storage: Storage, demo: Account) -> None:
        limit = MAX_ATTEMPT_FIELD
        request = CheckRequest(
            key="k" * limit,  # exactly the limit: kept whole
            password="p" * (limit + 1),
            app="demo-" + "a" * (3 * limit),  # still attributed to demo
            video="v" * (limit + 500),
            ip="1" * (limit + 2),
            appinst="i" * (2 * limit),
            pageurl="https://example.com/" + "x" * (5 * limit),
            refurl="https://example.com/" + "y" * (5 * limit),
            server_ip="s" * (limit + 1),
        )
        outcome = await storage.record_check(request, decide, NOW)
        assert outcome.decision.reason is Reason.INVALID_AUTH_TOKEN
        [attempt] = await storage.list_attempts(DEMO_CDN, AttemptFilter(), Page())
        for name in (
            "key",
            "password",
            "app",
            "video",
            "ip",
            "appinst",
            "pageurl",
            "refurl",
            "server_ip",
        ):
            sent: str = getattr(request, name)
            assert getattr(attempt, name) == sent[:limit], name

    async def test_attempt_text_round_trips_unchanged(
        self, storage: Storage, demo: Account
    ) -> None:
        # Attempt fields are caller text, logged as sent: quotes, SQL-looking
        # text, control characters and non-ASCII.
        ticket = make_ticket()
        await storage.insert_ticket(ticket)
        odd = 'it\'s "quoted" -- ; DROP TABLE x; \t\n ünïcödé ✓ 🎥'
        request = request_for(ticket, video=odd, pageurl=odd, refurl="%00", appinst="")
        await storage.record_check(request, decide, NOW)
        [attempt] = await storage.list_attempts(DEMO_CDN, AttemptFilter(video=odd), Page())
        assert (attempt.video, attempt.pageurl, attempt.refurl, attempt.appinst) == (
            odd,
            odd,
            "%00",
            "",
        )

    async def test_nul_in_caller_text_does_not_break_a_check(
        self, storage: Storage, demo: Account
    ) -> None:
        # "%00" in a query string or "\u0000" in a JSON body reaches the
        # storage as NUL. Some databases cannot store NUL in text (PostgreSQL),
        # so the logged value may differ, but the viewer's check must still be
        # answered, applied and logged.
        ticket = make_ticket()
        await storage.insert_ticket(ticket)
        outcome = await storage.record_check(
            request_for(ticket, pageurl="a\x00b", refurl="\x00"), decide, NOW
        )
        assert outcome.decision.allowed
        unknown = CheckRequest(key="k\x00", password="p\x00", app="demo-live", video="v", ip=CLIENT)
        denied = await storage.record_check(unknown, decide, NOW)
        assert denied.decision.reason is Reason.INVALID_AUTH_TOKEN
        stored = await storage.get_ticket(DEMO_CDN, ticket.key)
        assert stored is not None and stored.use_count == 1
        attempts = await storage.list_attempts(DEMO_CDN, AttemptFilter(), Page())
        assert [a.id for a in attempts] == [outcome.attempt_id, denied.attempt_id]

    async def test_lone_surrogates_in_caller_text_do_not_break_a_check(
        self, storage: Storage, demo: Account
    ) -> None:
        # A JSON check body may hold "\ud800": json.loads turns it into a lone
        # surrogate, which no UTF-8 database can store as is. The check must
        # still be answered, applied and logged (the text may be replaced),
        # not fail with an encoding error that the web layer answers with 500.
        ticket = make_ticket()
        await storage.insert_ticket(ticket)
        with anyio.fail_after(HANG_LIMIT_S):
            outcome = await storage.record_check(
                request_for(ticket, pageurl="https://example.com/\ud800"), decide, NOW
            )
            unknown = CheckRequest(
                key="\udc80", password="pw", app="demo-live", video="v", ip=CLIENT
            )
            denied = await storage.record_check(unknown, decide, NOW)
        assert outcome.decision.allowed
        assert denied.decision.reason is Reason.INVALID_AUTH_TOKEN
        stored = await storage.get_ticket(DEMO_CDN, ticket.key)
        assert stored is not None and stored.use_count == 1
        attempts = await storage.list_attempts(DEMO_CDN, AttemptFilter(), Page())
        assert [a.id for a in attempts] == [outcome.attempt_id, denied.attempt_id]
        assert attempts[0].key == ticket.key
        for attempt in attempts:
            # Whatever was stored is valid text.
            attempt.pageurl.encode("utf-8")
            attempt.key.encode("utf-8")

    # -- record_check: concurrency ---------------------------------------------------

    async def test_concurrent_checks_spend_exactly_the_uses(
        self, storage: Storage, demo: Account
    ) -> None:
        ticket = make_ticket(uses=5)
        await storage.insert_ticket(ticket)
        outcomes = await asyncio.gather(
            *(storage.record_check(request_for(ticket), decide, NOW) for _ in range(50))
        )
        reasons = [o.decision.reason for o in outcomes]
        assert reasons.count(None) == 5
        assert reasons.count(Reason.USES_EXHAUSTED) == 45
        stored = await storage.get_ticket(DEMO_CDN, ticket.key)
        assert stored is not None and stored.use_count == 5
        assert await storage.count_attempts(DEMO_CDN, AttemptFilter(success=True)) == 5
        assert await storage.count_attempts(DEMO_CDN, AttemptFilter(success=False)) == 45
        # Every logged attempt has its own id.
        assert len({o.attempt_id for o in outcomes}) == 50

    async def test_concurrent_clients_fill_auto_slots_exactly_once(
        self, storage: Storage, demo: Account
    ) -> None:
        ticket = make_ticket(ip="auto|auto")
        await storage.insert_ticket(ticket)
        clients = [f"10.{i}.0.1" for i in range(30)]  # 30 distinct /24s
        outcomes = await asyncio.gather(
            *(storage.record_check(request_for(ticket, ip=ip), decide, NOW) for ip in clients)
        )
        allowed = sorted((o for o in outcomes if o.decision.allowed), key=lambda o: o.attempt_id)
        assert len(allowed) == 2
        assert all(o.decision.reason is Reason.INVALID_IP for o in outcomes if o not in allowed)
        stored = await storage.get_ticket(DEMO_CDN, ticket.key)
        assert stored is not None
        # The slots hold what the two winners bound, in the order they won.
        assert stored.bound_ips == tuple(o.decision.bind for o in allowed)
        assert stored.use_count == 2

    async def test_failing_decider_fails_only_its_own_check(
        self, storage: Storage, demo: Account
    ) -> None:
        ticket = make_ticket()
        await storage.insert_ticket(ticket)
        decider = failing_on_video("boom")
        videos = ["stream"] * 4 + ["boom"] + ["stream"] * 5
        results = await asyncio.gather(
            *(storage.record_check(request_for(ticket, video=v), decider, NOW) for v in videos),
            return_exceptions=True,
        )
        assert isinstance(results[4], DeciderFailure)
        succeeded = [r for i, r in enumerate(results) if i != 4]
        assert all(not isinstance(r, BaseException) and r.decision.allowed for r in succeeded)
        # The neighbours' work is persisted; the failed call left no trace.
        stored = await storage.get_ticket(DEMO_CDN, ticket.key)
        assert stored is not None and stored.use_count == 9
        attempts = await storage.list_attempts(DEMO_CDN, AttemptFilter(), Page())
        assert len(attempts) == 9
        assert all(a.video == "stream" for a in attempts)
        # And the storage keeps working afterwards.
        assert (await storage.record_check(request_for(ticket), decide, NOW)).decision.allowed

    async def test_decider_raising_a_base_exception_does_not_wedge_writes(
        self, storage: Storage, demo: Account
    ) -> None:
        # Whatever escapes the decider must reach its own caller and leave the
        # storage usable: a backend that loses its writer here would hang every
        # later write while ping (a read) still reports healthy.
        def abort(ticket: Ticket | None, request: CheckRequest, now: int) -> Decision:
            raise DeciderAbort

        ticket = make_ticket()
        await storage.insert_ticket(ticket)
        with anyio.fail_after(HANG_LIMIT_S), pytest.raises(DeciderAbort):
            await storage.record_check(request_for(ticket), abort, NOW)
        with anyio.fail_after(HANG_LIMIT_S):
            outcome = await storage.record_check(request_for(ticket), decide, NOW)
        assert outcome.decision.allowed
        assert await storage.count_attempts(DEMO_CDN, AttemptFilter()) == 1

    # -- list_attempts / count_attempts -------------------------------------------------

    @pytest.fixture
    async def attempt_log(self, storage: Storage, demo: Account, other: Account) -> list[int]:
        """Record ``LOG_ROWS`` in order; the attempt id of each row."""
        await storage.insert_ticket(make_ticket(key="k1", password="p1", video="a"))
        await storage.insert_ticket(make_ticket(key="k2", password="p2", video="b"))
        await storage.insert_ticket(
            make_ticket(key="k3", cdn=OTHER_CDN, password="p3", app="other-live", video="a")
        )
        ids = []
        for at, key, password, app, video, ip in LOG_ROWS:
            request = CheckRequest(key=key, password=password, app=app, video=video, ip=ip)
            ids.append((await storage.record_check(request, decide, at)).attempt_id)
        return ids

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
            *(storage.record_check(request_for(ticket), decide, NOW) for _ in range(self.OVER_CAP))
        )
        ids = sorted(outcome.attempt_id for outcome in outcomes)
        if newest_first:
            ids.reverse()
        where = AttemptFilter(key="busy")
        assert await storage.count_attempts(DEMO_CDN, where) == self.OVER_CAP
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

    # -- attempt statistics ------------------------------------------------------

    @pytest.mark.parametrize("bucket", [1, 7, 20, 3600])
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

    # -- control-panel sign-in ---------------------------------------------------

    async def test_panel_password_set_replace_clear(
        self, storage: Storage, demo: Account, other: Account
    ) -> None:
        assert await storage.get_panel_password(DEMO_CDN) is None
        assert await storage.set_panel_password(DEMO_CDN, "scrypt$first", now=NOW)
        assert await storage.get_panel_password(DEMO_CDN) == "scrypt$first"
        assert await storage.set_panel_password(DEMO_CDN, "scrypt$second", now=NOW + 1)
        assert await storage.get_panel_password(DEMO_CDN) == "scrypt$second"
        assert await storage.get_panel_password(OTHER_CDN) is None
        assert await storage.set_panel_password(DEMO_CDN, None, now=NOW + 2)
        assert await storage.get_panel_password(DEMO_CDN) is None
        # Clearing twice is fine; an unknown account is reported, not created.
        assert await storage.set_panel_password(DEMO_CDN, None, now=NOW + 3)
        assert not await storage.set_panel_password(999, "scrypt$x", now=NOW)
        assert await storage.get_panel_password(999) is None

    async def test_panel_session_round_trip_and_touch(
        self, storage: Storage, demo: Account
    ) -> None:
        session = PanelSession(b"\x00\xff" * 16, DEMO_CDN, NOW, NOW)
        await storage.create_panel_session(session)
        assert await storage.get_panel_session(session.token_hash) == session
        assert await storage.get_panel_session(b"\x00" * 32) is None
        await storage.touch_panel_session(session.token_hash, now=NOW + 30)
        touched = dataclasses.replace(session, seen_at=NOW + 30)
        assert await storage.get_panel_session(session.token_hash) == touched
        # A late touch from another node never moves seen_at back.
        await storage.touch_panel_session(session.token_hash, now=NOW + 10)
        assert await storage.get_panel_session(session.token_hash) == touched
        # Touching an unknown token does nothing (and does not create one).
        await storage.touch_panel_session(b"\x01" * 32, now=NOW)
        assert await storage.get_panel_session(b"\x01" * 32) is None

    async def test_panel_session_tokens_are_unique(self, storage: Storage, demo: Account) -> None:
        session = PanelSession(b"s" * 32, DEMO_CDN, NOW, NOW)
        await storage.create_panel_session(session)
        with pytest.raises(AlreadyExists):
            await storage.create_panel_session(dataclasses.replace(session, created_at=NOW + 1))
        assert await storage.get_panel_session(session.token_hash) == session

    async def test_panel_sessions_delete_by_any_criterion(
        self, storage: Storage, demo: Account, other: Account
    ) -> None:
        sessions = {
            "fresh": PanelSession(b"a" * 32, DEMO_CDN, NOW, NOW + 100),
            "idle": PanelSession(b"b" * 32, DEMO_CDN, NOW, NOW + 10),
            "old": PanelSession(b"c" * 32, OTHER_CDN, NOW - 1000, NOW + 100),
            "other": PanelSession(b"d" * 32, OTHER_CDN, NOW, NOW + 100),
        }
        for session in sessions.values():
            await storage.create_panel_session(session)

        async def left() -> set[str]:
            return {
                name
                for name, s in sessions.items()
                if await storage.get_panel_session(s.token_hash) is not None
            }

        assert await storage.delete_panel_sessions() == 0
        assert await left() == set(sessions)
        # Expiry: idle since before, or created before; either one is enough.
        assert await storage.delete_panel_sessions(seen_before=NOW + 50, created_before=NOW) == 2
        assert await left() == {"fresh", "other"}
        assert await storage.delete_panel_sessions(token_hash=sessions["fresh"].token_hash) == 1
        assert await storage.delete_panel_sessions(token_hash=sessions["fresh"].token_hash) == 0
        assert await left() == {"other"}
        assert await storage.delete_panel_sessions(cdn=DEMO_CDN) == 0
        assert await storage.delete_panel_sessions(cdn=OTHER_CDN) == 1
        assert await left() == set()

    async def test_panel_state_survives_reopen(self, storage: Storage, demo: Account) -> None:
        session = PanelSession(b"r" * 32, DEMO_CDN, NOW, NOW)
        await storage.create_panel_session(session)
        assert await storage.set_panel_password(DEMO_CDN, "scrypt$kept", now=NOW)
        await storage.close()
        await storage.open()
        assert await storage.get_panel_session(session.token_hash) == session
        assert await storage.get_panel_password(DEMO_CDN) == "scrypt$kept"

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


class TestSQLite(StorageContract):
    # A fresh file ends at the newest migration shipped, however many there are.
    expected_schema_version = migrations.load("sqlite")[-1].version

    @pytest.fixture
    async def storage(self, tmp_path: Path) -> AsyncIterator[Storage]:
        s = SQLiteStorage(str(tmp_path / "c.db"))
        await s.open()
        yield s
        await s.close()


class TestPostgres(StorageContract):
    # A fresh database (cloned from the session's migrated template) ends at
    # the newest migration shipped.
    expected_schema_version = migrations.load("postgresql")[-1].version

    @pytest.fixture
    async def storage(self, pg_url: str) -> AsyncIterator[Storage]:
        s = PostgresStorage(pg_url)
        await s.open()
        yield s
        await s.close()
