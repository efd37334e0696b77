"""Templates, security headers and the panel's error pages."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from importlib import resources
from typing import Any
from urllib.parse import quote, urlencode

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from usher.tickets.expiry import format_utc

PREFIX = "/panel"

#: Every panel response carries these. The CSP allows only Usher's own
#: scripts and styles (no inline code), so an injected tag cannot run.
SECURITY_HEADERS: Mapping[str, str] = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
}


def _asset_versions() -> dict[str, str]:
    """A short content hash per static file, appended to its URL so that
    browsers refetch an asset exactly when a new release changes it."""
    folder = resources.files(__package__).joinpath("static")
    return {
        entry.name: hashlib.sha256(entry.read_bytes()).hexdigest()[:12]
        for entry in folder.iterdir()
        if entry.is_file()
    }


_VERSIONS = _asset_versions()


def asset(name: str) -> str:
    return f"{PREFIX}/static/{name}?v={_VERSIONS.get(name, '0')}"


#: What the panel shows in place of a viewer's pass until asked (the
#: ``secret`` macro): the same length whatever the pass, so it tells nothing.
PASS_MASK = "••••••"  # noqa: S105  # the mask shown instead of a pass


def utc(ts: int | None) -> str:
    """A UNIX time as the API prints it; an em dash for "never"."""
    return "—" if ts is None else format_utc(ts)


def how_long(seconds: int) -> str:
    """A duration as a person reads it: the two largest units, ``45 s``,
    ``3 min 05 s``, ``2 h 03 min``, ``3 d 4 h``."""
    seconds = max(0, seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def path_part(value: str) -> str:
    """``value`` as one URL path segment (a ticket key in a link)."""
    return quote(value, safe="")


def query(params: Mapping[str, object]) -> str:
    """``?a=1&b=2`` of the non-empty values, or ``""``."""
    kept = {k: v for k, v in params.items() if v not in (None, "")}
    return "?" + urlencode(kept) if kept else ""


_env = Environment(
    loader=PackageLoader(__package__, "templates"),
    # Every template is HTML, so every value is escaped unless marked safe.
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.globals.update(asset=asset, prefix=PREFIX, query=query, pass_mask=PASS_MASK)
_env.filters.update(utc=utc, path_part=path_part, how_long=how_long)


def render_text(template: str, context: Mapping[str, Any]) -> str:
    return _env.get_template(template).render(context)


def page(
    request: Request,
    template: str,
    context: Mapping[str, Any],
    *,
    status: int = 200,
) -> HTMLResponse:
    """A full page. Pages show account data, so no cache may keep them."""
    body = render_text(template, {"request": request, **context})
    return HTMLResponse(body, status, headers={"cache-control": "no-store"})


def error_page(
    request: Request,
    status: int,
    title: str,
    message: str,
    *,
    viewer: object | None = None,
) -> HTMLResponse:
    return page(
        request,
        "error.html",
        {"title": title, "message": message, "viewer": viewer},
        status=status,
    )


class SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` to every response of the wrapped app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._headers = [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self._headers]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def plain(status: int, text: str) -> Response:
    return Response(text + "\n", status, media_type="text/plain")
