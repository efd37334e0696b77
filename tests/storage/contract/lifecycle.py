"""The storage contract: opening, reopening and closing a backend."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from functools import partial

import anyio
import pytest

from tests.helpers import DEMO_CDN, NOW, make_ticket, request_for
from tests.storage.contract.base import HANG_LIMIT_S, ContractBase
from usher.protocol.errors import StorageUnavailable
from usher.storage.base import Claim, PanelSession, PanelSessionFilter, SessionFilter, Storage
from usher.tickets.decision import decide
from usher.tickets.model import Account, AttemptFilter, EndReason, Page, TicketFilter

DEMO = Account(DEMO_CDN, "demo", "DEMOKEY", "demo-secret")

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
    (
        "claim_signature",
        lambda s: s.claim_signature(b"d" * 32, now=NOW, expires_at=NOW + 60, account=DEMO),
    ),
    ("insert_ticket", lambda s: s.insert_ticket(make_ticket(key="late"))),
    ("get_ticket", lambda s: s.get_ticket(DEMO_CDN, "stream.0001")),
    ("revoke_ticket", lambda s: s.revoke_ticket(DEMO_CDN, "stream.0001", now=NOW)),
    ("search_tickets", lambda s: s.search_tickets(DEMO_CDN, TicketFilter(), Page())),
    ("record_check", lambda s: s.record_check(request_for(make_ticket()), decide, NOW)),
    ("list_attempts", lambda s: s.list_attempts(DEMO_CDN, AttemptFilter(), Page())),
    ("count_attempts", lambda s: s.count_attempts(DEMO_CDN, AttemptFilter())),
    ("lookup_ticket", lambda s: s.lookup_ticket("stream.0001")),
    ("lookup_session", lambda s: s.lookup_session(handle="http:0")),
    ("renew_session", lambda s: s.renew_session("http:0", now=NOW, expires_at=NOW + 60)),
    (
        "end_sessions",
        lambda s: s.end_sessions(now=NOW, reason=EndReason.DONE, handle="http:0"),
    ),
    ("sweep_sessions", lambda s: s.sweep_sessions(NOW)),
    ("count_viewers", lambda s: s.count_viewers(["k"], NOW)),
    ("count_open_sessions", lambda s: s.count_open_sessions(NOW)),
    ("list_sessions", lambda s: s.list_sessions(DEMO_CDN, SessionFilter(), Page(), NOW)),
    ("prune_sessions", lambda s: s.prune_sessions(NOW, 10)),
    (
        "attempt_timeline",
        lambda s: s.attempt_timeline(DEMO_CDN, AttemptFilter(start=NOW, end=NOW + 60), 60),
    ),
    ("minute_tail", lambda s: s.minute_tail(DEMO_CDN, NOW - NOW % 60)),
    ("top_attempt_values", lambda s: s.top_attempt_values(DEMO_CDN, AttemptFilter(), "ip", 5)),
    ("set_panel_password", lambda s: s.set_panel_password(DEMO_CDN, "h", now=NOW)),
    ("get_panel_password", lambda s: s.get_panel_password(DEMO_CDN)),
    (
        "create_panel_session",
        lambda s: s.create_panel_session(PanelSession(b"t" * 32, DEMO_CDN, NOW, NOW)),
    ),
    ("get_panel_session", lambda s: s.get_panel_session(b"t" * 32)),
    ("touch_panel_session", lambda s: s.touch_panel_session(b"t" * 32, now=NOW)),
    ("delete_panel_sessions", lambda s: s.delete_panel_sessions(PanelSessionFilter(cdn=DEMO_CDN))),
]


class LifecycleContract(ContractBase):
    """A fresh backend is ready; a closed one fails fast; reopening loses nothing."""

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
        claim = partial(storage.claim_signature, b"sig", now=NOW, expires_at=NOW + 60, account=demo)
        assert await claim() is Claim.SPENT
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
        assert await claim() is Claim.REPLAYED

    @pytest.mark.parametrize(("name", "op"), CLOSED_OPS, ids=[name for name, _ in CLOSED_OPS])
    async def test_closed_storage_raises_unavailable(
        self, storage: Storage, demo: Account, name: str, op: Callable[[Storage], Awaitable[object]]
    ) -> None:
        await storage.close()
        with anyio.fail_after(HANG_LIMIT_S), pytest.raises(StorageUnavailable):
            await op(storage)

    async def test_writes_racing_close_either_persist_or_fail_cleanly(
        self, storage: Storage, demo: Account
    ) -> None:
        # close() must finish writes already handed to the backend. A write
        # that arrives too late may fail, but only with StorageUnavailable,
        # and nothing may hang or claim success without being durable.
        digests = [i.to_bytes(4, "big") for i in range(20)]
        tasks = [
            asyncio.ensure_future(
                storage.claim_signature(d, now=NOW, expires_at=NOW + 60, account=demo)
            )
            for d in digests
        ]
        await asyncio.sleep(0)  # let every claim reach the backend
        with anyio.fail_after(HANG_LIMIT_S):
            await storage.close()
            results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            assert result is Claim.SPENT or isinstance(result, StorageUnavailable), result
        await storage.open()
        for digest, result in zip(digests, results, strict=True):
            if result is Claim.SPENT:
                replayed = await storage.claim_signature(
                    digest, now=NOW, expires_at=NOW + 60, account=demo
                )
                assert replayed is Claim.REPLAYED
