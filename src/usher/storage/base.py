"""The one storage interface every backend implements.

Commands and rules talk only to :class:`Storage`. A backend owns transactions
and durability; it never decides anything about a ticket itself: the atomic
playback check hands the locked ticket to a pure ``decide`` function from
:mod:`usher.tickets.decision` and persists what it returns.

Every method is a coroutine so that a backend can be natively async
(PostgreSQL) or run blocking work on its own threads (SQLite).
"""

from __future__ import annotations

import enum
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Final, Literal

from usher.protocol.errors import StorageError
from usher.storage.schema import GROUPABLE
from usher.tickets.model import (
    MAX_PAGE_ROWS,
    Account,
    Attempt,
    AttemptFilter,
    CheckOutcome,
    CheckRequest,
    EndReason,
    Page,
    PlaybackSession,
    SessionStart,
    Ticket,
    TicketFilter,
)
from usher.tickets.publishers import PublishAttempt, PublishFilter, StreamUser, StreamUserName
from usher.tickets.sessions import (
    Decider as Decider,  # re-exported: backends type their checks with it
)
from usher.tickets.text import storable

#: Longest text kept for any attempt field; longer values are cut so a hostile
#: caller cannot grow the log by megabytes per request.
MAX_ATTEMPT_FIELD = 1024

#: Most buckets one ``attempt_timeline`` call may span, and most rows one
#: ``top_attempt_values`` call may return: the control panel's charts poll
#: these, so their answers stay small whatever the range or the log size.
MAX_TIMELINE_BUCKETS: Final = 1440
MAX_TOP_VALUES: Final = 100

#: Attempt columns the charts may group by (``top_attempt_values``).
AttemptColumn = Literal["reason", "ip", "key", "app", "video"]

#: Largest ``cap`` one ``count_attempts_upto`` call may ask for, and most
#: rows one ``recent_denials`` call may return: both read that many rows.
MAX_COUNT_CAP: Final = 100_000
MAX_RECENT_DENIALS: Final = 100_000
#: Most denial times ``Storage.publish_denials`` returns, and most rows one
#: ``Storage.record_publishes`` writes.
MAX_PUBLISH_DENIALS: Final = 1_000
MAX_PUBLISH_BATCH: Final = 1_000


class ReadBoundExceeded(StorageError):
    """A read ran past the time allowed by :func:`bounded_reads`; the
    database stopped it (nothing was changed)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        super().__init__(f"A read needed more than {seconds:g} s and was stopped.")


class Claim(enum.Enum):
    """What :meth:`Storage.claim_signature` found."""

    SPENT = "spent"
    REPLAYED = "replayed"
    ACCOUNT_CHANGED = "account changed"


@dataclass(frozen=True, slots=True)
class ReadBound:
    """Reads in this context must finish by ``deadline`` (``time.monotonic()``)."""

    deadline: float
    #: The whole budget, for messages.
    seconds: float

    def remaining(self) -> float:
        """Seconds left; raises :class:`ReadBoundExceeded` when none are."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise ReadBoundExceeded(self.seconds)
        return left

    def remaining_ms(self) -> int:
        """:meth:`remaining` in whole milliseconds, at least 1."""
        return max(1, math.ceil(self.remaining() * 1000))


_read_bound: ContextVar[ReadBound | None] = ContextVar("usher_read_bound", default=None)


@contextmanager
def bounded_reads(seconds: float) -> Iterator[ReadBound]:
    """Every storage read started in this context (and in tasks it starts)
    must end within ``seconds`` of entering it, all reads together; a read
    still running then is stopped by the database and raises
    :class:`ReadBoundExceeded`.

    The control panel runs each request in one, so that no view can hold
    the database for long; playback checks and the signed API never do.
    Writes are never bounded (a write stopped half-way helps nobody).
    """
    bound = ReadBound(time.monotonic() + seconds, seconds)
    token = _read_bound.set(bound)
    try:
        yield bound
    finally:
        _read_bound.reset(token)


