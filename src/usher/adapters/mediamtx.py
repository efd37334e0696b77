"""MediaMTX external HTTP authentication (``authHTTPAddress``).

MediaMTX POSTs a JSON object: ``user``, ``password``, ``ip``, ``action``
(``publish``, ``read``, ``playback``, ``api``, ``metrics``, ``pprof``),
``path``, ``protocol`` (``rtsp``, ``rtmp``, ``hls``, ``webrtc``, ``srt``…),
``id`` and ``query``; v1.9 and later add ``token``, newer ones
``userAgent``. Releases before 1.6 called the setting
``externalAuthenticationURL`` and sent the same fields. Any 2xx allows;
anything else refuses, and MediaMTX logs the body as the reason.

The ticket comes from the query (``?key=…&pass=…``), else from the user and
password (``rtsp://KEY:PASS@host/app/video``). ``read`` and ``playback``
are viewers; ``publish`` is an encoder, checked against the stream users with
``user`` and ``pass`` from the query, else MediaMTX's own ``user`` and
``password`` (``rtsp://alice:PASS@host/app/stream``, or what its RTMP and SRT
readers took from the URL). Every other action is refused.

An RTSP client sends its credentials only when asked: MediaMTX first asks
with none at all, and a 401 makes it challenge the client, which then
sends ``rtsp://USER:PASS@…``'s. Such a request is answered 401 and decides
nothing (no attempt, no publish log row, no denial toward a block).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import Enum
from typing import Any

from usher.adapters.check import (
    credential,
    first_credentials,
    json_text,
    parse_json_object,
    parse_pairs,
)
from usher.tickets.model import CheckRequest
from usher.tickets.publishers import PublishRequest


class Action(Enum):
    VIEW = "view"
    PUBLISH = "publish"
    CHALLENGE = "challenge"  # an RTSP request without credentials: ask for them
    REFUSED = "refused"
    INVALID = "invalid"


_VIEWING = frozenset({"read", "playback"})
_ASKS_CREDENTIALS = _VIEWING | {"publish"}
_CHALLENGE = "No credentials yet; MediaMTX asks the RTSP client for them."


@dataclass(frozen=True, slots=True)
class Auth:
    action: Action
    request: CheckRequest
    problem: str = ""
    #: MediaMTX's id of the reader (a UUID), when it sends one: the session
    #: takes it, so ``runOnUnread`` can end it by ``$MTX_READER_ID``.
    reader_id: str = ""
    #: For ``Action.PUBLISH``: what the encoder asked.
    publish: PublishRequest | None = None


_EMPTY = CheckRequest(key="", password="", app="", video="", ip="")


def parse(body: bytes, *, server_ip: str) -> Auth:
    """Read one authentication request. Never raises."""
    fields = parse_json_object(body)
    if fields is None:
        return Auth(Action.INVALID, _EMPTY, problem="The MediaMTX auth body is not a JSON object.")
    action = json_text(fields.get("action"))
    if action in _ASKS_CREDENTIALS and _unasked(fields):
        return Auth(Action.CHALLENGE, _EMPTY, problem=_CHALLENGE)
    if action == "publish":
        return Auth(Action.PUBLISH, _EMPTY, publish=_publish(fields, server_ip))
    if action not in _VIEWING:
        shown = repr(action[:40]) if action else "no action"
        return Auth(
            Action.REFUSED,
            _EMPTY,
            problem=(
                f"Usher authorizes viewers (read, playback) and publishers (publish) only, "
                f"not {shown}; list other actions in authHTTPExclude or use "
                "authInternalUsers for them."
            ),
        )
    key, password = _credentials(fields, "key")
    app, video = _path(fields)
    request = CheckRequest(
        key=key,
        password=password,
        app=app,
        video=video,
        ip=json_text(fields.get("ip")),
        server_ip=server_ip,
    )
    return Auth(Action.VIEW, request, reader_id=_reader_id(fields.get("id")))


def _unasked(fields: dict[str, Any]) -> bool:
    """An RTSP request carrying no credentials of any kind: MediaMTX's first
    question, before it has challenged the client."""
    if json_text(fields.get("protocol")) != "rtsp":
        return False
    if any(json_text(fields.get(name)) for name in ("user", "password", "token")):
        return False
    pairs = parse_pairs(json_text(fields.get("query")).removeprefix("?"))
    return all(credential(pairs, name) is None for name in ("key", "user", "pass"))


def _credentials(fields: dict[str, Any], name: str) -> tuple[str, str]:
    """``name`` (``key`` of a viewer, ``user`` of a publisher) and ``pass``
    from the query, else MediaMTX's ``user`` and ``password``."""
    pairs = parse_pairs(json_text(fields.get("query")).removeprefix("?"))
    found, password = first_credentials([pairs], name)
    if found is not None:
        return found, password or ""
    return json_text(fields.get("user")), json_text(fields.get("password"))


def _path(fields: dict[str, Any]) -> tuple[str, str]:
    """App and stream of MediaMTX's ``path`` (``app/stream``)."""
    app, _, stream = json_text(fields.get("path")).strip("/").partition("/")
    return app, stream


def _publish(fields: dict[str, Any], server_ip: str) -> PublishRequest:
    user, password = _credentials(fields, "user")
    app, stream = _path(fields)
    return PublishRequest(
        app=app,
        stream=stream,
        user=user or None,
        password=password or None,
        ip=json_text(fields.get("ip")),
        server="mediamtx",
        server_ip=server_ip,
    )


def _reader_id(value: object) -> str:
    """MediaMTX's reader id when it is a UUID; anything else is not used as
    a session id (a caller-chosen id could collide with another session's)."""
    text = json_text(value)
    try:
        return str(uuid.UUID(text)) if text else ""
    except ValueError:
        return ""
