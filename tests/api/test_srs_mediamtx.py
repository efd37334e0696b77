"""SRS and MediaMTX callbacks, driven by the fixtures in tests/fixtures/:
one request body per server version, and the exact replies each server
reads as allow or deny."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Harness
from usher.web.app import ROUTES

pytestmark = pytest.mark.anyio

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
DOCS = Path(__file__).resolve().parents[2] / "docs"
SRS_VERSIONS = sorted(path.name for path in (FIXTURES / "srs").glob("*.json"))
MEDIAMTX_VERSIONS = sorted(path.name for path in (FIXTURES / "mediamtx").glob("*.json"))


def fill(value: Any, key: str, password: str) -> Any:
    if isinstance(value, str):
        return value.replace("{key}", key).replace("{pass}", password)
    if isinstance(value, dict):
        return {name: fill(item, key, password) for name, item in value.items()}
    return value


def fixture(server: str, name: str, part: str, key: str, password: str) -> dict[str, Any]:
    document = json.loads((FIXTURES / server / name).read_text())
    body: dict[str, Any] = fill(document[part], key, password)
    return body


async def last_attempt(harness: Harness, key: str) -> dict[str, Any]:
    _, body = await harness.call("sevu.errorlog", key=key)
    attempts: list[dict[str, Any]] = body["attempts"]
    return attempts[-1]


# -- SRS ------------------------------------------------------------------------------


def test_there_are_fixtures_for_several_versions() -> None:
    assert len(SRS_VERSIONS) >= 3 and len(MEDIAMTX_VERSIONS) >= 3


@pytest.mark.parametrize("version", SRS_VERSIONS)
async def test_srs_allow_is_200_and_body_0(harness: Harness, version: str) -> None:
    ticket = await harness.ticket(app="demo-live", video="livestream", uses=1)
    body = fixture("srs", version, "on_play", ticket["key"], "pw")
    response = await harness.http.post("/usher/srs", json=body)
    assert (response.status_code, response.content) == (200, b"0")
    attempt = await last_attempt(harness, ticket["key"])
    assert attempt["success"] == 1
    assert (attempt["app"], attempt["video"], attempt["ip"]) == (
        "demo-live",
        "livestream",
        body["ip"],
    )
    assert attempt["pageurl"] == body.get("pageUrl", "")
    # A second play exceeds uses=1: refused with SRS's 403 and a JSON reason.
    response = await harness.http.post("/usher/srs", json=body)
    assert response.status_code == 403
    assert response.json() == {"code": 403, "allowed": False, "reason": "Ticket uses exhausted"}


@pytest.mark.parametrize("version", SRS_VERSIONS)
async def test_srs_deny_is_403_with_the_reason(harness: Harness, version: str) -> None:
    ticket = await harness.ticket(app="demo-live", video="livestream")
    body = fixture("srs", version, "on_play", ticket["key"], "wrong")
    response = await harness.http.post("/usher/srs", json=body)
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"code": 403, "allowed": False, "reason": "Invalid Auth Token"}


@pytest.mark.parametrize("version", SRS_VERSIONS)
async def test_srs_on_stop_is_acknowledged_without_a_check(harness: Harness, version: str) -> None:
    ticket = await harness.ticket(app="demo-live", video="livestream")
    body = fixture("srs", version, "on_stop", ticket["key"], "pw")
    response = await harness.http.post("/usher/srs", json=body)
    assert (response.status_code, response.content) == (200, b"0")
    _, log = await harness.call("sevu.errorlog", key=ticket["key"])
    assert log["code"] == 2040  # nothing logged


async def sessions(harness: Harness, key: str, **filters: object) -> list[dict[str, Any]]:
    """The ticket's sessions in ``sevu.sessions``, newest first."""
    _, body = await harness.call("sevu.sessions", key=key, **filters)
    found: list[dict[str, Any]] = body.get("sessions", [])
    return found


def _other_client(body: dict[str, Any]) -> dict[str, Any]:
    """The same hook from another player of the same SRS."""
    client_id = body["client_id"]
    return {**body, "client_id": client_id + 1 if isinstance(client_id, int) else "other7"}


