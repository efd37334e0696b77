"""The SQLite writer's ticket cache.

A playback check reads one ticket and usually writes it back (the use
count). Only the writer thread writes tickets, so after the first read the
writer knows each ticket's current state and need not ask SQLite again,
provided it forgets everything whenever that may stop being true:

* another connection committed (a CLI in another process, a second server on
  the same file): ``PRAGMA data_version`` changes, checked at every batch's
  ``BEGIN IMMEDIATE``, while the write lock is held;
* a writer job that may touch tickets or accounts ran (revoke, account
  disable, panel edits): :class:`~usher.storage.sqlite.engine.SQLiteEngine`
  calls :meth:`TicketCache.invalidate` after every job not marked as keeping
  the state;
* a job, a group of checks or a whole batch failed and was rolled back.

So a revocation takes effect in the very next batch, and use counts stay exact.
Only the writer thread touches this object.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection
from typing import Final

from usher.storage.sqlite.engine import BATCH_MAX
from usher.tickets.model import Ticket

#: Tickets kept at most; the oldest entry goes first. About 600 bytes each.
TICKETS_MAX: Final = 20_000
#: App-prefix owners (for attempts on unknown keys) kept at most.
OWNERS_MAX: Final = 4_096


class TicketCache:
    """Ticket key → (row id, ticket as committed or about to be)."""

    def __init__(self, limit: int = TICKETS_MAX) -> None:
        # A group of checks loads its tickets and then reads them back; the
        # cache must hold a whole writer batch or it would evict some first.
        if limit < 2 * BATCH_MAX:
            raise ValueError(f"The ticket cache must hold at least {2 * BATCH_MAX} tickets.")
        self._limit = limit
        self._tickets: dict[str, tuple[int, Ticket]] = {}
        self._owners: dict[str, int | None] = {}
        self._data_version: int | None = None

    def begin(self, conn: sqlite3.Connection) -> None:
        version = int(conn.execute("PRAGMA data_version").fetchone()[0])
        if version != self._data_version:
            self.invalidate()
            self._data_version = version

    def invalidate(self) -> None:
        self._tickets.clear()
        self._owners.clear()

    def get(self, key: str) -> tuple[int, Ticket] | None:
        return self._tickets.get(key)

    def put(self, key: str, row_id: int, ticket: Ticket) -> None:
        tickets = self._tickets
        if key not in tickets and len(tickets) >= self._limit:
            del tickets[next(iter(tickets))]
        tickets[key] = (row_id, ticket)

    def __contains__(self, key: str) -> bool:
        return key in self._tickets

    def keep(self, keys: Collection[str]) -> None:
        """Make the cached ones of ``keys`` the newest entries, so that
        loading the rest of a group's tickets (at most a batch, and the cache
        holds two) evicts none of the group's own. Without it, a full cache
        evicted the oldest entry while the group loaded its missing tickets;
        if that was one of the group's tickets, the group found no ticket and
        refused a valid viewer with Invalid Auth Token (the full benchmark's
        20,000 tickets did this to the first one, once a run)."""
        tickets = self._tickets
        if len(tickets) + len(keys) <= self._limit:
            return  # loading them all could evict nothing
        for key in keys:
            entry = tickets.pop(key, None)
            if entry is not None:
                tickets[key] = entry

    def owner(self, username: str) -> tuple[bool, int | None]:
        """(known, cdn) of the account named ``username``, as last looked up."""
        if username in self._owners:
            return True, self._owners[username]
        return False, None

    def put_owner(self, username: str, cdn: int | None) -> None:
        if len(self._owners) >= OWNERS_MAX:
            self._owners.clear()
        self._owners[username] = cdn
