"""OvenMediaEngine's AdmissionWebhooks against ``POST /usher/ome``, driven by
the fixtures in tests/fixtures/ome: every answer OME reads, the signature,
and the caller rules shared with the other callbacks."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api.test_hostile_input import _assert_no_server_error
from tests.api.test_srs_mediamtx import fixture, last_attempt
from tests.conftest import Harness
from usher.adapters import ome as ome_wire
from usher.protocol.errors import StorageUnavailable
from usher.web.app import ROUTES

pytestmark = pytest.mark.anyio

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ome"
DOCS = Path(__file__).resolve().parents[2] / "docs"
SECRET = "5b0a7e1c9d3f4a6b8c2e0f1d3a5b7c9e"
HOUR_MS = 3_600_000

#: (file, notice, the viewer address Usher must check)
OPENINGS = [
    ("webrtc.json", "opening", "192.0.2.43"),
    ("llhls.json", "opening", "198.51.100.20"),  # real_ip, not the proxy
    ("srt.json", "opening", "198.51.100.77"),
    ("srt.json", "opening_streamid_parameter", "198.51.100.77"),
]


def use_secret(harness: Harness, secret: str) -> None:
    """Run the harness's Usher with ``USHER_OME_SECRET`` set."""
    state = harness.app.state
    state.settings = dataclasses.replace(state.settings, ome_secret=secret)


async def post(
    harness: Harness, body: dict[str, Any] | bytes, signature: str | None = None
) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"content-type": "application/json"}
    if signature is not None:
        headers["x-ome-signature"] = signature
    return await harness.http.post("/usher/ome", content=content, headers=headers)


async def ticket_for_demo_live(harness: Harness, **fields: object) -> dict[str, Any]:
    return await harness.ticket(app="demo-live", video="livestream", expire="+1 hour", **fields)


def warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "usher.integrations"]


# -- playback ------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "part", "ip"), OPENINGS)
async def test_an_opening_is_allowed_for_the_tickets_lifetime(
    harness: Harness, name: str, part: str, ip: str
) -> None:
    ticket = await ticket_for_demo_live(harness, uses=1)
    response = await post(harness, fixture("ome", name, part, ticket["key"], "pw"))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"allowed": True, "lifetime": HOUR_MS, "reason": ""}
    attempt = await last_attempt(harness, ticket["key"])
    assert (attempt["success"], attempt["app"], attempt["video"], attempt["ip"]) == (
        1,
        "demo-live",
        "livestream",
        ip,
    )
    # A second opening exceeds uses=1: refused, still with a 200.
    again = await post(harness, fixture("ome", name, part, ticket["key"], "pw"))
    assert (again.status_code, again.json()) == (
        200,
        {"allowed": False, "reason": "Ticket uses exhausted"},
    )


