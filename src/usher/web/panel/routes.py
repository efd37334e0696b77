"""The panel's URL map, mounted at ``/panel`` by :mod:`usher.web.app`.

Every endpoint is wrapped by :func:`guarded`, so a failing database becomes
a 503 page and an unexpected error a logged, generic page: never a
traceback in a browser.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from starlette.requests import ClientDisconnect, Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route, Router
from starlette.staticfiles import StaticFiles

from usher.protocol.errors import StorageBusy, StorageError
from usher.storage.base import ReadBoundExceeded, bounded_reads
from usher.web.panel import attempts, kicks, overview, publishers, sessions, signin, tickets
from usher.web.panel.bounds import TRY_AGAIN, stopped
from usher.web.panel.render import PREFIX, SecurityHeaders, error_page
from usher.web.state import app_state

log = logging.getLogger("usher.panel")

Endpoint = Callable[[Request], Awaitable[Response]]


def guarded(endpoint: Endpoint) -> Endpoint:
    async def run(request: Request) -> Response:
        state = app_state(request)
        try:
            # Every read this request makes, together, within the bound.
            with bounded_reads(state.settings.panel_query_timeout):
                return await endpoint(request)
        except ClientDisconnect:
            raise  # nobody is left to see a page (see usher.web.app)
        except ReadBoundExceeded as exc:
            # Views with a form of their own (the explorer, the overview)
            # say this on their normal page; any other view lands here.
            return error_page(
                request, 503, "This view took too long", stopped(state, exc, TRY_AGAIN)
            )
        except StorageBusy:
            return error_page(
                request, 503, "Usher is busy", "Usher is overloaded right now. Try again shortly."
            )
        except StorageError as exc:
            log.error("The storage failed on %s: %s", request.url.path, exc)
            return error_page(
                request,
                503,
                "Database unavailable",
                "Usher cannot reach its database right now. Try again in a moment.",
            )
        except Exception:
            # Logged with its traceback for the operator; the browser sees a
            # plain page. Form values are not logged: they may hold secrets.
            log.exception("Unexpected error on %s %s", request.method, request.url.path)
            return error_page(
                request,
                500,
                "Something went wrong",
                "Usher hit an unexpected error and has logged it for the operator. "
                "Nothing was changed. Try again, or go back to the overview.",
            )

    return run


async def _to_overview(request: Request) -> Response:
    return RedirectResponse(f"{PREFIX}/", 308)


async def _not_found(request: Request) -> Response:
    return error_page(request, 404, "Page not found", "There is no panel page at this address.")


def _routes() -> list[Route | Mount]:
    def get(path: str, endpoint: Endpoint) -> Route:
        return Route(path, guarded(endpoint), methods=["GET"])

    def post(path: str, endpoint: Endpoint) -> Route:
        return Route(path, guarded(endpoint), methods=["POST"])

    return [
        get("/", overview.overview),
        get("/charts", overview.fragment),
        get("/sign-in", signin.sign_in_form),
        post("/sign-in", signin.sign_in),
        post("/sign-out", signin.sign_out),
        get("/tickets", tickets.search),
        get("/tickets/new", tickets.new),
        post("/tickets/new", tickets.create),
        # Revoke and kick before detail: ``{key:path}`` would swallow them.
        get("/tickets/{key:path}/revoke", tickets.confirm_revoke),
        post("/tickets/{key:path}/revoke", tickets.revoke),
        get("/tickets/{key:path}/kick", kicks.confirm),
        post("/tickets/{key:path}/kick", kicks.kick),
        get("/tickets/{key:path}", tickets.detail),
        get("/attempts", attempts.explore),
        get("/sessions", sessions.sessions),
        get("/publishers", publishers.publishers),
        post("/publishers/new", publishers.add),
        get("/publishers/log", publishers.publish_log),
        get("/publishers/{id}/replace", publishers.confirm_replace),
        post("/publishers/{id}/replace", publishers.replace),
        get("/publishers/{id}/remove", publishers.confirm_remove),
        post("/publishers/{id}/remove", publishers.remove),
        Mount("/static", StaticFiles(packages=[("usher.web.panel", "static")]), name="static"),
        Route("/{rest:path}", guarded(_not_found)),
    ]


def panel_mount() -> Mount:
    """``/panel`` and everything under it."""
    router = Router(routes=_routes(), redirect_slashes=False)
    return Mount(PREFIX, app=SecurityHeaders(router))


def panel_redirect() -> Route:
    """``/panel`` without the slash goes to the overview."""
    return Route(PREFIX, _to_overview, methods=["GET"])
