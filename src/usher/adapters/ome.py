"""OvenMediaEngine AdmissionWebhooks: JSON in, ``{"allowed": …}`` out.

OME POSTs a JSON object to ``<AdmissionWebhooks><ControlServerUrl>`` when a
player starts playing (``direction`` ``outgoing``) or an encoder starts
publishing (``incoming``), and again when it stops (``status`` ``closing``;
never for LLHLS). OME's source writes the body with JsonCpp, compact and with
members in sorted order::

    {"client":{"address":"…","port":29291,"real_ip":"…","user_agent":"…"},
     "request":{"direction":"outgoing","new_url":"…","protocol":"WebRTC",
     "status":"opening","time":"2021-05-12T13:45:00.000Z","url":"…"}}

``real_ip`` is the viewer's ``X-Real-IP``, else the first ``X-Forwarded-For``
entry, else the socket's address; ``new_url`` comes with ``closing`` only.
The documentation lists protocols in lower case (``webrtc``, ``llhls``,
``srt``, ``rtmp``, ``thumbnail``) where the source writes ``WebRTC``,
``LLHLS``…; the protocol decides nothing here.

The URL is the one the client asked for (an encoder's, ``incoming``, carries
``user`` and ``pass`` instead of ``key`` and ``pass``): ``ws://host:3333/app/stream?key=…``
(WebRTC), ``http://host:3333/app/stream/llhls.m3u8?…`` (LLHLS),
``srt://vhost/app/stream?…`` (SRT, read from the client's ``streamid``). App
and video are its first two path segments, ``key`` and ``pass`` come from
its query. A URL that still carries its SRT ``streamid`` as a parameter
(``srt://host:9999?streamid=srt%3A%2F%2Fhost%3A9999%2Fapp%2Fstream``) is
read through it, the way OME reads the ``streamid`` itself.

``X-OME-Signature`` is the HMAC-SHA1 of the raw body keyed with
``<SecretKey>``, base64url without padding. OME treats every status but 200
as an error, so every answer is a 200 with a JSON body: ``allowed`` with a
``lifetime`` in milliseconds (0 would mean unlimited), or not with a
``reason``, and ``{}`` to a ``closing`` notice.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from enum import Enum
from urllib.parse import unquote

from usher.adapters.check import credential, encode, json_text, parse_json_object, parse_pairs
from usher.adapters.sessions import ome_session_handle
from usher.tickets.model import CheckRequest
from usher.tickets.publishers import PublishRequest


class Kind(Enum):
    PLAY_OPENING = "play-opening"  # a player asks to start: a counted check
    PLAY_CLOSING = "play-closing"  # a player stopped: end its session
    PUBLISH = "publish"  # an encoder starts or stops (``closing`` tells which)
    INVALID = "invalid"  # not an OvenMediaEngine admission request


@dataclass(frozen=True, slots=True)
class Admission:
    kind: Kind
    request: CheckRequest
    #: Names the playback the same way in its opening and its closing notice.
    handle: str
    #: ``webrtc``, ``llhls``, ``srt``, ``rtmp``, ``thumbnail``… in lower case.
    protocol: str = ""
    #: For ``Kind.PUBLISH``: the encoder stopped rather than started.
    closing: bool = False
    #: For ``Kind.INVALID``: a sentence for the operator.
    problem: str = ""
    #: For ``Kind.PUBLISH``: what the encoder asked (its URL's ``user`` and
    #: ``pass``, as a publish URL of any other server carries them).
    publish: PublishRequest | None = None


@dataclass(frozen=True, slots=True)
class Target:
    """What a URL asks for: the app, the video and the query carrying the
    credentials."""

    app: str
    video: str
    query: str


_EMPTY = CheckRequest(key="", password="", app="", video="", ip="")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
#: Haivision's access-control syntax; OME reads its ``u=`` item as the stream.
_STREAM_ID_SYNTAX = "#!::"
_DIRECTIONS = frozenset({"outgoing", "incoming"})
_STATUSES = frozenset({"opening", "closing"})
_WHAT_TO_DO = "point only OvenMediaEngine's AdmissionWebhooks at /usher/ome."
#: JsonCpp reads a larger number as a double, and OME then ignores the
#: lifetime, which would make the playback unlimited.
MAX_LIFETIME = 2**63 - 1


def parse(body: bytes, *, server_ip: str) -> Admission:
    """Read one admission request. Never raises: unusable input gives
    ``Kind.INVALID`` with a sentence saying what is wrong."""
    fields = parse_json_object(body)
    if fields is None:
        return _invalid(f"The OvenMediaEngine admission body is not a JSON object; {_WHAT_TO_DO}")
    request = fields.get("request")
    if not isinstance(request, dict):
        return _invalid(
            f"The OvenMediaEngine admission body has no 'request' object; {_WHAT_TO_DO}"
        )
    client = fields.get("client")
    if not isinstance(client, dict):
        client = {}
    direction = json_text(request.get("direction"))
    if direction not in _DIRECTIONS:
        return _invalid(
            f"The OvenMediaEngine admission request has {_shown('direction', direction)}, "
            f"not 'outgoing' or 'incoming'; {_WHAT_TO_DO}"
        )
    status = json_text(request.get("status"))
    if status not in _STATUSES:
        return _invalid(
            f"The OvenMediaEngine admission request has {_shown('status', status)}, "
            f"not 'opening' or 'closing'; {_WHAT_TO_DO}"
        )
    url = json_text(request.get("url"))
    if not url:
        return _invalid(f"The OvenMediaEngine admission request has no 'url'; {_WHAT_TO_DO}")
    address = json_text(client.get("address"))
    port = json_text(client.get("port"))
    place = target(url)
    pairs = parse_pairs(place.query)
    checked = CheckRequest(
        key=credential(pairs, "key") or "",
        password=credential(pairs, "pass") or "",
        app=place.app,
        video=place.video,
        ip=json_text(client.get("real_ip")) or address,
        # Without the query: it holds the ticket's pass.
        refurl=url.partition("?")[0],
        server_ip=server_ip,
    )
    publish = None
    if direction == "incoming":
        kind = Kind.PUBLISH
        publish = PublishRequest(
            app=place.app,
            stream=place.video,
            user=credential(pairs, "user") or None,
            password=credential(pairs, "pass") or None,
            # The socket's address, never real_ip: OME copies that from the
            # client's own X-Real-IP or X-Forwarded-For, so an encoder could
            # name a new address for every guess and never be blocked.
            ip=address or checked.ip,
            server="ome",
            server_ip=server_ip,
        )
    else:
        kind = Kind.PLAY_OPENING if status == "opening" else Kind.PLAY_CLOSING
    return Admission(
        kind,
        checked,
        ome_session_handle(address, port, url),
        protocol=json_text(request.get("protocol")).lower()[:40],
        closing=status == "closing",
        publish=publish,
    )


def _invalid(problem: str) -> Admission:
    return Admission(Kind.INVALID, _EMPTY, "", problem=problem)


def _shown(name: str, value: str) -> str:
    return f"{name}={value[:40]!r}" if value else f"no '{name}'"


# -- the URL ------------------------------------------------------------------------


def target(url: str) -> Target:
    """App, video and query of the URL a client asked OME for."""
    scheme, path, query = _split(url)
    segments = _segments(path)
    if segments == [] and scheme == "srt":
        stream_id = credential(parse_pairs(query), "streamid")
        if stream_id:
            return _through_stream_id(stream_id)
    return _place(segments, query)


def _through_stream_id(stream_id: str) -> Target:
    """The target an SRT ``streamid`` names, read as OME reads it: a
    URL (``srt://host:port/app/stream?…``) or ``vhost/app/stream?…``,
    possibly as the ``u=`` item of ``#!::u=…,r=…``. The query parameter was
    percent-decoded once already, as OME decodes the ``streamid`` once."""
    if stream_id.startswith(_STREAM_ID_SYNTAX):
        items = stream_id.removeprefix(_STREAM_ID_SYNTAX).split(",")
        users = [item.removeprefix("u=") for item in items if item.startswith("u=")]
        stream_id = users[0] if users else ""
    if _SCHEME.match(stream_id) is None:
        stream_id = "srt://" + stream_id  # vhost/app/stream: the vhost is the host
    _, path, query = _split(stream_id)
    return _place(_segments(path), query)


def _split(url: str) -> tuple[str, str, str]:
    """Scheme (lower case), path and query of a URL or a bare path.

    By hand rather than with urlsplit, which raises on some hosts (``[::1``)."""
    match = _SCHEME.match(url)
    rest = url if match is None else url[match.end() :]
    rest, _, query = rest.partition("?")
    if match is None:
        return "", rest, query
    _, slash, path = rest.partition("/")
    return match.group()[:-3].lower(), slash + path, query


def _segments(path: str) -> list[str] | None:
    """The percent-decoded path segments; ``None`` when one is ``.`` or
    ``..``, which a server could resolve to another app than the one
    checked."""
    segments = [unquote(segment) for segment in path.split("/") if segment]
    if any(segment in (".", "..") for segment in segments):
        return None
    return segments


def _place(segments: list[str] | None, query: str) -> Target:
    # /<app>/<stream>[/<file>]: whatever follows the stream is a playlist or
    # a file of it (llhls.m3u8, thumb.jpg), not part of its name.
    if not segments:
        return Target("", "", query)
    return Target(segments[0], segments[1] if len(segments) > 1 else "", query)


# -- the signature ------------------------------------------------------------------


def signature(body: bytes, secret: str) -> str:
    """``X-OME-Signature`` of a body: HMAC-SHA1, base64url without padding."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha1).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def verify_signature(body: bytes, header: str | None, secret: str) -> bool:
    """Whether ``header`` is the body's signature with ``secret``; padding
    is tolerated, and the comparison takes the same time wherever it differs."""
    if header is None:
        return False
    given = header.rstrip("=").encode("utf-8", "surrogatepass")
    return hmac.compare_digest(given, signature(body, secret).encode("ascii"))


# -- the answers --------------------------------------------------------------------


#: The answer to every ``closing`` notice: OME reads nothing from it.
CLOSED = b"{}"


def lifetime(expire_at: int, now: float) -> int:
    """Milliseconds until a ticket expires, for OME's ``lifetime``: at least
    1, since 0 would mean no limit at all."""
    return max(1, min(MAX_LIFETIME, int((expire_at - now) * 1000)))


def allowed_body(lifetime_ms: int) -> bytes:
    return encode({"allowed": True, "lifetime": lifetime_ms, "reason": ""})


#: An allowed publish: no ``lifetime``, since an encoder's right to publish
#: does not expire with a ticket.
PUBLISH_ALLOWED = encode({"allowed": True, "reason": ""})


def refused_body(reason: str) -> bytes:
    return encode({"allowed": False, "reason": reason})
