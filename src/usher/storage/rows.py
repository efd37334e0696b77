"""Row shapes and filter clauses that every SQL backend shares.

Both backends select tickets, attempts and accounts in the same column order
and filter attempts by the same columns; only the parameter placeholder
(``?`` or ``%s``) and what text each database can store differ, so those
two are passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any, Final

from usher.storage.base import (
    MAX_ATTEMPT_FIELD,
    AttemptColumn,
    PanelSessionFilter,
    grouped_column,
)
from usher.storage.counting import Broad, ValueFilter
from usher.tickets.model import (
    Account,
    Attempt,
    AttemptFilter,
    CheckRequest,
    Decision,
    Ticket,
    TicketFilter,
)
from usher.tickets.text import storable

Criteria = list[tuple[str, object]]


def ticket_from_row(row: tuple[Any, ...]) -> Ticket:
    """A ticket from :data:`~usher.storage.schema.TICKET_COLUMNS`: the
    ticket's columns in :class:`Ticket` field order (``schema`` checks that
    at import), then whether its account is disabled."""
    bound = tuple(row[12].split("|")) if row[12] else ()
    # Positional, and about a third faster than by keyword on this hot path;
    # mypy cannot count the slices, whose lengths the schema fixes.
    return Ticket(*row[:8], bool(row[8]), *row[9:12], bound, row[13], bool(row[14]))  # type: ignore[call-arg]


def attempt_from_row(row: tuple[Any, ...]) -> Attempt:
    """An attempt from :data:`~usher.storage.schema.ATTEMPT_COLUMNS`, which
    follow :class:`Attempt`'s fields (``schema`` checks that at import)."""
    return Attempt(*row[:11], bool(row[11]), *row[12:14])  # type: ignore[call-arg]  # as above


def account_from_row(row: tuple[Any, ...]) -> Account:
    """An account from ``cdn, username, api_key, secret, disabled, created_at``."""
    return Account(row[0], row[1], row[2], row[3], bool(row[4]), row[5])


def _text_criteria(alias: str, where: TicketFilter | AttemptFilter) -> Criteria:
    """The exact-match text filters tickets and attempts share."""
    texts = (
        ("key", where.key),
        ("pass", where.password),
        ("app", where.app),
        ("video", where.video),
        ("ip", where.ip),
    )
    return [(f"{alias}{column} =", value) for column, value in texts]


def ticket_criteria(cdn: int, where: TicketFilter) -> Criteria:
    """``(comparison, value)`` pairs for ``sevu.search`` (tickets aliased ``t``)."""
    flags = [("t.uses =", where.uses), ("t.active =", where.active)]
    return [("t.cdn =", cdn), *_text_criteria("t.", where), *flags]


def attempt_criteria(cdn: int, where: AttemptFilter) -> Criteria:
    """``(comparison, value)`` pairs for an account's attempts matching ``where``."""
    times = [("at >=", where.start), ("at <=", where.end)]
    return [
        ("cdn =", cdn),
        *_text_criteria("", where),
        ("success =", where.success),
        *times,
        ("appinst =", where.appinst),
    ]


def ticket_where(cdn: int, where: TicketFilter, mark: str) -> tuple[str, list[object]]:
    """The ``WHERE`` body for ``sevu.search`` (tickets aliased ``t``), with
    ``mark`` as the placeholder and text values made storable."""
    return clauses(ticket_criteria(cdn, where), mark, clean=storable)


def attempt_where(cdn: int, where: AttemptFilter, mark: str) -> tuple[str, list[object]]:
    """The ``WHERE`` body for an account's attempts, with ``mark`` (``?`` or
    ``%s``) as the placeholder; text values are made storable, so a filter for
    a logged value finds it."""
    return clauses(attempt_criteria(cdn, where), mark, clean=storable)


def top_values_where(
    cdn: int, where: AttemptFilter, column: AttemptColumn, limit: int, mark: str
) -> tuple[str, str, list[object]]:
    """What ``top_attempt_values`` groups by, and the ``WHERE`` body it counts."""
    return grouped_column(where, column, limit), *attempt_where(cdn, where, mark)


def panel_session_criteria(where: PanelSessionFilter) -> Criteria:
    """The criteria of ``Storage.delete_panel_sessions`` (joined with OR)."""
    return [
        ("token_hash =", where.token_hash),
        ("cdn =", where.cdn),
        ("seen_at <", where.seen_before),
        ("created_at <", where.created_before),
    ]


def clauses(
    criteria: Iterable[tuple[str, object]],
    placeholder: str,
    *,
    joiner: str = " AND ",
    clean: Callable[[str], str] | None = None,
) -> tuple[str, list[object]]:
    """Join ``comparison <placeholder>`` for every criterion whose value is
    not ``None``; ``clean`` makes text values storable for this backend, so a
    filter for a logged value finds it."""
    parts: list[str] = []
    params: list[object] = []
    for comparison, value in criteria:
        if value is not None:
            parts.append(f"{comparison} {placeholder}")
            params.append(clean(value) if clean is not None and isinstance(value, str) else value)
    return joiner.join(parts), params


def attempt_values(
    request: CheckRequest, decision: Decision, clip: Callable[[str], str]
) -> tuple[object, ...]:
    """``key, pass, ip, video, app, appinst, pageurl, refurl, success, reason,
    server_ip`` of an attempt row, each text cut and cleaned by ``clip``."""
    return (
        clip(request.key),
        clip(request.password),
        clip(request.ip),
        clip(request.video),
        clip(request.app),
        clip(request.appinst),
        clip(request.pageurl),
        clip(request.refurl),
        decision.allowed,
        decision.reason_text,
        clip(request.server_ip),
    )


