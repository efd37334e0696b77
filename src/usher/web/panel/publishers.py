"""The Publishers page: the account's stream users (who may publish), adding
one with a generated pass, replacing a pass, removing one.

Saving runs :func:`usher.commands.addstreamuser.save` and removing
:func:`usher.commands.removestreamuser.run`, so the panel validates, hashes
and stores exactly as ``sevu.addstreamuser`` and ``sevu.removestreamuser``
do. A generated pass is shown once, on the page that answers the POST that
made it (never in a URL, never cached, never logged); only its hash is
stored. Every storage call is scoped to the signed-in account's cdn: another
account's stream user id is "not found".
"""

from __future__ import annotations

import dataclasses
import re
import secrets
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from usher.commands import addstreamuser
from usher.commands import removestreamuser as remove_command
from usher.commands.base import Context
from usher.commands.fields import INT64_MAX
from usher.commands.streamuser import stream_user_name
from usher.protocol.errors import ApiError, InvalidField, MissingFields, NotFound
from usher.storage.base import MAX_ATTEMPT_FIELD
from usher.tickets.publishers import (
    EVERY_STREAM,
    PUBLISH_REASON_TEXT,
    PublishFilter,
    StreamUser,
    StreamUserSettings,
)
from usher.web.panel import forms
from usher.web.panel.auth import Viewer, signed_in
from usher.web.panel.render import PASS_MASK, PREFIX, error_page, page
from usher.web.panel.tickets import message_of

#: Bytes of randomness in a generated pass: 192 bits, 32 URL-safe characters.
PASS_BYTES: Final = 24
#: The stream name an encoder URL of a ``*`` entry shows, to be replaced.
STREAM_PLACEHOLDER: Final = "your-stream-name"
#: When the panel was reached by a host name it cannot put in a URL.
SERVER_PLACEHOLDER: Final = "rtmp://your-rtmp-server"
ADD_FIELDS: Final = ("app", "stream", "user", "access")
_HOST: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|[0-9A-Fa-f:.]{2,45}")


def new_pass() -> str:
    """A strong publish pass: URL-safe, so it survives an encoder's URL."""
    return secrets.token_urlsafe(PASS_BYTES)


def rtmp_server(request: Request, viewer: Viewer) -> str:
    """``USHER_PUBLISH_URL``, else ``rtmp://`` and the host name (without
    its port: the panel's port is not the RTMP port) the panel was reached by."""
    if viewer.state.settings.publish_url:
        return viewer.state.settings.publish_url
    host = request.url.hostname or ""
    if not _HOST.fullmatch(host):
        return SERVER_PLACEHOLDER
    return f"rtmp://[{host}]" if ":" in host else f"rtmp://{host}"


@dataclass(frozen=True, slots=True)
class EncoderUrls:
    """Where an encoder publishes: the whole URL (ffmpeg), and OBS's split
    into a server and a stream key."""

    url: str
    server: str
    key: str


def encoder_urls(server: str, entry: StreamUser, password: str | None) -> EncoderUrls:
    """The URLs of ``entry``; ``password`` ``None`` gives the URLs without
    a pass, and :data:`PASS_MASK` in its place writes them masked."""
    stream = STREAM_PLACEHOLDER if entry.stream == EVERY_STREAM else entry.stream
    key = quote(stream, safe="")
    if entry.user is not None:
        shown = PASS_MASK if password == PASS_MASK else quote(password or "", safe="")
        key += f"?user={quote(entry.user, safe='')}&pass={shown}"
    base = f"{server}/{quote(entry.app, safe='')}"
    return EncoderUrls(f"{base}/{key}", base, key)


def settings_summary(chosen: StreamUserSettings) -> str:
    """The stored recording settings as ``name=value`` pairs, the set ones only."""
    shown = []
    for item in dataclasses.fields(chosen):
        value = getattr(chosen, item.name)
        if value is not None:
            shown.append(f"{item.name}={int(value) if isinstance(value, bool) else value}")
    return " ".join(shown)


def _context(viewer: Viewer) -> Context:
    return Context(viewer.state.storage, viewer.account, viewer.now)


