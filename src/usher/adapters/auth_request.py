"""nginx ``auth_request`` for HTTP streaming: HLS, DASH and progressive files.

nginx sends a subrequest for every request of the viewer; the docs'
configuration forwards the original URI in ``X-Original-URI`` (``$request_uri``,
raw as the viewer sent it), the viewer's address in ``X-Real-IP``, the page
in ``Referer`` and its own address in ``X-Server-Addr``. 2xx allows, 401/403
deny; any other status makes nginx answer 500.

The URI is interpreted the way nginx will serve it: percent-decoded, with
repeated slashes merged. A URI with ``.`` or ``..`` segments is not
interpreted at all (app and video stay empty, so the check fails with
``Invalid Application``): nginx would resolve ``/allowed-app/../other-app/``
to a different application than the one the ticket was checked against.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from usher.adapters.check import credential, parse_pairs
from usher.adapters.sessions import http_session_id
from usher.tickets.model import CheckRequest

#: In the default layout, a last segment with one of these
#: extensions is a playlist, segment or key file *of* the video, not part of
#: its name. Anything else (``movie.mp4``) is the video itself.
STREAM_FILES = (".m3u8", ".ts", ".m4s", ".mpd", ".aac", ".vtt", ".key")
#: Longest URI interpreted; nginx's default header buffers stop at 8 KiB.
MAX_URI = 8192


@dataclass(frozen=True, slots=True)
class Location:
    app: str
    video: str
    appinst: str = ""


_NOWHERE = Location("", "")


def locate(path: str, pattern: re.Pattern[str] | None) -> Location:
    """App, video and app instance of a percent-decoded URI path."""
    segments = [segment for segment in path.split("/") if segment]
    if any(segment in (".", "..") for segment in segments):
        return _NOWHERE
    if pattern is not None:
        match = pattern.fullmatch("/" + "/".join(segments))
        if match is None:
            return _NOWHERE
        groups = match.groupdict()
        return Location(groups["app"] or "", groups["video"] or "", groups.get("appinst") or "")
    if not segments:
        return _NOWHERE
    app, rest = segments[0], segments[1:]
    if rest and rest[-1].lower().endswith(STREAM_FILES):
        rest = rest[:-1]
    return Location(app, "/".join(rest))


def parse(
    original_uri: bytes,
    *,
    ip: str,
    referer: str,
    server_ip: str,
    pattern: re.Pattern[str] | None,
) -> tuple[CheckRequest, str]:
    """The check for one viewer request, and its playback-session id."""
    raw = original_uri[:MAX_URI]
    raw_path, _, query = raw.partition(b"?")
    path = unquote_to_bytes(raw_path).decode("utf-8", "replace")
    where = locate(path, pattern)
    pairs = parse_pairs(query)
    request = CheckRequest(
        key=credential(pairs, "key") or "",
        password=credential(pairs, "pass") or "",
        app=where.app,
        video=where.video,
        ip=ip,
        appinst=where.appinst,
        refurl=referer,
        server_ip=server_ip,
    )
    return request, http_session_id(request)
