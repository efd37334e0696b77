"""The records the rules work on: tickets, playback attempts and decisions.

Plain frozen dataclasses with no I/O, shared by the rules (``usher.tickets``),
the storage backends and the commands. Times are UNIX seconds (UTC) as ints;
rendering to ``YYYY-MM-DD HH:MM:SS`` happens at the API edge.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final


class Reason(StrEnum):
    """Why a playback check was refused, in the order the checks run.

    (README, "Tickets and playback checks".)

    The values are part of the wire contract: they are logged, returned by
    ``sevu.errorlog`` and sent to streaming servers, so they never change.
    """

    INVALID_AUTH_TOKEN = "Invalid Auth Token"  # noqa: S105  # a reason, not a password
    TICKET_REVOKED = "Ticket revoked"
    EXPIRED = "Expiration date surpassed"
    INVALID_APPLICATION = "Invalid Application"
    INVALID_VIDEO = "Invalid Video"
    INVALID_IP = "Invalid IP Address"
    USES_EXHAUSTED = "Ticket uses exhausted"
    TOO_MANY_VIEWERS = "Too many viewers"
    #: A sign of life of a session that was kicked, ended by its server, or
    #: fell silent (README, "Live sessions").
    SESSION_ENDED = "Session ended"


class EndReason(StrEnum):
    """Why a playback session ended (the session object's ``end_reason``)."""

    DONE = "done"
    IDLE = "idle"
    KICKED = "kicked"
    REVOKED = "revoked"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class Account:
    """A tenant. ``username`` prefixes every app name of its tickets."""

    cdn: int
    username: str
    api_key: str
    secret: str
    disabled: bool = False
    created_at: int = 0

    def __repr__(self) -> str:
        # Keep the secret out of tracebacks, logs and debugger output.
        return (
            f"Account(cdn={self.cdn!r}, username={self.username!r}, "
            f"api_key={self.api_key!r}, disabled={self.disabled!r})"
        )


@dataclass(frozen=True, slots=True)
class Ticket:
    """One viewer's permission to play, as stored.

    ``ip``, ``app`` and ``video`` keep the text the publisher sent; the rules
    parse them. ``bound_ips`` holds what the ``auto`` slots have bound to, in
    binding order, as address or network strings.
    """

    key: str
    cdn: int
    password: str
    ip: str
    video: str
    app: str
    uses: int
    use_count: int
    active: bool
    created_at: int
    expire_at: int
    used_at: int | None = None
    bound_ips: tuple[str, ...] = ()
    #: Open sessions allowed at once; 0 means no limit.
    max_viewers: int = 0
    account_disabled: bool = False
    #: The ticket's open sessions, where the reader needs them (rule 8 of a
    #: playback start, the ticket object); not a column.
    viewers: int = 0


@dataclass(frozen=True, slots=True)
class CheckRequest:
    """What a streaming server tells us about one playback attempt."""

    key: str
    password: str
    app: str
    video: str
    ip: str
    appinst: str = ""
    pageurl: str = ""
    refurl: str = ""
    server_ip: str = ""
    # False for re-checks of an open session (nginx-rtmp on_update, HLS
    # segments): they must not spend a use nor bind an ``auto`` slot.
    count_use: bool = True


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of the rules for one request against one ticket state.

    ``bind`` is the network an ``auto`` slot must take when the decision is
    applied; it is only ever set on an allowed decision, so a refused attempt
    never burns a slot.
    """

    allowed: bool
    reason: Reason | None = None
    bind: str | None = None
    count_use: bool = False

    @property
    def reason_text(self) -> str:
        return "" if self.reason is None else self.reason.value


@dataclass(frozen=True, slots=True)
class Attempt:
    """One logged playback attempt (the SEVU Attempt object)."""

    id: int
    cdn: int | None
    at: int
    key: str
    password: str
    ip: str
    video: str
    app: str
    appinst: str
    pageurl: str
    refurl: str
    success: bool
    reason: str
    server_ip: str


@dataclass(frozen=True, slots=True)
class TicketFilter:
    """Exact-match filters of ``sevu.search`` (and the v2 token listing);
    ``None`` means not filtered. ``active`` is the ticket's own flag, not
    whether its account is disabled."""

    key: str | None = None
    app: str | None = None
    video: str | None = None
    ip: str | None = None
    password: str | None = None
    uses: int | None = None
    active: bool | None = None


@dataclass(frozen=True, slots=True)
class AttemptFilter:
    """Exact-match filters of ``sevu.errorcount`` / ``sevu.errorlog``.

    ``start``/``end`` are inclusive UNIX-second bounds. ``appinst`` (the v2
    attempt listing's) has no index and no rollup: only ``list_attempts``
    takes it, testing it on the rows the other filters read; the counts and
    statistics refuse it (``ValueError``).
    """

    key: str | None = None
    password: str | None = None
    app: str | None = None
    video: str | None = None
    ip: str | None = None
    success: bool | None = None
    start: int | None = None
    end: int | None = None
    appinst: str | None = None


#: Most rows one listing answer holds (``sevu.search``, ``sevu.errorlog``,
#: the storage calls behind them). A client that asks for no ``limit`` or a
#: larger one gets this many and pages on with ``seek``, so one request
#: never makes the server hold a whole account's tickets or a whole log.
MAX_PAGE_ROWS: Final = 1000


@dataclass(frozen=True, slots=True)
class Page:
    """``limit``/``seek`` as the SEVU commands define them.

    ``limit`` is what the client asked for (``sevu.errorcount`` caps its
    count with it, uncapped); listings hold at most :attr:`rows`.
    """

    limit: int | None = None
    seek: int = 0

    @property
    def rows(self) -> int:
        """Most rows this page may hold: ``limit``, but never more than
        :data:`MAX_PAGE_ROWS`."""
        return MAX_PAGE_ROWS if self.limit is None else min(self.limit, MAX_PAGE_ROWS)


@dataclass(slots=True)
class CheckOutcome:
    """What the storage returns after it applied a decision.

    With a :class:`SessionStart`, ``session`` is the session the check
    opened or renewed (``None`` when refused), and ``resumed`` says the check
    was a sign of life of an open session: no use counted and, when
    allowed, no attempt logged (``attempt_id`` 0).
    """

    decision: Decision
    attempt_id: int
    ticket: Ticket | None = field(default=None)
    session: PlaybackSession | None = None
    resumed: bool = False


@dataclass(frozen=True, slots=True)
class PlaybackSession:
    """One viewer's playback, open or ended (the session object of README,
    "Live sessions").

    ``id`` is the public name (``sevu.sessions``, ``sevu.kick``, the
    ``/usher/check`` answer), never reused. ``handle`` is how the streaming
    server names the playback in its later callbacks (a digest of the HLS
    viewer's key, address and video; nginx-rtmp's connection; SRS's client
    id; OvenMediaEngine's client address and URL), so every node finds the
    same row. A session with no ``ended_at`` is open until ``expires_at``;
    past it, it ended ``idle`` at ``expires_at`` even before a sweep writes
    that down. A kicked session keeps ``expires_at`` moving while its viewer
    keeps asking, so HLS requests stay refused until they stop.
    """

    id: str
    handle: str
    cdn: int | None
    key: str
    ip: str
    app: str
    video: str
    protocol: str
    started_at: int
    last_seen_at: int
    expires_at: int
    ended_at: int | None = None
    end_reason: str | None = None
    #: A second name the server gave the playback (MediaMTX names an RTSP
    #: reader by its connection first, then by its session): an end notice
    #: may use either.
    alias: str | None = None

    def is_open(self, now: int) -> bool:
        return self.ended_at is None and self.expires_at > now

    def ending(self, now: int) -> tuple[int, str] | None:
        """When and why the session ended as of ``now``; ``None`` while open."""
        if self.ended_at is not None:
            return self.ended_at, self.end_reason or EndReason.DONE.value
        if self.expires_at <= now:
            return self.expires_at, EndReason.IDLE.value
        return None

    def seconds(self, now: int) -> int:
        """From start to end, or to ``now`` while open."""
        ending = self.ending(now)
        return max(0, (now if ending is None else ending[0]) - self.started_at)


@dataclass(frozen=True, slots=True)
class SessionStart:
    """The session a playback start opens, as the integration names it."""

    #: The public id a new session takes.
    id: str
    #: The server's name of the playback (see :class:`PlaybackSession`).
    handle: str
    #: ``check``, ``rtmp``, ``hls``, ``srs``, ``mediamtx`` or ``ome``.
    protocol: str
    #: Seconds the session stays open without a sign of life.
    lifetime: int
    #: True where a start's server sends no connection of its own (HTTP
    #: streaming, ``/usher/check``): a start meeting this handle's open
    #: session is a sign of life of it. False (RTMP, SRS, OME): an open
    #: session under the handle is a leftover whose end notice was lost; it
    #: ends ``done`` and the start opens a new one.
    resume: bool
    #: The server's own id of the connection (MediaMTX's reader id), if
    #: any: a new session takes it as its id; a sign of life under another
    #: id records it as the session's alias.
    client: str = ""
    #: The handle was made for this start (a fresh random id), so no session
    #: can have it yet and storage need not look for one.
    unseen: bool = False
