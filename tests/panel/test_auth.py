"""Panel sign-in, sessions, CSRF and sign-out, in-process."""

from __future__ import annotations

import hashlib
import re
from http.cookies import SimpleCookie

import httpx
import pytest

from tests.conftest import Clock, Harness
from tests.panel.conftest import Panel, browser, csrf_in, trust_proxies
from usher.passwords import hash_password
from usher.web.panel.auth import (
    ABSOLUTE_LIFETIME,
    IDLE_TIMEOUT,
    SESSION_COOKIE,
    SIGN_IN_COOKIE,
)
from usher.web.panel.signin import ADDRESS_THROTTLED, WRONG

pytestmark = pytest.mark.anyio


def set_cookies(response: httpx.Response) -> dict[str, SimpleCookie]:
    jars = {}
    for header in response.headers.get_list("set-cookie"):
        jar: SimpleCookie = SimpleCookie()
        jar.load(header)
        for name in jar:
            jars[name] = jar
    return jars


async def test_pages_need_a_session(harness: Harness) -> None:
    response = await harness.http.get("/panel/tickets", params={"app": "x"})
    assert response.status_code == 303
    assert response.headers["location"] == "/panel/sign-in?next=%2Fpanel%2Ftickets%3Fapp%3Dx"
    fragment = await harness.http.get("/panel/charts")
    assert fragment.status_code == 401
    assert fragment.json() == {"error": "The session has ended; sign in again."}
    assert (await harness.http.get("/panel")).headers["location"] == "/panel/"


async def test_sign_in_with_api_credentials_sets_a_strict_cookie(harness: Harness) -> None:
    async with browser(harness, harness.account) as http:
        panel = Panel(http, harness.account)
        response = await panel.sign_in(next="/panel/attempts?key=k")
        assert response.status_code == 303
        assert response.headers["location"] == "/panel/attempts?key=k"
        cookie = set_cookies(response)[SESSION_COOKIE][SESSION_COOKIE]
        assert cookie["httponly"] is True
        assert cookie["samesite"].lower() == "strict"
        assert cookie["path"] == "/panel"
        assert not cookie["secure"], "plain http: a Secure cookie would never come back"
        # Only a hash of the token is stored.
        token = cookie.value
        storage = harness.app.state.storage
        session = await storage.get_panel_session(hashlib.sha256(token.encode()).digest())
        assert session is not None and session.cdn == harness.account.cdn
        assert await storage.get_panel_session(token.encode()) is None
        page = await http.get("/panel/")
        assert page.status_code == 200
        assert "demo" in page.text and harness.account.secret not in page.text


async def test_cookies_are_secure_over_tls(harness: Harness) -> None:
    transport = httpx.ASGITransport(app=harness.app, client=("127.0.0.1", 40001))
    async with httpx.AsyncClient(transport=transport, base_url="https://usher.test") as http:
        response = await Panel(http, harness.account).sign_in()
        assert response.status_code == 303
        assert set_cookies(response)[SESSION_COOKIE][SESSION_COOKIE]["secure"] is True


@pytest.mark.parametrize(
    ("client", "secure"), [("10.0.0.2", True), ("127.0.0.1", False), ("203.0.113.9", False)]
)
async def test_only_a_trusted_proxy_can_say_the_browser_used_tls(
    harness: Harness, client: str, secure: bool
) -> None:
    trust_proxies(harness, "10.0.0.0/8")
    async with browser(harness, harness.account, client) as http:
        form = await http.get("/panel/sign-in", headers={"x-forwarded-proto": "https"})
        cookie = set_cookies(form)[SIGN_IN_COOKIE][SIGN_IN_COOKIE]
        assert bool(cookie["secure"]) is secure
        assert cookie["httponly"] is True and cookie["samesite"].lower() == "strict"


@pytest.mark.parametrize(
    "override",
    [
        {"secret": "0" * 64},
        {"api_key": "WRONGKEY"},
        {"cdn": "999"},
        {"cdn": "not-a-number"},
        {"secret": ""},
        {"method": "password", "password": "anything at all"},
    ],
    ids=["secret", "api-key", "unknown-cdn", "bad-cdn", "empty-secret", "no-password-set"],
)
async def test_wrong_credentials_get_one_answer_and_no_echo(
    harness: Harness, override: dict[str, str]
) -> None:
    async with browser(harness, harness.account) as http:
        response = await Panel(http, harness.account).sign_in(**override)
        assert response.status_code == 401
        assert WRONG in response.text
        assert SESSION_COOKIE not in set_cookies(response)
        typed = override.get("secret") or override.get("password")
        if typed:
            assert typed not in response.text, "a typed secret was echoed back"
        # The cdn and API key are echoed to save retyping; secret fields never are.
        for name in ("secret", "password"):
            field = re.search(f'<input id="f-{name}"[^>]*>', response.text)
            assert field is not None and "value=" not in field.group(0)
        assert f'value="{override.get("api_key", harness.account.api_key)}"' in response.text


async def test_panel_password_sign_in(harness: Harness) -> None:
    storage = harness.app.state.storage
    await storage.set_panel_password(
        harness.account.cdn, hash_password("correct horse battery"), now=1
    )
    async with browser(harness, harness.account) as http:
        panel = Panel(http, harness.account)
        wrong = await panel.sign_in(method="password", password="correct horse batter", secret="")
        assert wrong.status_code == 401
        right = await panel.sign_in(method="password", password="correct horse battery", secret="")
        assert right.status_code == 303
        assert (await http.get("/panel/")).status_code == 200


