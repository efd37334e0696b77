"""Signing in (with the API key and secret, or a panel password) and out.

Neither the secret nor the password is ever put in a URL, a page or a log
line: the form is POSTed, a failed attempt re-renders the form without them,
and the same sentence answers every kind of wrong credential.
"""

from __future__ import annotations

import asyncio
import hmac
import math

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from usher.passwords import dummy_hash, verify_password
from usher.protocol.errors import BodyTooLarge
from usher.storage.base import PanelSessionFilter
from usher.tickets.model import Account
from usher.web.body import read_body
from usher.web.callers import panel_client
from usher.web.panel import auth, forms
from usher.web.panel.limits import address_key
from usher.web.panel.render import PREFIX, error_page, page
from usher.web.state import AppState, app_state

METHODS = ("password", "api")
WRONG = "Those credentials do not match an account. Check the CDN id and try again."
ADDRESS_THROTTLED = "Too many failed sign-ins from your address. Wait {wait}, then try again."
#: The same words for every cdn, known or not, with a password or without.
ACCOUNT_THROTTLED = (
    "Too many failed password sign-ins for this cdn. "
    "Wait {wait}, or sign in with the API key and secret."
)
#: Fields echoed back into a failed form: never ``secret`` or ``password``.
_ECHOED = ("cdn", "api_key", "method", "next")


def _cdn(form: dict[str, str]) -> int | None:
    """The form's cdn, or ``None`` when it is not a number."""
    raw = form.get("cdn", "").strip()
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 19 else None


def _by_api(form: dict[str, str]) -> bool:
    """Whether the form signs in with the API key and secret (else a password)."""
    return form.get("method") == "api"


def _minutes(seconds: float) -> str:
    minutes = max(1, math.ceil(seconds / 60))
    return "1 minute" if minutes == 1 else f"{minutes} minutes"


def _form_page(
    request: Request,
    token: str,
    values: dict[str, str],
    *,
    error: str = "",
    notice: str = "",
    status: int = 200,
) -> Response:
    method = values.get("method") if values.get("method") in METHODS else "password"
    response = page(
        request,
        "sign_in.html",
        {
            "viewer": None,
            "csrf": token,
            "values": {**{name: values.get(name, "") for name in _ECHOED}, "method": method},
            "error": error,
            "notice": notice,
        },
        status=status,
    )
    auth.set_cookie(
        response, request, auth.SIGN_IN_COOKIE, token, path=f"{PREFIX}/sign-in", max_age=3600
    )
    return response


async def sign_in_form(request: Request) -> Response:
    if await auth.load_viewer(request) is not None:
        return RedirectResponse(f"{PREFIX}/", 303)
    values = forms.query_values(request)
    notice = ""
    if values.get("signed_out"):
        notice = "You are signed out."
    elif values.get("expired"):
        notice = "Your session has ended. Sign in again to continue."
    token = request.cookies.get(auth.SIGN_IN_COOKIE, "")
    if not 20 <= len(token) <= 128:
        token = auth.new_token()
    return _form_page(request, token, {"next": values.get("next", "")}, notice=notice)


async def sign_in(request: Request) -> Response:
    state = app_state(request)
    try:
        form = forms.parse(await read_body(request, forms.MAX_FORM))
    except BodyTooLarge:
        return error_page(request, 413, "Form too large", "The form is larger than 64 KiB.")
    cookie_token = request.cookies.get(auth.SIGN_IN_COOKIE, "")
    # Double-submit: the form's token must equal the cookie's, which another
    # site can neither read nor set. This stops "login CSRF", where a page
    # signs your browser into the attacker's account.
    if (
        not cookie_token
        or not auth.same_origin(request)
        or not auth.tokens_match(form.get("csrf"), cookie_token)
    ):
        return auth.csrf_refused(request)

    # The app's clock, so tests can move time; a step of the wall clock
    # only makes the locks running at that moment shorter or longer.
    now = state.clock()
    limiter = state.sign_in_limiter
    address = address_key(panel_client(request, state.settings.panel_trusted_proxies))
    cdn = _cdn(form)
    # Only password sign-ins count per account (see limits.py); every cdn
    # that is not a number shares one key, since none of them can sign in.
    account_key = None if _by_api(form) else str(cdn if cdn is not None else "")
    wait = limiter.by_address.wait(address, now)
    message = ADDRESS_THROTTLED
    if not wait and account_key is not None:
        wait = limiter.by_account.wait(account_key, now)
        message = ACCOUNT_THROTTLED
    if wait:
        response = _form_page(
            request, cookie_token, form, error=message.format(wait=_minutes(wait)), status=429
        )
        response.headers["Retry-After"] = str(math.ceil(wait))
        return response
    # Counted before the check, so concurrent guesses cannot all slip in.
    limiter.by_address.attempt(address, now)
    if account_key is not None:
        limiter.by_account.attempt(account_key, now)
    account = await _verify(state, form, cdn)
    if account is None:
        return _form_page(request, cookie_token, form, error=WRONG, status=401)
    limiter.by_address.refund(address)
    if account_key is not None:
        limiter.by_account.refund(account_key)
    if account.disabled:
        return _form_page(
            request,
            cookie_token,
            form,
            error="This account is disabled. Ask the Usher operator to enable it.",
            status=403,
        )
    await auth.end_session(state, request)  # never reuse a session across sign-ins
    token = await auth.start_session(state, account)
    response = RedirectResponse(auth.safe_next(form.get("next")), 303)
    auth.set_cookie(
        response,
        request,
        auth.SESSION_COOKIE,
        token,
        path=PREFIX,
        max_age=auth.ABSOLUTE_LIFETIME,
    )
    auth.clear_cookie(response, request, auth.SIGN_IN_COOKIE, path=f"{PREFIX}/sign-in")
    return response


async def _verify(state: AppState, form: dict[str, str], cdn: int | None) -> Account | None:
    """The account whose credentials the form holds (``cdn`` is its cdn), or ``None``."""
    account = None if cdn is None else await state.storage.get_account(cdn)
    if _by_api(form):
        api_key = form.get("api_key", "").strip()
        secret = form.get("secret", "").strip()
        if account is None or not api_key or not secret:
            return None
        key_ok = hmac.compare_digest(api_key.encode(), account.api_key.encode())
        secret_ok = hmac.compare_digest(secret.encode(), account.secret.encode())
        return account if key_ok and secret_ok else None
    password = form.get("password", "")
    stored = None if account is None else await state.storage.get_panel_password(account.cdn)
    # The hash runs even when there is nothing to compare against, so the
    # answer takes as long for an unknown cdn as for a wrong password. It
    # runs on a thread: scrypt would stall every other request for its
    # tens of milliseconds.
    matches = await asyncio.to_thread(verify_password, password, stored or dummy_hash())
    return account if matches and stored is not None and password else None


async def _sign_out(request: Request, viewer: auth.Viewer) -> Response:
    await viewer.state.storage.delete_panel_sessions(
        PanelSessionFilter(token_hash=viewer.token_hash)
    )
    response = RedirectResponse(f"{PREFIX}/sign-in?signed_out=1", 303)
    auth.clear_cookie(response, request, auth.SESSION_COOKIE, path=PREFIX)
    return response


sign_out = auth.signed_in(_sign_out)
