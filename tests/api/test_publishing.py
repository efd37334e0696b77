"""Publish hooks (SPEC §6) of every streaming server, in-process on both
backends: the stream-user rule through each server's wire format, the
brute-force block, the publish log and the metrics, and that a pass never
shows anywhere.

The bodies come from tests/fixtures/ (the servers' documented formats); the
real nginx-rtmp + ffmpeg publish is in tests/live/test_streaming_e2e.py."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api.test_hostile_input import _assert_no_server_error
from tests.api.test_srs_mediamtx import FIXTURES, MEDIAMTX_VERSIONS, SRS_VERSIONS
from tests.conftest import Harness
from usher.tickets.publishers import PUBLISH_REASON_TEXT, BruteForceLimit, PublishFilter

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("cheap_publisher_hashes")]

APP = "demo-live"
STREAM = "cam1"
USER = "alice"
PASS = "s3cret-pass-of-alice"
ENCODER = "203.0.113.20"
#: What a server's answer means: allowed, and the reason it carries.
Verdict = tuple[bool, str]
Publish = Callable[[Harness, str | None, str | None], Awaitable[Verdict]]


def load(server: str, name: str, part: str, user: str | None, password: str | None) -> Any:
    """A fixture body with the credentials filled in; ``None`` leaves them out."""
    text = (FIXTURES / server / name).read_text()
    document = json.loads(
        text.replace("{user}", quote(user or "")).replace("{pass}", quote(password or ""))
    )
    return document[part]


async def add_stream_user(
    harness: Harness, stream: str = STREAM, user: str | None = USER, password: str | None = PASS
) -> dict[str, Any]:
    _, body = await harness.call(
        "sevu.addstreamuser", app=APP, stream=stream, user=user, **{"pass": password}
    )
    assert body["code"] == 2061, body
    streamuser: dict[str, Any] = body["streamuser"]
    return streamuser


# -- one publish through each server's hook ------------------------------------------------


def nginx_form(user: str | None, password: str | None, *, addr: str = ENCODER) -> bytes:
    """An on_publish notification as nginx-rtmp POSTs it: its own fields,
    then the encoder's query appended raw."""
    form = (
        f"app={APP}&flashver=FMLE/3.0&swfurl=&tcurl=rtmp://127.0.0.1:1935/{APP}&pageurl="
        f"&addr={addr}&clientid=7&call=publish&name={STREAM}&type=live"
    )
    if user is not None:
        form += f"&user={quote(user)}"
    if password is not None:
        form += f"&pass={quote(password)}"
    return form.encode()


