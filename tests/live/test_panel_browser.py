"""The control panel in a real browser (Debian's Chromium, driven by
Playwright) against a real ``usher serve`` on 127.0.0.1."""

from __future__ import annotations

import http.server
import json
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Locator,
    Page,
    ViewportSize,
    expect,
    sync_playwright,
)

from tests.helpers import free_port
from tests.live.conftest import USHER, LiveServer, usher
from tests.live.panel_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    DESKTOP,
    PHONE,
    no_horizontal_scroll,
    play,
    screenshot,
    seed_busy_account,
)
from usher.client import Client

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("browser")]

PASSWORD = "correct horse battery staple"
#: Generous for a loaded 2-core machine; the charts refresh every 5 s.
WAIT_MS = 15_000


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    # The panel's storage calls are covered on every backend in-process
    # (tests/panel); the browser runs once, on SQLite.
    return f"sqlite:///{tmp_path / 'usher.db'}"


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing; run scripts/install-system-deps (make test does).")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


def new_context(chromium: Browser, server: LiveServer, viewport: ViewportSize) -> BrowserContext:
    context = chromium.new_context(
        viewport=viewport,
        base_url=server.url,
        timezone_id="UTC",
        locale="en-GB",
    )
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    context.set_default_timeout(WAIT_MS)
    return context


