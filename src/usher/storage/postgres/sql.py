"""SQL text and row mapping shared by the PostgreSQL backend's modules.

Also the parts of a playback check that :meth:`PostgresStorage.record_check`
and the session calls share, so the two cannot drift apart: lock the ticket,
apply a decision, log the attempt. They run on a connection already inside a
transaction and in pipeline mode; each queues its statement and returns
without waiting, so a check costs two round trips however many parts it
uses.
"""

from __future__ import annotations

from typing import Any, Final

import psycopg

from usher.storage.rows import (
    account_unchanged,
    applied,
    attempt_values,
    attempt_where,
    clip,
    ticket_from_row,
)
from usher.storage.schema import ATTEMPT_INSERT, TICKET_COLUMNS, TICKET_FROM
from usher.storage.sessions import latest_by_handle_sql
from usher.tickets.attribution import app_owner
from usher.tickets.model import (
    Account,
    AttemptFilter,
    CheckRequest,
    Decision,
    Ticket,
)
from usher.tickets.text import storable

Conn = psycopg.AsyncConnection[tuple[Any, ...]]
Cursor = psycopg.AsyncCursor[tuple[Any, ...]]


# The check: lock the ticket row (not its account's), then apply and log.
CHECK_LOCK: Final = f"SELECT t.id, {TICKET_COLUMNS} {TICKET_FROM} WHERE t.key = %s FOR UPDATE OF t"
CHECK_APPLY: Final = (
    "UPDATE tickets SET use_count = use_count + %s, used_at = %s, bound_ips = %s WHERE id = %s"
)
# An attempt with an unknown key belongs to the account whose username
# prefixes its app; the lookup rides along in the INSERT instead of costing
# a round trip of its own.
CHECK_LOG: Final = (
    f"INSERT INTO attempts ({ATTEMPT_INSERT})"
    " VALUES (COALESCE(%s::bigint, (SELECT cdn FROM accounts WHERE username = %s::text)),"
    " %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id"
)
# The same check for a batch (see postgres/checks.py). Rows are locked in id order,
# which every node's batches share, so two batches never deadlock.
BATCH_LOCK: Final = (
    f"SELECT t.id, {TICKET_COLUMNS} {TICKET_FROM} WHERE t.key = ANY(%s::text[])"
    " ORDER BY t.id FOR UPDATE OF t"
)
# Absolute values, not increments: the rows stay locked from BATCH_LOCK on.
BATCH_APPLY: Final = (
    "UPDATE tickets t SET use_count = v.use_count, used_at = v.used_at,"
    " bound_ips = v.bound_ips"
    " FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::text[])"
    " AS v (id, use_count, used_at, bound_ips) WHERE t.id = v.id"
)
# The ORDER BY makes the identity values follow the arrays' order, so the
# returned ids, sorted, pair up with the rows as they were passed.
BATCH_LOG: Final = (
    f"INSERT INTO attempts ({ATTEMPT_INSERT})"
    " SELECT COALESCE(v.cdn, (SELECT cdn FROM accounts WHERE username = v.username)),"
    " v.at, v.key, v.pass, v.ip, v.video, v.app, v.appinst, v.pageurl, v.refurl,"
    " v.success, v.reason, v.server_ip"
    " FROM unnest(%s::bigint[], %s::text[], %s::bigint[], %s::text[], %s::text[],"
    " %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[],"
    " %s::boolean[], %s::text[], %s::text[]) WITH ORDINALITY"
    " AS v (cdn, username, at, key, pass, ip, video, app, appinst, pageurl, refurl,"
    " success, reason, server_ip, n)"
    " ORDER BY v.n RETURNING id"
)
# A batch's starts: the latest session of each handle, and the open sessions
# of each ticket, read after BATCH_LOCK in the same pipeline.
# One index probe per handle (LIMIT 1 under each), not a sort of every
# session a returning viewer's handle ever had.
BATCH_LATEST_SESSIONS: Final = (
    "SELECT l.* FROM unnest(%s::text[]) AS h (handle)"
    f" CROSS JOIN LATERAL ({latest_by_handle_sql('h.handle')}) AS l"
)
BATCH_SESSION_HOLDERS: Final = "SELECT id, handle FROM sessions WHERE id = ANY(%s::text[])"
# Open sessions are counted by one probe of sessions_open_key under each key,
# and the statements are planned at each run (``prepare=False``), so that the
# plan follows the table's statistics once autovacuum has taken them: as a
# prepared statement, planned while the sessions table was small and its
# statistics were an empty table's, PostgreSQL kept a plan that read every
# open session through the expiry index once per ticket, and the count grew
# with them: 5, then 14, then 18 ms a batch within half a minute of starts,
# more than all the batch's other statements together. (Without statistics
# a fresh plan may read the expiry index too, until the table is analysed.)
_OPEN_UNDER = (
    "(SELECT COUNT(*) FROM sessions s WHERE s.key = {key}"
    " AND s.ended_at IS NULL AND s.expires_at > %s)"
)
#: ``Storage.count_viewers``: (now, keys) -> (key, open sessions), none for 0.
VIEWERS: Final = (
    f"SELECT key, n FROM (SELECT k.key, {_OPEN_UNDER.format(key='k.key')} AS n"
    " FROM unnest(%s::text[]) AS k (key)) AS c WHERE n > 0"
)
#: A batch's starts, (now, keys): only the tickets with a viewer limit, the
#: rule of usher.tickets.sessions.viewer_limited, asked of the locked rows
#: themselves, since the statement is sent before they are read.
BATCH_VIEWERS: Final = (
    f"SELECT t.key, {_OPEN_UNDER.format(key='t.key')}"
    " FROM tickets t WHERE t.key = ANY(%s::text[]) AND t.max_viewers > 0"
)
#: ``Storage.ticket_ids``: one probe of the unique key index per key.
TICKET_IDS: Final = "SELECT key, id FROM tickets WHERE key = ANY(%s::text[]) AND cdn = %s"


