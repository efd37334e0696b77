"""OvenMediaEngine's admission requests against a real ``usher serve`` that
reads ``USHER_OME_SECRET`` from its environment: signed bodies as OME sends
them, byte for byte, to the route the shipped Server.xml names."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.api.test_srs_mediamtx import fixture
from tests.live.conftest import LiveServer, request_ticket
from usher.adapters import ome as ome_wire
from usher.client import Client

pytestmark = pytest.mark.slow

SECRET = "live-ome-secret-3f9a1c"


@pytest.fixture
def database_url(db_path: object) -> str:
    # The signature and the answers live in the HTTP layer; both backends
    # run the same endpoint in tests/api/test_ome.py.
    return f"sqlite:///{db_path}"


@pytest.fixture
def server_env() -> dict[str, str]:
    return {"USHER_OME_SECRET": SECRET}


def admission(server: LiveServer, body: bytes, signature: str | None) -> httpx.Response:
    headers = {"content-type": "application/json", "accept": "application/json"}
    if signature is not None:
        headers["x-ome-signature"] = signature
    return httpx.post(f"{server.url}/usher/ome", content=body, headers=headers, timeout=10)


def test_signed_admission_requests_are_answered_and_forged_ones_refused(
    live_server: LiveServer,
) -> None:
    with Client(
        live_server.api, cdn=live_server.cdn, api_key=live_server.api_key, secret=live_server.secret
    ) as client:
        key = request_ticket(client, video="livestream", expire="+1 hour")

    def body(part: str) -> bytes:
        notice = fixture("ome", "webrtc.json", part, key, "pw")
        return json.dumps(notice, separators=(",", ":")).encode()

    opening = body("opening")
    allowed = admission(live_server, opening, ome_wire.signature(opening, SECRET))
    assert allowed.status_code == 200
    answer = allowed.json()
    assert (answer["allowed"], answer["reason"]) == (True, "")
    assert 3_590_000 <= answer["lifetime"] <= 3_600_000

    assert admission(live_server, opening, None).status_code == 403
    assert admission(live_server, opening, ome_wire.signature(opening, "other")).status_code == 403

    closing = body("closing")
    closed = admission(live_server, closing, ome_wire.signature(closing, SECRET))
    assert (closed.status_code, closed.content) == (200, b"{}")
    assert "Traceback" not in live_server.log.read_text(errors="replace")
