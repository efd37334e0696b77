"""``/usher/check`` as a bare ASGI handler: the hot path.

Every viewer's first frame waits for this answer, and profiling the server
under ``wrk`` showed about half of the event loop's time in Starlette's
layers (middleware stack, routing, ``Request``/``Response`` objects) rather
than in the check itself. This handler works straight on the ASGI scope:
one dict walk for two headers, preallocated header lists, and one ``send``
per message.

:class:`usher.web.app.UsherApp` sends ``GET`` and ``POST /usher/check``
here before Starlette; Starlette's route (a
:class:`usher.web.app.BareEndpoint`) runs the same handler for ``HEAD`` and
answers 405 to other methods.
"""

from __future__ import annotations

import logging
from typing import Final

from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from usher.adapters import check as wire
from usher.protocol.errors import StorageBusy, StorageError
from usher.web.callers import FORBIDDEN_CALLER, MAX_CHECK_BODY, header_text, peer_allowed
from usher.web.playback import Checker
from usher.web.state import AppState

log = logging.getLogger("usher.check")

_JSON: Final = b"application/json"
_TEXT: Final = b"text/plain; charset=utf-8"
_TOO_LARGE: Final = b"The check body is larger than 64 KiB.\n"


async def read_capped(receive: Receive, limit: int) -> bytes | None:
    """The request body, or ``None`` when it exceeds ``limit`` bytes.

    Raises Starlette's ``ClientDisconnect`` when the caller goes away first,
    as ``Request.stream()`` does: :class:`usher.web.app.UsherApp` counts
    both the same way.
    """
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


#: Header lists by (content type, length); the answers come in a handful of sizes.
_HEADERS: dict[tuple[bytes, int], list[tuple[bytes, bytes]]] = {}


async def send_answer(send: Send, status: int, body: bytes, content_type: bytes) -> int:
    headers = _HEADERS.get((content_type, len(body)))
    if headers is None:
        headers = [(b"content-type", content_type), (b"content-length", b"%d" % len(body))]
        if len(_HEADERS) < 256:
            _HEADERS[content_type, len(body)] = headers
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
    return status


async def serve_check(state: AppState, scope: Scope, receive: Receive, send: Send) -> int:
    """Answer one ``GET``/``POST /usher/check``; returns the HTTP status sent.

    Raises ``ClientDisconnect`` when the caller went away before its body arrived.
    """
    client = scope.get("client")
    peer = client[0] if client else None
    if not peer_allowed(peer, state.settings.callback_allow):
        return await send_answer(send, 403, FORBIDDEN_CALLER, _TEXT)
    real_ip = ""
    content_type = b""
    for name, value in scope["headers"]:
        # The first of each, as Starlette's ``headers.get`` would take.
        if name == b"x-real-ip" and not real_ip:
            real_ip = header_text(value)
        elif name == b"content-type" and not content_type:
            content_type = value
    pairs = wire.parse_pairs(scope["query_string"])
    if scope["method"] == "POST":
        body = await read_capped(receive, MAX_CHECK_BODY)
        if body is None:
            return await send_answer(send, 413, _TOO_LARGE, _TEXT)
        if content_type.startswith(b"application/json"):
            pairs += wire.parse_json_fields(body)
        else:
            pairs += wire.parse_pairs(body)
    fields = wire.collect(pairs)
    checked = wire.to_request(fields, real_ip or peer or "")
    try:
        session_id = wire.session_named(fields)
    except ValueError as exc:
        return await send_answer(send, 400, f"{exc}\n".encode(), _TEXT)
    try:
        outcome = await Checker(state).check(checked, session_id)
    except StorageBusy:
        # 503, not 403: the viewer was not refused, Usher could not decide.
        return await send_answer(send, 503, wire.OVERLOADED, _JSON)
    except StorageError as exc:
        log.error("The storage failed during a check: %s", exc)
        return await send_answer(send, 503, wire.UNAVAILABLE, _JSON)
    session = outcome.session
    status, answer = wire.answer(outcome.decision, None if session is None else session.id)
    return await send_answer(send, status, answer, _JSON)