def claim_sql(
    account: Account, digest: bytes, expires_at: int, now: int
) -> tuple[str, list[object]]:
    """The replay claim (see ``Storage.claim_signature``) and its parameters:
    whether the account's row still authenticates as ``account`` did, and
    whether the signature was spent, in one statement, so that the row is
    read in the claim's own snapshot. Inserted (new) or updated (the old
    claim had expired): spent. A live claim makes the WHERE false, so no row
    comes back; so does a changed account, which inserts nothing."""
    unchanged, params = account_unchanged(account, "%s")
    return (
        f"WITH account AS (SELECT 1 FROM accounts WHERE {unchanged}),"
        " spent AS (INSERT INTO used_signatures AS u (digest, expires_at)"
        " SELECT %s, %s FROM account"
        " ON CONFLICT (digest) DO UPDATE SET expires_at = EXCLUDED.expires_at"
        " WHERE u.expires_at < %s RETURNING 1)"
        " SELECT EXISTS (SELECT 1 FROM account), EXISTS (SELECT 1 FROM spent)",
        [*params, digest, expires_at, now],
    )


async def lock_ticket(conn: Conn, key: str) -> tuple[int, Ticket] | None:
    """Lock the ticket with this key (any account) until the transaction ends;
    its row id and state, or ``None`` for an unknown key."""
    row = await (await conn.execute(CHECK_LOCK, (key,))).fetchone()
    return None if row is None else (int(row[0]), ticket_from_row(row[1:]))


async def apply_decision(
    conn: Conn, row_id: int, ticket: Ticket, decision: Decision, now: int
) -> Ticket:
    """Queue what an allowed decision changes; the ticket as it will be."""
    after = applied(ticket, decision, now)
    if after is not ticket:
        count = after.use_count - ticket.use_count
        await conn.execute(CHECK_APPLY, (count, after.used_at, "|".join(after.bound_ips), row_id))
    return after


