"""The storage contract: playback sessions (``open_session`` and friends).

What the integrations rely on: the first request of a session counts one use
and logs one attempt, atomically with creating the session; later requests
of a live session count and log nothing unless refused; concurrent openers,
from any process or node, count one use between them; lookups are reads that
show revocations at once.
"""

from __future__ import annotations

import asyncio
import dataclasses

from tests.helpers import CLIENT, DEMO_CDN, NOW, session_ticket, viewer
from tests.storage.contract.base import ContractBase
from usher.storage.base import SessionTerms, Storage
from usher.tickets.decision import decide
from usher.tickets.model import Account, AttemptFilter, Page, PlaybackSession, Reason

TTL = 120
SID = "http:" + "ab" * 32
#: The terms the HTTP integrations open with, and the RTMP ones.
RESUMABLE = SessionTerms(SID, ttl=TTL, reuse=True)
FRESH = SessionTerms(SID, ttl=TTL, reuse=False)


async def attempts(storage: Storage, key: str) -> list[tuple[bool, str]]:
    found = await storage.list_attempts(DEMO_CDN, AttemptFilter(key=key), Page())
    return [(a.success, a.reason) for a in found]


class SessionContract(ContractBase):
    """Playback sessions (``open_session`` and friends) on any backend."""

    async def test_first_request_counts_and_logs_later_ones_do_not(
        self, storage: Storage, demo: Account
    ) -> None:
        ticket = session_ticket(uses=3)
        await storage.insert_ticket(ticket)
        first = await storage.open_session(viewer(ticket), decide, NOW, RESUMABLE)
        assert first.decision.allowed and not first.resumed
        assert first.attempt_id > 0
        assert first.session == PlaybackSession(
            id=SID,
            key=ticket.key,
            cdn=DEMO_CDN,
            ip=CLIENT,
            app="demo-vod",
            video="movie",
            created_at=NOW,
            expires_at=NOW + TTL,
        )
        assert first.ticket is not None and first.ticket.use_count == 1
        for step in (10, 50, 100):
            later = await storage.open_session(viewer(ticket), decide, NOW + step, RESUMABLE)
            assert later.decision.allowed and later.resumed
            assert later.attempt_id == 0
            # The window slides: each request renews it.
            assert later.session is not None and later.session.expires_at == NOW + step + TTL
        stored = await storage.get_ticket(DEMO_CDN, ticket.key)
        assert stored is not None and stored.use_count == 1 and stored.used_at == NOW
        assert await attempts(storage, ticket.key) == [(True, "")]

    async def test_an_expired_session_costs_a_new_use(
        self, storage: Storage, demo: Account
    ) -> None:
        ticket = session_ticket(uses=2)
        await storage.insert_ticket(ticket)
        await storage.open_session(viewer(ticket), decide, NOW, RESUMABLE)
        # expires_at is exclusive: at NOW + TTL the session is over.
        again = await storage.open_session(viewer(ticket), decide, NOW + TTL, RESUMABLE)
        assert again.decision.allowed and not again.resumed
        third = await storage.open_session(viewer(ticket), decide, NOW + 3 * TTL, RESUMABLE)
        assert third.decision.reason is Reason.USES_EXHAUSTED and third.session is None
        assert await attempts(storage, ticket.key) == [
            (True, ""),
            (True, ""),
            (False, Reason.USES_EXHAUSTED.value),
        ]

    async def test_without_reuse_every_open_counts(self, storage: Storage, demo: Account) -> None:
        ticket = session_ticket()
        await storage.insert_ticket(ticket)
        for _ in range(3):
            outcome = await storage.open_session(viewer(ticket), decide, NOW, FRESH)
            assert outcome.decision.allowed and not outcome.resumed
        stored = await storage.get_ticket(DEMO_CDN, ticket.key)
        assert stored is not None and stored.use_count == 3
        assert len(await attempts(storage, ticket.key)) == 3

    async def test_a_refused_first_request_is_logged_and_opens_nothing(
        self, storage: Storage, demo: Account
    ) -> None:
        ticket = session_ticket()
        await storage.insert_ticket(ticket)
        outcome = await storage.open_session(
            viewer(ticket, password="wrong"), decide, NOW, RESUMABLE
        )
        assert outcome.decision.reason is Reason.INVALID_AUTH_TOKEN
        assert outcome.session is None and not outcome.resumed and outcome.attempt_id > 0
        assert await storage.lookup_session(SID) is None
        assert await attempts(storage, ticket.key) == [(False, Reason.INVALID_AUTH_TOKEN.value)]

    async def test_a_refused_recheck_is_logged_and_leaves_the_session(
        self, storage: Storage, demo: Account
    ) -> None:
        ticket = session_ticket()
        await storage.insert_ticket(ticket)
        await storage.open_session(viewer(ticket), decide, NOW, RESUMABLE)
        # A wrong password from the same address must not end the viewer's session.
        wrong = await storage.open_session(
            viewer(ticket, password="guess"),
            decide,
            NOW + 1,
            RESUMABLE,
        )
        assert wrong.decision.reason is Reason.INVALID_AUTH_TOKEN and wrong.resumed
        assert wrong.attempt_id > 0
        assert await storage.revoke_ticket(DEMO_CDN, ticket.key)
        revoked = await storage.open_session(viewer(ticket), decide, NOW + 2, RESUMABLE)
        assert revoked.decision.reason is Reason.TICKET_REVOKED and revoked.resumed
        found = await storage.lookup_session(SID)
        assert found is not None and found[0].expires_at == NOW + TTL
        assert await attempts(storage, ticket.key) == [
            (True, ""),
            (False, Reason.INVALID_AUTH_TOKEN.value),
            (False, Reason.TICKET_REVOKED.value),
        ]

    async def test_concurrent_first_requests_count_one_use(
        self, storage: Storage, demo: Account
    ) -> None:
        ticket = session_ticket(uses=5)
        await storage.insert_ticket(ticket)
        outcomes = await asyncio.gather(
            *(storage.open_session(viewer(ticket), decide, NOW, RESUMABLE) for _ in range(30))
        )
        assert all(o.decision.allowed for o in outcomes)
        assert sum(not o.resumed for o in outcomes) == 1
        stored = await storage.get_ticket(DEMO_CDN, ticket.key)
        assert stored is not None and stored.use_count == 1
        assert await attempts(storage, ticket.key) == [(True, "")]

    async def test_outcome_and_lookup_hold_the_ticket_after_binding(
        self, storage: Storage, demo: Account
    ) -> None:
        ticket = session_ticket(ip="auto")
        await storage.insert_ticket(ticket)
        outcome = await storage.open_session(viewer(ticket), decide, NOW, RESUMABLE)
        assert outcome.ticket is not None
        assert outcome.ticket.bound_ips == (CLIENT,) and outcome.ticket.use_count == 1
        found = await storage.lookup_session(SID)
        assert found is not None
        session, current = found
        assert session == outcome.session and current == outcome.ticket
        # So a re-check against it passes without binding anything.
        recheck = viewer(ticket, count_use=False)
        assert decide(current, recheck, NOW + 1).allowed
        assert not decide(current, dataclasses.replace(recheck, ip="198.51.100.1"), NOW).allowed

    async def test_lookups_show_revocation_and_disabled_accounts_at_once(
        self, storage: Storage, demo: Account
    ) -> None:
        ticket = session_ticket()
        await storage.insert_ticket(ticket)
        await storage.open_session(viewer(ticket), decide, NOW, RESUMABLE)
        looked = await storage.lookup_ticket(ticket.key)
        assert looked == dataclasses.replace(ticket, use_count=1, used_at=NOW)
        await storage.update_account(DEMO_CDN, disabled=True)
        looked = await storage.lookup_ticket(ticket.key)
        assert looked is not None and looked.account_disabled
        await storage.revoke_ticket(DEMO_CDN, ticket.key)
        found = await storage.lookup_session(SID)
        assert found is not None and found[1] is not None
        assert not found[1].active and found[1].account_disabled
        assert await storage.lookup_ticket("no.such.key") is None
        assert await storage.lookup_session("http:" + "00" * 32) is None

    async def test_lookup_ticket_finds_every_account(
        self, storage: Storage, demo: Account, other: Account
    ) -> None:
        theirs = session_ticket(key="theirs.1", cdn=other.cdn, app="other-vod")
        await storage.insert_ticket(theirs)
        assert await storage.lookup_ticket("theirs.1") == theirs

    async def test_renew_never_moves_expiry_back(self, storage: Storage, demo: Account) -> None:
        ticket = session_ticket()
        await storage.insert_ticket(ticket)
        await storage.open_session(viewer(ticket), decide, NOW, RESUMABLE)
        assert await storage.renew_session(SID, expires_at=NOW + 500)
        # Two nodes may renew out of order: the earlier expiry loses.
        assert await storage.renew_session(SID, expires_at=NOW + 200)
        found = await storage.lookup_session(SID)
        assert found is not None and found[0].expires_at == NOW + 500
        assert not await storage.renew_session("http:" + "00" * 32, expires_at=NOW + 500)

    async def test_close_is_idempotent_and_ends_the_session(
        self, storage: Storage, demo: Account
    ) -> None:
        ticket = session_ticket(uses=2)
        await storage.insert_ticket(ticket)
        await storage.open_session(viewer(ticket), decide, NOW, RESUMABLE)
        assert await storage.close_session(SID)
        assert not await storage.close_session(SID)
        assert await storage.lookup_session(SID) is None
        # The next request is a new playback start.
        again = await storage.open_session(viewer(ticket), decide, NOW + 1, RESUMABLE)
        assert again.decision.allowed and not again.resumed

    async def test_sessions_are_independent_and_survive_reopen(
        self, storage: Storage, demo: Account
    ) -> None:
        ticket = session_ticket()
        await storage.insert_ticket(ticket)
        other_sid = "http:" + "cd" * 32
        await storage.open_session(viewer(ticket), decide, NOW, RESUMABLE)
        await storage.open_session(
            viewer(ticket, ip="198.51.100.9"),
            decide,
            NOW,
            SessionTerms(other_sid, ttl=TTL, reuse=True),
        )
        assert await storage.close_session(other_sid)
        await storage.close()
        await storage.open()
        found = await storage.lookup_session(SID)
        assert found is not None and found[0].ip == CLIENT
        assert await storage.lookup_session(other_sid) is None
        stored = await storage.get_ticket(DEMO_CDN, ticket.key)
        assert stored is not None and stored.use_count == 2
