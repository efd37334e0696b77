"""``/v2/``: the ScaleEngine v2 REST API (SPEC §7), thin handlers.

Tokens are tickets and attempts are attempts: each handler reads the
request with :mod:`usher.protocol.rest`'s field tables and then runs the
same command code as the signed API (``sevu.request``, ``sevu.status``,
``sevu.revoke``, ``sevu.search``'s filters, ``sevu.errorlog``), so
validation, storage and per-account isolation are the signed API's. Only
the wire format differs: HTTP Basic with the account's cdn and secret,
``{"data": …}``, and ``{"errors": [...]}`` with the codes of SPEC §7.

The order is fixed: authentication first (nothing about paths or
accounts is revealed before it), then the path (``NOT_FOUND``), then the
method (``METHOD_NOT_ALLOWED``), then the request itself.
"""

from __future__ import annotations

import base64
import dataclasses
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Final
from urllib.parse import parse_qsl

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import request_response
from starlette.types import Receive, Scope, Send

from usher.commands import errorcount, errorlog, fields, revoke, status
from usher.commands import request as request_command
from usher.commands.base import Context, attempt_object, ticket_object, with_viewers
from usher.commands.search import ticket_filter
from usher.protocol.errors import (
    ApiError,
    BodyTooLarge,
    InvalidField,
    MissingFields,
    NotFound,
    Overloaded,
    StorageBusy,
    StorageError,
)
from usher.protocol.openapi import openapi_document
from usher.protocol.rest import (
    ATTEMPT_FIELDS,
    DEFAULT_LIMIT,
    MAX_LIMIT,
    PAGING_OPTIONS,
    TIME_OPTIONS,
    TOKEN_FIELDS,
    ErrorCode,
    RestError,
    data_body,
    encode,
    errors_body,
    query_filters,
    read_object,
    token_fields,
)
from usher.storage.base import ReadBoundExceeded, bounded_reads
from usher.tickets.expiry import parse_expire
from usher.tickets.model import Account, Page
from usher.web.body import read_body
from usher.web.playback import Checker
from usher.web.state import AppState, app_state

log = logging.getLogger("usher.rest")

_JSON: Final = "application/json"
_CHALLENGE: Final = {"WWW-Authenticate": 'Basic realm="Usher", charset="UTF-8"'}
_UNAUTHORIZED: Final = (
    "Send HTTP Basic authentication with the account's cdn as the user name and its "
    "secret as the password."
)
_BUSY: Final = "Usher is overloaded or its storage is unavailable; try again shortly."
_TOO_LONG: Final = (
    "The request needed more than {seconds:g} s of database reads and was stopped "
    "(USHER_REST_QUERY_TIMEOUT); narrow it with more filters, a time range or a smaller "
    "option:offset."
)

Handler = Callable[[Context, Request, str | None], Awaitable[Response]]


async def openapi(request: Request) -> Response:
    """``GET /v2/openapi.json``: the API's description, public like the docs."""
    return Response(encode(openapi_document()), 200, media_type=_JSON)


async def v2(request: Request) -> Response:
    state = app_state(request)
    response, code = await _answer(state, request)
    path: str = request.scope["path"]
    resource = next((c for c in _COLLECTIONS if path.startswith(f"/v2/{c}")), "other")
    state.metrics.rest_answers.labels(resource, code).inc()
    return response


async def _answer(state: AppState, request: Request) -> tuple[Response, str]:
    """The answer, and its code for the metrics (``OK`` or the error's)."""
    try:
        account = await _authenticate(state, request)
        collection, key = _resource(request.scope["path"])
        handlers = _ROUTES[collection, key is not None]
        handler = handlers.get(request.method)
        if handler is None:
            allowed = ", ".join(sorted(handlers))
            raise _WrongMethod(request.method, allowed)
        ctx = Context(state.storage, account, state.now(), Checker(state).count_ends)
        if request.method != "GET":
            # A change is made in full: its read-back is one token, and a
            # 503 after the write would invite a retry that duplicates it.
            return await handler(ctx, request, key), "OK"
        with bounded_reads(state.settings.rest_query_timeout):
            return await handler(ctx, request, key), "OK"
    except ClientDisconnect:
        raise  # nobody is left to read an answer (see usher.web.app)
    except _WrongMethod as exc:
        return _errors(exc.error, {"Allow": exc.allowed})
    except RestError as exc:
        return _errors(exc, _CHALLENGE if exc.code is ErrorCode.UNAUTHORIZED else None)
    except ApiError as exc:
        return _errors(_from_command(exc))
    except ReadBoundExceeded as exc:
        return _errors(RestError(ErrorCode.SERVER_BUSY, _TOO_LONG.format(seconds=exc.seconds)))
    except StorageError as exc:
        if not isinstance(exc, StorageBusy):
            log.error("The storage failed during a v2 request: %s", exc)
        return _errors(RestError(ErrorCode.SERVER_BUSY, _BUSY))