def read_bound() -> ReadBound | None:
    """The bound of the current context, if any (see :func:`bounded_reads`)."""
    return _read_bound.get()


def check_cap(name: str, value: int, most: int) -> int:
    """``value`` once checked to be within 1..``most``."""
    if not 1 <= value <= most:
        raise ValueError(f"The {name} must be between 1 and {most}, got {value}.")
    return value


def one_stream_user(id: int | None, name: StreamUserName | None) -> None:
    """Refuse naming a stream user both or neither ways."""
    if (id is None) == (name is None):
        raise ValueError("Name the stream user by id or by name, exactly one of the two.")


def check_cursor(before: int | None, after: int | None) -> None:
    """Refuse asking for rows both before and after an id."""
    if before is not None and after is not None:
        raise ValueError("Pass before or after, not both.")


@dataclass(frozen=True, slots=True)
class TimelineBucket:
    """Attempts whose time falls in ``[start, start + bucket)``."""

    start: int
    allowed: int
    denied: int


@dataclass(frozen=True, slots=True)
class MinuteTail:
    """:meth:`Storage.minute_tail`: an account's attempts per minute from a
    minute on, and its attempts of all time, read in one snapshot."""

    #: Minute start -> (allowed, denied), for the minutes holding attempts.
    minutes: Mapping[int, tuple[int, int]]
    #: (allowed, denied) of every attempt the account has logged and not pruned.
    total: tuple[int, int]


@dataclass(frozen=True, slots=True)
class PanelSession:
    """A signed-in control-panel browser. Only a hash of the cookie's token is
    stored, so a copy of the database does not let anyone sign in."""

    token_hash: bytes
    cdn: int
    created_at: int
    seen_at: int


@dataclass(frozen=True, slots=True)
class SessionFilter:
    """Filters of ``sevu.sessions``; ``None`` means not filtered. ``open``
    keeps open sessions (True) or ended ones (False); ``start``/``end`` are
    inclusive bounds on ``started_at``."""

    key: str | None = None
    app: str | None = None
    video: str | None = None
    ip: str | None = None
    open: bool | None = None
    start: int | None = None
    end: int | None = None


#: A place in the sessions' listing order (newest start first, ties by id
#: descending): a session's ``(started_at, id)``. ``browse_sessions`` pages
#: from one, as ``list_attempts`` does from an attempt id.
SessionCursor = tuple[int, str]


@dataclass(frozen=True, slots=True)
class SessionsToEnd:
    """Which open sessions ``Storage.end_sessions`` ends: those matching
    every criterion given."""

    session_id: str | None = None
    handle: str | None = None
    cdn: int | None = None
    key: str | None = None


#: Most sessions one ``sweep_sessions`` call ends. Each call is one write,
#: and checks and API writes queue between calls: on the full-size SQLite
#: database (1 M sessions), ending one costs 0.2 to 0.4 ms of random index
#: updates, and a call of 1,000 held every write behind it for 250 to 420 ms,
#: call after call for as long as a burst's sessions took to expire. SQLite
#: also cuts each call short in time (``sqlite.playback.SWEEP_SLICE``).
SWEEP_BATCH: Final = 200


@dataclass(frozen=True, slots=True)
class PanelSessionFilter:
    """Which panel sessions :meth:`Storage.delete_panel_sessions` deletes:
    those matching ANY criterion given."""

    token_hash: bytes | None = None
    cdn: int | None = None
    seen_before: int | None = None
    created_before: int | None = None


def check_countable(where: AttemptFilter, what: str) -> None:
    """Refuse an ``appinst`` filter where attempts are counted or grouped:
    no index or rollup holds it, so such a count would read every attempt of
    the account, and no caller needs one."""
    if where.appinst is not None:
        raise ValueError(
            f"{what} cannot filter by appinst; list the attempts (list_attempts) instead."
        )