async def via_nginx(harness: Harness, user: str | None, password: str | None) -> Verdict:
    response = await harness.http.post(
        "/usher/nginx-rtmp",
        content=nginx_form(user, password),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code in (200, 403), response.text
    return response.status_code == 200, response.headers["x-usher-reason"]


async def via_srs(harness: Harness, user: str | None, password: str | None) -> Verdict:
    body = load("srs", "srs-6.0.json", "on_publish", user, password)
    response = await harness.http.post("/usher/srs", json=body)
    if response.status_code == 200:
        assert response.content == b"0"
        return True, ""
    assert response.status_code == 403
    answer = response.json()
    assert answer["code"] == 403 and answer["allowed"] is False
    return False, str(answer["reason"])


async def via_mediamtx(harness: Harness, user: str | None, password: str | None) -> Verdict:
    body = load("mediamtx", "mediamtx-1.20.json", "publish", user, password)
    response = await harness.http.post("/usher/mediamtx", json=body)
    assert response.status_code in (200, 403), response.text
    return response.status_code == 200, response.headers["x-usher-reason"]


def ome_body(user: str | None, password: str | None) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((FIXTURES / "ome" / "rtmp.json").read_text())["opening"]
    query = "&".join(
        f"{name}={quote(value)}" for name, value in (("user", user), ("pass", password)) if value
    )
    body["request"]["url"] = f"rtmp://203.0.113.5:1935/{APP}/{STREAM}" + (
        f"?{query}" if query else ""
    )
    body["client"]["address"] = ENCODER
    return body


async def via_ome(harness: Harness, user: str | None, password: str | None) -> Verdict:
    response = await harness.http.post("/usher/ome", json=ome_body(user, password))
    assert response.status_code == 200
    answer = response.json()
    if answer["allowed"]:
        assert answer == {"allowed": True, "reason": ""}  # no lifetime: publishing does not expire
    return bool(answer["allowed"]), str(answer["reason"])


SERVERS: dict[str, Publish] = {
    "nginx-rtmp": via_nginx,
    "srs": via_srs,
    "mediamtx": via_mediamtx,
    "ome": via_ome,
}
servers = pytest.mark.parametrize("server", SERVERS)


#: Servers whose allowing answer carries no reason (SRS reads ``0``, OME
#: an empty ``reason``).
_SILENT_ALLOW = frozenset({"srs", "ome"})


def text(reason: str) -> str:
    return PUBLISH_REASON_TEXT[reason]  # type: ignore[index]  # a literal reason name


def said(server: str, reason: str) -> Verdict:
    """What ``SERVERS[server]`` returns for a publish decided for ``reason``."""
    allowed = reason in ("open", "credentials")
    return allowed, "" if allowed and server in _SILENT_ALLOW else text(reason)


@servers
async def test_the_right_user_and_pass_publish(harness: Harness, server: str) -> None:
    stream_user = await add_stream_user(harness)
    assert await SERVERS[server](harness, USER, PASS) == said(server, "credentials")
    [row] = await harness.app.state.storage.list_publishes(harness.account.cdn, PublishFilter(), 10)
    assert (row.app, row.stream, row.user, row.ip, row.server) == (
        APP,
        STREAM,
        USER,
        ENCODER,
        server,
    )
    assert (row.allowed, row.reason, row.stream_user_id) == (
        True,
        "credentials",
        stream_user["streamuser_id"],
    )


@servers
@pytest.mark.parametrize(
    ("user", "password", "reason"),
    [
        (USER, "wrong-pass", "bad_credentials"),
        ("mallory", PASS, "bad_credentials"),
        (None, None, "no_credentials"),
        (USER, None, "no_credentials"),
    ],
    ids=["wrong-pass", "wrong-user", "no-credentials", "no-pass"],
)
async def test_wrong_or_missing_credentials_are_denied(
    harness: Harness, server: str, user: str | None, password: str | None, reason: str
) -> None:
    await add_stream_user(harness)
    assert await SERVERS[server](harness, user, password) == said(server, reason)
    [row] = await harness.app.state.storage.list_publishes(
        harness.account.cdn, PublishFilter(allowed=False), 10
    )
    assert row.reason == reason


@servers
async def test_another_streams_credentials_are_denied(harness: Harness, server: str) -> None:
    await add_stream_user(harness, stream="other-stream")
    assert await SERVERS[server](harness, USER, PASS) == said(server, "no_stream_user")


@servers
async def test_an_open_entry_or_a_star_entry_covers_the_stream(
    harness: Harness, server: str
) -> None:
    await add_stream_user(harness, stream="*")
    assert await SERVERS[server](harness, USER, PASS) == said(server, "credentials")
    await add_stream_user(harness, user=None, password=None)
    assert await SERVERS[server](harness, None, None) == said(server, "open")


@servers
async def test_a_removed_stream_user_no_longer_publishes(harness: Harness, server: str) -> None:
    stream_user = await add_stream_user(harness)
    _, body = await harness.call(
        "sevu.removestreamuser", streamuser_id=stream_user["streamuser_id"]
    )
    assert body["code"] == 2071
    assert await SERVERS[server](harness, USER, PASS) == said(server, "no_stream_user")


# -- every fixture version ---------------------------------------------------------------


@pytest.mark.parametrize("version", SRS_VERSIONS)
async def test_srs_publish_fixtures(harness: Harness, version: str) -> None:
    await add_stream_user(harness)
    for password, expected in ((PASS, 200), ("wrong", 403)):
        body = load("srs", version, "on_publish", USER, password)
        response = await harness.http.post("/usher/srs", json=body)
        assert response.status_code == expected, (version, response.text)
    # on_unpublish decides nothing: SRS only needs its 0.
    body = load("srs", version, "on_unpublish", USER, PASS)
    response = await harness.http.post("/usher/srs", json=body)
    assert (response.status_code, response.content) == (200, b"0")


@pytest.mark.parametrize("version", MEDIAMTX_VERSIONS)
async def test_mediamtx_publish_fixtures(harness: Harness, version: str) -> None:
    await add_stream_user(harness)
    for password, expected in ((PASS, 200), ("wrong", 403)):
        body = load("mediamtx", version, "publish", USER, password)
        response = await harness.http.post("/usher/mediamtx", json=body)
        assert response.status_code == expected, (version, response.text)


async def test_mediamtx_reads_the_query_before_its_own_user_and_password(
    harness: Harness,
) -> None:
    await add_stream_user(harness)
    body = load("mediamtx", "mediamtx-1.9.json", "publish", "mallory", "wrong")
    body["query"] = f"user={USER}&pass={PASS}"
    response = await harness.http.post("/usher/mediamtx", json=body)
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("name", "part"), [("rtmp.json", "opening"), ("webrtc.json", "publish_opening")]
)
async def test_ome_publish_fixtures(harness: Harness, name: str, part: str) -> None:
    # The OME fixtures carry user=alice&pass=secret on demo-live/livestream.
    await add_stream_user(harness, stream="livestream", password="secret")
    body = json.loads((FIXTURES / "ome" / name).read_text())[part]
    response = await harness.http.post("/usher/ome", json=body)
    assert response.json() == {"allowed": True, "reason": ""}
    closing = json.loads((FIXTURES / "ome" / "rtmp.json").read_text())["closing"]
    response = await harness.http.post("/usher/ome", json=closing)
    assert (response.status_code, response.content) == (200, b"{}")


