"""End to end with real servers: nginx-rtmp and nginx auth_request in front of
a real ``usher serve``, real media made and played by ffmpeg.

One stack per module (Usher, one nginx with the shipped RTMP and HTTP
configs, a live publisher, an HLS rendition) keeps the whole file to a few
tens of seconds. Every ticket is fresh, so the tests do not depend on order.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import free_port
from tests.live import streaming
from tests.live.conftest import USHER, query_database, usher
from usher.client import Client
from usher.passwords import LOG2_N
from usher.tickets.publishers import BruteForceLimit

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("timing")]

#: The test's on_update interval (docs ship 30 s): a revoked viewer must be
#: cut off within it.
UPDATE_S = 2
#: The module's USHER_SESSION_TTL (the minimum; the default is 120 s), so a
#: kicked HLS viewer's wait for a fresh start fits in a test.
SESSION_TTL = 10
MEDIA_SECONDS = 6
SEGMENT_S = 0.4  # many short segments: the revocation test needs fresh URIs
LIVE_FRAGMENT_S = 1
#: The module's encoder: a stream user of every stream of demo-live
#: (docs/nginx/rtmp.conf sends publishes to Usher).
ENCODER_USER, ENCODER_PASS = "encoder", "encoder-pass-7Qx"
ENCODER = f"user={ENCODER_USER}&pass={ENCODER_PASS}"


@dataclass
class Stack:
    usher_url: str
    usher_log: Path
    secret: str
    api: Client
    rtmp: str  # rtmp://127.0.0.1:PORT
    http: str  # http://127.0.0.1:PORT
    nginx: streaming.Nginx
    segments: list[str]  # the HLS rendition's segment file names, in order
    database: str

    def stream_user(self, stream: str, user: str, password: str) -> None:
        answer = self.api.call(
            "sevu.addstreamuser", app="demo-live", stream=stream, user=user, **{"pass": password}
        )
        assert answer["code"] == 2061, answer

    def publishes(self, stream: str) -> list[tuple[str, str, bool, str]]:
        """(address, user, allowed, reason) of the publish log's rows of a
        demo-live stream, oldest first, read from the database."""
        assert re.fullmatch(r"[a-z0-9-]+", stream)  # pasted into the SQL
        rows = query_database(
            self.database,
            "SELECT ip, login, allowed, reason FROM publish_log"
            f" WHERE app = 'demo-live' AND stream = '{stream}' ORDER BY id",
        )
        return [(ip, login or "", bool(allowed), reason) for ip, login, allowed, reason in rows]

    def ticket(self, **fields: object) -> dict[str, Any]:
        answer = self.api.call("sevu.request", **{"pass": "pw", "ip": "auto", **fields})
        assert answer["code"] == 2001, answer
        ticket: dict[str, Any] = answer["ticket"]
        return ticket

    def attempts(self, key: str) -> list[tuple[int, str]]:
        answer = self.api.call("sevu.errorlog", key=key)
        return [(a["success"], a["reason"]) for a in answer.get("attempts", [])]

    def attempt_log(self, key: str) -> list[dict[str, Any]]:
        attempts: list[dict[str, Any]] = self.api.call("sevu.errorlog", key=key).get("attempts", [])
        return attempts

    def errorcount(self, **filters: object) -> int:
        answer = self.api.call("sevu.errorcount", **filters)
        assert answer["status"] == "success", answer
        count: int = answer["error_count"]
        return count

    def use_count(self, key: str) -> int:
        count: int = self.api.call("sevu.status", key=key)["use_count"]
        return count


def _stepping_clock() -> Any:
    # Identical commands signed in one second would be refused as replays
    # (correctly); stepping the timestamp back keeps each signature unique.
    steps = itertools.count()
    return lambda: time.time() - next(steps) % 200


def _serve(port: int, database: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "USHER_DATABASE_URL": database, "USHER_SESSION_TTL": str(SESSION_TTL)}
    with log.open("ab") as out:
        process = subprocess.Popen(
            [*USHER, "serve", "--host", "127.0.0.1", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    streaming.wait_for_port(port, process, log)
    return process


def _make_hls(media: Path) -> list[str]:
    """A VOD HLS rendition of the test pattern, made by ffmpeg."""
    movie = media / "demo-vod" / "movie"
    movie.mkdir(parents=True)
    subprocess.run(
        streaming.ffmpeg(
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=160x120:rate=25",
            "-t",
            str(MEDIA_SECONDS),
            *streaming.H264,
            "-g",
            "10",
            "-keyint_min",
            "10",
            "-sc_threshold",
            "0",
            "-f",
            "hls",
            "-hls_time",
            str(SEGMENT_S),
            "-hls_playlist_type",
            "vod",
            "-hls_segment_filename",
            str(movie / "seg%03d.ts"),
            str(movie / "index.m3u8"),
        ),
        check=True,
        timeout=60,
    )
    for path in (media, media / "demo-vod", movie, *movie.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return sorted(path.name for path in movie.glob("seg*.ts"))


def _config(
    prefix: Path, usher_url: str, rtmp_port: int, http_port: int, *, nested: bool = False
) -> str:
    """nginx.conf with the shipped RTMP and HTTP files; ``nested`` switches
    live HLS to nginx-rtmp's nested layout, as the docs describe."""
    hls_path = "hls_path /var/www/usher-live/hls/demo-live;"
    rtmp = streaming.render(
        "nginx/rtmp.conf",
        {
            "listen 1935;": f"listen 127.0.0.1:{rtmp_port};",
            "http://127.0.0.1:8080/": f"{usher_url}/",
            "notify_update_timeout 30s;": f"notify_update_timeout {UPDATE_S}s;",
            # Short fragments: a live playlist is ready a second after publishing.
            "hls_fragment 2s;": f"hls_fragment {LIVE_FRAGMENT_S}s;",
            "dash_fragment 2s;": f"dash_fragment {LIVE_FRAGMENT_S}s;",
            hls_path: hls_path + (" hls_nested on;" if nested else ""),
            "/var/www/usher-live": str(prefix / "live"),
            "/var/www/usher-vod": str(prefix / "vod"),
        },
    )
    http = streaming.render(
        "nginx/http.conf",
        {
            "listen 80;": f"listen 127.0.0.1:{http_port};",
            "server 127.0.0.1:8080;": f"server 127.0.0.1:{usher_port_of(usher_url)};",
            "/var/www/usher-media": str(prefix / "media"),
            "/var/www/usher-live": str(prefix / "live"),
            "/var/cache/nginx/usher": str(prefix / "cache"),
            "/var/log/nginx/usher-access.log": str(prefix / "logs" / "access.log"),
        },
    )
    return streaming.main_config(prefix, rtmp=rtmp, http=http)


