"""The bare-ASGI ``/usher/check`` and ``/api`` paths and the benchmark baseline route.

The behaviour of checks is covered by test_checks.py (which now runs through
the fast path); these pin what the fast path does on its own: the answers
Starlette used to give, overload, and the gated ``/bench/constant``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import DOC_SECRET, Clock, Harness
from usher.adapters.check import check_body, encode
from usher.config import MAX_BODY, Settings
from usher.protocol.errors import BodyTooLarge, StorageBusy, StorageError
from usher.protocol.signing import sign_request
from usher.storage.sqlite import SQLiteStorage
from usher.tickets.model import CheckOutcome, CheckRequest, Reason
from usher.web.app import create_app

pytestmark = pytest.mark.anyio


async def test_bench_route_is_absent_by_default(harness: Harness) -> None:
    assert (await harness.http.get("/bench/constant")).status_code == 404
    assert (await harness.http.get("/bench/threads")).status_code == 404


async def test_bench_threads_name_the_kernels_thread_ids(tmp_path: Path, clock: Clock) -> None:
    app = create_app(
        Settings(bench_routes=True), SQLiteStorage(str(tmp_path / "b.db")), clock=clock
    )
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    stop = threading.Event()
    named = threading.Thread(target=stop.wait, name="usher-bench-probe")
    named.start()
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://usher.test") as http:
            response = await http.get("/bench/threads")
    finally:
        stop.set()
        named.join()
    assert response.status_code == 200
    threads = response.json()
    assert threads[str(threading.get_native_id())] == threading.current_thread().name
    assert threads[str(named.native_id)] == "usher-bench-probe"


async def test_bench_route_answers_without_the_database(tmp_path: Path, clock: Clock) -> None:
    app = create_app(
        Settings(bench_routes=True), SQLiteStorage(str(tmp_path / "b.db")), clock=clock
    )
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    # Not even opened: the route must not touch the storage.
    async with httpx.AsyncClient(transport=transport, base_url="http://usher.test") as http:
        response = await http.get("/bench/constant")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_other_methods_still_get_405(harness: Harness) -> None:
    assert (await harness.http.put("/usher/check")).status_code == 405


async def test_head_is_answered(harness: Harness) -> None:
    response = await harness.http.head("/usher/check", params={"key": "k", "pass": "p"})
    assert response.status_code == 403


async def test_oversized_body_gets_413(harness: Harness) -> None:
    response = await harness.http.post("/usher/check", content=b"key=" + b"a" * 70_000)
    assert response.status_code == 413


async def test_overload_is_503_not_a_denial(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def busy(*_: object, **__: object) -> CheckOutcome:
        raise StorageBusy("20000 writes are waiting.")

    monkeypatch.setattr(harness.app.state.storage, "record_check", busy)
    status, body = await harness.check(key="k", **{"pass": "p"})
    assert status == 503
    assert body == {"allowed": False, "reason": "Usher is overloaded"}
    metrics = (await harness.http.get("/metrics")).text
    assert 'usher_http_requests_total{route="/usher/check",status="503"} 1.0' in metrics


async def test_a_flood_is_refused_before_any_work_but_signs_of_life_are_not(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    ticket = await harness.ticket()
    viewer = {"key": ticket["key"], "pass": "pw", "app": "demo-live", "video": "mystream"}
    status, body = await harness.check(**viewer)
    assert status == 200
    session = body["session"]
    writes: list[CheckRequest] = []
    original = harness.app.state.storage.record_check

    async def counted(request: CheckRequest, *args: Any, **kwargs: Any) -> CheckOutcome:
        writes.append(request)
        return await original(request, *args, **kwargs)

    monkeypatch.setattr(harness.app.state.storage, "record_check", counted)
    monkeypatch.setattr(harness.app.state.storage, "sheds_checks", lambda: True)
    # A start would be shed by the writer: refused without a write job.
    status, body = await harness.check(**viewer)
    assert (status, body) == (503, {"allowed": False, "reason": "Usher is overloaded"})
    assert writes == []
    # An open session's sign of life needs no write: still answered.
    status, body = await harness.check(**viewer, session=session)
    assert (status, body) == (200, {"allowed": True, "reason": "", "session": session})
    assert writes == []


async def test_check_request_fields_reach_the_storage(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[CheckRequest] = []
    original = harness.app.state.storage.record_check

    async def spy(request: CheckRequest, *args: object, **kwargs: object) -> CheckOutcome:
        seen.append(request)
        return await original(request, *args, **kwargs)  # type: ignore[arg-type]  # passed through unchanged

    monkeypatch.setattr(harness.app.state.storage, "record_check", spy)
    await harness.http.get(
        "/usher/check",
        params={"key": "k", "pass": "p", "app": "demo-a", "video": "v", "pageurl": "u"},
        headers={"X-Real-IP": " 192.0.2.9 "},
    )
    assert seen[0].ip == "192.0.2.9" and seen[0].pageurl == "u" and seen[0].app == "demo-a"


async def test_every_answer_body_is_the_one_encoding(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Allowed, each denial and both 503s: one spacing, byte for byte, so a
    caller matching bodies as text sees the same shape for every answer."""
    keys = {
        "ok": (await harness.ticket())["key"],
        "once": (await harness.ticket(uses=1))["key"],
        "revoked": (await harness.ticket(video="gone"))["key"],
        "expired": (await harness.ticket(expire="2027-01-15 08:00:01"))["key"],
        "ip": (await harness.ticket(ip="192.0.2.1"))["key"],
        "single": (await harness.ticket(max_viewers=1))["key"],
    }
    await harness.call("sevu.revoke", key=keys["revoked"])
    harness.clock.advance(5)
    good = {"pass": "pw", "app": "demo-live", "video": "mystream"}
    await harness.check(key=keys["once"], **good)
    watching = await harness.http.get("/usher/check", params={"key": keys["single"], **good})
    session = watching.json()["session"]
    done = await harness.http.post("/usher/check", params={"key": keys["ok"], **good})
    await harness.http.post("/usher/check/done", data={"session": done.json()["session"]})
    cases: list[tuple[str, dict[str, str], Reason | None]] = [
        ("ok", {}, None),
        ("ok", {"pass": "wrong"}, Reason.INVALID_AUTH_TOKEN),
        ("revoked", {"video": "gone"}, Reason.TICKET_REVOKED),
        ("expired", {}, Reason.EXPIRED),
        ("ok", {"app": "demo-other"}, Reason.INVALID_APPLICATION),
        ("ok", {"video": "other"}, Reason.INVALID_VIDEO),
        ("ip", {"ip": "192.0.2.2"}, Reason.INVALID_IP),
        ("once", {}, Reason.USES_EXHAUSTED),
        ("single", {}, Reason.TOO_MANY_VIEWERS),
        ("ok", {"session": done.json()["session"]}, Reason.SESSION_ENDED),
    ]
    assert {reason for _, _, reason in cases} == {*Reason, None}
    for key, changed, reason in cases:
        params = {"key": keys[key], **good, **changed}
        for response in (
            await harness.http.get("/usher/check", params=params),
            await harness.http.post("/usher/check", data=params),
            await harness.http.post("/usher/check", json=params),
        ):
            if reason is None:
                started = response.json()["session"]
                body = encode({"allowed": True, "reason": "", "session": started})
                assert (response.status_code, response.content) == (200, body), params
            else:
                denied = check_body(False, reason)
                assert (response.status_code, response.content) == (403, denied), params
    # The session of the one allowed viewer re-checks with its id in the answer.
    again = await harness.http.get(
        "/usher/check", params={"key": keys["single"], **good, "session": session}
    )
    assert again.content == encode({"allowed": True, "reason": "", "session": session})

    for failure, said in (
        (StorageBusy("20000 writes are waiting."), "Usher is overloaded"),
        (StorageError("The disk is gone."), "Usher storage unavailable"),
    ):

        async def fails(*_: object, failure: Exception = failure, **__: object) -> CheckOutcome:
            raise failure

        monkeypatch.setattr(harness.app.state.storage, "record_check", fails)
        response = await harness.http.get("/usher/check", params={"key": keys["ok"], **good})
        assert (response.status_code, response.content) == (503, check_body(False, said))