@pytest.mark.parametrize("call", ["publish_done", "update_publish"])
async def test_nginx_publish_done_is_answered_200(harness: Harness, call: str) -> None:
    form = nginx_form(USER, PASS).replace(b"call=publish", f"call={call}".encode())
    response = await harness.http.post("/usher/nginx-rtmp", content=form)
    assert response.status_code == 200
    assert (
        await harness.app.state.storage.list_publishes(harness.account.cdn, PublishFilter(), 10)
        == []
    )


async def test_nginx_reads_credentials_from_the_connection_url(harness: Harness) -> None:
    """An encoder that put them on rtmp://host/app?user=…&pass=… instead."""
    await add_stream_user(harness)
    form = nginx_form(None, None).replace(
        b"tcurl=rtmp://127.0.0.1:1935/demo-live",
        f"tcurl=rtmp://127.0.0.1:1935/demo-live?user={USER}%26pass={PASS}".encode(),
    )
    response = await harness.http.post("/usher/nginx-rtmp", content=form)
    assert response.status_code == 200


async def test_an_encoder_cannot_override_nginxs_own_fields(harness: Harness) -> None:
    """nginx writes its fields first; an ``addr`` or ``app`` in the publish
    URL's query comes after them and is not believed."""
    await add_stream_user(harness)
    form = nginx_form(USER, PASS) + b"&addr=10.9.9.9&app=other-live&name=x"
    response = await harness.http.post("/usher/nginx-rtmp", content=form)
    assert response.status_code == 200
    [row] = await harness.app.state.storage.list_publishes(harness.account.cdn, PublishFilter(), 10)
    assert (row.ip, row.app, row.stream) == (ENCODER, APP, STREAM)


