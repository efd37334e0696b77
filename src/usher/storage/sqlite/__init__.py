"""The embedded SQLite backend.

The connections, the writer thread and its group commit live in
:mod:`usher.storage.sqlite.engine`; the playback check's transaction in
:mod:`usher.storage.sqlite.checks`; playback sessions in
:mod:`usher.storage.sqlite.playback`; the control panel's queries in
:mod:`usher.storage.sqlite.panel`; pruning old attempts in
:mod:`usher.storage.sqlite.retention`; the shared SQL in
:mod:`usher.storage.sqlite.sql`. This module is the :class:`Storage`
interface over them.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Final

from usher.protocol.errors import AlreadyExists
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
    indexed_part,
    sorting_is_cheaper,
    uses_rollup,
    value_filter,
)
from usher.storage.rows import (
    account_from_row,
    account_unchanged,
    attempt_from_row,
    placeholders,
    storable_request,
    ticket_from_row,
    ticket_values,
    ticket_where,
)
from usher.storage.schema import (
    ACCOUNT_COLUMNS,
    TICKET_COLUMNS,
    TICKET_FROM,
    TICKET_INSERT,
    TICKET_INSERT_COLUMNS,
)
from usher.storage.sqlite.cache import TicketCache
from usher.storage.sqlite.checks import CheckGroup, CheckItem, apply_check
from usher.storage.sqlite.counts import (
    SQLiteCountsMixin,
    count_upto_query,
    index_rows_worth_reading,
    list_query,
    rollup_count_query,
    walk_is_cheaper,
)
from usher.storage.sqlite.engine import SQLiteEngine, Synchronous, sqlite_path
from usher.storage.sqlite.panel import SQLitePanelMixin
from usher.storage.sqlite.playback import SQLitePlaybackMixin, end_in
from usher.storage.sqlite.publishers import SQLitePublishersMixin
from usher.storage.sqlite.retention import SQLiteRetentionMixin
from usher.storage.sqlite.sql import page_sql, ticket_ids_sql
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

__all__ = ["SQLiteStorage", "sqlite_path"]

#: How often (in claims) expired signatures are purged.
_PURGE_EVERY: Final = 1000
#: How many matches a list plan counts up to: past it, the matches are
#: dense enough that the precise figure does not change the choice.
LIST_PLANNING_CAP: Final = 10_000
_TICKET_ROW: Final = placeholders(len(TICKET_INSERT_COLUMNS), "?")


class SQLiteStorage(
    SQLitePlaybackMixin,
    SQLitePanelMixin,
    SQLitePublishersMixin,
    SQLiteRetentionMixin,
    SQLiteCountsMixin,
    Storage,
):
    """Storage in one SQLite file (WAL mode)."""

    def __init__(
        self,
        path: str,
        *,
        readers: int = 4,
        busy_timeout_ms: int = 5000,
        synchronous: Synchronous = "full",
    ) -> None:
        self.path = path
        self._tickets = TicketCache()
        self._checks = CheckGroup(self._tickets)
        self._engine = SQLiteEngine(
            path,
            readers=readers,
            busy_timeout_ms=busy_timeout_ms,
            state=self._tickets,
            synchronous=synchronous,
        )
        self._claims = 0

    @property
    def pending_writes(self) -> int:
        return self._engine.pending_writes

    def sheds_checks(self) -> bool:
        return self._engine.over_budget(time.monotonic(), self.max_write_wait)

    # -- lifecycle -------------------------------------------------------------

    async def open(self) -> None:
        await self._engine.open()

    async def close(self) -> None:
        await self._engine.close()

    async def ping(self) -> None:
        await self._read(lambda conn: conn.execute("SELECT 1").fetchone())

    async def schema_version(self) -> int:
        row = await self._read(
            lambda conn: conn.execute("SELECT version FROM schema_version").fetchone()
        )
        return int(row[0]) if row else 0

    # -- accounts --------------------------------------------------------------

    async def create_account(
        self, *, username: str, api_key: str, secret: str, cdn: int | None, now: int
    ) -> Account:
        def run(conn: sqlite3.Connection) -> Account:
            if conn.execute("SELECT 1 FROM accounts WHERE username = ?", (username,)).fetchone():
                raise AlreadyExists(f"An account named {username!r} already exists.")
            chosen = cdn
            if chosen is None:
                chosen = conn.execute("SELECT COALESCE(MAX(cdn), 0) + 1 FROM accounts").fetchone()[
                    0
                ]
            elif conn.execute("SELECT 1 FROM accounts WHERE cdn = ?", (chosen,)).fetchone():
                raise AlreadyExists(f"CDN id {chosen} is already taken; choose another --cdn.")
            conn.execute(
                f"INSERT INTO accounts ({ACCOUNT_COLUMNS}) VALUES (?, ?, ?, ?, 0, ?)",
                (chosen, username, api_key, secret, now),
            )
            return Account(chosen, username, api_key, secret, False, now)

        return await self._write(run)

    async def list_accounts(self) -> list[Account]:
        rows = await self._read(
            lambda conn: conn.execute(
                f"SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY cdn"
            ).fetchall()
        )
        return [account_from_row(row) for row in rows]

    async def get_account(self, cdn: int) -> Account | None:
        # Every signed call starts here; see SQLiteEngine.read_at_once.
        row = await self._engine.read_at_once(
            lambda conn: conn.execute(
                f"SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE cdn = ?", (cdn,)
            ).fetchone()
        )
        return None if row is None else account_from_row(row)

    async def get_account_by_username(self, username: str) -> Account | None:
        row = await self._read(
            lambda conn: conn.execute(
                f"SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE username = ?",
                (storable(username),),
            ).fetchone()
        )
        return None if row is None else account_from_row(row)

    async def update_account(
        self, cdn: int, *, secret: str | None = None, disabled: bool | None = None
    ) -> Account | None:
        def run(conn: sqlite3.Connection) -> Account | None:
            if secret is not None:
                conn.execute("UPDATE accounts SET secret = ? WHERE cdn = ?", (secret, cdn))
            if disabled is not None:
                conn.execute("UPDATE accounts SET disabled = ? WHERE cdn = ?", (int(disabled), cdn))
            row = conn.execute(
                f"SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE cdn = ?", (cdn,)
            ).fetchone()
            return None if row is None else account_from_row(row)

        return await self._write(run)

    # -- replay protection -------------------------------------------------------

    async def claim_signature(
        self, digest: bytes, *, now: int, expires_at: int, account: Account
    ) -> Claim:
        self._claims += 1
        purge = self._claims % _PURGE_EVERY == 0
        unchanged, params = account_unchanged(account, "?")

        def run(conn: sqlite3.Connection) -> Claim:
            if purge:
                conn.execute("DELETE FROM used_signatures WHERE expires_at < ?", (now,))
            if conn.execute(f"SELECT 1 FROM accounts WHERE {unchanged}", params).fetchone() is None:
                return Claim.ACCOUNT_CHANGED
            row = conn.execute(
                "SELECT expires_at FROM used_signatures WHERE digest = ?", (digest,)
            ).fetchone()
            if row is not None and row[0] >= now:
                return Claim.REPLAYED
            conn.execute(
                "INSERT OR REPLACE INTO used_signatures (digest, expires_at) VALUES (?, ?)",
                (digest, expires_at),
            )
            return Claim.SPENT

        return await self._write(run, keeps_state=True)

    # -- tickets -------------------------------------------------------------------

    async def insert_ticket(self, ticket: Ticket) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                f"INSERT INTO tickets ({TICKET_INSERT}) VALUES {_TICKET_ROW}",
                ticket_values(ticket),
            )

        # A new key is never cached: the cache holds only tickets it has read.
        await self._write(run, keeps_state=True)

    async def get_ticket(self, cdn: int, key: str) -> Ticket | None:
        row = await self._read(
            lambda conn: conn.execute(
                f"SELECT {TICKET_COLUMNS} {TICKET_FROM} WHERE t.key = ? AND t.cdn = ?",
                (storable(key), cdn),
            ).fetchone()
        )
        return None if row is None else ticket_from_row(row)

    async def update_ticket(
        self, cdn: int, key: str, *, active: bool | None, expire_at: int | None, now: int
    ) -> bool:
        flag = None if active is None else int(active)

        def run(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "UPDATE tickets SET active = COALESCE(?, active),"
                " expire_at = COALESCE(?, expire_at) WHERE key = ? AND cdn = ?",
                (flag, expire_at, storable(key), cdn),
            )
            if cursor.rowcount == 0:
                return False
            if active is False:
                end_in(conn, SessionsToEnd(cdn=cdn, key=key), now, EndReason.REVOKED)
            return True

        # Not ``keeps_state``: the writer forgets its cached tickets after
        # this job, so the next check reads the new values.
        return await self._write(run)

    async def _ticket_ids(self, cdn: int, keys: list[str]) -> dict[str, int]:
        sql = ticket_ids_sql(len(keys))
        rows = await self._read(lambda conn: conn.execute(sql, [*keys, cdn]).fetchall())
        return {str(key): int(row_id) for key, row_id in rows}

    async def search_tickets(
        self, cdn: int, where: TicketFilter, page: Page, *, count: bool = True
    ) -> tuple[list[Ticket], int]:
        sql, params = ticket_where(cdn, where, "?")

        def run(conn: sqlite3.Connection) -> tuple[list[Ticket], int]:
            # One read transaction so the page and the total agree.
            conn.execute("BEGIN")
            try:
                total = -1
                if count:
                    total = conn.execute(
                        f"SELECT COUNT(*) FROM tickets t WHERE {sql}", params
                    ).fetchone()[0]
                rows = conn.execute(
                    f"SELECT {TICKET_COLUMNS} {TICKET_FROM} WHERE {sql} ORDER BY t.id DESC"
                    + page_sql(page),
                    params,
                ).fetchall()
            finally:
                conn.execute("COMMIT")
            return [ticket_from_row(row) for row in rows], int(total)

        return await self._read(run)

    # -- playback checks and the attempt log ----------------------------------------

    async def record_check(
        self,
        request: CheckRequest,
        decide: Decider,
        now: int,
        *,
        log: bool = True,
        session: SessionStart | None = None,
    ) -> CheckOutcome:
        request = storable_request(request)

        def run(conn: sqlite3.Connection) -> CheckOutcome:
            outcome, _ = apply_check(
                conn, self._tickets, request, decide, now, log=log, session=session
            )
            return outcome

        return await self._engine.write(
            run,
            max_wait=self.max_write_wait,
            group=self._checks,
            item=CheckItem(request, decide, now, log, session),
            keeps_state=True,
        )

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

        walk_table, driver_column = False, None
        # ``appinst`` plans nothing (no index or rollup holds it); it is
        # tested on the rows the other filters' path reads.
        by_app_video = await self.app_video_first(cdn, indexed_part(where))
        if not uses_rollup(where):
            path = await self._list_path(
                cdn, where, page, by_app_video=by_app_video, newest_first=newest_first
            )
            if path is None:
                return []
            walk_table, driver_column = path

        def run(conn: sqlite3.Connection) -> list[tuple[object, ...]]:
            if not uses_rollup(where):
                sql, params = list_query(
                    cdn,
                    where,
                    page,
                    newest_first=newest_first,
                    walk_table=walk_table,
                    by_app_video=by_app_video,
                    driver_column=driver_column,
                    before=before,
                    after=after,
                )
                return conn.execute(sql, params).fetchall()
            # One read transaction, so the count that picks the path (and
            # ends the list early) is the list's own.
            conn.execute("BEGIN")
            try:
                matches = int(conn.execute(*rollup_count_query(cdn, broad_of(where))).fetchone()[0])
                if page.seek >= matches:
                    # Past the end: no walk through the table to find nothing.
                    return []
                everything = conn.execute(*rollup_count_query(cdn, EVERYTHING)).fetchone()[0]
                sql, params = list_query(
                    cdn,
                    where,
                    page,
                    newest_first=newest_first,
                    sort_matches=sorting_is_cheaper(
                        matches, int(everything), page, sparse=where.appinst is not None
                    ),
                    before=before,
                    after=after,
                )
                return conn.execute(sql, params).fetchall()
            finally:
                conn.execute("COMMIT")

        rows = await self._read(run)
        return [attempt_from_row(row) for row in rows]

    async def _list_path(
        self,
        cdn: int,
        where: AttemptFilter,
        page: Page,
        *,
        by_app_video: bool,
        newest_first: bool = True,
    ) -> tuple[bool, str | None] | None:
        """For a list with a key, pass, ip or time range: whether to walk the
        table in id order (see :func:`walk_is_cheaper`) and which named key,
        pass or ip drives otherwise (the one with the fewest attempts), or
        ``None`` when the page lies past the last match. Every figure comes
        from rollups, existing count filters or capped reads: a list, like
        every panel read, never makes a count filter."""
        # With ``appinst``, the matches of the other filters: an upper bound
        # (``sparse``: how many of them it keeps is unknown).
        sparse = where.appinst is not None
        matches = await self.count_attempts_upto(cdn, indexed_part(where), LIST_PLANNING_CAP)
        if matches <= LIST_PLANNING_CAP and page.seek >= matches:
            return None  # exact, and the page lies past it
        # The rows a walk passes before it reaches the time range: those
        # after its end when it walks newest first, before its start when
        # it walks oldest first (the v2 API's and sevu.errorlog's order).
        newer = 0
        if newest_first and where.end is not None:
            newer = await self.count_attempts(cdn, AttemptFilter(start=where.end + 1))
        elif not newest_first and where.start is not None:
            newer = await self.count_attempts(cdn, AttemptFilter(end=where.start - 1))
        total = await self.sum_account_counts(cdn, EVERYTHING)
        driver = value_filter(cdn, where)
        driver_column = None
        if driver is not None:
            # The rows of each named value's index (its time range is a part
            # of them); the smallest drives. Past ``enough`` the walk wins,
            # so a busy value without a count filter is read no further.
            # Not lone with ``appinst``: the matches are fewer than the entries.
            lone = len(driver.named) == 1 and driver.where() == where
            enough = index_rows_worth_reading(
                newer=newer, matches=matches, total=total, page=page, lone=lone, sparse=sparse
            )
            sizes = {
                column: await count_attempts_upto(self, cdn, driver.alone(column).where(), enough)
                for column, _ in driver.named
            }
            driver_column = min(sizes, key=lambda column: sizes[column])
            index_rows = sizes[driver_column]
            if lone:
                # The same attempts, counted up to another cap.
                matches = index_rows = max(matches, index_rows)
        elif by_app_video:
            index_rows = await self.count_attempts(
                cdn, AttemptFilter(app=where.app, video=where.video)
            )
        else:
            index_rows = await self.count_attempts(
                cdn, AttemptFilter(start=where.start, end=where.end)
            )
        walk = walk_is_cheaper(
            index_rows=index_rows,
            newer=newer,
            matches=matches,
            total=total,
            page=page,
            sparse=sparse,
        )
        return walk, driver_column

    async def count_attempts_upto(self, cdn: int, where: AttemptFilter, cap: int) -> int:
        check_cap("cap", cap, MAX_COUNT_CAP)
        return await count_attempts_upto(self, cdn, where, cap)

    async def capped_count(self, cdn: int, where: AttemptFilter, cap: int) -> int:
        by_app_video = await self.app_video_first(cdn, where)
        sql, params = count_upto_query(cdn, where, cap, by_app_video=by_app_video)
        row = await self._read(lambda conn: conn.execute(sql, params).fetchone())
        return int(row[0])
