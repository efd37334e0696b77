"""Clients that misbehave at the HTTP level, against a real ``usher serve``.

Raw sockets send what no polite client would: bodies that stop half-way,
headers one byte at a time, more connections than the server allows, and
trailing-slash paths with a forged ``Host``. Each test is bounded in count
and time, and after each one the server must show no 5xx in ``/metrics``
and no traceback in its log: a hostile client is not a server error.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.live.conftest import LiveServer

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("timing")]

HEADER_TIMEOUT = 2
BODY_TIMEOUT = 2
MAX_CONNECTIONS = 20
#: How late past a deadline the server may close a connection: the test
#: machine may be busy, but a missing deadline would be late by far more.
SLACK = 1.5

#: Every endpoint that reads a request body, with the metric route it
#: counts under and a content type it reads.
POST_ENDPOINTS = [
    ("/api", "/api", "application/json"),
    ("/panel/sign-in", "/panel", "application/x-www-form-urlencoded"),
    ("/usher/srs", "/usher/srs", "application/json"),
    ("/usher/mediamtx", "/usher/mediamtx", "application/json"),
    ("/usher/ome", "/usher/ome", "application/json"),
    ("/usher/nginx-rtmp", "/usher/nginx-rtmp", "application/x-www-form-urlencoded"),
    ("/usher/check", "/usher/check", "application/x-www-form-urlencoded"),
]


@pytest.fixture
def database_url(db_path: object) -> str:
    # These defects live in the HTTP layer, in front of any storage.
    return f"sqlite:///{db_path}"


@pytest.fixture
def server_env() -> dict[str, str]:
    return {
        "USHER_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
        "USHER_BODY_TIMEOUT": str(BODY_TIMEOUT),
        "USHER_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
    }


@pytest.fixture(autouse=True)
def no_server_errors(live_server: LiveServer) -> Iterator[None]:
    """After each test: no 5xx counted, and nothing alarming in the log."""
    yield
    for labels, value in samples(live_server, "usher_http_requests_total"):
        assert not labels["status"].startswith("5"), (labels, value)
    log = live_server.log.read_text(errors="replace")
    for alarm in ("Traceback", "Exception in ASGI application", "Unexpected error", "ERROR"):
        assert alarm not in log, f"the server logged {alarm!r}:\n{log[-3000:]}"


def samples(server: LiveServer, name: str) -> list[tuple[dict[str, str], float]]:
    """The samples named ``name`` in the server's ``/metrics``, with their labels."""
    text = httpx.get(server.url + "/metrics", timeout=5).text
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


def counted(server: LiveServer, name: str, **labels: str) -> float:
    return sum(
        value
        for found, value in samples(server, name)
        if all(found.get(k) == v for k, v in labels.items())
    )


