"""In-process control-panel tests: a browser-like client over the harness app."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.conftest import Harness
from usher import accounts
from usher.config import parse_networks
from usher.tickets.model import Account

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_in(html: str) -> str:
    found = _CSRF.search(html)
    assert found is not None, "the page has no form with a CSRF token"
    return found.group(1)


@dataclass
class Panel:
    """One browser: its own cookie jar, signed in as one account."""

    http: httpx.AsyncClient
    account: Account
    csrf: str = ""

    async def sign_in(self, **override: str) -> httpx.Response:
        """Sign in with the API key and secret; returns the POST's response."""
        form = await self.http.get("/panel/sign-in")
        fields = {
            "csrf": csrf_in(form.text),
            "cdn": str(self.account.cdn),
            "method": "api",
            "api_key": self.account.api_key,
            "secret": self.account.secret,
            **override,
        }
        response = await self.http.post("/panel/sign-in", data=fields)
        if response.status_code == 303 and response.headers["location"].startswith("/panel/"):
            overview = await self.http.get("/panel/")
            if overview.status_code == 200:
                self.csrf = csrf_in(overview.text)
        return response

    async def get(self, path: str, **params: Any) -> httpx.Response:
        return await self.http.get(path, params=params)

    async def post(self, path: str, data: dict[str, str], *, csrf: bool = True) -> httpx.Response:
        body = {"csrf": self.csrf, **data} if csrf else data
        return await self.http.post(path, data=body)

    async def create_ticket(self, **fields: str) -> str:
        """Create a ticket through the form; its key."""
        values = {
            "app": f"{self.account.username}-live",
            "video": "mystream",
            "pass": "pw-1234",
            "ip": "",
            "uses": "0",
            "expire": "",
            "active": "1",
            **fields,
        }
        response = await self.post("/panel/tickets/new", values)
        assert response.status_code == 303, response.text
        location = response.headers["location"]
        assert location.endswith("?created=1")
        return httpx.URL(location).path.removeprefix("/panel/tickets/")


def browser(harness: Harness, account: Account, client: str = "127.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=harness.app, client=(client, 40001))
    return httpx.AsyncClient(transport=transport, base_url="http://usher.test")


def trust_proxies(harness: Harness, networks: str) -> None:
    """Run the harness app as if started with ``USHER_PANEL_TRUSTED_PROXIES=networks``."""
    state = harness.app.state
    trusted = parse_networks(networks, "USHER_PANEL_TRUSTED_PROXIES")
    state.settings = dataclasses.replace(state.settings, panel_trusted_proxies=trusted)


@pytest.fixture
async def panel(harness: Harness) -> AsyncIterator[Panel]:
    """The harness account, signed in."""
    async with browser(harness, harness.account) as http:
        signed = Panel(http, harness.account)
        response = await signed.sign_in()
        assert response.status_code == 303, response.text
        yield signed


@pytest.fixture
async def rival(harness: Harness) -> AsyncIterator[Panel]:
    """A second account ("rival"), signed in with its own browser."""
    account = await accounts.create(harness.app.state.storage, "rival")
    async with browser(harness, account) as http:
        signed = Panel(http, account)
        response = await signed.sign_in()
        assert response.status_code == 303, response.text
        yield signed
