"""The storage contract: live sessions.

What the endpoints rely on: a start counts one use, logs one attempt and
opens its session atomically; later signs of life count and log nothing
unless refused; concurrent starts, from any process or node, count one use
per handle and open at most ``max_viewers`` sessions per ticket; ended
sessions stay as history; kicks, revokes, end notices and sweeps end them.
"""

from __future__ import annotations

import asyncio
import dataclasses

from tests.helpers import CLIENT, DEMO_CDN, NOW, session_ticket, viewer
from tests.storage.contract.base import ContractBase
from usher.storage.base import SessionFilter, Storage
from usher.tickets.decision import decide
from usher.tickets.model import (
    Account,
    AttemptFilter,
    EndReason,
    Page,
    PlaybackSession,
    Reason,
    SessionStart,
)

TTL = 120
HANDLE = "http:" + "ab" * 32


def hls(session_id: str = "s-1", handle: str = HANDLE) -> SessionStart:
    """The start an HTTP endpoint makes: a sign of life of an open session."""
    return SessionStart(session_id, handle, "hls", TTL, resume=True)


def rtmp(session_id: str = "r-1", handle: str = "rtmp:1") -> SessionStart:
    """The start nginx-rtmp makes: an open session under the handle is a leftover."""
    return SessionStart(session_id, handle, "rtmp", TTL, resume=False)


async def attempts(storage: Storage, key: str) -> list[tuple[bool, str]]:
    found = await storage.list_attempts(DEMO_CDN, AttemptFilter(key=key), Page())
    return [(a.success, a.reason) for a in found]


async def session(storage: Storage, session_id: str) -> PlaybackSession:
    found = await storage.lookup_session(session_id=session_id)
    assert found is not None
    return found[0]


