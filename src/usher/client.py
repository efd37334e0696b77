"""A small SEVU client that signs exactly like ScaleEngine's PHP example.

>>> client = Client("http://127.0.0.1:8080/api", cdn=1, api_key="...", secret="...")
>>> client.call("sevu.errorcount", key="mystream.53ffc996dd39d5.39102367")  # doctest: +SKIP
{'code': 2050, 'message': '...', 'status': 'success', 'error_count': 0, ...}

The request is built in the PHP example's order (command, api_key,
timestamp, cdn, then the command's fields), encoded like PHP ``json_encode``,
signed with HMAC-SHA256 over that text, and posted as a multipart ``json``
field, byte for byte what ``curl_setopt($ch, CURLOPT_POSTFIELDS,
array('json' => $json_request))`` sends.

Usher refuses a signature it has already accepted (code 7), so two identical
calls within one second would be a replay. The client therefore never signs
the same command and fields with the same timestamp twice: a repeat within
the second is dated one second later (well inside the server's tolerance
unless the same call is repeated hundreds of times a second).

The client keeps one HTTP/1.1 connection open between calls (the standard
library's, which costs a fraction of a general-purpose HTTP client's time per
call). Calls from several threads take turns on it.
"""

from __future__ import annotations

import http.client
import json
import secrets
import select
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from usher.protocol.signing import sign_request


class ClientError(Exception):
    """The server could not be reached or did not answer with an envelope."""


class Client:
    def __init__(
        self,
        url: str,
        *,
        cdn: int | str,
        api_key: str,
        secret: str,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self.cdn = int(cdn)
        self.api_key = api_key
        self._secret = secret
        self._clock = clock
        # What each recent distinct request was last dated; pruned of
        # entries older than the clock, so it stays small.
        self._dated: dict[str, int] = {}
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ClientError(
                f"{url!r} is not a URL Usher can be reached at; give its API as"
                " http://HOST:PORT/api (or https://)."
            )
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connection = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )
        self._http = connection(parts.hostname, parts.port, timeout=timeout)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Client({self.url!r}, cdn={self.cdn})"

    def signed_json(self, command: str, fields: dict[str, object]) -> str:
        """The signed JSON text for one command (without sending it)."""
        request: dict[str, object] = {
            "command": command,
            "api_key": self.api_key,
            "timestamp": self._timestamp(command, fields),
            "cdn": self.cdn,
        }
        request.update(fields)
        return sign_request(request, self._secret)

    def _timestamp(self, command: str, fields: dict[str, object]) -> int:
        now = int(self._clock())
        if len(self._dated) > 1024:
            self._dated = {k: v for k, v in self._dated.items() if v >= now}
        same = json.dumps([command, fields], sort_keys=True, default=repr)
        dated = max(now, self._dated.get(same, now - 1) + 1)
        self._dated[same] = dated
        return dated

    def call(self, command: str, **fields: object) -> dict[str, Any]:
        """Send one command and return the decoded response envelope."""
        with self._lock:
            body, content_type = _multipart_json(self.signed_json(command, fields))
            try:
                status, text = self._post(body, content_type)
            except (OSError, http.client.HTTPException) as exc:
                self._http.close()
                raise ClientError(f"Could not reach {self.url}: {exc}") from exc
        try:
            decoded = json.loads(text)
        except ValueError:
            raise ClientError(
                f"{self.url} answered HTTP {status} without a JSON envelope; "
                "check that the URL points at Usher's /api."
            ) from None
        if not isinstance(decoded, dict):
            raise ClientError(f"{self.url} answered with JSON that is not an object.")
        return decoded

    def _post(self, body: bytes, content_type: str) -> tuple[int, str]:
        sock = self._http.sock
        # An idle connection that has something to read was closed by the
        # server (its keep-alive timeout): a request sent on it would be lost.
        if sock is not None and select.select([sock], [], [], 0)[0]:
            self._http.close()
        self._http.request("POST", self._target, body, {"Content-Type": content_type})
        response = self._http.getresponse()
        return response.status, response.read().decode("utf-8", "replace")

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _multipart_json(text: str) -> tuple[bytes, str]:
    """``text`` as the one form field ``json`` of a multipart body, as PHP's
    curl sends ``array('json' => $json_request)``; and its content type."""
    boundary = secrets.token_hex(16)
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="json"\r\n\r\n'.encode()
        + text.encode()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"
