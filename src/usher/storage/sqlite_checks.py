"""A playback check inside the SQLite writer's transaction.

Called only from writer jobs, so the ticket read, the decision, its effects
and the attempt row are one atomic, serialised step.
"""

from __future__ import annotations

import dataclasses
import sqlite3

from usher.storage.base import Decider
from usher.storage.rows import attempt_values, ticket_from_row
from usher.storage.sqlite_rows import TICKET_COLUMNS, TICKET_FROM, clip, storable
from usher.tickets.model import (
    CheckOutcome,
    CheckRequest,
    Decision,
    PlaybackSession,
    SessionOutcome,
    Ticket,
)


def apply_check(
    conn: sqlite3.Connection, request: CheckRequest, decide: Decider, now: int, *, log: bool
) -> tuple[CheckOutcome, Ticket | None]:
    """One playback check inside the writer's transaction.

    Returns the outcome (whose ``ticket`` is the state ``decide`` saw, as
    ``record_check`` promises) and the ticket as it is after the check.
    """
    row = conn.execute(
        f"SELECT t.id, {TICKET_COLUMNS} {TICKET_FROM} WHERE t.key = ?",
        (storable(request.key),),
    ).fetchone()
    ticket = None if row is None else ticket_from_row(row[1:])
    decision = decide(ticket, request, now)
    after = ticket
    if ticket is not None and decision.allowed and (decision.count_use or decision.bind):
        bound = ticket.bound_ips + ((decision.bind,) if decision.bind else ())
        used_at = now if decision.count_use else ticket.used_at
        conn.execute(
            "UPDATE tickets SET use_count = use_count + ?, used_at = ?, bound_ips = ? WHERE id = ?",
            (int(decision.count_use), used_at, "|".join(bound), row[0]),
        )
        after = dataclasses.replace(
            ticket,
            use_count=ticket.use_count + int(decision.count_use),
            used_at=used_at,
            bound_ips=bound,
        )
    attempt_id = log_attempt(conn, request, decision, ticket, now) if log else 0
    return CheckOutcome(decision, attempt_id, ticket), after


def log_attempt(
    conn: sqlite3.Connection,
    request: CheckRequest,
    decision: Decision,
    ticket: Ticket | None,
    now: int,
) -> int:
    cdn = ticket.cdn if ticket is not None else cdn_for_app(conn, request.app)
    cursor = conn.execute(
        "INSERT INTO attempts (cdn, at, key, pass, ip, video, app, appinst, pageurl,"
        " refurl, success, reason, server_ip)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (cdn, now, *attempt_values(request, decision, clip)),
    )
    return cursor.lastrowid or 0


def resume_session(
    conn: sqlite3.Connection,
    session: PlaybackSession,
    request: CheckRequest,
    decide: Decider,
    now: int,
    ttl: int,
) -> SessionOutcome:
    """Re-check a request of an open session: no use counted, no slot bound."""
    recheck = dataclasses.replace(request, count_use=False)
    outcome, ticket = apply_check(conn, recheck, decide, now, log=False)
    decision = outcome.decision
    if not decision.allowed:
        attempt_id = log_attempt(conn, request, decision, outcome.ticket, now)
        return SessionOutcome(decision, attempt_id, ticket, session, True)
    expires_at = max(session.expires_at, now + ttl)
    if expires_at != session.expires_at:
        conn.execute(
            "UPDATE playback_sessions SET expires_at = ? WHERE id = ?", (expires_at, session.id)
        )
        session = dataclasses.replace(session, expires_at=expires_at)
    return SessionOutcome(decision, 0, ticket, session, True)


def cdn_for_app(conn: sqlite3.Connection, app: str) -> int | None:
    """The account whose ``username-`` prefixes ``app`` (usernames hold no ``-``)."""
    username, dash, _ = app.partition("-")
    if not dash:
        return None
    row = conn.execute("SELECT cdn FROM accounts WHERE username = ?", (username,)).fetchone()
    return None if row is None else int(row[0])
