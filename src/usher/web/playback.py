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
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, TypeVar

from usher.protocol.errors import StorageError, StorageUnavailable
from usher.tickets.decision import decide
from usher.tickets.model import CheckRequest, Decision, PlaybackSession, Ticket

if TYPE_CHECKING:  # state.py holds a Playback, so only the type is imported
    from usher.web.state import AppState

log = logging.getLogger("usher.playback")

#: Seconds a process trusts what storage said about a session or ticket. Half
#: of the promised second, so a revoke is seen within 1 s with time to spare
#: for the revoke's own commit and the read that follows.
FRESH_FOR = 0.5
#: Most sessions (and tickets) remembered per process; the oldest go first.
MAX_REMEMBERED = 65_536
#: RTMP sessions end with ``play_done``. This bounds the life of a row whose
#: ``play_done`` never came (nginx killed); re-checks do not depend on it.
RTMP_SESSION_HOLD = 24 * 3600

V = TypeVar("V")
SessionState = tuple[PlaybackSession, Ticket | None]


@dataclass(slots=True)
class _Entry(Generic[V]):
    value: V
    seen: float  # the cache clock's time when storage said ``value``


class Remembered(Generic[V]):
    """A bounded map of what storage said, and when (one per process)."""

    def __init__(
        self,
        *,
        fresh_for: float = FRESH_FOR,
        limit: int = MAX_REMEMBERED,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fresh_for = fresh_for
        self.limit = limit
        self.clock = clock
        self._entries: OrderedDict[str, _Entry[V]] = OrderedDict()

    def fresh(self, name: str) -> _Entry[V] | None:
        entry = self._entries.get(name)
        if entry is None or self.clock() - entry.seen >= self.fresh_for:
            return None
        return entry

    def stale(self, name: str) -> _Entry[V] | None:
        """Whatever is remembered, however old (for riding out an outage)."""
        return self._entries.get(name)

    def put(self, name: str, value: V) -> None:
        self._entries[name] = _Entry(value, self.clock())
        self._entries.move_to_end(name)
        while len(self._entries) > self.limit:
            self._entries.popitem(last=False)

    def amend(self, name: str, value: V) -> None:
        """Replace a remembered value without making it any fresher: the
        ticket inside it was read no later than before."""
        entry = self._entries.get(name)
        if entry is not None:
            entry.value = value

    def forget(self, name: str) -> None:
        self._entries.pop(name, None)

    def __len__(self) -> int:
        return len(self._entries)


@dataclass
class Playback:
    """The per-process memory of the integrations (lives in ``AppState``)."""

    sessions: Remembered[SessionState] = field(default_factory=Remembered)
    tickets: Remembered[Ticket | None] = field(default_factory=Remembered)
    #: Sessions whose renewal write is under way, so a burst of segment
    #: requests renews once.
    renewing: set[str] = field(default_factory=set)


class Checker:
    """Runs the checks for one app: storage, settings, clock and metrics."""

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
            request, decide, now, session_id=session_id, ttl=ttl, reuse=True
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
            session_id=session_id,
            ttl=RTMP_SESSION_HOLD,
            # Every play start is counted: a row under this id can only be a
            # leftover of an earlier connection.
            reuse=False,
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
        # "resumed": a request of an open session, allowed without a write.
        outcome = "resumed" if resumed else "allowed" if decision.allowed else "denied"
        self.state.metrics.checks.labels(outcome, decision.reason_text).inc()
