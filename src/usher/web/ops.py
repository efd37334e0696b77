"""``/healthz`` and ``/metrics``: what an operator's monitoring polls."""

from __future__ import annotations

import contextlib

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from usher.metrics import CONTENT_TYPE
from usher.protocol.errors import StorageError
from usher.web.state import app_state


async def healthz(request: Request) -> Response:
    try:
        await app_state(request).storage.ping()
    except StorageError as exc:
        return JSONResponse({"status": "unavailable", "reason": str(exc)}, 503)
    return JSONResponse({"status": "ok"})


async def metrics(request: Request) -> Response:
    state = app_state(request)
    # On a storage failure the gauge keeps its last value; /healthz reports it.
    with contextlib.suppress(StorageError):
        state.metrics.sessions_open.set(await state.storage.count_open_sessions(state.now()))
    return Response(state.metrics.render(), media_type=CONTENT_TYPE)