def attempt_row(
    request: CheckRequest, ticket: Ticket | None, decision: Decision, now: int
) -> tuple[object, ...]:
    """What CHECK_LOG takes, and one row of BATCH_LOG's arrays."""
    return (
        None if ticket is None else ticket.cdn,
        app_owner(request.app) if ticket is None else None,
        now,
        *attempt_values(request, decision, clip),
    )


async def log_attempt(
    conn: Conn, request: CheckRequest, ticket: Ticket | None, decision: Decision, now: int
) -> Cursor:
    """Queue the attempt's INSERT; fetch its id from the cursor after commit."""
    return await conn.execute(CHECK_LOG, attempt_row(request, ticket, decision, now))


async def inserted_id(cursor: Cursor | None) -> int:
    """The id an ``INSERT … RETURNING id`` gave, 0 without one."""
    if cursor is None:
        return 0
    row = await cursor.fetchone()
    return int(row[0]) if row else 0


#: The apps an account logged a video under, from the rollup (merged rows
#: and pending deltas, in the statement's snapshot).
_APPS_OF_VIDEO: Final = (
    "app IN (SELECT app FROM (SELECT app, n FROM attempt_counts"
    " WHERE cdn = %s AND grain = 3 AND video = %s UNION ALL SELECT app, n"
    " FROM attempt_count_deltas WHERE cdn = %s AND grain = 3 AND video = %s) AS v"
    " GROUP BY app HAVING sum(n) > 0)"
)


def attempts_where(
    cdn: int, where: AttemptFilter, *, apps_of_video: bool = True
) -> tuple[str, list[object]]:
    """:func:`~usher.storage.rows.attempt_where` for PostgreSQL, plus, for a
    video without an app, the apps that video was logged under: PostgreSQL
    15 cannot skip the app column of ``(cdn, app, video, at)``, and without
    them a week's range with a video filter read the whole week (1.3 s at
    10 M attempts). ``apps_of_video=False`` leaves them out, for a list that
    walks the table in id order instead (the same rows either way)."""
    sql, params = attempt_where(cdn, where, "%s")
    if apps_of_video and where.video is not None and where.app is None:
        video = storable(where.video)
        sql += " AND " + _APPS_OF_VIDEO
        params += [cdn, video, cdn, video]
    return sql, params


#: The time of the attempt a cursor names, or of the nearest one on its side
#: when it is gone (pruned, or an id past the log's end): rows of (at, id)
#: below/above ``(this, cursor)`` are then exactly those past the cursor.
_CURSOR_AT: Final = {
    "<": "COALESCE((SELECT at FROM attempts WHERE id = %s),"
    " (SELECT at FROM attempts WHERE id < %s ORDER BY id DESC LIMIT 1))",
    ">": "COALESCE((SELECT at FROM attempts WHERE id = %s),"
    " (SELECT at FROM attempts WHERE id > %s ORDER BY id LIMIT 1))",
}


def log_order(
    *, newest_first: bool, before: int | None, after: int | None
) -> tuple[str, str, list[object]]:
    """The ``AND …`` of a cursor, the ``ORDER BY`` of a list, and the
    cursor's parameters: attempts are listed in time order, and attempts of
    the same second by id (so a node whose clock runs behind has its
    attempts listed by their times, among the other nodes').

    Time order, not id order, because every index on attempts ends in
    ``at`` (``attempts_cdn_at`` holds success, app and video after it): a
    list's first page is read from the end of its value's index, testing
    the other filters on index entries. Ordered by id, PostgreSQL walked the
    primary key instead and fetched every newer row from the table to test
    it: 0.4 to 0.6 s at 10 M attempts when the newest 130,000 were another
    app's allowed starts. A cursor names an attempt by id; the page goes on
    from that attempt's (at, id)."""
    order = "at DESC, id DESC" if newest_first else "at, id"
    for side, bound in (("<", before), (">", after)):
        if bound is not None:
            # A row comparison PostgreSQL turns into ``at <= …`` (``>=``)
            # on the index, and tests in full on the entries it reads.
            return f" AND (at, id) {side} ({_CURSOR_AT[side]}, %s)", order, [bound] * 3
    return "", order, []
