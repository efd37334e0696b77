"""The SQL of live sessions, written once for both backends.

Which sessions are open, how a handle's latest session is found, what a
sweep or a kick changes: every statement is built here with the backend's
placeholder (``?`` or ``%s``), so the two backends cannot disagree on a
rule. The rules themselves are :mod:`usher.tickets.sessions`; the backends
run these statements inside their own transactions.

"Open" is ``ended_at IS NULL AND expires_at > now``: a session past its
expiry has ended ``idle`` even before a sweep writes that down, so no read
depends on when the sweep ran.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

from usher.storage.base import (
    MAX_COUNT_CAP,
    SessionCursor,
    SessionFilter,
    SessionsToEnd,
    check_cap,
)
from usher.storage.rows import clauses, clip, placeholders
from usher.storage.schema import SESSION_COLUMNS, SESSION_INSERT, SESSION_WIDTH, TICKET_COLUMNS
from usher.tickets.model import EndReason, Page, PlaybackSession
from usher.tickets.text import storable

_IDLE = EndReason.IDLE.value


def session_from_row(row: tuple[Any, ...]) -> PlaybackSession:
    """A session from :data:`~usher.storage.schema.SESSION_COLUMNS`."""
    return PlaybackSession(*row)


def session_values(session: PlaybackSession) -> tuple[object, ...]:
    """A session's row in :data:`~usher.storage.schema.SESSION_INSERT` order,
    its caller text cut and made storable as attempts keep it."""
    return (
        storable(session.id),
        storable(session.handle),
        session.cdn,
        clip(session.key),
        clip(session.ip),
        clip(session.app),
        clip(session.video),
        session.protocol,
        session.started_at,
        session.last_seen_at,
        session.expires_at,
        session.ended_at,
        session.end_reason,
        None if session.alias is None else storable(session.alias),
    )


def latest_by_handle_sql(mark: str) -> str:
    """The latest session under one handle (index ``sessions_handle``)."""
    return (
        f"SELECT {SESSION_COLUMNS} FROM sessions s WHERE s.handle = {mark}"
        " ORDER BY s.started_at DESC, s.id DESC LIMIT 1"
    )


def lookup_sql(mark: str, *, by_handle: bool) -> str:
    """A session (by id, or a handle's latest) and its ticket, in one statement."""
    where = (
        f"s.id = (SELECT id FROM sessions WHERE handle = {mark}"
        " ORDER BY started_at DESC, id DESC LIMIT 1)"
        if by_handle
        else f"s.id = {mark}"
    )
    return (
        f"SELECT {SESSION_COLUMNS}, {TICKET_COLUMNS} FROM sessions s"
        " LEFT JOIN tickets t ON t.key = s.key LEFT JOIN accounts a ON a.cdn = t.cdn"
        f" WHERE {where}"
    )


#: The one table, as each statement names it: a backend may add an index
#: hint (SQLite without statistics would read a ticket's whole history
#: through ``(key, started_at)`` instead of its open sessions).
SESSIONS = "sessions"


def viewers_sql(keys: int, mark: str, table: str = SESSIONS) -> str:
    """Open sessions per key for ``keys`` keys, then ``now`` (index
    ``sessions_open_key``). SQLite's; PostgreSQL probes the index under each
    key instead (``VIEWERS`` and ``BATCH_VIEWERS`` in postgres/sql.py)."""
    marks = ", ".join([mark] * keys)
    return (
        f"SELECT key, COUNT(*) FROM {table} WHERE key IN ({marks})"
        f" AND ended_at IS NULL AND expires_at > {mark} GROUP BY key"
    )


@functools.cache
def upsert_sql(mark: str, rows: int = 1) -> str:
    """Store ``rows`` session rows whole, new or changed (by id; one
    statement, as a batch's attempts are)."""
    assignments = ", ".join(
        f"{column} = EXCLUDED.{column}" for column in SESSION_INSERT.split(", ")[1:]
    )
    values = ", ".join([placeholders(SESSION_WIDTH, mark)] * rows)
    # Only the same session is updated (same handle, ticket and start), and an
    # ended one is never opened again: a kick or end notice that committed
    # after the batch read the row stands. A row not written returns no id,
    # and the backend runs the start again against the current state.
    return (
        f"INSERT INTO sessions ({SESSION_INSERT}) VALUES {values}"
        f" ON CONFLICT (id) DO UPDATE SET {assignments}"
        " WHERE sessions.handle = EXCLUDED.handle AND sessions.key = EXCLUDED.key"
        " AND sessions.started_at = EXCLUDED.started_at"
        " AND (sessions.ended_at IS NULL OR EXCLUDED.ended_at IS NOT NULL)"
        " RETURNING id"
    )


def holders_sql(ids: int, mark: str) -> str:
    """The handle of each of ``ids`` session ids that exists."""
    return f"SELECT id, handle FROM sessions WHERE id IN ({', '.join([mark] * ids)})"


def renew_sql(mark: str) -> str:
    """A sign of life: ``now``, ``expires_at``, ``id``, ``now``."""
    return (
        f"UPDATE sessions SET last_seen_at = {mark},"
        f" expires_at = CASE WHEN expires_at < {mark} THEN {mark} ELSE expires_at END"
        f" WHERE id = {mark} AND ended_at IS NULL AND expires_at > {mark}"
    )


def renew_params(session_id: str, now: int, expires_at: int) -> list[object]:
    return [now, expires_at, expires_at, storable(session_id), now]


def sweep_sql(mark: str) -> str:
    """End ``idle`` up to a number of sessions past their expiry: ``now``,
    ``limit``, ``now``."""
    return (
        f"UPDATE sessions SET ended_at = expires_at, end_reason = '{_IDLE}'"
        " WHERE id IN (SELECT id FROM sessions WHERE ended_at IS NULL"
        f" AND expires_at <= {mark} LIMIT {mark})"
        # Again, for a row another node renewed since the subquery read it.
        f" AND ended_at IS NULL AND expires_at <= {mark}"
    )


def end_sql(
    mark: str, which: SessionsToEnd, table: str = SESSIONS
) -> list[tuple[str, list[object]]]:
    """Two statements: the matching sessions already past their expiry end
    ``idle`` at it; then the open ones end at ``now`` for ``reason``,
    returning their rows. Their last parameters are ``now``, then ``now``,
    ``reason``, ``now`` (appended by :func:`end_params`)."""
    where, params = clauses(
        [("handle =", which.handle), ("cdn =", which.cdn), ("key =", which.key)],
        mark,
        clean=storable,
    )
    if which.session_id is not None:
        # An end notice may name the session by its alias (MediaMTX).
        by_id = f"(id = {mark} OR alias = {mark})"
        where = f"{where} AND {by_id}" if where else by_id
        params += [storable(which.session_id)] * 2
    idle = (
        f"UPDATE {table} SET ended_at = expires_at, end_reason = '{_IDLE}'"
        f" WHERE {where} AND ended_at IS NULL AND expires_at <= {mark}"
    )
    ending = (
        f"UPDATE {table} SET ended_at = {mark}, end_reason = {mark}"
        f" WHERE {where} AND ended_at IS NULL AND expires_at > {mark}"
        f" RETURNING {SESSION_INSERT}"
    )
    return [(idle, params), (ending, params)]


def end_params(statement: int, params: list[object], now: int, reason: EndReason) -> list[object]:
    """The parameters of :func:`end_sql`'s ``statement`` (0 or 1)."""
    return [*params, now] if statement == 0 else [now, reason.value, *params, now]


def count_open_sql(mark: str, *, by_cdn: bool, table: str = SESSIONS) -> str:
    """Sessions open at ``now`` (then ``cdn``), through ``sessions_open_expiry``."""
    tail = f" AND cdn = {mark}" if by_cdn else ""
    return f"SELECT COUNT(*) FROM {table} WHERE ended_at IS NULL AND expires_at > {mark}" + tail


#: What a backend adds after ``sessions [alias]`` for a listing filtered by
#: ``where``: nothing, or SQLite's ``INDEXED BY`` (see ``sqlite/sql.py``).
Hint = Callable[[SessionFilter], str]


def no_hint(_where: SessionFilter) -> str:
    return ""


def list_where(cdn: int, where: SessionFilter, now: int, mark: str) -> tuple[str, list[object]]:
    """The ``WHERE`` body of ``list_sessions``."""
    sql, params = clauses(
        [
            ("cdn =", cdn),
            ("key =", where.key),
            ("app =", where.app),
            ("video =", where.video),
            ("ip =", where.ip),
            ("started_at >=", where.start),
            ("started_at <=", where.end),
        ],
        mark,
        clean=storable,
    )
    if where.open is True:
        sql += f" AND ended_at IS NULL AND expires_at > {mark}"
        params.append(now)
    elif where.open is False:
        sql += f" AND (ended_at IS NOT NULL OR expires_at <= {mark})"
        params.append(now)
    return sql, params


def count_sql(
    cdn: int, where: SessionFilter, now: int, mark: str, hint: Hint = no_hint
) -> tuple[str, list[object]]:
    """``list_sessions``' count of every match. Ended sessions are counted as
    all minus the open ones: both read indexes only, where counting the
    ended ones directly reads every row of the history (3.4 s at 1 M)."""
    if where.open is not False:
        sql, params = list_where(cdn, where, now, mark)
        return f"SELECT COUNT(*) FROM sessions{hint(where)} WHERE {sql}", params
    every = dataclasses.replace(where, open=None)
    still = dataclasses.replace(where, open=True)
    all_sql, all_params = list_where(cdn, every, now, mark)
    open_sql, open_params = list_where(cdn, still, now, mark)
    return (
        f"SELECT (SELECT COUNT(*) FROM sessions{hint(every)} WHERE {all_sql})"
        f" - (SELECT COUNT(*) FROM sessions{hint(still)} WHERE {open_sql})",
        [*all_params, *open_params],
    )


def page_sql(
    cdn: int, where: SessionFilter, now: int, mark: str, page: Page, hint: Hint = no_hint
) -> tuple[str, list[object]]:
    """``list_sessions``' page: newest first, ``limit``/``seek``."""
    sql, params = list_where(cdn, where, now, mark)
    return (
        f"SELECT {SESSION_COLUMNS} FROM sessions s{hint(where)} WHERE {sql}"
        f" ORDER BY s.started_at DESC, s.id DESC LIMIT {mark} OFFSET {mark}",
        [*params, page.rows, page.seek],
    )


def browse_sql(
    cdn: int,
    where: SessionFilter,
    now: int,
    mark: str,
    *,
    rows: int,
    before: SessionCursor | None,
    after: SessionCursor | None,
    hint: Hint = no_hint,
) -> tuple[str, list[object]]:
    """``browse_sessions``: one page from a cursor, newest first (or, after
    one, oldest first), read along ``(cdn, started_at)`` or the filter's own
    index without counting anything."""
    if before is not None and after is not None:
        raise ValueError("Pass before or after, not both.")
    sql, params = list_where(cdn, where, now, mark)
    order = "ASC" if after is not None else "DESC"
    cursor = before if before is not None else after
    if cursor is not None:
        # The first bound alone is an index range; the second breaks ties
        # of one second by id, the listing's own tie order.
        ahead = ">" if after is not None else "<"
        sql += (
            f" AND started_at {ahead}= {mark} AND (started_at {ahead} {mark} OR id {ahead} {mark})"
        )
        params += [cursor[0], cursor[0], storable(cursor[1])]
    return (
        f"SELECT {SESSION_COLUMNS} FROM sessions s{hint(where)} WHERE {sql}"
        f" ORDER BY s.started_at {order}, s.id {order} LIMIT {mark}",
        [*params, rows],
    )


def count_upto_sql(
    cdn: int, where: SessionFilter, now: int, cap: int, mark: str, hint: Hint = no_hint
) -> tuple[str, list[object]]:
    """``count_sessions_upto``: at most ``cap + 1`` matching rows counted."""
    check_cap("cap", cap, MAX_COUNT_CAP)
    sql, params = list_where(cdn, where, now, mark)
    return (
        f"SELECT COUNT(*) FROM (SELECT 1 FROM sessions{hint(where)} WHERE {sql} LIMIT {mark})"
        " AS capped",
        [*params, cap + 1],
    )


def prune_sql(mark: str) -> str:
    """Delete up to ``limit`` sessions ended before ``before``: ``before``, ``limit``."""
    return (
        "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions"
        f" WHERE ended_at IS NOT NULL AND ended_at < {mark} LIMIT {mark})"
    )
