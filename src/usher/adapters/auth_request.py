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

Two layouts need no ``USHER_URI_PATTERN``: files in a directory per video
(``/<app>/<video>/index.m3u8``, nginx-rtmp's ``hls_nested on``), and
nginx-rtmp's default flat layout, where every stream of an application shares
one directory (``/<app>/<stream>.m3u8``, ``/<app>/<stream>-<n>.ts``; DASH
``/<app>/<stream>.mpd``, ``/<app>/<stream>-<n>.m4v``, ``-init.m4a``…), so the
video is read from the file name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from usher.adapters.check import credential, parse_pairs
from usher.adapters.sessions import http_session_handle
from usher.tickets.model import CheckRequest

#: In the default layout, a last segment with one of these
#: extensions is a playlist, segment or key file *of* the video, not part of
#: its name. Anything else (``movie.mp4``) is the video itself.
STREAM_FILES = (".m3u8", ".ts", ".m4s", ".mpd", ".aac", ".vtt", ".key")
#: Fragments carry a ``-<n>`` or ``-init`` suffix after the stream's name in
#: the flat layout.
FRAGMENTS = (".ts", ".m4s")
#: nginx-rtmp's DASH writes its fragments as ``.m4v``/``.m4a`` (named
#: ``<stream>-<n>``, ``<stream>-init``, or ``<n>``, ``init`` when nested).
#: The same extensions name whole progressive files (``songs/intro.m4a``),
#: so only names of that shape count as fragments.
DASH_FRAGMENT = re.compile(r"(?:.*-)?(?:[0-9]+|init)\.m4[av]", re.IGNORECASE)
_FRAGMENT_SUFFIX = re.compile(r"-(?:[0-9]+|init)$", re.IGNORECASE)
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
    if not rest or not _is_stream_file(rest[-1]):
        return Location(app, "/".join(rest))
    if len(rest) > 1:
        return Location(app, "/".join(rest[:-1]))
    return Location(app, _flat_video(rest[0]))


def _is_stream_file(name: str) -> bool:
    """A playlist, fragment or key file of a video rather than the video."""
    return name.lower().endswith(STREAM_FILES) or DASH_FRAGMENT.fullmatch(name) is not None


def _flat_video(name: str) -> str:
    """The stream a file of nginx-rtmp's flat layout belongs to: its name
    without the extension and, for a fragment, without ``-<n>``/``-init``."""
    stem, dot, extension = name.rpartition(".")
    if not dot:
        return name
    if f".{extension.lower()}" in FRAGMENTS or DASH_FRAGMENT.fullmatch(name):
        stem = _FRAGMENT_SUFFIX.sub("", stem)
    return stem


def parse(
    original_uri: bytes,
    *,
    ip: str,
    referer: str,
    server_ip: str,
    pattern: re.Pattern[str] | None,
) -> tuple[CheckRequest, str]:
    """The check for one viewer request, and its live session's handle."""
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
    return request, http_session_handle(request)