async def test_a_conflicting_duplicate_pass_is_no_pass(harness: Harness) -> None:
    await add_stream_user(harness)
    form = nginx_form(USER, PASS) + b"&pass=other"
    response = await harness.http.post("/usher/nginx-rtmp", content=form)
    assert (response.status_code, response.headers["x-usher-reason"]) == (
        403,
        text("no_credentials"),
    )


# -- the brute-force rule ------------------------------------------------------------------


def limit(harness: Harness, **numbers: int) -> None:
    state = harness.app.state
    state.settings = dataclasses.replace(state.settings, publish_limit=BruteForceLimit(**numbers))


@servers
async def test_ten_denials_block_the_address_for_five_minutes(
    harness: Harness, server: str
) -> None:
    await add_stream_user(harness)
    publish = SERVERS[server]
    for attempt in range(10):
        harness.clock.advance(5 if attempt else 0)  # the tenth 45 s after the first
        assert await publish(harness, USER, None) == said(server, "no_credentials")
    # The right credentials are not even checked now.
    assert await publish(harness, USER, PASS) == said(server, "blocked")
    harness.clock.advance(299)  # one second before the block ends
    assert await publish(harness, USER, PASS) == said(server, "blocked")
    harness.clock.advance(1)
    assert await publish(harness, USER, PASS) == said(server, "credentials")
    log = await harness.app.state.storage.list_publishes(harness.account.cdn, PublishFilter(), 20)
    assert [row.reason for row in log[:3]] == ["credentials", "blocked", "blocked"]


async def test_another_address_still_publishes_during_a_block(harness: Harness) -> None:
    await add_stream_user(harness)
    for _ in range(10):
        assert (await via_nginx(harness, USER, "wrong"))[0] is False
    assert await via_nginx(harness, USER, PASS) == said("nginx-rtmp", "blocked")
    response = await harness.http.post(
        "/usher/nginx-rtmp", content=nginx_form(USER, PASS, addr="198.51.100.77")
    )
    assert response.status_code == 200


async def test_denials_spread_wider_than_the_window_do_not_block(harness: Harness) -> None:
    await add_stream_user(harness)
    for _ in range(20):
        assert await via_srs(harness, None, None) == said("srs", "no_credentials")
        harness.clock.advance(7)  # ten denials span 63 s
    assert await via_srs(harness, USER, PASS) == said("srs", "credentials")


async def test_the_block_holds_for_every_process_reading_the_log(harness: Harness) -> None:
    """Denials are read from the publish log, so a process that did not see
    them (another node, or this one after a restart) blocks too."""
    await add_stream_user(harness)
    for _ in range(10):
        await via_ome(harness, None, None)
    harness.app.state.publishes.blocks.clear()  # forget what this process saw
    assert await via_ome(harness, USER, PASS) == said("ome", "blocked")


async def test_the_numbers_are_settings(harness: Harness) -> None:
    limit(harness, denials=2, window=10, block=30)
    await add_stream_user(harness)
    await via_mediamtx(harness, None, None)
    await via_mediamtx(harness, None, None)
    assert await via_mediamtx(harness, USER, PASS) == said("mediamtx", "blocked")
    harness.clock.advance(30)
    assert await via_mediamtx(harness, USER, PASS) == said("mediamtx", "credentials")


# -- the log, the metrics, and the pass ----------------------------------------------------


async def test_publishes_are_not_playback_attempts(harness: Harness) -> None:
    await add_stream_user(harness)
    await via_nginx(harness, USER, "wrong")
    await via_nginx(harness, USER, PASS)
    _, count = await harness.call("sevu.errorcount")
    assert count["error_count"] == 0


async def test_a_publish_to_an_app_of_no_account_is_logged_without_one(harness: Harness) -> None:
    body = load("mediamtx", "mediamtx-1.20.json", "publish", USER, PASS)
    body["path"] = "nobody-live/cam1"
    response = await harness.http.post("/usher/mediamtx", json=body)
    assert (response.status_code, response.headers["x-usher-reason"]) == (
        403,
        text("no_stream_user"),
    )
    assert (
        await harness.app.state.storage.list_publishes(harness.account.cdn, PublishFilter(), 10)
        == []
    )


