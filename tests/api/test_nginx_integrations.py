"""nginx-rtmp and nginx auth_request callbacks in-process: sessions, the
re-check path, attempt fields, who may call and what bad input gets."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from tests.conftest import Clock, Harness
from usher import accounts
from usher.adapters.sessions import rtmp_session_handle
from usher.config import Settings, parse_uri_pattern
from usher.protocol.errors import StorageUnavailable
from usher.storage import storage_for_url
from usher.tickets.model import CheckRequest
from usher.web.app import create_app
from usher.web.memory import FRESH_FOR, Playback, Remembered

pytestmark = pytest.mark.anyio

VIEWER = "198.51.100.7"
TCURL = "rtmp://203.0.113.1:1935/demo-live"


@pytest.fixture
def h(harness: Harness) -> Harness:
    """The harness, with the re-check memory on the harness clock, so a test
    moves time instead of sleeping past :data:`FRESH_FOR`."""
    harness.app.state.playback = Playback(
        sessions=Remembered(clock=harness.clock), tickets=Remembered(clock=harness.clock)
    )
    return harness


async def attempts(harness: Harness, key: str) -> list[dict[str, Any]]:
    _, body = await harness.call("sevu.errorlog", key=key)
    found: list[dict[str, Any]] = body.get("attempts", [])
    return found


async def use_count(harness: Harness, key: str) -> int:
    _, body = await harness.call("sevu.status", key=key)
    count: int = body["use_count"]
    return count


# -- nginx-rtmp ----------------------------------------------------------------


def rtmp_form(
    call: str, ticket: dict[str, Any], *, play_query: str | None = None, **over: str
) -> str:
    """A body as ngx_rtmp_notify_module writes it: nginx's fields, then the
    viewer's play query appended raw."""
    fields = {
        "app": "demo-live",
        "flashver": "LNX 9,0,124,2",
        "swfurl": "",
        "tcurl": TCURL,
        "pageurl": "https://example.com/watch",
        "addr": VIEWER,
        "clientid": "17",
        "call": call,
        "name": "mystream",
    }
    fields.update(over)
    query = play_query if play_query is not None else f"key={ticket['key']}&pass={ticket['pass']}"
    return urlencode(fields) + "&" + query


async def notify(
    harness: Harness, body: str | bytes, *, path: str = "/usher/nginx-rtmp"
) -> httpx.Response:
    return await harness.http.post(
        path, content=body, headers={"content-type": "application/x-www-form-urlencoded"}
    )


async def test_rtmp_play_is_a_counted_check_with_the_attempt_fields(h: Harness) -> None:
    ticket = await h.ticket(uses=2, ip="auto")
    response = await notify(
        h, rtmp_form("play", ticket), path="/usher/nginx-rtmp?server_ip=203.0.113.1"
    )
    assert response.status_code == 200
    assert response.headers["x-usher-reason"] == ""
    [attempt] = await attempts(h, ticket["key"])
    assert attempt["success"] == 1
    assert {k: attempt[k] for k in ("ip", "app", "video", "pageurl", "refurl", "server_ip")} == {
        "ip": VIEWER,
        "app": "demo-live",
        "video": "mystream",
        "pageurl": "https://example.com/watch",
        "refurl": TCURL,  # swfurl was empty
        "server_ip": "203.0.113.1",
    }
    assert await use_count(h, ticket["key"]) == 1


async def test_rtmp_appinst_swfurl_and_caller_address(h: Harness) -> None:
    ticket = await h.ticket()
    body = rtmp_form("play", ticket, tcurl=TCURL + "/_definst_", swfurl="https://x/player.swf")
    assert (await notify(h, body)).status_code == 200
    [attempt] = await attempts(h, ticket["key"])
    assert attempt["appinst"] == "_definst_"
    assert attempt["refurl"] == "https://x/player.swf"
    assert attempt["server_ip"] == "127.0.0.1"  # the caller, when the URL names none


