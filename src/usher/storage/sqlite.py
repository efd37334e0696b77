"""The embedded SQLite backend: one writer thread with group commit.

Why this shape:

* SQLite allows one writer at a time. Rather than let request handlers fight
  for the write lock, every write is a *job* queued to a single writer thread.
  The thread drains the queue, runs the jobs back to back inside one
  ``BEGIN IMMEDIATE`` transaction (each in its own savepoint, so one failing
  job does not undo its neighbours), commits once, and only then resolves the
  waiting futures. One fsync covers the whole batch, and a response is sent
  only for work that is on disk (WAL, ``synchronous=FULL``).
* Jobs in a batch run in order on one connection, so each sees the previous
  one's effects: concurrent checks of a ticket with ``uses = N`` allow exactly
  N, and ``auto`` slots bind exactly once. ``BEGIN IMMEDIATE`` extends that to
  other processes opening the same file.
* Reads run on a small pool of threads with their own connections; WAL lets
  them proceed while the writer commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from usher.protocol.errors import (
    AlreadyExists,
    StorageBusy,
    StorageError,
    StorageUnavailable,
)
from usher.storage import migrations
from usher.storage.base import (
    MAX_ATTEMPT_FIELD,
    AttemptColumn,
    Decider,
    PanelSession,
    Storage,
    TimelineBucket,
    check_timeline_bounds,
    check_top_limit,
)
from usher.storage.sqlite_counts import count_query
from usher.tickets.model import (
    Account,
    Attempt,
    AttemptFilter,
    CheckOutcome,
    CheckRequest,
    Decision,
    Page,
    PlaybackSession,
    SessionOutcome,
    Ticket,
    TicketFilter,
)

T = TypeVar("T")

_TICKET_COLUMNS: Final = (
    "t.key, t.cdn, t.pass, t.ip, t.video, t.app, t.uses, t.use_count, t.active, "
    "t.created_at, t.expire_at, t.used_at, t.bound_ips, a.disabled"
)
_TICKET_FROM: Final = "FROM tickets t JOIN accounts a ON a.cdn = t.cdn"
_ATTEMPT_COLUMNS: Final = (
    "id, cdn, at, key, pass, ip, video, app, appinst, pageurl, refurl, success, reason, server_ip"
)
_ACCOUNT_COLUMNS: Final = "cdn, username, api_key, secret, disabled, created_at"
_SESSION_INSERT: Final = "id, key, cdn, ip, app, video, created_at, expires_at"
_SESSION_COLUMNS: Final = "s.id, s.key, s.cdn, s.ip, s.app, s.video, s.created_at, s.expires_at"
_SESSION_WIDTH: Final = 8
#: Seconds an expired session row is kept before a purge may delete it; the
#: rows are tiny, and a little slack keeps purges away from live rows.
_SESSION_GRACE: Final = 3600

#: Jobs committed together at most; bounds the latency one batch adds.
BATCH_MAX: Final = 512
#: Jobs allowed to wait for the writer before new writes are shed (code 1000).
QUEUE_MAX: Final = 20_000
#: How often (in claims) expired replay-protection rows are purged.
_PURGE_EVERY: Final = 1000


def _ticket(row: tuple[Any, ...]) -> Ticket:
    return Ticket(
        key=row[0],
        cdn=row[1],
        password=row[2],
        ip=row[3],
        video=row[4],
        app=row[5],
        uses=row[6],
        use_count=row[7],
        active=bool(row[8]),
        created_at=row[9],
        expire_at=row[10],
        used_at=row[11],
        bound_ips=tuple(row[12].split("|")) if row[12] else (),
        account_disabled=bool(row[13]),
    )


def _attempt(row: tuple[Any, ...]) -> Attempt:
    return Attempt(
        id=row[0],
        cdn=row[1],
        at=row[2],
        key=row[3],
        password=row[4],
        ip=row[5],
        video=row[6],
        app=row[7],
        appinst=row[8],
        pageurl=row[9],
        refurl=row[10],
        success=bool(row[11]),
        reason=row[12],
        server_ip=row[13],
    )


def _account(row: tuple[Any, ...]) -> Account:
    return Account(
        cdn=row[0],
        username=row[1],
        api_key=row[2],
        secret=row[3],
        disabled=bool(row[4]),
        created_at=row[5],
    )


def _where(pairs: Iterable[tuple[str, object]]) -> tuple[str, list[object]]:
    """``AND``-join ``column = ?`` for every value that is not ``None``."""
    clauses: list[str] = []
    params: list[object] = []
    for clause, value in pairs:
        if value is not None:
            clauses.append(clause)
            params.append(value)
    return " AND ".join(clauses), params


def _attempt_where(cdn: int, where: AttemptFilter) -> tuple[str, list[object]]:
    sql, params = _where(
        [
            ("cdn = ?", cdn),
            ("key = ?", where.key),
            ("pass = ?", where.password),
            ("app = ?", where.app),
            ("video = ?", where.video),
            ("ip = ?", where.ip),
            ("success = ?", None if where.success is None else int(where.success)),
            ("at >= ?", where.start),
            ("at <= ?", where.end),
        ]
    )
    return sql, params


def _page_sql(page: Page) -> str:
    # Both values are validated ints, so inlining them is safe and keeps the
    # statement cache keyed on shape only.
    limit = -1 if page.limit is None else int(page.limit)
    return f" LIMIT {limit} OFFSET {int(page.seek)}"


def _clip(value: str) -> str:
    return _storable(value if len(value) <= MAX_ATTEMPT_FIELD else value[:MAX_ATTEMPT_FIELD])


def _storable(value: str) -> str:
    """Caller text SQLite can store: lone surrogates (from JSON ``\\ud800``
    escapes) cannot be encoded as UTF-8 and would fail the whole check."""
    if value.isascii():
        return value
    return value.encode("utf-8", "replace").decode("utf-8")


@dataclass(slots=True)
class _Job:
    run: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any]
    #: ``time.monotonic()`` when queued, for shedding by waiting time.
    queued_at: float = 0.0


def sqlite_path(url: str) -> str:
    """The file path in ``sqlite:///relative.db`` or ``sqlite:////abs/path.db``."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        raise StorageError(
            f"{url!r} is not a SQLite URL; use sqlite:///usher.db (relative) "
            "or sqlite:////var/lib/usher/usher.db (absolute)."
        )
    path = url[len(prefix) :]
    if not path:
        raise StorageError("The SQLite URL has no file name; use sqlite:///usher.db.")
    return path