def applied(ticket: Ticket, decision: Decision, now: int) -> Ticket:
    """The ticket once ``decision`` is applied; ``ticket`` itself if it
    changes nothing (a refusal, or a session re-check)."""
    if not decision.allowed or not (decision.count_use or decision.bind):
        return ticket
    # Spelled out rather than dataclasses.replace, which costs several times
    # more and runs for nearly every check.
    return Ticket(
        ticket.key,
        ticket.cdn,
        ticket.password,
        ticket.ip,
        ticket.video,
        ticket.app,
        ticket.uses,
        ticket.use_count + int(decision.count_use),
        ticket.active,
        ticket.created_at,
        ticket.expire_at,
        now if decision.count_use else ticket.used_at,
        ticket.bound_ips + ((decision.bind,) if decision.bind else ()),
        ticket.max_viewers,
        ticket.account_disabled,
        ticket.viewers,
    )


def clip(value: str) -> str:
    """Caller text as an attempt or session column keeps it: cut to
    :data:`~usher.storage.base.MAX_ATTEMPT_FIELD` characters, storable."""
    return storable(value[:MAX_ATTEMPT_FIELD])


def ticket_values(ticket: Ticket) -> tuple[object, ...]:
    """A new ticket's row in :data:`~usher.storage.schema.TICKET_INSERT` order."""
    return (
        storable(ticket.key),
        ticket.cdn,
        storable(ticket.password),
        storable(ticket.ip),
        storable(ticket.video),
        storable(ticket.app),
        ticket.uses,
        ticket.use_count,
        ticket.active,
        ticket.created_at,
        ticket.expire_at,
        ticket.used_at,
        "|".join(ticket.bound_ips),
        ticket.max_viewers,
    )


def account_unchanged(account: Account, mark: str) -> tuple[str, list[object]]:
    """The condition on ``accounts`` that holds while the account's row
    still authenticates a request as ``account`` did: the same api_key and
    secret, and not disabled (what ``claim_signature`` tests)."""
    return (
        f"cdn = {mark} AND api_key = {mark} AND secret = {mark} AND NOT disabled",
        [account.cdn, account.api_key, account.secret],
    )


def placeholders(count: int, mark: str) -> str:
    """``(?, ?, …)`` or ``(%s, %s, …)``: one row of ``count`` values."""
    return "(" + ", ".join([mark] * count) + ")"


def storable_request(request: CheckRequest) -> CheckRequest:
    """The request as the backends decide and log it: every text storable, so
    it is judged against the stored ticket as it will be logged."""
    texts = (request.key, request.password, request.app, request.video, request.ip)
    extra = (request.appinst, request.pageurl, request.refurl, request.server_ip)
    if all(storable(text) == text for text in (*texts, *extra)):
        return request
    return replace(
        request,
        key=storable(request.key),
        password=storable(request.password),
        app=storable(request.app),
        video=storable(request.video),
        ip=storable(request.ip),
        appinst=storable(request.appinst),
        pageurl=storable(request.pageurl),
        refurl=storable(request.refurl),
        server_ip=storable(request.server_ip),
    )


def matching_expression(
    f: ValueFilter, skip: str, broad: Broad, mark: str
) -> tuple[str, list[object]]:
    """A boolean expression true for an attempt that matches ``f``'s named
    columns other than ``skip``, and ``broad`` (``bounded_count``'s test)."""
    terms: list[str] = []
    params: list[object] = []
    for column, value in f.named:
        if column != skip:
            terms.append(f"{column} = {mark}")
            params.append(value)
    for column, wanted in (("app", broad.app), ("video", broad.video)):
        if wanted is not None:
            terms.append(f"{column} = {mark}")
            params.append(wanted)
    if broad.success is not None:
        terms.append(f"success = {mark}")
        params.append(broad.success)
    return " AND ".join(terms) or "1 = 1", params


#: The four grains of ``attempt_counts`` and ``filter_counts`` as a subquery
#: ``g``, and the app and video each grain keeps (the others hold '').
GRAINS: Final = "(SELECT 0 AS grain UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3) AS g"
GRAIN_APP: Final = "CASE WHEN g.grain IN (1, 3) THEN app ELSE '' END"
GRAIN_VIDEO: Final = "CASE WHEN g.grain IN (2, 3) THEN video ELSE '' END"


def filter_counts_where(filter_id: int, broad: Broad, mark: str) -> tuple[str, list[object]]:
    """The ``WHERE`` body selecting a count filter's rollup rows for
    ``broad``: at most two rows of its grain, as in ``attempt_counts``."""
    terms = f"filter = {mark} AND grain = {mark} AND app = {mark} AND video = {mark}"
    params: list[object] = [
        filter_id,
        broad.grain,
        "" if broad.app is None else broad.app,
        "" if broad.video is None else broad.video,
    ]
    if broad.success is not None:
        terms += f" AND success = {mark}"
        params.append(broad.success)
    return terms, params


def find_filters_sql(
    filters: list[ValueFilter], mark: str, *, ready_only: bool = False
) -> tuple[str, list[object]]:
    """One statement finding each of ``filters`` in ``count_filters``: rows
    of (mask, id), one primary-key probe each. With ``ready_only``
    (PostgreSQL, whose filters are filled after their row commits), only
    filters whose fill is done; SQLite fills a filter with its row."""
    one = (
        f"SELECT mask, id FROM count_filters WHERE cdn = {mark} AND mask = {mark}"
        f" AND key = {mark} AND pass = {mark} AND ip = {mark}"
    )
    if ready_only:
        one += " AND ready"
    params: list[object] = []
    for f in filters:
        params += [f.cdn, f.mask, f.key, f.password, f.ip]
    return " UNION ALL ".join([one] * len(filters)), params
