"""``POST /api`` and ``/stable/``: the signed SEVU command API."""

from __future__ import annotations

import logging
import time

from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from usher.commands import COMMANDS
from usher.commands.dispatch import execute
from usher.protocol.codes import Code
from usher.protocol.envelope import Format, Rendered, render, render_error
from usher.protocol.errors import (
    ApiError,
    BodyTooLarge,
    Overloaded,
    StorageBusy,
    StorageError,
    UnexpectedError,
)
from usher.web.body import find_request, parse_request, refuse_declared
from usher.web.fastcheck import read_capped, send_answer
from usher.web.playback import Checker
from usher.web.state import AppState

log = logging.getLogger("usher.api")


async def serve_api(state: AppState, scope: Scope, receive: Receive, send: Send) -> int:
    """Answer one ``POST /api`` (or ``/stable/``) on the bare ASGI scope, as
    :func:`usher.web.fastcheck.serve_check` does for checks (and as its
    Starlette route does, through :class:`usher.web.app.BareEndpoint`);
    returns the HTTP status sent. Starlette's request, routing, middleware
    and response layers cost about a quarter of a signed command's time in
    the event loop, and a dashboard waits for every command.

    Raises ``ClientDisconnect`` when the caller went away before its body arrived.
    """
    content_type = declared = None
    for name, value in scope["headers"]:
        # The first of each, as Starlette's ``headers.get`` would take.
        if name == b"content-type" and content_type is None:
            content_type = value.decode("latin-1")
        elif name == b"content-length" and declared is None:
            declared = value.decode("latin-1")
    rendered = await _respond(state, content_type or "", declared, receive)
    return await send_answer(
        send, rendered.status, rendered.body, rendered.content_type.encode("latin-1")
    )


async def _respond(
    state: AppState, content_type: str, declared: str | None, receive: Receive
) -> Rendered:
    """The envelope for one signed command, its body still to be read."""
    started = time.perf_counter()
    fmt: Format = "json"
    command = "none"
    limit = state.settings.max_body
    try:
        refuse_declared(declared, limit)
        body = await read_capped(receive, limit)
        if body is None:
            raise BodyTooLarge(limit)
        text, fmt = find_request(content_type, body)
        signed = parse_request(text, fmt)
        named = signed.fields.get("command")
        command = named if isinstance(named, str) else "none"
        result = await execute(
            signed,
            state.storage,
            now=state.now(),
            tolerance=state.settings.timestamp_tolerance,
            sessions_ended=Checker(state).count_ends,
        )
    except ClientDisconnect:
        raise  # nobody is left to read an envelope (see usher.web.app)
    except Exception as exc:  # every failure becomes an envelope, never a 500 page
        error = _as_api_error(exc, command)
        _count(state, command, error.code)
        return render_error(error, time.perf_counter() - started, fmt)
    _count(state, command, result.code)
    return render(result.code, result.payload, time.perf_counter() - started, fmt)


def _as_api_error(exc: Exception, command: str) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, StorageBusy):
        return Overloaded()
    if isinstance(exc, StorageError):
        log.error("The storage failed during %s: %s", command, exc)
        return UnexpectedError()
    # Logged with its traceback for the operator; the client only sees code 4.
    # Request fields are not logged: they may hold ticket passes.
    log.exception("Unexpected error while handling %s", command, exc_info=exc)
    return UnexpectedError()


def _count(state: AppState, command: str, code: Code) -> None:
    label = command if command in COMMANDS else "other"
    state.metrics.commands.labels(label, str(int(code))).inc()
