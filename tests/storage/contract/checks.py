"""The storage contract: ``record_check``, applying a decision and logging the attempt."""

from __future__ import annotations

import asyncio
import dataclasses

import anyio
import pytest

from tests.helpers import CLIENT, DEMO_CDN, NOW, OTHER_CDN, DeciderAbort, make_ticket, request_for
from tests.storage.contract.base import HANG_LIMIT_S, ContractBase
from usher.storage.base import MAX_ATTEMPT_FIELD, Decider, Storage
from usher.tickets.decision import decide
from usher.tickets.model import (
    Account,
    Attempt,
    AttemptFilter,
    CheckRequest,
    Decision,
    Page,
    Reason,
    Ticket,
)


def recording(seen: list[tuple[Ticket | None, int]]) -> Decider:
    """``decide``, remembering the ticket state and time each call was given."""

    def run(ticket: Ticket | None, request: CheckRequest, now: int) -> Decision:
        seen.append((ticket, now))
        return decide(ticket, request, now)

    return run


class DeciderFailure(RuntimeError):
    """Raised by a test decider; must reach only the call that triggered it."""


def failing_on_video(video: str) -> Decider:
    def run(ticket: Ticket | None, request: CheckRequest, now: int) -> Decision:
        if request.video == video:
            raise DeciderFailure(video)
        return decide(ticket, request, now)

    return run


class ChecksContract(ContractBase):
    """Playback checks: use counting, binding, attribution, clipping and concurrency."""

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
        await storage.revoke_ticket(DEMO_CDN, "revoked", now=NOW)

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

    async def test_unstorable_text_is_stored_as_the_replacement_character_everywhere(
        self, storage: Storage, demo: Account
    ) -> None:
        # One rule on every backend (usher.tickets.text.storable): NUL and
        # lone surrogates become U+FFFD, in stored rows and in filters alike,
        # so the same attempt reads back the same and a filter for the value
        # as sent finds it.
        ticket = make_ticket(video="v\x00\ud800")
        await storage.insert_ticket(ticket)
        sent = request_for(ticket, video="v\x00\ud800", pageurl="p\udc80\x00")
        outcome = await storage.record_check(sent, decide, NOW)
        assert outcome.decision.allowed
        [attempt] = await storage.list_attempts(DEMO_CDN, AttemptFilter(), Page())
        assert (attempt.video, attempt.pageurl) == ("v\ufffd\ufffd", "p\ufffd\ufffd")
        stored = await storage.get_ticket(DEMO_CDN, ticket.key)
        assert stored is not None and stored.video == "v\ufffd\ufffd"
        for video in ("v\x00\ud800", "v\ufffd\ufffd"):
            where = AttemptFilter(video=video)
            assert await storage.count_attempts(DEMO_CDN, where) == 1
            assert len(await storage.list_attempts(DEMO_CDN, where, Page())) == 1

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
