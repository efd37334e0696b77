"""Kicking viewers: end one open session of a ticket, or all of them.

As revoking, a kick is asked for on a confirmation page and done by a POST
carrying the CSRF token. The POST runs :func:`usher.commands.kick.run`
itself, so the panel ends exactly what ``sevu.kick`` ends (and counts it in
``/metrics`` the same way); every step is scoped to the signed-in account's
cdn, so another account's ticket or session is "not found".

The form names what to kick explicitly, ``session=<id>`` or ``all=1``: the
command reads a missing session as "all of them", and a lost field must
never turn kicking one viewer into kicking everyone.
"""

from __future__ import annotations

from typing import Final

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from usher.commands import kick as kick_command
from usher.commands.base import Context
from usher.protocol.errors import ApiError, NotFound
from usher.storage.base import MAX_ATTEMPT_FIELD
from usher.tickets.model import PlaybackSession, Ticket
from usher.web.panel import forms
from usher.web.panel.auth import Viewer, signed_in
from usher.web.panel.render import PREFIX, error_page, page, path_part, query
from usher.web.panel.session_rows import rows_of
from usher.web.panel.tickets import find_ticket, message_of, not_found, status_of
from usher.web.playback import Checker

#: What a kick names: one session, or every open session of the ticket.
Target = str | None  # a session id, or None for all

_WHAT: Final = (
    "Say which viewers to kick: the Kick buttons of the ticket's page name one "
    "session, and Kick all names every open one. Go back to the ticket and try again."
)


class BadTarget(ValueError):
    """Neither one session nor all, or both."""


def read_target(values: dict[str, str]) -> Target:
    session_id = values.get("session", "")
    everyone = values.get("all", "") == "1"
    if everyone == bool(session_id) or len(session_id) > MAX_ATTEMPT_FIELD:
        raise BadTarget(_WHAT)
    return session_id or None


async def _open_session(viewer: Viewer, ticket: Ticket, session_id: str) -> PlaybackSession | None:
    """The ticket's open session with this id, or ``None`` (also when it is
    another account's: the answer says nothing about other accounts)."""
    found = await viewer.state.storage.lookup_session(session_id=session_id)
    if found is None:
        return None
    session, _ = found
    mine = session.cdn == viewer.account.cdn and session.key == ticket.key
    return session if mine and session.is_open(viewer.now) else None


def _gone(request: Request, viewer: Viewer, ticket: Ticket) -> Response:
    return error_page(
        request,
        404,
        "Session not open",
        f"The ticket {ticket.key} has no open session with this id: the viewer may have "
        "stopped watching already. Go back to the ticket to see who is watching now.",
        viewer=viewer,
    )


async def _confirm(request: Request, viewer: Viewer) -> Response:
    ticket = await find_ticket(request, viewer)
    if isinstance(ticket, Response):
        return ticket
    try:
        target = read_target(forms.query_values(request))
    except BadTarget as exc:
        return error_page(request, 400, "Nothing to kick", str(exc), viewer=viewer)
    session = None
    if target is not None:
        session = await _open_session(viewer, ticket, target)
        if session is None:
            return _gone(request, viewer, ticket)
    return page(
        request,
        "kick.html",
        {
            "viewer": viewer,
            "nav": "tickets",
            "ticket": ticket,
            "status": status_of(ticket, viewer.now),
            "row": None if session is None else rows_of([session], viewer.now)[0],
        },
    )


async def _kick(request: Request, viewer: Viewer) -> Response:
    key = str(request.path_params["key"])
    try:
        target = read_target(dict(viewer.form))
    except BadTarget as exc:
        return error_page(request, 400, "Nothing to kick", str(exc), viewer=viewer)
    state = viewer.state
    ctx = Context(state.storage, viewer.account, viewer.now, Checker(state).count_ends)
    fields: dict[str, object] = {"key": key}
    if target is not None:
        fields["session"] = target
    try:
        result = await kick_command.run(ctx, fields)
    except NotFound:
        return not_found(request, viewer)
    except ApiError as exc:
        return error_page(request, 400, "Nothing to kick", message_of(exc), viewer=viewer)
    ended = result.payload["ended"]
    assert isinstance(ended, int)  # the command's payload
    return RedirectResponse(
        f"{PREFIX}/tickets/{path_part(key)}" + query({"kicked": str(ended)}), 303
    )


confirm = signed_in(_confirm)
kick = signed_in(_kick)