def test_the_one_encoding_is_compact_json() -> None:
    # The spacing of the API envelope and /healthz (Starlette's JSONResponse).
    assert check_body(True, "") == b'{"allowed":true,"reason":""}'
    assert check_body(False, "Invalid Auth Token") == (
        b'{"allowed":false,"reason":"Invalid Auth Token"}'
    )


def _bodies(harness: Harness) -> list[tuple[str, dict[str, Any]]]:
    """Requests of every kind ``/api`` reads, each sent once per path."""
    signed = [
        sign_request({**harness.unsigned("sevu.status", key="nokey"), "timestamp": t}, DOC_SECRET)
        for t in (int(harness.clock()) - 1, int(harness.clock()) - 2)
    ]
    return [
        ("multipart", {"files": {"json": (None, signed[0])}}),
        ("urlencoded", {"data": {"json": signed[1]}}),
        ("bad signature", {"content": signed[0].replace("nokey", "other")}),
        ("not a form", {"content": b"\xff\x00", "headers": {"content-type": "image/png"}}),
        ("empty", {"content": b""}),
        ("too large, declared", {"content": b"{" + b" " * MAX_BODY}),
    ]


async def test_the_bare_api_answers_as_the_starlette_route(harness: Harness) -> None:
    # The same requests through UsherApp (bare ASGI) and through Starlette's
    # route: the same status, content type and envelope (handle_time aside).
    transport = httpx.ASGITransport(app=harness.app.starlette, client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://usher.test") as routed:
        for name, request in _bodies(harness):
            answers = []
            for http in (harness.http, routed):
                response = await http.post("/api", **request)
                body = json.loads(response.text)
                body.pop("handle_time")
                answers.append((response.status_code, response.headers["content-type"], body))
            bare, starlette = answers
            # Each path sees its own replay memory: the first signed call is
            # new to the bare path, then a replay to the Starlette one.
            if name in ("multipart", "urlencoded"):
                assert bare[2]["code"] != 7 and starlette[2]["code"] == 7, name
                continue
            assert bare == starlette, name


async def test_the_bare_api_refuses_a_chunked_body_past_the_limit(harness: Harness) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(MAX_BODY // 4096 + 2):
            yield b" " * 4096

    response = await harness.http.post("/api", content=chunks())
    assert response.status_code == 413
    assert json.loads(response.text)["code"] == BodyTooLarge(MAX_BODY).code


@pytest.mark.parametrize("path", ["/api", "/stable/", "/stable"])
async def test_api_paths_answer_other_methods_405(harness: Harness, path: str) -> None:
    assert (await harness.http.get(path)).status_code == 405
    posted = await harness.http.post(path, files={"json": (None, "{}")})
    assert posted.status_code == 400  # an envelope: the fields are missing
    assert json.loads(posted.text)["status"] == "failure"