def check_timeline_bounds(where: AttemptFilter, bucket: int) -> None:
    """Refuse a timeline request whose answer would not be small."""
    check_countable(where, "attempt_timeline")
    if where.start is None or where.end is None:
        raise ValueError("attempt_timeline needs both where.start and where.end.")
    if bucket < 1:
        raise ValueError(f"The bucket must be at least 1 second, got {bucket}.")
    buckets = where.end // bucket - where.start // bucket + 1
    if buckets > MAX_TIMELINE_BUCKETS:
        raise ValueError(
            f"The range spans {buckets} buckets of {bucket} s; at most "
            f"{MAX_TIMELINE_BUCKETS} are allowed, so choose a larger bucket."
        )


def grouped_column(where: AttemptFilter, column: AttemptColumn, limit: int) -> str:
    """The SQL column ``top_attempt_values`` groups by (from a fixed table,
    never caller text), once ``limit`` is checked to be within
    1..MAX_TOP_VALUES and ``where`` to be countable."""
    check_cap("limit", limit, MAX_TOP_VALUES)
    check_countable(where, "top_attempt_values")
    return GROUPABLE[column]


class Storage(ABC):
    """Persistent state of one Usher deployment."""

    # -- lifecycle ---------------------------------------------------------

    @abstractmethod
    async def open(self) -> None:
        """Connect and create or migrate the schema.

        Raises :class:`~usher.protocol.errors.SchemaError` when the database
        holds a newer schema than this code knows.
        """

    @abstractmethod
    async def close(self) -> None:
        """Finish pending writes and release connections."""

    @abstractmethod
    async def ping(self) -> None:
        """Raise :class:`~usher.protocol.errors.StorageUnavailable` unless the
        database answers."""

    @abstractmethod
    async def schema_version(self) -> int:
        """The schema version the database is at."""

    #: Seconds the oldest queued write may wait before new writes are shed
    #: with :class:`~usher.protocol.errors.StorageBusy` (code 1000 / 503);
    #: a backend that can tell may also shed a new write that would not be
    #: committed within it (SQLite). Backends without a write queue ignore it.
    max_write_wait: float = 0.5

    @property
    def pending_writes(self) -> int:
        """Writes queued but not yet committed (for metrics and load shedding)."""
        return 0

    def sheds_checks(self) -> bool:
        """Whether :meth:`record_check` would now refuse a check with
        :class:`~usher.protocol.errors.StorageBusy`: a cheap look, without
        locks, so that a flood is refused before any work is spent on it.
        A guess at the margin; ``record_check`` still decides."""
        return False

    # -- accounts ----------------------------------------------------------

    @abstractmethod
    async def create_account(
        self, *, username: str, api_key: str, secret: str, cdn: int | None, now: int
    ) -> Account:
        """Insert an account; ``cdn=None`` takes the next free integer.

        Raises :class:`~usher.protocol.errors.AlreadyExists` when the username
        or cdn is taken.
        """

    @abstractmethod
    async def list_accounts(self) -> list[Account]:
        """All accounts, by cdn."""

    @abstractmethod
    async def get_account(self, cdn: int) -> Account | None:
        """The account with this cdn, or ``None``: read from the database."""

    def cached_account(self, cdn: int) -> Account | None:
        """The account as this node last read or wrote it, without reading the
        database, or ``None`` when it has no copy (this default never does).
        The copy may be out of date: a signed command may only *accept* with
        it, and only through :meth:`claim_signature`, which spends the
        signature only if the row still authenticates as the copy did; a
        refusal is always decided on :meth:`get_account`'s row."""
        return None

    @abstractmethod
    async def get_account_by_username(self, username: str) -> Account | None:
        """The account with this username, or ``None``."""

    @abstractmethod
    async def update_account(
        self, cdn: int, *, secret: str | None = None, disabled: bool | None = None
    ) -> Account | None:
        """Change the secret and/or the disabled flag; ``None`` if no such cdn."""

    # -- replay protection -------------------------------------------------

    @abstractmethod
    async def claim_signature(
        self, digest: bytes, *, now: int, expires_at: int, account: Account
    ) -> Claim:
        """Record a signature, verified with ``account``'s secret, as used.

        :attr:`Claim.REPLAYED` if it was already recorded and has not
        expired; :attr:`Claim.ACCOUNT_CHANGED`, recording nothing, if the
        account's row no longer holds ``account``'s api_key and secret or is
        disabled (the signature was verified with a copy that is out of date,
        or the account changed since it was read). Atomic across processes
        sharing the database: the row is read in the claim's own statement.
        """

    # -- tickets -----------------------------------------------------------

    @abstractmethod
    async def insert_ticket(self, ticket: Ticket) -> None:
        """Store a new ticket (its key is unique across all accounts)."""

    @abstractmethod
    async def get_ticket(self, cdn: int, key: str) -> Ticket | None:
        """The account's ticket with this key, or ``None``."""

    async def revoke_ticket(self, cdn: int, key: str, *, now: int) -> bool:
        """Deactivate the account's ticket and end its open sessions
        (``revoked``) in one transaction; ``False`` if it does not exist."""
        return await self.update_ticket(cdn, key, active=False, expire_at=None, now=now)

    @abstractmethod
    async def update_ticket(
        self, cdn: int, key: str, *, active: bool | None, expire_at: int | None, now: int
    ) -> bool:
        """Set the account's ticket's ``active`` flag and/or ``expire_at``
        (``None``: leave it) in one transaction; ``False`` if the account has
        no such ticket. ``active=False`` is :meth:`revoke_ticket`: the
        ticket's open sessions end (``revoked``) at ``now`` in the same
        transaction; ``active=True`` reactivates it. The next check sees the
        new values."""

    async def ticket_ids(self, cdn: int, keys: Sequence[str]) -> dict[str, int]:
        """The row ids of the account's tickets with these keys, by key in
        the order asked (keys the account has no ticket with are left out);
        one read. At
        most :data:`~usher.tickets.model.MAX_PAGE_ROWS` keys, else
        ``ValueError``."""
        if len(keys) > MAX_PAGE_ROWS:
            raise ValueError(
                f"Ask for at most {MAX_PAGE_ROWS} tickets' ids at once, not {len(keys)}."
            )
        if not keys:
            return {}
        wanted: dict[str, list[str]] = {}
        for key in keys:
            wanted.setdefault(storable(key), []).append(key)
        found = await self._ticket_ids(cdn, list(wanted))
        return {
            key: found[stored]
            for stored, asked in wanted.items()
            if stored in found
            for key in asked
        }

    @abstractmethod
    async def _ticket_ids(self, cdn: int, keys: list[str]) -> dict[str, int]:
        """:meth:`ticket_ids` for distinct storable ``keys`` (1 to
        ``MAX_PAGE_ROWS`` of them): stored key to row id."""

    @abstractmethod
    async def search_tickets(
        self, cdn: int, where: TicketFilter, page: Page, *, count: bool = True
    ) -> tuple[list[Ticket], int]:
        """Matching tickets newest first, paged, and the count of all matches.

        The page holds at most ``page.rows`` tickets (never more than
        :data:`~usher.tickets.model.MAX_PAGE_ROWS`, whatever ``page.limit``
        says), and the backend reads no more than that: the cap is applied in
        the query, and the count is counted by the database, not from rows.
        ``count=False`` skips the count (it reads every match), and answers
        ``-1`` for it: the v2 API's listing has no total to give.
        """

    # -- playback checks and the attempt log --------------------------------

    @abstractmethod
    async def record_check(
        self,
        request: CheckRequest,
        decide: Decider,
        now: int,
        *,
        log: bool = True,
        session: SessionStart | None = None,
    ) -> CheckOutcome:
        """Run one playback check atomically and durably.

        Locks the ticket named by ``request.key``, calls ``decide``, and in the
        same transaction applies the decision (count a use, set ``used_date``,
        bind an ``auto`` slot) and, when ``log`` is true, appends the attempt.
        Returns only after that transaction is committed, so an answered
        attempt survives a crash.

        With ``session``, the check is a playback start and the sessions are
        part of the same transaction, as :mod:`usher.tickets.sessions`
        rules: the latest session under ``session.handle`` and the ticket's
        open sessions (for ``max_viewers``) are read with the ticket locked,
        so concurrent starts of one ticket, from any process or node, open
        at most ``max_viewers`` sessions and a handle's starts count one use
        between them. An allowed sign of life is not logged, whatever ``log``.
        """

    # -- live sessions --------------------------------------------------------

    @abstractmethod
    async def lookup_ticket(self, key: str) -> Ticket | None:
        """The ticket with this key in any account (with its account's
        ``disabled`` flag), or ``None``.

        A read, never queued behind writes: re-checks of open sessions use
        it, so they cost no write.
        """

    @abstractmethod
    async def lookup_session(
        self, *, session_id: str | None = None, handle: str | None = None
    ) -> tuple[PlaybackSession, Ticket | None] | None:
        """The session with this id, or the latest (by start) under this
        handle (exactly one of the two), and its ticket as they are now, read
        in one snapshot; ``None`` when there is none. A read, like
        :meth:`lookup_ticket`; the caller judges ``expires_at`` by its clock."""

    @abstractmethod
    async def renew_session(self, session_id: str, *, now: int, expires_at: int) -> bool:
        """A sign of life: ``last_seen_at = now`` and the expiry moved to
        ``expires_at`` unless it is later already; ``False`` unless the
        session is open (not ended, and ``expires_at`` still ahead of ``now``)."""

    async def end_sessions(
        self,
        *,
        now: int,
        reason: EndReason,
        session_id: str | None = None,
        handle: str | None = None,
        cdn: int | None = None,
        key: str | None = None,
    ) -> list[PlaybackSession]:
        """End the open sessions matching every criterion given (at least
        ``session_id`` (which also matches an alias), ``handle`` or ``key``,
        else ``ValueError``), at ``now`` for ``reason``; the sessions ended,
        as they are now. One already past its expiry ends ``idle`` at its
        expiry instead, and is not returned. Ending twice is harmless: end
        notices may arrive out of order."""
        which = SessionsToEnd(session_id, handle, cdn, key)
        if which.session_id is None and which.handle is None and which.key is None:
            raise ValueError("Name the sessions to end: a session id, a handle or a ticket key.")
        return await self._end_sessions(which, now, reason)

    @abstractmethod
    async def _end_sessions(
        self, which: SessionsToEnd, now: int, reason: EndReason
    ) -> list[PlaybackSession]:
        """:meth:`end_sessions`, its criteria checked."""

    @abstractmethod
    async def sweep_sessions(self, now: int, limit: int = SWEEP_BATCH) -> int:
        """Write down the idle end of up to ``limit`` sessions whose expiry
        passed (``ended_at = expires_at``, ``end_reason = 'idle'``); how many.
        Reads only the open sessions' expiry index, never the history. A
        backend may end fewer than ``limit`` while more remain (to keep one
        write short); 0 means none is left."""

    @abstractmethod
    async def count_viewers(self, keys: list[str], now: int) -> dict[str, int]:
        """Open sessions per ticket key (keys without any are left out)."""

    @abstractmethod
    async def count_open_sessions(self, now: int, cdn: int | None = None) -> int:
        """Sessions open now, of one account or of all."""

    @abstractmethod
    async def list_sessions(
        self, cdn: int, where: SessionFilter, page: Page, now: int
    ) -> tuple[list[PlaybackSession], int]:
        """Matching sessions of the account, newest start first, paged (at
        most ``page.rows``), and the count of all matches."""

    @abstractmethod
    async def browse_sessions(
        self,
        cdn: int,
        where: SessionFilter,
        page: Page,
        now: int,
        *,
        before: SessionCursor | None = None,
        after: SessionCursor | None = None,
    ) -> list[PlaybackSession]:
        """Matching sessions of the account, as :meth:`list_sessions` orders
        them but without a count and from a cursor: at most ``page.rows``
        (``page.seek`` is ignored), those after ``before`` in that order
        (older), or with ``after`` the ones before it (newer), nearest first,
        so oldest first. At most one cursor, else ``ValueError``. A page is
        one index range read from the cursor, however deep; a cursor of a
        session that no longer exists still works as a bound."""

    @abstractmethod
    async def count_sessions_upto(self, cdn: int, where: SessionFilter, now: int, cap: int) -> int:
        """:meth:`list_sessions`' count, reading at most ``cap + 1`` matching
        sessions: the exact count when it is at most ``cap``, else ``cap + 1``
        ("more than ``cap``"). ``1 <= cap <= MAX_COUNT_CAP``, else ``ValueError``."""

    @abstractmethod
    async def prune_sessions(self, before: int, batch: int) -> int:
        """Delete up to ``batch`` sessions that ended before ``before``; how many."""

    @abstractmethod
    async def list_attempts(
        self,
        cdn: int,
        where: AttemptFilter,
        page: Page,
        *,
        newest_first: bool = False,
        before: int | None = None,
        after: int | None = None,
    ) -> list[Attempt]:
        """Matching attempts of the account, oldest first (or newest first), paged.

        "Oldest" is the log's order. Ids follow the times attempts were
        logged at, except across a second's boundary while checks queue and
        between nodes whose clocks disagree; there SQLite lists by id (its
        walks follow the table's rowid) and PostgreSQL by time, then id (its
        walks follow the indexes, which all end in the time). Either way the
        order is total and the cursors below follow it, so paging visits
        every attempt once.

        At most ``page.rows`` attempts, read no further than that, as in
        :meth:`search_tickets`.

        ``where.appinst`` has no index: it is tested on the attempts the
        other filters' access path reads, so a rare ``appinst`` with no other
        filter may read every attempt of the account (on SQLite, of the
        table) before the page is full. Callers that take it from clients
        run the listing inside :func:`bounded_reads`.

        ``before``/``after`` (at most one; else ``ValueError``) keep only
        attempts before/after the attempt of that id in that order: a cursor
        for paging that reads one index range however deep the page (the
        panel's explorer passes the id of the last row it showed, and
        ``page.seek`` 0). An id that no longer exists (pruned) still works
        as a bound.
        """

    @abstractmethod
    async def count_attempts(self, cdn: int, where: AttemptFilter) -> int:
        """How many attempts of the account match (before ``limit``/``seek``).

        Exact, and cheap for any value: see :mod:`usher.storage.counting`.
        ``where.appinst`` is refused (``ValueError``): nothing counts by it,
        and no index could answer it.
        """

    @abstractmethod
    async def flush_rollups(self) -> None:
        """Finish any deferred upkeep of the count rollups now.

        Counts are exact either way; a backend that keeps rollups in place
        (SQLite) has nothing to do. PostgreSQL merges its pending delta rows,
        which its nodes otherwise do every second.
        """

    @abstractmethod
    async def count_attempts_upto(self, cdn: int, where: AttemptFilter, cap: int) -> int:
        """:meth:`count_attempts`, but reading at most ``cap + 1`` matching
        attempts: the exact count when it is at most ``cap``, else ``cap + 1``
        ("more than ``cap``"). ``1 <= cap <= MAX_COUNT_CAP``, else ``ValueError``.
        ``where.appinst`` is refused (``ValueError``), as by :meth:`count_attempts`.
        """

    @abstractmethod
    async def recent_denials(
        self, cdn: int, start: int, end: int, limit: int
    ) -> list[tuple[str, str, str]]:
        """``(reason, ip, key)`` of the account's latest ``limit`` denied
        attempts with ``start <= at <= end``, newest first (attempts of the
        same second in any order). ``1 <= limit <= MAX_RECENT_DENIALS``, else
        ``ValueError``. Reads those rows and no others, through the account's
        time index: the overview ranks its top lists from them.
        """

    # -- retention ---------------------------------------------------------------

    @abstractmethod
    async def count_attempts_before(self, before: int) -> int:
        """How many attempts, of every account and of none, were logged
        before ``before`` (``at < before``): what pruning at ``before``
        would delete."""

    @abstractmethod
    async def prune_attempts(self, before: int, batch: int) -> int:
        """Delete attempts logged before ``before`` (``at < before``); how many went.

        At most ``batch`` (at least 1) in one short transaction, so checks go
        on meanwhile; a backend may delete fewer to keep its write lock
        short. Call again until it returns 0, which means none are left.
        What ``count_attempts`` answers stays exact for the attempts that
        remain, at every commit. Concurrent calls (several nodes) are safe:
        each attempt is deleted once.
        """

    # -- attempt statistics (the control panel's charts) ------------------------

    @abstractmethod
    async def attempt_timeline(
        self, cdn: int, where: AttemptFilter, bucket: int
    ) -> list[TimelineBucket]:
        """Matching attempts counted per time bucket, allowed and denied apart.

        A bucket starts at a multiple of ``bucket`` seconds since the epoch
        (``at - at % bucket``). Only buckets holding attempts are returned,
        oldest first. ``where.start`` and ``where.end`` must both be set and
        span at most :data:`MAX_TIMELINE_BUCKETS` buckets, else ``ValueError``;
        ``where.appinst`` is refused (``ValueError``), as by :meth:`count_attempts`.
        """

    @abstractmethod
    async def minute_tail(self, cdn: int, since: int) -> MinuteTail:
        """``cdn``'s attempts per minute for every minute that starts at or
        after ``since`` (a multiple of 60 that is not negative, else
        ``ValueError``), later minutes included (another node's clock may be
        ahead), and the account's total, in one snapshot: an attempt
        committed or pruned meanwhile is counted in both or in neither.

        Reads the per-minute rollup rows from ``since`` on and the account's
        two total rows: what the live overview reads at each refresh (see
        :mod:`usher.web.panel.live`).
        """

    @abstractmethod
    async def top_attempt_values(
        self, cdn: int, where: AttemptFilter, column: AttemptColumn, limit: int
    ) -> list[tuple[str, int]]:
        """The most frequent values of ``column`` among matching attempts.

        ``(value, count)`` pairs, most frequent first, ties by value ascending;
        ``1 <= limit <= MAX_TOP_VALUES``, else ``ValueError``; ``where.appinst``
        is refused (``ValueError``), as by :meth:`count_attempts`.
        """

    # -- publishers (stream users) ------------------------------------------

    @abstractmethod
    async def save_stream_user(self, user: StreamUser) -> StreamUser:
        """Store ``user`` (its ``id`` is ignored), or, when the account
        already has one with its app + stream + user, replace that one's
        pass and settings and set its ``updated_at`` (keeping its id and
        ``created_at``); the row as stored."""

    @abstractmethod
    async def remove_stream_user(
        self, cdn: int, *, id: int | None = None, name: StreamUserName | None = None
    ) -> bool:
        """Delete the account's stream user with this id, or this name
        (exactly one of the two, else ``ValueError``); ``False`` if the
        account has none such."""

    @abstractmethod
    async def get_stream_user(
        self, cdn: int, *, id: int | None = None, name: StreamUserName | None = None
    ) -> StreamUser | None:
        """The account's stream user with this id, or this name (exactly one
        of the two, else ``ValueError``), or ``None``."""

    @abstractmethod
    async def list_stream_users(
        self, cdn: int, *, app: str | None = None, stream: str | None = None
    ) -> list[StreamUser]:
        """The account's stream users, filtered exactly by ``app`` and
        ``stream`` when given, by app, stream, then user (open entry first)."""

    @abstractmethod
    async def stream_users_for(self, app: str, stream: str) -> list[StreamUser]:
        """The stream users a publish of ``stream`` on ``app`` is judged by:
        those of ``app`` whose stream is ``stream`` or ``*``, of any account
        (streaming servers do not know the cdn; the app's ``username-``
        prefix ties it to one), leaving out those of disabled accounts. A
        read, never queued behind writes."""

    # -- the publish log ----------------------------------------------------

    async def record_publish(self, attempt: PublishAttempt) -> int:
        """Log one publish attempt (its ``id`` is ignored); the new row's id."""
        [logged] = await self.record_publishes([attempt])
        return logged

    @abstractmethod
    async def record_publishes(self, attempts: Sequence[PublishAttempt]) -> list[int]:
        """Log publish attempts (their ``id`` is ignored) in one transaction;
        the new rows' ids, in the same order. Returns after they are
        committed. At most :data:`MAX_PUBLISH_BATCH` at once, else
        ``ValueError``; none is no write."""

    @abstractmethod
    async def publish_denials(self, ip: str, since: int, limit: int) -> list[int]:
        """The times (``at``), oldest first, of the latest ``limit`` denied
        publishes from ``ip`` with ``at >= since``, of every account and of
        none, leaving out those denied for reason ``blocked``: what the
        brute-force rule (:func:`~usher.tickets.publishers.blocked_until`)
        reads. ``1 <= limit <= MAX_PUBLISH_DENIALS``, else ``ValueError``.
        One index range read, however long the log."""

    @abstractmethod
    async def list_publishes(
        self, cdn: int, where: PublishFilter, rows: int, *, before: int | None = None
    ) -> list[PublishAttempt]:
        """The account's publish log rows matching ``where``, newest first
        (by id), at most ``rows`` (``1 <= rows <=`` :data:`~usher.tickets.model.MAX_PAGE_ROWS`, else
        ``ValueError``), only those with an id below ``before`` when given:
        a cursor that reads one index range however deep the page."""

    @abstractmethod
    async def prune_publishes(self, before: int, batch: int) -> int:
        """Delete up to ``batch`` publish log rows logged before ``before``
        (``at < before``), oldest first; how many went. ``batch >= 1``, else
        ``ValueError``."""

    # -- control-panel sign-in ------------------------------------------------

    @abstractmethod
    async def set_panel_password(self, cdn: int, password_hash: str | None, *, now: int) -> bool:
        """Store (or with ``None`` remove) the account's panel password hash;
        ``False`` if no such account."""

    @abstractmethod
    async def get_panel_password(self, cdn: int) -> str | None:
        """The account's panel password hash, or ``None`` if it has none."""

    @abstractmethod
    async def create_panel_session(self, session: PanelSession) -> None:
        """Store a new panel session (its token hash is unique)."""

    @abstractmethod
    async def get_panel_session(self, token_hash: bytes) -> PanelSession | None:
        """The session with this token hash, or ``None``."""

    @abstractmethod
    async def touch_panel_session(self, token_hash: bytes, *, now: int) -> None:
        """Record activity: set the session's ``seen_at`` to ``now``, never back
        (two nodes may touch one session out of order)."""

    @abstractmethod
    async def delete_panel_sessions(self, where: PanelSessionFilter) -> int:
        """Delete the sessions matching ANY given criterion; how many went.

        One token (sign-out), every session of an account (new password,
        rotated secret), or every session idle since before ``seen_before``
        or created before ``created_before`` (expiry). No criterion deletes
        nothing.
        """