class _EveryMethod:
    """``v2`` as an ASGI app object: Starlette routes such an app every
    method, where a function endpoint would get GET alone and any other
    method a plain-text 405 before the credentials were checked."""

    def __init__(self) -> None:
        self._app = request_response(v2)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)


V2_APP: Final = _EveryMethod()


# -- authentication and routing ----------------------------------------------------------


async def _authenticate(state: AppState, request: Request) -> Account:
    """The account whose cdn and secret the Basic credentials name. Every
    failure looks the same, so nobody learns which cdns exist."""
    header = request.headers.get("authorization", "")
    scheme, _, encoded = header.partition(" ")
    failed = RestError(ErrorCode.UNAUTHORIZED, _UNAUTHORIZED)
    if scheme.lower() != "basic":
        raise failed
    try:
        # ValueError covers bad base64, non-ASCII text and bad UTF-8 alike.
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except ValueError:
        raise failed from None
    user, colon, secret = decoded.partition(":")
    if not colon or not (user.isascii() and user.isdigit()) or len(user) > 19:
        raise failed
    if int(user) > fields.INT64_MAX:  # no cdn is that large, and storage could not ask
        raise failed
    account = await state.storage.get_account(int(user))
    if account is None or not hmac.compare_digest(
        secret.encode("utf-8", "surrogatepass"), account.secret.encode()
    ):
        raise failed
    if account.disabled:
        raise RestError(ErrorCode.UNAUTHORIZED, "The account is disabled; ask the Usher operator.")
    return account


_COLLECTIONS: Final = ("sevu_token", "sevu_attempt")


def _resource(path: str) -> tuple[str, str | None]:
    """``sevu_token`` or ``sevu_attempt`` and the key in the path, if any."""
    parts = path.removeprefix("/v2").removeprefix("/").split("/")
    if parts[0] not in _COLLECTIONS or len(parts) > 2:
        raise RestError(
            ErrorCode.NOT_FOUND,
            "No such resource; the API has /v2/sevu_token/ and /v2/sevu_attempt/.",
        )
    # The scope's path is decoded already: decoding again would read
    # "%252E" as ".".
    key = parts[1] if len(parts) == 2 and parts[1] else None
    return parts[0], key


class _WrongMethod(Exception):
    def __init__(self, method: str, allowed: str) -> None:
        super().__init__(method)
        self.allowed = allowed
        self.error = RestError(
            ErrorCode.METHOD_NOT_ALLOWED,
            f"{method[:10]} is not allowed here; this path takes {allowed}.",
        )


# -- answers ------------------------------------------------------------------------------


def _errors(error: RestError, headers: dict[str, str] | None = None) -> tuple[Response, str]:
    body = errors_body([error])
    return Response(body, error.code.status, headers=headers, media_type=_JSON), error.code.name


def _data(value: object, status_code: int = 200) -> Response:
    return Response(data_body(value), status_code, media_type=_JSON)


def _from_command(exc: ApiError) -> RestError:
    """A command's failure in the v2 vocabulary; its message, which names
    the field, is the detail."""
    detail = exc.message if exc.message.endswith(".") else exc.message + "."
    if isinstance(exc, MissingFields):
        return RestError(ErrorCode.REQUIRED_FIELD, detail)
    if isinstance(exc, InvalidField):
        return RestError(ErrorCode.REQUEST_INVALID, detail)
    if isinstance(exc, NotFound):
        return RestError(ErrorCode.NOT_FOUND, "The account has no token with this key.")
    if isinstance(exc, Overloaded):
        return RestError(ErrorCode.SERVER_BUSY, _BUSY)
    if isinstance(exc, BodyTooLarge):
        return RestError(ErrorCode.REQUEST_INVALID, detail)
    log.error("A v2 request failed unexpectedly: %s", exc.message)
    return RestError(ErrorCode.SERVER_BUSY, _BUSY)


async def _tokens(ctx: Context, tickets: list[dict[str, object]]) -> list[dict[str, object]]:
    """The v2 token objects of ticket objects (the account's): each with
    its row id and cdn first."""
    ids = await ctx.storage.ticket_ids(ctx.account.cdn, [str(t["key"]) for t in tickets])
    return [{"id": ids.get(str(t["key"]), 0), "cdn_id": ctx.account.cdn, **t} for t in tickets]


async def _token(ctx: Context, key: str) -> dict[str, object]:
    """One token of the account, read as ``sevu.status`` reads it."""
    ticket = (await status.run(ctx, {"key": key})).payload["ticket"]
    assert isinstance(ticket, dict)  # sevu.status answers the ticket object
    [token] = await _tokens(ctx, [ticket])
    return token


# -- tokens ---------------------------------------------------------------------------------


