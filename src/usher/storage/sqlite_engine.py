"""SQLite connections for one database file: a reader pool and one writer
thread with group commit.

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
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from usher.protocol.errors import AlreadyExists, StorageBusy, StorageError, StorageUnavailable
from usher.storage import migrations

T = TypeVar("T")

#: Jobs committed together at most; bounds the latency one batch adds.
BATCH_MAX: Final = 512
#: Jobs allowed to wait for the writer before new writes are shed (code 1000).
QUEUE_MAX: Final = 20_000

Outcome = tuple["_Job", Any, BaseException | None]


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


class SQLiteEngine:
    """The connections of one SQLite file: ``read`` on a pool, ``write`` as
    group-committed jobs on the writer thread."""

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

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on a reader connection (a consistent WAL snapshot)."""
        if self._pool is None:
            raise StorageUnavailable("The SQLite storage is not open; call open() first.")

        def run() -> T:
            try:
                return fn(self._reader())
            except sqlite3.Error as exc:
                raise StorageUnavailable(f"SQLite read failed: {exc}") from exc

        return await asyncio.get_running_loop().run_in_executor(self._pool, run)

    async def write(self, fn: Callable[[sqlite3.Connection], T], *, max_wait: float) -> T:
        """Run ``fn`` in the writer's next batch; return once it is committed.

        Raises :class:`StorageBusy` at once when the oldest queued write has
        waited longer than ``max_wait`` seconds.
        """
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
            if len(queue) >= QUEUE_MAX or (queue and now - queue[0].queued_at > max_wait):
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
            _resolve([(job, None, failure) for job in stranded])
            raise
        finally:
            conn.close()

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Job]) -> None:
        outcomes: list[Outcome] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job in batch:
                conn.execute("SAVEPOINT job")
                try:
                    result = job.run(conn)
                except BaseException as exc:  # even SystemExit must not kill the writer
                    conn.execute("ROLLBACK TO job")
                    outcomes.append((job, None, as_storage_error(exc)))
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
        _resolve(outcomes)

    # -- lifecycle -----------------------------------------------------------

    async def open(self) -> None:
        """Open the file (WAL mode), migrate it, start the writer and readers."""
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
                for statement in split_sql(migration.sql):
                    conn.execute(statement)
                current = migration.version
            conn.execute("DELETE FROM schema_version")
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (current,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        """Commit what is queued, stop the writer, close every connection."""
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


def _resolve(outcomes: list[Outcome]) -> None:
    # One hop to each event loop per batch, not one per job.
    by_loop: dict[asyncio.AbstractEventLoop, list[Outcome]] = {}
    for outcome in outcomes:
        by_loop.setdefault(outcome[0].future.get_loop(), []).append(outcome)

    def settle(items: list[Outcome]) -> None:
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


def split_sql(script: str) -> list[str]:
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


def as_storage_error(exc: BaseException) -> BaseException:
    if isinstance(exc, sqlite3.IntegrityError) and "UNIQUE" in str(exc):
        return AlreadyExists(f"The database refused a duplicate: {exc}.")
    if isinstance(exc, sqlite3.IntegrityError):
        return StorageError(f"The database refused the change: {exc}.")
    if isinstance(exc, sqlite3.Error):
        return StorageUnavailable(f"SQLite failed: {exc}")
    # Anything else (a bug in a job, even a BaseException) goes back to the
    # job's own caller unchanged; the writer and the rest of the batch go on.
    return exc


class SQLiteAccess:
    """What the parts of the SQLite storage share: reads and writes through
    one :class:`SQLiteEngine`."""

    _engine: SQLiteEngine
    #: Seconds the oldest queued write may wait before new writes are shed.
    max_write_wait: float = 0.5

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._engine.read(fn)

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._engine.write(fn, max_wait=self.max_write_wait)
