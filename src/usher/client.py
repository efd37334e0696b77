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
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx

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
        transport: httpx.BaseTransport | None = None,
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
        self._http = httpx.Client(timeout=timeout, transport=transport)

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
        body = self.signed_json(command, fields)
        try:
            response = self._http.post(self.url, files={"json": (None, body)})
        except httpx.HTTPError as exc:
            raise ClientError(f"Could not reach {self.url}: {exc}") from exc
        try:
            decoded = json.loads(response.text)
        except ValueError:
            raise ClientError(
                f"{self.url} answered HTTP {response.status_code} without a JSON envelope; "
                "check that the URL points at Usher's /api."
            ) from None
        if not isinstance(decoded, dict):
            raise ClientError(f"{self.url} answered with JSON that is not an object.")
        return decoded

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
