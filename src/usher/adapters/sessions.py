"""Session handles: what makes two callbacks belong to one playback.

A handle is how Usher finds a live session again from a streaming server's
later callback (a sign of life, an end notice); it is not the session's
public id. A handle is a digest, so it has a fixed size whatever the caller sent, and every
Usher node computes the same id for the same playback without coordinating.
The parts are joined with NUL. A caller that puts NUL into its own fields can
at worst make its own playbacks share (or split) a session; the rules still
check every request against the ticket.
"""

from __future__ import annotations

import hashlib

from usher.tickets.model import CheckRequest


def _digest(kind: str, *parts: str) -> str:
    joined = "\x00".join(parts).encode("utf-8", "surrogatepass")
    return kind + ":" + hashlib.sha256(joined).hexdigest()


def http_session_handle(request: CheckRequest) -> str:
    """HTTP streaming (HLS, DASH, progressive): the contract keys a session on
    (key, client ip, video), so a player's playlist and segment requests,
    and its other renditions of the same video, share one use."""
    return _digest("http", request.key, request.ip, request.video)


def rtmp_session_handle(server: str, clientid: str, request: CheckRequest) -> str:
    """nginx-rtmp: one connection of one nginx (``clientid`` is nginx's
    connection number) playing one stream. The viewer's address, stream and
    key are part of the id, so a connection number reused after an nginx
    restart does not collide with a row left over from before it."""
    return _digest("rtmp", server, clientid, request.ip, request.app, request.video, request.key)


def srs_session_handle(server: str, client_id: str, request: CheckRequest) -> str:
    """SRS: one client of one SRS server playing one stream; ``on_stop``
    repeats every part. The stream is part of it because SRS numbers its
    clients afresh after a restart."""
    return _digest("srs", server, client_id, request.ip, request.app, request.video)


def ome_session_handle(address: str, port: str, url: str) -> str:
    """OvenMediaEngine: one client socket (address and port as OME saw it)
    asking for one URL. OME repeats both in the ``closing`` notice of a
    playback (the URL as first requested, whatever ``new_url`` it was sent
    on to), so the opening and the closing name the same session."""
    return _digest("ome", address, port, url)
