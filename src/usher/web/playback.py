"""Playback checks of the streaming-server integrations, sessions included.

Three kinds of check:

* a **counted check** (an RTMP/SRS/MediaMTX play start): one write that
  decides, counts the use and logs the attempt (``Storage.record_check``);
* an **HTTP session check** (each HLS/DASH/progressive request): the first
  request of a (key, ip, video) opens a session in storage, atomically with
  its counted check; later requests are re-checks that count and log nothing;
* an **RTMP re-check** (nginx-rtmp ``update_play``): the ticket is read and
  the rules run again without counting.

The hot path is the re-check, so it never writes: it reads the session and
the ticket (``lookup_session``/``lookup_ticket``, served by the reader pool)
and runs the pure rules. What storage answered is remembered here, per
process, for :data:`FRESH_FOR` seconds: so a revoke or expiry reaches an open
session within that time plus one read, on every node sharing the database,
whichever node opened the session. A re-check that refuses is repeated on
the write path, against the current state, and logged there.

A session's sliding window (``USHER_SESSION_TTL``) is renewed in storage only
once a quarter of it has passed, not on every request: one write per session
every TTL/4 instead of one per segment, while every node still sees the
session as open for at least 3/4 of the TTL after its last request.
"""

from __future__ import annotations

import dataclasses
import logging

from usher.protocol.errors import StorageError, StorageUnavailable
from usher.storage.base import SessionTerms
from usher.tickets.decision import decide
from usher.tickets.model import CheckRequest, Decision, PlaybackSession, Ticket
from usher.web.memory import SessionState
from usher.web.state import AppState

log = logging.getLogger("usher.playback")

#: RTMP sessions end with ``play_done``. This bounds the life of a row whose
#: ``play_done`` never came (nginx killed); re-checks do not depend on it.
RTMP_SESSION_HOLD = 24 * 3600


class Checker:
    """Every playback check of every endpoint runs here (``/usher/check``
    included), so each is decided, stored and counted in one way."""

    def __init__(self, state: AppState) -> None:
        self.state = state

    # -- counted checks ----------------------------------------------------

    async def counted(self, request: CheckRequest) -> Decision:
        outcome = await self.state.storage.record_check(request, decide, self.state.now())
        self._count(outcome.decision, resumed=False)
        return outcome.decision

    # -- HTTP streaming sessions ----------------------------------------------

    async def http_session(self, request: CheckRequest, session_id: str) -> Decision:
        state = self.state
        memory = state.playback.sessions
        now = state.now()
        ttl = state.settings.session_ttl
        known = memory.fresh(session_id)
        current: SessionState | None
        if known is not None:
            current = known.value
        else:
            try:
                current = await state.storage.lookup_session(session_id)
            except StorageUnavailable:
                return self._ride_out(request, session_id, now)
            if current is not None:
                memory.put(session_id, current)
        if current is not None:
            session, ticket = current
            if session.expires_at > now:
                decision = decide(ticket, dataclasses.replace(request, count_use=False), now)
                if decision.allowed:
                    await self._renew_if_due(session, ticket, now, ttl)
                    self._count(decision, resumed=True)
                    return decision
        # No open session known, or the re-check refused: decide on the write
        # path against the current state, where a refusal is also logged.
        outcome = await state.storage.open_session(
            request, decide, now, SessionTerms(session_id, ttl=ttl, reuse=True)
        )
        if outcome.decision.allowed and outcome.session is not None:
            memory.put(session_id, (outcome.session, outcome.ticket))
        else:
            memory.forget(session_id)
        self._count(outcome.decision, resumed=outcome.resumed and outcome.decision.allowed)
        return outcome.decision

    def _ride_out(self, request: CheckRequest, session_id: str, now: int) -> Decision:
        """The storage cannot be read: keep serving a session that was open
        and allowed when last seen, rather than cut every viewer off during an
        outage (a revoke cannot be stored then either). Anything else fails."""
        seen = self.state.playback.sessions.stale(session_id)
        if seen is not None:
            session, ticket = seen.value
            if session.expires_at > now:
                decision = decide(ticket, dataclasses.replace(request, count_use=False), now)
                if decision.allowed:
                    log.warning(
                        "The storage cannot be read; serving open session %s from memory.",
                        session_id,
                    )
                    return decision
        raise StorageUnavailable("The storage cannot be read and the session is not known.")

    async def _renew_if_due(
        self, session: PlaybackSession, ticket: Ticket | None, now: int, ttl: int
    ) -> None:
        if session.expires_at - now > ttl - ttl // 4:
            return
        renewing = self.state.playback.renewing
        if session.id in renewing:
            return
        renewing.add(session.id)
        expires_at = now + ttl
        try:
            await self.state.storage.renew_session(session.id, expires_at=expires_at)
        except StorageError as exc:
            # The session is still open for a while; a later request retries.
            log.warning("Could not renew playback session %s: %s", session.id, exc)
            return
        finally:
            renewing.discard(session.id)
        renewed = dataclasses.replace(session, expires_at=max(session.expires_at, expires_at))
        self.state.playback.sessions.amend(session.id, (renewed, ticket))

    # -- RTMP sessions -------------------------------------------------------------

    async def rtmp_play(self, request: CheckRequest, session_id: str) -> Decision:
        outcome = await self.state.storage.open_session(
            request,
            decide,
            self.state.now(),
            # Every play start is counted: a row under this id can only be a
            # leftover of an earlier connection.
            SessionTerms(session_id, ttl=RTMP_SESSION_HOLD, reuse=False),
        )
        self._count(outcome.decision, resumed=False)
        return outcome.decision

    async def rtmp_update(self, request: CheckRequest, session_id: str) -> Decision:
        """Re-check a playing RTMP client. Raises ``StorageError`` only when
        the ticket cannot be read; the caller decides what an outage means."""
        state = self.state
        recheck = dataclasses.replace(request, count_use=False)
        now = state.now()
        known = state.playback.tickets.fresh(request.key)
        if known is not None:
            ticket = known.value
        else:
            ticket = await state.storage.lookup_ticket(request.key)
            state.playback.tickets.put(request.key, ticket)
        decision = decide(ticket, recheck, now)
        if decision.allowed:
            self._count(decision, resumed=True)
            return decision
        # Refused: confirm against the current state and log it once; nginx
        # then drops the client, and its play_done closes the session anyway.
        outcome = await state.storage.record_check(recheck, decide, now)
        state.playback.tickets.forget(request.key)
        self._count(outcome.decision, resumed=False)
        if not outcome.decision.allowed:
            await self.rtmp_done(session_id)
        return outcome.decision

    async def rtmp_done(self, session_id: str) -> None:
        try:
            await self.state.storage.close_session(session_id)
        except StorageError as exc:
            # Only bookkeeping is lost: the row expires by itself.
            log.warning("Could not close RTMP session %s: %s", session_id, exc)

    # -- metrics ---------------------------------------------------------------

    def _count(self, decision: Decision, *, resumed: bool) -> None:
        outcome = "resumed" if resumed else "allowed" if decision.allowed else "denied"
        self.state.metrics.count_check(outcome, decision.reason_text)
