"""What one process remembers of storage's answers about playback and
publishing.

The integrations' re-checks read sessions and tickets through this memory
(see :mod:`usher.web.playback`); it is per process, bounded, and trusted
only for :data:`FRESH_FOR` seconds. Publish checks remember the blocks of
the brute-force rule (see :mod:`usher.web.publishing`) until they end.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Final, Generic, TypeVar

from usher.tickets.model import PlaybackSession, Ticket

#: Seconds a process trusts what storage said about a session or ticket. Half
#: of the promised second, so a revoke is seen within 1 s with time to spare
#: for the revoke's own commit and the read that follows.
FRESH_FOR = 0.5
#: Most sessions (and tickets) remembered per process; the oldest go first.
MAX_REMEMBERED = 65_536

V = TypeVar("V")
SessionState = tuple[PlaybackSession, Ticket | None]


@dataclass(slots=True)
class _Entry(Generic[V]):
    value: V
    seen: float  # the cache clock's time when storage said ``value``


class Remembered(Generic[V]):
    """A bounded map of what storage said, and when (one per process)."""

    def __init__(
        self,
        *,
        fresh_for: float = FRESH_FOR,
        limit: int = MAX_REMEMBERED,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fresh_for = fresh_for
        self.limit = limit
        self.clock = clock
        self._entries: OrderedDict[str, _Entry[V]] = OrderedDict()

    def fresh(self, name: str) -> _Entry[V] | None:
        entry = self._entries.get(name)
        if entry is None or self.clock() - entry.seen >= self.fresh_for:
            return None
        return entry

    def stale(self, name: str) -> _Entry[V] | None:
        """Whatever is remembered, however old (for riding out an outage)."""
        return self._entries.get(name)

    def put(self, name: str, value: V) -> None:
        self._entries[name] = _Entry(value, self.clock())
        self._entries.move_to_end(name)
        while len(self._entries) > self.limit:
            self._entries.popitem(last=False)

    def amend(self, name: str, value: V) -> None:
        """Replace a remembered value without making it any fresher: the
        ticket inside it was read no later than before."""
        entry = self._entries.get(name)
        if entry is not None:
            entry.value = value

    def forget(self, name: str) -> None:
        self._entries.pop(name, None)

    def __len__(self) -> int:
        return len(self._entries)


@dataclass
class Playback:
    """The per-process memory of the integrations (lives in ``AppState``)."""

    sessions: Remembered[SessionState] = field(default_factory=Remembered)
    tickets: Remembered[Ticket | None] = field(default_factory=Remembered)
    #: Sessions whose renewal write is under way, so a burst of segment
    #: requests renews once.
    renewing: set[str] = field(default_factory=set)


#: scrypt verifications running at once (one per core of a small server).
HASHING_AT_ONCE: Final = 2
#: Publishes that may wait for a verification before more are turned away.
HASHING_QUEUE: Final = 64
#: Addresses whose block a process remembers (and accounts whose username it
#: remembers); the oldest go first.
MAX_PUBLISH_MEMORY: Final = 65_536


@dataclass
class _Turn:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: Publishes holding or awaiting the lock.
    holders: int = 0


@dataclass
class PublishGuard:
    """What one process keeps for publish checks (lives in ``AppState``)."""

    #: Address → the time its block ends, as last read from the publish log.
    blocks: dict[str, int] = field(default_factory=dict)
    #: Username → cdn of the accounts publish log rows were attributed to:
    #: an account's username never changes, so this is never stale.
    owners: dict[str, int] = field(default_factory=dict)
    hashing: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(HASHING_AT_ONCE))
    waiting: int = 0
    #: Address → the lock its publishes take turns on, while any is checked.
    turns: dict[str, _Turn] = field(default_factory=dict)

    @contextlib.asynccontextmanager
    async def turn(self, ip: str) -> AsyncIterator[None]:
        """Hold the address's turn: its publishes are checked one at a time.
        The lock lives only while a publish of the address holds or awaits
        it, so the map is as large as the publishes under way."""
        turn = self.turns.get(ip)
        if turn is None:
            turn = self.turns[ip] = _Turn()
        turn.holders += 1
        try:
            async with turn.lock:
                yield
        finally:
            turn.holders -= 1
            if turn.holders == 0:
                del self.turns[ip]

    def blocked(self, ip: str, now: int) -> bool:
        until = self.blocks.get(ip)
        if until is None:
            return False
        if now < until:
            return True
        del self.blocks[ip]
        return False

    def block(self, ip: str, until: int) -> None:
        _remember(self.blocks, ip, until)

    def owner_found(self, username: str, cdn: int) -> None:
        _remember(self.owners, username, cdn)


def _remember(memory: dict[str, int], name: str, value: int) -> None:
    """Keep ``name`` as the newest entry, dropping the oldest past the bound."""
    memory.pop(name, None)
    memory[name] = value
    while len(memory) > MAX_PUBLISH_MEMORY:
        del memory[next(iter(memory))]
