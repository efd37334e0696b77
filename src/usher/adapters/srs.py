"""SRS HTTP hooks (``on_play``, ``on_stop``, ``on_publish``, ``on_unpublish``):
JSON in, ``0`` or a refusal out.

SRS POSTs a JSON object: ``action``, ``client_id``, ``ip``, ``vhost``, ``app``,
``stream``, ``param`` (``?key=…&pass=…``), ``pageUrl``, ``tcUrl`` and, since
SRS 4, ``server_id``, ``service_id``, ``stream_url`` and ``stream_id``. Old
SRS sends an integer ``client_id`` and no ``param``; the viewer's query then
rides on the stream name or the tcUrl, so those are read too.

SRS allows only on HTTP 200/201 *and* a body of ``0`` (or ``{"code":0}``);
anything else refuses. Usher's refusal is 403 with a JSON body whose
non-zero ``code`` refuses even to an SRS that reads only the body.

``on_publish`` carries the encoder's ``?user=…&pass=…`` in ``param`` the
same way, and is checked against the stream users.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from usher.adapters.check import (
    encode,
    first_credentials,
    json_text,
    parse_json_object,
    parse_pairs,
)
from usher.tickets.model import CheckRequest
from usher.tickets.publishers import PublishRequest


class Action(Enum):
    PLAY = "play"
    STOP = "stop"  # on_stop: the player stopped; its session ends
    NOTICE = "notice"  # on_close…: nothing to decide, answered 0
    PUBLISH = "publish"  # on_publish: checked against the stream users
    INVALID = "invalid"


_ACTIONS = {
    "on_play": Action.PLAY,
    "on_stop": Action.STOP,
    "on_close": Action.NOTICE,
    "on_unpublish": Action.NOTICE,
    "on_dvr": Action.NOTICE,
    "on_hls": Action.NOTICE,
    "on_hls_notify": Action.NOTICE,
    # Connecting decides nothing: the play that follows is checked.
    "on_connect": Action.NOTICE,
    "on_publish": Action.PUBLISH,
}


@dataclass(frozen=True, slots=True)
class Hook:
    action: Action
    request: CheckRequest
    problem: str = ""
    #: SRS's client id (a string since SRS 4, an integer before).
    client_id: str = ""
    #: For ``Action.PUBLISH``: what the encoder asked.
    publish: PublishRequest | None = None


_EMPTY = CheckRequest(key="", password="", app="", video="", ip="")


def parse(body: bytes, *, server_ip: str) -> Hook:
    """Read one hook call. Never raises."""
    fields = parse_json_object(body)
    if fields is None:
        return Hook(Action.INVALID, _EMPTY, "The SRS hook body is not a JSON object.")
    action_name = json_text(fields.get("action"))
    action = _ACTIONS.get(action_name, Action.INVALID)
    if action is Action.INVALID:
        shown = repr(action_name[:40]) if action_name else "no action"
        return Hook(
            action,
            _EMPTY,
            f"The SRS hook has {shown}; point only on_play, on_stop, on_publish and "
            "on_unpublish at /usher/srs.",
        )
    if action is Action.PUBLISH:
        return Hook(action, _EMPTY, publish=_publish(fields, server_ip))
    return Hook(action, _request(fields, server_ip), client_id=json_text(fields.get("client_id")))


def _credentials(fields: dict[str, Any], name: str) -> tuple[str | None, str | None]:
    """``name`` (``key`` of a viewer, ``user`` of a publisher) and ``pass``
    from the first source that carries ``name``: param (SRS 3 and later),
    then what old SRS left on the stream name, the app or the tcUrl."""
    queries = (
        json_text(fields.get("param")).removeprefix("?"),
        _split(json_text(fields.get("stream")))[1],
        _split(json_text(fields.get("app")))[1],
        json_text(fields.get("tcUrl")).partition("?")[2],
    )
    return first_credentials((parse_pairs(query) for query in queries), name)


def _publish(fields: dict[str, Any], server_ip: str) -> PublishRequest:
    user, password = _credentials(fields, "user")
    return PublishRequest(
        app=_split(json_text(fields.get("app")))[0],
        stream=_split(json_text(fields.get("stream")))[0],
        user=user or None,
        password=password or None,
        ip=json_text(fields.get("ip")),
        server="srs",
        server_ip=server_ip,
    )


def _request(fields: dict[str, Any], server_ip: str) -> CheckRequest:
    app = _split(json_text(fields.get("app")))[0]
    stream = _split(json_text(fields.get("stream")))[0]
    tcurl = json_text(fields.get("tcUrl"))
    key, password = _credentials(fields, "key")
    return CheckRequest(
        key=key or "",
        password=password or "",
        app=app,
        video=stream,
        ip=json_text(fields.get("ip")),
        pageurl=json_text(fields.get("pageUrl")),
        refurl=tcurl,
        server_ip=server_ip,
    )


def _split(value: str) -> tuple[str, str]:
    name, _, query = value.partition("?")
    return name, query


ALLOW = b"0"


def deny_body(status: int, reason: str) -> bytes:
    """A refusal's body; its ``code`` is the HTTP status it is sent with."""
    return encode({"code": status, "allowed": False, "reason": reason})