def set_panel_password(server: LiveServer, username: str = "demo") -> None:
    result = subprocess.run(
        [*USHER, "account", "set-panel-password", "--username", username],
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        env={"USHER_DATABASE_URL": server.database, "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert PASSWORD not in result.stdout + result.stderr


def sign_in_with_password(page: Page, cdn: int) -> None:
    page.goto("/panel/")
    expect(page).to_have_url(re.compile(r"/panel/sign-in\?next="))
    page.get_by_label("CDN id").fill(str(cdn))
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password", exact=True).press("Enter")
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()


def sign_in_with_api_key(page: Page, cdn: int, api_key: str, secret: str) -> None:
    page.goto("/panel/sign-in")
    page.get_by_label("CDN id").fill(str(cdn))
    page.get_by_role("radio", name="API key and secret").check()
    page.get_by_label("API key", exact=True).fill(api_key)
    page.get_by_label("Secret", exact=True).fill(secret)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()


def reveal(where: Page | Locator, control: str) -> None:
    """Click a pass's Show (or Hide) control (the summary of its <details>)."""
    where.locator("summary").filter(has_text=control).click()


def kpi(page: Page, name: str) -> str:
    return page.locator(f'[data-kpi="{name}"]').inner_text()


def test_sign_in_create_play_watch_revoke_sign_out(
    chromium: Browser, live_server: LiveServer, tmp_path: Path
) -> None:
    server = live_server
    set_panel_password(server)
    context = new_context(chromium, server, DESKTOP)
    page = context.new_page()
    try:
        sign_in_with_password(page, server.cdn)
        screenshot(page, tmp_path, "flow-overview-empty")

        # Create a ticket through the form.
        page.get_by_role("link", name="New ticket").click()
        expect(page.get_by_label("App")).to_have_value("demo-")
        page.get_by_label("App").fill("demo-live")
        page.get_by_label("Video").fill("mystream")
        page.get_by_label("Pass").fill("s3cret-pass")
        page.get_by_label("IP rules").fill("")
        page.get_by_label("Uses").fill("5")
        page.get_by_role("button", name="Create ticket").click()
        expect(page.get_by_text("Ticket created.")).to_be_visible()
        # The pass is out of sight until asked for: Copy still copies it all.
        expect(page.get_by_text("s3cret-pass")).to_be_hidden()
        player = page.get_by_label("Query string for the player")
        expect(player).to_be_hidden()
        query = player.input_value()
        found = re.fullmatch(r"\?key=(mystream\.[0-9a-f]{14}\.[0-9]{8})&pass=s3cret-pass", query)
        assert found, query
        key = found.group(1)
        page.get_by_role("button", name="Copy").click()
        expect(page.get_by_role("button", name="Copied")).to_be_visible()
        assert page.evaluate("navigator.clipboard.readText()") == query
        screenshot(page, tmp_path, "flow-ticket-created")
        reveal(page, "Show the query string for the player")
        expect(player).to_be_visible()
        reveal(page, "Show the pass")
        expect(page.get_by_text("s3cret-pass", exact=True)).to_be_visible()
        expect(page.locator(".facts .reveal-hide")).to_be_visible()  # the control now hides
        reveal(page, "Hide the pass")
        expect(page.get_by_text("s3cret-pass", exact=True)).to_be_hidden()

        # Watch the overview while a streaming server checks the ticket.
        page.goto("/panel/?range=1h")
        assert kpi(page, "total") == "0"
        assert play(server, key, "s3cret-pass") == (200, "")
        assert play(server, key, "wrong-pass") == (403, "Invalid Auth Token")
        # No reload: the live refresh brings the numbers and the bars.
        expect(page.locator('[data-kpi="total"]')).to_have_text("2", timeout=WAIT_MS)
        assert (kpi(page, "allowed"), kpi(page, "denied")) == ("1", "1")
        expect(page.locator("svg rect.allowed")).to_have_count(1)
        expect(page.locator("svg rect.denied")).to_have_count(1)
        expect(page.locator("#reasons-h + ol")).to_contain_text("Invalid Auth Token")
        expect(page.locator("#tickets-h + ol")).to_contain_text(key)
        expect(page.locator("#live-status")).to_contain_text("Live · updated")
        screenshot(page, tmp_path, "flow-overview-live")

        # The explorer shows both attempts, newest first, with errorcount's count.
        page.get_by_role("link", name="Attempts").click()
        expect(page.locator("[data-total]")).to_have_text("2")
        rows = page.locator("tbody tr")
        expect(rows).to_have_count(2)
        expect(rows.nth(0)).to_contain_text("Invalid Auth Token")
        expect(rows.nth(1)).to_contain_text("Allowed")
        expect(page.get_by_text("wrong-pass", exact=True)).to_be_hidden()
        reveal(rows.nth(0), "Show the pass")
        expect(rows.nth(0).get_by_text("wrong-pass", exact=True)).to_be_visible()
        expect(rows.nth(1).get_by_text("s3cret-pass", exact=True)).to_be_hidden()
        with Client(server.api, cdn=server.cdn, api_key=server.api_key, secret=server.secret) as c:
            assert c.call("sevu.errorcount", key=key)["error_count"] == 2
            time.sleep(1.05)  # the next signed call must not be a replay of this second
            assert c.call("sevu.errorcount", key=key, success=0)["error_count"] == 1
        page.get_by_label("Result").select_option("0")
        page.get_by_role("button", name="Apply filters").click()
        expect(page.locator("[data-total]")).to_have_text("1")

        # One click from a row to its ticket, then revoke with confirmation.
        rows.nth(0).get_by_role("link", name=key).click()
        expect(page.get_by_role("heading", name=key)).to_be_visible()
        # exact: an attempt row reading "…:31 Allowed" holds "1 allowed" too.
        expect(page.get_by_text("1 allowed", exact=True)).to_be_visible()
        page.get_by_role("link", name="Revoke…").click()
        expect(page.get_by_role("heading", name="Revoke this ticket?")).to_be_visible()
        page.get_by_role("button", name="Revoke ticket").click()
        expect(page.get_by_text("Ticket revoked.")).to_be_visible()
        expect(page.locator(".head-actions .pill")).to_have_text("Revoked")
        assert play(server, key, "s3cret-pass") == (403, "Ticket revoked")

        # Sign out: the session is gone, not just the cookie.
        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_text("You are signed out.")).to_be_visible()
        page.goto("/panel/tickets")
        expect(page).to_have_url(re.compile(r"/panel/sign-in\?next=%2Fpanel%2Ftickets"))
    finally:
        context.close()
    assert PASSWORD not in server.log.read_text(errors="replace")


def test_keyboard_only_at_phone_width(
    chromium: Browser, live_server: LiveServer, tmp_path: Path
) -> None:
    server = live_server
    context = new_context(chromium, server, PHONE)
    page = context.new_page()
    try:
        page.goto("/panel/sign-in")
        # The form starts focused on its first field, with a visible focus ring.
        expect(page.get_by_label("CDN id")).to_be_focused()
        assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") == "solid"
        page.keyboard.type(str(server.cdn))
        page.keyboard.press("Tab")  # to the method radios
        page.keyboard.press("ArrowRight")  # "API key and secret"
        expect(page.get_by_role("radio", name="API key and secret")).to_be_checked()
        expect(page.get_by_label("Password", exact=True)).to_be_hidden()
        page.keyboard.press("Tab")
        expect(page.get_by_label("API key", exact=True)).to_be_focused()
        page.keyboard.type(server.api_key)
        page.keyboard.press("Tab")
        page.keyboard.type(server.secret)
        page.keyboard.press("Enter")
        expect(page.get_by_role("heading", name="Overview")).to_be_visible()
        assert server.secret not in page.url and server.secret not in page.content()
        # The first Tab reaches the skip link, which jumps past the navigation.
        page.keyboard.press("Tab")
        skip = page.get_by_role("link", name="Skip to content")
        expect(skip).to_be_focused()
        expect(skip).to_be_in_viewport()
        page.keyboard.press("Enter")
        expect(page.locator("main")).to_be_focused()

        page.get_by_role("link", name="New ticket").click()
        page.get_by_label("App").fill("demo-live")
        page.get_by_label("Video").fill("mystream")
        page.get_by_label("Video").press("Enter")  # submits the form
        expect(page.get_by_text("Ticket created.")).to_be_visible()
        for path in ("/panel/", "/panel/tickets", "/panel/attempts", "/panel/sessions", page.url):
            page.goto(path)
            assert no_horizontal_scroll(page), f"{path} scrolls sideways at phone width"
        screenshot(page, tmp_path, "flow-ticket-phone")
    finally:
        context.close()


class _AttackerPage(http.server.BaseHTTPRequestHandler):
    """Another origin's page that posts a revoke form to the panel."""

    target = ""

    def do_GET(self) -> None:
        body = (
            f'<form id="f" method="post" action="{self.target}">'
            '<input type="hidden" name="csrf" value="guessed"></form>'
            '<script>document.getElementById("f").submit()</script>'
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep the test output clean


def test_csrf_and_account_isolation_in_the_browser(
    chromium: Browser, live_server: LiveServer, tmp_path: Path
) -> None:
    server = live_server
    created = usher(
        "account", "create", "--username", "rival", "--json", "--database", server.database
    )
    rival_account = json.loads(created.stdout)
    with Client(server.api, cdn=server.cdn, api_key=server.api_key, secret=server.secret) as c:
        key = c.call(
            "sevu.request", app="demo-live", video="mystream", ip="", uses=0, **{"pass": "pw"}
        )["ticket"]["key"]

    def active() -> int:
        with Client(
            server.api, cdn=server.cdn, api_key=server.api_key, secret=server.secret
        ) as client:
            time.sleep(1.05)  # one signed call per second: never a replay
            return int(client.call("sevu.status", key=key)["active"])

    owner = new_context(chromium, server, DESKTOP)
    other = new_context(chromium, server, DESKTOP)
    attacker = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _AttackerPage)
    _AttackerPage.target = f"{server.url}/panel/tickets/{key}/revoke"
    thread = threading.Thread(target=attacker.serve_forever, daemon=True)
    thread.start()
    try:
        # A page on another origin submits a revoke form in the owner's browser.
        page = owner.new_page()
        sign_in_with_api_key(page, server.cdn, server.api_key, server.secret)
        page.goto(f"http://127.0.0.1:{attacker.server_address[1]}/")
        expect(page.get_by_role("heading", name="Form refused")).to_be_visible()
        assert active() == 1

        # The same request from the panel's own page, without the token.
        page.goto("/panel/")
        status = page.evaluate(
            """async (url) => (await fetch(url, {method: "POST",
                 body: new URLSearchParams({}), credentials: "same-origin"})).status""",
            f"/panel/tickets/{key}/revoke",
        )
        assert status == 403
        assert active() == 1

        # Another account, with its own valid token, changing ids in URLs.
        intruder = other.new_page()
        sign_in_with_api_key(
            intruder, rival_account["cdn"], rival_account["api_key"], rival_account["secret"]
        )
        for path in (f"/panel/tickets/{key}", f"/panel/tickets/{key}/revoke"):
            response = intruder.goto(path)
            assert response is not None and response.status == 404
            expect(intruder.get_by_role("heading", name="Ticket not found")).to_be_visible()
        screenshot(intruder, tmp_path, "flow-not-found")
        token = intruder.locator('form[action="/panel/sign-out"] input[name="csrf"]').input_value()
        status = intruder.evaluate(
            """async ([url, csrf]) => (await fetch(url, {method: "POST",
                 body: new URLSearchParams({csrf}), credentials: "same-origin"})).status""",
            [f"/panel/tickets/{key}/revoke", token],
        )
        assert status == 404
        assert active() == 1
        intruder.goto("/panel/tickets")
        expect(intruder.get_by_text("This account has no tickets yet.")).to_be_visible()
    finally:
        attacker.shutdown()
        attacker.server_close()
        owner.close()
        other.close()


def test_screenshots_of_a_busy_account(
    chromium: Browser, live_server: LiveServer, tmp_path: Path
) -> None:
    server = live_server
    seeded = seed_busy_account(server, int(time.time()))
    desktop = new_context(chromium, server, DESKTOP)
    phone = new_context(chromium, server, PHONE)
    try:
        page = desktop.new_page()
        page.goto("/panel/sign-in")
        page.get_by_label("CDN id").fill(str(server.cdn))
        screenshot(page, tmp_path, "sign-in")
        sign_in_with_api_key(page, server.cdn, server.api_key, server.secret)
        total = int(kpi(page, "total"))
        assert total == seeded.attempts
        assert int(kpi(page, "denied")) > 70
        expect(page.locator("#tickets-h + ol li").first).to_contain_text(seeded.shared_key)
        expect(page.locator("#reasons-h + ol li").first).to_contain_text("Invalid IP Address")
        screenshot(page, tmp_path, "overview")

        page.goto("/panel/tickets")
        expect(page.locator("tbody tr")).to_have_count(seeded.tickets)
        screenshot(page, tmp_path, "tickets")
        page.goto(f"/panel/tickets/{seeded.shared_key}")
        screenshot(page, tmp_path, "ticket")
        page.goto("/panel/attempts?success=0")
        expect(page.locator("tbody tr")).to_have_count(50)
        screenshot(page, tmp_path, "attempts", full_page=False)
        page.goto("/panel/tickets/new")
        screenshot(page, tmp_path, "new-ticket")

        small = phone.new_page()
        sign_in_with_api_key(small, server.cdn, server.api_key, server.secret)
        assert no_horizontal_scroll(small)
        screenshot(small, tmp_path, "overview-phone")
        small.goto(f"/panel/tickets/{seeded.shared_key}")
        assert no_horizontal_scroll(small)
        screenshot(small, tmp_path, "ticket-phone", full_page=False)
    finally:
        desktop.close()
        phone.close()


def set_hidden(page: Page, hidden: bool) -> None:
    """Tell the page its tab is hidden (or visible again), as a browser does
    when the reader switches tabs."""
    page.evaluate(
        """(hidden) => {
            Object.defineProperty(document, "hidden", {configurable: true, get: () => hidden});
            Object.defineProperty(document, "visibilityState",
                {configurable: true, get: () => (hidden ? "hidden" : "visible")});
            document.dispatchEvent(new Event("visibilitychange"));
        }""",
        hidden,
    )


def test_older_and_newer_pages_and_no_refresh_while_hidden(
    chromium: Browser, live_server: LiveServer
) -> None:
    server = live_server
    seed_busy_account(server, int(time.time()))
    context = new_context(chromium, server, DESKTOP)
    try:
        page = context.new_page()
        sign_in_with_api_key(page, server.cdn, server.api_key, server.secret)

        # Older and Newer carry an id cursor and keep the filters.
        page.goto("/panel/attempts?success=0")
        rows = page.locator("tbody tr")
        expect(rows).to_have_count(50)
        newest = rows.all_inner_texts()
        expect(page.get_by_role("link", name="Newer")).to_have_count(0)
        page.get_by_role("link", name="Older").click()
        expect(page).to_have_url(re.compile(r"/panel/attempts\?success=0&before=\d+$"))
        expect(rows.first).not_to_have_text(newest[0])
        expect(page.get_by_label("Result")).to_have_value("0")
        assert all("Denied" in row for row in rows.all_inner_texts())
        page.get_by_role("link", name="Newer").click()
        expect(page).to_have_url(re.compile(r"/panel/attempts\?success=0&after=\d+$"))
        expect(rows).to_have_count(50)
        assert rows.all_inner_texts() == newest

        # The overview asks for nothing while its tab is hidden.
        polls: list[str] = []
        page.on("request", lambda r: polls.append(r.url) if "/panel/charts" in r.url else None)
        page.goto("/panel/?range=1h")
        status = page.locator("#live-status")
        expect(status).to_contain_text("Live · updated", timeout=WAIT_MS)
        set_hidden(page, True)
        expect(status).to_have_text("Paused while this tab is hidden.")
        before = len(polls)
        page.wait_for_timeout(11_000)  # two refresh intervals and a second
        assert len(polls) == before
        # Visible again: one refresh at once, then the usual rhythm.
        set_hidden(page, False)
        expect(status).to_contain_text("Live · updated")
        assert len(polls) == before + 1
    finally:
        context.close()


def test_watch_a_live_session_and_kick_it(
    chromium: Browser, live_server: LiveServer, tmp_path: Path
) -> None:
    server = live_server
    context = new_context(chromium, server, DESKTOP)
    try:
        page = context.new_page()
        sign_in_with_api_key(page, server.cdn, server.api_key, server.secret)
        page.get_by_role("link", name="New ticket").click()
        page.get_by_label("App").fill("demo-live")
        page.get_by_label("Video").fill("mystream")
        page.get_by_label("Pass").fill("s3cret-pass")
        page.get_by_label("Viewers at once").fill("1")
        page.get_by_role("button", name="Create ticket").click()
        expect(page.get_by_text("Ticket created.")).to_be_visible()
        expect(page.locator("[data-max-viewers]")).to_have_text("at most 1")
        key = page.url.split("/panel/tickets/")[1].split("?")[0]

        # A player starts watching: a real check against the running server.
        check = {"key": key, "pass": "s3cret-pass", "app": "demo-live", "video": "mystream"}
        started = httpx.get(f"{server.url}/usher/check", params=check, timeout=10)
        assert started.status_code == 200, started.text
        session = started.json()["session"]
        assert play(server, key, "s3cret-pass") == (403, "Too many viewers")

        # The overview, open in its own tab, says one viewer is watching.
        overview = context.new_page()
        overview.goto("/panel/?range=1h")
        watching = overview.locator('[data-kpi="watching"]')
        expect(watching).to_have_text("1")
        screenshot(overview, tmp_path, "flow-watching-now")

        # The ticket's page lists the session; kick it, asked first.
        page.reload()
        expect(page.locator("[data-watching]")).to_have_text("1")
        row = page.locator(f'tr[data-session="{session}"]')
        expect(row).to_contain_text("127.0.0.1")
        expect(row).to_contain_text("check")
        screenshot(page, tmp_path, "flow-ticket-watching")
        row.get_by_role("link", name=re.compile("^Kick")).click()
        expect(page.get_by_role("heading", name="Kick this viewer?")).to_be_visible()
        page.get_by_role("button", name="Kick viewer").click()
        expect(page.get_by_text("1 session kicked.")).to_be_visible()
        expect(page.get_by_text("Nobody is watching with this ticket now.")).to_be_visible()

        # The player's next check is refused; the overview drops to 0 by
        # itself (the live refresh), without a reload.
        again = httpx.get(f"{server.url}/usher/check", params={**check, "session": session})
        assert (again.status_code, again.json()["reason"]) == (403, "Session ended")
        expect(watching).to_have_text("0", timeout=WAIT_MS)
        expect(overview.locator("#live-status")).to_contain_text("Live · updated")

        # The history says what happened; the freed place can be taken again.
        page.get_by_role("link", name="Sessions", exact=True).click()
        history = page.locator(f'tr[data-session="{session}"]')
        expect(history).to_contain_text("kicked")
        expect(page.locator("[data-total]")).to_have_text("1")
        screenshot(page, tmp_path, "flow-sessions")
        assert play(server, key, "s3cret-pass") == (200, "")
    finally:
        context.close()


def publish(server: LiveServer, user: str, password: str, addr: str) -> int:
    """One publish check as nginx-rtmp's on_publish sends it; the status."""
    fields = {
        "call": "publish",
        "app": "demo-live",
        "name": "mystream",
        "addr": addr,
        "clientid": "1",
        "user": user,
        "pass": password,
    }
    return httpx.post(f"{server.url}/usher/nginx-rtmp", data=fields, timeout=10).status_code


def test_add_a_publisher_copy_its_url_and_see_a_denied_publish(
    chromium: Browser, live_server: LiveServer, tmp_path: Path
) -> None:
    server = live_server
    context = new_context(chromium, server, DESKTOP)
    try:
        page = context.new_page()
        sign_in_with_api_key(page, server.cdn, server.api_key, server.secret)
        page.get_by_role("link", name="Publishers").click()
        expect(page.get_by_text("No stream users yet")).to_be_visible()
        expect(page.get_by_label("App")).to_have_value("demo-")
        page.get_by_label("App").fill("demo-live")
        page.get_by_label("Stream", exact=True).fill("mystream")
        page.get_by_label("User", exact=True).fill("encoder1")
        page.get_by_role("button", name="Add publisher").click()
        expect(page.get_by_text("This is the only time Usher shows the pass")).to_be_visible()

        # The URL holds the pass: out of sight until Show, but Copy copies it.
        url_field = page.locator("#encoder-url")
        expect(url_field).to_be_hidden()
        url = url_field.input_value()
        found = re.fullmatch(
            r"rtmp://127\.0\.0\.1/demo-live/mystream\?user=encoder1&pass=([A-Za-z0-9_-]{32})", url
        )
        assert found, url
        password = found.group(1)
        page.locator('[data-copy="encoder-url"]').click()
        expect(page.locator("#encoder-url-status")).to_have_text("Copied to the clipboard.")
        assert page.evaluate("navigator.clipboard.readText()") == url
        # OBS's split: the server, and the stream key with the credentials.
        assert page.locator("#obs-server").input_value() == "rtmp://127.0.0.1/demo-live"
        page.locator('[data-copy="obs-key"]').click()
        expect(page.locator("#obs-key-status")).to_have_text("Copied to the clipboard.")
        key = f"mystream?user=encoder1&pass={password}"
        assert page.evaluate("navigator.clipboard.readText()") == key
        screenshot(page, tmp_path, "flow-publisher-added")

        # The encoder publishes with it; a guess is refused.
        assert publish(server, "encoder1", password, "198.51.100.20") == 200
        assert publish(server, "encoder1", "wrong", "192.0.2.99") == 403

        # Never shown again: the list holds the user, not the pass.
        page.get_by_role("link", name="Back to publishers").click()
        row = page.locator("tr[data-streamuser]")
        expect(row).to_have_count(1)
        expect(row).to_contain_text("encoder1")
        assert password not in page.content()

        # The publish log: the denied publish with its reason, newest first.
        page.get_by_role("link", name="Publish log").click()
        rows = page.locator("tbody tr")
        expect(rows).to_have_count(2)
        expect(rows.nth(0)).to_contain_text("192.0.2.99")
        expect(rows.nth(0)).to_contain_text("denied: wrong user or pass")
        expect(rows.nth(0)).to_contain_text("nginx-rtmp")
        expect(rows.nth(1)).to_contain_text("Allowed")
        page.get_by_label("Outcome").select_option("denied")
        page.get_by_role("button", name="Apply filters").click()
        expect(rows).to_have_count(1)
        expect(rows.nth(0)).to_contain_text("192.0.2.99")
        screenshot(page, tmp_path, "flow-publish-log")
        assert password not in page.content()

        # Replace the pass, asked first: the old one stops working.
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Publishers").click()
        page.get_by_role("link", name=re.compile("^Replace pass")).click()
        expect(page.get_by_role("heading", name="Replace this publisher's pass?")).to_be_visible()
        page.get_by_role("button", name="Replace the pass").click()
        expect(page.get_by_text("Pass replaced.")).to_be_visible()
        fresh = page.locator("#publish-pass").input_value()
        assert fresh != password
        assert publish(server, "encoder1", password, "198.51.100.20") == 403
        assert publish(server, "encoder1", fresh, "198.51.100.20") == 200

        # Remove it, asked first.
        page.get_by_role("link", name="Back to publishers").click()
        page.get_by_role("link", name=re.compile("^Remove")).click()
        page.get_by_role("button", name="Remove publisher").click()
        expect(page.get_by_text("Stream user removed.")).to_be_visible()
        assert publish(server, "encoder1", fresh, "198.51.100.20") == 403
    finally:
        context.close()
    written = server.log.read_text(errors="replace")
    assert "POST /panel/publishers/new" in written, "the access log is not being captured"
    assert password not in written and fresh not in written
