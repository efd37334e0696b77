"""Publish checks of every streaming server (SPEC §6), decided in one place.

A hook's adapter turns the server's wire format into a
:class:`~usher.tickets.publishers.PublishRequest`; :func:`judge` decides it
and logs it. In order:

1. **The brute-force rule.** An address with too many recent denials
   (``USHER_PUBLISH_MAX_DENIALS`` within ``USHER_PUBLISH_DENIAL_WINDOW``) is
   denied ``blocked`` for ``USHER_PUBLISH_BLOCK`` seconds without checking.
   The denials are read from the publish log, so a block holds on every
   node and across restarts; a process remembers a block it found so that
   a blocked address costs no read until the block ends.
2. **The stream users** of the app and stream (``Storage.stream_users_for``)
   and the pure rule :func:`~usher.tickets.publishers.decide_publish`. Its
   scrypt verifications run in worker threads, at most
   :data:`~usher.web.memory.HASHING_AT_ONCE` at a time; a publish that would queue behind
   more than :data:`~usher.web.memory.HASHING_QUEUE` others is answered "overloaded" (503),
   not left to pile up, since a hash costs tens of milliseconds of CPU.
3. **The publish log**: every decided publish is stored before it is
   answered, counted in ``usher_publishes_total`` and, when denied, written
   to the server log. The pass never reaches any of them. Rows are written
   by a :class:`PublishLogWriter`, a group commit: the publishes decided
   while one transaction commits go together in the next, so a flood of
   publishes (a blocked address hammering the server) costs the database a
   transaction at a time, not one per publish, and the playback checks
   sharing its writer do not wait behind them.

The account a row belongs to is the app's owner by the ``username-`` rule,
so an operator sees in the panel the denied publishes to their apps even
when no stream user matched.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import TYPE_CHECKING, Final

from usher.passwords import dummy_hash, verify_password
from usher.protocol.errors import StorageBusy, StorageUnavailable
from usher.storage.base import MAX_PUBLISH_BATCH, MAX_PUBLISH_DENIALS, Storage
from usher.tickets.publishers import (
    PUBLISH_REASON_TEXT,
    PublishAttempt,
    PublishRequest,
    PublishVerdict,
    StreamUser,
    app_owner,
    blocked_until,
    decide_publish,
)
from usher.web.memory import HASHING_QUEUE, PublishGuard

if TYPE_CHECKING:  # the state holds this module's writer: import for types only
    from usher.web.state import AppState

log = logging.getLogger("usher.publishing")

#: Publish log rows that may wait for the writer before more publishes are
#: turned away (503, which every server reads as a refusal).
MAX_PENDING_ROWS: Final = 10_000

_OVERLOADED = "Usher is checking too many publishes at once; try again shortly."
_NOT_WRITTEN = "The publish log could not be written; the publish was not allowed."


async def judge(state: AppState, request: PublishRequest) -> PublishAttempt:
    """Decide one publish, log it, and return the logged row.

    Raises :class:`~usher.protocol.errors.StorageError` (``StorageBusy``
    when too many publishes wait for a hash) when it cannot decide or log:
    the hook then answers 503, which every server reads as a refusal.
    """
    guard = state.publishes
    if guard.blocked(request.ip, state.now()):
        return await _logged(state, request, PublishVerdict(False, "blocked"))
    # One publish of an address at a time in a process: each reads the
    # denials logged by the ones before it, so parallel guesses cannot all
    # be checked before the first of them is counted.
    async with guard.turn(request.ip):
        return await _checked(state, request)


async def _checked(state: AppState, request: PublishRequest) -> PublishAttempt:
    now = state.now()
    limit = state.settings.publish_limit
    guard = state.publishes
    if guard.blocked(request.ip, now):
        return await _logged(state, request, PublishVerdict(False, "blocked"))
    denials = await state.storage.publish_denials(
        request.ip, now - limit.lookback, MAX_PUBLISH_DENIALS
    )
    until = blocked_until(denials, limit)
    if until is not None and now < until:
        guard.block(request.ip, until)
        return await _logged(state, request, PublishVerdict(False, "blocked"))
    candidates = await state.storage.stream_users_for(request.app, request.stream)
    verdict = await _verify(guard, candidates, request)
    attempt = await _logged(state, request, verdict)
    if not verdict.allowed:
        # This denial may be the one that starts a block.
        until = blocked_until([*denials, attempt.at], limit)
        if until is not None and attempt.at < until:
            guard.block(request.ip, until)
            log.warning(
                "Blocking publishes from %s for %d s: %d denied publishes within %d s.",
                request.ip,
                until - attempt.at,
                limit.denials,
                limit.window,
            )
    return attempt


async def _logged(
    state: AppState, request: PublishRequest, verdict: PublishVerdict
) -> PublishAttempt:
    """Log the decided publish (committed before this returns), count it,
    and write a denial that was checked to the server log."""
    attempt = PublishAttempt(
        id=0,
        cdn=await _owner(state, request.app),
        at=state.now(),
        ip=request.ip,
        app=request.app,
        stream=request.stream,
        user=request.user or None,
        allowed=verdict.allowed,
        reason=verdict.reason,
        server=request.server,
        server_ip=request.server_ip,
        stream_user_id=verdict.by.id if verdict.by else None,
    )
    attempt = dataclasses.replace(attempt, id=await state.publish_log.record(attempt))
    state.metrics.count_publish(verdict.allowed, verdict.reason, request.server)
    if not verdict.allowed and verdict.reason != "blocked":
        log.info(
            # %r: app, stream and user are the encoder's text, newlines included.
            "Denied a publish of app %r, stream %r from %s (user %r, via %s): %s.",
            request.app,
            request.stream,
            request.ip,
            request.user,
            request.server,
            PUBLISH_REASON_TEXT[verdict.reason].removeprefix("denied: "),
        )
    return attempt


async def _verify(
    guard: PublishGuard, candidates: list[StreamUser], request: PublishRequest
) -> PublishVerdict:
    if guard.waiting >= HASHING_QUEUE:
        raise StorageBusy(_OVERLOADED)
    guard.waiting += 1
    try:

        def decide() -> PublishVerdict:
            # dummy_hash is made once per process, here in the thread too.
            return decide_publish(
                candidates,
                request.app,
                request.stream,
                request.user,
                request.password,
                verify_password,
                dummy_hash(),
            )

        async with guard.hashing:
            return await asyncio.to_thread(decide)
    finally:
        guard.waiting -= 1


async def _owner(state: AppState, app: str) -> int | None:
    """The account the publish log row belongs to: the one whose username
    prefixes the app (every stream user's app has its account's prefix, so
    this is the matching stream user's account too), remembered per process."""
    owner = app_owner(app)
    if not owner:
        return None
    known = state.publishes.owners.get(owner)
    if known is not None:
        return known
    account = await state.storage.get_account_by_username(owner)
    if account is None:
        return None
    state.publishes.owner_found(owner, account.cdn)
    return account.cdn


class PublishLogWriter:
    """Writes publish log rows in groups (one per ``AppState``).

    A row is handed over with :meth:`record`, which returns its id once its
    transaction has committed. While one transaction is under way, the rows
    that arrive wait and go together in the next one (at most
    ``MAX_PUBLISH_BATCH``), so the number of transactions follows the
    database's speed, not the rate of publishes; a lone publish is written
    at once.
    """

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._pending: list[tuple[PublishAttempt, asyncio.Future[int]]] = []
        self._writing: asyncio.Task[None] | None = None

    async def record(self, attempt: PublishAttempt) -> int:
        if len(self._pending) >= MAX_PENDING_ROWS:
            raise StorageBusy(_OVERLOADED)
        logged: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        # Retrieved even when the hook's caller went away meanwhile, so a
        # failed write is not reported a second time as never retrieved.
        logged.add_done_callback(lambda done: done.cancelled() or done.exception())
        self._pending.append((attempt, logged))
        if self._writing is None:
            self._writing = asyncio.create_task(self._write())
        # Shielded: a hook whose caller went away leaves its row to be written.
        return await asyncio.shield(logged)

    async def _write(self) -> None:
        group: list[tuple[PublishAttempt, asyncio.Future[int]]] = []
        try:
            while self._pending:
                group = self._pending[:MAX_PUBLISH_BATCH]
                del self._pending[:MAX_PUBLISH_BATCH]
                try:
                    ids = await self.storage.record_publishes([row for row, _ in group])
                except Exception as exc:
                    for _, logged in group:
                        logged.set_exception(exc)
                    continue
                for (_, logged), logged_id in zip(group, ids, strict=True):
                    logged.set_result(logged_id)
        finally:
            self._writing = None
            # Cancelled (shutdown) or failed past the storage call: no
            # caller may wait forever on a row that will not be written.
            for _, logged in [*group, *self._pending]:
                if not logged.done():
                    logged.set_exception(StorageUnavailable(_NOT_WRITTEN))
            self._pending.clear()