def connect(server: LiveServer) -> socket.socket:
    port = int(server.url.rsplit(":", 1)[1])
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def post_head(path: str, content_type: str, length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def closed_by_server(sock: socket.socket) -> bytes | None:
    """What the server sent before closing, or ``None`` if it is still open."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return None
    received = b""
    sock.settimeout(2)
    try:
        while chunk := sock.recv(4096):
            received += chunk
    except ConnectionResetError:
        pass
    return received


def test_a_disconnect_mid_body_is_counted_apart_not_as_an_error(live_server: LiveServer) -> None:
    rounds = 3
    for _ in range(rounds):
        for path, _route, content_type in POST_ENDPOINTS:
            with connect(live_server) as sock:
                sock.sendall(post_head(path, content_type, 4096) + b"x" * 100)
                time.sleep(0.02)  # the body has started; now the client goes away

    expected = {route: float(rounds) for _path, route, _type in POST_ENDPOINTS}
    deadline = time.monotonic() + 5
    seen: dict[str, float] = {}
    while time.monotonic() < deadline:
        seen = {
            labels["route"]: value
            for labels, value in samples(live_server, "usher_client_disconnects_total")
        }
        if seen == expected:
            break
        time.sleep(0.1)
    assert seen == expected
    # Not a request answered with some status either (the check once said "0").
    statuses = {labels["status"] for labels, _ in samples(live_server, "usher_http_requests_total")}
    assert statuses <= {"200"}, statuses


def test_no_redirect_is_built_from_the_host_header(live_server: LiveServer) -> None:
    for path in ("/api/", "/usher/check/", "/healthz/", "/metrics/", "/usher/srs/"):
        for method in ("GET", "POST"):
            response = httpx.request(
                method, live_server.url + path, headers={"Host": "evil.example"}, timeout=5
            )
            assert "location" not in response.headers, (method, path, response.headers)
            assert response.status_code == 404, (method, path, response.status_code)
    # The panel's one redirect is a path, whatever the Host.
    response = httpx.get(live_server.url + "/panel", headers={"Host": "evil.example"}, timeout=5)
    assert response.status_code == 308
    assert response.headers["location"] == "/panel/"


def test_headers_sent_byte_by_byte_are_cut_off(live_server: LiveServer) -> None:
    count = 10
    sockets = [connect(live_server) for _ in range(count)]
    started = time.monotonic()
    closed_after: dict[int, float] = {}
    answers: dict[int, bytes] = {}
    health: list[float] = []
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 1000
    sent = 0
    try:
        while len(closed_after) < count and time.monotonic() - started < HEADER_TIMEOUT + SLACK:
            for n, sock in enumerate(sockets):
                if n in closed_after:
                    continue
                answer = closed_by_server(sock)
                if answer is None:
                    try:
                        sock.send(request[sent : sent + 1])
                        continue
                    except OSError:
                        answer = b""
                closed_after[n] = time.monotonic() - started
                answers[n] = answer
            sent += 1
            before = time.monotonic()
            assert httpx.get(live_server.url + "/healthz", timeout=5).status_code == 200
            health.append(time.monotonic() - before)
            time.sleep(0.1)
    finally:
        for sock in sockets:
            sock.close()
    assert len(closed_after) == count, f"only {len(closed_after)} of {count} were cut off"
    assert min(closed_after.values()) >= HEADER_TIMEOUT - 0.1
    assert max(closed_after.values()) <= HEADER_TIMEOUT + SLACK
    for answer in answers.values():
        assert answer == b"" or answer.startswith(b"HTTP/1.1 408 "), answer
    assert max(health) < 1.0, health
    assert counted(live_server, "usher_connections_closed_total", reason="header_timeout") == count


def test_a_body_that_never_ends_is_answered_408(live_server: LiveServer) -> None:
    sockets = []
    for path, _route, content_type in POST_ENDPOINTS:
        sock = connect(live_server)
        sock.sendall(post_head(path, content_type, 4096) + b"x")
        sockets.append(sock)
    started = time.monotonic()
    answers: dict[int, bytes] = {}
    try:
        while len(answers) < len(sockets) and time.monotonic() - started < BODY_TIMEOUT + SLACK:
            for n, sock in enumerate(sockets):
                if n not in answers and (answer := closed_by_server(sock)) is not None:
                    answers[n] = answer
                elif n not in answers:
                    sock.send(b"x")  # a trickle, but never the whole body
            time.sleep(0.2)
        elapsed = time.monotonic() - started
    finally:
        for sock in sockets:
            sock.close()
    assert len(answers) == len(sockets), f"{len(answers)} of {len(sockets)} cut off"
    assert elapsed >= BODY_TIMEOUT - 0.5
    for answer in answers.values():
        assert answer.startswith(b"HTTP/1.1 408 "), answer
    for _path, route, _type in POST_ENDPOINTS:
        assert counted(live_server, "usher_http_requests_total", route=route, status="408") == 1
    assert counted(live_server, "usher_client_disconnects_total") == 0
    assert counted(live_server, "usher_connections_closed_total", reason="body_timeout") == len(
        POST_ENDPOINTS
    )


def test_connections_beyond_the_limit_are_refused_at_once(live_server: LiveServer) -> None:
    held = [connect(live_server) for _ in range(MAX_CONNECTIONS)]
    extra: list[socket.socket] = []
    try:
        for sock in held:
            sock.sendall(b"GET /healthz HTTP/1.1\r\n")  # and never the rest
        time.sleep(0.3)  # the server accepts them
        started = time.monotonic()
        extra = [connect(live_server) for _ in range(5)]
        answers: dict[int, bytes] = {}
        while len(answers) < len(extra) and time.monotonic() - started < 1:
            for n, sock in enumerate(extra):
                if n not in answers and (answer := closed_by_server(sock)) is not None:
                    answers[n] = answer
            time.sleep(0.02)
        refused_within = time.monotonic() - started
        assert len(answers) == len(extra), f"{len(answers)} of {len(extra)} refused"
        assert refused_within < HEADER_TIMEOUT / 2  # refused, not timed out
        for answer in answers.values():
            assert answer.startswith(b"HTTP/1.1 503 "), answer
        # Every held connection is still open: the limit refuses newcomers.
        assert all(closed_by_server(sock) is None for sock in held)
    finally:
        for sock in [*held, *extra]:
            sock.close()
    # Once the held ones are gone the server takes connections again.
    deadline = time.monotonic() + 2
    while True:
        try:
            if httpx.get(live_server.url + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the server did not recover"
        time.sleep(0.05)
    assert counted(live_server, "usher_connections_closed_total", reason="over_limit") == 5
