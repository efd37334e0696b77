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
* Consecutive jobs of one *group* (playback checks) run as one call, so a
  batch of checks costs a handful of SQLite statements rather than several
  per check. Every statement releases and retakes the GIL, and under load
  retaking it means waiting for the busy event loop, so statements per batch,
  not CPU, bound the writer. A group that fails is rolled back and re-run job
  by job, each in its own savepoint, so one bad job still fails alone.
* The writer keeps a :class:`WriterState` (the ticket cache): it is checked at
  every ``BEGIN`` against ``PRAGMA data_version`` (another process wrote) and
  dropped after any job that may change what it holds, and after any failure.
* The WAL is checkpointed by a thread of its own, never by the writer's
  ``COMMIT``: copying WAL pages into the database and its fsync used to land
  on whichever check's batch crossed the auto-checkpoint threshold. But
  SQLite restarts the WAL from its top only when a write begins after a
  checkpoint copied *all* of it, and under steady writes the writer has
  always appended more by the time the thread is done: the WAL grew by about
  40 MB a second of realistic checks (1.2 GB after half a minute) and never
  shrank. So once it holds more than :data:`WAL_RESTART_FRAMES`, the writer
  itself checkpoints between two batches, when nothing can be appended; the
  thread has copied all but the last fraction of a second's pages by then.
* Upkeep writes (the session sweep) are *background* jobs: each runs in a
  batch of its own, when no other write waits or once it has waited
  :data:`BACKGROUND_WAIT`. Batched with checks and API calls, a sweep
  write and its larger ``COMMIT`` came on top of every write that shared
  its batch: a signed call's replay-protection write waited for about two
  of them.
* Reads run on a small pool of threads with their own connections; WAL lets
  them proceed while the writer commits. A primary-key read of a small, hot
  table (the account a signed call names, the count filters a count looks
  for) runs on the event loop instead
  (:meth:`SQLiteEngine.read_at_once`): handing it to a thread and back cost
  about 0.17 ms on an idle server and over a millisecond at the p99 of the
  count matrix, for a statement of about 0.02 ms.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import sqlite3
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol, TypeVar

from usher.protocol.errors import AlreadyExists, StorageBusy, StorageError, StorageUnavailable
from usher.storage import migrations
from usher.storage.base import ReadBound, ReadBoundExceeded, read_bound

T = TypeVar("T")

#: Jobs committed together at most.
BATCH_MAX: Final = 512
#: Seconds the jobs of one batch should take (its ``COMMIT`` comes on top):
#: the writer takes as many jobs as its recent cost per job says fit. A
#: count alone let a batch add far more latency where jobs are slow: 512
#: playback starts take 0.1 s on a small database and more than a second on
#: a large one whose pages are not all in memory, on top of the queue's own
#: waiting budget (``max_wait``).
BATCH_SECONDS: Final = 0.1
#: Jobs a batch takes at least, however slow the recent ones were.
BATCH_MIN: Final = 8
#: Jobs allowed to wait for the writer before new writes are shed (code 1000).
QUEUE_MAX: Final = 20_000
#: Seconds of batches the writer's cost per job for shedding is taken from.
DRAIN_WINDOW: Final = 10.0
#: Seconds a background write (upkeep: the session sweep) waits at most
#: while other writes keep coming; when none is waiting it runs at once.
BACKGROUND_WAIT: Final = 0.2
#: Seconds between checkpoints of the WAL by the checkpoint thread.
CHECKPOINT_EVERY: Final = 0.2
#: WAL frames (pages) past which the writer checkpoints itself so that the
#: WAL restarts (see the module docstring): about 64 MB of 4 KiB pages, a
#: few seconds of the heaviest write load, so the pause (the pages appended
#: since the thread's last checkpoint, and an fsync) comes rarely.
WAL_RESTART_FRAMES: Final = 16_384
#: Bytes a restarted WAL's file is cut back to.
WAL_SIZE_LIMIT: Final = 64 * 1024 * 1024
#: Virtual-machine steps between two looks at a bounded read's deadline.
#: Each look takes the GIL, which the event loop may hold for a while under
#: load, so they are kept rare: this many steps take about a millisecond.
PROGRESS_EVERY: Final = 20_000