async def test_a_denied_publish_to_the_accounts_app_is_in_its_log(harness: Harness) -> None:
    """No stream user matched, but the app is the account's by its prefix:
    the operator sees who tried."""
    await via_nginx(harness, USER, PASS)
    [row] = await harness.app.state.storage.list_publishes(harness.account.cdn, PublishFilter(), 10)
    assert (row.allowed, row.reason, row.stream_user_id) == (False, "no_stream_user", None)


async def test_publishes_are_counted_in_the_metrics(harness: Harness) -> None:
    await add_stream_user(harness)
    await via_nginx(harness, USER, PASS)
    await via_srs(harness, USER, "wrong")
    metrics = (await harness.http.get("/metrics")).text
    assert (
        'usher_publishes_total{outcome="allowed",reason="credentials",server="nginx-rtmp"} 1.0'
        in metrics
    )
    assert (
        'usher_publishes_total{outcome="denied",reason="bad_credentials",server="srs"} 1.0'
        in metrics
    )


@servers
async def test_the_pass_is_never_logged_answered_or_stored(
    harness: Harness, server: str, caplog: pytest.LogCaptureFixture
) -> None:
    await add_stream_user(harness)
    caplog.set_level(logging.DEBUG)
    wrong = "guessed-pass-7f3a"
    _, wrong_reason = await SERVERS[server](harness, USER, wrong)
    _, right_reason = await SERVERS[server](harness, USER, PASS)
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "Denied a publish" in logged
    for secret in (wrong, PASS):
        assert secret not in logged
        assert secret not in wrong_reason + right_reason
    rows = await harness.app.state.storage.list_publishes(harness.account.cdn, PublishFilter(), 10)
    assert all(wrong not in repr(row) and PASS not in repr(row) for row in rows)


