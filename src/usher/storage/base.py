"""The one storage interface every backend implements.

Commands and rules talk only to :class:`Storage`. A backend owns transactions
and durability; it never decides anything about a ticket itself: the atomic
playback check hands the locked ticket to a pure ``decide`` function from
:mod:`usher.tickets.decision` and persists what it returns.

Every method is a coroutine so that a backend can be natively async
(PostgreSQL) or run blocking work on its own threads (SQLite).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

from usher.tickets.model import (
    Account,
    Attempt,
    AttemptFilter,
    CheckOutcome,
    CheckRequest,
    Decision,
    Page,
    Ticket,
    TicketFilter,
)

#: ``decide(ticket_or_None, request, now) -> Decision``, called while the
#: backend holds the ticket locked.
Decider = Callable[[Ticket | None, CheckRequest, int], Decision]

#: Longest text kept for any attempt field; longer values are cut so a hostile
#: caller cannot grow the log by megabytes per request.
MAX_ATTEMPT_FIELD = 1024


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

    @property
    def pending_writes(self) -> int:
        """Writes queued but not yet committed (for metrics and load shedding)."""
        return 0

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
        """The account with this cdn, or ``None``."""

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
    async def claim_signature(self, digest: bytes, *, now: int, expires_at: int) -> bool:
        """Record a signature as used; ``False`` if it was already recorded and
        has not expired. Atomic across processes sharing the database."""

    # -- tickets -----------------------------------------------------------

    @abstractmethod
    async def insert_ticket(self, ticket: Ticket) -> None:
        """Store a new ticket (its key is unique across all accounts)."""

    @abstractmethod
    async def get_ticket(self, cdn: int, key: str) -> Ticket | None:
        """The account's ticket with this key, or ``None``."""

    @abstractmethod
    async def revoke_ticket(self, cdn: int, key: str) -> bool:
        """Deactivate the account's ticket; ``False`` if it does not exist."""

    @abstractmethod
    async def search_tickets(
        self, cdn: int, where: TicketFilter, page: Page
    ) -> tuple[list[Ticket], int]:
        """Matching tickets newest first, paged, and the count of all matches."""

    # -- playback checks and the attempt log --------------------------------

    @abstractmethod
    async def record_check(
        self, request: CheckRequest, decide: Decider, now: int, *, log: bool = True
    ) -> CheckOutcome:
        """Run one playback check atomically and durably.

        Locks the ticket named by ``request.key``, calls ``decide``, and in the
        same transaction applies the decision (count a use, set ``used_date``,
        bind an ``auto`` slot) and, when ``log`` is true, appends the attempt.
        Returns only after that transaction is committed, so an answered
        attempt survives a crash.
        """

    @abstractmethod
    async def list_attempts(self, cdn: int, where: AttemptFilter, page: Page) -> list[Attempt]:
        """Matching attempts of the account, oldest first, paged."""

    @abstractmethod
    async def count_attempts(self, cdn: int, where: AttemptFilter) -> int:
        """How many attempts of the account match (before ``limit``/``seek``)."""
