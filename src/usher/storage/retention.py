"""Retention: deleting old attempts in batches, on any backend.

Which attempts go is one rule, ``at < before``, applied per owner: first the
attempts no account owns (``cdn IS NULL``), then each account's in turn, each
through the ``(cdn, at)`` index. Nothing ever scans the whole log: the next
owner is one index seek (``MIN(cdn) … WHERE cdn > ?``), and an owner with no
old attempts costs one more. The SQL is written here once for both backends;
each backend's ``prune_attempts`` walks the owners on its own connection.

:func:`prune_all` is the loop ``usher db prune`` runs; :class:`Pruner` is the
same loop run by ``usher serve`` in the background
(``USHER_PRUNE_ATTEMPTS_OLDER_THAN``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from usher.progress import OnProgress, no_progress
from usher.protocol.errors import StorageError
from usher.storage.base import Storage

log = logging.getLogger("usher.retention")

#: Attempts ``usher db prune`` deletes per transaction (``--batch-size``).
DEFAULT_BATCH: Final = 10_000
#: Attempts the background pruner deletes per transaction: small, so a
#: batch costs checks a few milliseconds at most (see docs/operations.md).
BACKGROUND_BATCH: Final = 1_000
#: Seconds the background pruner waits after a pass that left nothing old.
BACKGROUND_EVERY: Final = 300.0
#: Seconds it waits between batches of one pass, and after a failure: the
#: pruner never takes the writer back to back, and yields to a busy server.
BACKGROUND_PAUSE: Final = 0.1
BACKGROUND_RETRY: Final = 30.0
#: Least pause of ``usher db prune`` between batches, in seconds. On SQLite
#: the command is another process than ``usher serve``, and SQLite's lock has
#: no queue: a waiting writer polls, sleeping up to 100 ms between tries. A
#: pruner that took the lock again at once would starve the server's writer
#: (checks waited past 5 s in a measurement); pausing at least as long as the
#: batch took, and never under one poll, lets the server in between batches.
PRUNE_PAUSE: Final = 0.1


def next_owner_sql(mark: str) -> str:
    """The lowest account cdn above ``mark`` that has attempts (one index seek)."""
    return f"SELECT MIN(cdn) FROM attempts WHERE cdn > {mark}"


def _owner(cdn: int | None, mark: str) -> tuple[str, list[object]]:
    # Two spellings, because ``cdn IS ?`` / ``IS NOT DISTINCT FROM`` would
    # keep PostgreSQL off the index.
    return ("cdn IS NULL", []) if cdn is None else (f"cdn = {mark}", [cdn])


def count_sql(cdn: int | None, before: int, mark: str) -> tuple[str, list[object]]:
    """Count the owner's attempts logged before ``before``."""
    owner, params = _owner(cdn, mark)
    return f"SELECT COUNT(*) FROM attempts WHERE {owner} AND at < {mark}", [*params, before]


def delete_sql(
    cdn: int | None, before: int, limit: int, mark: str, *, lock: str = ""
) -> tuple[str, list[object]]:
    """Delete up to ``limit`` of the owner's oldest attempts logged before ``before``.

    ``lock`` ends the inner selection (PostgreSQL: ``FOR UPDATE SKIP
    LOCKED``, so pruners on several nodes take disjoint rows and never wait
    for one another).
    """
    owner, params = _owner(cdn, mark)
    return (
        "DELETE FROM attempts WHERE id IN (SELECT id FROM attempts"
        f" WHERE {owner} AND at < {mark} ORDER BY at LIMIT {mark}{lock})",
        [*params, before, limit],
    )


def cutoff(now: float, older_than: int) -> int:
    """The ``before`` that keeps the last ``older_than`` seconds of attempts."""
    return int(now) - older_than


@dataclass(frozen=True, slots=True)
class Pruned:
    """What :func:`prune_all` deleted."""

    attempts: int
    sessions: int
    publishes: int