async def _create_token(ctx: Context, request: Request, _key: str | None) -> Response:
    sent = token_fields(read_object(await _body(request)), create=True)
    result = await request_command.run(ctx, sent)
    created = result.payload["ticket"]
    assert isinstance(created, dict)  # sevu.request answers the ticket object
    return _data(await _token(ctx, str(created["key"])), 201)


async def _get_token(ctx: Context, _request: Request, key: str | None) -> Response:
    assert key is not None  # routed with a key
    return _data(await _token(ctx, key))


async def _list_tokens(ctx: Context, request: Request, _key: str | None) -> Response:
    filters, options = query_filters(_query(request), TOKEN_FIELDS, PAGING_OPTIONS)
    where = dataclasses.replace(
        ticket_filter(filters),
        uses=fields.integer(filters, "uses"),
        active=fields.flag(filters, "active"),
    )
    tickets, _ = await ctx.storage.search_tickets(
        ctx.account.cdn, where, _page(options), count=False
    )
    listed = [ticket_object(t) for t in await with_viewers(ctx, tickets)]
    return _data(await _tokens(ctx, listed))


async def _update_token(ctx: Context, request: Request, key: str | None) -> Response:
    assert key is not None  # routed with a key
    sent = token_fields(read_object(await _body(request)), create=False)
    active = fields.flag(sent, "active")
    expire_text = fields.filter_text(sent, "expire_date")
    expire_at = None
    if expire_text is not None:
        expire_at = parse_expire(expire_text, ctx.now, field="expire_date")
    if not await ctx.storage.update_ticket(
        ctx.account.cdn, key, active=active, expire_at=expire_at, now=ctx.now
    ):
        raise RestError(ErrorCode.NOT_FOUND, "The account has no token with this key.")
    return _data(await _token(ctx, key))


async def _revoke_token(ctx: Context, _request: Request, key: str | None) -> Response:
    assert key is not None  # routed with a key
    await revoke.run(ctx, {"key": key})
    return Response(status_code=204)


# -- attempts -------------------------------------------------------------------------------


async def _ticket_attempts(ctx: Context, request: Request, key: str | None) -> Response:
    assert key is not None  # routed with a key
    _, options = query_filters(_query(request), (), PAGING_OPTIONS + TIME_OPTIONS)
    page = _page(options)
    result = await errorlog.run(
        ctx,
        {
            "key": key,
            "starttime": options.get("option:starttime"),
            "endtime": options.get("option:endtime"),
            "limit": page.limit,
            "seek": page.seek,
        },
    )
    return _data(result.payload["attempts"])


async def _list_attempts(ctx: Context, request: Request, _key: str | None) -> Response:
    filters, options = query_filters(_query(request), ATTEMPT_FIELDS, PAGING_OPTIONS + TIME_OPTIONS)
    # sevu.errorcount's filters, and appinst, which only this listing has.
    where = dataclasses.replace(
        errorcount.attempt_filter(
            {
                **filters,
                "starttime": options.get("option:starttime"),
                "endtime": options.get("option:endtime"),
            }
        ),
        appinst=fields.filter_text(filters, "appinst"),
    )
    attempts = await ctx.storage.list_attempts(ctx.account.cdn, where, _page(options))
    return _data([attempt_object(a) for a in attempts])


# -- request parts ------------------------------------------------------------------------


async def _body(request: Request) -> bytes:
    """The body, within the signed API's limit (``BodyTooLarge`` past it)."""
    return await read_body(request, app_state(request).settings.max_body)


#: Most query parameters a listing reads; more is refused, never cut, since
#: a filter past the cut would be ignored and the listing come back wider.
MAX_QUERY_PAIRS: Final = 100


def _query(request: Request) -> list[tuple[str, str]]:
    query: bytes = request.scope["query_string"]
    pairs = parse_qsl(query.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=None)
    if len(pairs) > MAX_QUERY_PAIRS:
        raise RestError(
            ErrorCode.REQUEST_INVALID,
            f"The query has {len(pairs)} parameters; send at most {MAX_QUERY_PAIRS}.",
        )
    return pairs


def _page(options: dict[str, str]) -> Page:
    """``option:limit`` (default 100, cut to 1000) and ``option:offset``."""
    limit = fields.integer({"limit": options.get("option:limit")}, "limit")
    offset = fields.integer({"seek": options.get("option:offset")}, "seek")
    return Page(limit=min(DEFAULT_LIMIT if limit is None else limit, MAX_LIMIT), seek=offset or 0)


_ROUTES: Final[dict[tuple[str, bool], dict[str, Handler]]] = {
    ("sevu_token", False): {"PUT": _create_token, "GET": _list_tokens},
    ("sevu_token", True): {"GET": _get_token, "POST": _update_token, "DELETE": _revoke_token},
    ("sevu_attempt", False): {"GET": _list_attempts},
    ("sevu_attempt", True): {"GET": _ticket_attempts},
}
