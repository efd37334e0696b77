"""Playback checks inside the SQLite writer's transaction.

Called only from writer jobs, so the ticket read, the decision, its effects
and the attempt row are one atomic, serialised step.

:class:`CheckGroup` runs a whole run of queued checks at once: the decisions
one after another in Python (each sees the ticket as the previous one left
it, through the :class:`~usher.storage.sqlite.cache.TicketCache`), then one
``UPDATE`` per ticket the group changed and multi-row ``INSERT`` statements for the
attempts. That is what lets one writer thread keep up: the per-check path
costs several SQLite statements, and each statement hands the GIL back and
forth with the event loop.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from typing import Final, NamedTuple

from usher.storage.base import Decider
from usher.storage.rows import applied, attempt_values, clip, placeholders, ticket_from_row
from usher.storage.schema import ATTEMPT_INSERT, ATTEMPT_INSERT_COLUMNS, TICKET_COLUMNS, TICKET_FROM
from usher.storage.sessions import (
    holders_sql,
    latest_by_handle_sql,
    session_from_row,
    session_values,
    upsert_sql,
    viewers_sql,
)
from usher.storage.sqlite.cache import TicketCache
from usher.storage.sqlite.sql import OPEN_BY_KEY
from usher.tickets.attribution import app_owner
from usher.tickets.model import (
    CheckOutcome,
    CheckRequest,
    Decision,
    PlaybackSession,
    SessionStart,
    Ticket,
)
from usher.tickets.sessions import SessionBook, named_ids, viewer_limited
from usher.tickets.text import storable

_ATTEMPT_INSERT: Final = f"INSERT INTO attempts ({ATTEMPT_INSERT}) VALUES "
_ATTEMPT_ROW: Final = placeholders(len(ATTEMPT_INSERT_COLUMNS), "?")
#: Rows per multi-row statement at most. Each statement hands the GIL back
#: and forth once, so a run of checks is split into powers of two (a 28-check
#: group is three statements, and there are only ten statement shapes for the
#: statement cache); 512 rows x 13 values stays far below SQLite's limit of
#: 32,766 bound values.
_CHUNK_MAX: Final = 512
_LATEST: Final = latest_by_handle_sql("?")


class CheckItem(NamedTuple):
    """One queued check: what :meth:`SQLiteStorage.record_check` was given."""

    request: CheckRequest
    decide: Decider
    now: int
    log: bool
    session: SessionStart | None = None


def _chunks(count: int) -> Iterator[tuple[int, int]]:
    """(start, size) slices covering ``count`` rows, sizes powers of two."""
    start = 0
    size = _CHUNK_MAX
    while size:
        while count - start >= size:
            yield start, size
            start += size
        size //= 2


def _store_sessions(conn: sqlite3.Connection, sessions: list[PlaybackSession]) -> None:
    """The sessions a group opened or changed, a few statements for all of
    them (one per row cost the writer twice the attempts' own INSERT)."""
    for start, size in _chunks(len(sessions)):
        values = [value for s in sessions[start : start + size] for value in session_values(s)]
        stored = conn.execute(upsert_sql("?", size), values).fetchall()
        if len(stored) != size:
            # The group read the sessions in this very transaction: nothing
            # can have changed them, so this is a defect, not a race.
            raise sqlite3.IntegrityError("A session row was not written as the group decided.")


def load_tickets(conn: sqlite3.Connection, cache: TicketCache, keys: Sequence[str]) -> None:
    """Read the tickets of ``keys`` (storable) that are not cached into the
    cache; afterwards every one of ``keys`` that exists is cached."""
    wanted = list(dict.fromkeys(keys))
    cache.keep(wanted)
    missing = [key for key in wanted if key not in cache]
    for start, size in _chunks(len(missing)):
        marks = ", ".join("?" * size)
        rows = conn.execute(
            f"SELECT t.id, {TICKET_COLUMNS} {TICKET_FROM} WHERE t.key IN ({marks})",
            missing[start : start + size],
        ).fetchall()
        for row in rows:
            cache.put(row[1], row[0], ticket_from_row(row[1:]))


def _store_tickets(conn: sqlite3.Connection, spent: dict[int, tuple[Ticket, Ticket]]) -> None:
    """The tickets a group changed, a statement per chunk: playback starts
    over many tickets change one row each, and a statement per row cost the
    writer a GIL handoff each."""
    changes = [
        (row_id, after.use_count - before.use_count, after.used_at, "|".join(after.bound_ips))
        for row_id, (before, after) in spent.items()
    ]
    for start, size in _chunks(len(changes)):
        conn.execute(
            "UPDATE tickets SET use_count = tickets.use_count + v.column2, used_at = v.column3,"
            " bound_ips = v.column4 FROM (VALUES " + ", ".join(["(?, ?, ?, ?)"] * size) + ") AS v"
            " WHERE tickets.id = v.column1",
            [value for change in changes[start : start + size] for value in change],
        )


def apply_check(
    conn: sqlite3.Connection,
    cache: TicketCache,
    request: CheckRequest,
    decide: Decider,
    now: int,
    *,
    log: bool,
    session: SessionStart | None = None,
) -> tuple[CheckOutcome, Ticket | None]:
    """One playback check inside the writer's transaction: a group of one.

    Returns the outcome (whose ``ticket`` is the state ``decide`` saw, as
    ``record_check`` promises) and the ticket as it is after the check.
    """
    item = CheckItem(request, decide, now, log, session)
    (outcome,) = CheckGroup(cache).run_group(conn, [item])
    entry = cache.get(storable(request.key))
    return outcome, None if entry is None else entry[1]


class CheckGroup:
    """Runs consecutive queued checks as one step of the writer (see the
    module docstring); a :class:`~usher.storage.sqlite.engine.JobGroup`."""

    def __init__(self, cache: TicketCache) -> None:
        self._cache = cache

    def run_group(self, conn: sqlite3.Connection, items: list[CheckItem]) -> list[CheckOutcome]:
        cache = self._cache
        keys = [storable(item.request.key) for item in items]
        load_tickets(conn, cache, keys)
        book = self._session_book(conn, items, keys)
        # Row id -> (ticket before this group, ticket after it).
        spent: dict[int, tuple[Ticket, Ticket]] = {}
        outcomes: list[CheckOutcome] = []
        logged: list[tuple[CheckOutcome, tuple[object, ...]]] = []
        for item, key in zip(items, keys, strict=True):
            request, now = item.request, item.now
            entry = cache.get(key)
            ticket = None if entry is None else entry[1]
            if item.session is None or book is None:
                outcome = CheckOutcome(item.decide(ticket, request, now), 0, ticket)
                log = item.log
            else:
                checked = book.check(ticket, request, item.decide, now, item.session)
                outcome = CheckOutcome(
                    checked.decision, 0, ticket, checked.session, checked.resumed
                )
                log = item.log and checked.log
            decision = outcome.decision
            if entry is not None:
                row_id, before = entry
                after = applied(before, decision, now)
                if after is not before:
                    spent[row_id] = (spent[row_id][0] if row_id in spent else before, after)
                    cache.put(key, row_id, after)
            outcomes.append(outcome)
            if log:
                cdn = ticket.cdn if ticket is not None else cdn_for_app(conn, cache, request.app)
                row = (cdn, now, *attempt_values(request, decision, clip))
                logged.append((outcome, row))
        _store_tickets(conn, spent)
        if book is not None and book.written:
            _store_sessions(conn, list(book.written.values()))
        self._insert_attempts(conn, logged)
        return outcomes

    def _session_book(
        self, conn: sqlite3.Connection, items: list[CheckItem], keys: list[str]
    ) -> SessionBook | None:
        """The sessions this group's starts meet (none without starts)."""
        starts = [item.session for item in items if item.session is not None]
        if not starts:
            return None
        handles = {storable(start.handle) for start in starts if not start.unseen}
        latest = []
        for handle in handles:
            row = conn.execute(_LATEST, (handle,)).fetchone()
            if row is not None:
                latest.append(session_from_row(row))
        entries = [
            self._cache.get(key) for key, item in zip(keys, items, strict=True) if item.session
        ]
        limited = viewer_limited(entry[1] for entry in entries if entry is not None)
        viewers: dict[str, int] = {}
        if limited:
            now = min(item.now for item in items)
            for start, size in _chunks(len(limited)):
                rows = conn.execute(
                    viewers_sql(size, "?", OPEN_BY_KEY), [*limited[start : start + size], now]
                ).fetchall()
                viewers.update((str(key), int(count)) for key, count in rows)
        holders: dict[str, str] = {}
        ids = named_ids(starts)
        for start, size in _chunks(len(ids)):
            rows = conn.execute(holders_sql(size, "?"), ids[start : start + size]).fetchall()
            holders.update((str(i), str(h)) for i, h in rows)
        return SessionBook(latest, viewers, holders)

    @staticmethod
    def _insert_attempts(
        conn: sqlite3.Connection, logged: list[tuple[CheckOutcome, tuple[object, ...]]]
    ) -> None:
        for start, size in _chunks(len(logged)):
            chunk = logged[start : start + size]
            cursor = conn.execute(
                _ATTEMPT_INSERT + ", ".join([_ATTEMPT_ROW] * size),
                [value for _, row in chunk for value in row],
            )
            # One statement inserts its rows in order with consecutive ids
            # (INTEGER PRIMARY KEY, the write lock held); lastrowid is the
            # last of them (the count trigger's own inserts do not change it).
            last = cursor.lastrowid
            if last is None or cursor.rowcount != size:
                raise sqlite3.DatabaseError("The attempt rows were not all inserted.")
            for offset, (outcome, _) in enumerate(chunk):
                outcome.attempt_id = last - size + 1 + offset


def log_attempt(
    conn: sqlite3.Connection,
    cache: TicketCache,
    request: CheckRequest,
    decision: Decision,
    ticket: Ticket | None,
    now: int,
) -> int:
    cdn = ticket.cdn if ticket is not None else cdn_for_app(conn, cache, request.app)
    cursor = conn.execute(
        _ATTEMPT_INSERT + _ATTEMPT_ROW, (cdn, now, *attempt_values(request, decision, clip))
    )
    return cursor.lastrowid or 0


def cdn_for_app(conn: sqlite3.Connection, cache: TicketCache, app: str) -> int | None:
    """The cdn of the account :func:`~usher.tickets.attribution.app_owner` names."""
    username = app_owner(app)
    if username is None:
        return None
    known, cdn = cache.owner(username)
    if not known:
        row = conn.execute("SELECT cdn FROM accounts WHERE username = ?", (username,)).fetchone()
        cdn = None if row is None else int(row[0])
        cache.put_owner(username, cdn)
    return cdn