class SQLiteStorage(Storage):
    """Storage in one SQLite file (WAL mode)."""

    def __init__(self, path: str, *, readers: int = 4, busy_timeout_ms: int = 5000) -> None:
        self.path = path
        self._readers = readers
        self._busy_timeout_ms = busy_timeout_ms
        self._queue: list[_Job] = []
        self._queue_lock = threading.Condition()
        self._writer: threading.Thread | None = None
        self._closing = False
        self._local = threading.local()
        self._pool: ThreadPoolExecutor | None = None
        self._reader_connections: list[sqlite3.Connection] = []
        self._claims = 0
        self._session_opens = 0

    # -- connections -------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, cached_statements=256
        )
        conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
        conn.execute("PRAGMA foreign_keys = ON")
        # FULL makes each group commit fsync the WAL: an acknowledged attempt
        # survives power loss, not just a process crash.
        conn.execute("PRAGMA synchronous = FULL")
        return conn

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA query_only = ON")
            self._local.conn = conn
            self._reader_connections.append(conn)
        return conn

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._pool is None:
            raise StorageUnavailable("The SQLite storage is not open; call open() first.")

        def run() -> T:
            try:
                return fn(self._reader())
            except sqlite3.Error as exc:
                raise StorageUnavailable(f"SQLite read failed: {exc}") from exc

        return await asyncio.get_running_loop().run_in_executor(self._pool, run)

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._writer is None or self._closing:
            raise StorageUnavailable("The SQLite storage is not open; call open() first.")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        now = time.monotonic()
        with self._queue_lock:
            queue = self._queue
            # Shed by waiting time, not only by length: once the oldest
            # queued write has waited longer than the budget, the writer is
            # past capacity and a new write would only wait longer still.
            # Answering 1000/503 at once keeps latency bounded for the writes
            # already accepted, and lets the caller retry or fail over.
            if len(queue) >= QUEUE_MAX or (
                queue and now - queue[0].queued_at > self.max_write_wait
            ):
                raise StorageBusy(
                    f"{len(queue)} writes are waiting, the oldest for "
                    f"{now - queue[0].queued_at:.3f} s."
                )
            queue.append(_Job(fn, future, now))
            self._queue_lock.notify()
        return await future

    @property
    def pending_writes(self) -> int:
        return len(self._queue)  # a racy read is fine for a gauge

    # -- the writer thread ---------------------------------------------------

    def _writer_loop(self, conn: sqlite3.Connection) -> None:
        batch: list[_Job] = []
        try:
            while True:
                with self._queue_lock:
                    while not self._queue and not self._closing:
                        self._queue_lock.wait()
                    if not self._queue and self._closing:
                        break
                    batch = self._queue[:BATCH_MAX]
                    del self._queue[:BATCH_MAX]
                self._run_batch(conn, batch)
                batch = []
        except BaseException as exc:
            # The writer is gone: refuse new writes and answer every waiting
            # one, instead of letting requests hang on futures nobody settles.
            with self._queue_lock:
                self._closing = True
                stranded = batch + self._queue
                self._queue.clear()
            failure = StorageUnavailable(f"The SQLite writer stopped: {exc!r}")
            self._resolve([(job, None, failure) for job in stranded])
            raise
        finally:
            conn.close()

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Job]) -> None:
        outcomes: list[tuple[_Job, Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job in batch:
                conn.execute("SAVEPOINT job")
                try:
                    result = job.run(conn)
                except BaseException as exc:  # even SystemExit must not kill the writer
                    conn.execute("ROLLBACK TO job")
                    outcomes.append((job, None, _as_storage_error(exc)))
                else:
                    outcomes.append((job, result, None))
                conn.execute("RELEASE job")
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            # Nothing of this batch is on disk, so no job may report success.
            failure = StorageUnavailable(f"SQLite write failed: {exc}")
            outcomes = [(job, None, failure) for job in batch]
        self._resolve(outcomes)

    @staticmethod
    def _resolve(outcomes: list[tuple[_Job, Any, BaseException | None]]) -> None:
        # One hop to each event loop per batch, not one per job.
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Job, Any, BaseException | None]]]
        by_loop = {}
        for outcome in outcomes:
            by_loop.setdefault(outcome[0].future.get_loop(), []).append(outcome)

        def settle(items: list[tuple[_Job, Any, BaseException | None]]) -> None:
            for job, result, error in items:
                if job.future.done():  # the waiting request was cancelled
                    continue
                if error is None:
                    job.future.set_result(result)
                else:
                    job.future.set_exception(error)

        for loop, items in by_loop.items():
            with contextlib.suppress(RuntimeError):  # loop already closed at shutdown
                loop.call_soon_threadsafe(settle, items)

    # -- lifecycle -----------------------------------------------------------

    async def open(self) -> None:
        conn = await asyncio.to_thread(self._open_writer_connection)
        self._closing = False
        self._pool = ThreadPoolExecutor(self._readers, thread_name_prefix="usher-sqlite-read")
        self._writer = threading.Thread(
            target=self._writer_loop, args=(conn,), name="usher-sqlite-writer", daemon=True
        )
        self._writer.start()

    def _open_writer_connection(self) -> sqlite3.Connection:
        try:
            conn = self._connect()
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StorageError(
                    f"SQLite refused WAL mode for {self.path} (got {mode!r}); "
                    "put the database on a local file system."
                )
            self._migrate(conn)
        except sqlite3.DatabaseError as exc:
            raise StorageError(
                f"Cannot open the SQLite database {self.path}: {exc}. "
                "Check the path and that it is an Usher database."
            ) from exc
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        known = migrations.load("sqlite")
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT version FROM schema_version").fetchone()
            current = row[0] if row else 0
            migrations.check_not_newer(current, known, self.path)
            for migration in known[current:]:
                for statement in _split_sql(migration.sql):
                    conn.execute(statement)
                current = migration.version
            conn.execute("DELETE FROM schema_version")
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (current,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        writer = self._writer
        if writer is not None:
            with self._queue_lock:
                self._closing = True
                self._queue_lock.notify_all()
            await asyncio.to_thread(writer.join)
            self._writer = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        for conn in self._reader_connections:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        self._reader_connections.clear()
        self._local = threading.local()

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
                f"INSERT INTO accounts ({_ACCOUNT_COLUMNS}) VALUES (?, ?, ?, ?, 0, ?)",
                (chosen, username, api_key, secret, now),
            )
            return Account(chosen, username, api_key, secret, False, now)

        return await self._write(run)

    async def list_accounts(self) -> list[Account]:
        rows = await self._read(
            lambda conn: conn.execute(
                f"SELECT {_ACCOUNT_COLUMNS} FROM accounts ORDER BY cdn"
            ).fetchall()
        )
        return [_account(row) for row in rows]

    async def get_account(self, cdn: int) -> Account | None:
        row = await self._read(
            lambda conn: conn.execute(
                f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE cdn = ?", (cdn,)
            ).fetchone()
        )
        return None if row is None else _account(row)

    async def get_account_by_username(self, username: str) -> Account | None:
        row = await self._read(
            lambda conn: conn.execute(
                f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE username = ?", (username,)
            ).fetchone()
        )
        return None if row is None else _account(row)

    async def update_account(
        self, cdn: int, *, secret: str | None = None, disabled: bool | None = None
    ) -> Account | None:
        def run(conn: sqlite3.Connection) -> Account | None:
            if secret is not None:
                conn.execute("UPDATE accounts SET secret = ? WHERE cdn = ?", (secret, cdn))
            if disabled is not None:
                conn.execute("UPDATE accounts SET disabled = ? WHERE cdn = ?", (int(disabled), cdn))
            row = conn.execute(
                f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE cdn = ?", (cdn,)
            ).fetchone()
            return None if row is None else _account(row)

        return await self._write(run)

    # -- replay protection -------------------------------------------------------

    async def claim_signature(self, digest: bytes, *, now: int, expires_at: int) -> bool:
        self._claims += 1
        purge = self._claims % _PURGE_EVERY == 0

        def run(conn: sqlite3.Connection) -> bool:
            if purge:
                conn.execute("DELETE FROM used_signatures WHERE expires_at < ?", (now,))
            row = conn.execute(
                "SELECT expires_at FROM used_signatures WHERE digest = ?", (digest,)
            ).fetchone()
            if row is not None and row[0] >= now:
                return False
            conn.execute(
                "INSERT OR REPLACE INTO used_signatures (digest, expires_at) VALUES (?, ?)",
                (digest, expires_at),
            )
            return True

        return await self._write(run)

    # -- tickets -------------------------------------------------------------------

    async def insert_ticket(self, ticket: Ticket) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO tickets (cdn, key, pass, ip, video, app, uses, use_count, active,"
                " created_at, expire_at, used_at, bound_ips)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    ticket.cdn,
                    ticket.key,
                    ticket.password,
                    ticket.ip,
                    ticket.video,
                    ticket.app,
                    ticket.uses,
                    ticket.use_count,
                    int(ticket.active),
                    ticket.created_at,
                    ticket.expire_at,
                    ticket.used_at,
                    "|".join(ticket.bound_ips),
                ),
            )

        await self._write(run)

    async def get_ticket(self, cdn: int, key: str) -> Ticket | None:
        row = await self._read(
            lambda conn: conn.execute(
                f"SELECT {_TICKET_COLUMNS} {_TICKET_FROM} WHERE t.key = ? AND t.cdn = ?",
                (key, cdn),
            ).fetchone()
        )
        return None if row is None else _ticket(row)

    async def revoke_ticket(self, cdn: int, key: str) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "UPDATE tickets SET active = 0 WHERE key = ? AND cdn = ?", (key, cdn)
            )
            return cursor.rowcount > 0

        return await self._write(run)

    async def search_tickets(
        self, cdn: int, where: TicketFilter, page: Page
    ) -> tuple[list[Ticket], int]:
        sql, params = _where(
            [
                ("t.cdn = ?", cdn),
                ("t.key = ?", where.key),
                ("t.app = ?", where.app),
                ("t.video = ?", where.video),
                ("t.ip = ?", where.ip),
                ("t.pass = ?", where.password),
            ]
        )

        def run(conn: sqlite3.Connection) -> tuple[list[Ticket], int]:
            # One read transaction so the page and the total agree.
            conn.execute("BEGIN")
            try:
                total = conn.execute(
                    f"SELECT COUNT(*) FROM tickets t WHERE {sql}", params
                ).fetchone()[0]
                rows = conn.execute(
                    f"SELECT {_TICKET_COLUMNS} {_TICKET_FROM} WHERE {sql} ORDER BY t.id DESC"
                    + _page_sql(page),
                    params,
                ).fetchall()
            finally:
                conn.execute("COMMIT")
            return [_ticket(row) for row in rows], int(total)

        return await self._read(run)

    # -- playback checks and the attempt log ----------------------------------------

    async def record_check(
        self, request: CheckRequest, decide: Decider, now: int, *, log: bool = True
    ) -> CheckOutcome:
        def run(conn: sqlite3.Connection) -> CheckOutcome:
            outcome, _ = _apply_check(conn, request, decide, now, log=log)
            return outcome

        return await self._write(run)

    # -- playback sessions ------------------------------------------------------------

    async def lookup_ticket(self, key: str) -> Ticket | None:
        row = await self._read(
            lambda conn: conn.execute(
                f"SELECT {_TICKET_COLUMNS} {_TICKET_FROM} WHERE t.key = ?", (_storable(key),)
            ).fetchone()
        )
        return None if row is None else _ticket(row)

    async def lookup_session(self, session_id: str) -> tuple[PlaybackSession, Ticket | None] | None:
        # One statement, so the session and its ticket come from one snapshot.
        row = await self._read(
            lambda conn: conn.execute(
                f"SELECT {_SESSION_COLUMNS}, {_TICKET_COLUMNS} FROM playback_sessions s"
                " LEFT JOIN tickets t ON t.key = s.key LEFT JOIN accounts a ON a.cdn = t.cdn"
                " WHERE s.id = ?",
                (session_id,),
            ).fetchone()
        )
        if row is None:
            return None
        width = _SESSION_WIDTH
        return _session(row[:width]), (None if row[width] is None else _ticket(row[width:]))

    async def open_session(
        self,
        request: CheckRequest,
        decide: Decider,
        now: int,
        *,
        session_id: str,
        ttl: int,
        reuse: bool,
    ) -> SessionOutcome:
        self._session_opens += 1
        purge = self._session_opens % _PURGE_EVERY == 0

        def run(conn: sqlite3.Connection) -> SessionOutcome:
            if purge:
                conn.execute(
                    "DELETE FROM playback_sessions WHERE expires_at < ?", (now - _SESSION_GRACE,)
                )
            row = conn.execute(
                f"SELECT {_SESSION_COLUMNS} FROM playback_sessions s WHERE s.id = ?",
                (session_id,),
            ).fetchone()
            found = None if row is None else _session(row)
            if reuse and found is not None and found.expires_at > now:
                return _resume(conn, found, request, decide, now, ttl)
            outcome, ticket = _apply_check(conn, request, decide, now, log=True)
            session = None
            if outcome.decision.allowed:
                session = PlaybackSession(
                    id=session_id,
                    key=_clip(request.key),
                    cdn=None if ticket is None else ticket.cdn,
                    ip=_clip(request.ip),
                    app=_clip(request.app),
                    video=_clip(request.video),
                    created_at=now,
                    expires_at=now + ttl,
                )
                conn.execute(
                    f"INSERT OR REPLACE INTO playback_sessions ({_SESSION_INSERT})"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    dataclasses.astuple(session),
                )
            return SessionOutcome(outcome.decision, outcome.attempt_id, ticket, session, False)

        return await self._write(run)

    async def renew_session(self, session_id: str, *, expires_at: int) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "UPDATE playback_sessions SET expires_at = MAX(expires_at, ?) WHERE id = ?",
                (expires_at, session_id),
            )
            return cursor.rowcount > 0

        return await self._write(run)

    async def close_session(self, session_id: str) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute("DELETE FROM playback_sessions WHERE id = ?", (session_id,))
            return cursor.rowcount > 0

        return await self._write(run)

    async def list_attempts(
        self, cdn: int, where: AttemptFilter, page: Page, *, newest_first: bool = False
    ) -> list[Attempt]:
        sql, params = _attempt_where(cdn, where)
        order = "id DESC" if newest_first else "id"
        rows = await self._read(
            lambda conn: conn.execute(
                f"SELECT {_ATTEMPT_COLUMNS} FROM attempts WHERE {sql} ORDER BY {order}"
                + _page_sql(page),
                params,
            ).fetchall()
        )
        return [_attempt(row) for row in rows]

    async def count_attempts(self, cdn: int, where: AttemptFilter) -> int:
        # Rollup rows or the one selective index; see sqlite_counts.
        sql, params = count_query(cdn, where)
        row = await self._read(lambda conn: conn.execute(sql, params).fetchone())
        return int(row[0])

    # -- attempt statistics ------------------------------------------------------------

    async def attempt_timeline(
        self, cdn: int, where: AttemptFilter, bucket: int
    ) -> list[TimelineBucket]:
        check_timeline_bounds(where, bucket)
        sql, params = _attempt_where(cdn, where)
        # Integer division of non-negative integers floors, so every attempt
        # lands in the bucket that starts at a multiple of ``bucket``.
        rows = await self._read(
            lambda conn: conn.execute(
                f"SELECT (at / ?) * ? AS b, SUM(success), COUNT(*) - SUM(success)"
                f" FROM attempts WHERE {sql} GROUP BY b ORDER BY b",
                [bucket, bucket, *params],
            ).fetchall()
        )
        return [TimelineBucket(int(row[0]), int(row[1]), int(row[2])) for row in rows]

    async def top_attempt_values(
        self, cdn: int, where: AttemptFilter, column: AttemptColumn, limit: int
    ) -> list[tuple[str, int]]:
        check_top_limit(limit)
        name = _GROUPABLE[column]  # a fixed column name, never caller text
        sql, params = _attempt_where(cdn, where)
        rows = await self._read(
            lambda conn: conn.execute(
                f"SELECT {name}, COUNT(*) AS n FROM attempts WHERE {sql}"
                f" GROUP BY {name} ORDER BY n DESC, {name} LIMIT {int(limit)}",
                params,
            ).fetchall()
        )
        return [(str(row[0]), int(row[1])) for row in rows]

    # -- control-panel sign-in -------------------------------------------------------

    async def set_panel_password(self, cdn: int, password_hash: str | None, *, now: int) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            if not conn.execute("SELECT 1 FROM accounts WHERE cdn = ?", (cdn,)).fetchone():
                return False
            if password_hash is None:
                conn.execute("DELETE FROM panel_passwords WHERE cdn = ?", (cdn,))
            else:
                conn.execute(
                    "INSERT OR REPLACE INTO panel_passwords (cdn, hash, updated_at)"
                    " VALUES (?, ?, ?)",
                    (cdn, password_hash, now),
                )
            return True

        return await self._write(run)

    async def get_panel_password(self, cdn: int) -> str | None:
        row = await self._read(
            lambda conn: conn.execute(
                "SELECT hash FROM panel_passwords WHERE cdn = ?", (cdn,)
            ).fetchone()
        )
        return None if row is None else str(row[0])

    async def create_panel_session(self, session: PanelSession) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO panel_sessions (token_hash, cdn, created_at, seen_at)"
                " VALUES (?, ?, ?, ?)",
                (session.token_hash, session.cdn, session.created_at, session.seen_at),
            )

        await self._write(run)

    async def get_panel_session(self, token_hash: bytes) -> PanelSession | None:
        row = await self._read(
            lambda conn: conn.execute(
                "SELECT token_hash, cdn, created_at, seen_at FROM panel_sessions"
                " WHERE token_hash = ?",
                (token_hash,),
            ).fetchone()
        )
        return None if row is None else PanelSession(bytes(row[0]), row[1], row[2], row[3])

    async def touch_panel_session(self, token_hash: bytes, *, now: int) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE panel_sessions SET seen_at = MAX(seen_at, ?) WHERE token_hash = ?",
                (now, token_hash),
            )

        await self._write(run)

    async def delete_panel_sessions(
        self,
        *,
        token_hash: bytes | None = None,
        cdn: int | None = None,
        seen_before: int | None = None,
        created_before: int | None = None,
    ) -> int:
        clauses: list[str] = []
        params: list[object] = []
        for clause, value in (
            ("token_hash = ?", token_hash),
            ("cdn = ?", cdn),
            ("seen_at < ?", seen_before),
            ("created_at < ?", created_before),
        ):
            if value is not None:
                clauses.append(clause)
                params.append(value)
        if not clauses:
            return 0

        def run(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                f"DELETE FROM panel_sessions WHERE {' OR '.join(clauses)}", params
            )
            return cursor.rowcount

        return await self._write(run)


