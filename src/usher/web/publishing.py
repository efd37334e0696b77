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
3. **The publish log**: every decided publish is stored
   (``Storage.record_publish``) before it is answered, counted in
   ``usher_publishes_total`` and, when denied, written to the server log.
   The pass never reaches any of them.

The account a row belongs to is the app's owner by the ``username-`` rule,
so an operator sees in the panel the denied publishes to their apps even
when no stream user matched.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging

from usher.passwords import dummy_hash, verify_password
from usher.protocol.errors import StorageBusy
from usher.storage.base import MAX_PUBLISH_DENIALS
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
from usher.web.state import AppState

log = logging.getLogger("usher.publishing")

_OVERLOADED = "Usher is checking too many publishes at once; try again shortly."


async def judge(state: AppState, request: PublishRequest) -> PublishAttempt:
    """Decide one publish, log it, and return the logged row.

    Raises :class:`~usher.protocol.errors.StorageError` (``StorageBusy``
    when too many publishes wait for a hash) when it cannot decide or log:
    the hook then answers 503, which every server reads as a refusal.
    """
    now = state.now()
    limit = state.settings.publish_limit
    guard = state.publishes
    storage = state.storage
    denials: list[int] = []
    candidates: list[StreamUser] = []
    if guard.blocked(request.ip, now):
        verdict = PublishVerdict(False, "blocked")
    else:
        denials = await storage.publish_denials(
            request.ip, now - limit.lookback, MAX_PUBLISH_DENIALS
        )
        until = blocked_until(denials, limit)
        if until is not None and now < until:
            guard.block(request.ip, until)
            verdict = PublishVerdict(False, "blocked")
        else:
            candidates = await storage.stream_users_for(request.app, request.stream)
            verdict = await _verify(guard, candidates, request)
    attempt = PublishAttempt(
        id=0,
        cdn=await _owner(state, request.app, verdict, candidates),
        at=now,
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
    attempt = dataclasses.replace(attempt, id=await storage.record_publish(attempt))
    if not verdict.allowed and verdict.reason != "blocked":
        # This denial may be the one that starts a block.
        until = blocked_until([*denials, now], limit)
        if until is not None and now < until:
            guard.block(request.ip, until)
            log.warning(
                "Blocking publishes from %s for %d s: %d denied publishes within %d s.",
                request.ip,
                until - now,
                limit.denials,
                limit.window,
            )
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
        async with guard.hashing:
            # The decoy is made once per process, in a thread like the rest.
            decoy = await asyncio.to_thread(dummy_hash)
            return await asyncio.to_thread(
                decide_publish,
                candidates,
                request.app,
                request.stream,
                request.user,
                request.password,
                verify_password,
                decoy,
            )
    finally:
        guard.waiting -= 1


async def _owner(
    state: AppState, app: str, verdict: PublishVerdict, candidates: list[StreamUser]
) -> int | None:
    """The account the publish log row belongs to: the stream user's, else
    the one whose username prefixes the app."""
    if verdict.by is not None:
        return verdict.by.cdn
    for candidate in candidates:
        if candidate.app == app:
            return candidate.cdn
    owner = app_owner(app)
    if not owner:
        return None
    account = await state.storage.get_account_by_username(owner)
    return None if account is None else account.cdn