async def test_the_lifetime_is_what_is_left_of_the_ticket(harness: Harness) -> None:
    ticket = await ticket_for_demo_live(harness)
    harness.clock.advance(1800.5)
    response = await post(harness, fixture("ome", "webrtc.json", "opening", ticket["key"], "pw"))
    # Usher's clock counts whole seconds.
    assert response.json() == {"allowed": True, "lifetime": HOUR_MS // 2, "reason": ""}


@pytest.mark.parametrize(("name", "part", "ip"), OPENINGS)
async def test_a_refusal_is_200_with_the_reason(
    harness: Harness, name: str, part: str, ip: str
) -> None:
    ticket = await ticket_for_demo_live(harness)
    response = await post(harness, fixture("ome", name, part, ticket["key"], "wrong"))
    assert (response.status_code, response.json()) == (
        200,
        {"allowed": False, "reason": "Invalid Auth Token"},
    )
    attempt = await last_attempt(harness, ticket["key"])
    assert (attempt["success"], attempt["reason"], attempt["ip"]) == (0, "Invalid Auth Token", ip)


@pytest.mark.parametrize("name", ["webrtc.json", "srt.json"])
async def test_a_closing_is_answered_with_an_empty_object(harness: Harness, name: str) -> None:
    ticket = await ticket_for_demo_live(harness)
    opened = await post(harness, fixture("ome", name, "opening", ticket["key"], "pw"))
    assert opened.json()["allowed"] is True
    _, live = await harness.call("sevu.sessions", key=ticket["key"], open=1)
    [session] = live["sessions"]
    assert (session["protocol"], session["end_reason"]) == ("ome", None)
    closed = await post(harness, fixture("ome", name, "closing", ticket["key"], "pw"))
    assert (closed.status_code, closed.content) == (200, b"{}")
    _, log = await harness.call("sevu.errorlog", key=ticket["key"])
    assert len(log["attempts"]) == 1  # the opening only
    _, history = await harness.call("sevu.sessions", key=ticket["key"])
    [ended] = history["sessions"]
    assert (ended["id"], ended["end_reason"]) == (session["id"], "done")


async def test_a_storage_failure_refuses_with_a_200(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    ticket = await ticket_for_demo_live(harness)

    async def broken(*args: object, **kwargs: object) -> None:
        raise StorageUnavailable("disk on fire")

    monkeypatch.setattr(harness.app.state.storage, "record_check", broken)
    response = await post(harness, fixture("ome", "webrtc.json", "opening", ticket["key"], "pw"))
    assert (response.status_code, response.json()) == (
        200,
        {"allowed": False, "reason": "Usher storage unavailable."},
    )


# -- publishing ----------------------------------------------------------------------


async def test_a_publish_is_not_a_playback_attempt(harness: Harness) -> None:
    """Publishes are checked against the stream users (tests/api/test_publishing.py)."""
    response = await post(harness, fixture("ome", "rtmp.json", "opening", "", ""))
    answer = response.json()
    assert answer["allowed"] is False and answer["reason"].startswith("denied: no stream user")
    _, count = await harness.call("sevu.errorcount")
    assert count["error_count"] == 0


async def test_a_publish_closing_is_answered_with_an_empty_object(harness: Harness) -> None:
    response = await post(harness, fixture("ome", "rtmp.json", "closing", "", ""))
    assert (response.status_code, response.content) == (200, b"{}")


# -- bad input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        b"\xff\xfe{\x00",
        b'{"client": {"address": "192.0.2.1"}}',
        b'{"request": {"direction": "sideways", "status": "opening", "url": "ws://h/a/b"}}',
        b'{"request": {"direction": "outgoing", "status": "open", "url": "ws://h/a/b"}}',
        b'{"request": {"direction": "outgoing", "status": "opening"}}',
    ],
    ids=["garbage", "array", "non-utf8", "no-request", "direction", "status", "no-url"],
)
async def test_a_malformed_body_is_refused_with_a_sentence(
    harness: Harness, caplog: pytest.LogCaptureFixture, body: bytes
) -> None:
    response = await post(harness, body)
    assert response.status_code == 200
    answer = response.json()
    assert answer["allowed"] is False
    assert answer["reason"].endswith(
        "point only OvenMediaEngine's AdmissionWebhooks at /usher/ome."
    )
    assert len(warnings(caplog)) == 1  # logged once
    _, count = await harness.call("sevu.errorcount")
    assert count["error_count"] == 0


async def test_a_body_over_64_kib_is_refused_with_a_200(harness: Harness) -> None:
    body = fixture("ome", "webrtc.json", "opening", "k" * 70_000, "pw")
    response = await post(harness, body)
    assert response.status_code == 200
    assert response.json()["allowed"] is False
    assert "64 KiB" in response.json()["reason"]


# -- the signature --------------------------------------------------------------------


async def test_a_signed_opening_is_checked_when_the_secret_is_set(harness: Harness) -> None:
    use_secret(harness, SECRET)
    ticket = await ticket_for_demo_live(harness)
    body = json.dumps(fixture("ome", "webrtc.json", "opening", ticket["key"], "pw")).encode()
    response = await post(harness, body, ome_wire.signature(body, SECRET))
    assert response.json() == {"allowed": True, "lifetime": HOUR_MS, "reason": ""}
    padded = await post(harness, body, ome_wire.signature(body, SECRET) + "=")
    assert padded.json()["allowed"] is True


@pytest.mark.parametrize(
    "signature",
    [None, "", "not-a-signature", "forged"],
    ids=["missing", "empty", "garbage", "other-secret"],
)
async def test_a_bad_or_missing_signature_is_403_and_logs_nothing(
    harness: Harness, caplog: pytest.LogCaptureFixture, signature: str | None
) -> None:
    use_secret(harness, SECRET)
    ticket = await ticket_for_demo_live(harness)
    body = json.dumps(fixture("ome", "webrtc.json", "opening", ticket["key"], "pw")).encode()
    if signature == "forged":
        signature = ome_wire.signature(body, SECRET + "x")
    caplog.clear()
    response = await post(harness, body, signature)
    assert response.status_code == 403
    assert "USHER_OME_SECRET" in response.text
    assert warnings(caplog) == []
    _, log = await harness.call("sevu.errorlog", key=ticket["key"])
    assert log["code"] == 2040  # no attempt logged


