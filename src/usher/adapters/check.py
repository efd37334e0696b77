"""The generic ``/usher/check`` callback: plain fields in, JSON out."""

from __future__ import annotations

import json
from urllib.parse import parse_qsl

from usher.tickets.model import CheckRequest, Decision

FIELDS = ("key", "pass", "app", "video", "ip", "appinst", "pageurl", "refurl", "server_ip")
#: Fields a caller may not send twice with different values: an ambiguous
#: credential is treated as no credential.
_SINGLE = frozenset({"key", "pass"})


def parse_pairs(data: bytes) -> list[tuple[str, str]]:
    """``a=1&b=2`` as decoded pairs; undecodable bytes become U+FFFD."""
    return parse_qsl(data.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=200)


def parse_json_fields(data: bytes) -> list[tuple[str, str]]:
    """A JSON object body as pairs; anything else yields no fields."""
    try:
        value = json.loads(data.decode("utf-8", "replace"))
    except ValueError:
        return []
    if not isinstance(value, dict):
        return []
    return [
        (str(name), item if isinstance(item, str) else json.dumps(item))
        for name, item in value.items()
        if item is not None
    ]


def collect(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """The known fields; a conflicting duplicate of key or pass empties it."""
    found: dict[str, str] = {}
    for name, value in pairs:
        if name not in FIELDS:
            continue
        if name in found and name in _SINGLE and found[name] != value:
            found[name] = ""
            continue
        found.setdefault(name, value)
    return found


def to_request(fields: dict[str, str], client_ip: str) -> CheckRequest:
    return CheckRequest(
        key=fields.get("key", ""),
        password=fields.get("pass", ""),
        app=fields.get("app", ""),
        video=fields.get("video", ""),
        ip=fields.get("ip") or client_ip,
        appinst=fields.get("appinst", ""),
        pageurl=fields.get("pageurl", ""),
        refurl=fields.get("refurl", ""),
        server_ip=fields.get("server_ip", ""),
    )


_ALLOWED = b'{"allowed":true,"reason":""}'


def answer(decision: Decision) -> tuple[int, bytes]:
    """200 with ``allowed: true`` or 403 with the reason."""
    if decision.allowed:
        return 200, _ALLOWED
    body = json.dumps({"allowed": False, "reason": decision.reason_text})
    return 403, body.encode()
