"""usher.client against a small HTTP server on 127.0.0.1: the body it sends,
its kept-alive connection, and its errors."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from tests.conftest import DOC_API_KEY, DOC_CDN, DOC_SECRET

from usher.client import Client, ClientError
from usher.protocol.signing import signature_matches
from usher.web.body import find_request, parse_request


@dataclass
class Seen:
    """What the server was sent, and how it should answer."""

    bodies: list[tuple[str, bytes]] = field(default_factory=list)
    peers: list[tuple[str, int]] = field(default_factory=list)
    answer: bytes = b'{"code": 2050, "status": "success"}'
    #: Close each connection after answering, without saying so (as a
    #: server whose keep-alive timeout passes between two calls does).
    hang_up: bool = False


@pytest.fixture
def server() -> Iterator[tuple[str, Seen]]:
    seen = Seen()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # the name http.server calls
            body = self.rfile.read(int(self.headers["Content-Length"]))
            seen.bodies.append((self.headers["Content-Type"], body))
            seen.peers.append(self.client_address)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(seen.answer)))
            self.end_headers()
            self.wfile.write(seen.answer)
            self.close_connection = seen.hang_up

        def log_message(self, *_: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/api", seen
    finally:
        httpd.shutdown()
        httpd.server_close()


def client(url: str) -> Client:
    return Client(url, cdn=DOC_CDN, api_key=DOC_API_KEY, secret=DOC_SECRET, timeout=5)


def test_the_body_is_the_signed_json_as_one_multipart_field(server: tuple[str, Seen]) -> None:
    url, seen = server
    with client(url) as c:
        assert c.call("sevu.errorcount", key="k.1", limit=10) == json.loads(seen.answer)
    (content_type, body), = seen.bodies  # fmt: skip
    # Usher's own parser finds the field and the signature verifies.
    text, fmt = find_request(content_type, body)
    signed = parse_request(text, fmt)
    assert signature_matches(signed.message, signed.signature, DOC_SECRET)
    assert signed.fields["command"] == "sevu.errorcount"
    assert list(signed.fields)[:4] == ["command", "api_key", "timestamp", "cdn"]
    assert (signed.fields["key"], signed.fields["limit"]) == ("k.1", 10)


def test_calls_share_one_connection(server: tuple[str, Seen]) -> None:
    url, seen = server
    with client(url) as c:
        for n in range(3):
            c.call("sevu.errorcount", n=n)
    assert len(set(seen.peers)) == 1


def test_a_connection_the_server_closed_while_idle_is_opened_again(
    server: tuple[str, Seen],
) -> None:
    url, seen = server
    seen.hang_up = True
    with client(url) as c:
        for n in range(3):
            c.call("sevu.errorcount", n=n)
            time.sleep(0.05)  # the server's close reaches the client's socket
    assert len(set(seen.peers)) == 3


def test_threads_take_turns_on_one_client(server: tuple[str, Seen]) -> None:
    url, seen = server
    answers: list[dict[str, object]] = []
    with client(url) as c:

        def calls(worker: int) -> None:
            for n in range(10):
                answers.append(c.call("sevu.errorcount", worker=worker, n=n))

        threads = [threading.Thread(target=calls, args=(w,)) for w in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    assert len(answers) == 40
    assert len(seen.bodies) == 40


def test_an_answer_that_is_not_an_envelope_is_an_error(server: tuple[str, Seen]) -> None:
    url, seen = server
    seen.answer = b"<html>not found</html>"
    with client(url) as c, pytest.raises(ClientError, match="without a JSON envelope"):
        c.call("sevu.errorcount")
    seen.answer = b"[1, 2]"
    with client(url) as c, pytest.raises(ClientError, match="not an object"):
        c.call("sevu.errorcount")


def test_a_server_that_is_not_there_is_an_error() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with client(f"http://127.0.0.1:{port}/api") as c, pytest.raises(ClientError, match="reach"):
        c.call("sevu.errorcount")


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/api", "127.0.0.1:8080/api", "http:///api"])
def test_a_url_that_is_not_http_is_refused(url: str) -> None:
    with pytest.raises(ClientError, match="http://HOST:PORT/api"):
        client(url)
