"""Panel sessions: cookies, expiry, CSRF tokens and the signed-in guard.

* The session cookie holds a random token; the database holds only its
  SHA-256, so neither a database copy nor a log line lets anyone sign in.
* Sessions live in the database, so several Usher nodes behind one load
  balancer share them, and end after :data:`IDLE_TIMEOUT` without a request
  or :data:`ABSOLUTE_LIFETIME` after sign-in, whichever comes first.
* The CSRF token is an HMAC of the session token, so it needs no storage and
  changes with every sign-in. Every state-changing request must carry it in
  its form, and must not come from another origin. The cookie is also
  ``SameSite=Strict``; the token does not rely on that.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from usher.protocol.errors import BodyTooLarge
from usher.storage.base import PanelSession, PanelSessionFilter
from usher.tickets.model import Account
from usher.web.body import read_body
from usher.web.callers import caller_allowed
from usher.web.panel import forms
from usher.web.panel.render import PREFIX, error_page, query
from usher.web.state import AppState, app_state

SESSION_COOKIE: Final = "usher_session"
#: Double-submit token of the sign-in form, which has no session yet.
SIGN_IN_COOKIE: Final = "usher_sign_in"
IDLE_TIMEOUT: Final = 30 * 60
ABSOLUTE_LIFETIME: Final = 12 * 3600
#: A session's ``seen_at`` is written at most this often, so that browsing
#: does not turn every page view into a database write.
TOUCH_EVERY: Final = 60
_MAX_TOKEN = 128
_CSRF_LABEL: Final = b"usher panel csrf v1"


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("ascii", "replace")).digest()


def csrf_token(session_token: str) -> str:
    mac = hmac.new(session_token.encode("ascii", "replace"), _CSRF_LABEL, hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode("ascii")


def tokens_match(given: str | None, expected: str) -> bool:
    return bool(given) and hmac.compare_digest(
        (given or "").encode("utf-8", "replace"), expected.encode("utf-8", "replace")
    )


def is_tls(request: Request) -> bool:
    """Whether the browser reached us over TLS: directly, or through a
    trusted reverse proxy (one in ``USHER_PANEL_TRUSTED_PROXIES``) that says so."""
    if request.url.scheme == "https":
        return True
    forwarded = request.headers.get("x-forwarded-proto", "").strip().lower()
    return forwarded == "https" and caller_allowed(
        request, app_state(request).settings.panel_trusted_proxies
    )


def same_origin(request: Request) -> bool:
    """``False`` when the browser says the request comes from another site.

    Browsers send ``Origin`` on every cross-site POST; a request without it
    comes from a non-browser client, which cannot hold the victim's cookie.
    """
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc == request.headers.get("host", "") != ""


def set_cookie(
    response: Response, request: Request, name: str, value: str, *, path: str, max_age: int
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=path,
        secure=is_tls(request),
        httponly=True,
        samesite="strict",
    )


def clear_cookie(response: Response, request: Request, name: str, *, path: str) -> None:
    response.delete_cookie(
        name, path=path, secure=is_tls(request), httponly=True, samesite="strict"
    )


@dataclass(frozen=True, slots=True)
class Viewer:
    """The signed-in account behind one panel request."""

    state: AppState
    account: Account
    token_hash: bytes
    csrf: str
    now: int
    #: The submitted form of a POST (its CSRF token already checked).
    form: Mapping[str, str] = field(default_factory=dict)


async def start_session(state: AppState, account: Account) -> str:
    """Store a new session for ``account`` and return its cookie token."""
    now = state.now()
    # Expired sessions are swept here: sign-ins are rare, and a sweep is one
    # indexed delete, so no background task is needed.
    expired = PanelSessionFilter(
        seen_before=now - IDLE_TIMEOUT, created_before=now - ABSOLUTE_LIFETIME
    )
    await state.storage.delete_panel_sessions(expired)
    token = new_token()
    await state.storage.create_panel_session(PanelSession(token_hash(token), account.cdn, now, now))
    return token


async def end_session(state: AppState, request: Request) -> None:
    token = request.cookies.get(SESSION_COOKIE, "")
    if token and len(token) <= _MAX_TOKEN:
        await state.storage.delete_panel_sessions(PanelSessionFilter(token_hash=token_hash(token)))


async def load_viewer(request: Request) -> Viewer | None:
    """The signed-in viewer, or ``None`` when the cookie names no live session."""
    token = request.cookies.get(SESSION_COOKIE, "")
    if not token or len(token) > _MAX_TOKEN:
        return None
    state = app_state(request)
    hashed = token_hash(token)
    session = await state.storage.get_panel_session(hashed)
    if session is None:
        return None
    now = state.now()
    if now - session.seen_at >= IDLE_TIMEOUT or now - session.created_at >= ABSOLUTE_LIFETIME:
        await state.storage.delete_panel_sessions(PanelSessionFilter(token_hash=hashed))
        return None
    account = await state.storage.get_account(session.cdn)
    if account is None or account.disabled:
        await state.storage.delete_panel_sessions(PanelSessionFilter(token_hash=hashed))
        return None
    if now - session.seen_at >= TOUCH_EVERY:
        await state.storage.touch_panel_session(hashed, now=now)
    return Viewer(state, account, hashed, csrf_token(token), now)


PanelHandler = Callable[[Request, Viewer], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]


def signed_in(handler: PanelHandler, *, fragment: bool = False) -> Endpoint:
    """Run ``handler`` only for a live session; POSTs also need the CSRF
    token and a same-origin ``Origin``.

    A page request without a session is sent to sign in (and back here
    afterwards); a ``fragment`` request (the charts' live refresh) gets 401,
    which the script shows as "signed out".
    """

    async def endpoint(request: Request) -> Response:
        viewer = await load_viewer(request)
        if viewer is None:
            return _signed_out(request, fragment=fragment)
        if request.method == "POST":
            try:
                form = forms.parse(await read_body(request, forms.MAX_FORM))
            except BodyTooLarge:
                return error_page(
                    request, 413, "Form too large", "The form is larger than 64 KiB.", viewer=viewer
                )
            if not same_origin(request) or not tokens_match(form.get("csrf"), viewer.csrf):
                return csrf_refused(request, viewer)
            viewer = Viewer(
                viewer.state, viewer.account, viewer.token_hash, viewer.csrf, viewer.now, form
            )
        return await handler(request, viewer)

    return endpoint


def csrf_refused(request: Request, viewer: Viewer | None = None) -> Response:
    return error_page(
        request,
        403,
        "Form refused",
        "This form was not sent from a page of this panel, or the page is from an earlier "
        "session. Nothing was changed. Go back, reload the page and try again.",
        viewer=viewer,
    )


def _signed_out(request: Request, *, fragment: bool) -> Response:
    response: Response
    if fragment:
        response = JSONResponse({"error": "The session has ended; sign in again."}, 401)
    else:
        target = request.url.path
        if request.url.query:
            target += "?" + request.url.query
        expired = "1" if request.cookies.get(SESSION_COOKIE) else ""
        response = RedirectResponse(
            f"{PREFIX}/sign-in" + query({"next": target, "expired": expired}), 303
        )
    if request.cookies.get(SESSION_COOKIE):
        clear_cookie(response, request, SESSION_COOKIE, path=PREFIX)
    return response


def safe_next(target: str | None) -> str:
    """Where to go after sign-in: only a path inside the panel, so the sign-in
    form cannot be used to send someone to another site."""
    if (
        target
        and target.startswith(PREFIX + "/")
        and "//" not in target
        and "\\" not in target
        and not target.startswith(f"{PREFIX}/sign-")
        and target.isprintable()
        and len(target) <= 2048
    ):
        return target
    return PREFIX + "/"
