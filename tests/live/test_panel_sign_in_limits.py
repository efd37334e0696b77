"""The panel's sign-in throttle in a real ``usher serve``: whose forwarding
headers it believes comes from ``USHER_PANEL_TRUSTED_PROXIES``, and a real
socket's peer address is what it counts otherwise."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.live.conftest import LiveServer

pytestmark = pytest.mark.slow

#: The proxy: a second loopback address, which the server is told to trust.
PROXY = "127.0.0.2"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture
def server(
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest, database_url: str
) -> LiveServer:
    # database_url is named so that this test runs once per backend, like live_server.
    monkeypatch.setenv("USHER_PANEL_TRUSTED_PROXIES", PROXY)
    served: LiveServer = request.getfixturevalue("live_server")
    return served


def sign_in(server: LiveServer, source: str, secret: str, headers: dict[str, str]) -> int:
    """One API-key sign-in from a fresh browser whose connection comes from
    ``source``; its status."""
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, base_url=server.url, timeout=10) as http:
        form = http.get("/panel/sign-in")
        found = _CSRF.search(form.text)
        assert found is not None, form.text
        fields = {
            "csrf": found.group(1),
            "cdn": str(server.cdn),
            "method": "api",
            "api_key": server.api_key,
            "secret": secret,
        }
        return http.post("/panel/sign-in", data=fields, headers=headers).status_code


def test_only_the_configured_proxy_names_the_browser(server: LiveServer) -> None:
    # Loopback is not the configured proxy: a new X-Real-IP per try is no escape.
    for n in range(10):
        headers = {"x-real-ip": f"198.51.100.{n}"}
        assert sign_in(server, "127.0.0.1", "nope", headers) == 401
    assert sign_in(server, "127.0.0.1", "nope", {"x-real-ip": "198.51.100.99"}) == 429
    # Nor is X-Forwarded-For (uvicorn must not rewrite the peer from it either).
    assert sign_in(server, "127.0.0.1", "nope", {"x-forwarded-for": "198.51.100.98"}) == 429
    # Through the proxy, each browser has its own count.
    for _ in range(10):
        assert sign_in(server, PROXY, "nope", {"x-real-ip": "203.0.113.1"}) == 401
    assert sign_in(server, PROXY, server.secret, {"x-real-ip": "203.0.113.1"}) == 429
    forwarded = {"x-forwarded-for": "203.0.113.1, 203.0.113.2"}
    assert sign_in(server, PROXY, server.secret, forwarded) == 303