Outcome = tuple["_Job", Any, BaseException | None]

#: The writer thread's name (py-spy and the benchmark's CPU split show it).
WRITER_THREAD: Final = "usher-sqlite-writer"

#: ``PRAGMA synchronous`` of the connections (see ``_connect``).
Synchronous = Literal["full", "normal"]
_SYNCHRONOUS: Final[dict[str, str]] = {"full": "FULL", "normal": "NORMAL"}


class JobGroup(Protocol):
    """Runs several queued jobs of one kind in one call."""

    def run_group(self, conn: sqlite3.Connection, items: list[Any]) -> list[Any]:
        """One result per item, in order; raising fails the whole group, which
        is then re-run job by job."""


class WriterState(Protocol):
    """What the writer caches between jobs (see the module docstring)."""

    def begin(self, conn: sqlite3.Connection) -> None:
        """Called inside each batch's ``BEGIN IMMEDIATE``, before any job."""

    def invalidate(self) -> None:
        """Forget everything: the database may no longer match it."""


@dataclass(slots=True)
class _Job:
    run: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any]
    #: ``time.monotonic()`` when queued: for shedding by waiting time, and
    #: how long a background job has waited its turn.
    queued_at: float = 0.0
    #: Consecutive jobs of the same group run together as ``group.run_group``.
    group: JobGroup | None = None
    item: Any = None
    #: False when the job may change what the :class:`WriterState` caches.
    keeps_state: bool = False


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

    def __init__(
        self,
        path: str,
        *,
        state: WriterState,
        readers: int = 4,
        busy_timeout_ms: int = 5000,
        synchronous: Synchronous = "full",
    ) -> None:
        self.path = path
        self._synchronous = synchronous
        self._readers = readers
        self._busy_timeout_ms = busy_timeout_ms
        self._state = state
        self._queue: list[_Job] = []
        self._background: collections.deque[_Job] = collections.deque()
        self._queue_lock = threading.Condition()
        self._writer: threading.Thread | None = None
        self._checkpointer: threading.Thread | None = None
        self._stop_checkpoints = threading.Event()
        self._closing = False
        #: Set by the checkpoint thread, read by the writer between batches.
        self._wal_restart = threading.Event()
        #: Seconds a job takes, the median over the last batches (a median,
        #: so that one slow job, such as a count filter being filled, moves
        #: neither the batch size nor the shedding). Written by the writer,
        #: read unlocked by ``write``: a float, and a stale one is fine.
        self._per_job = 0.0
        self._per_job_seen: collections.deque[float] = collections.deque(maxlen=9)
        #: Seconds of the writer's wall clock per job (see ``_learn``; 0 when
        #: not known), for shedding; and when the batch it is writing began,
        #: and its size. Same threading as ``_per_job``.
        self._drain_per_job = 0.0
        self._drain_seen: collections.deque[tuple[float, float, int]] = collections.deque(maxlen=9)
        self._in_flight: tuple[float, int] = (0.0, 0)
        self._local = threading.local()
        self._pool: ThreadPoolExecutor | None = None
        self._reader_connections: list[sqlite3.Connection] = []
        self._loop_conn: sqlite3.Connection | None = None

    # -- connections -------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, cached_statements=256
        )
        conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
        conn.execute("PRAGMA foreign_keys = ON")
        # FULL makes each group commit fsync the WAL: an acknowledged attempt
        # survives power loss, not just a process crash. NORMAL (opt-in,
        # USHER_SQLITE_SYNCHRONOUS) syncs only at checkpoints: in WAL mode
        # still safe against a killed process, not against power loss or an
        # OS crash, which may lose the last commits acknowledged before it.
        conn.execute(f"PRAGMA synchronous = {_SYNCHRONOUS[self._synchronous]}")
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
        """Run ``fn`` on a reader connection (a consistent WAL snapshot).

        Inside :func:`~usher.storage.base.bounded_reads`, a progress handler
        stops ``fn``'s statements once the bound's deadline has passed, and
        the read raises :class:`ReadBoundExceeded`. The bound is taken here,
        on the event loop, because the context does not follow the work
        into the reader thread.
        """
        if self._pool is None:
            raise StorageUnavailable("The SQLite storage is not open; call open() first.")
        bound = read_bound()

        def run() -> T:
            try:
                conn = self._reader()
                if bound is None:
                    return fn(conn)
                return _bounded(conn, fn, bound)
            except sqlite3.Error as exc:
                raise StorageUnavailable(f"SQLite read failed: {exc}") from exc

        return await asyncio.get_running_loop().run_in_executor(self._pool, run)

    async def read_at_once(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on the event loop's own reader connection, for a read
        that takes microseconds (a primary-key lookup in a small table whose
        pages stay cached). It never waits for a lock: when SQLite answers
        busy (a WAL being recovered or reset), the read goes to a reader
        thread like any other, so the loop is never held for a busy wait.
        """
        if self._pool is None:
            raise StorageUnavailable("The SQLite storage is not open; call open() first.")
        conn = self._loop_conn
        if conn is None:
            conn = self._loop_conn = self._connect()
            conn.execute("PRAGMA query_only = ON")
            conn.execute("PRAGMA busy_timeout = 0")
        try:
            return fn(conn)
        except sqlite3.OperationalError:
            return await self.read(fn)
        except sqlite3.Error as exc:
            raise StorageUnavailable(f"SQLite read failed: {exc}") from exc

    async def write(
        self,
        fn: Callable[[sqlite3.Connection], T],
        *,
        max_wait: float,
        group: JobGroup | None = None,
        item: Any = None,
        keeps_state: bool = False,
        background: bool = False,
    ) -> T:
        """Run ``fn`` in the writer's next batch; return once it is committed.

        With ``group``, runs of consecutive jobs of that group are handed to
        ``group.run_group`` with their ``item`` values instead; ``fn`` is the same
        work for one job, used when the group call fails. ``keeps_state``
        promises that the job leaves what the writer state caches unchanged.
        A ``background`` job runs alone, after the other writes waiting (see
        the module docstring); it is never shed.

        Raises :class:`StorageBusy` at once when the oldest queued write has
        waited longer than ``max_wait`` seconds, or when this one would not be
        committed within that time at the writer's recent pace
        (:meth:`_expected_wait`).
        """
        if self._writer is None or self._closing:
            raise StorageUnavailable("The SQLite storage is not open; call open() first.")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        now = time.monotonic()
        if background:
            with self._queue_lock:
                self._background.append(_Job(fn, future, now, None, None, keeps_state))
                self._queue_lock.notify()
            return await future
        with self._queue_lock:
            queue = self._queue
            # Shed by waiting time, not only by length: once the oldest
            # queued write has waited longer than the budget, the writer is
            # past capacity and a new write would only wait longer still.
            # Answering 1000/503 at once keeps latency bounded for the writes
            # already accepted, and lets the caller retry or fail over.
            # The age of the oldest alone let a queue fill up within the
            # budget and then take seconds to drain where jobs are slow
            # (1,175 waiting, the oldest 3 s, on the full-size database): the
            # work queued ahead counts too, at the writer's recent pace.
            if self.over_budget(now, max_wait):
                raise StorageBusy(
                    f"{len(queue)} writes are waiting, the oldest for "
                    f"{now - queue[0].queued_at:.3f} s."
                )
            queue.append(_Job(fn, future, now, group, item, keeps_state))
            self._queue_lock.notify()
        return await future

    @property
    def pending_writes(self) -> int:
        return len(self._queue) + len(self._background)  # racy is fine for a gauge

    # -- the writer thread ---------------------------------------------------

    @staticmethod
    def _batch_size(per_job: float) -> int:
        """How many queued jobs the next batch takes (see :data:`BATCH_SECONDS`)."""
        if per_job <= 0:
            return BATCH_MAX
        return max(BATCH_MIN, min(BATCH_MAX, int(BATCH_SECONDS / per_job)))

    def over_budget(self, now: float, max_wait: float) -> bool:
        """Whether a write queued at ``now`` is shed (see :meth:`write`). Read
        without the queue's lock it is a guess, which the hot path uses to
        refuse early what :meth:`write` would refuse anyway."""
        queue = self._queue
        try:
            # One look: unlocked, the writer may empty the queue meanwhile.
            oldest = queue[0].queued_at
        except IndexError:
            return False
        return (
            len(queue) >= QUEUE_MAX
            or now - oldest > max_wait
            or self._expected_wait(now) > max_wait
        )

    def _expected_wait(self, now: float) -> float:
        """Seconds until a job queued now would be committed: the batch being
        written, what is queued, and the job's own batch, at the writer's
        recent wall-clock cost per job.

        Its own batch counts as the job itself and as many more as are
        queued ahead of it, up to a full batch, as if the batch began with
        it (the worst case): the jobs queued after it that the batch also
        takes are written before its ``COMMIT`` too, and a queue longer than
        a batch says they are coming (a short one, that few are). With the
        default budget, under a flood the queue is longer than a batch when
        shedding starts (at 0.3-0.4 ms a check, 0.5 s holds 1,250-1,670
        checks, batches of about 430 of them), so the batch counts full.

        Counting the job alone, in 36 steps of 8 s at 1,024, 2,048 and
        4,096 connections on the full-size benchmark file (one hot ticket),
        9 had answers that took over 1 s inside the server and 4 a p99 over
        1 s; counting its batch as here, none of 9 had any, and counting it
        always as a full batch, 1 of 18 had some (144 of 29,609 answers)
        and none a p99 over 1 s, with as many checks answered
        (docs/benchmarks.md, "Overload: the writer's budget and its own
        batch").
        """
        per_job = self._drain_per_job or self._per_job
        began, size = self._in_flight
        writing = max(0.0, size * per_job - (now - began)) if size else 0.0
        queued = len(self._queue)
        own_batch = min(self._batch_size(self._per_job), queued + 1) * per_job
        return writing + queued * per_job + own_batch

    def _learn(self, worked: float, jobs: int, wall: float, now: float) -> None:
        """Record a batch: ``worked``, its jobs' own seconds; ``wall``, the
        writer's seconds since it was last ready for a batch.

        The batch size follows the median of ``worked`` per job. Shedding
        follows ``wall``, which also holds the ``COMMIT``, the GIL waits
        between statements and the upkeep batches in between, and its mean,
        since slow batches are what a queue waits for: under a flood at
        4,096 connections the writer committed a job every 0.39 ms of wall
        clock while the median ``worked`` said 0.14-0.3 ms, so a queue
        judged to take 0.5 s took up to 1.3 s. The mean is over the batches
        of at least :data:`BATCH_MIN` jobs of the last :data:`DRAIN_WINDOW`
        seconds (a lone slow job, such as a count filter being filled, does
        not shed the writes after it, and an old burst says nothing of
        today's disk); without such batches, the median stands in.
        """
        seen = self._per_job_seen
        seen.append(worked / jobs)
        self._per_job = statistics.median(seen)
        drained = self._drain_seen
        if jobs >= BATCH_MIN:
            drained.append((now, wall, jobs))
        while drained and now - drained[0][0] > DRAIN_WINDOW:
            drained.popleft()
        self._drain_per_job = (
            sum(w for _, w, _ in drained) / sum(n for _, _, n in drained) if drained else 0.0
        )

    def _writer_loop(self, conn: sqlite3.Connection) -> None:
        batch: list[_Job] = []
        # Since when the writer has been busy without a break: the wall clock
        # a batch is charged runs from here (see ``_learn``).
        busy_since = time.monotonic()
        try:
            while True:
                with self._queue_lock:
                    idle = False
                    while not (self._queue or self._background or self._closing):
                        self._queue_lock.wait()
                        idle = True
                    if idle:
                        busy_since = time.monotonic()
                    if not (self._queue or self._background):
                        break  # closing, and everything queued is committed
                    background = bool(self._background) and (
                        not self._queue
                        or time.monotonic() - self._background[0].queued_at > BACKGROUND_WAIT
                    )
                    if background:
                        batch = [self._background.popleft()]
                    else:
                        size = self._batch_size(self._per_job)
                        batch = self._queue[:size]
                        del self._queue[:size]
                    taken = time.monotonic()
                    self._in_flight = (taken, len(batch))
                worked = self._run_batch(conn, batch)
                if self._wal_restart.is_set():
                    self._wal_restart.clear()
                    self._checkpoint(conn)
                self._in_flight = (0.0, 0)
                if not background:
                    # Upkeep's own cost says nothing about the next batch's
                    # jobs; the wall clock it took is charged to them.
                    done = time.monotonic()
                    self._learn(worked, len(batch), done - busy_since, done)
                    busy_since = done
                batch = []
        except BaseException as exc:
            # The writer is gone: refuse new writes and answer every waiting
            # one, instead of letting requests hang on futures nobody settles.
            with self._queue_lock:
                self._closing = True
                stranded = batch + self._queue + list(self._background)
                self._queue.clear()
                self._background.clear()
            failure = StorageUnavailable(f"The SQLite writer stopped: {exc!r}")
            _resolve([(job, None, failure) for job in stranded])
            raise
        finally:
            conn.close()

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Job]) -> float:
        """Run and commit ``batch``; the seconds its jobs took, without the
        ``BEGIN`` and ``COMMIT`` (whose fsync is a cost per batch, not per
        job: counted per job, a slow disk would shrink batches to a few
        jobs and cut the writer's capacity instead of its latency)."""
        outcomes: list[Outcome] = []
        worked = 0.0
        try:
            conn.execute("BEGIN IMMEDIATE")
            self._state.begin(conn)
            started = time.perf_counter()
            start = 0
            while start < len(batch):
                group = batch[start].group
                end = start + 1
                if group is not None:
                    while end < len(batch) and batch[end].group is group:
                        end += 1
                    outcomes += self._run_group(conn, group, batch[start:end])
                else:
                    outcomes.append(self._run_job(conn, batch[start]))
                start = end
            worked = time.perf_counter() - started
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._state.invalidate()
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            # Nothing of this batch is on disk, so no job may report success.
            failure = StorageUnavailable(f"SQLite write failed: {exc}")
            outcomes = [(job, None, failure) for job in batch]
        _resolve(outcomes)
        return worked

    def _run_job(self, conn: sqlite3.Connection, job: _Job) -> Outcome:
        conn.execute("SAVEPOINT job")
        try:
            result = job.run(conn)
        except BaseException as exc:  # even SystemExit must not kill the writer
            conn.execute("ROLLBACK TO job")
            conn.execute("RELEASE job")
            self._state.invalidate()
            return (job, None, as_storage_error(exc))
        conn.execute("RELEASE job")
        if not job.keeps_state:
            self._state.invalidate()
        return (job, result, None)

    def _run_group(
        self, conn: sqlite3.Connection, group: JobGroup, jobs: list[_Job]
    ) -> list[Outcome]:
        conn.execute("SAVEPOINT job_group")
        try:
            results = group.run_group(conn, [job.item for job in jobs])
        except BaseException:  # re-run job by job: each gets its own error
            conn.execute("ROLLBACK TO job_group")
            conn.execute("RELEASE job_group")
            self._state.invalidate()
            return [self._run_job(conn, job) for job in jobs]
        conn.execute("RELEASE job_group")
        return [(job, result, None) for job, result in zip(jobs, results, strict=True)]

    # -- the checkpoint thread -------------------------------------------------

    def _checkpoint_loop(self, conn: sqlite3.Connection) -> None:
        # PASSIVE never waits for the writer or readers; it copies what it can
        # and SQLite restarts the WAL from the top once all of it is copied.
        try:
            while not self._stop_checkpoints.wait(CHECKPOINT_EVERY):
                if self._checkpoint(conn) > WAL_RESTART_FRAMES:
                    self._wal_restart.set()
            self._checkpoint(conn)
        finally:
            conn.close()

    @staticmethod
    def _checkpoint(conn: sqlite3.Connection) -> int:
        """A PASSIVE checkpoint; the frames the WAL holds (0 if it failed)."""
        try:
            rows = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error:
            return 0  # busy or closing: the next round tries again
        return int(rows[0][1]) if rows and rows[0][1] is not None else 0

    # -- lifecycle -----------------------------------------------------------

    async def open(self) -> None:
        """Open the file (WAL mode), migrate it, start the writer and readers."""
        conn = await asyncio.to_thread(self._open_writer_connection)
        self._closing = False
        self._pool = ThreadPoolExecutor(self._readers, thread_name_prefix="usher-sqlite-read")
        self._writer = threading.Thread(
            target=self._writer_loop, args=(conn,), name=WRITER_THREAD, daemon=True
        )
        self._writer.start()
        self._stop_checkpoints.clear()
        self._checkpointer = threading.Thread(
            target=self._checkpoint_loop,
            args=(self._connect(),),
            name="usher-sqlite-checkpoint",
            daemon=True,
        )
        self._checkpointer.start()

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
            # The checkpoint thread does this work (see the module docstring).
            conn.execute("PRAGMA wal_autocheckpoint = 0")
            # A restarted WAL keeps its file at the longest it ever was unless
            # told otherwise: cut it back after a burst of writes.
            conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
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
        checkpointer = self._checkpointer
        if checkpointer is not None:
            self._stop_checkpoints.set()
            await asyncio.to_thread(checkpointer.join)
            self._checkpointer = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        for conn in [*self._reader_connections, *filter(None, [self._loop_conn])]:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        self._reader_connections.clear()
        self._loop_conn = None
        self._local = threading.local()


def _bounded(
    conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T], bound: ReadBound
) -> T:
    """``fn(conn)``, its statements stopped once ``bound``'s deadline passes."""
    deadline = bound.deadline
    bound.remaining()  # none left: stop before the first statement
    stopped = False

    def past_deadline() -> int:
        nonlocal stopped
        stopped = time.monotonic() > deadline
        return int(stopped)

    conn.set_progress_handler(past_deadline, PROGRESS_EVERY)
    try:
        return fn(conn)
    except sqlite3.Error as exc:
        if stopped:
            raise ReadBoundExceeded(bound.seconds) from exc
        raise
    finally:
        conn.set_progress_handler(None, 0)
        if stopped and conn.in_transaction:
            # An interrupted read may leave its snapshot open; the next read
            # on this thread must start a fresh one.
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")


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
    #: Seconds the oldest queued write may wait, or a new write may expect to
    #: wait for its commit, before new writes are shed.
    max_write_wait: float = 0.5

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._engine.read(fn)

    async def _write(
        self,
        fn: Callable[[sqlite3.Connection], T],
        *,
        keeps_state: bool = False,
        background: bool = False,
    ) -> T:
        return await self._engine.write(
            fn, max_wait=self.max_write_wait, keeps_state=keeps_state, background=background
        )