async def test_sign_in_form_needs_its_csrf_token(harness: Harness) -> None:
    async with browser(harness, harness.account) as http:
        form = await http.get("/panel/sign-in")
        good = csrf_in(form.text)
        fields = {
            "cdn": str(harness.account.cdn),
            "method": "api",
            "api_key": harness.account.api_key,
            "secret": harness.account.secret,
        }
        for token in ("", "x" * 43, None):
            body = fields if token is None else {**fields, "csrf": token}
            refused = await http.post("/panel/sign-in", data=body)
            assert refused.status_code == 403
            assert SESSION_COOKIE not in set_cookies(refused)
        # Another site's page: the browser says so in Origin.
        foreign = await http.post(
            "/panel/sign-in",
            data={**fields, "csrf": good},
            headers={"origin": "https://evil.example"},
        )
        assert foreign.status_code == 403
        accepted = await http.post(
            "/panel/sign-in", data={**fields, "csrf": good}, headers={"origin": "http://usher.test"}
        )
        assert accepted.status_code == 303


@pytest.mark.parametrize(
    "target",
    ["https://evil.example/", "//evil.example/panel/", "/elsewhere", "/panel/\\evil", "/panel//x"],
)
async def test_sign_in_never_redirects_off_the_panel(harness: Harness, target: str) -> None:
    async with browser(harness, harness.account) as http:
        response = await Panel(http, harness.account).sign_in(next=target)
        assert response.headers["location"] == "/panel/"


async def test_repeated_failures_are_throttled(harness: Harness) -> None:
    async with browser(harness, harness.account) as http:
        panel = Panel(http, harness.account)
        for _ in range(10):
            assert (await panel.sign_in(secret="nope")).status_code == 401
        blocked = await panel.sign_in()  # even the right secret, for now
        assert blocked.status_code == 429
        assert ADDRESS_THROTTLED.format(wait="10 minutes") in blocked.text
        assert blocked.headers["retry-after"] == "600"
    # Another address is not affected.
    async with browser(harness, harness.account, "127.0.0.2") as http:
        assert (await Panel(http, harness.account).sign_in()).status_code == 303


async def test_sign_out_needs_csrf_and_ends_the_session(panel: Panel) -> None:
    refused = await panel.post("/panel/sign-out", {}, csrf=False)
    assert refused.status_code == 403
    assert (await panel.get("/panel/")).status_code == 200
    response = await panel.post("/panel/sign-out", {})
    assert response.status_code == 303
    assert response.headers["location"] == "/panel/sign-in?signed_out=1"
    assert (await panel.get("/panel/")).status_code == 303
    # The old token is gone from the database, not just from the browser.
    assert (await panel.post("/panel/sign-out", {})).status_code == 303
    notice = await panel.get("/panel/sign-in", signed_out="1")
    assert "You are signed out." in notice.text


async def test_idle_sessions_expire(harness: Harness, panel: Panel, clock: Clock) -> None:
    clock.advance(IDLE_TIMEOUT - 61)
    assert (await panel.get("/panel/tickets")).status_code == 200  # activity renews it
    clock.advance(IDLE_TIMEOUT - 1)
    assert (await panel.get("/panel/tickets")).status_code == 200
    clock.advance(IDLE_TIMEOUT)
    expired = await panel.get("/panel/tickets")
    assert expired.status_code == 303
    assert "expired=1" in expired.headers["location"]
    assert set_cookies(expired)[SESSION_COOKIE][SESSION_COOKIE].value == ""


async def test_sessions_end_after_their_absolute_lifetime(panel: Panel, clock: Clock) -> None:
    step = IDLE_TIMEOUT - 60
    for _ in range(ABSOLUTE_LIFETIME // step):
        clock.advance(step)
        assert (await panel.get("/panel/")).status_code == 200
    clock.advance(step)
    assert (await panel.get("/panel/")).status_code == 303


async def test_disabling_an_account_ends_its_sessions(harness: Harness, panel: Panel) -> None:
    await harness.app.state.storage.update_account(harness.account.cdn, disabled=True)
    assert (await panel.get("/panel/")).status_code == 303
    response = await panel.sign_in()
    assert response.status_code == 403
    assert "This account is disabled." in response.text


async def test_sign_in_ignores_a_planted_session_cookie(harness: Harness) -> None:
    # Session fixation: a token the attacker chose must never become a session.
    planted = "attacker-chosen-token-0123456789abcdef"
    async with browser(harness, harness.account) as http:
        http.cookies.set(SESSION_COOKIE, planted, domain="usher.test", path="/panel")
        assert (await Panel(http, harness.account).sign_in()).status_code == 303
        issued = set_cookies(await http.get("/panel/sign-in"))
        assert issued == {}, "a signed-in browser is sent to the overview"
        token = http.cookies.get(SESSION_COOKIE, path="/panel")
        assert token and token != planted
    storage = harness.app.state.storage
    assert await storage.get_panel_session(hashlib.sha256(planted.encode()).digest()) is None


async def test_each_browser_gets_its_own_session(harness: Harness, panel: Panel) -> None:
    async with browser(harness, harness.account) as http:
        second = Panel(http, harness.account)
        assert (await second.sign_in()).status_code == 303
        assert second.csrf != panel.csrf
        # Signing one out leaves the other signed in.
        assert (await second.post("/panel/sign-out", {})).status_code == 303
        assert (await panel.get("/panel/")).status_code == 200
        # One browser's CSRF token is worthless in another's session.
        refused = await panel.post("/panel/sign-out", {"csrf": second.csrf}, csrf=False)
        assert refused.status_code == 403
