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
    account_disabled: bool = False


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
    """Exact-match filters of ``sevu.search``; ``None`` means not filtered."""

    key: str | None = None
    app: str | None = None
    video: str | None = None
    ip: str | None = None
    password: str | None = None


@dataclass(frozen=True, slots=True)
class AttemptFilter:
    """Exact-match filters of ``sevu.errorcount`` / ``sevu.errorlog``.

    ``start``/``end`` are inclusive UNIX-second bounds.
    """

    key: str | None = None
    password: str | None = None
    app: str | None = None
    video: str | None = None
    ip: str | None = None
    success: bool | None = None
    start: int | None = None
    end: int | None = None


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
    """What the storage returns after it applied a decision."""

    decision: Decision
    attempt_id: int
    ticket: Ticket | None = field(default=None)


@dataclass(frozen=True, slots=True)
class PlaybackSession:
    """One open playback of a streaming-server integration.

    ``id`` is chosen by the adapter from what identifies the playback (for
    HTTP streaming the ticket key, viewer address and video; for RTMP the
    server's connection), so that every request of one playback, on any Usher
    node, finds the same row. The row is the truth about whether the playback
    already spent its use; ``expires_at`` ends it unless it is renewed.
    """

    id: str
    key: str
    cdn: int | None
    ip: str
    app: str
    video: str
    created_at: int
    expires_at: int


@dataclass(slots=True)
class SessionOutcome:
    """What the storage returns after opening (or resuming) a session.

    ``ticket`` is the ticket as it is *after* the call (use counted, ``auto``
    slot bound), so a caller may re-check later requests of the session
    against it. ``session`` is the open session after the call, or ``None``
    when the request was refused and no session was open. ``resumed`` says an
    open session was found: no use was counted and, when allowed, nothing was
    logged (``attempt_id`` is then 0).
    """

    decision: Decision
    attempt_id: int
    ticket: Ticket | None
    session: PlaybackSession | None
    resumed: bool