async def test_a_storage_failure_refuses_the_publish_with_503(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from usher.protocol.errors import StorageUnavailable

    await add_stream_user(harness)

    async def broken(*args: object, **kwargs: object) -> int:
        raise StorageUnavailable("the database is gone")

    monkeypatch.setattr(harness.app.state.storage, "record_publishes", broken)
    response = await harness.http.post("/usher/nginx-rtmp", content=nginx_form(USER, PASS))
    assert (response.status_code, response.headers["x-usher-reason"]) == (
        503,
        "Usher storage unavailable.",
    )
    response = await harness.http.post(
        "/usher/ome", json=ome_body(USER, PASS), headers={"content-type": "application/json"}
    )
    assert response.json() == {"allowed": False, "reason": "Usher storage unavailable."}


async def test_a_caller_outside_the_allow_list_is_refused_before_anything(
    harness: Harness,
) -> None:
    transport = httpx.ASGITransport(app=harness.app, client=("192.0.2.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://usher.test") as outsider:
        response = await outsider.post("/usher/nginx-rtmp", content=nginx_form(USER, PASS))
    assert response.status_code == 403
    assert (
        await harness.app.state.storage.list_publishes(harness.account.cdn, PublishFilter(), 10)
        == []
    )


# -- hostile publishes -------------------------------------------------------------------

_TEXT = st.text(max_size=60)


@settings(max_examples=120, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    server=st.sampled_from(sorted(SERVERS)),
    app=_TEXT,
    stream=_TEXT,
    user=st.one_of(st.none(), _TEXT),
    password=st.one_of(st.none(), _TEXT),
    ip=_TEXT,
)
async def test_any_publish_gets_an_answer_never_a_5xx(
    harness: Harness,
    caplog: pytest.LogCaptureFixture,
    server: str,
    app: str,
    stream: str,
    user: str | None,
    password: str | None,
    ip: str,
) -> None:
    """Any app, stream, user, pass and address text, through each server's
    wire format: a decision (or a 4xx for what is not a publish), logged
    without a traceback; a wrong guess never turns into a 500."""
    credentials = f"user={_q(user or '')}&pass={_q(password or '')}"
    body: dict[str, Any]
    caplog.clear()
    if server == "nginx-rtmp":
        form = f"app={_q(app)}&addr={_q(ip)}&clientid=7&call=publish&name={_q(stream)}"
        response = await harness.http.post("/usher/nginx-rtmp", content=f"{form}&{credentials}")
    elif server == "srs":
        body = {"action": "on_publish", "client_id": "x", "app": app, "stream": stream, "ip": ip}
        body["param"] = "?" + credentials
        response = await harness.http.post("/usher/srs", content=_json(body))
    elif server == "mediamtx":
        body = {"action": "publish", "path": f"{app}/{stream}", "ip": ip}
        body |= {"user": user, "password": password}
        response = await harness.http.post("/usher/mediamtx", content=_json(body))
    else:
        body = ome_body(None, None)
        body["request"]["url"] = f"rtmp://h/{_q(app)}/{_q(stream)}?{credentials}"
        body["client"]["real_ip"] = ip
        response = await harness.http.post("/usher/ome", content=_json(body))
    _assert_no_server_error(response.status_code, response.text, caplog)


def _q(text: str) -> str:
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


def _json(value: object) -> bytes:
    return json.dumps(value).encode("utf-8", "surrogatepass")


async def test_concurrent_publishes_are_logged_in_groups(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flood of publishes (from many addresses: one address's publishes
    take turns) costs the database a transaction at a time, not one per
    publish, and every row is still logged before its answer."""
    storage = harness.app.state.storage
    record_publishes = storage.record_publishes
    groups: list[int] = []

    async def counted(attempts: Any) -> list[int]:
        groups.append(len(attempts))
        return await record_publishes(attempts)

    monkeypatch.setattr(storage, "record_publishes", counted)
    answers = await asyncio.gather(
        *(
            harness.http.post(
                "/usher/nginx-rtmp", content=nginx_form(None, None, addr=f"10.0.0.{n}")
            )
            for n in range(60)
        )
    )
    assert {answer.status_code for answer in answers} == {403}
    assert sum(groups) == 60
    assert len(groups) < 30, groups
    assert len(await storage.list_publishes(harness.account.cdn, PublishFilter(), 100)) == 60


async def test_parallel_guesses_from_one_address_are_counted_one_by_one(
    harness: Harness,
) -> None:
    """nginx-rtmp asks for each connection at once: a burst of guesses must
    not all be checked before the first denial is counted."""
    await add_stream_user(harness)
    answers = await asyncio.gather(*(via_nginx(harness, USER, "guess") for _ in range(30)))
    reasons = Counter(reason for _, reason in answers)
    assert reasons == {text("bad_credentials"): 10, text("blocked"): 20}


@pytest.mark.parametrize("action", ["publish", "read"])
async def test_an_rtsp_request_without_credentials_is_asked_for_them(
    harness: Harness, action: str
) -> None:
    """MediaMTX asks first without credentials, then challenges the RTSP
    client on a 401: that first question decides and counts nothing."""
    await add_stream_user(harness)
    body = load("mediamtx", "mediamtx-1.9.json", action, None, None)
    body |= {"user": "", "password": "", "protocol": "rtsp", "query": "", "path": f"{APP}/{STREAM}"}
    for _ in range(12):
        response = await harness.http.post("/usher/mediamtx", json=body)
        assert response.status_code == 401
    assert (
        await harness.app.state.storage.list_publishes(harness.account.cdn, PublishFilter(), 10)
        == []
    )
    _, count = await harness.call("sevu.errorcount")
    assert count["error_count"] == 0
    # Then the client sends its credentials: not blocked by the questions.
    body |= {"user": USER, "password": PASS}
    if action == "publish":
        assert (await harness.http.post("/usher/mediamtx", json=body)).status_code == 200