async def prune_all(
    storage: Storage,
    before: int,
    *,
    batch: int,
    progress: OnProgress = no_progress,
    pause: float = PRUNE_PAUSE,
) -> Pruned:
    """Delete every attempt logged before ``before``, batch by batch, then
    the sessions that ended before it and the publishes logged before it.
    Between batches it pauses as long as the batch took, and at least
    ``pause`` seconds (see :data:`PRUNE_PAUSE`)."""
    total = await storage.count_attempts_before(before)
    deleted = 0
    while True:
        started = time.monotonic()
        went = await storage.prune_attempts(before, batch)
        if not went:
            # Session history is kept as long as the attempts that started
            # it, and so is the publish log (SPEC §6).
            sessions = await _prune_until_empty(storage.prune_sessions, before, batch, pause)
            publishes = await _prune_until_empty(storage.prune_publishes, before, batch, pause)
            return Pruned(deleted, sessions, publishes)
        deleted += went
        # Checks keep logging meanwhile, but never before ``before``; another
        # pruner may take some too, so the bar stops at its end.
        progress("prune", min(deleted, total), total)
        if pause > 0:
            await asyncio.sleep(max(pause, time.monotonic() - started))


async def _prune_until_empty(
    prune: Callable[[int, int], Awaitable[int]], before: int, batch: int, pause: float
) -> int:
    deleted = 0
    while went := await prune(before, batch):
        deleted += went
        if pause > 0:
            await asyncio.sleep(pause)
    return deleted


class Pruner:
    """``usher serve``'s background retention: keeps the last ``older_than``
    seconds of attempts, one small batch at a time.

    Pruning is idempotent, so every node of a PostgreSQL cluster may run it:
    each batch skips rows another node's batch holds, and a node that finds
    nothing old waits for its next pass.
    """

    def __init__(
        self,
        storage: Storage,
        older_than: int,
        *,
        clock: Callable[[], float] = time.time,
        batch: int = BACKGROUND_BATCH,
        every: float = BACKGROUND_EVERY,
        pause: float = BACKGROUND_PAUSE,
        retry: float = BACKGROUND_RETRY,
    ) -> None:
        self.storage = storage
        self.older_than = older_than
        self.clock = clock
        self.batch = batch
        self.every = every
        self.pause = pause
        self.retry = retry
        #: Attempts, ended sessions and publish log rows deleted since start
        #: (for tests and logs).
        self.deleted = 0
        self.sessions_deleted = 0
        self.publishes_deleted = 0

    async def run(self) -> None:
        """Prune until cancelled."""
        while True:
            try:
                await self.one_pass()
            except StorageError as exc:
                # Busy (code 1000) or unreachable: checks come first; try later.
                log.warning("Pruning old attempts paused: %s", exc)
                await asyncio.sleep(self.retry)
                continue
            except Exception:
                # A bug must not end retention for the rest of the process's life.
                log.exception("Pruning old attempts failed; trying again later.")
                await asyncio.sleep(self.retry)
                continue
            await asyncio.sleep(self.every)

    async def one_pass(self) -> int:
        """Delete, batch by batch, what is older than the retention age now."""
        before = cutoff(self.clock(), self.older_than)
        started = time.monotonic()
        deleted = 0
        while went := await self.storage.prune_attempts(before, self.batch):
            deleted += went
            self.deleted += went
            await asyncio.sleep(self.pause)
        if deleted:
            log.info(
                "Pruned %d attempts logged before %d in %.1f s.",
                deleted,
                before,
                time.monotonic() - started,
            )
        # Session history is kept as long as the attempts that started it.
        while went := await self.storage.prune_sessions(before, self.batch):
            self.sessions_deleted += went
            await asyncio.sleep(self.pause)
        # So is the publish log (SPEC §6).
        while went := await self.storage.prune_publishes(before, self.batch):
            self.publishes_deleted += went
            await asyncio.sleep(self.pause)
        return deleted
