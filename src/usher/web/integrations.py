"""The streaming-server callbacks: thin handlers around the adapters.

README, "Streaming-server integrations", describes what each server sends.

Each handler refuses callers outside ``USHER_CALLBACK_ALLOW`` before reading
anything, reads a bounded body, lets its sans-io adapter turn the wire format
into a check, runs it (:mod:`usher.web.playback`) and answers in the server's
own dialect. Input an adapter cannot use is refused with a sentence saying
why, and logged once; nothing here lets an exception reach the client.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response

from usher.adapters import auth_request as http_wire
from usher.adapters import check as check_wire
from usher.adapters import mediamtx as mediamtx_wire
from usher.adapters import nginx_rtmp as rtmp_wire
from usher.adapters import ome as ome_wire
from usher.adapters import srs as srs_wire
from usher.adapters.sessions import http_session_handle, srs_session_handle
from usher.protocol.errors import BodyTooLarge, StorageBusy, StorageError
from usher.tickets.model import Decision
from usher.tickets.publishers import PUBLISH_REASON_TEXT, PublishAttempt, PublishRequest
from usher.web.body import read_body
from usher.web.callers import MAX_CHECK_BODY, caller_allowed, client_address, forbidden_caller
from usher.web.playback import Checker
from usher.web.publishing import judge
from usher.web.state import AppState, app_state

log = logging.getLogger("usher.integrations")

REASON_HEADER = "X-Usher-Reason"
_TOO_LARGE = "The callback body is larger than 64 KiB; this is not a playback callback."
_BUSY = "Usher is overloaded; try again shortly."
_UNAVAILABLE = "Usher storage unavailable."


def _peer(request: Request) -> str:
    return request.client.host if request.client else ""


def _header_bytes(request: Request, name: bytes) -> bytes | None:
    """A header's raw bytes (Starlette would decode them as latin-1)."""
    for key, value in request.scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def _plain(status: int, reason: str, body: str | None = None) -> Response:
    """A text answer carrying the reason in ``X-Usher-Reason`` too.

    Header values must be latin-1; reasons are ASCII, and anything else that
    reaches here is escaped rather than allowed to fail the response.
    """
    header = reason.encode("ascii", "backslashreplace").decode("ascii")
    text = reason if body is None else body
    return Response(
        (text + "\n").encode() if text else b"",
        status,
        media_type="text/plain; charset=utf-8",
        headers={REASON_HEADER: header},
    )


def _refuse_input(server: str, request: Request, status: int, problem: str) -> Response:
    log.warning("Refused a %s callback from %s: %s", server, _peer(request), problem)
    return _plain(status, problem)


def _decided(decision: Decision) -> Response:
    return _plain(200 if decision.allowed else 403, decision.reason_text)


def _storage_failed(exc: StorageError, what: str) -> Response:
    # 503, not 403: the viewer was not refused, Usher could not decide.
    if isinstance(exc, StorageBusy):
        return _plain(503, _BUSY)
    log.error("The storage failed during %s: %s", what, exc)
    return _plain(503, _UNAVAILABLE)


async def _publish(state: AppState, publish: PublishRequest) -> tuple[int, str]:
    """A publish's HTTP status (200 allowed, 403 denied, 503 when Usher
    could not decide, which every server reads as a refusal too) and the
    sentence saying why."""
    try:
        attempt: PublishAttempt = await judge(state, publish)
    except StorageError as exc:
        failed = _storage_failed(exc, "a publish check")
        return failed.status_code, failed.headers[REASON_HEADER]
    return 200 if attempt.allowed else 403, PUBLISH_REASON_TEXT[attempt.reason]


async def _admit(
    request: Request, too_large: Callable[[], Response]
) -> tuple[AppState, bytes] | Response:
    """The state and body (empty for GET) of a callback from an allowed
    caller, or the answer that refuses it: 403 to an outsider, before
    anything is read, and ``too_large()`` to a body over the limit."""
    state = app_state(request)
    if not caller_allowed(request, state.settings.callback_allow):
        return forbidden_caller()
    try:
        body = await read_body(request, MAX_CHECK_BODY) if request.method == "POST" else b""
    except BodyTooLarge:
        return too_large()
    return state, body


# -- nginx-rtmp -------------------------------------------------------------------


