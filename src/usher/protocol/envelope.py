"""The one place that turns an outcome into the SEVU response envelope.

Every response, success or failure, JSON or PHP-serialized, carries
``code``, ``message``, ``status`` and ``handle_time``; the command's payload
sits between them, as in the seed documentation's example result.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from usher.protocol import phpserial
from usher.protocol.codes import MESSAGES, Code, http_status
from usher.protocol.errors import ApiError

Format = Literal["json", "php"]

#: Codes whose answer is a success even though nothing was found.
_FAILURE_CODES = frozenset(code for code in Code if code < 2000) | {
    Code.STATUS_NOT_FOUND,
    Code.REVOKE_NOT_FOUND,
}


@dataclass(frozen=True, slots=True)
class Rendered:
    status: int
    body: bytes
    content_type: str


def handle_time(seconds: float) -> str:
    """``"0.0012 seconds"``: four decimals, as the seed's clients display it."""
    return f"{seconds:.4f} seconds"


def envelope(
    code: Code, payload: Mapping[str, object], elapsed: float, message: str | None = None
) -> dict[str, object]:
    body: dict[str, object] = {
        "code": int(code),
        "message": MESSAGES[code] if message is None else message,
        "status": "failure" if code in _FAILURE_CODES else "success",
    }
    body.update(payload)
    body["handle_time"] = handle_time(elapsed)
    return body


def render(
    code: Code,
    payload: Mapping[str, object],
    elapsed: float,
    fmt: Format = "json",
    *,
    message: str | None = None,
    status: int | None = None,
) -> Rendered:
    body = envelope(code, payload, elapsed, message)
    http = http_status(code) if status is None else status
    if fmt == "php":
        return Rendered(http, phpserial.dumps(body), "text/plain; charset=utf-8")
    return Rendered(
        http,
        json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8"),
        "application/json",
    )


def render_error(error: ApiError, elapsed: float, fmt: Format = "json") -> Rendered:
    return render(error.code, {}, elapsed, fmt, message=error.message, status=error.http)