async def _list_page(
    request: Request,
    viewer: Viewer,
    *,
    values: dict[str, str] | None = None,
    error: str = "",
    field: str = "",
    status: int = 200,
) -> Response:
    entries = await viewer.state.storage.list_stream_users(viewer.account.cdn)
    return page(
        request,
        "publishers.html",
        {
            "viewer": viewer,
            "nav": "publishers",
            "entries": entries,
            "summary": settings_summary,
            "values": values or {"app": f"{viewer.account.username}-", "access": "user"},
            "error": error,
            "error_field": field,
            "removed": bool(forms.query_values(request).get("removed")),
        },
        status=status,
    )


def _saved_page(
    request: Request, viewer: Viewer, entry: StreamUser, password: str | None, *, replaced: bool
) -> Response:
    server = rtmp_server(request, viewer)
    return page(
        request,
        "publisher_saved.html",
        {
            "viewer": viewer,
            "nav": "publishers",
            "entry": entry,
            "password": password,
            "urls": encoder_urls(server, entry, password),
            "masked": encoder_urls(server, entry, PASS_MASK),
            "placeholder": STREAM_PLACEHOLDER if entry.stream == EVERY_STREAM else "",
            "replaced": replaced,
        },
    )


async def _publishers(request: Request, viewer: Viewer) -> Response:
    return await _list_page(request, viewer)


async def _add(request: Request, viewer: Viewer) -> Response:
    values = forms.pick(viewer.form, ADD_FIELDS)
    is_open = values.get("access") == "open"

    def refused(message: str, field: str) -> Awaitable[Response]:
        return _list_page(request, viewer, values=values, error=message, field=field, status=400)

    if is_open and values.get("user"):
        return await refused(
            "An open entry has no user: leave the user empty, or choose “User and generated pass”.",
            "user",
        )
    if not is_open and not values.get("user"):
        return await refused(
            "Give the user name the encoder will publish with, or choose "
            "“Open entry, no credentials”.",
            "user",
        )
    try:
        name = stream_user_name({k: v for k, v in values.items() if k != "access"})
        if await viewer.state.storage.get_stream_user(viewer.account.cdn, name=name):
            return await refused(
                "This app, stream and user already have an entry. To give it a new pass, "
                "use its Replace pass button in the list below.",
                "user" if name.user else "stream",
            )
        password = None if is_open else new_pass()
        saved = await addstreamuser.save(_context(viewer), name, password, StreamUserSettings())
    except ApiError as exc:
        field = ""
        if isinstance(exc, InvalidField):
            field = exc.name
        elif isinstance(exc, MissingFields) and exc.names:
            field = exc.names[0]
        return await refused(message_of(exc), field)
    # Rendered in answer to the POST: a redirect would have to carry the pass.
    return _saved_page(request, viewer, saved, password, replaced=False)


def _not_found(request: Request, viewer: Viewer) -> Response:
    # The same page whether the id is unknown or another account's.
    return error_page(
        request,
        404,
        "Publisher not found",
        "Your account has no stream user with this id: it may have been removed. "
        "Go back to the Publishers page to see the current list.",
        viewer=viewer,
    )


def _row_id(raw: str) -> int | None:
    """A row id as written in a URL: ASCII digits within 64 bits, else ``None``."""
    if raw.isascii() and raw.isdigit() and len(raw) <= 19 and int(raw) <= INT64_MAX:
        return int(raw)
    return None


def _id_of(request: Request) -> int | None:
    found = _row_id(str(request.path_params["id"]))
    return found if found else None  # ids start at 1


async def _find(request: Request, viewer: Viewer) -> StreamUser | Response:
    id = _id_of(request)
    found = (
        None
        if id is None
        else await viewer.state.storage.get_stream_user(viewer.account.cdn, id=id)
    )
    return _not_found(request, viewer) if found is None else found


def _no_pass(request: Request, viewer: Viewer) -> Response:
    return error_page(
        request,
        400,
        "An open entry has no pass",
        "This entry lets anyone publish its stream without credentials, so there is no "
        "pass to replace. Remove it and add an entry with a user instead.",
        viewer=viewer,
    )


