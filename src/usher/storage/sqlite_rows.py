"""Row shapes and SQL fragments shared by the SQLite storage modules."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from usher.storage.base import MAX_ATTEMPT_FIELD
from usher.tickets.model import Account, Attempt, AttemptFilter, Page, PlaybackSession, Ticket

TICKET_COLUMNS: Final = (
    "t.key, t.cdn, t.pass, t.ip, t.video, t.app, t.uses, t.use_count, t.active, "
    "t.created_at, t.expire_at, t.used_at, t.bound_ips, a.disabled"
)
TICKET_FROM: Final = "FROM tickets t JOIN accounts a ON a.cdn = t.cdn"
ATTEMPT_COLUMNS: Final = (
    "id, cdn, at, key, pass, ip, video, app, appinst, pageurl, refurl, success, reason, server_ip"
)
ACCOUNT_COLUMNS: Final = "cdn, username, api_key, secret, disabled, created_at"
SESSION_INSERT: Final = "id, key, cdn, ip, app, video, created_at, expires_at"
SESSION_COLUMNS: Final = "s.id, s.key, s.cdn, s.ip, s.app, s.video, s.created_at, s.expires_at"
SESSION_WIDTH: Final = 8


def ticket_of(row: tuple[Any, ...]) -> Ticket:
    return Ticket(
        key=row[0],
        cdn=row[1],
        password=row[2],
        ip=row[3],
        video=row[4],
        app=row[5],
        uses=row[6],
        use_count=row[7],
        active=bool(row[8]),
        created_at=row[9],
        expire_at=row[10],
        used_at=row[11],
        bound_ips=tuple(row[12].split("|")) if row[12] else (),
        account_disabled=bool(row[13]),
    )


def attempt_of(row: tuple[Any, ...]) -> Attempt:
    return Attempt(
        id=row[0],
        cdn=row[1],
        at=row[2],
        key=row[3],
        password=row[4],
        ip=row[5],
        video=row[6],
        app=row[7],
        appinst=row[8],
        pageurl=row[9],
        refurl=row[10],
        success=bool(row[11]),
        reason=row[12],
        server_ip=row[13],
    )


def account_of(row: tuple[Any, ...]) -> Account:
    return Account(
        cdn=row[0],
        username=row[1],
        api_key=row[2],
        secret=row[3],
        disabled=bool(row[4]),
        created_at=row[5],
    )


def where_clause(pairs: Iterable[tuple[str, object]]) -> tuple[str, list[object]]:
    """``AND``-join ``column = ?`` for every value that is not ``None``."""
    clauses: list[str] = []
    params: list[object] = []
    for clause, value in pairs:
        if value is not None:
            clauses.append(clause)
            params.append(value)
    return " AND ".join(clauses), params


def attempt_where(cdn: int, where: AttemptFilter) -> tuple[str, list[object]]:
    sql, params = where_clause(
        [
            ("cdn = ?", cdn),
            ("key = ?", where.key),
            ("pass = ?", where.password),
            ("app = ?", where.app),
            ("video = ?", where.video),
            ("ip = ?", where.ip),
            ("success = ?", None if where.success is None else int(where.success)),
            ("at >= ?", where.start),
            ("at <= ?", where.end),
        ]
    )
    return sql, params


def page_sql(page: Page) -> str:
    # Both values are validated ints, so inlining them is safe and keeps the
    # statement cache keyed on shape only.
    limit = -1 if page.limit is None else int(page.limit)
    return f" LIMIT {limit} OFFSET {int(page.seek)}"


def clip(value: str) -> str:
    return storable(value if len(value) <= MAX_ATTEMPT_FIELD else value[:MAX_ATTEMPT_FIELD])


def storable(value: str) -> str:
    """Caller text SQLite can store: lone surrogates (from JSON ``\\ud800``
    escapes) cannot be encoded as UTF-8 and would fail the whole check."""
    if value.isascii():
        return value
    return value.encode("utf-8", "replace").decode("utf-8")


def session_of(row: tuple[Any, ...]) -> PlaybackSession:
    return PlaybackSession(*row)
