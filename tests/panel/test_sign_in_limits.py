"""The panel's sign-in throttles: whose address counts, and per account."""

from __future__ import annotations

import asyncio
import dataclasses
import re

import httpx
import pytest

from tests.conftest import Clock, Harness
from tests.panel.conftest import Panel, browser, trust_proxies
from usher import accounts
from usher.config import DEFAULT_PANEL_ACCOUNT_LOCK as ACCOUNT_LOCK
from usher.config import DEFAULT_PANEL_ADDRESS_FAILURES as ADDRESS_LIMIT
from usher.passwords import hash_password
from usher.tickets.model import Account
from usher.web.panel.limits import SignInLimiter
from usher.web.panel.signin import ACCOUNT_THROTTLED, ADDRESS_THROTTLED

pytestmark = pytest.mark.anyio

PASSWORD = "correct horse battery"
PROXY = "10.0.0.2"
#: The per-account limit in the tests that reach it (see set_limits).
ACCOUNT_LIMIT = 4
CSRF = re.compile(r'name="csrf" value="[^"]*"')


def set_limits(harness: Harness, *, address: int = ADDRESS_LIMIT, account: int) -> None:
    """Run the harness app as if started with other failure limits (fewer
    failures to reach a lock keep these tests quick: each one is a scrypt)."""
    state = harness.app.state
    state.settings = dataclasses.replace(
        state.settings, panel_address_failures=address, panel_account_failures=account
    )
    state.sign_in_limiter = SignInLimiter.from_settings(state.settings)


async def fail(harness: Harness, peer: str, headers: dict[str, str] | None = None) -> int:
    """One wrong API-secret sign-in from a fresh browser; its status."""
    async with browser(harness, harness.account, peer) as http:
        http.headers.update(headers or {})
        return (await Panel(http, harness.account).sign_in(secret="nope")).status_code


async def by_password(
    harness: Harness,
    peer: str,
    password: str,
    *,
    cdn: str | None = None,
    account: Account | None = None,
) -> httpx.Response:
    """A password sign-in from a fresh browser at ``peer``."""
    who = account or harness.account
    async with browser(harness, who, peer) as http:
        fields = {"method": "password", "password": password, "secret": ""}
        return await Panel(http, who).sign_in(**fields, **({"cdn": cdn} if cdn else {}))


async def test_a_new_x_real_ip_per_try_does_not_escape_the_throttle(harness: Harness) -> None:
    # No proxy is trusted by default: loopback's X-Real-IP is not the browser.
    for n in range(ADDRESS_LIMIT):
        assert await fail(harness, "127.0.0.1", {"x-real-ip": f"198.51.100.{n}"}) == 401
    assert await fail(harness, "127.0.0.1", {"x-real-ip": "198.51.100.200"}) == 429
    assert await fail(harness, "127.0.0.1", {"x-forwarded-for": "198.51.100.201"}) == 429


async def test_browsers_behind_a_trusted_proxy_are_throttled_separately(harness: Harness) -> None:
    trust_proxies(harness, "10.0.0.0/8")
    for _ in range(ADDRESS_LIMIT):
        assert await fail(harness, PROXY, {"x-real-ip": "203.0.113.1"}) == 401
    assert await fail(harness, PROXY, {"x-real-ip": "203.0.113.1"}) == 429
    # The same browser, named by X-Forwarded-For (what it made up on the left ignored).
    assert await fail(harness, PROXY, {"x-forwarded-for": "198.51.100.7, 203.0.113.1"}) == 429
    async with browser(harness, harness.account, PROXY) as http:
        http.headers["x-real-ip"] = "203.0.113.2"
        assert (await Panel(http, harness.account).sign_in()).status_code == 303
    async with browser(harness, harness.account, PROXY) as http:
        http.headers["x-forwarded-for"] = "203.0.113.1, 203.0.113.3, 10.0.0.9"
        assert (await Panel(http, harness.account).sign_in()).status_code == 303
    # The proxy itself was never blamed.
    async with browser(harness, harness.account, PROXY) as http:
        assert (await Panel(http, harness.account).sign_in()).status_code == 303


async def test_headers_from_an_untrusted_peer_are_ignored(harness: Harness) -> None:
    trust_proxies(harness, "10.0.0.0/8")
    for n in range(ADDRESS_LIMIT):
        headers = {"x-real-ip": f"10.0.1.{n}", "x-forwarded-for": f"198.51.100.{n}"}
        assert await fail(harness, "203.0.113.50", headers) == 401
    assert await fail(harness, "203.0.113.50", {"x-real-ip": "198.51.100.99"}) == 429