async def nginx_rtmp(request: Request) -> Response:
    admitted = await _admit(request, lambda: _refuse_input("nginx-rtmp", request, 413, _TOO_LARGE))
    if isinstance(admitted, Response):
        return admitted
    state, body = admitted
    query: bytes = request.scope["query_string"]
    pairs = rtmp_wire.parse_body(query, body, request.method)
    note = rtmp_wire.parse(pairs, caller=_peer(request), server_ip=_rtmp_server_ip(request, query))
    checker = Checker(state)
    call = note.call
    if call is rtmp_wire.Call.INVALID:
        return _refuse_input("nginx-rtmp", request, 400, note.problem)
    if note.publish is not None:
        return _plain(*await _publish(state, note.publish))
    if call is rtmp_wire.Call.IGNORED:
        return _plain(200, "")
    if call is rtmp_wire.Call.DONE:
        await checker.end(handle=note.handle)
        return _plain(200, "")
    try:
        if call is rtmp_wire.Call.PLAY:
            start = checker.terms("rtmp", note.handle, resume=False)
            outcome = await checker.start(note.request, start)
        else:
            outcome = await checker.rtmp_update(note.request, note.handle)
    except StorageError as exc:
        if call is rtmp_wire.Call.UPDATE:
            # nginx drops the viewer on any non-2xx update answer. An outage
            # must not cut off every viewer who was already allowed (a revoke
            # cannot be stored during it either), so keep them playing.
            log.warning("The storage failed during an update_play re-check; allowing: %s", exc)
            return _plain(200, "")
        return _storage_failed(exc, "an nginx-rtmp play check")
    return _decided(outcome.decision)


def _rtmp_server_ip(request: Request, query: bytes) -> str:
    """The streaming server's address for the attempt log: a ``server_ip``
    the operator put in the on_play URL (``…/usher/nginx-rtmp?server_ip=…``),
    else the address the notification came from. With ``notify_method get``
    the query is nginx's and the viewer's, so it is not trusted for this."""
    if request.method == "POST":
        for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            if name == "server_ip" and value:
                return value[:100]
    return _peer(request)


# -- nginx auth_request -------------------------------------------------------


_NO_URI = (
    "The auth_request subrequest has no X-Original-URI header; add "
    "'proxy_set_header X-Original-URI $request_uri;' to the auth location."
)


async def auth_request(request: Request) -> Response:
    state = app_state(request)
    if not caller_allowed(request, state.settings.callback_allow):
        return forbidden_caller()
    uri = _header_bytes(request, b"x-original-uri")
    if not uri:
        return _refuse_input("auth_request", request, 403, _NO_URI)
    server = (request.headers.get("x-server-addr") or "").strip() or _peer(request)
    checked, handle = http_wire.parse(
        uri,
        ip=client_address(request),
        referer=request.headers.get("referer", ""),
        server_ip=server[:100],
        pattern=state.settings.uri_pattern,
    )
    checker = Checker(state)
    try:
        outcome = await checker.follow(checked, checker.terms("hls", handle, resume=True))
    except StorageError as exc:
        return _storage_failed(exc, "an auth_request check")
    # nginx ignores the body; curl users get the reason.
    return _decided(outcome.decision)


# -- SRS ------------------------------------------------------------------------------


def _srs_refusal(status: int, reason: str) -> Response:
    return Response(
        srs_wire.deny_body(status, reason),
        status,
        media_type="application/json",
        headers={REASON_HEADER: reason.encode("ascii", "backslashreplace").decode("ascii")},
    )


def _srs_too_large(request: Request) -> Response:
    log.warning("Refused an SRS hook from %s: %s", _peer(request), _TOO_LARGE)
    return _srs_refusal(413, _TOO_LARGE)


async def srs(request: Request) -> Response:
    admitted = await _admit(request, lambda: _srs_too_large(request))
    if isinstance(admitted, Response):
        return admitted
    state, body = admitted
    hook = srs_wire.parse(body, server_ip=_peer(request))
    checker = Checker(state)
    handle = srs_session_handle(_peer(request), hook.client_id, hook.request)
    if hook.action is srs_wire.Action.STOP:
        await checker.end(handle=handle)
        return Response(srs_wire.ALLOW, 200, media_type="text/plain")
    if hook.action is srs_wire.Action.NOTICE:
        return Response(srs_wire.ALLOW, 200, media_type="text/plain")
    if hook.publish is not None:
        status, why = await _publish(state, hook.publish)
        if status == 200:
            return Response(srs_wire.ALLOW, 200, media_type="text/plain")
        return _srs_refusal(status, why)
    if hook.action is not srs_wire.Action.PLAY:
        log.warning("Refused an SRS hook from %s: %s", _peer(request), hook.problem)
        return _srs_refusal(400, hook.problem)
    try:
        outcome = await checker.start(hook.request, checker.terms("srs", handle, resume=False))
    except StorageError as exc:
        failed = _storage_failed(exc, "an SRS check")
        return _srs_refusal(503, failed.headers[REASON_HEADER])
    decision = outcome.decision
    if decision.allowed:
        return Response(srs_wire.ALLOW, 200, media_type="text/plain")
    return _srs_refusal(403, decision.reason_text)


# -- MediaMTX -----------------------------------------------------------------------------


