"""Live sessions through the API in-process, on both backends: ``/usher/check``
with ``session``, ``/usher/check/done``, ``sevu.sessions``, ``sevu.kick``,
``max_viewers`` and ``viewers`` in the ticket object, revokes, metrics."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from tests.conftest import Harness
from usher.web.memory import FRESH_FOR, Playback, Remembered

pytestmark = pytest.mark.anyio

GOOD = {"pass": "pw", "app": "demo-live", "video": "mystream"}


@pytest.fixture
def h(harness: Harness) -> Harness:
    """The harness with the re-check memory on its clock (see test_nginx_integrations)."""
    harness.app.state.playback = Playback(
        sessions=Remembered(clock=harness.clock), tickets=Remembered(clock=harness.clock)
    )
    return harness


async def start(h: Harness, key: str, **extra: str) -> tuple[int, dict[str, Any]]:
    return await h.check(key=key, **GOOD, **extra)


async def log_of(h: Harness, key: str) -> list[tuple[int, str]]:
    _, body = await h.call("sevu.errorlog", key=key)
    return [(a["success"], a["reason"]) for a in body.get("attempts", [])]


async def test_a_check_opens_a_session_and_naming_it_is_a_free_recheck(h: Harness) -> None:
    ticket = await h.ticket(uses=1)
    status, first = await start(h, ticket["key"])
    assert status == 200 and first["allowed"] and len(first["session"]) == 16
    for _ in range(5):
        h.clock.advance(30)
        status, again = await start(h, ticket["key"], session=first["session"])
        assert (status, again) == (
            200,
            {"allowed": True, "reason": "", "session": first["session"]},
        )
    assert await log_of(h, ticket["key"]) == [(1, "")]
    # A check without the session is a new start: uses=1 is spent.
    status, other = await start(h, ticket["key"])
    assert (status, other["reason"]) == (403, "Ticket uses exhausted")


async def test_naming_a_new_id_starts_under_it_and_done_ends_it(h: Harness) -> None:
    ticket = await h.ticket()
    status, body = await start(h, ticket["key"], session="player-42")
    assert (status, body["session"]) == (200, "player-42")
    done = await h.http.post("/usher/check/done", data={"session": "player-42"})
    assert (done.status_code, done.json()) == (200, {"ended": True})
    again = await h.http.post("/usher/check/done", json={"session": "player-42"})
    assert again.json() == {"ended": False}
    status, body = await start(h, ticket["key"], session="player-42")
    assert (status, body["reason"]) == (403, "Session ended")
    missing = await h.http.post("/usher/check/done", data={})
    assert missing.status_code == 400 and "session" in missing.text
    assert await log_of(h, ticket["key"]) == [(1, ""), (0, "Session ended")]


async def test_a_silent_check_session_ends_idle(h: Harness) -> None:
    ticket = await h.ticket()
    _, body = await start(h, ticket["key"])
    h.clock.advance(121)
    status, late = await start(h, ticket["key"], session=body["session"])
    assert (status, late["reason"]) == (403, "Session ended")
    _, listed = await h.call("sevu.sessions", key=ticket["key"])
    [session] = listed["sessions"]
    assert (session["end_reason"], session["seconds"]) == ("idle", 120)


async def test_max_viewers_and_viewers_in_the_ticket(h: Harness) -> None:
    ticket = await h.ticket(max_viewers=2)
    assert (ticket["max_viewers"], ticket["viewers"]) == (2, 0)
    sessions = [(await start(h, ticket["key"]))[1]["session"] for _ in range(2)]
    status, third = await start(h, ticket["key"])
    assert (status, third["reason"]) == (403, "Too many viewers")
    _, found = await h.call("sevu.status", key=ticket["key"])
    assert (found["ticket"]["viewers"], found["viewers"]) == (2, 2)
    _, listed = await h.call("sevu.search", key=ticket["key"])
    assert listed["tickets"][0]["viewers"] == 2
    await h.http.post("/usher/check/done", data={"session": sessions[0]})
    status, _ = await start(h, ticket["key"])
    assert status == 200
    for bad in (-1, "two"):
        code, body = await h.call(
            "sevu.request",
            app="demo-live",
            video="v",
            **{"pass": "p"},
            ip="",
            uses=0,
            max_viewers=bad,
        )
        assert (code, body["code"]) == (400, 8), bad


async def test_kick_ends_sessions_and_the_next_recheck_is_refused(h: Harness) -> None:
    ticket = await h.ticket()
    ids = [(await start(h, ticket["key"]))[1]["session"] for _ in range(3)]
    code, body = await h.call("sevu.kick", key=ticket["key"], session=ids[0])
    assert (code, body["code"], body["ended"]) == (200, 2111, 1)
    assert body["message"] == "ScaleEngine Virtual Usher sessions ended"
    h.clock.advance(FRESH_FOR)
    status, refused = await start(h, ticket["key"], session=ids[0])
    assert (status, refused["reason"]) == (403, "Session ended")
    code, body = await h.call("sevu.kick", key=ticket["key"])
    assert (body["code"], body["ended"]) == (2111, 2)
    code, body = await h.call("sevu.kick", key=ticket["key"])
    assert (code, body["code"], body["ended"]) == (200, 2110, 0)
    assert body["message"] == "ScaleEngine Virtual Usher no open sessions found"
    code, body = await h.call("sevu.kick", key="no.such.key")
    assert (code, body["code"]) == (404, 2020)
    code, body = await h.call("sevu.kick")
    assert body["code"] == 6
    _, listed = await h.call("sevu.sessions", key=ticket["key"], open=0)
    assert sorted(s["end_reason"] for s in listed["sessions"]) == ["kicked"] * 3


async def test_revoke_ends_sessions_and_rechecks_say_revoked(h: Harness) -> None:
    ticket = await h.ticket()
    _, body = await start(h, ticket["key"])
    await h.call("sevu.revoke", key=ticket["key"])
    h.clock.advance(FRESH_FOR)
    status, refused = await start(h, ticket["key"], session=body["session"])
    assert (status, refused["reason"]) == (403, "Ticket revoked")
    _, listed = await h.call("sevu.sessions", key=ticket["key"])
    assert listed["sessions"][0]["end_reason"] == "revoked"


async def test_sessions_lists_filters_codes_and_isolation(h: Harness) -> None:
    ticket = await h.ticket()
    code, none = await h.call("sevu.sessions")
    assert (code, none["code"], none["sessions"], none["session_count"]) == (200, 2100, [], 0)
    assert none["message"] == "ScaleEngine Virtual Usher no sessions found"
    for n in range(3):
        await start(h, ticket["key"], ip=f"198.51.100.{n}")
        h.clock.advance(1)
    code, body = await h.call("sevu.sessions", limit=2, seek=1)
    assert (body["code"], body["session_count"], len(body["sessions"])) == (2101, 3, 2)
    assert [s["ip"] for s in body["sessions"]] == ["198.51.100.1", "198.51.100.0"]
    first = body["sessions"][0]
    assert set(first) == {
        "id", "key", "app", "video", "ip", "protocol", "started_date", "last_seen_date",
        "ended_date", "end_reason", "seconds",
    }  # fmt: skip
    assert (first["protocol"], first["ended_date"], first["end_reason"]) == ("check", None, None)
    _, by_ip = await h.call("sevu.sessions", ip="198.51.100.2", open=1)
    assert by_ip["session_count"] == 1
    code, bad = await h.call("sevu.sessions", open=2)
    assert (code, bad["code"]) == (400, 8)
    code, bad = await h.call("sevu.sessions", limit=-1)
    assert bad["code"] == 8


async def test_metrics_count_starts_ends_and_open_sessions(h: Harness) -> None:
    ticket = await h.ticket()
    ids = [(await start(h, ticket["key"]))[1]["session"] for _ in range(2)]
    await h.call("sevu.kick", key=ticket["key"], session=ids[0])
    text = (await h.http.get("/metrics")).text
    assert 'usher_session_starts_total{protocol="check"} 2.0' in text
    assert 'usher_session_ends_total{reason="kicked"} 1.0' in text
    assert "usher_sessions_open 1.0" in text


async def test_mediamtx_sessions_end_by_reader_id_and_may_wait_for_that_notice(
    h: Harness,
) -> None:
    ticket = await h.ticket()

    async def read(reader: str) -> int:
        body = {
            "user": "", "password": "", "ip": "198.51.100.7", "action": "read",
            "path": "demo-live/mystream", "protocol": "rtsp", "id": reader,
            "query": f"key={ticket['key']}&pass=pw",
        }  # fmt: skip
        return (await h.http.post("/usher/mediamtx", json=body)).status_code

    connection = "9a1b2c3d-0000-4000-8000-000000000001"
    session = "9a1b2c3d-0000-4000-8000-000000000002"
    # RTSP: DESCRIBE names the connection, SETUP the session; one playback.
    assert await read(connection) == 200 and await read(session) == 200
    done = await h.http.post("/usher/check/done", data={"session": session})
    assert done.json() == {"ended": True}
    _, listed = await h.call("sevu.sessions", key=ticket["key"])
    [ended] = listed["sessions"]
    assert (ended["id"], ended["protocol"], ended["end_reason"]) == (connection, "mediamtx", "done")
    # With runOnUnread declared, a reader that never asks again stays open past the TTL.
    state = h.app.state
    state.settings = dataclasses.replace(state.settings, mediamtx_end_notice=True)
    third = "9a1b2c3d-0000-4000-8000-000000000003"
    assert await read(third) == 200
    h.clock.advance(600)
    _, listed = await h.call("sevu.sessions", key=ticket["key"], open=1)
    assert [s["id"] for s in listed["sessions"]] == [third]


async def test_an_over_long_session_id_is_refused_with_a_sentence(h: Harness) -> None:
    ticket = await h.ticket()
    status = (
        await h.http.get(
            "/usher/check", params={"key": ticket["key"], **GOOD, "session": "s" * 129}
        )
    ).status_code
    assert status == 400
    done = await h.http.post("/usher/check/done", data={"session": "s" * 129})
    assert done.status_code == 400 and "128 characters" in done.text
    assert await log_of(h, ticket["key"]) == []


# -- found in review: a session is its ticket's, and MediaMTX ends as HLS does --


async def test_unknown_key_naming_an_open_session_is_invalid_auth_token(h: Harness) -> None:
    ticket = await h.ticket()
    status, first = await h.check(key=ticket["key"], **GOOD)
    assert status == 200
    # Rule 1 of §4: an unknown key is "Invalid Auth Token", sign of life or not.
    status, body = await h.check(key="no.such.key", **GOOD, session=first["session"])
    assert (status, body["reason"]) == (403, "Invalid Auth Token"), body


async def test_another_tickets_session_does_not_lift_its_own_limits(h: Harness) -> None:
    a = await h.ticket(**{"pass": "pa"})
    b = await h.ticket(**{"pass": "pb", "uses": 1})
    _, sa = await h.check(key=a["key"], **{**GOOD, "pass": "pa"})
    _, sb = await h.check(key=b["key"], **{**GOOD, "pass": "pb"})
    assert sa["allowed"] and sb["allowed"]
    # B's one use is spent; naming A's open session must not be a free
    # "sign of life" for B (no use counted, nothing logged).
    h.clock.advance(1)
    status, body = await h.check(key=b["key"], **{**GOOD, "pass": "pb"}, session=sa["session"])
    assert status == 403, body


def mediamtx_read(key: str, reader: str) -> dict[str, str]:
    """A MediaMTX HLS reader's auth request, as MediaMTX 1.18 and later send it."""
    return {
        "user": "", "password": "", "ip": "198.51.100.7", "action": "read",
        "path": "demo-live/mystream", "protocol": "hls", "id": reader,
        "query": f"key={key}&pass=pw",
    }  # fmt: skip


