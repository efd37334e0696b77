"""``POST /api`` and ``/stable/``: the signed SEVU command API."""

from __future__ import annotations

import logging
import time

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from usher.commands import COMMANDS
from usher.commands.dispatch import execute
from usher.protocol.codes import Code
from usher.protocol.envelope import Format, render, render_error
from usher.protocol.errors import (
    ApiError,
    Overloaded,
    StorageBusy,
    StorageError,
    UnexpectedError,
)
from usher.web.body import find_request, parse_request, read_body
from usher.web.playback import Checker
from usher.web.state import AppState, app_state

log = logging.getLogger("usher.api")


async def api(request: Request) -> Response:
    started = time.perf_counter()
    state = app_state(request)
    fmt: Format = "json"
    command = "none"
    try:
        body = await read_body(request, state.settings.max_body)
        text, fmt = find_request(request.headers.get("content-type", ""), body)
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
        rendered = render_error(error, time.perf_counter() - started, fmt)
    else:
        _count(state, command, result.code)
        rendered = render(result.code, result.payload, time.perf_counter() - started, fmt)
    return Response(rendered.body, rendered.status, media_type=rendered.content_type)


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