def usher_port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


@contextmanager
def _publishing(rtmp: str, stream: str, progress: Path, query: str = ENCODER) -> Iterator[None]:
    """A live publisher for the block, with the stream user's credentials
    in ``query``; stopped before nginx is, so nginx's graceful stop does not
    wait for its connection."""
    publisher = streaming.start_publisher(f"{rtmp}/{stream}?{query}", progress)
    try:
        streaming.wait_until_publishing(publisher, progress)
        yield
    finally:
        publisher.kill()
        publisher.wait(timeout=10)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("e2e")
    database = f"sqlite:///{tmp / 'usher.db'}"
    account = json.loads(
        usher("account", "create", "--username", "demo", "--json", "--database", database).stdout
    )
    usher_port, rtmp_port, http_port = free_port(), free_port(), free_port()
    log = tmp / "usher.log"
    server = _serve(usher_port, database, log)
    usher_url = f"http://127.0.0.1:{usher_port}"
    try:
        with (
            streaming.private_prefix() as prefix,
            Client(
                f"{usher_url}/api",
                cdn=account["cdn"],
                api_key=account["api_key"],
                secret=account["secret"],
                clock=_stepping_clock(),
            ) as api,
        ):
            segments = _make_hls(prefix / "media")
            config = _config(prefix, usher_url, rtmp_port, http_port)
            added = api.call(
                "sevu.addstreamuser",
                app="demo-live",
                stream="*",
                user=ENCODER_USER,
                **{"pass": ENCODER_PASS},
            )
            assert added["code"] == 2061, added
            with (
                streaming.run_nginx(prefix, config, [rtmp_port, http_port]) as nginx,
                _publishing(
                    f"rtmp://127.0.0.1:{rtmp_port}",
                    "demo-live/mystream",
                    tmp / "publisher.progress",
                ),
            ):
                yield Stack(
                    usher_url,
                    log,
                    account["secret"],
                    api,
                    f"rtmp://127.0.0.1:{rtmp_port}",
                    f"http://127.0.0.1:{http_port}",
                    nginx,
                    segments,
                    database,
                )
    finally:
        server.terminate()
        server.wait(timeout=10)
    written = log.read_text(errors="replace")
    assert "Traceback" not in written, written
    assert account["secret"] not in written
    assert ENCODER_PASS not in written


# -- RTMP ------------------------------------------------------------------------------


def _stream(
    stack: Stack, ticket: dict[str, Any], path: str = "demo-live/mystream", **q: str
) -> str:
    credentials = {"key": ticket["key"], "pass": ticket["pass"], **q}
    return f"{stack.rtmp}/{path}?" + "&".join(f"{k}={v}" for k, v in credentials.items())


