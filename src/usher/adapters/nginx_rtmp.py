"""nginx-rtmp-module notifications: ``on_play``, ``on_update``, ``on_play_done``,
``on_publish`` and ``on_publish_done``.

Wire format (``ngx_rtmp_notify_module.c``): an urlencoded form, POSTed by
default (``notify_method get`` moves it into the query string). nginx writes
its own fields first -- ``app``, ``flashver``, ``swfurl``, ``tcurl``,
``pageurl``, ``addr``, ``clientid``, then ``call``, ``name`` and the call's
own fields -- and appends the viewer's play query (``key=…&pass=…``) raw at
the end. So a field nginx sends is read from its FIRST occurrence: a viewer
who adds ``&addr=1.2.3.4`` or ``&call=play_done`` to the stream URL changes
nothing. nginx reads only the status code: 2xx allows, anything else drops
the connection (``on_update`` included, which is what makes it the
revocation hook).

A publish's credentials come the same way: the encoder's
``rtmp://origin/<app>/<stream>?user=…&pass=…`` reaches Usher as the fields
``user`` and ``pass`` after nginx's own (or on the tcUrl, for an encoder
that put them on the connection URL).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from urllib.parse import parse_qsl, urlsplit

from usher.adapters.check import first, first_credentials, parse_pairs
from usher.adapters.sessions import rtmp_session_handle
from usher.tickets.model import CheckRequest
from usher.tickets.publishers import PublishRequest


class Call(Enum):
    PLAY = "play"  # a playback start: a counted check
    UPDATE = "update"  # on_update of a playing client: a re-check
    DONE = "done"  # the playback ended: close the session
    IGNORED = "ignored"  # notifications that decide nothing (connect, publish_done…)
    PUBLISH = "publish"  # an encoder starts publishing: checked against the stream users
    INVALID = "invalid"  # not an nginx-rtmp notification


_CALLS = {
    "play": Call.PLAY,
    "update_play": Call.UPDATE,
    "play_done": Call.DONE,
    # on_done fires for plays and publishes alike; closing a session that
    # does not exist is harmless, so treat it as the end of a play.
    "done": Call.DONE,
    "connect": Call.IGNORED,
    "disconnect": Call.IGNORED,
    "update_publish": Call.IGNORED,
    "publish_done": Call.IGNORED,
    "record_done": Call.IGNORED,
    "publish": Call.PUBLISH,
}


@dataclass(frozen=True, slots=True)
class Notification:
    call: Call
    request: CheckRequest
    #: The live session's handle (one nginx connection playing one stream).
    handle: str
    #: For ``Call.INVALID``: a sentence for the operator.
    problem: str = ""
    #: For ``Call.PUBLISH``: what the encoder asked.
    publish: PublishRequest | None = None


def parse(pairs: list[tuple[str, str]], *, caller: str, server_ip: str) -> Notification:
    """Read one notification. Never raises: unusable input gives
    ``Call.INVALID`` with a sentence saying what is wrong."""
    raw_call = first(pairs, "call")
    call = _CALLS.get(raw_call or "", Call.INVALID)
    app = first(pairs, "app") or ""
    tcurl = first(pairs, "tcurl") or ""
    key, password = _credentials(pairs, tcurl, "key")
    request = CheckRequest(
        key=key or "",
        password=password or "",
        app=app,
        video=first(pairs, "name") or "",
        ip=first(pairs, "addr") or "",
        appinst=_appinst(tcurl, app),
        pageurl=first(pairs, "pageurl") or "",
        refurl=first(pairs, "swfurl") or tcurl,
        server_ip=server_ip,
        count_use=call is Call.PLAY,
    )
    clientid = first(pairs, "clientid") or ""
    problem = ""
    if call is Call.INVALID:
        shown = "no 'call' field" if raw_call is None else f"call={raw_call[:40]!r}"
        problem = (
            f"The nginx-rtmp notification has {shown}; point only on_play, on_update, "
            "on_play_done, on_publish and on_publish_done of nginx-rtmp at /usher/nginx-rtmp."
        )
    elif call is Call.PUBLISH:
        return Notification(call, request, "", publish=_publish(pairs, request, tcurl))
    elif call in (Call.PLAY, Call.UPDATE, Call.DONE) and not clientid:
        call = Call.INVALID
        problem = "The nginx-rtmp notification has no 'clientid'; it did not come from nginx-rtmp."
    return Notification(call, request, rtmp_session_handle(caller, clientid, request), problem)


def _credentials(
    pairs: list[tuple[str, str]], tcurl: str, name: str
) -> tuple[str | None, str | None]:
    """``name`` and ``pass`` from the stream URL's query, else from the
    connection URL's: some clients put them on ``rtmp://host/app?…``
    instead of the stream name."""

    def sources() -> Iterator[list[tuple[str, str]]]:
        yield pairs
        yield _tcurl_query(tcurl)

    return first_credentials(sources(), name)


def _publish(pairs: list[tuple[str, str]], request: CheckRequest, tcurl: str) -> PublishRequest:
    user, password = _credentials(pairs, tcurl, "user")
    return PublishRequest(
        app=request.app,
        stream=request.video,
        user=user or None,
        password=password or None,
        ip=request.ip,
        server="nginx-rtmp",
        server_ip=request.server_ip,
    )


def parse_body(query: bytes, body: bytes, method: str) -> list[tuple[str, str]]:
    """The notification's fields: the body of a POST, the query of a GET
    (``notify_method get``)."""
    return parse_pairs(query if method == "GET" else body)


def _tcurl_query(tcurl: str) -> list[tuple[str, str]]:
    _, _, query = tcurl.partition("?")
    return parse_qsl(query, keep_blank_values=True)[:50] if query else []


def _appinst(tcurl: str, app: str) -> str:
    """The application instance: what follows the app in the tcUrl's path
    (``rtmp://host/app/instance``), as Wowza-style clients send it."""
    try:
        path = urlsplit(tcurl).path
    except ValueError:
        return ""
    segments = [segment for segment in path.split("/") if segment]
    if len(segments) < 2 or segments[0] != app:
        return ""
    return "/".join(segments[1:])