async def mediamtx(request: Request) -> Response:
    admitted = await _admit(request, lambda: _refuse_input("MediaMTX", request, 413, _TOO_LARGE))
    if isinstance(admitted, Response):
        return admitted
    state, body = admitted
    auth = mediamtx_wire.parse(body, server_ip=_peer(request))
    if auth.action is mediamtx_wire.Action.INVALID:
        return _refuse_input("MediaMTX", request, 400, auth.problem)
    if auth.action is mediamtx_wire.Action.REFUSED:
        return _refuse_input("MediaMTX", request, 403, auth.problem)
    if auth.action is mediamtx_wire.Action.CHALLENGE:
        # Every RTSP play and publish starts this way: nothing to log.
        return _plain(401, auth.problem)
    if auth.publish is not None:
        return _plain(*await _publish(state, auth.publish))
    checker = Checker(state)
    handle = http_session_handle(auth.request)
    start = checker.terms("mediamtx", handle, resume=True, client=auth.reader_id)
    try:
        outcome = await checker.follow(auth.request, start, named=bool(auth.reader_id))
    except StorageError as exc:
        return _storage_failed(exc, "a MediaMTX check")
    return _decided(outcome.decision)


# -- /usher/check/done -------------------------------------------------------------


async def check_done(request: Request) -> Response:
    """The end of a ``/usher/check`` session (or any session, by its id)."""
    admitted = await _admit(request, lambda: _refuse_input("check/done", request, 413, _TOO_LARGE))
    if isinstance(admitted, Response):
        return admitted
    state, body = admitted
    pairs = check_wire.parse_pairs(request.scope["query_string"])
    if request.headers.get("content-type", "").startswith("application/json"):
        pairs += check_wire.parse_json_fields(body)
    else:
        pairs += check_wire.parse_pairs(body)
    try:
        session_id = check_wire.session_named(check_wire.collect(pairs))
    except ValueError as exc:
        return _refuse_input("check/done", request, 400, str(exc))
    if session_id is None:
        return _refuse_input(
            "check/done", request, 400, "Name the session to end in the 'session' field."
        )
    ended = await Checker(state).end(session_id=session_id)
    return Response(check_wire.ended_body(ended), 200, media_type="application/json")


# -- OvenMediaEngine ----------------------------------------------------------------

_OME_BAD_SIGNATURE = (
    b"The X-OME-Signature header does not match USHER_OME_SECRET; set the same secret "
    b"in OvenMediaEngine's <AdmissionWebhooks><SecretKey>.\n"
)


def _ome_answer(body: bytes) -> Response:
    # OvenMediaEngine reads any status but 200 as an error of the control
    # server, so refusals are 200 too; the body says which.
    return Response(body, 200, media_type="application/json")


def _ome_refusal(request: Request, problem: str) -> Response:
    log.warning("Refused an OvenMediaEngine admission request from %s: %s", _peer(request), problem)
    return _ome_answer(ome_wire.refused_body(problem))


async def ome(request: Request) -> Response:
    admitted = await _admit(request, lambda: _ome_refusal(request, _TOO_LARGE))
    if isinstance(admitted, Response):
        return admitted
    state, body = admitted
    secret = state.settings.ome_secret
    if secret and not ome_wire.verify_signature(
        body, request.headers.get("x-ome-signature"), secret
    ):
        # Nothing is logged: whoever forged it learns nothing, and a flood of
        # forgeries cannot fill the log.
        return Response(_OME_BAD_SIGNATURE, 403, media_type="text/plain")
    note = ome_wire.parse(body, server_ip=_peer(request))
    kind = note.kind
    if kind is ome_wire.Kind.INVALID:
        return _ome_refusal(request, note.problem)
    if note.closing and kind is ome_wire.Kind.PUBLISH:
        return _ome_answer(ome_wire.CLOSED)
    if note.publish is not None:
        status, why = await _publish(state, note.publish)
        return _ome_answer(
            ome_wire.PUBLISH_ALLOWED if status == 200 else ome_wire.refused_body(why)
        )
    checker = Checker(state)
    if kind is ome_wire.Kind.PLAY_CLOSING:
        await checker.end(handle=note.handle)
        return _ome_answer(ome_wire.CLOSED)
    now = state.now()
    try:
        outcome = await checker.start(note.request, checker.terms("ome", note.handle, resume=False))
    except StorageError as exc:
        failed = _storage_failed(exc, "an OvenMediaEngine admission check")
        return _ome_answer(ome_wire.refused_body(failed.headers[REASON_HEADER]))
    decision, ticket = outcome.decision, outcome.ticket
    if not decision.allowed or ticket is None:
        return _ome_answer(ome_wire.refused_body(decision.reason_text))
    return _ome_answer(ome_wire.allowed_body(ome_wire.lifetime(ticket.expire_at, now)))
