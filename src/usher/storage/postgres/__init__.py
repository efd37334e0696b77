"""The PostgreSQL backend: any number of Usher nodes on one database.

Why this shape:

* Nodes share nothing but the database, so every rule that must hold across
  nodes is enforced by PostgreSQL, never by a node's memory:

  - a playback check locks its ticket row (``SELECT … FOR UPDATE OF t``),
    so concurrent checks of one ticket queue on that lock whichever node they
    arrive at: ``uses = N`` allows exactly N and an ``auto`` slot binds once.
    Only the ticket row is locked, never its account. Each node runs its
    checks in batches, one transaction and one commit per batch, two batches
    open at a time (group commit, see postgres/checks.py), so a popular
    ticket's checks do not each wait for the previous one's WAL flush;
  - a replay claim is one ``INSERT … ON CONFLICT DO UPDATE … WHERE expired``;
  - a revocation is a committed ``UPDATE`` that the next check on any node
    reads, because nothing about tickets is cached. A node keeps a copy of
    each account it has read, which saves a signed command its first round
    trip; the copy can only accept, and only through the replay claim, whose
    statement reads the account's row (see ``Storage.cached_account``).

* Every operation is one short transaction on a pooled connection (psycopg 3,
  async, psycopg_pool). A check, or a batch of checks, costs two round
  trips: ``BEGIN`` and the locking ``SELECT`` travel in one pipeline sync, the
  ``UPDATE``, the attempt ``INSERT`` and ``COMMIT`` in the next. psycopg prepares a statement on a
  connection once it has run a few times there.

* Failures are answered, not hung on: a lost connection is
  :class:`StorageUnavailable` (code 4), a pool with every connection busy and
  too many requests queued is :class:`StorageBusy` (code 1000), and
  ``statement_timeout`` bounds every statement. A lost connection makes the
  pool test its idle connections at once, so after a database restart only
  the requests in flight fail (how reads are retried: see
  :mod:`usher.storage.postgres.runner`).
"""

from __future__ import annotations

import time
from typing import Final

import psycopg

from usher.protocol.errors import AlreadyExists, StorageBusy
from usher.storage.base import (
    MAX_COUNT_CAP,
    Claim,
    Decider,
    SessionsToEnd,
    Storage,
    check_cap,
    check_cursor,
)
from usher.storage.counting import (
    EVERYTHING,
    broad_of,
    count_attempts_upto,
    sorting_is_cheaper,
    uses_rollup,
)
from usher.storage.postgres.checks import CheckBatcher
from usher.storage.postgres.config import parse_url
from usher.storage.postgres.counts import PostgresCountsMixin
from usher.storage.postgres.panel import PostgresPanelMixin
from usher.storage.postgres.playback import PostgresPlaybackMixin, end_in
from usher.storage.postgres.publishers import PostgresPublishersMixin
from usher.storage.postgres.retention import PostgresRetentionMixin
from usher.storage.postgres.runner import PgRunner
from usher.storage.postgres.sql import (
    TICKET_IDS,
    Conn,
    apply_decision,
    attempts_where,
    claim_sql,
    inserted_id,
    lock_ticket,
    log_attempt,
    log_order,
)
from usher.storage.rows import (
    account_from_row,
    attempt_from_row,
    placeholders,
    storable_request,
    ticket_from_row,
    ticket_values,
    ticket_where,
)
from usher.storage.schema import (
    ACCOUNT_COLUMNS,
    ATTEMPT_COLUMNS,
    TICKET_COLUMNS,
    TICKET_FROM,
    TICKET_INSERT,
    TICKET_INSERT_COLUMNS,
)
from usher.tickets.model import (
    Account,
    Attempt,
    AttemptFilter,
    CheckOutcome,
    CheckRequest,
    EndReason,
    Page,
    SessionStart,
    Ticket,
    TicketFilter,
)
from usher.tickets.text import storable

#: How often (in claims, per node) expired replay-protection rows are purged.
_PURGE_EVERY: Final = 1000
_TICKET_ROW: Final = placeholders(len(TICKET_INSERT_COLUMNS), "%s")


