"""One node's connections to PostgreSQL: the pool, migrations, and what a
failure means to a caller.

:class:`PgRunner` runs a unit of work on a pooled connection and turns every
driver failure into Usher's storage errors, so nothing above it sees psycopg:

* a lost or refused connection is :class:`StorageUnavailable` (code 4);
* a pool whose connections all stay busy, or whose queue of waiting requests
  is full, is :class:`StorageBusy` (code 1000), and so is a statement that
  ran past ``statement_timeout``;
* a unique violation is :class:`AlreadyExists`.

While the database is unreachable, requests wait only briefly for a
connection, so a dead database is answered in half a second, not after the
full pool timeout. The first lost connection makes the pool test all its
idle ones at once: after a restart, only the requests that were in flight
fail. A read whose connection died is retried on another, up to the pool's
``max_size + 1`` tries, so it gets past every stale idle connection; writes
are not retried, because a write whose connection died may or may not have
committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, Final, TypeVar

import psycopg
from psycopg import errors as pgerrors
from psycopg_pool import AsyncConnectionPool, PoolClosed, PoolTimeout, TooManyRequests

from usher.protocol.errors import AlreadyExists, StorageBusy, StorageError, StorageUnavailable
from usher.storage import migrations
from usher.storage.base import ReadBound, ReadBoundExceeded, read_bound
from usher.storage.postgres.config import PostgresTarget

log = logging.getLogger("usher.storage.postgres")

T = TypeVar("T")
Conn = psycopg.AsyncConnection[tuple[Any, ...]]
Row = tuple[Any, ...]

#: Fixed key of the advisory lock that serialises migrations across nodes
#: starting at the same time ("usher" in ASCII).
MIGRATION_LOCK: Final = 0x7573686572
#: Seconds a request waits for a connection while the database is known to be
#: unreachable: fail fast with code 4 rather than stall every caller.
DOWN_TIMEOUT: Final = 0.5
#: Seconds close() waits for operations already running.
CLOSE_GRACE: Final = 10.0
#: Tries of a transaction that PostgreSQL aborted as a serialisation failure
#: or deadlock (rare on one server; routine on distributed Postgres).
TRANSACTION_TRIES: Final = 3


def connection_lost(exc: BaseException) -> bool:
    """Whether ``exc`` means the connection (not the statement) failed."""
    if not isinstance(exc, psycopg.OperationalError):
        return False
    # A dropped socket or a refused connection has no SQLSTATE; class 08 is
    # "connection exception" and 57P the server shutting down.
    state = exc.sqlstate
    return state is None or state.startswith(("08", "57P"))


class PgRunner:
    """The pool of one node, opened and closed with the storage."""

    def __init__(self, target: PostgresTarget) -> None:
        self.target = target
        self._pool: AsyncConnectionPool[Conn] | None = None
        self._running = 0
        self._idle: asyncio.Event | None = None
        # monotonic() when the database was found unreachable; None while healthy.
        self._down_since: float | None = None
        self._checking = False
        self._background: set[asyncio.Task[None]] = set()

    # -- lifecycle -------------------------------------------------------------

    async def open(self) -> None:
        await self._migrate()
        settings = self.target.pool
        pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            self.target.conninfo,
            kwargs={"autocommit": True, "application_name": "usher"},
            min_size=settings.min_size,
            max_size=settings.max_size,
            timeout=settings.timeout,
            max_waiting=settings.max_waiting,
            configure=self._configure,
            # Give up a background reconnection soon: the next request starts
            # a fresh attempt, so a database that is back is used at once
            # rather than after an ever longer back-off.
            reconnect_timeout=2.0,
            name=f"usher {self.target.display}",
            open=False,
        )
        await pool.open(wait=False)
        self._pool = pool
        self._idle = asyncio.Event()
        self._idle.set()
        self._down_since = None

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        # New work already fails; let the running work finish (its answers
        # must reflect committed work) before the connections go.
        if self._idle is not None and self._running:
            self._idle.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), CLOSE_GRACE)
        for task in list(self._background):
            task.cancel()
        await pool.close()

    async def _configure(self, conn: Conn) -> None:
        timeout = int(self.target.pool.statement_timeout_ms)
        # The second setting stops a node that froze mid-transaction from
        # keeping a ticket locked for every other node.
        await conn.execute(
            f"SET statement_timeout = {timeout};"
            f" SET idle_in_transaction_session_timeout = {max(timeout, 1000)}",
            prepare=False,
        )

    async def _migrate(self) -> None:
        known = migrations.load("postgresql")
        try:
            conn = await psycopg.AsyncConnection.connect(
                self.target.conninfo, autocommit=True, application_name="usher migrate"
            )
        except psycopg.OperationalError as exc:
            raise StorageUnavailable(
                f"Cannot connect to PostgreSQL at {self.target.display}: {str(exc).strip()}. "
                "Check --database (or USHER_DATABASE_URL) and that the server is running."
            ) from None
        try:
            async with conn.transaction():
                # Nodes starting together take turns; the later ones find the
                # schema migrated and change nothing.
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)"
                )
                cursor = await conn.execute("SELECT max(version) FROM schema_version")
                row = await cursor.fetchone()
                current = int(row[0]) if row and row[0] is not None else 0
                migrations.check_not_newer(current, known, self.target.display)
                for migration in known[current:]:
                    log.info("Applying %s to %s.", migration.name, self.target.display)
                    # bytes: a script of several statements, sent as one.
                    await conn.execute(migration.sql.encode(), prepare=False)
                if known[current:]:
                    await conn.execute("DELETE FROM schema_version")
                    await conn.execute(
                        "INSERT INTO schema_version (version) VALUES (%s)", (known[-1].version,)
                    )
        except psycopg.Error as exc:
            raise StorageError(
                f"Migrating the PostgreSQL database {self.target.display} failed, and nothing "
                f"was changed: {str(exc).strip()}."
            ) from None
        finally:
            await conn.close()

    # -- health ----------------------------------------------------------------

    @property
    def waiting(self) -> int:
        """Requests waiting for a connection (the pending-writes gauge)."""
        pool = self._pool
        return 0 if pool is None else pool.get_stats().get("requests_waiting", 0)

    def _mark_down(self) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.error("PostgreSQL at %s is unreachable; answering code 4.", self.target.display)
        pool = self._pool
        if pool is not None and not self._checking:
            # A restart kills every idle connection too: have the pool test
            # and replace them now, not one failed request at a time.
            self._checking = True
            task = asyncio.get_running_loop().create_task(self._check_pool(pool))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _check_pool(self, pool: AsyncConnectionPool[Conn]) -> None:
        try:
            await pool.check()
        except Exception as exc:  # the pool may be closing; the next failure checks again
            log.debug("Checking the pool's connections failed: %s", exc)
        finally:
            self._checking = False

    def _mark_up(self) -> None:
        if self._down_since is not None:
            log.warning(
                "PostgreSQL at %s answers again after %.1f s.",
                self.target.display,
                time.monotonic() - self._down_since,
            )
            self._down_since = None

    # -- running work ------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Conn]:
        pool = self._pool
        if pool is None:
            raise StorageUnavailable("The PostgreSQL storage is not open; call open() first.")
        down = self._down_since is not None
        timeout = DOWN_TIMEOUT if down else self.target.pool.timeout
        try:
            conn = await pool.getconn(timeout=timeout)
        except TooManyRequests:
            raise StorageBusy(
                f"More than {self.target.pool.max_waiting} requests are waiting for a "
                "database connection."
            ) from None
        except PoolClosed:
            raise StorageUnavailable("The PostgreSQL storage is closing.") from None
        except PoolTimeout:
            stats = pool.get_stats()
            if down or stats.get("pool_size", 0) < stats.get("pool_max", 0):
                # There was room for another connection, yet none came.
                self._mark_down()
                raise StorageUnavailable(
                    f"No connection to PostgreSQL at {self.target.display} could be made."
                ) from None
            raise StorageBusy(
                f"All {stats.get('pool_max', 0)} database connections stayed busy for "
                f"{timeout:g} s."
            ) from None
        try:
            yield conn
        finally:
            await pool.putconn(conn)

    def _translate(self, exc: psycopg.Error) -> StorageError:
        if isinstance(exc, pgerrors.UniqueViolation):
            return AlreadyExists(f"The database refused a duplicate: {exc.diag.message_primary}.")
        if connection_lost(exc):
            self._mark_down()
            return StorageUnavailable(f"Lost the connection to PostgreSQL: {str(exc).strip()}")
        if isinstance(exc, pgerrors.QueryCanceled):
            return StorageBusy(f"A database statement ran out of time: {str(exc).strip()}")
        if isinstance(exc, psycopg.OperationalError):
            return StorageUnavailable(f"PostgreSQL failed: {str(exc).strip()}")
        return StorageError(f"PostgreSQL refused an operation: {str(exc).strip()}")

    def _panel_limit_ms(self, bound: ReadBound | None) -> int | None:
        """The ``statement_timeout`` a bounded read runs under: what is left
        of ``bound``, unless the pool's own limit is shorter (then that one
        applies, as for any statement)."""
        if bound is None:
            return None
        left = bound.remaining_ms()
        pool_limit = self.target.pool.statement_timeout_ms
        return left if pool_limit <= 0 or left < pool_limit else None

    def _bounded(
        self, work: Callable[[Conn], Awaitable[T]], bound: ReadBound
    ) -> Callable[[Conn], Awaitable[T]]:
        """``work`` under what is left of ``bound`` (run in a transaction)."""

        async def bounded(conn: Conn) -> T:
            limit = self._panel_limit_ms(bound)
            if limit is not None:
                await conn.execute(f"SET LOCAL statement_timeout = {limit}", prepare=False)
            try:
                return await work(conn)
            except pgerrors.QueryCanceled:
                if limit is None:
                    raise  # the pool's own limit: StorageBusy, as for any statement
                raise ReadBoundExceeded(bound.seconds) from None

        return bounded

    async def run(
        self, work: Callable[[Conn], Awaitable[T]], *, read: bool = False, transaction: bool = False
    ) -> T:
        """``work`` on a pooled connection (inside a transaction if asked).

        A read inside :func:`~usher.storage.base.bounded_reads` runs in a
        transaction whose ``statement_timeout`` is what is left of the bound
        (``SET LOCAL``, gone at its end), and raises
        :class:`ReadBoundExceeded` when PostgreSQL cancels it for that.
        """
        bound = read_bound() if read else None
        if bound is not None:
            work = self._bounded(work, bound)
            transaction = True
        tries = TRANSACTION_TRIES if transaction else 1
        # A restart leaves every idle connection dead, and each is dropped as
        # it fails: a read may meet all of them before a fresh one.
        read_tries = self.target.pool.max_size + 1 if read else 1
        self._running += 1
        try:
            while True:
                try:
                    async with self._connection() as conn:
                        if transaction:
                            async with conn.transaction():
                                result = await work(conn)
                        else:
                            result = await work(conn)
                except (pgerrors.SerializationFailure, pgerrors.DeadlockDetected) as exc:
                    # Aborted before commit, so running it again is safe.
                    tries -= 1
                    if tries <= 0:
                        raise StorageBusy(f"A transaction kept conflicting: {exc}") from exc
                except psycopg.Error as exc:
                    read_tries -= 1
                    if read_tries > 0 and connection_lost(exc):
                        self._mark_down()
                        continue
                    raise self._translate(exc) from exc
                else:
                    self._mark_up()
                    return result
        finally:
            self._running -= 1
            if self._running == 0 and self._idle is not None:
                self._idle.set()

    async def fetchone(self, sql: str, params: Iterable[object] = ()) -> Row | None:
        """The first row of a read."""

        async def work(conn: Conn) -> Row | None:
            return await (await conn.execute(sql, tuple(params))).fetchone()

        return await self.run(work, read=True)

    async def fetchall(
        self, sql: str, params: Iterable[object] = (), *, prepare: bool | None = None
    ) -> list[Row]:
        """Every row of a read; ``prepare=False`` plans it at every run."""

        async def work(conn: Conn) -> list[Row]:
            return await (await conn.execute(sql, tuple(params), prepare=prepare)).fetchall()

        return await self.run(work, read=True)

    async def write(self, sql: str, params: Iterable[object] = ()) -> tuple[Row | None, int]:
        """One statement as its own transaction (autocommit, one round trip):
        its first returned row, if any, and how many rows it changed."""

        async def work(conn: Conn) -> tuple[Row | None, int]:
            cursor = await conn.execute(sql, tuple(params))
            row = await cursor.fetchone() if cursor.description else None
            return row, cursor.rowcount

        return await self.run(work)