@pytest.mark.parametrize("version", SRS_VERSIONS)
async def test_srs_on_play_opens_a_session_and_on_stop_ends_it(
    harness: Harness, version: str
) -> None:
    ticket = await harness.ticket(app="demo-live", video="livestream", uses=0, max_viewers=1)
    key = ticket["key"]
    play = fixture("srs", version, "on_play", key, "pw")
    stop = fixture("srs", version, "on_stop", key, "pw")
    response = await harness.http.post("/usher/srs", json=play)
    assert (response.status_code, response.content) == (200, b"0")
    [opened] = await sessions(harness, key, open=1)
    assert (opened["protocol"], opened["app"], opened["video"], opened["ip"]) == (
        "srs",
        "demo-live",
        "livestream",
        play["ip"],
    )
    assert (opened["ended_date"], opened["end_reason"]) == (None, None)
    # The open session holds the ticket's one place.
    crowded = await harness.http.post("/usher/srs", json=_other_client(play))
    assert crowded.json() == {"code": 403, "allowed": False, "reason": "Too many viewers"}

    harness.clock.advance(30)
    response = await harness.http.post("/usher/srs", json=stop)
    assert (response.status_code, response.content) == (200, b"0")
    [ended] = await sessions(harness, key)
    assert (ended["id"], ended["end_reason"], ended["seconds"]) == (opened["id"], "done", 30)
    assert ended["ended_date"] is not None
    # The place is free again: the other player starts.
    again = await harness.http.post("/usher/srs", json=_other_client(play))
    assert (again.status_code, again.content) == (200, b"0")
    assert [s["end_reason"] for s in await sessions(harness, key)] == [None, "done"]


