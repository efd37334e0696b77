"""Live sessions: what a playback start does to the sessions it meets.

One rule for every backend and endpoint (README, "Live sessions"). A start
names its session by handle (:class:`~usher.tickets.model.SessionStart`);
the storage reads the latest session under that handle and asks
:func:`plan` what the start is, then :class:`SessionBook` applies it to the
sessions of one batch of checks, in arrival order, leaving the rows to write.
Pure: no I/O, the clock comes in as ``now``.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterable
from enum import Enum
from typing import Final

from usher.tickets.model import (
    CheckRequest,
    Decision,
    EndReason,
    PlaybackSession,
    Reason,
    SessionStart,
    Ticket,
)

#: Refusals of a sign of life that end the session: the ticket itself is
#: over. Other refusals (an address or video the rules no longer allow) keep
#: it open, as the start's use was spent.
_ENDING: Final = {
    Reason.TICKET_REVOKED: EndReason.REVOKED,
    Reason.EXPIRED: EndReason.EXPIRED,
}
_SESSION_ENDED: Final = Decision(allowed=False, reason=Reason.SESSION_ENDED)
_INVALID_KEY: Final = Decision(allowed=False, reason=Reason.INVALID_AUTH_TOKEN)

#: ``decide(ticket_or_None, request, now) -> Decision`` (the rules).
Decider = Callable[[Ticket | None, CheckRequest, int], Decision]

#: Protocols a session may have, as the session object names them.
PROTOCOLS: Final = ("check", "rtmp", "hls", "srs", "mediamtx", "ome")


class Plan(Enum):
    START = "start"  # a counted start that opens a new session
    RESUME = "resume"  # a sign of life of the open session
    REPLACE = "replace"  # end a leftover open session, then START
    ENDED = "ended"  # the session this names has ended: refused


def plan(latest: PlaybackSession | None, start: SessionStart, now: int) -> Plan:
    """What a start means, given the latest session under its handle."""
    if latest is None:
        return Plan.START
    if latest.is_open(now):
        return Plan.RESUME if start.resume else Plan.REPLACE
    if latest.end_reason == EndReason.KICKED and latest.expires_at > now and start.resume:
        # A kicked HTTP viewer is known only by its handle: it stays refused
        # until its requests stop for a whole lifetime.
        return Plan.ENDED
    if latest.id == start.id and not start.client:
        # Ids a caller names are never reused: naming an ended session is
        # not a new start. (A server's own id that comes back after a kick's
        # window opens a new session under an id derived from it.)
        return Plan.ENDED
    return Plan.START


def ended_decision(
    session: PlaybackSession,
    ticket: Ticket | None,
    request: CheckRequest,
    decide: Decider,
    now: int,
) -> Decision:
    """The answer to a request naming ``session``, which has ended: the
    ticket's own refusal when a revoke or an expiry ended it (so a viewer
    hears why), else ``Session ended``."""
    if session.end_reason in (EndReason.REVOKED, EndReason.EXPIRED):
        decision = decide(ticket, dataclasses.replace(request, count_use=False), now)
        if not decision.allowed:
            return decision
    return _SESSION_ENDED


def unused_id(start: SessionStart, taken: Callable[[str], object], now: int, n: int) -> str:
    """``start.id``, or one derived from it when a session already has it
    (``taken(id)`` is not None): a server's id can be shared (MediaMTX names
    an RTSP connection reading two videos by one id) or come back after a
    kick, and a session id never names two sessions. ``n`` tells apart the
    starts of one batch."""
    if taken(start.id) is None:
        return start.id
    seed = f"{start.handle}\x00{now}\x00{n}".encode("utf-8", "surrogatepass")
    return f"{start.id}.{hashlib.sha256(seed).hexdigest()[:12]}"


def ended(session: PlaybackSession, now: int, reason: EndReason) -> PlaybackSession:
    """``session`` ended at ``now`` for ``reason``; one that already ended
    stays as it was, and one past its expiry ended ``idle`` at it."""
    ending = session.ending(now)
    if ending is not None:
        at, why = ending
        return dataclasses.replace(session, ended_at=at, end_reason=why)
    return dataclasses.replace(session, ended_at=now, end_reason=reason.value)


def renewed(session: PlaybackSession, now: int, lifetime: int) -> PlaybackSession:
    """A sign of life at ``now``: open for ``lifetime`` more seconds (never less)."""
    return dataclasses.replace(
        session, last_seen_at=now, expires_at=max(session.expires_at, now + lifetime)
    )


def _shared(text: str, ticket_text: str | None) -> str:
    """``text``, as the ticket's own string when they are equal.

    Each process remembers up to 65,536 open sessions (``usher.web.memory``)
    next to their tickets; a session holding its ticket's key, app and video
    rather than copies parsed from each request is over a quarter smaller
    (559 bytes against 781, measured on 20,000 of them).
    """
    if ticket_text is not None and ticket_text == text:
        return ticket_text
    return text


def opened(
    start: SessionStart, request: CheckRequest, ticket: Ticket | None, now: int
) -> PlaybackSession:
    """The session an allowed start opens (``request``'s text as stored)."""
    return PlaybackSession(
        id=start.id,
        handle=start.handle,
        cdn=None if ticket is None else ticket.cdn,
        key=_shared(request.key, None if ticket is None else ticket.key),
        ip=request.ip,
        app=_shared(request.app, None if ticket is None else ticket.app),
        video=_shared(request.video, None if ticket is None else ticket.video),
        protocol=start.protocol,
        started_at=now,
        last_seen_at=now,
        expires_at=now + start.lifetime,
    )


@dataclasses.dataclass(slots=True)
class Checked:
    """What :meth:`SessionBook.check` decided for one start."""

    decision: Decision
    #: Whether the attempt goes into the log (not an allowed sign of life).
    log: bool
    session: PlaybackSession | None
    resumed: bool


class SessionBook:
    """The sessions one batch of checks reads and changes.

    Built from the latest session of each handle the batch names and the
    open sessions of each ticket with a viewer limit, read with the batch's
    tickets locked; :meth:`check` runs each start against them in order, and
    :attr:`written` is what the backend then stores (new rows and changed
    rows alike, by id).
    """

    def __init__(
        self,
        latest: Iterable[PlaybackSession],
        viewers: dict[str, int],
        holders: dict[str, str] | None = None,
    ) -> None:
        self._latest = {session.handle: session for session in latest}
        self._viewers = viewers
        #: Session id -> its handle, for the ids this batch's starts name.
        self._holders = dict(holders or {})
        self.written: dict[str, PlaybackSession] = {}

    def _keep(self, session: PlaybackSession) -> None:
        self._latest[session.handle] = session
        self._holders[session.id] = session.handle
        self.written[session.id] = session

    def end(self, session: PlaybackSession, now: int, reason: EndReason) -> None:
        if session.is_open(now):
            self._viewers[session.key] = max(0, self._viewers.get(session.key, 0) - 1)
        self._keep(ended(session, now, reason))

    def check(
        self,
        ticket: Ticket | None,
        request: CheckRequest,
        decide: Decider,
        now: int,
        start: SessionStart,
    ) -> Checked:
        """Decide one start against the sessions as the batch left them."""
        latest = self._latest.get(start.handle)
        step = plan(latest, start, now)
        if latest is not None and step in (Plan.ENDED, Plan.RESUME) and latest.key != request.key:
            # A session is its ticket's: naming it with another key (a
            # caller-named id) neither renews it nor reads its ticket.
            return Checked(_INVALID_KEY, True, None, False)
        if step is Plan.ENDED:
            assert latest is not None
            if latest.end_reason == EndReason.KICKED:
                self._keep(dataclasses.replace(latest, expires_at=now + start.lifetime))
            return Checked(ended_decision(latest, ticket, request, decide, now), True, None, False)
        if step is Plan.RESUME:
            assert latest is not None
            decision = decide(ticket, dataclasses.replace(request, count_use=False), now)
            if decision.allowed:
                session = renewed(latest, now, start.lifetime)
                if start.client and start.client != latest.id and latest.alias is None:
                    session = dataclasses.replace(session, alias=start.client)
                if session.expires_at != latest.expires_at or session.alias != latest.alias:
                    self._keep(session)
                return Checked(decision, False, session, True)
            why = _ENDING.get(decision.reason) if decision.reason else None
            if why is not None:
                self.end(latest, now, why)
            return Checked(decision, True, None, True)
        if step is Plan.REPLACE:
            assert latest is not None
            self.end(latest, now, EndReason.DONE)
        if ticket is not None and ticket.max_viewers > 0:
            ticket = dataclasses.replace(ticket, viewers=self._viewers.get(ticket.key, 0))
        decision = decide(ticket, request, now)
        if not decision.allowed:
            return Checked(decision, True, None, False)
        session_id = unused_id(start, self._holders.get, now, len(self.written))
        session = opened(dataclasses.replace(start, id=session_id), request, ticket, now)
        if start.client and session_id != start.client:
            # End notices name the server's id: it stays the session's alias.
            session = dataclasses.replace(session, alias=start.client)
        assert ticket is not None  # only a known ticket allows
        self._viewers[ticket.key] = self._viewers.get(ticket.key, 0) + 1
        self._keep(session)
        return Checked(decision, True, session, False)


def named_ids(starts: Iterable[SessionStart]) -> list[str]:
    """The ids whose holders a batch must read: every start's but the fresh
    random ones (``unseen``)."""
    return sorted({start.id for start in starts if not start.unseen})


def viewer_limited(tickets: Iterable[Ticket | None]) -> list[str]:
    """Keys of the tickets whose starts need their open sessions counted."""
    return sorted({t.key for t in tickets if t is not None and t.max_viewers > 0})
