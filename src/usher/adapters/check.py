"""The generic ``/usher/check`` callback: plain fields in, JSON out.

Also the field helpers every adapter shares: lenient decoding (a streaming
server forwards whatever bytes its viewers sent) and the rule that an
ambiguous credential counts as no credential.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl

from usher.tickets.model import CheckRequest, Decision, Reason
from usher.tickets.text import storable

FIELDS = (
    "key", "pass", "app", "video", "ip", "appinst", "pageurl", "refurl", "server_ip", "session",
)  # fmt: skip
#: Fields a caller may not send twice with different values: an ambiguous
#: credential is treated as no credential.
CREDENTIALS = frozenset({"key", "pass"})
#: Fields whose conflicting duplicates empty them: an ambiguous session
#: names none, so the check is a start.
_SINGLE = CREDENTIALS | {"session"}
#: Form fields read from one callback at most; the rest is ignored.
MAX_FIELDS = 200


def parse_pairs(data: bytes | str) -> list[tuple[str, str]]:
    """``a=1&b=2`` as decoded pairs; undecodable bytes become U+FFFD."""
    if isinstance(data, bytes):
        data = data.decode("utf-8", "replace")
    if "%" not in data and "+" not in data:
        # Nothing to decode (the usual check URL): what parse_qsl returns,
        # without its per-pair unquoting, which was most of the cost.
        pairs: list[tuple[str, str]] = []
        for part in data.split("&"):
            if part:
                name, _, value = part.partition("=")
                pairs.append((name, value))
        return pairs[:MAX_FIELDS]
    # parse_qsl percent-decodes with errors="replace" too, so "%ff" cannot fail.
    return parse_qsl(data, keep_blank_values=True, max_num_fields=None)[:MAX_FIELDS]


def parse_json_object(data: bytes) -> dict[str, Any] | None:
    """A JSON object body, or ``None`` when the body is anything else.

    A member given twice with different values becomes ``None`` (absent), for
    the same reason a conflicting credential does: the caller is ambiguous.
    """

    def pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for name, value in pairs:
            name = storable(name)
            if name in found and found[name] != value:
                found[name] = None
            else:
                found.setdefault(name, value)
        return found

    try:
        value = json.loads(data.decode("utf-8", "replace"), object_pairs_hook=pairs_hook)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def json_text(value: object) -> str:
    """A JSON member as text: strings as they are, numbers as digits (old SRS
    sends an integer ``client_id``), anything else as absent."""
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, bool) or value is None:
        return ""
    if isinstance(value, int | float):
        return str(value)
    return ""


def parse_json_fields(data: bytes) -> list[tuple[str, str]]:
    """A JSON object body as pairs; anything else yields no fields."""
    value = parse_json_object(data)
    if value is None:
        return []
    return [
        (name, storable(item) if isinstance(item, str) else json.dumps(item))
        for name, item in value.items()
        if item is not None
    ]


def first(pairs: list[tuple[str, str]], name: str) -> str | None:
    """The first value of ``name``, or ``None`` when it is absent.

    Callback formats put the server's own fields before anything copied from
    the viewer's URL, so the first occurrence is the one to trust.
    """
    for field, value in pairs:
        if field == name:
            return storable(value)
    return None


def credential(pairs: list[tuple[str, str]], name: str) -> str | None:
    """``key`` or ``pass`` from pairs: ``None`` when absent, ``""`` when given
    twice with different values (ambiguous, so no credential)."""
    found: str | None = None
    for field, value in pairs:
        if field != name:
            continue
        if found is not None and found != value:
            return ""
        found = value
    return None if found is None else storable(found)


def first_credentials(
    sources: Iterable[list[tuple[str, str]]], name: str
) -> tuple[str | None, str | None]:
    """``name`` (``key`` of a viewer, ``user`` of a publisher) and ``pass``
    from the first source that carries ``name``, ``(None, None)`` when none
    does. The pass is read from that source only: a credential is a pair,
    and sources are only parsed until one carries it."""
    for pairs in sources:
        found = credential(pairs, name)
        if found is not None:
            return found, credential(pairs, "pass")
    return None, None


def collect(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """The known fields; a conflicting duplicate of key or pass empties it."""
    found: dict[str, str] = {}
    for name, raw in pairs:
        if name not in FIELDS:
            continue
        value = storable(raw)
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


#: Longest session id a caller may name: Usher's own are 16 characters,
#: MediaMTX's UUIDs 36.
MAX_SESSION_ID = 128
SESSION_TOO_LONG = (
    f"The session id is longer than {MAX_SESSION_ID} characters; send the id Usher answered with."
)


def session_named(fields: dict[str, str]) -> str | None:
    """The session a check names (``session``), ``None`` for a start.
    Raises ``ValueError`` (with :data:`SESSION_TOO_LONG`) for an over-long id."""
    named = fields.get("session") or None
    if named is not None and len(named) > MAX_SESSION_ID:
        raise ValueError(SESSION_TOO_LONG)
    return named


def encode(value: dict[str, object]) -> bytes:
    """The one JSON encoding of a callback's answer body: compact, like the
    API envelope and every other JSON body the server writes."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def check_body(allowed: bool, reason: str) -> bytes:
    """The body of every ``/usher/check`` answer, allowed, denied or 503."""
    return encode({"allowed": allowed, "reason": reason})


# Every check waits for its answer: the bodies are encoded once, here.
_ALLOWED = check_body(True, "")
_DENIED: dict[Reason | None, bytes] = {
    reason: check_body(False, "" if reason is None else reason.value) for reason in [*Reason, None]
}
#: The 503 answers: Usher could not decide (the viewer was not refused).
OVERLOADED = check_body(False, "Usher is overloaded")
UNAVAILABLE = check_body(False, "Usher storage unavailable")


def answer(decision: Decision, session_id: str | None = None) -> tuple[int, bytes]:
    """200 with ``allowed: true`` (and the session's id) or 403 with the reason."""
    if decision.allowed:
        if session_id is None:
            return 200, _ALLOWED
        return 200, encode({"allowed": True, "reason": "", "session": session_id})
    return 403, _DENIED[decision.reason]


def ended_body(ended: bool) -> bytes:
    """``/usher/check/done``'s answer."""
    return encode({"ended": ended})