async def test_rtmp_viewer_cannot_override_nginx_fields(h: Harness) -> None:
    ticket = await h.ticket(ip="198.51.100.0/24")
    # The viewer appends its own call/addr/app/name to the stream URL; nginx's
    # own fields come first and win.
    sneaky = f"key={ticket['key']}&pass=pw&call=play_done&addr=203.0.113.99&app=demo-x&name=other"
    response = await notify(h, rtmp_form("play", ticket, play_query=sneaky))
    assert response.status_code == 200
    [attempt] = await attempts(h, ticket["key"])
    assert (attempt["ip"], attempt["app"], attempt["video"]) == (VIEWER, "demo-live", "mystream")


async def test_rtmp_credentials_on_the_connection_url(h: Harness) -> None:
    ticket = await h.ticket()
    body = rtmp_form("play", ticket, play_query="", tcurl=f"{TCURL}?key={ticket['key']}&pass=pw")
    assert (await notify(h, body)).status_code == 200


async def test_rtmp_update_rechecks_without_counting_then_cuts_off_revoked(h: Harness) -> None:
    ticket = await h.ticket(uses=1, ip="auto")
    assert (await notify(h, rtmp_form("play", ticket))).status_code == 200
    for _ in range(3):
        h.clock.advance(30)
        assert (await notify(h, rtmp_form("update_play", ticket))).status_code == 200
    assert await use_count(h, ticket["key"]) == 1
    assert len(await attempts(h, ticket["key"])) == 1  # allowed re-checks log nothing
    await h.call("sevu.revoke", key=ticket["key"])
    h.clock.advance(FRESH_FOR)
    response = await notify(h, rtmp_form("update_play", ticket))
    assert (response.status_code, response.headers["x-usher-reason"]) == (403, "Ticket revoked")
    log = await attempts(h, ticket["key"])
    assert [(a["success"], a["reason"]) for a in log] == [(1, ""), (0, "Ticket revoked")]
    # nginx then sends play_done; that and a repeat are harmless.
    for _ in range(2):
        assert (await notify(h, rtmp_form("play_done", ticket))).status_code == 200