async def test_a_signature_over_another_body_is_403(harness: Harness) -> None:
    use_secret(harness, SECRET)
    ticket = await ticket_for_demo_live(harness)
    body = json.dumps(fixture("ome", "webrtc.json", "opening", ticket["key"], "pw")).encode()
    tampered = body.replace(b"192.0.2.43", b"192.0.2.99")
    response = await post(harness, tampered, ome_wire.signature(body, SECRET))
    assert response.status_code == 403


async def test_the_signature_is_not_checked_when_no_secret_is_set(harness: Harness) -> None:
    ticket = await ticket_for_demo_live(harness)
    body = fixture("ome", "webrtc.json", "opening", ticket["key"], "pw")
    response = await post(harness, body, "whatever OME sends")
    assert response.json()["allowed"] is True


async def test_the_recorded_signed_bodies_are_accepted(harness: Harness) -> None:
    signed = json.loads((FIXTURES / "signed.json").read_text())
    use_secret(harness, signed["secret"])
    for example in signed["examples"]:
        response = await post(harness, example["body"].encode(), example["signature"])
        assert response.status_code == 200, example["name"]
        # The examples' ticket does not exist here: checked, and refused.
        assert response.json() in ({}, {"allowed": False, "reason": "Invalid Auth Token"})


# -- callers ---------------------------------------------------------------------------


async def test_callers_outside_the_allow_list_are_refused_first(harness: Harness) -> None:
    ticket = await ticket_for_demo_live(harness)
    body = fixture("ome", "webrtc.json", "opening", ticket["key"], "pw")
    transport = httpx.ASGITransport(app=harness.app, client=("192.0.2.50", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://usher.test") as outsider:
        response = await outsider.post("/usher/ome", json=body)
    assert response.status_code == 403
    assert "USHER_CALLBACK_ALLOW" in response.text
    _, log = await harness.call("sevu.errorlog", key=ticket["key"])
    assert log["code"] == 2040


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
_BODIES = st.one_of(
    st.binary(max_size=1024),
    st.builds(
        lambda client, request: json.dumps({"client": client, "request": request}).encode(),
        st.dictionaries(st.sampled_from(["address", "port", "real_ip"]), JSON_VALUES),
        st.fixed_dictionaries(
            {
                "direction": st.sampled_from(["outgoing", "incoming"]) | JSON_VALUES,
                "status": st.sampled_from(["opening", "closing"]) | JSON_VALUES,
                "url": st.text(max_size=80).map(lambda tail: "ws://h/" + tail) | JSON_VALUES,
            }
        ),
    ),
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=_BODIES, signature=st.one_of(st.none(), st.text(max_size=40)), signed=st.booleans())
async def test_any_body_gets_no_5xx(
    harness: Harness,
    caplog: pytest.LogCaptureFixture,
    body: bytes,
    signature: str | None,
    signed: bool,
) -> None:
    use_secret(harness, SECRET if signed else "")
    headers = {b"content-type": b"application/json"}
    if signature is not None:
        headers[b"x-ome-signature"] = signature.encode("utf-8", "surrogatepass")
    caplog.clear()
    response = await harness.http.post("/usher/ome", content=body, headers=headers)
    _assert_no_server_error(response.status_code, response.text, caplog)
    if response.status_code == 200:
        answer = response.json()
        assert answer == {} or isinstance(answer["allowed"], bool)


# -- the shipped configuration ------------------------------------------------------------


def test_the_shipped_server_xml_points_at_the_endpoint() -> None:
    paths = {getattr(route, "path", "") for route in ROUTES}
    server_xml = (DOCS / "ome" / "Server.xml").read_text()
    assert "/usher/ome" in paths
    assert "<ControlServerUrl>http://127.0.0.1:8080/usher/ome</ControlServerUrl>" in server_xml
    for element in ("<AdmissionWebhooks>", "<SecretKey>", "<Timeout>", "<Enables>"):
        assert element in server_xml
    assert "<Publishers>webrtc,llhls,srt</Publishers>" in server_xml
    assert "<Providers>rtmp,webrtc,srt</Providers>" in server_xml