async def test_a_revoked_mediamtx_reader_is_told_ticket_revoked(h: Harness) -> None:
    ticket = await h.ticket()
    body = mediamtx_read(ticket["key"], "9a1b2c3d-0000-4000-8000-000000000001")
    assert (await h.http.post("/usher/mediamtx", json=body)).status_code == 200
    status, _ = await h.call("sevu.revoke", key=ticket["key"])
    assert status == 200
    h.clock.advance(2)
    again = await h.http.post("/usher/mediamtx", json=body)
    assert (again.status_code, again.text.strip()) == (403, "Ticket revoked")


async def test_a_kicked_mediamtx_reader_starts_anew_after_a_silent_ttl(h: Harness) -> None:
    ticket = await h.ticket()
    body = mediamtx_read(ticket["key"], "9a1b2c3d-0000-4000-8000-000000000001")
    assert (await h.http.post("/usher/mediamtx", json=body)).status_code == 200
    _, kicked = await h.call("sevu.kick", key=ticket["key"])
    assert kicked["ended"] == 1
    h.clock.advance(2)
    refused = await h.http.post("/usher/mediamtx", json=body)
    assert (refused.status_code, refused.text.strip()) == (403, "Session ended")
    h.clock.advance(121)  # USHER_SESSION_TTL without a request
    again = await h.http.post("/usher/mediamtx", json=body)
    assert again.status_code == 200, again.text