def test_rtmp_valid_ticket_plays_once_then_is_exhausted(stack: Stack) -> None:
    ticket = stack.ticket(app="demo-live", video="mystream", uses=1)
    played = streaming.play(_stream(stack, ticket))
    print(f"valid ticket: {played.frames} frames in {played.seconds:.1f} s")
    assert played.returncode == 0, played.stderr
    assert played.frames >= 25  # two seconds at 25 fps, less the start
    refused = streaming.play(_stream(stack, ticket))
    assert refused.frames == 0, refused
    print(f"exhausted ticket: {refused.frames} frames, ffmpeg said {refused.stderr.strip()!r}")
    log = stack.attempt_log(ticket["key"])
    assert [(a["success"], a["reason"]) for a in log] == [(1, ""), (0, "Ticket uses exhausted")]
    # What nginx-rtmp told Usher about the viewer lands in the attempt.
    first = log[0]
    assert (first["ip"], first["app"], first["video"], first["server_ip"]) == (
        "127.0.0.1",
        "demo-live",
        "mystream",
        "127.0.0.1",
    )
    assert first["refurl"] == f"{stack.rtmp}/demo-live"  # the tcUrl
    assert stack.use_count(ticket["key"]) == 1
    assert stack.errorcount(key=ticket["key"], success=0) == 1


def test_rtmp_refusals_are_logged_with_their_reason(stack: Stack) -> None:
    expiring = stack.ticket(app="demo-live", video="mystream", uses=0, expire=int(time.time()) + 2)
    before = stack.errorcount(success=0)
    cases: list[tuple[str, str, str]] = []  # (name, key, expected reason)

    wrong_pass = stack.ticket(app="demo-live", video="mystream", uses=0)
    cases.append(("wrong pass", wrong_pass["key"], "Invalid Auth Token"))
    wrong_app = stack.ticket(app="demo-live", video="mystream", uses=0)
    cases.append(("wrong app", wrong_app["key"], "Invalid Application"))
    wrong_video = stack.ticket(app="demo-live", video="otherstream", uses=0)
    cases.append(("wrong video", wrong_video["key"], "Invalid Video"))
    plays = {
        "wrong pass": _stream(stack, wrong_pass, **{"pass": "nope"}),
        "wrong app": _stream(stack, wrong_app, "demo-vod/mystream"),
        "wrong video": _stream(stack, wrong_video),
    }
    while time.time() < expiring_at(expiring):
        time.sleep(0.1)
    cases.append(("expired", expiring["key"], "Expiration date surpassed"))
    plays["expired"] = _stream(stack, expiring)

    for name, key, reason in cases:
        played = streaming.play(plays[name], timeout=15)
        print(f"{name}: {played.frames} frames in {played.seconds:.1f} s; Usher said {reason!r}")
        assert played.frames == 0, (name, played)
        assert stack.attempts(key) == [(0, reason)], name
        assert stack.errorcount(key=key, success=0) == 1, name
    assert stack.errorcount(success=0) == before + len(cases)


def expiring_at(ticket: dict[str, Any]) -> float:
    # expire_date is "YYYY-MM-DD HH:MM:SS" UTC; a second of margin past it.
    stamp = time.strptime(ticket["expire_date"] + " UTC", "%Y-%m-%d %H:%M:%S %Z")
    return float(time.mktime(stamp) - time.timezone) + 1.0


def test_rtmp_revoked_viewer_is_cut_off_within_the_update_interval(
    stack: Stack, tmp_path: Path
) -> None:
    ticket = stack.ticket(app="demo-live", video="mystream", uses=1)
    progress = tmp_path / "player.progress"
    with _watching(_stream(stack, ticket), progress) as player:
        assert stack.api.call("sevu.revoke", key=ticket["key"])["code"] == 2021
        revoked = time.monotonic()
        player.wait(timeout=UPDATE_S + 10)
        cut_after = time.monotonic() - revoked
    frames = streaming.frames_in(_read(progress))
    print(f"revoked viewer cut off {cut_after:.2f} s after sevu.revoke, at frame {frames}")
    assert cut_after <= UPDATE_S + 1.5
    assert frames < 25 * 10  # nowhere near the 30 s it asked for
    # The update that found the ticket revoked is logged once, with its reason.
    assert stack.attempts(ticket["key"]) == [(1, ""), (0, "Ticket revoked")]
    assert stack.use_count(ticket["key"]) == 1


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