@pytest.mark.parametrize(
    "header",
    [
        {"x-real-ip": "garbage-{n}"},
        {"x-real-ip": "198.51.100.{n}:443"},
        {"x-forwarded-for": "198.51.100.{n}, unknown"},
    ],
    ids=["not-an-address", "with-port", "bad-hop"],
)
async def test_header_values_that_are_not_addresses_are_ignored(
    harness: Harness, header: dict[str, str]
) -> None:
    trust_proxies(harness, "10.0.0.0/8")
    for n in range(ADDRESS_LIMIT):
        sent = {name: value.format(n=n) for name, value in header.items()}
        assert await fail(harness, PROXY, sent) == 401
    # They all counted against the proxy itself.
    assert await fail(harness, PROXY) == 429


async def test_an_ipv6_subscriber_cannot_escape_by_changing_address(harness: Harness) -> None:
    for n in range(ADDRESS_LIMIT):
        assert await fail(harness, f"2001:db8:0:1::{n + 1:x}") == 401
    assert await fail(harness, "2001:db8:0:1:ffff::1") == 429
    assert await fail(harness, "2001:db8:0:2::1") == 401


async def test_concurrent_guesses_cannot_pass_the_limit(harness: Harness) -> None:
    async with browser(harness, harness.account) as http:
        panel = Panel(http, harness.account)
        await http.get("/panel/sign-in")
        statuses = await asyncio.gather(*(panel.sign_in(secret="nope") for _ in range(30)))
    codes = sorted(response.status_code for response in statuses)
    assert codes == [401] * ADDRESS_LIMIT + [429] * (30 - ADDRESS_LIMIT)


async def test_one_account_locks_across_many_addresses(harness: Harness, clock: Clock) -> None:
    set_limits(harness, account=ACCOUNT_LIMIT)
    storage = harness.app.state.storage
    await storage.set_panel_password(harness.account.cdn, hash_password(PASSWORD), now=1)
    for n in range(ACCOUNT_LIMIT):
        assert (await by_password(harness, f"198.51.{n}.1", "wrong password")).status_code == 401
    locked = await by_password(harness, "192.0.2.1", PASSWORD)  # right, from a fresh address
    assert locked.status_code == 429
    assert ACCOUNT_THROTTLED.format(wait="5 minutes") in locked.text
    assert locked.headers["retry-after"] == str(ACCOUNT_LOCK)
    # The owner can still come in with the API key and secret.
    async with browser(harness, harness.account, "192.0.2.1") as http:
        assert (await Panel(http, harness.account).sign_in()).status_code == 303
    # Other accounts are not affected.
    rival = await accounts.create(storage, "rival")
    await storage.set_panel_password(rival.cdn, hash_password(PASSWORD), now=1)
    assert (await by_password(harness, "192.0.2.2", PASSWORD, account=rival)).status_code == 303
    # The lock is short, and the count starts afresh after it.
    clock.advance(ACCOUNT_LOCK - 1)
    assert (await by_password(harness, "192.0.2.3", PASSWORD)).status_code == 429
    clock.advance(1)
    assert (await by_password(harness, "192.0.2.4", "wrong password")).status_code == 401
    assert (await by_password(harness, "192.0.2.5", PASSWORD)).status_code == 303


async def test_unknown_cdns_are_throttled_like_real_ones(harness: Harness) -> None:
    set_limits(harness, account=ACCOUNT_LIMIT)
    storage = harness.app.state.storage
    await storage.set_panel_password(harness.account.cdn, hash_password(PASSWORD), now=1)
    bare = await accounts.create(storage, "bare")  # no panel password at all

    async def answers(cdn: str, prefix: str) -> list[tuple[int, str]]:
        seen = []
        for n in range(ACCOUNT_LIMIT + 2):
            response = await by_password(harness, f"{prefix}.{n}", "wrong password", cdn=cdn)
            # The page but for what differs per browser: its CSRF token, the echoed cdn.
            page = CSRF.sub("", response.text).replace(f'value="{cdn}"', "")
            seen.append((response.status_code, page))
        return seen

    real = await answers(str(harness.account.cdn), "198.51.100")
    assert await answers("999999", "198.51.101") == real
    assert await answers(str(bare.cdn), "198.51.102") == real
    assert [status for status, _ in real] == [401] * ACCOUNT_LIMIT + [429, 429]
    # Leading zeros name the same account, so they are no way around the lock.
    sneaky = await by_password(harness, "192.0.2.9", PASSWORD, cdn=f"000{harness.account.cdn}")
    assert sneaky.status_code == 429


async def test_the_address_lock_is_reported_before_the_account_lock(harness: Harness) -> None:
    set_limits(harness, address=3, account=3)
    for _ in range(3):
        assert (await by_password(harness, "198.51.100.1", "wrong password")).status_code == 401
    blocked = await by_password(harness, "198.51.100.1", "wrong password")
    assert ADDRESS_THROTTLED.format(wait="10 minutes") in blocked.text