class SessionContract(ContractBase):
    """Live sessions on any backend."""

    async def test_a_start_counts_logs_and_opens_later_ones_do_not(
        self, storage: Storage, demo: Account
    ) -> None:
        ticket = session_ticket(uses=3)
        await storage.insert_ticket(ticket)
        first = await storage.record_check(viewer(ticket), decide, NOW, session=hls())
        assert first.decision.allowed and not first.resumed and first.attempt_id > 0
        assert first.session == PlaybackSession(
            id="s-1",
            handle=HANDLE,
            cdn=DEMO_CDN,
            key=ticket.key,
            ip=CLIENT,
            app="demo-vod",
            video="movie",
            protocol="hls",
            started_at=NOW,
            last_seen_at=NOW,
            expires_at=NOW + TTL,
        )
        for step in (10, 50, 100):
            later = await storage.record_check(
                viewer(ticket), decide, NOW + step, session=hls(f"s-{step}")
            )
            assert later.decision.allowed and later.resumed and later.attempt_id == 0
            # The window slides: each sign of life renews it, under the first id.
            assert later.session is not None and later.session.id == "s-1"
            assert later.session.expires_at == NOW + step + TTL
        stored = await storage.get_ticket(DEMO_CDN, ticket.key)
        assert stored is not None and stored.use_count == 1 and stored.used_at == NOW
        assert await attempts(storage, ticket.key) == [(True, "")]
        assert (await session(storage, "s-1")).last_seen_at == NOW + 100

    async def test_a_silent_session_ends_idle_and_the_next_request_starts_anew(
        self, storage: Storage, demo: Account
    ) -> None:
        ticket = session_ticket(uses=2)
        await storage.insert_ticket(ticket)
        await storage.record_check(viewer(ticket), decide, NOW, session=hls("a"))
        # expires_at is exclusive: at NOW + TTL the session is over.
        again = await storage.record_check(viewer(ticket), decide, NOW + TTL, session=hls("b"))
        assert again.decision.allowed and not again.resumed
        first = await session(storage, "a")
        assert not first.is_open(NOW + TTL)
        assert first.ending(NOW + TTL) == (NOW + TTL, "idle")
        third = await storage.record_check(viewer(ticket), decide, NOW + 3 * TTL, session=hls("c"))
        assert third.decision.reason is Reason.USES_EXHAUSTED and third.session is None
        assert await attempts(storage, ticket.key) == [
            (True, ""),
            (True, ""),
            (False, Reason.USES_EXHAUSTED.value),
        ]

    async def test_a_leftover_rtmp_session_is_ended_and_every_play_counts(
        self, storage: Storage, demo: Account
    ) -> None:
        ticket = session_ticket()
        await storage.insert_ticket(ticket)
        for n in range(3):
            outcome = await storage.record_check(viewer(ticket), decide, NOW, session=rtmp(f"r{n}"))
            assert outcome.decision.allowed and not outcome.resumed
        stored = await storage.get_ticket(DEMO_CDN, ticket.key)
        assert stored is not None and stored.use_count == 3
        assert [(await session(storage, f"r{n}")).end_reason for n in range(3)] == [
            "done",
            "done",
            None,
        ]
        assert await storage.count_viewers([ticket.key], NOW) == {ticket.key: 1}

    async def test_a_refused_start_is_logged_and_opens_nothing(
        self, storage: Storage, demo: Account
    ) -> None:
        ticket = session_ticket()
        await storage.insert_ticket(ticket)
        outcome = await storage.record_check(
            viewer(ticket, password="wrong"), decide, NOW, session=hls()
        )
        assert outcome.decision.reason is Reason.INVALID_AUTH_TOKEN
        assert outcome.session is None and not outcome.resumed and outcome.attempt_id > 0
        assert await storage.lookup_session(handle=HANDLE) is None
        assert await attempts(storage, ticket.key) == [(False, Reason.INVALID_AUTH_TOKEN.value)]

    async def test_a_refused_sign_of_life_is_logged_and_a_revoke_ends_the_session(
        self, storage: Storage, demo: Account
    ) -> None:
        ticket = session_ticket()
        await storage.insert_ticket(ticket)
        await storage.record_check(viewer(ticket), decide, NOW, session=hls())
        # A wrong password from the same address must not end the viewer's session.
        wrong = await storage.record_check(
            viewer(ticket, password="guess"), decide, NOW + 1, session=hls("s-2")
        )
        assert wrong.decision.reason is Reason.INVALID_AUTH_TOKEN and wrong.resumed
        assert wrong.attempt_id > 0
        assert (await session(storage, "s-1")).is_open(NOW + 1)
        assert await storage.revoke_ticket(DEMO_CDN, ticket.key, now=NOW + 2)
        ended = await session(storage, "s-1")
        assert (ended.ended_at, ended.end_reason) == (NOW + 2, "revoked")
        # The viewer's next request is a refused start, logged with the ticket's reason.
        revoked = await storage.record_check(viewer(ticket), decide, NOW + 3, session=hls("s-3"))
        assert revoked.decision.reason is Reason.TICKET_REVOKED and revoked.session is None
        assert await attempts(storage, ticket.key) == [
            (True, ""),
            (False, Reason.INVALID_AUTH_TOKEN.value),
            (False, Reason.TICKET_REVOKED.value),
        ]

    async def test_an_expired_ticket_ends_its_session_at_the_next_sign_of_life(
        self, storage: Storage, demo: Account
    ) -> None:
        ticket = session_ticket(expire_at=NOW + 60)
        await storage.insert_ticket(ticket)
        await storage.record_check(viewer(ticket), decide, NOW, session=hls())
        late = await storage.record_check(viewer(ticket), decide, NOW + 60, session=hls("s-2"))
        assert late.decision.reason is Reason.EXPIRED and late.resumed
        ended = await session(storage, "s-1")
        assert (ended.ended_at, ended.end_reason) == (NOW + 60, "expired")

    async def test_max_viewers_counts_open_sessions_and_frees_ended_ones(
        self, storage: Storage, demo: Account
    ) -> None:
        ticket = session_ticket(max_viewers=2)
        await storage.insert_ticket(ticket)
        for n in range(2):
            allowed = await storage.record_check(
                viewer(ticket, ip=f"198.51.100.{n}"), decide, NOW, session=hls(f"v{n}", f"h{n}")
            )
            assert allowed.decision.allowed
        third = await storage.record_check(
            viewer(ticket, ip="198.51.100.9"), decide, NOW, session=hls("v9", "h9")
        )
        assert third.decision.reason is Reason.TOO_MANY_VIEWERS and third.session is None
        # A sign of life of an open session is not a start: rule 8 does not apply.
        again = await storage.record_check(
            viewer(ticket, ip="198.51.100.0"), decide, NOW + 1, session=hls("x", "h0")
        )
        assert again.decision.allowed and again.resumed
        ended = await storage.end_sessions(now=NOW + 2, reason=EndReason.DONE, handle="h1")
        assert [s.id for s in ended] == ["v1"]
        fourth = await storage.record_check(
            viewer(ticket, ip="198.51.100.9"), decide, NOW + 3, session=hls("v9b", "h9")
        )
        assert fourth.decision.allowed
        assert await attempts(storage, ticket.key) == [
            (True, ""),
            (True, ""),
            (False, Reason.TOO_MANY_VIEWERS.value),
            (True, ""),
        ]
        assert await storage.count_viewers([ticket.key, "nobody"], NOW + 3) == {ticket.key: 2}

    async def test_concurrent_starts_respect_max_viewers_and_one_use_per_handle(
        self, storage: Storage, demo: Account
    ) -> None:
        ticket = session_ticket(max_viewers=3)
        await storage.insert_ticket(ticket)
        outcomes = await asyncio.gather(
            *(
                storage.record_check(
                    viewer(ticket, ip=f"198.51.100.{n}"),
                    decide,
                    NOW,
                    session=rtmp(f"c{n}", f"h{n}"),
                )
                for n in range(40)
            )
        )
        assert sum(o.decision.allowed for o in outcomes) == 3
        assert {o.decision.reason for o in outcomes if not o.decision.allowed} == {
            Reason.TOO_MANY_VIEWERS
        }
        same = session_ticket(key="hls.0002", uses=5)
        await storage.insert_ticket(same)
        many = await asyncio.gather(
            *(
                storage.record_check(viewer(same), decide, NOW, session=hls(f"d{n}", "one"))
                for n in range(30)
            )
        )
        assert all(o.decision.allowed for o in many)
        assert sum(not o.resumed for o in many) == 1
        stored = await storage.get_ticket(DEMO_CDN, same.key)
        assert stored is not None and stored.use_count == 1

    async def test_kicks_end_open_sessions_of_the_account_only(
        self, storage: Storage, demo: Account, other: Account
    ) -> None:
        ticket = session_ticket()
        await storage.insert_ticket(ticket)
        for n in range(3):
            await storage.record_check(
                viewer(ticket, ip=f"198.51.100.{n}"), decide, NOW, session=hls(f"k{n}", f"h{n}")
            )
        one = await storage.end_sessions(
            now=NOW + 5, reason=EndReason.KICKED, cdn=DEMO_CDN, key=ticket.key, session_id="k0"
        )
        assert [s.id for s in one] == ["k0"]
        assert (
            await storage.end_sessions(
                now=NOW + 5, reason=EndReason.KICKED, cdn=other.cdn, key=ticket.key
            )
            == []
        )
        rest = await storage.end_sessions(
            now=NOW + 6, reason=EndReason.KICKED, cdn=DEMO_CDN, key=ticket.key
        )
        assert sorted(s.id for s in rest) == ["k1", "k2"]
        assert all((s.ended_at, s.end_reason) == (NOW + 6, "kicked") for s in rest)
        # Ending twice is harmless.
        assert await storage.end_sessions(now=NOW + 7, reason=EndReason.DONE, handle="h1") == []

    async def test_a_kicked_http_viewer_stays_refused_until_it_falls_silent(
        self, storage: Storage, demo: Account
    ) -> None:
        ticket = session_ticket()
        await storage.insert_ticket(ticket)
        await storage.record_check(viewer(ticket), decide, NOW, session=hls("first"))
        await storage.end_sessions(now=NOW + 1, reason=EndReason.KICKED, key=ticket.key)
        for step in (2, 60, 170):  # each refused request keeps the refusal going
            refused = await storage.record_check(
                viewer(ticket), decide, NOW + step, session=hls(f"n{step}")
            )
            assert refused.decision.reason is Reason.SESSION_ENDED and refused.session is None
        after = await storage.record_check(
            viewer(ticket), decide, NOW + 170 + TTL, session=hls("back")
        )
        assert after.decision.allowed and not after.resumed
        assert (await attempts(storage, ticket.key))[1:4] == [(False, "Session ended")] * 3

    async def test_naming_an_ended_session_by_its_id_is_refused(
        self, storage: Storage, demo: Account
    ) -> None:
        ticket = session_ticket()
        await storage.insert_ticket(ticket)
        start = SessionStart("mine", "mine", "check", TTL, resume=True)
        await storage.record_check(viewer(ticket), decide, NOW, session=start)
        await storage.end_sessions(now=NOW + 1, reason=EndReason.DONE, session_id="mine")
        again = await storage.record_check(viewer(ticket), decide, NOW + 2, session=start)
        assert again.decision.reason is Reason.SESSION_ENDED
        assert (await session(storage, "mine")).end_reason == "done"

    async def test_sweep_writes_idle_ends_down_and_renew_needs_an_open_session(
        self, storage: Storage, demo: Account
    ) -> None:
        ticket = session_ticket()
        await storage.insert_ticket(ticket)
        await storage.record_check(viewer(ticket), decide, NOW, session=hls("a", "ha"))
        await storage.record_check(viewer(ticket), decide, NOW + 50, session=hls("b", "hb"))
        assert await storage.renew_session("b", now=NOW + 60, expires_at=NOW + 500)
        # Two nodes may renew out of order: the earlier expiry loses.
        assert await storage.renew_session("b", now=NOW + 61, expires_at=NOW + 200)
        assert (await session(storage, "b")).expires_at == NOW + 500
        assert await storage.sweep_sessions(NOW + TTL) == 1
        assert await storage.sweep_sessions(NOW + TTL) == 0
        swept = await session(storage, "a")
        assert (swept.ended_at, swept.end_reason) == (NOW + TTL, "idle")
        assert not await storage.renew_session("a", now=NOW + TTL, expires_at=NOW + 999)
        assert not await storage.renew_session("nobody", now=NOW, expires_at=NOW + 999)
        assert await storage.count_open_sessions(NOW + TTL) == 1
        assert await storage.count_open_sessions(NOW + TTL, cdn=DEMO_CDN) == 1
        assert await storage.count_open_sessions(NOW + 500) == 0

    async def test_list_sessions_filters_pages_and_counts(
        self, storage: Storage, demo: Account, other: Account
    ) -> None:
        ticket = session_ticket()
        await storage.insert_ticket(ticket)
        theirs = session_ticket(key="theirs.1", cdn=other.cdn, app="other-vod")
        await storage.insert_ticket(theirs)
        for n in range(5):
            await storage.record_check(
                viewer(ticket, ip=f"198.51.100.{n}"), decide, NOW + n, session=hls(f"l{n}", f"h{n}")
            )
        await storage.record_check(
            viewer(theirs, app="other-vod"), decide, NOW, session=hls("t", "ht")
        )
        await storage.end_sessions(now=NOW + 10, reason=EndReason.KICKED, session_id="l1")
        everything, total = await storage.list_sessions(DEMO_CDN, SessionFilter(), Page(), NOW + 10)
        assert [s.id for s in everything] == ["l4", "l3", "l2", "l1", "l0"] and total == 5
        page, total = await storage.list_sessions(
            DEMO_CDN, SessionFilter(), Page(limit=2, seek=1), NOW + 10
        )
        assert [s.id for s in page] == ["l3", "l2"] and total == 5
        open_now, count = await storage.list_sessions(
            DEMO_CDN, SessionFilter(open=True), Page(), NOW + 10
        )
        assert count == 4 and "l1" not in [s.id for s in open_now]
        ended, count = await storage.list_sessions(
            DEMO_CDN, SessionFilter(open=False), Page(), NOW + 10 + TTL
        )
        assert count == 5 and len(ended) == 5  # every one is over by then: kicked or idle
        by_ip, count = await storage.list_sessions(
            DEMO_CDN, SessionFilter(ip="198.51.100.2", start=NOW + 2, end=NOW + 2), Page(), NOW
        )
        assert [s.id for s in by_ip] == ["l2"] and count == 1

    async def test_history_is_pruned_by_end_and_lookups_show_ticket_changes(
        self, storage: Storage, demo: Account
    ) -> None:
        ticket = session_ticket(ip="auto")
        await storage.insert_ticket(ticket)
        outcome = await storage.record_check(viewer(ticket), decide, NOW, session=hls())
        found = await storage.lookup_session(handle=HANDLE)
        assert found is not None and found[0] == outcome.session
        current = found[1]
        assert current is not None and current.bound_ips == (CLIENT,)
        recheck = viewer(ticket, count_use=False)
        assert decide(current, recheck, NOW + 1).allowed
        assert not decide(current, dataclasses.replace(recheck, ip="198.51.100.1"), NOW).allowed
        await storage.update_account(DEMO_CDN, disabled=True)
        found = await storage.lookup_session(session_id="s-1")
        assert found is not None and found[1] is not None and found[1].account_disabled
        assert await storage.lookup_session(handle="nothing") is None
        await storage.end_sessions(now=NOW + 5, reason=EndReason.DONE, session_id="s-1")
        assert await storage.prune_sessions(NOW + 5, 100) == 0  # ended at, not before
        assert await storage.prune_sessions(NOW + 6, 100) == 1
        assert await storage.lookup_session(session_id="s-1") is None

    async def test_sessions_survive_reopen(self, storage: Storage, demo: Account) -> None:
        ticket = session_ticket()
        await storage.insert_ticket(ticket)
        await storage.record_check(viewer(ticket), decide, NOW, session=hls())
        await storage.close()
        await storage.open()
        assert (await session(storage, "s-1")).is_open(NOW + 1)
        again = await storage.record_check(viewer(ticket), decide, NOW + 1, session=hls("s-2"))
        assert again.resumed

    async def test_an_end_notice_may_name_the_alias_a_sign_of_life_gave(
        self, storage: Storage, demo: Account
    ) -> None:
        # MediaMTX names an RTSP reader by its connection, then by its session.
        ticket = session_ticket()
        await storage.insert_ticket(ticket)

        def mediamtx(client: str) -> SessionStart:
            return SessionStart(client, HANDLE, "mediamtx", TTL, resume=True, client=client)

        await storage.record_check(viewer(ticket), decide, NOW, session=mediamtx("conn-1"))
        again = await storage.record_check(
            viewer(ticket), decide, NOW + 1, session=mediamtx("sess-1")
        )
        assert again.resumed and again.session is not None
        assert (again.session.id, again.session.alias) == ("conn-1", "sess-1")
        [ended] = await storage.end_sessions(
            now=NOW + 2, reason=EndReason.DONE, session_id="sess-1"
        )
        assert (ended.id, ended.end_reason) == ("conn-1", "done")

    async def test_one_server_id_on_two_playbacks_opens_two_sessions(
        self, storage: Storage, demo: Account
    ) -> None:
        # MediaMTX names an RTSP connection reading two videos by one id.
        reader = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"

        def mtx(handle: str) -> SessionStart:
            return SessionStart(reader, handle, "mediamtx", TTL, resume=True, client=reader)

        ticket = session_ticket(video="movie|trailer", uses=0)
        await storage.insert_ticket(ticket)
        a, b = await asyncio.gather(
            storage.record_check(viewer(ticket, video="movie"), decide, NOW, session=mtx("h:a")),
            storage.record_check(viewer(ticket, video="trailer"), decide, NOW, session=mtx("h:b")),
        )
        c = await storage.record_check(
            viewer(ticket, video="trailer"), decide, NOW + 1, session=mtx("h:c")
        )
        assert a.session and b.session and c.session
        ids = {a.session.id, b.session.id, c.session.id}
        assert len(ids) == 3 and reader in ids
        for handle in ("h:a", "h:b", "h:c"):
            found = await storage.lookup_session(handle=handle)
            assert found is not None and found[0].is_open(NOW + 1), handle
        # The server's end notice names its id: every playback of it ends.
        ended = await storage.end_sessions(now=NOW + 2, reason=EndReason.DONE, session_id=reader)
        assert len(ended) == 3