#: ``top_attempt_values`` columns, mapped to SQL through this fixed table.
_GROUPABLE: Final[dict[str, str]] = {
    "reason": "reason",
    "ip": "ip",
    "key": "key",
    "app": "app",
    "video": "video",
}


def _apply_check(
    conn: sqlite3.Connection, request: CheckRequest, decide: Decider, now: int, *, log: bool
) -> tuple[CheckOutcome, Ticket | None]:
    """One playback check inside the writer's transaction.

    Returns the outcome (whose ``ticket`` is the state ``decide`` saw, as
    ``record_check`` promises) and the ticket as it is after the check.
    """
    row = conn.execute(
        f"SELECT t.id, {_TICKET_COLUMNS} {_TICKET_FROM} WHERE t.key = ?",
        (_storable(request.key),),
    ).fetchone()
    ticket = None if row is None else _ticket(row[1:])
    decision = decide(ticket, request, now)
    after = ticket
    if ticket is not None and decision.allowed and (decision.count_use or decision.bind):
        bound = ticket.bound_ips + ((decision.bind,) if decision.bind else ())
        used_at = now if decision.count_use else ticket.used_at
        conn.execute(
            "UPDATE tickets SET use_count = use_count + ?, used_at = ?, bound_ips = ? WHERE id = ?",
            (int(decision.count_use), used_at, "|".join(bound), row[0]),
        )
        after = dataclasses.replace(
            ticket,
            use_count=ticket.use_count + int(decision.count_use),
            used_at=used_at,
            bound_ips=bound,
        )
    attempt_id = _log_attempt(conn, request, decision, ticket, now) if log else 0
    return CheckOutcome(decision, attempt_id, ticket), after