@pytest.mark.parametrize("version", SRS_VERSIONS)
async def test_srs_on_stop_of_another_player_leaves_the_session_open(
    harness: Harness, version: str
) -> None:
    ticket = await harness.ticket(app="demo-live", video="livestream", uses=0)
    play = fixture("srs", version, "on_play", ticket["key"], "pw")
    stop = fixture("srs", version, "on_stop", ticket["key"], "pw")
    assert (await harness.http.post("/usher/srs", json=play)).status_code == 200
    assert (await harness.http.post("/usher/srs", json=_other_client(stop))).status_code == 200
    assert [s["end_reason"] for s in await sessions(harness, ticket["key"])] == [None]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"not json", 400),
        (b"[1, 2]", 400),
        (b'{"action": 7}', 400),
        (b"\xff\xfe{\x00", 400),
    ],
    ids=["garbage", "array", "bad-action", "non-utf8"],
)
async def test_srs_unusable_hooks_are_refused_with_a_reason(
    harness: Harness, body: bytes, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    response = await harness.http.post(
        "/usher/srs", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == status
    assert response.json()["code"] == status and response.json()["reason"].endswith(".")
    warnings = [r for r in caplog.records if r.name == "usher.integrations"]
    assert len(warnings) == 1  # logged once


async def test_srs_duplicated_or_huge_param_is_denied_not_500(harness: Harness) -> None:
    ticket = await harness.ticket(app="demo-live", video="livestream")
    base = fixture("srs", "srs-6.0.json", "on_play", ticket["key"], "pw")
    twice = {**base, "param": f"?key={ticket['key']}&key=other&pass=pw"}
    response = await harness.http.post("/usher/srs", json=twice)
    assert response.json()["reason"] == "Invalid Auth Token"
    huge = {**base, "param": "?key=" + "k" * 60_000 + "&pass=pw"}
    response = await harness.http.post("/usher/srs", json=huge)
    assert response.json()["reason"] == "Invalid Auth Token"
    too_big = {**base, "param": "?key=" + "k" * 70_000}
    response = await harness.http.post("/usher/srs", json=too_big)
    assert response.status_code == 413 and response.json()["code"] == 413


# -- MediaMTX ----------------------------------------------------------------------


@pytest.mark.parametrize("version", MEDIAMTX_VERSIONS)
async def test_mediamtx_read_allows_with_2xx_and_denies_with_the_reason(
    harness: Harness, version: str
) -> None:
    ticket = await harness.ticket(app="demo-live", video="livestream", uses=0)
    allowed = await harness.http.post(
        "/usher/mediamtx", json=fixture("mediamtx", version, "read", ticket["key"], "pw")
    )
    assert allowed.status_code == 200
    denied = await harness.http.post(
        "/usher/mediamtx", json=fixture("mediamtx", version, "read", ticket["key"], "bad")
    )
    assert (denied.status_code, denied.text) == (403, "Invalid Auth Token\n")
    attempt = await last_attempt(harness, ticket["key"])
    assert (attempt["app"], attempt["video"], attempt["reason"]) == (
        "demo-live",
        "livestream",
        "Invalid Auth Token",
    )


@pytest.mark.parametrize("action", ["playback", "read"])
async def test_mediamtx_query_wins_over_user_and_password(harness: Harness, action: str) -> None:
    ticket = await harness.ticket(app="demo-live", video="a/b", uses=0)
    body = {
        "user": "someone",
        "password": "else",
        "ip": "192.0.2.1",
        "action": action,
        "path": "demo-live/a/b",
        "protocol": "rtsp",
        "id": None,
        "query": f"key={ticket['key']}&pass=pw",
    }
    assert (await harness.http.post("/usher/mediamtx", json=body)).status_code == 200


async def test_mediamtx_hls_viewer_costs_one_use(harness: Harness) -> None:
    # Old MediaMTX asked once per HLS request; Usher keeps a session anyway.
    ticket = await harness.ticket(app="demo-live", video="livestream", uses=1)
    body = fixture("mediamtx", "mediamtx-1.20.json", "read", ticket["key"], "pw")
    for _ in range(5):
        assert (await harness.http.post("/usher/mediamtx", json=body)).status_code == 200
    _, status = await harness.call("sevu.status", key=ticket["key"])
    assert status["use_count"] == 1


@pytest.mark.parametrize("version", MEDIAMTX_VERSIONS)
async def test_mediamtx_reads_of_one_key_address_and_video_share_one_session(
    harness: Harness, version: str
) -> None:
    ticket = await harness.ticket(app="demo-live", video="livestream", uses=0, max_viewers=1)
    key = ticket["key"]
    read = fixture("mediamtx", version, "read", key, "pw")
    # The same viewer again: as the fixture, as another reader of MediaMTX
    # (another id, another protocol) and with no id at all.
    again = [
        read,
        {**read, "id": "5d2c3b4a-1f0e-4d9c-8b7a-6e5f4d3c2b1a", "protocol": "webrtc"},
        {**read, "id": None},
    ]
    for body in again:
        harness.clock.advance(5)
        response = await harness.http.post("/usher/mediamtx", json=body)
        assert response.status_code == 200, (body, response.text)
    [session] = await sessions(harness, key)
    assert (session["protocol"], session["ip"], session["video"], session["end_reason"]) == (
        "mediamtx",
        read["ip"],
        "livestream",
        None,
    )
    assert session["seconds"] == 10
    _, status = await harness.call("sevu.status", key=key)
    assert status["use_count"] == 1
    _, log = await harness.call("sevu.errorlog", key=key)
    assert [(a["success"], a["reason"]) for a in log["attempts"]] == [(1, "")]
    # Another address is another viewer: refused by max_viewers = 1.
    elsewhere = await harness.http.post("/usher/mediamtx", json={**read, "ip": "203.0.113.9"})
    assert (elsewhere.status_code, elsewhere.text) == (403, "Too many viewers\n")
    assert len(await sessions(harness, key)) == 1


async def test_mediamtx_reader_id_names_one_session_only(harness: Harness) -> None:
    # MediaMTX sends the RTSP *connection's* id, and one connection may read
    # several paths: each playback keeps its own session, under its own id.
    ticket = await harness.ticket(app="demo-live", video="one|two", uses=0)
    key = ticket["key"]
    read = fixture("mediamtx", "mediamtx-1.20.json", "read", key, "pw")
    for path in ("demo-live/one", "demo-live/two", "demo-live/one"):
        assert (await harness.http.post("/usher/mediamtx", json={**read, "path": path})).is_success
    found = await sessions(harness, key)
    assert sorted((s["video"], s["ip"], s["end_reason"]) for s in found) == [
        ("one", read["ip"], None),
        ("two", read["ip"], None),
    ]
    assert len({s["id"] for s in found}) == 2
    assert read["id"] in {s["id"] for s in found}  # the first took the reader's id
    _, status = await harness.call("sevu.status", key=key)
    assert status["use_count"] == 2


async def test_callers_outside_the_allow_list_are_refused_first(harness: Harness) -> None:
    transport = httpx.ASGITransport(app=harness.app, client=("192.0.2.50", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://usher.test") as outsider:
        for path in ("/usher/srs", "/usher/mediamtx"):
            response = await outsider.post(path, content=b"\xff not even json")
            assert response.status_code == 403
            assert "USHER_CALLBACK_ALLOW" in response.text
    _, count = await harness.call("sevu.errorcount")
    assert count["error_count"] == 0


def test_shipped_snippets_point_at_the_right_endpoints() -> None:
    paths = {getattr(route, "path", "") for route in ROUTES}
    srs_conf = (DOCS / "srs.conf").read_text()
    mediamtx_yml = (DOCS / "mediamtx.yml").read_text()
    for hook in ("on_play", "on_stop", "on_publish", "on_unpublish"):
        assert f"{hook:<15} http://127.0.0.1:8080/usher/srs;" in srs_conf
    assert "authHTTPAddress: http://127.0.0.1:8080/usher/mediamtx" in mediamtx_yml
    # Publishes are Usher's to check now, so they are not excluded.
    assert "- action: publish" not in mediamtx_yml
    assert {"/usher/srs", "/usher/mediamtx"} <= paths
