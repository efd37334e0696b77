"""``GET|POST /usher/check``: the generic playback check."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response

from usher.adapters import check as wire
from usher.protocol.errors import BodyTooLarge, StorageBusy, StorageError
from usher.tickets.decision import decide
from usher.tickets.model import CheckRequest, Decision
from usher.web.body import read_body
from usher.web.callers import caller_allowed, client_address
from usher.web.state import AppState, app_state

log = logging.getLogger("usher.check")

FORBIDDEN_CALLER = (
    b"This address may not call Usher's playback callbacks; add it to USHER_CALLBACK_ALLOW.\n"
)
#: Callback bodies are small forms; anything bigger is not a check.
MAX_CHECK_BODY = 64 * 1024


def forbidden_caller() -> Response:
    return Response(FORBIDDEN_CALLER, 403, media_type="text/plain")


async def check(request: Request) -> Response:
    state = app_state(request)
    if not caller_allowed(request, state.settings.callback_allow):
        return forbidden_caller()
    pairs = wire.parse_pairs(request.scope["query_string"])
    if request.method == "POST":
        try:
            body = await read_body(request, MAX_CHECK_BODY)
        except BodyTooLarge:
            return Response(b"The check body is larger than 64 KiB.\n", 413)
        if request.headers.get("content-type", "").startswith("application/json"):
            pairs += wire.parse_json_fields(body)
        else:
            pairs += wire.parse_pairs(body)
    checked = wire.to_request(wire.collect(pairs), client_address(request))
    try:
        decision = await run_check(state, checked)
    except StorageBusy:
        return _unavailable(b"Usher is overloaded")
    except StorageError as exc:
        log.error("The storage failed during a check: %s", exc)
        return _unavailable(b"Usher storage unavailable")
    status, body = wire.answer(decision)
    return Response(body, status, media_type="application/json")


async def run_check(state: AppState, checked: CheckRequest) -> Decision:
    outcome = await state.storage.record_check(checked, decide, state.now())
    decision = outcome.decision
    state.metrics.checks.labels(
        "allowed" if decision.allowed else "denied", decision.reason_text
    ).inc()
    return decision


def _unavailable(reason: bytes) -> Response:
    # 503, not 403: the viewer was not refused, Usher could not decide.
    body = b'{"allowed":false,"reason":"' + reason + b'"}'
    return Response(body, 503, media_type="application/json")
