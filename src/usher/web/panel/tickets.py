"""Ticket pages: search, create, detail (with who is watching) and revoke.

Creating runs :func:`usher.commands.request.run` itself and searching reads
its filters through :func:`usher.commands.search.ticket_filter`, so the panel
accepts and refuses exactly what ``sevu.request`` and ``sevu.search`` do.
Every storage call is scoped to the signed-in account's cdn: a key from
another account is "not found", whatever the URL says.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from usher.commands import request as request_command
from usher.commands.base import Context
from usher.commands.search import ticket_filter
from usher.protocol.errors import ApiError, InvalidField, MissingFields
from usher.storage.base import SessionFilter
from usher.tickets.model import MAX_PAGE_ROWS, AttemptFilter, Page, Ticket
from usher.web.panel import forms
from usher.web.panel.auth import Viewer, signed_in
from usher.web.panel.bounds import COUNT_CAP
from usher.web.panel.render import PASS_MASK, PREFIX, error_page, page, path_part
from usher.web.panel.session_rows import rows_of

PAGE_SIZE = 25
#: Attempts shown on a ticket's page; the explorer pages through the rest.
RECENT_ATTEMPTS = 20
#: The "seen in attempts" addresses rank this many of the ticket's latest
#: attempts: one bounded read, whether the ticket has ten attempts or a
#: leaked key's hundreds of thousands.
ADDRESS_WINDOW = MAX_PAGE_ROWS
TOP_ADDRESSES = 10
SEARCH_FIELDS = ("key", "app", "video", "ip", "pass")
CREATE_FIELDS = ("app", "video", "pass", "ip", "uses", "max_viewers", "expire")
#: Open sessions listed on a ticket's page (with their count); Kick all
#: ends every one of them, listed or not.
OPEN_SESSIONS = 50


def status_of(ticket: Ticket, now: int) -> tuple[str, str]:
    """A label and a style class for the ticket's state, in the order the
    checks apply them."""
    if not ticket.active or ticket.account_disabled:
        return "Revoked", "bad"
    if now >= ticket.expire_at:
        return "Expired", "muted"
    if ticket.uses > 0 and ticket.use_count >= ticket.uses:
        return "Used up", "muted"
    return "Active", "good"


def play_query(ticket: Ticket, *, masked: bool = False) -> str:
    """What the player appends to the stream URL, encoded so that any pass
    (even one with ``&`` or spaces) survives the trip; ``masked``, the pass
    hidden, to show until the operator asks for it."""
    password = PASS_MASK if masked else quote(ticket.password, safe="")
    return f"?key={quote(ticket.key, safe='')}&pass={password}"


def message_of(exc: ApiError) -> str:
    text = exc.message
    return text if text.endswith((".", "!", "?")) else text + "."


async def _search(request: Request, viewer: Viewer) -> Response:
    values = forms.query_values(request)
    filters = forms.pick(values, SEARCH_FIELDS)
    number = forms.page_number(values)
    context: dict[str, object] = {
        "viewer": viewer,
        "nav": "tickets",
        "filters": filters,
        "tickets": [],
        "total": 0,
        "page": number,
        "page_size": PAGE_SIZE,
        "error": "",
        "status_of": status_of,
    }
    try:
        where = ticket_filter(filters)
    except ApiError as exc:
        context["error"] = message_of(exc)
        return page(request, "tickets.html", context, status=400)
    found, total = await viewer.state.storage.search_tickets(
        viewer.account.cdn, where, Page(limit=PAGE_SIZE, seek=(number - 1) * PAGE_SIZE)
    )
    context.update(tickets=found, total=total)
    return page(request, "tickets.html", context)


def _new_form(
    request: Request,
    viewer: Viewer,
    values: dict[str, str],
    *,
    error: str = "",
    field: str = "",
    status: int = 200,
) -> Response:
    return page(
        request,
        "ticket_new.html",
        {
            "viewer": viewer,
            "nav": "new",
            "values": values,
            "error": error,
            "error_field": field,
        },
        status=status,
    )


async def _new(request: Request, viewer: Viewer) -> Response:
    # A fresh random pass per form: each viewer should get their own.
    defaults = {
        "app": f"{viewer.account.username}-",
        "video": "",
        "pass": secrets.token_urlsafe(12),
        "ip": "auto",
        "uses": "5",
        "max_viewers": "0",
        "expire": "",
        "active": "1",
    }
    return _new_form(request, viewer, defaults)


async def _create(request: Request, viewer: Viewer) -> Response:
    values = {name: viewer.form.get(name, "").strip() for name in CREATE_FIELDS}
    # An unchecked box is absent from the form: the ticket starts inactive.
    values["active"] = "1" if viewer.form.get("active") == "1" else "0"
    fields: dict[str, object] = {**values}
    if not fields.get("expire"):
        fields.pop("expire", None)  # the command's default (one week)
    try:
        result = await request_command.run(
            Context(viewer.state.storage, viewer.account, viewer.now), fields
        )
    except ApiError as exc:
        field = ""
        if isinstance(exc, InvalidField):
            field = exc.name
        elif isinstance(exc, MissingFields) and exc.names:
            field = exc.names[0]
        return _new_form(request, viewer, values, error=message_of(exc), field=field, status=400)
    ticket = result.payload["ticket"]
    assert isinstance(ticket, dict)  # the command's payload is a ticket object
    key = str(ticket["key"])
    return RedirectResponse(f"{PREFIX}/tickets/{path_part(key)}?created=1", 303)


def not_found(request: Request, viewer: Viewer) -> Response:
    # The same page whether the key is unknown or another account's, so the
    # panel tells nobody which keys exist elsewhere.
    return error_page(
        request,
        404,
        "Ticket not found",
        "Your account has no ticket with this key. Check the key, or search your tickets.",
        viewer=viewer,
    )


async def find_ticket(request: Request, viewer: Viewer) -> Ticket | Response:
    key = str(request.path_params["key"])
    ticket = await viewer.state.storage.get_ticket(viewer.account.cdn, key)
    return not_found(request, viewer) if ticket is None else ticket


async def _detail(request: Request, viewer: Viewer) -> Response:
    found = await find_ticket(request, viewer)
    if isinstance(found, Response):
        return found
    storage = viewer.state.storage
    cdn = viewer.account.cdn
    where = AttemptFilter(key=found.key)
    # Independent reads: the storage's reader pool runs them side by side.
    # Capped counts: a leaked key's first view must not fill a count filter.
    latest, allowed, denied, (watching, viewers) = await asyncio.gather(
        storage.list_attempts(cdn, where, Page(limit=ADDRESS_WINDOW), newest_first=True),
        storage.count_attempts_upto(cdn, AttemptFilter(key=found.key, success=True), COUNT_CAP),
        storage.count_attempts_upto(cdn, AttemptFilter(key=found.key, success=False), COUNT_CAP),
        storage.list_sessions(
            cdn, SessionFilter(key=found.key, open=True), Page(limit=OPEN_SESSIONS), viewer.now
        ),
    )
    # Most seen first, ties by address, as top_attempt_values orders them.
    seen = Counter(attempt.ip for attempt in latest)
    addresses = sorted(seen.items(), key=lambda pair: (-pair[1], pair[0]))[:TOP_ADDRESSES]
    attempts = latest[:RECENT_ATTEMPTS]
    values = forms.query_values(request)
    return page(
        request,
        "ticket.html",
        {
            "viewer": viewer,
            "nav": "tickets",
            "ticket": found,
            "status": status_of(found, viewer.now),
            "play": play_query(found),
            "play_masked": play_query(found, masked=True),
            "attempts": attempts,
            "allowed": allowed,
            "denied": denied,
            "cap": COUNT_CAP,
            "addresses": addresses,
            "address_window": ADDRESS_WINDOW if allowed + denied > ADDRESS_WINDOW else 0,
            "watching": rows_of(watching, viewer.now),
            "viewers": viewers,
            "created": bool(values.get("created")),
            "revoked": bool(values.get("revoked")),
            "kicked": _count(values.get("kicked", "")),
        },
    )


def _count(text: str) -> int | None:
    """The ``kicked=N`` a kick redirects with, or ``None``."""
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 9 else None


async def _confirm_revoke(request: Request, viewer: Viewer) -> Response:
    found = await find_ticket(request, viewer)
    if isinstance(found, Response):
        return found
    return page(
        request,
        "revoke.html",
        {
            "viewer": viewer,
            "nav": "tickets",
            "ticket": found,
            "status": status_of(found, viewer.now),
        },
    )


async def _revoke(request: Request, viewer: Viewer) -> Response:
    key = str(request.path_params["key"])
    if not await viewer.state.storage.revoke_ticket(viewer.account.cdn, key, now=viewer.now):
        return not_found(request, viewer)
    return RedirectResponse(f"{PREFIX}/tickets/{path_part(key)}?revoked=1", 303)


search = signed_in(_search)
new = signed_in(_new)
create = signed_in(_create)
detail = signed_in(_detail)
confirm_revoke = signed_in(_confirm_revoke)
revoke = signed_in(_revoke)
