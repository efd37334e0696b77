"""What every playback callback shares: who may call, how big a callback
may be, and running one counted check.

The ``/usher/check`` handler itself is :mod:`usher.web.fastcheck`.
"""

from __future__ import annotations

from starlette.responses import Response

from usher.tickets.decision import decide
from usher.tickets.model import CheckRequest, Decision
from usher.web.state import AppState

FORBIDDEN_CALLER = (
    b"This address may not call Usher's playback callbacks; add it to USHER_CALLBACK_ALLOW.\n"
)
#: Callback bodies are small forms; anything bigger is not a check.
MAX_CHECK_BODY = 64 * 1024


def forbidden_caller() -> Response:
    return Response(FORBIDDEN_CALLER, 403, media_type="text/plain")


async def run_check(state: AppState, checked: CheckRequest) -> Decision:
    outcome = await state.storage.record_check(checked, decide, state.now())
    decision = outcome.decision
    state.metrics.count_check(decision.allowed, decision.reason_text)
    return decision
