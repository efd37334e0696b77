"""A small in-process cache of recent answers, shared by concurrent callers.

The overview polls its charts every few seconds from every open tab; with
this cache, N tabs on one (account, range) cost about one computation per
interval instead of N. Callers that arrive while a computation runs await
that same computation ("single flight") instead of starting their own.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(slots=True)
class _Entry(Generic[V]):
    made: float
    task: asyncio.Future[V]


class RecentAnswers(Generic[K, V]):
    """At most ``size`` answers, each reused for ``ttl`` seconds of ``clock``
    (least recently used dropped first), or for ``ttl_of(answer)`` seconds
    when given. A computation that fails is not kept: the next caller starts
    a new one."""

    def __init__(
        self,
        size: int,
        ttl: float,
        clock: Callable[[], float],
        ttl_of: Callable[[V], float] | None = None,
    ) -> None:
        self.size = size
        self.ttl = ttl
        self._ttl_of = ttl_of
        self._clock = clock
        self._entries: OrderedDict[K, _Entry[V]] = OrderedDict()

    def _fresh(self, entry: _Entry[V], now: float) -> bool:
        ttl = self.ttl
        task = entry.task
        answered = task.done() and not task.cancelled() and task.exception() is None
        if self._ttl_of is not None and answered:
            ttl = self._ttl_of(task.result())
        # A clock stepped backwards makes an entry stale, not eternal.
        return 0 <= now - entry.made < ttl

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: K, compute: Callable[[], Awaitable[V]]) -> V:
        now = self._clock()
        entry = self._entries.get(key)
        if entry is None or not self._fresh(entry, now):
            entry = _Entry(now, asyncio.ensure_future(compute()))
            entry.task.add_done_callback(lambda done: self._forget_failed(key, done))
            self._entries[key] = entry
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        self._entries.move_to_end(key)
        # Shielded: a caller that goes away does not cancel the work the
        # others are waiting for.
        return await asyncio.shield(entry.task)

    def _forget_failed(self, key: K, done: asyncio.Future[V]) -> None:
        if done.cancelled() or done.exception() is not None:
            entry = self._entries.get(key)
            if entry is not None and entry.task is done:
                del self._entries[key]