class PostgresStorage(
    PostgresPanelMixin,
    PostgresPlaybackMixin,
    PostgresPublishersMixin,
    PostgresRetentionMixin,
    PostgresCountsMixin,
    Storage,
):
    """Storage in a PostgreSQL database shared by any number of nodes."""

    def __init__(self, url: str) -> None:
        self.target = parse_url(url)
        self._db = PgRunner(self.target)
        self._checks = CheckBatcher(self._db, self._check_alone)
        self._claims = 0
        # Accounts as last read or written here, for cached_account; only
        # existing accounts, so its size is bounded by the accounts table.
        self._accounts: dict[int, Account] = {}

    @property
    def pending_writes(self) -> int:
        """Checks waiting for their batch, and requests waiting for a connection."""
        return self._checks.waiting + self._db.waiting

    def sheds_checks(self) -> bool:
        return self._checks.over_budget(time.monotonic(), self.max_write_wait)

    # -- lifecycle -------------------------------------------------------------

    async def open(self) -> None:
        await self._db.open()
        self._checks.start()
        self.start_merging()

    async def close(self) -> None:
        # Queued checks first, while the pool can still run them.
        await self._checks.close()
        await self.stop_merging()
        await self._db.close()

    async def ping(self) -> None:
        await self._db.fetchone("SELECT 1")

    async def schema_version(self) -> int:
        row = await self._db.fetchone("SELECT max(version) FROM schema_version")
        return int(row[0]) if row and row[0] is not None else 0

    # -- accounts ----------------------------------------------------------------

    async def create_account(
        self, *, username: str, api_key: str, secret: str, cdn: int | None, now: int
    ) -> Account:
        # "Next free cdn" is MAX + 1, computed in the INSERT itself. Two nodes
        # may compute the same one; the loser hits the primary key and tries
        # the next. Bounded: every round, some creator wins.
        for _ in range(100):
            try:
                row, _ = await self._db.write(
                    f"INSERT INTO accounts ({ACCOUNT_COLUMNS}) SELECT"
                    " COALESCE(%s::bigint, (SELECT COALESCE(MAX(cdn), 0) + 1 FROM accounts)),"
                    f" %s, %s, %s, FALSE, %s RETURNING {ACCOUNT_COLUMNS}",
                    (cdn, username, api_key, secret, now),
                )
            except AlreadyExists as exc:
                cause = exc.__cause__
                constraint = (
                    cause.diag.constraint_name if isinstance(cause, psycopg.Error) else None
                )
                if constraint == "accounts_username_key":
                    raise AlreadyExists(f"An account named {username!r} already exists.") from None
                if cdn is not None:
                    raise AlreadyExists(
                        f"CDN id {cdn} is already taken; choose another --cdn."
                    ) from None
                continue
            assert row is not None  # INSERT … RETURNING gives its row
            return self._remember(account_from_row(row))
        raise StorageBusy("Could not find a free cdn; too many accounts are being created at once.")

    async def list_accounts(self) -> list[Account]:
        rows = await self._db.fetchall(f"SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY cdn")
        return [account_from_row(row) for row in rows]

    async def get_account(self, cdn: int) -> Account | None:
        row = await self._db.fetchone(
            f"SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE cdn = %s", (cdn,)
        )
        if row is None:
            self._accounts.pop(cdn, None)
            return None
        return self._remember(account_from_row(row))

    def cached_account(self, cdn: int) -> Account | None:
        return self._accounts.get(cdn)

    def _remember(self, account: Account) -> Account:
        self._accounts[account.cdn] = account
        return account

    async def get_account_by_username(self, username: str) -> Account | None:
        row = await self._db.fetchone(
            f"SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE username = %s", (storable(username),)
        )
        return None if row is None else account_from_row(row)

    async def update_account(
        self, cdn: int, *, secret: str | None = None, disabled: bool | None = None
    ) -> Account | None:
        row, _ = await self._db.write(
            "UPDATE accounts SET secret = COALESCE(%s, secret),"
            " disabled = COALESCE(%s, disabled)"
            f" WHERE cdn = %s RETURNING {ACCOUNT_COLUMNS}",
            (secret, disabled, cdn),
        )
        if row is None:
            self._accounts.pop(cdn, None)
            return None
        return self._remember(account_from_row(row))

    # -- replay protection ---------------------------------------------------------

    async def claim_signature(
        self, digest: bytes, *, now: int, expires_at: int, account: Account
    ) -> Claim:
        self._claims += 1
        purge = self._claims % _PURGE_EVERY == 0
        sql, params = claim_sql(account, digest, expires_at, now)

        async def work(conn: Conn) -> Claim:
            if purge:
                await conn.execute("DELETE FROM used_signatures WHERE expires_at < %s", (now,))
            row = await (await conn.execute(sql, params)).fetchone()
            assert row is not None  # SELECT EXISTS … always gives one row
            unchanged, spent = row
            if not unchanged:
                self._accounts.pop(account.cdn, None)
                return Claim.ACCOUNT_CHANGED
            return Claim.SPENT if spent else Claim.REPLAYED

        return await self._db.run(work)

    # -- tickets ---------------------------------------------------------------------

    async def insert_ticket(self, ticket: Ticket) -> None:
        await self._db.write(
            f"INSERT INTO tickets ({TICKET_INSERT}) VALUES {_TICKET_ROW}", ticket_values(ticket)
        )

    async def get_ticket(self, cdn: int, key: str) -> Ticket | None:
        row = await self._db.fetchone(
            f"SELECT {TICKET_COLUMNS} {TICKET_FROM} WHERE t.key = %s AND t.cdn = %s",
            (storable(key), cdn),
        )
        return None if row is None else ticket_from_row(row)

    async def update_ticket(
        self, cdn: int, key: str, *, active: bool | None, expire_at: int | None, now: int
    ) -> bool:
        async def work(conn: Conn) -> bool:
            cursor = await conn.execute(
                "UPDATE tickets SET active = COALESCE(%s::boolean, active),"
                " expire_at = COALESCE(%s::bigint, expire_at)"
                " WHERE key = %s AND cdn = %s RETURNING 1",
                (active, expire_at, storable(key), cdn),
            )
            if await cursor.fetchone() is None:
                return False
            if active is False:
                await end_in(conn, SessionsToEnd(cdn=cdn, key=key), now, EndReason.REVOKED)
            return True

        return await self._db.run(work, transaction=True)

    async def _ticket_ids(self, cdn: int, keys: list[str]) -> dict[str, int]:
        rows = await self._db.fetchall(TICKET_IDS, (keys, cdn))
        return {str(key): int(row_id) for key, row_id in rows}

    async def search_tickets(
        self, cdn: int, where: TicketFilter, page: Page, *, count: bool = True
    ) -> tuple[list[Ticket], int]:
        sql, params = ticket_where(cdn, where, "%s")
        page_sql = (
            f"SELECT {TICKET_COLUMNS} {TICKET_FROM} WHERE {sql}"
            " ORDER BY t.id DESC LIMIT %s OFFSET %s"
        )
        if not count:
            rows = await self._db.fetchall(page_sql, [*params, page.rows, page.seek])
            return [ticket_from_row(row) for row in rows], -1
        # One statement, so the page and the total come from one snapshot.
        # The count row is always there; a page past the end joins nothing.
        rows = await self._db.fetchall(
            f"SELECT c.total, p.* FROM (SELECT count(*) FROM tickets t WHERE {sql}) AS c (total)"
            f" LEFT JOIN LATERAL ({page_sql}) AS p ON TRUE",
            [*params, *params, page.rows, page.seek],
        )
        total = int(rows[0][0]) if rows else 0
        return [ticket_from_row(row[1:]) for row in rows if row[1] is not None], total

    # -- playback checks and the attempt log ---------------------------------------------

    async def record_check(
        self,
        request: CheckRequest,
        decide: Decider,
        now: int,
        *,
        log: bool = True,
        session: SessionStart | None = None,
    ) -> CheckOutcome:
        return await self._checks.submit(
            storable_request(request),
            decide,
            now,
            log,
            max_wait=self.max_write_wait,
            session=session,
        )

    async def _check_alone(
        self, request: CheckRequest, decide: Decider, now: int, log: bool
    ) -> CheckOutcome:
        """One check in a transaction of its own (a batch of one, or a check
        of a batch that failed)."""

        async def work(conn: Conn) -> CheckOutcome:
            logged = None
            # Two round trips: BEGIN + the locking SELECT, then the UPDATE,
            # the INSERT and COMMIT, which leaving both blocks sends and syncs.
            async with conn.pipeline(), conn.transaction():
                locked = await lock_ticket(conn, request.key)
                ticket = None if locked is None else locked[1]
                decision = decide(ticket, request, now)
                if locked is not None:
                    await apply_decision(conn, locked[0], locked[1], decision, now)
                if log:
                    logged = await log_attempt(conn, request, ticket, decision, now)
            # Committed by now, so the id belongs to an attempt on disk.
            return CheckOutcome(decision, await inserted_id(logged), ticket)

        return await self._db.run(work)

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
        check_cursor(before, after)
        sql, params = attempts_where(
            cdn, where, apps_of_video=await self._sort_video_matches(cdn, where, page)
        )
        bound, order, bound_params = log_order(
            newest_first=newest_first, before=before, after=after
        )
        rows = await self._db.fetchall(
            f"SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE {sql}{bound}"
            f" ORDER BY {order} LIMIT %s OFFSET %s",
            [*params, *bound_params, page.rows, page.seek],
        )
        return [attempt_from_row(row) for row in rows]

    async def _sort_video_matches(self, cdn: int, where: AttemptFilter, page: Page) -> bool:
        """For a list of a video without an app: whether to read the video's
        attempts through its apps' index entries and sort them (a rare
        video) rather than walk ``attempts_cdn_at`` in time order, testing
        the video on its entries (a busy one: reading and sorting all 60,000
        attempts of a popular video took 300 ms at 2 M attempts, where the
        walk passes a few thousand entries). The
        rollups give both counts exactly when no key, pass, ip or time range
        narrows the video; with one, the video's apps keep narrowing the
        index read, as before."""
        if where.video is None or where.app is not None or not uses_rollup(where):
            return True
        matches = await self.sum_account_counts(cdn, broad_of(where))
        total = await self.sum_account_counts(cdn, EVERYTHING)
        return sorting_is_cheaper(matches, total, page, sparse=where.appinst is not None)

    async def count_attempts_upto(self, cdn: int, where: AttemptFilter, cap: int) -> int:
        check_cap("cap", cap, MAX_COUNT_CAP)
        return await count_attempts_upto(self, cdn, where, cap)