async def test_rtmp_update_denies_an_expired_ticket(h: Harness) -> None:
    ticket = await h.ticket(expire="+1 hour")
    assert (await notify(h, rtmp_form("play", ticket))).status_code == 200
    # nginx's on_update every 30 s keeps the session open up to the expiry.
    for _ in range(3600 // 30 - 1):
        h.clock.advance(30)
        assert (await notify(h, rtmp_form("update_play", ticket))).status_code == 200
    h.clock.advance(30)
    response = await notify(h, rtmp_form("update_play", ticket))
    assert response.headers["x-usher-reason"] == "Expiration date surpassed"


async def test_rtmp_play_opens_a_session_and_play_done_closes_it(h: Harness) -> None:
    ticket = await h.ticket()
    assert (await notify(h, rtmp_form("play", ticket))).status_code == 200
    request = CheckRequest(
        key=ticket["key"], password="pw", app="demo-live", video="mystream", ip=VIEWER
    )
    handle = rtmp_session_handle("127.0.0.1", "17", request)
    storage = h.app.state.storage
    found = await storage.lookup_session(handle=handle)
    assert found is not None and found[0].key == ticket["key"]
    now = int(h.clock())
    assert found[0].is_open(now) and found[0].protocol == "rtmp"
    assert (await notify(h, rtmp_form("play_done", ticket))).status_code == 200
    ended = await storage.lookup_session(handle=handle)
    assert ended is not None and (ended[0].ended_at, ended[0].end_reason) == (now, "done")


async def test_rtmp_notify_method_get(h: Harness) -> None:
    ticket = await h.ticket()
    response = await h.http.get("/usher/nginx-rtmp?" + rtmp_form("play", ticket))
    assert response.status_code == 200


@pytest.mark.parametrize("call", ["connect", "disconnect", "update_publish", "publish_done"])
async def test_rtmp_notifications_that_decide_nothing_are_acknowledged(
    h: Harness, call: str
) -> None:
    ticket = await h.ticket()
    assert (await notify(h, rtmp_form(call, ticket))).status_code == 200
    assert await attempts(h, ticket["key"]) == []


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"", 400),
        (b"app=demo-live&name=x&key=k&pass=p", 400),  # no call
        (b"call=bogus&clientid=1", 400),
        (b"call=play&app=demo-live&name=x", 400),  # no clientid
        (b"\xff\xfe\x00garbage=%%%&&&==", 400),
    ],
    ids=["empty", "no-call", "bogus-call", "no-clientid", "garbage"],
)
async def test_rtmp_unusable_notifications_are_refused_and_logged_once(
    h: Harness, body: bytes, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    response = await notify(h, body)
    assert response.status_code == status
    assert response.text.strip().endswith(".")  # a sentence for the operator
    assert len([r for r in caplog.records if r.name == "usher.integrations"]) == 1
    _, count = await h.call("sevu.errorcount")
    assert count["error_count"] == 0


async def test_rtmp_bad_credentials_are_denied_with_a_reason(h: Harness) -> None:
    ticket = await h.ticket()
    cases = [
        f"key={ticket['key']}&key=other.key&pass=pw",  # duplicated key
        f"key={ticket['key']}&pass=pw&pass=other",  # duplicated pass
        "key=%ff%fe&pass=%00",  # not UTF-8, NUL
        "key=" + "k" * 30_000 + "&pass=pw",  # huge
        "",  # none at all
    ]
    for query in cases:
        response = await notify(h, rtmp_form("play", ticket, play_query=query))
        assert (response.status_code, response.headers["x-usher-reason"]) == (
            403,
            "Invalid Auth Token",
        ), query
    too_big = await notify(h, rtmp_form("play", ticket, play_query="key=" + "k" * 70_000))
    assert too_big.status_code == 413


async def test_rtmp_update_during_a_storage_outage_keeps_the_viewer(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    ticket = await h.ticket()
    assert (await notify(h, rtmp_form("play", ticket))).status_code == 200

    async def down(*args: object, **kwargs: object) -> None:
        raise StorageUnavailable("down for the test")

    for name in ("lookup_ticket", "lookup_session", "record_check"):
        monkeypatch.setattr(h.app.state.storage, name, down)
    h.clock.advance(30)
    assert (await notify(h, rtmp_form("update_play", ticket))).status_code == 200
    # A new play cannot be decided: 503, not a false "denied".
    assert (await notify(h, rtmp_form("play", ticket))).status_code == 503


# -- auth_request -----------------------------------------------------------------


async def auth(harness: Harness, uri: str, *, ip: str = VIEWER, **headers: str) -> httpx.Response:
    sent = {"x-original-uri": uri, "x-real-ip": ip, **headers}
    return await harness.http.get("/usher/auth-request", headers=sent)


class Counting:
    """Wraps the storage's write methods to count calls (the hot-path check)."""

    def __init__(self, harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        storage = harness.app.state.storage
        for name in ("record_check", "renew_session", "end_sessions"):
            original = getattr(storage, name)
            monkeypatch.setattr(storage, name, self._spy(name, original))

    def _spy(self, name: str, original: Any) -> Any:
        async def spy(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return await original(*args, **kwargs)

        return spy


async def test_hls_session_costs_one_use_and_one_attempt_and_no_writes(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    ticket = await h.ticket(app="demo-vod", video="movie", uses=1, ip="auto")
    writes = Counting(h, monkeypatch)
    query = f"?key={ticket['key']}&pass=pw"
    first = await auth(h, f"/demo-vod/movie/index.m3u8{query}", Referer="https://example.com/p")
    assert (first.status_code, first.headers["x-usher-reason"]) == (200, "")
    assert writes.calls == ["record_check"]
    for n in range(40):
        h.clock.advance(0.25)  # so the memory expires now and then: reads, not writes
        response = await auth(h, f"/demo-vod/movie/seg{n:03d}.ts{query}")
        assert (response.status_code, response.headers["x-usher-reason"]) == (200, "")
    assert writes.calls == ["record_check"]
    assert await use_count(h, ticket["key"]) == 1
    [attempt] = await attempts(h, ticket["key"])
    assert (attempt["app"], attempt["video"], attempt["ip"], attempt["refurl"]) == (
        "demo-vod",
        "movie",
        VIEWER,
        "https://example.com/p",
    )


async def test_hls_revoke_is_seen_within_the_memory_window(h: Harness) -> None:
    ticket = await h.ticket(app="demo-vod", video="movie")
    uri = f"/demo-vod/movie/seg001.ts?key={ticket['key']}&pass=pw"
    assert (await auth(h, uri)).status_code == 200
    await h.call("sevu.revoke", key=ticket["key"])
    h.clock.advance(FRESH_FOR)
    response = await auth(h, uri)
    assert (response.status_code, response.headers["x-usher-reason"]) == (403, "Ticket revoked")


async def test_hls_kick_is_seen_by_the_next_request_on_the_same_process(h: Harness) -> None:
    # No time passes: the process that ran the kick must not answer from
    # what it remembered of the session before it.
    ticket = await h.ticket(app="demo-vod", video="movie")
    uri = f"/demo-vod/movie/seg001.ts?key={ticket['key']}&pass=pw"
    assert (await auth(h, uri)).status_code == 200
    assert (await auth(h, uri)).status_code == 200  # remembered now
    _, kicked = await h.call("sevu.kick", key=ticket["key"])
    assert (kicked["code"], kicked["ended"]) == (2111, 1)
    response = await auth(h, uri)
    assert (response.status_code, response.headers["x-usher-reason"]) == (403, "Session ended")


async def test_hls_window_slides_and_renews_rarely(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    ticket = await h.ticket(app="demo-vod", video="movie", uses=1)
    writes = Counting(h, monkeypatch)
    uri = f"/demo-vod/movie/index.m3u8?key={ticket['key']}&pass=pw"
    assert (await auth(h, uri)).status_code == 200
    # A request every 20 s for 10 minutes: far beyond the 120 s TTL, one use.
    for _ in range(30):
        h.clock.advance(20)
        assert (await auth(h, uri)).status_code == 200
    assert await use_count(h, ticket["key"]) == 1
    renewals = writes.calls.count("renew_session")
    assert 1 <= renewals <= 600 // 30 + 1  # about one per quarter TTL, not per request
    # A pause longer than the TTL ends the session: the next request is a new play.
    h.clock.advance(121)
    response = await auth(h, uri)
    assert (response.status_code, response.headers["x-usher-reason"]) == (
        403,
        "Ticket uses exhausted",
    )


async def test_hls_sessions_are_per_key_address_and_video(h: Harness) -> None:
    ticket = await h.ticket(app="demo-vod", video="movie|trailer", uses=0)
    query = f"?key={ticket['key']}&pass=pw"
    for uri, ip in [
        (f"/demo-vod/movie/a.ts{query}", VIEWER),
        (f"/demo-vod/movie/b.ts{query}", VIEWER),  # same session
        (f"/demo-vod/trailer/a.ts{query}", VIEWER),  # another video
        (f"/demo-vod/movie/a.ts{query}", "198.51.100.8"),  # another viewer
    ]:
        assert (await auth(h, uri, ip=ip)).status_code == 200
    assert await use_count(h, ticket["key"]) == 3


async def test_hls_wrong_password_inside_a_session_is_refused_and_keeps_it(h: Harness) -> None:
    ticket = await h.ticket(app="demo-vod", video="movie", uses=1)
    good = f"/demo-vod/movie/a.ts?key={ticket['key']}&pass=pw"
    assert (await auth(h, good)).status_code == 200
    bad = await auth(h, f"/demo-vod/movie/b.ts?key={ticket['key']}&pass=guess")
    assert bad.headers["x-usher-reason"] == "Invalid Auth Token"
    assert (await auth(h, good)).status_code == 200
    assert [a["reason"] for a in await attempts(h, ticket["key"])] == ["", "Invalid Auth Token"]


async def test_hls_concurrent_first_requests_cost_one_use(h: Harness) -> None:
    ticket = await h.ticket(app="demo-vod", video="movie", uses=5)
    uris = [f"/demo-vod/movie/s{n}.ts?key={ticket['key']}&pass=pw" for n in range(25)]
    responses = await asyncio.gather(*(auth(h, uri) for uri in uris))
    assert {r.status_code for r in responses} == {200}
    assert await use_count(h, ticket["key"]) == 1
    assert len(await attempts(h, ticket["key"])) == 1


@pytest.mark.parametrize(
    ("path", "app", "video"),
    [
        ("/demo-vod/movie/index.m3u8", "demo-vod", "movie"),
        ("/demo-vod/movie/720p/seg-12.ts", "demo-vod", "movie/720p"),
        ("/demo-vod/movie/manifest.mpd", "demo-vod", "movie"),
        ("/demo-vod/movie/chunk.m4s", "demo-vod", "movie"),
        ("/demo-vod/clips/intro.mp4", "demo-vod", "clips/intro.mp4"),
        ("//demo-vod///movie//index.m3u8", "demo-vod", "movie"),  # nginx merges slashes
        ("/demo-vod/m%6Fvie/index.m3u8", "demo-vod", "movie"),  # and decodes
        ("/demo-vod/movie%2Findex.m3u8", "demo-vod", "movie"),
        ("/demo-vod/x/../movie/index.m3u8", "", ""),  # not interpreted: refused
        ("/demo-vod/./movie/index.m3u8", "", ""),
        ("/demo-vod/%2e%2e/other/index.m3u8", "", ""),
        ("/demo-vod/index.m3u8", "demo-vod", "index"),  # the flat layout
        ("/demo-live/cam-1-7.ts", "demo-live", "cam-1"),
        ("/", "", ""),
    ],
)
async def test_default_uri_layout(h: Harness, path: str, app: str, video: str) -> None:
    ticket = await h.ticket(app="demo-*", video="*")
    await auth(h, f"{path}?key={ticket['key']}&pass=pw")
    [attempt] = await attempts(h, ticket["key"])
    assert (attempt["app"], attempt["video"]) == (app, video)


@pytest.fixture
async def wowza(database_url: str, clock: Clock) -> AsyncIterator[Harness]:
    """An Usher with a Wowza-style USHER_URI_PATTERN."""
    pattern = parse_uri_pattern(r"/(?P<app>[^/]+)/(?P<appinst>[^/]+)/(?P<video>[^/]+)/[^/]*")
    app = create_app(Settings(uri_pattern=pattern), storage_for_url(database_url), clock=clock)
    async with app.running():
        account = await accounts.create(
            app.state.storage, "demo", cdn=158, api_key="K" * 32, secret="s" * 64
        )
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://usher.test") as http:
            yield Harness(app, http, account, clock)


async def test_uri_pattern(wowza: Harness) -> None:
    ticket = await wowza.ticket(app="demo-vod", video="movie.mp4")
    query = f"?key={ticket['key']}&pass=pw"
    ok = await auth(wowza, f"/demo-vod/_definst_/movie.mp4/playlist.m3u8{query}")
    assert ok.status_code == 200
    [attempt] = await attempts(wowza, ticket["key"])
    assert (attempt["app"], attempt["appinst"], attempt["video"]) == (
        "demo-vod",
        "_definst_",
        "movie.mp4",
    )
    # A URI the pattern does not match names no application.
    miss = await auth(wowza, f"/demo-vod/movie.mp4{query}")
    assert miss.headers["x-usher-reason"] == "Invalid Application"


async def test_auth_request_bad_input(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    ticket = await h.ticket(app="demo-vod", video="movie")
    missing = await h.http.get("/usher/auth-request", headers={"x-real-ip": VIEWER})
    assert missing.status_code == 403
    assert "X-Original-URI" in missing.headers["x-usher-reason"]
    assert len([r for r in caplog.records if r.name == "usher.integrations"]) == 1
    for uri in [
        b"/demo-vod/movie/a.ts?key=" + ticket["key"].encode() + b"&key=x&pass=pw",
        b"/demo-vod/movie/\xff\xfe.ts?key=\xff&pass=\x80",
        b"/demo-vod/movie/a.ts?" + b"key=" + b"k" * 7000,
        b"%%%%?&&&==",
    ]:
        response = await h.http.get(
            "/usher/auth-request", headers=[(b"x-original-uri", uri), (b"x-real-ip", b"1.2.3.4")]
        )
        assert response.status_code == 403, uri
        assert response.headers["x-usher-reason"] == "Invalid Auth Token"
    garbage_ip = await auth(h, f"/demo-vod/movie/a.ts?key={ticket['key']}&pass=pw", ip="nope")
    assert garbage_ip.headers["x-usher-reason"] == "Invalid IP Address"


async def test_x_real_ip_is_the_viewer_and_server_addr_is_logged(h: Harness) -> None:
    ticket = await h.ticket(app="demo-vod", video="movie")
    uri = f"/demo-vod/movie/a.ts?key={ticket['key']}&pass=pw"
    await auth(h, uri, ip="192.0.2.44", **{"x-server-addr": "203.0.113.5"})
    [attempt] = await attempts(h, ticket["key"])
    assert (attempt["ip"], attempt["server_ip"]) == ("192.0.2.44", "203.0.113.5")


async def test_outsiders_are_refused_before_parsing(h: Harness) -> None:
    transport = httpx.ASGITransport(app=h.app, client=("192.0.2.50", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://usher.test") as outsider:
        ticket = await h.ticket(app="demo-vod", video="movie")
        response = await outsider.get(
            "/usher/auth-request",
            headers={"x-original-uri": f"/demo-vod/movie/a.ts?key={ticket['key']}&pass=pw"},
        )
        assert response.status_code == 403
        assert "USHER_CALLBACK_ALLOW" in response.text
        assert (await outsider.post("/usher/nginx-rtmp", content=b"call=play")).status_code == 403
    assert await attempts(h, ticket["key"]) == []


async def test_hls_outage_rides_out_known_sessions_only(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    ticket = await h.ticket(app="demo-vod", video="movie")
    uri = f"/demo-vod/movie/a.ts?key={ticket['key']}&pass=pw"
    assert (await auth(h, uri)).status_code == 200

    async def down(*args: object, **kwargs: object) -> None:
        raise StorageUnavailable("down for the test")

    monkeypatch.setattr(h.app.state.storage, "lookup_session", down)
    monkeypatch.setattr(h.app.state.storage, "record_check", down)
    h.clock.advance(5)
    assert (await auth(h, uri)).status_code == 200
    stranger = await auth(h, uri, ip="192.0.2.99")
    assert stranger.status_code == 503


async def test_metrics_count_resumed_requests_apart(h: Harness) -> None:
    ticket = await h.ticket(app="demo-vod", video="movie")
    for n in range(3):
        await auth(h, f"/demo-vod/movie/{n}.ts?key={ticket['key']}&pass=pw")
    text = (await h.http.get("/metrics")).text
    assert re.search(r'usher_checks_total\{outcome="allowed",reason=""\} 1\.0', text)
    assert re.search(r'usher_checks_total\{outcome="resumed",reason=""\} 2\.0', text)


@pytest.mark.parametrize("path", ["/usher/auth-request", "/usher/check"])
async def test_a_non_ascii_x_real_ip_is_refused_as_not_an_address_and_logged_as_sent(
    h: Harness, path: str
) -> None:
    ticket = await h.ticket(app="demo-vod", video="movie")
    query = f"key={ticket['key']}&pass=pw"
    headers = {b"x-real-ip": "1.2.3.4é".encode()}
    if path == "/usher/check":
        response = await h.http.get(f"{path}?{query}&app=demo-vod&video=movie", headers=headers)
    else:
        headers[b"x-original-uri"] = f"/demo-vod/movie/a.ts?{query}".encode()
        response = await h.http.get(path, headers=headers)
    assert response.status_code == 403
    [attempt] = await attempts(h, ticket["key"])
    assert (attempt["ip"], attempt["reason"]) == ("1.2.3.4é", "Invalid IP Address")
    assert await use_count(h, ticket["key"]) == 0