async def _confirm(request: Request, viewer: Viewer, action: str) -> Response:
    found = await _find(request, viewer)
    if isinstance(found, Response):
        return found
    if action == "replace" and found.user is None:
        return _no_pass(request, viewer)
    return page(
        request,
        "publisher_confirm.html",
        {"viewer": viewer, "nav": "publishers", "entry": found, "action": action},
    )


async def _confirm_replace(request: Request, viewer: Viewer) -> Response:
    return await _confirm(request, viewer, "replace")


async def _confirm_remove(request: Request, viewer: Viewer) -> Response:
    return await _confirm(request, viewer, "remove")


async def _replace(request: Request, viewer: Viewer) -> Response:
    found = await _find(request, viewer)
    if isinstance(found, Response):
        return found
    if found.user is None:
        return _no_pass(request, viewer)
    password = new_pass()
    # The same name replaces the pass; the stored settings are kept as they are.
    saved = await addstreamuser.save(_context(viewer), found.name, password, found.settings)
    return _saved_page(request, viewer, saved, password, replaced=True)


async def _remove(request: Request, viewer: Viewer) -> Response:
    id = _id_of(request)
    if id is None:
        return _not_found(request, viewer)
    try:
        await remove_command.run(_context(viewer), {"streamuser_id": id})
    except NotFound:
        return _not_found(request, viewer)
    return RedirectResponse(f"{PREFIX}/publishers?removed=1", 303)


publishers = signed_in(_publishers)
add = signed_in(_add)
confirm_replace = signed_in(_confirm_replace)
replace = signed_in(_replace)
confirm_remove = signed_in(_confirm_remove)
remove = signed_in(_remove)


# -- the publish log ------------------------------------------------------------

LOG_PAGE_SIZE: Final = 50
LOG_FILTERS: Final = ("outcome", "ip", "app")
#: The ``outcome`` filter: any, allowed only, denied only.
OUTCOMES: Final[dict[str, bool | None]] = {"": None, "allowed": True, "denied": False}


class BadLogQuery(ValueError):
    """A filter or page link no form or link of the log page makes."""


def publish_filter(filters: dict[str, str]) -> PublishFilter:
    outcome = filters.get("outcome", "")
    if outcome not in OUTCOMES:
        raise BadLogQuery(
            "The outcome filter must be allowed, denied or empty for both. "
            "Choose one in the form and apply the filters again."
        )
    for name in ("ip", "app"):
        if len(filters.get(name, "")) > MAX_ATTEMPT_FIELD:
            raise BadLogQuery(
                f"The {name} filter is longer than {MAX_ATTEMPT_FIELD} characters, so it "
                "matches nothing. Shorten it and apply the filters again."
            )
    return PublishFilter(
        allowed=OUTCOMES[outcome], ip=filters.get("ip") or None, app=filters.get("app") or None
    )


def log_cursor(values: dict[str, str]) -> int | None:
    """``before``: the id of the last row of the previous page, or ``None``."""
    raw = values.get("before", "").strip()
    if not raw:
        return None
    found = _row_id(raw)
    if found is not None:
        return found
    raise BadLogQuery(
        "This page link is damaged: before must be a row number, as the Older link "
        "writes it. Start again from the newest publishes."
    )


async def _log(request: Request, viewer: Viewer) -> Response:
    values = forms.query_values(request)
    filters = forms.pick(values, LOG_FILTERS)
    context: dict[str, object] = {
        "viewer": viewer,
        "nav": "publishers",
        "filters": filters,
        "rows": [],
        "reasons": PUBLISH_REASON_TEXT,
        "older": None,
        "paged": False,
        "error": "",
    }
    try:
        where = publish_filter(filters)
        before = log_cursor(values)
    except BadLogQuery as exc:
        context["error"] = str(exc)
        return page(request, "publish_log.html", context, status=400)
    # One row more says whether an older page follows.
    found = await viewer.state.storage.list_publishes(
        viewer.account.cdn, where, LOG_PAGE_SIZE + 1, before=before
    )
    rows = found[:LOG_PAGE_SIZE]
    context.update(
        rows=rows,
        paged=before is not None,
        older={**filters, "before": str(rows[-1].id)} if len(found) > LOG_PAGE_SIZE else None,
    )
    return page(request, "publish_log.html", context)


publish_log = signed_in(_log)
