"""MediaMTX external HTTP authentication (``authHTTPAddress``).

MediaMTX POSTs a JSON object: ``user``, ``password``, ``ip``, ``action``
(``publish``, ``read``, ``playback``, ``api``, ``metrics``, ``pprof``),
``path``, ``protocol`` (``rtsp``, ``rtmp``, ``hls``, ``webrtc``, ``srt``…),
``id`` and ``query``; v1.9 and later add ``token``, newer ones
``userAgent``. Releases before 1.6 called the setting
``externalAuthenticationURL`` and sent the same fields. Any 2xx allows;
anything else refuses, and MediaMTX logs the body as the reason.

The ticket comes from the query (``?key=…&pass=…``), else from the user and
password (``rtsp://KEY:PASS@host/app/video``). Only viewers are checked:
``read`` and ``playback``; every other action is refused.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import Enum

from usher.adapters.check import credential, json_text, parse_json_object, parse_pairs
from usher.tickets.model import CheckRequest


class Action(Enum):
    VIEW = "view"
    REFUSED = "refused"
    INVALID = "invalid"


_VIEWING = frozenset({"read", "playback"})


@dataclass(frozen=True, slots=True)
class Auth:
    action: Action
    request: CheckRequest
    problem: str = ""
    #: MediaMTX's id of the reader (a UUID), when it sends one: the session
    #: takes it, so ``runOnUnread`` can end it by ``$MTX_READER_ID``.
    reader_id: str = ""


_EMPTY = CheckRequest(key="", password="", app="", video="", ip="")


def parse(body: bytes, *, server_ip: str) -> Auth:
    """Read one authentication request. Never raises."""
    fields = parse_json_object(body)
    if fields is None:
        return Auth(Action.INVALID, _EMPTY, problem="The MediaMTX auth body is not a JSON object.")
    action = json_text(fields.get("action"))
    if action not in _VIEWING:
        shown = repr(action[:40]) if action else "no action"
        return Auth(
            Action.REFUSED,
            _EMPTY,
            problem=(
                f"Usher authorizes viewers (read, playback) only, not {shown}; "
                "list other actions in authHTTPExclude or use authInternalUsers for them."
            ),
        )
    pairs = parse_pairs(json_text(fields.get("query")).removeprefix("?"))
    key = credential(pairs, "key")
    password = credential(pairs, "pass")
    if key is None:
        key = json_text(fields.get("user"))
        password = json_text(fields.get("password"))
    app, _, video = json_text(fields.get("path")).strip("/").partition("/")
    request = CheckRequest(
        key=key,
        password=password or "",
        app=app,
        video=video,
        ip=json_text(fields.get("ip")),
        server_ip=server_ip,
    )
    return Auth(Action.VIEW, request, reader_id=_reader_id(fields.get("id")))


def _reader_id(value: object) -> str:
    """MediaMTX's reader id when it is a UUID; anything else is not used as
    a session id (a caller-chosen id could collide with another session's)."""
    text = json_text(value)
    try:
        return str(uuid.UUID(text)) if text else ""
    except ValueError:
        return ""