def _log_attempt(
    conn: sqlite3.Connection,
    request: CheckRequest,
    decision: Decision,
    ticket: Ticket | None,
    now: int,
) -> int:
    cdn = ticket.cdn if ticket is not None else _cdn_for_app(conn, request.app)
    cursor = conn.execute(
        "INSERT INTO attempts (cdn, at, key, pass, ip, video, app, appinst, pageurl,"
        " refurl, success, reason, server_ip)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            cdn,
            now,
            _clip(request.key),
            _clip(request.password),
            _clip(request.ip),
            _clip(request.video),
            _clip(request.app),
            _clip(request.appinst),
            _clip(request.pageurl),
            _clip(request.refurl),
            int(decision.allowed),
            decision.reason_text,
            _clip(request.server_ip),
        ),
    )
    return cursor.lastrowid or 0


def _resume(
    conn: sqlite3.Connection,
    session: PlaybackSession,
    request: CheckRequest,
    decide: Decider,
    now: int,
    ttl: int,
) -> SessionOutcome:
    """Re-check a request of an open session: no use counted, no slot bound."""
    recheck = dataclasses.replace(request, count_use=False)
    outcome, ticket = _apply_check(conn, recheck, decide, now, log=False)
    decision = outcome.decision
    if not decision.allowed:
        attempt_id = _log_attempt(conn, request, decision, outcome.ticket, now)
        return SessionOutcome(decision, attempt_id, ticket, session, True)
    expires_at = max(session.expires_at, now + ttl)
    if expires_at != session.expires_at:
        conn.execute(
            "UPDATE playback_sessions SET expires_at = ? WHERE id = ?", (expires_at, session.id)
        )
        session = dataclasses.replace(session, expires_at=expires_at)
    return SessionOutcome(decision, 0, ticket, session, True)


