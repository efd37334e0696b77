"""Playback checks of every endpoint, and the live sessions they open.

Every allowed playback start opens a session (README, "Live sessions"),
in the same write as its counted, logged check (``Storage.record_check``
with a :class:`~usher.tickets.model.SessionStart`). Later callbacks of the
playback name the session: by its handle (HLS and MediaMTX requests,
nginx-rtmp ``update_play``) or by its id (``/usher/check``). They are
signs of life, and the hot path, so an allowed one never writes: the
session and its ticket are read (``lookup_session``, the reader pool) and
the pure rules run without counting. What storage answered is remembered
here, per process, for :data:`FRESH_FOR` seconds, so a kick, revoke or
expiry reaches an open session within that time plus one read, on every
node. Anything else (no open session known, a refusal, a session that has
ended) goes to the write path, where it is decided against the current
state and logged.

A session's expiry is renewed in storage only once a quarter of its
lifetime has passed, not on every request: one write per session every
TTL/4 instead of one per segment, while every node still sees the session
open for at least 3/4 of the TTL after its last request.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
from typing import Final

from usher.protocol.errors import StorageBusy, StorageError, StorageUnavailable
from usher.storage.rows import applied
from usher.tickets.decision import decide
from usher.tickets.model import (
    CheckOutcome,
    CheckRequest,
    Decision,
    EndReason,
    PlaybackSession,
    Reason,
    SessionStart,
    Ticket,
)
from usher.tickets.sessions import ended_decision
from usher.tickets.text import storable
from usher.web.memory import SessionState
from usher.web.state import AppState

log = logging.getLogger("usher.playback")

#: Protocols whose servers send no sign of life: their sessions last until
#: the end notice, or ``USHER_SESSION_MAX`` as a safety net.
_NOTICE_ONLY: Final = frozenset({"srs", "ome"})


def new_session_id() -> str:
    """A fresh public session id: 64 random bits, never reused in practice."""
    return secrets.token_hex(8)


class Checker:
    """Every playback check of every endpoint runs here (``/usher/check``
    included), so each is decided, stored and counted in one way."""

    def __init__(self, state: AppState) -> None:
        self.state = state

    def terms(
        self,
        protocol: str,
        handle: str,
        *,
        resume: bool,
        session_id: str | None = None,
        client: str = "",
    ) -> SessionStart:
        """The session a start of ``protocol`` opens under ``handle``; it
        takes ``session_id``, else the server's ``client`` id, else a new id."""
        settings = self.state.settings
        notice_only = protocol in _NOTICE_ONLY or (
            protocol == "mediamtx" and settings.mediamtx_end_notice
        )
        lifetime = settings.session_max if notice_only else settings.session_ttl
        chosen = session_id or client or new_session_id()
        return SessionStart(chosen, handle, protocol, lifetime, resume, client)

    # -- starts ------------------------------------------------------------------

    async def start(self, request: CheckRequest, start: SessionStart) -> CheckOutcome:
        """A playback start: decided, counted, logged, and its session opened."""
        return await self._write_path(request, start, "h:" + start.handle)

    # -- signs of life -------------------------------------------------------------

    async def follow(
        self, request: CheckRequest, start: SessionStart, *, named: bool = False
    ) -> CheckOutcome:
        """A request of an HTTP playback (HLS, DASH, MediaMTX), known by
        ``start.handle``: a sign of life of its open session, or else a start.
        ``named``: ``start.id`` is the server's own id of the reader, which
        a new session takes unless it already names another playback's."""
        now = self.state.now()
        current = await self._known(handle=start.handle)
        # A server id the session does not know yet is written down as its
        # alias, on the write path (once per id).
        knows_client = not start.client or (
            current is not None and start.client in (current[0].id, current[0].alias)
        )
        if current is not None and knows_client:
            allowed = await self._sign_of_life(current, request, now, start.lifetime)
            if allowed is not None:
                return allowed
        if named:
            start = await self._unclaimed(start)
        return await self._write_path(request, start, "h:" + start.handle)

    async def check(self, request: CheckRequest, session_id: str | None) -> CheckOutcome:
        """``/usher/check``: a start without ``session_id``; with one, a sign
        of life of that session, or a start under that id if it was never seen."""
        if session_id is None:
            self._refuse_a_flood()
            fresh = new_session_id()
            start = self.terms("check", fresh, resume=True, session_id=fresh)
            start = dataclasses.replace(start, unseen=True)
            return await self._write_path(request, start, "i:" + fresh)
        now = self.state.now()
        current = await self._known(session_id=session_id)
        if current is None:
            return await self._write_path(
                request,
                self.terms("check", session_id, resume=True, session_id=session_id),
                "i:" + session_id,
            )
        session = current[0]
        start = self.terms(session.protocol, session.handle, resume=True, session_id=session_id)
        if not session.is_open(now):
            return await self._refuse_ended(request, session, "i:" + session_id)
        allowed = await self._sign_of_life(current, request, now, start.lifetime)
        if allowed is not None:
            return allowed
        return await self._write_path(request, start, "i:" + session_id)

    async def rtmp_update(self, request: CheckRequest, handle: str) -> CheckOutcome:
        """nginx-rtmp ``update_play``: a sign of life of the connection's
        session. Raises ``StorageError`` only when nothing can be read; the
        caller decides what an outage means."""
        now = self.state.now()
        current = await self._known(handle=handle)
        if current is None:
            # Not started through Usher's sessions (or pruned): re-check the
            # ticket alone, as a server without sessions would.
            return await self._ticket_recheck(request, now)
        session = current[0]
        if not session.is_open(now):
            return await self._refuse_ended(request, session, "h:" + handle)
        start = self.terms("rtmp", handle, resume=True, session_id=session.id)
        allowed = await self._sign_of_life(current, request, now, start.lifetime)
        if allowed is not None:
            return allowed
        return await self._write_path(request, start, "h:" + handle)

    # -- ends ------------------------------------------------------------------------

    async def end(
        self,
        *,
        handle: str | None = None,
        session_id: str | None = None,
        reason: EndReason = EndReason.DONE,
    ) -> bool:
        """The server's end notice (or ``/usher/check/done``); whether a
        session was open. A storage failure is logged, not raised: only
        bookkeeping is lost, and the session ends by itself."""
        try:
            ended = await self.state.storage.end_sessions(
                now=self.state.now(), reason=reason, handle=handle, session_id=session_id
            )
        except StorageError as exc:
            log.warning("Could not end a playback session: %s", exc)
            return False
        memory = self.state.playback.sessions
        memory.forget("h:" + handle if handle is not None else "i:" + str(session_id))
        self.count_ends(ended, reason)
        return bool(ended)

    def count_ends(self, ended: list[PlaybackSession], reason: EndReason) -> None:
        self.state.metrics.count_session_ends(len(ended), reason)
        if ended:
            for session in ended:
                self.state.playback.sessions.forget("i:" + session.id)
                self.state.playback.sessions.forget("h:" + session.handle)

    # -- the parts -----------------------------------------------------------------------

    def _refuse_a_flood(self) -> None:
        """Refuse a start at once when its write would be shed anyway.

        Past capacity most requests are refused, and the event loop's time
        for each refusal is time the accepted ones wait to be resumed: a
        start refused before its session id, terms and write job are made
        costs the loop less, so the accepted starts' answers go out sooner.
        Only :meth:`check` makes those before writing; the other endpoints'
        starts come with their terms made, and the write sheds first thing.
        """
        if self.state.storage.sheds_checks():
            raise StorageBusy("The writer is past its waiting budget; the start was not tried.")

    async def _known(
        self, *, handle: str | None = None, session_id: str | None = None
    ) -> SessionState | None:
        """What storage says of the session (remembered for FRESH_FOR s)."""
        name = "h:" + handle if handle is not None else "i:" + str(session_id)
        memory = self.state.playback.sessions
        known = memory.fresh(name)
        if known is not None:
            return known.value
        try:
            current = await self.state.storage.lookup_session(session_id=session_id, handle=handle)
        except StorageUnavailable:
            return self._ride_out(name)
        if current is not None:
            memory.put(name, current)
        return current

    async def _unclaimed(self, start: SessionStart) -> SessionStart:
        """``start``, or the same start under a fresh id when its id already
        names a session of another playback. Sessions are stored by id, so a
        shared id would overwrite the other session; and a server's reader
        id can be shared: MediaMTX sends an RTSP connection's id, and one
        connection may read several videos."""
        known = await self._known(session_id=start.id)
        if known is None or known[0].handle == start.handle:
            return start
        return dataclasses.replace(start, id=new_session_id())

    def _ride_out(self, name: str) -> SessionState:
        """The storage cannot be read: keep serving a session that was open
        when last seen, rather than cut every viewer off during an outage (a
        revoke cannot be stored then either). Anything else fails."""
        seen = self.state.playback.sessions.stale(name)
        if seen is not None and seen.value[0].is_open(self.state.now()):
            log.warning("The storage cannot be read; serving open session %s from memory.", name)
            return seen.value
        raise StorageUnavailable("The storage cannot be read and the session is not known.")

    async def _sign_of_life(
        self, current: SessionState, request: CheckRequest, now: int, lifetime: int
    ) -> CheckOutcome | None:
        """The outcome of an allowed sign of life of an open session, or
        ``None`` when the write path must decide."""
        session, ticket = current
        if not session.is_open(now) or session.key != storable(request.key):
            # Ended, or named with another ticket's key: the write path
            # decides (and logs) it.
            return None
        decision = decide(ticket, dataclasses.replace(request, count_use=False), now)
        if not decision.allowed:
            return None
        await self._renew_if_due(session, ticket, now, lifetime)
        self._count(decision, resumed=True)
        return CheckOutcome(decision, 0, ticket, session, resumed=True)

    async def _write_path(
        self, request: CheckRequest, start: SessionStart, name: str
    ) -> CheckOutcome:
        now = self.state.now()
        outcome = await self.state.storage.record_check(request, decide, now, session=start)
        memory = self.state.playback.sessions
        if outcome.decision.allowed and outcome.session is not None:
            # The ticket as this write left it (a bound ``auto`` slot
            # included), so the next requests re-check against it.
            ticket = outcome.ticket
            after = None if ticket is None else applied(ticket, outcome.decision, now)
            memory.put(name, (outcome.session, after))
        else:
            memory.forget(name)
        self._counted(outcome, start)
        return outcome

    async def _refuse_ended(
        self, request: CheckRequest, session: PlaybackSession, name: str
    ) -> CheckOutcome:
        """Refuse (and log) a request naming an ended session, as
        :func:`~usher.tickets.sessions.ended_decision` answers it; one naming
        it with another ticket's key is refused by the rules (Invalid Auth
        Token)."""
        recheck = dataclasses.replace(request, count_use=False)

        def rules(ticket: Ticket | None, checked: CheckRequest, now: int) -> Decision:
            if session.key != checked.key:
                return decide(None, checked, now)
            return ended_decision(session, ticket, checked, decide, now)

        outcome = await self.state.storage.record_check(recheck, rules, self.state.now())
        self.state.playback.sessions.forget(name)
        self._count(outcome.decision, resumed=False)
        return outcome

    async def _ticket_recheck(self, request: CheckRequest, now: int) -> CheckOutcome:
        recheck = dataclasses.replace(request, count_use=False)
        tickets = self.state.playback.tickets
        known = tickets.fresh(request.key)
        if known is not None:
            ticket = known.value
        else:
            ticket = await self.state.storage.lookup_ticket(request.key)
            tickets.put(request.key, ticket)
        decision = decide(ticket, recheck, now)
        if decision.allowed:
            self._count(decision, resumed=True)
            return CheckOutcome(decision, 0, ticket, None, resumed=True)
        # Refused: confirm against the current state and log it once.
        outcome = await self.state.storage.record_check(recheck, decide, now)
        tickets.forget(request.key)
        self._count(outcome.decision, resumed=False)
        return outcome

    async def _renew_if_due(
        self, session: PlaybackSession, ticket: Ticket | None, now: int, lifetime: int
    ) -> None:
        if session.expires_at - now > lifetime - lifetime // 4:
            return
        renewing = self.state.playback.renewing
        if session.id in renewing:
            return
        renewing.add(session.id)
        expires_at = now + lifetime
        try:
            await self.state.storage.renew_session(session.id, now=now, expires_at=expires_at)
        except StorageError as exc:
            # The session is still open for a while; a later request retries.
            log.warning("Could not renew playback session %s: %s", session.id, exc)
            return
        finally:
            renewing.discard(session.id)
        renewed = dataclasses.replace(
            session, last_seen_at=now, expires_at=max(session.expires_at, expires_at)
        )
        memory = self.state.playback.sessions
        memory.amend("h:" + session.handle, (renewed, ticket))
        memory.amend("i:" + session.id, (renewed, ticket))

    # -- metrics ---------------------------------------------------------------

    def _counted(self, outcome: CheckOutcome, start: SessionStart) -> None:
        resumed = outcome.resumed and outcome.decision.allowed
        self._count(outcome.decision, resumed=resumed)
        if outcome.decision.allowed and not outcome.resumed:
            self.state.metrics.count_session_start(start.protocol)
        reason = outcome.decision.reason
        if outcome.resumed and reason in (Reason.TICKET_REVOKED, Reason.EXPIRED):
            why = EndReason.REVOKED if reason is Reason.TICKET_REVOKED else EndReason.EXPIRED
            self.state.metrics.count_session_ends(1, why)

    def _count(self, decision: Decision, *, resumed: bool) -> None:
        outcome = "resumed" if resumed else "allowed" if decision.allowed else "denied"
        self.state.metrics.count_check(outcome, decision.reason_text)
