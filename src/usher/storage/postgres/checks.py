"""Group commit for playback checks on PostgreSQL.

A check locks its ticket row until its transaction commits, and the commit
waits for a WAL flush. Checks of one popular ticket therefore ran one behind
the other at one flush each, however many connections the pool had. So each
node queues its checks and runs them in batches instead, SQLite's writer in
miniature, with up to ``IN_FLIGHT`` batch transactions open at once: while
one waits for its COMMIT's flush, the next is locked, decided and written.
To the database, two open batches of one node are like batches of two nodes:

* the batch locks every ticket it needs in one ``SELECT … ORDER BY id FOR
  UPDATE``; every batch locks in that order, so open batches, of this node
  or others, queue on each other's locks but never deadlock, and each
  ticket's checks stay serialised across all of them;
* each check is decided in arrival order against the ticket as the checks
  before it in the batch left it, so ``uses = N`` still allows exactly N and
  an ``auto`` slot still binds once (between two open batches, as between
  nodes, whichever takes a ticket's lock first goes first);
* the changed tickets are written with one ``UPDATE``, the attempts with one
  ``INSERT``, and one ``COMMIT`` makes the whole batch durable; only then is
  any caller answered.

A decider that raises fails its own check only: it changed nothing, so the
batch goes on without it. A statement the database refuses rolls the batch
back and its checks run again one at a time, so only a check that fails on
its own gets an error. A lost connection or a busy pool answers the whole
batch, as it would each check alone: a write whose connection died may have
committed, so it is never run twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Final

from usher.protocol.errors import StorageBusy, StorageUnavailable
from usher.storage.base import Decider
from usher.storage.postgres.runner import CLOSE_GRACE, PgRunner
from usher.storage.postgres.sql import (
    BATCH_APPLY,
    BATCH_LATEST_SESSIONS,
    BATCH_LOCK,
    BATCH_LOG,
    BATCH_SESSION_HOLDERS,
    BATCH_VIEWERS,
    Conn,
    attempt_row,
)
from usher.storage.rows import applied, ticket_from_row
from usher.storage.sessions import session_from_row, session_values, upsert_sql
from usher.tickets.model import CheckOutcome, CheckRequest, SessionStart, Ticket
from usher.tickets.sessions import SessionBook, named_ids

log = logging.getLogger("usher.storage.postgres")

#: Checks committed together at most; bounds the latency one batch adds.
BATCH_MAX: Final = 256
#: Checks allowed to wait for the batcher before new ones are shed (code 1000).
QUEUE_MAX: Final = 20_000
#: Batch transactions one node keeps open at once. With one, the next batch
#: waited for each COMMIT's WAL flush; a second overlaps that wait with its
#: own work (realistic load on one node, quick-mode copy: 1,852-2,043 checks/s
#: against 1,549-1,727). More would queue on the same flushes and ticket
#: locks, and hold more pooled connections.
IN_FLIGHT: Final = 2


class SessionsChanged(Exception):
    """A batch's session rows changed under it (a kick, end or start by another
    node or another open batch of this one): its transaction is rolled back
    and its checks run again alone."""


#: Runs one check in a transaction of its own.
SingleCheck = Callable[[CheckRequest, Decider, int, bool], Awaitable[CheckOutcome]]


@dataclass(eq=False, slots=True)
class _Check:
    request: CheckRequest
    decide: Decider
    now: int
    log: bool
    future: asyncio.Future[CheckOutcome]
    queued_at: float
    session: SessionStart | None = None


def _resolve(check: _Check, outcome: CheckOutcome) -> None:
    # A caller that was cancelled has no one to answer (its check may still
    # have been applied, as in SQLite).
    if not check.future.done():
        check.future.set_result(outcome)


def _fail(check: _Check, exc: BaseException) -> None:
    if not check.future.done():
        check.future.set_exception(exc)


class CheckBatcher:
    """The check queue of one node and the task that empties it."""

    def __init__(self, db: PgRunner, single: SingleCheck) -> None:
        self._db = db
        self._single = single
        self._queue: deque[_Check] = deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def waiting(self) -> int:
        """Checks queued and not yet in a transaction."""
        return len(self._queue)

    def over_budget(self, now: float, max_wait: float) -> bool:
        """Whether a check queued at ``now`` is shed. By waiting time, as on
        SQLite: once the oldest queued check waited past the budget, a new
        one would only wait longer still."""
        queue = self._queue
        return len(queue) >= QUEUE_MAX or (bool(queue) and now - queue[0].queued_at > max_wait)

    def start(self) -> None:
        self._closing = False
        # Made here, not in __init__: a storage may be reopened in another loop.
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="usher checks")

    async def close(self) -> None:
        """Finish the queued checks (for up to ``CLOSE_GRACE`` seconds), then
        fail whatever is left with :class:`StorageUnavailable`."""
        task, self._task = self._task, None
        if task is None:
            return
        self._closing = True
        if self._wake is not None:
            self._wake.set()
        try:
            # wait_for cancels the loop on time-out, which fails its batch.
            await asyncio.wait_for(task, CLOSE_GRACE)
        except TimeoutError:
            log.warning("Queued playback checks were still running at close; failed them.")
        except Exception:
            log.exception("The playback check batcher failed while closing.")
        finally:
            self._fail_queued()

    async def submit(
        self,
        request: CheckRequest,
        decide: Decider,
        now: int,
        log: bool,
        *,
        max_wait: float,
        session: SessionStart | None = None,
    ) -> CheckOutcome:
        """The outcome of the check, once it is committed."""
        if self._task is None or self._closing or self._wake is None:
            raise StorageUnavailable("The PostgreSQL storage is not open; call open() first.")
        queue = self._queue
        clock = time.monotonic()
        if self.over_budget(clock, max_wait):
            raise StorageBusy(
                f"{len(queue)} playback checks are waiting, the oldest for "
                f"{clock - queue[0].queued_at:.3f} s."
            )
        future: asyncio.Future[CheckOutcome] = asyncio.get_running_loop().create_future()
        queue.append(_Check(request, decide, now, log, future, clock, session))
        self._wake.set()
        return await future

    def _fail_queued(self) -> None:
        while self._queue:
            _fail(self._queue.popleft(), StorageUnavailable("The PostgreSQL storage is closing."))

    # -- the batcher task ----------------------------------------------------------

    async def _loop(self) -> None:
        wake = self._wake
        assert wake is not None  # start() made it
        slots = asyncio.Semaphore(IN_FLIGHT)
        running: set[asyncio.Task[None]] = set()

        def ran(batch: list[_Check], task: asyncio.Task[None]) -> None:
            running.discard(task)
            slots.release()
            # The one place a batch that did not finish is answered: cancelled
            # by close() (before its first step or during it), or ended by a
            # BaseException _run does not catch (asyncio re-raises
            # KeyboardInterrupt and SystemExit itself). Its callers must not
            # hang; answered checks are left as they are.
            if task.cancelled():
                why = "The PostgreSQL storage is closing."
            elif (error := task.exception()) is not None:
                log.error("A batch of playback checks ended with %r.", error)
                why = "A batch of playback checks failed; try again."
            else:
                return
            for check in batch:
                _fail(check, StorageUnavailable(why))

        try:
            while True:
                if not self._queue:
                    if self._closing:
                        if running:
                            await asyncio.wait(running)
                        return
                    wake.clear()
                    await wake.wait()
                    continue
                await slots.acquire()
                # Only this task takes from the queue, so it still holds
                # what it held before the wait for a slot (and maybe more).
                size = min(BATCH_MAX, len(self._queue))
                batch = [self._queue.popleft() for _ in range(size)]
                task = asyncio.get_running_loop().create_task(self._run(batch))
                running.add(task)
                task.add_done_callback(partial(ran, batch))
        finally:
            # However the loop ended, nothing may wait for it any more: a
            # batch still open is cancelled, which fails its checks.
            self._closing = True
            for task in running:
                task.cancel()
            if running:
                await asyncio.wait(running)
            self._fail_queued()

    async def _run(self, batch: list[_Check]) -> None:
        """Run one batch and answer its checks. A batch that ends otherwise
        (cancelled, or a BaseException) is answered by ``_loop``'s callback."""
        if len(batch) == 1 and batch[0].session is None:
            await self._alone(batch[0])
            return
        try:
            answers = await self._db.run(partial(self._transaction, batch))
        except (StorageBusy, StorageUnavailable) as exc:
            # Each check alone would meet the same busy pool or dead
            # database, and after a lost connection the batch may have
            # committed: answer every check, run none again.
            for check in batch:
                _fail(check, exc)
        except Exception as exc:
            log.info("A batch of playback checks failed; running them one at a time: %s", exc)
            for check in batch:
                if not check.future.done():
                    await self._alone(check)
        else:
            for check, outcome in answers:
                _resolve(check, outcome)

    async def _alone(self, check: _Check) -> None:
        try:
            if check.session is None:
                outcome = await self._single(check.request, check.decide, check.now, check.log)
            else:
                # A start's sessions are read and written by the batch path only.
                try:
                    answers = await self._db.run(partial(self._transaction, [check]))
                except SessionsChanged as exc:
                    raise StorageBusy(f"{exc} Try again.") from exc
                if not answers:
                    return  # its decider raised, and _transaction failed it
                ((_, outcome),) = answers
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a decider's failure belongs to its own caller
            _fail(check, exc)
        else:
            _resolve(check, outcome)

    async def _transaction(
        self, batch: list[_Check], conn: Conn
    ) -> list[tuple[_Check, CheckOutcome]]:
        keys = sorted({check.request.key for check in batch})
        starts = [check for check in batch if check.session is not None]
        decided: list[tuple[_Check, CheckOutcome, bool]] = []
        # Two round trips, as for one check: BEGIN and the locks (and, for
        # starts, the sessions, read once the locks are held: pipelined
        # statements run in order, each with a fresh snapshot), then the
        # UPDATE, the INSERT and COMMIT.
        async with conn.pipeline(), conn.transaction():
            lock_cursor = await conn.execute(BATCH_LOCK, (keys,))
            book = None
            latest_cursor = holders_cursor = None
            if starts:
                handles = sorted(
                    {c.session.handle for c in starts if c.session and not c.session.unseen}
                )
                started = sorted({c.request.key for c in starts})
                if handles:
                    latest_cursor = await conn.execute(BATCH_LATEST_SESSIONS, (handles,))
                named = named_ids(c.session for c in starts if c.session is not None)
                if named:
                    holders_cursor = await conn.execute(BATCH_SESSION_HOLDERS, (named,))
                # Planned at each run (see sql.py).
                viewers_cursor = await conn.execute(
                    BATCH_VIEWERS, (min(c.now for c in starts), started), prepare=False
                )
            rows = await lock_cursor.fetchall()
            if starts:
                found = await latest_cursor.fetchall() if latest_cursor is not None else []
                latest = [session_from_row(row) for row in found]
                viewers = {str(k): int(n) for k, n in await viewers_cursor.fetchall()}
                held = await holders_cursor.fetchall() if holders_cursor is not None else []
                book = SessionBook(latest, viewers, {str(i): str(h) for i, h in held})
            locked: dict[str, tuple[int, Ticket]] = {}
            for row in rows:
                ticket = ticket_from_row(row[1:])
                locked[ticket.key] = (int(row[0]), ticket)
            changed: dict[int, Ticket] = {}
            for check in batch:
                entry = locked.get(check.request.key)
                before = None if entry is None else entry[1]
                log = check.log
                try:
                    if check.session is None or book is None:
                        outcome = CheckOutcome(
                            check.decide(before, check.request, check.now), 0, before
                        )
                    else:
                        checked = book.check(
                            before, check.request, check.decide, check.now, check.session
                        )
                        outcome = CheckOutcome(
                            checked.decision, 0, before, checked.session, checked.resumed
                        )
                        log = log and checked.log
                except BaseException as exc:
                    # Nothing was changed for it yet: fail it alone, keep the rest.
                    _fail(check, exc)
                    continue
                decision = outcome.decision
                if entry is not None:
                    row_id, ticket = entry
                    after = applied(ticket, decision, check.now)
                    if after is not ticket:
                        locked[after.key] = (row_id, after)
                        changed[row_id] = after
                decided.append((check, outcome, log))
            if changed:
                await conn.execute(
                    BATCH_APPLY,
                    (
                        list(changed),
                        [t.use_count for t in changed.values()],
                        [t.used_at for t in changed.values()],
                        ["|".join(t.bound_ips) for t in changed.values()],
                    ),
                )
            if book is not None and book.written:
                # One statement for the batch's sessions (ids are unique in it).
                written = list(book.written.values())
                values = [value for s in written for value in session_values(s)]
                stored = await conn.execute(upsert_sql("%s", len(written)), values)
                if len(await stored.fetchall()) != len(written):
                    # Another node or open batch kicked, ended or took one of
                    # these sessions after this batch read it: decide again,
                    # one at a time.
                    raise SessionsChanged("A session changed while its start was decided.")
            logged = [
                attempt_row(check.request, outcome.ticket, outcome.decision, check.now)
                for check, outcome, log in decided
                if log
            ]
            columns = [list(column) for column in zip(*logged, strict=True)]
            cursor = await conn.execute(BATCH_LOG, columns) if logged else None
        # Committed by now, so every id belongs to an attempt on disk.
        attempt_ids = iter(sorted(int(row[0]) for row in await cursor.fetchall()) if cursor else [])
        for _, outcome, log in decided:
            outcome.attempt_id = next(attempt_ids) if log else 0
        return [(check, outcome) for check, outcome, _ in decided]