def _session(row: tuple[Any, ...]) -> PlaybackSession:
    return PlaybackSession(*row)


def _cdn_for_app(conn: sqlite3.Connection, app: str) -> int | None:
    """The account whose ``username-`` prefixes ``app`` (usernames hold no ``-``)."""
    username, dash, _ = app.partition("-")
    if not dash:
        return None
    row = conn.execute("SELECT cdn FROM accounts WHERE username = ?", (username,)).fetchone()
    return None if row is None else int(row[0])


def _split_sql(script: str) -> list[str]:
    """Statements of a migration file, one by one.

    ``sqlite3.complete_statement`` decides where a statement ends, so a
    trigger's ``BEGIN … END;`` body (which holds ``;``) stays one statement.
    ``executescript`` would do the splitting too, but it commits first, and a
    migration must run inside its own transaction.
    """
    statements: list[str] = []
    pending = ""
    for line in script.splitlines():
        if line.lstrip().startswith("--"):
            continue
        pending += line + "\n"
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    if pending.strip():
        statements.append(pending.strip())
    return statements


def _as_storage_error(exc: BaseException) -> BaseException:
    if isinstance(exc, sqlite3.IntegrityError) and "UNIQUE" in str(exc):
        return AlreadyExists(f"The database refused a duplicate: {exc}.")
    if isinstance(exc, sqlite3.IntegrityError):
        return StorageError(f"The database refused the change: {exc}.")
    if isinstance(exc, sqlite3.Error):
        return StorageUnavailable(f"SQLite failed: {exc}")
    # Anything else (a bug in a job, even a BaseException) goes back to the
    # job's own caller unchanged; the writer and the rest of the batch go on.
    return exc