@contextmanager
def _watching(url: str, progress: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A player asking for 30 s of ``url``, yielded once it has shown a
    second of video; killed on leaving if it is still playing."""
    player = subprocess.Popen(
        streaming.ffmpeg("-progress", str(progress), "-i", url, "-t", "30", "-f", "null", "-"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + streaming.STARTUP_S
        while streaming.frames_in(_read(progress)) < 25:
            assert player.poll() is None, "the player stopped before it showed a second of video"
            assert time.monotonic() < deadline, "the player received no frames"
            time.sleep(0.1)
        yield player
    finally:
        if player.poll() is None:
            player.kill()
            player.wait(timeout=10)


def _sessions(stack: Stack, key: str, **filters: object) -> list[dict[str, Any]]:
    """The ticket's sessions, newest first."""
    answer = stack.api.call("sevu.sessions", key=key, **filters)
    assert answer["status"] == "success", answer
    sessions: list[dict[str, Any]] = answer.get("sessions", [])
    return sessions


def _until_no_open_session(stack: Stack, key: str) -> None:
    """Wait (bounded) for nginx's play_done: it comes once the player's
    connection has closed."""
    deadline = time.monotonic() + streaming.STARTUP_S
    while _sessions(stack, key, open=1):
        assert time.monotonic() < deadline, f"a session stayed open: {_sessions(stack, key)}"
        time.sleep(0.1)


def test_rtmp_max_viewers_kick_and_play_done(stack: Stack, tmp_path: Path) -> None:
    """A ticket with max_viewers = 1: one viewer plays, a second is refused;
    sevu.kick cuts the first off at its next on_update; play_done frees the
    place for the next viewer."""
    ticket = stack.ticket(app="demo-live", video="mystream", uses=0, max_viewers=1)
    key, url = ticket["key"], _stream(stack, ticket)
    progress = tmp_path / "first.progress"
    with _watching(url, progress) as first:
        second = streaming.play(url, timeout=15)
        print(f"second viewer while the first plays: {second.frames} frames")
        assert second.frames == 0, second
        kick = stack.api.call("sevu.kick", key=key)
        kicked = time.monotonic()
        assert (kick["code"], kick["ended"]) == (2111, 1), kick
        first.wait(timeout=UPDATE_S + 10)
        cut_after = time.monotonic() - kicked
    frames = streaming.frames_in(_read(progress))
    print(f"kick cut-off: {cut_after:.2f} s (first viewer stopped at frame {frames})")
    assert cut_after <= UPDATE_S + 1.5
    _until_no_open_session(stack, key)

    third = streaming.play(url)
    print(f"viewer after the kick: {third.frames} frames")
    assert third.returncode == 0 and third.frames >= 25, third
    _until_no_open_session(stack, key)  # its play_done
    fourth = streaming.play(url)
    print(f"viewer after play_done: {fourth.frames} frames")
    assert fourth.returncode == 0 and fourth.frames >= 25, fourth
    _until_no_open_session(stack, key)

    sessions = _sessions(stack, key)
    assert [(s["protocol"], s["end_reason"]) for s in sessions] == [
        ("rtmp", "done"),
        ("rtmp", "done"),
        ("rtmp", "kicked"),
    ], sessions
    assert stack.attempts(key) == [
        (1, ""),
        (0, "Too many viewers"),
        (0, "Session ended"),  # the update that found the session kicked
        (1, ""),
        (1, ""),
    ]
    assert stack.use_count(key) == 3


# -- Publishing: nginx-rtmp asks Usher (on_publish) -------------------------------------

#: Stream users of these tests, one stream each so the tests do not depend
#: on order: (user, pass).
ALICE = ("alice", "alice-pass-3Kd")
BOB = ("bob", "bob-pass-9Vw")


def _query(user: str | None, password: str | None) -> str:
    return "&".join(
        f"{name}={value}" for name, value in (("user", user), ("pass", password)) if value
    )


def _refused(url: str, progress: Path) -> streaming.Published:
    """A publish that nginx must refuse: ffmpeg fails, having sent nothing."""
    published = streaming.publish(url, progress, seconds=3)
    assert published.returncode != 0, published
    assert published.frames == 0, published
    assert published.seconds < 3, published  # refused at once, not after its 3 s
    return published


def _rtmp_port(stack: Stack) -> int:
    return int(stack.rtmp.rsplit(":", 1)[1])


def _player(stack: Stack, stream: str) -> streaming.Played:
    """A player of a demo-live stream, with a fresh ticket."""
    ticket = stack.ticket(app="demo-live", video=stream, uses=1)
    return streaming.play(_stream(stack, ticket, f"demo-live/{stream}"))


def test_rtmp_publish_with_the_right_pass_streams_to_a_player(stack: Stack, tmp_path: Path) -> None:
    stack.stream_user("cam-a", *ALICE)
    with _publishing(stack.rtmp, "demo-live/cam-a", tmp_path / "pub.progress", _query(*ALICE)):
        played = _player(stack, "cam-a")
    log = stack.publishes("cam-a")
    print(f"publish with the right pass: player got {played.frames} frames, log reason {log[0][3]}")
    assert played.returncode == 0 and played.frames >= 25, played
    assert log == [("127.0.0.1", "alice", True, "credentials")]
    # The server hashes a publisher's pass at the full cost (the in-process
    # suites use the cheapest, see cheap_publisher_hashes).
    [(stored,)] = query_database(
        stack.database, "SELECT pass_hash FROM stream_users WHERE stream = 'cam-a'"
    )
    assert stored.startswith(f"scrypt${LOG2_N}$") and ALICE[1] not in stored


def test_rtmp_publish_with_wrong_or_no_credentials_is_refused(stack: Stack, tmp_path: Path) -> None:
    stack.stream_user("cam-b", *ALICE)
    stack.stream_user("cam-other", *BOB)
    cases = [
        ("wrong pass", _query(ALICE[0], "not-alices-pass"), "alice", "bad_credentials"),
        ("no pass", _query(ALICE[0], None), "alice", "no_credentials"),
        ("no credentials", "", "", "no_credentials"),
        ("another stream's credentials", _query(*BOB), "bob", "bad_credentials"),
    ]
    for n, (name, query, user, reason) in enumerate(cases):
        url = f"{stack.rtmp}/demo-live/cam-b" + (f"?{query}" if query else "")
        published = _refused(url, tmp_path / f"{n}.progress")
        logged = stack.publishes("cam-b")
        print(
            f"{name}: ffmpeg exit {published.returncode} after {published.seconds:.1f} s, "
            f"{published.frames} frames, log reason {logged[-1][3]}"
        )
        assert logged[n:] == [("127.0.0.1", user, False, reason)], (name, logged)
    # The stream never existed: a player with a ticket gets nothing.
    played = _player(stack, "cam-b")
    assert played.frames == 0 and "No such stream" in played.stderr, played
    usher_log = stack.usher_log.read_text(errors="replace")
    assert "not-alices-pass" not in usher_log and BOB[1] not in usher_log


def test_rtmp_publish_brute_force_blocks_the_address_not_others(
    stack: Stack, tmp_path: Path
) -> None:
    """Ten wrong passes from one address block it: the eleventh publish,
    with the right pass, is refused without checking; another address still
    publishes. The guesses come from 127.0.0.2 (through a forwarder), so
    the block (300 s, the default) spares the 127.0.0.1 every other test of
    the module publishes from."""
    stack.stream_user("cam-c", *ALICE)
    limit = BruteForceLimit()  # the module's Usher runs with the defaults
    guesses = limit.denials
    with streaming.Forwarder(_rtmp_port(stack), source="127.0.0.2") as forwarder:
        other = f"rtmp://127.0.0.1:{forwarder.port}/demo-live/cam-c"
        started = time.monotonic()
        for n in range(guesses):
            _refused(f"{other}?{_query(ALICE[0], f'guess-{n}')}", tmp_path / f"{n}.p")
        guessing_s = time.monotonic() - started
        blocked = _refused(f"{other}?{_query(*ALICE)}", tmp_path / "right.progress")
    log = stack.publishes("cam-c")
    assert log == [("127.0.0.2", "alice", False, "bad_credentials")] * guesses + [
        ("127.0.0.2", "alice", False, "blocked")
    ], log
    assert guessing_s < limit.window  # so the last guess is the one that started the block
    with _publishing(stack.rtmp, "demo-live/cam-c", tmp_path / "pub.progress", _query(*ALICE)):
        played = _player(stack, "cam-c")
    print(
        f"brute force: {guesses} denials in {guessing_s:.1f} s, 11th (right pass) -> "
        f"{stack.publishes('cam-c')[guesses][3]} (ffmpeg exit {blocked.returncode}); "
        f"127.0.0.1 publishes: player got {played.frames} frames"
    )
    assert played.returncode == 0 and played.frames >= 25, played
    assert stack.publishes("cam-c")[guesses + 1 :] == [("127.0.0.1", "alice", True, "credentials")]


# -- HLS behind auth_request -----------------------------------------------------


def _access_log(stack: Stack) -> str:
    """nginx's access log once it stops growing: nginx writes a request's
    line after sending its answer, so a client can be ahead of the log."""
    path = stack.nginx.prefix / "logs" / "access.log"
    deadline = time.monotonic() + 2.0
    text = _read(path)
    while time.monotonic() < deadline:
        time.sleep(0.05)
        again = _read(path)
        if again == text:
            break
        text = again
    return text


def _requests_for(stack: Stack, key: str) -> list[tuple[str, int]]:
    """(URI, status) of the nginx access log lines carrying ``key``."""
    found = []
    for line in _access_log(stack).splitlines():
        match = re.search(r'"GET (\S+) HTTP/[\d.]+" (\d{3})', line)
        if match and key in match.group(1):
            found.append((match.group(1), int(match.group(2))))
    return found


def test_hls_player_fetches_everything_for_one_use_and_one_attempt(stack: Stack) -> None:
    ticket = stack.ticket(app="demo-vod", video="movie", uses=1)
    url = f"{stack.http}/demo-vod/movie/index.m3u8?key={ticket['key']}&pass=pw"
    # ffmpeg as the player: it follows the playlist's segment URIs, which the
    # shipped config rewrote to carry the ticket.
    played = streaming.play(url, seconds=MEDIA_SECONDS + 1)
    assert played.returncode == 0, played.stderr
    assert played.frames == MEDIA_SECONDS * 25, played
    requests = _requests_for(stack, ticket["key"])
    print(
        f"HLS player: {len(requests)} requests ({played.frames} frames), "
        f"use_count {stack.use_count(ticket['key'])}"
    )
    # Every file of the rendition was fetched (a player may fetch one twice),
    # each through the playlist's rewritten, ticket-carrying URI.
    fetched = {uri.split("?")[0].rsplit("/", 1)[1] for uri, _ in requests}
    assert fetched == {"index.m3u8", *stack.segments}, requests
    assert all(status in (200, 206) for _, status in requests), requests
    # The same playback again, all segments at once, still within the session.
    with httpx.Client(base_url=stack.http, timeout=10) as http, ThreadPoolExecutor(8) as pool:
        query = f"?key={ticket['key']}&pass=pw"
        uris = [f"/demo-vod/movie/{name}{query}" for name in stack.segments]
        statuses = list(pool.map(lambda uri: http.get(uri).status_code, uris))
    assert statuses == [200] * len(uris)
    assert stack.use_count(ticket["key"]) == 1
    assert stack.attempts(ticket["key"]) == [(1, "")]


def test_hls_without_a_valid_ticket_every_request_is_403(stack: Stack) -> None:
    ticket = stack.ticket(app="demo-vod", video="movie", uses=0)
    names = ["index.m3u8", *stack.segments]
    with httpx.Client(base_url=stack.http, timeout=10) as http:
        for query in ("", f"?key={ticket['key']}", f"?key={ticket['key']}&pass=wrong"):
            statuses = {http.get(f"/demo-vod/movie/{name}{query}").status_code for name in names}
            assert statuses == {403}, (query, statuses)
    assert stack.use_count(ticket["key"]) == 0
    failures = stack.attempts(ticket["key"])
    assert failures == [(0, "Invalid Auth Token")] * (2 * len(names))


def test_hls_revoke_denies_the_next_segment_within_a_second(stack: Stack) -> None:
    ticket = stack.ticket(app="demo-vod", video="movie", uses=1)
    query = f"?key={ticket['key']}&pass=pw"
    with httpx.Client(base_url=stack.http, timeout=10) as http:
        assert http.get(f"/demo-vod/movie/index.m3u8{query}").status_code == 200
        watched, unwatched = stack.segments[:3], stack.segments[3:]
        for name in watched:
            assert http.get(f"/demo-vod/movie/{name}{query}").status_code == 200
        assert stack.api.call("sevu.revoke", key=ticket["key"])["code"] == 2021
        revoked = time.monotonic()
        answers: list[tuple[float, int]] = []
        for name in unwatched:  # each one a segment nginx has not cached
            status = http.get(f"/demo-vod/movie/{name}{query}").status_code
            answers.append((time.monotonic() - revoked, status))
            time.sleep(0.06)
    refused = [at for at, status in answers if status == 403]
    assert refused, f"no segment was refused after the revoke: {answers}"
    print(f"first segment refused {refused[0]:.2f} s after sevu.revoke; answers {answers}")
    assert refused[0] <= 1.0
    first = next(i for i, (_, status) in enumerate(answers) if status == 403)
    assert all(status == 403 for _, status in answers[first:]), answers
    assert stack.use_count(ticket["key"]) == 1


def test_hls_kicked_viewer_is_refused_until_a_ttl_passes_without_a_request(
    stack: Stack,
) -> None:
    ticket = stack.ticket(app="demo-vod", video="movie", uses=0)
    key = ticket["key"]
    query = f"?key={key}&pass=pw"
    segments = itertools.cycle(stack.segments[3:])
    with httpx.Client(base_url=stack.http, timeout=10) as http:

        def segment() -> int:
            # Each segment is asked for at most once a second, so nginx's 1 s
            # cache of Usher's answers never answers for Usher.
            return http.get(f"/demo-vod/movie/{next(segments)}{query}").status_code

        assert http.get(f"/demo-vod/movie/index.m3u8{query}").status_code == 200
        for name in stack.segments[:3]:
            assert http.get(f"/demo-vod/movie/{name}{query}").status_code == 200
        kick = stack.api.call("sevu.kick", key=key)
        kicked = time.monotonic()
        assert (kick["code"], kick["ended"]) == (2111, 1), kick
        first = segment()
        refused_after = time.monotonic() - kicked
        # A player that keeps asking stays refused, well past a TTL.
        answers = [first]
        while time.monotonic() - kicked < SESSION_TTL + 2:
            time.sleep(1.2)
            answers.append(segment())
        print(
            f"kicked HLS viewer: next segment {first} after {refused_after:.2f} s; "
            f"{len(answers)} segments over {time.monotonic() - kicked:.1f} s -> {set(answers)}"
        )
        assert answers == [403] * len(answers), answers
        assert refused_after <= 1.0
        # Silent for a whole TTL: the next request starts a new session.
        time.sleep(SESSION_TTL + 1.5)
        assert segment() == 200
    sessions = _sessions(stack, key)
    assert [(s["protocol"], s["end_reason"]) for s in sessions] == [
        ("hls", None),
        ("hls", "kicked"),
    ]
    assert stack.use_count(key) == 2
    attempts = stack.attempts(key)
    assert attempts == [(1, "")] + [(0, "Session ended")] * len(answers) + [(1, "")], attempts
    reasons = re.findall(r'" 403 .* reason="([^"]*)"$', _access_log(stack), re.M)
    assert reasons.count("Session ended") >= len(answers), reasons


# -- Live HLS and DASH from nginx-rtmp, behind auth_request ------------------------------


def _live_playlist(prefix: Path, path: str) -> Path:
    """Wait (bounded) until nginx-rtmp has written a playlist with a few
    fragments; viewers asking earlier would get 404."""
    playlist = prefix / path
    deadline = time.monotonic() + streaming.STARTUP_S
    while time.monotonic() < deadline:
        text = _read(playlist)
        if text.count(".ts") >= 2 or text.count("<S ") >= 2:
            return playlist
        time.sleep(0.1)
    raise AssertionError(f"nginx-rtmp wrote no playlist {path}: {_read(playlist)!r}")


def _play_live(stack: Stack, http: str, path: str, video: str, files: set[str]) -> None:
    """A player fetches a live stream through nginx with a ticket: one use,
    one attempt, and every file it fetched carried the ticket."""
    ticket = stack.ticket(app="demo-live", video=video, uses=1)
    played = streaming.play(f"{http}/demo-live/{path}?key={ticket['key']}&pass=pw", seconds=1.5)
    requests = _requests_for(stack, ticket["key"])
    print(f"{path}: {played.frames} frames, {len(requests)} requests")
    assert played.returncode == 0, played.stderr
    assert played.frames >= 25, played
    assert all(status in (200, 206) for _, status in requests), requests
    names = (uri.split("?")[0].rsplit("/", 1)[1] for uri, _ in requests)
    fetched = {re.sub(r"(^|-)[0-9]+\.", r"\1N.", name) for name in names}
    assert fetched >= files, requests
    assert stack.use_count(ticket["key"]) == 1
    assert stack.attempts(ticket["key"]) == [(1, "")]


def test_live_hls_flat_layout_plays_with_a_ticket(stack: Stack) -> None:
    _live_playlist(stack.nginx.prefix, "live/hls/demo-live/mystream.m3u8")
    _play_live(stack, stack.http, "mystream.m3u8", "mystream", {"mystream.m3u8", "mystream-N.ts"})


def test_live_dash_plays_with_a_ticket(stack: Stack) -> None:
    _live_playlist(stack.nginx.prefix, "live/dash/demo-live/mystream.mpd")
    _play_live(
        stack,
        stack.http,
        "mystream.mpd",
        "mystream",
        {"mystream.mpd", "mystream-init.m4v", "mystream-N.m4v"},
    )


def test_live_hls_nested_layout_plays_with_a_ticket(stack: Stack, tmp_path: Path) -> None:
    # hls_nested is set per application: a second nginx with it on, with the
    # same shipped files, in front of the same Usher.
    rtmp_port, http_port = free_port(), free_port()
    with streaming.private_prefix() as prefix:
        config = _config(prefix, stack.usher_url, rtmp_port, http_port, nested=True)
        rtmp = f"rtmp://127.0.0.1:{rtmp_port}"
        with (
            streaming.run_nginx(prefix, config, [rtmp_port, http_port]) as nginx,
            _publishing(rtmp, "demo-live/nested", tmp_path / "publisher.progress"),
        ):
            _live_playlist(prefix, "live/hls/demo-live/nested/index.m3u8")
            nested = Stack(**{**stack.__dict__, "nginx": nginx})
            _play_live(
                nested,
                f"http://127.0.0.1:{http_port}",
                "nested/index.m3u8",
                "nested",
                {"index.m3u8", "N.ts"},
            )


def test_missing_files_get_404_without_asking_usher(stack: Stack) -> None:
    ticket = stack.ticket(app="demo-*", video="*", uses=1)
    query = f"?key={ticket['key']}&pass=pw"
    with httpx.Client(base_url=stack.http, timeout=10) as http:
        for uri in (
            "/demo-live/nobody-publishes.m3u8",
            "/demo-live/nobody-publishes.mpd",
            "/demo-live/nobody/index.m3u8",
            "/demo-live/mystream-999999.ts",
            "/demo-vod/nosuchmovie/index.m3u8",
        ):
            assert http.get(uri + query).status_code == 404, uri
    assert stack.use_count(ticket["key"]) == 0
    assert stack.attempts(ticket["key"]) == []


def test_the_access_log_says_why_usher_refused(stack: Stack) -> None:
    ticket = stack.ticket(app="demo-live", video="otherstream", uses=1)
    _live_playlist(stack.nginx.prefix, "live/hls/demo-live/mystream.m3u8")
    with httpx.Client(base_url=stack.http, timeout=10) as http:
        wrong_video = http.get(f"/demo-live/mystream.m3u8?key={ticket['key']}&pass=pw")
        wrong_pass = http.get(f"/demo-live/mystream.m3u8?key={ticket['key']}&pass=secret-guess")
    assert (wrong_video.status_code, wrong_pass.status_code) == (403, 403)
    log = _access_log(stack)
    lines = [line for line in log.splitlines() if ticket["key"] in line]
    reasons = [re.search(r' reason="([^"]*)"$', line) for line in lines]
    assert [
        found.group(1) if found else line for found, line in zip(reasons, lines, strict=True)
    ] == [
        "Invalid Video",
        "Invalid Auth Token",
    ], lines
    assert "secret-guess" not in log  # the query, with its pass, is not logged


# -- RTMP plays of streams nobody publishes ---------------------------------------------


def test_rtmp_play_of_an_unpublished_stream_still_spends_a_use(stack: Stack) -> None:
    """What nginx-rtmp does, pinned so docs/nginx.md stays true: it sends
    on_play before it looks for the stream, so Usher counts the use; with
    ``idle_streams off`` the viewer is then disconnected at once."""
    ticket = stack.ticket(app="demo-live", video="nobody-publishes", uses=1)
    played = streaming.play(_stream(stack, ticket, "demo-live/nobody-publishes"), timeout=15)
    print(f"unpublished stream: {played.frames} frames in {played.seconds:.1f} s")
    assert played.frames == 0, played
    assert played.seconds < 4  # disconnected, not left waiting for a publisher
    assert stack.attempts(ticket["key"]) == [(1, "")]
    assert stack.use_count(ticket["key"]) == 1


# -- Two workers -------------------------------------------------------------------------


def test_rtmp_two_workers_relay_calls_no_notification(stack: Stack, tmp_path: Path) -> None:
    """With two workers and rtmp_auto_push, every viewer is one attempt and
    one use whichever worker accepts it: copying the stream between workers
    notifies nothing. A viewer on the other worker receives nothing with
    the Debian module, as docs/nginx/rtmp.conf says."""
    rtmp_port = free_port()
    with streaming.private_prefix() as prefix:
        rtmp = streaming.render(
            "nginx/rtmp.conf",
            {
                "listen 1935;": f"listen 127.0.0.1:{rtmp_port};",
                "http://127.0.0.1:8080/": f"{stack.usher_url}/",
                "/var/www/usher-live": str(prefix / "live"),
                "/var/www/usher-vod": str(prefix / "vod"),
            },
        )
        config = streaming.main_config(prefix, rtmp=rtmp, workers=2)
        url = f"rtmp://127.0.0.1:{rtmp_port}"
        before = stack.errorcount()
        tickets = [stack.ticket(app="demo-live", video="relayed", uses=1) for _ in range(3)]
        with (
            streaming.run_nginx(prefix, config, [rtmp_port]) as nginx,
            _publishing(url, "demo-live/relayed", tmp_path / "publisher.progress"),
        ):
            plays = [
                streaming.play(
                    _stream(stack, t, "demo-live/relayed").replace(stack.rtmp, url),
                    seconds=0.5,
                    idle_s=2,
                    timeout=10,
                )
                for t in tickets
            ]
            error_log = nginx.error_log()
    workers = re.findall(r"\] (\d+)#\d+: \*\d+ (publish|play): name='relayed'", error_log)
    publisher = next(pid for pid, what in workers if what == "publish")
    served = [pid for pid, what in workers if what == "play"]
    print(
        "two workers: publisher on",
        publisher,
        "plays on",
        served,
        "frames",
        [p.frames for p in plays],
    )
    assert len(served) == len(tickets)
    for pid, played in zip(served, plays, strict=True):
        if pid == publisher:
            assert played.frames > 0, played
        else:
            assert played.frames == 0, (
                "rtmp_auto_push now delivers streams to the other workers; "
                "update the worker notes in docs/nginx/rtmp.conf and docs/nginx.md"
            )
    for ticket in tickets:
        assert stack.attempts(ticket["key"]) == [(1, "")]
        assert stack.use_count(ticket["key"]) == 1
    assert stack.errorcount() == before + len(tickets)
