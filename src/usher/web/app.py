"""The ASGI application: routes, lifespan and per-request metrics."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Final

from prometheus_client import Counter, Histogram
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from usher.config import Settings
from usher.storage import storage_for_url
from usher.storage.base import Storage
from usher.storage.retention import Pruner
from usher.web import integrations, rest
from usher.web.api import serve_api
from usher.web.fastcheck import send_answer, serve_check
from usher.web.ops import healthz, metrics
from usher.web.panel.routes import panel_mount, panel_redirect
from usher.web.state import AppState
from usher.web.upkeep import SessionSweeper

log = logging.getLogger("usher.http")

#: Set in a request's scope by the connection layer
#: (:mod:`usher.web.connections`) when its body did not arrive in time and it
#: answered 408 itself; the request then ends as a client disconnect.
BODY_TIMED_OUT: Final = "usher.body_timed_out"

#: Serves one request on the bare ASGI scope; returns the HTTP status sent.
BareHandler = Callable[[AppState, Scope, Receive, Send], Awaitable[int]]


class BareEndpoint:
    """A :data:`BareHandler` as a Starlette route endpoint (a raw ASGI app),
    for what reaches the route instead of :class:`UsherApp`'s bare path:
    ``HEAD`` of a check, and any request to the Starlette app alone."""

    def __init__(self, handler: BareHandler) -> None:
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.handler(scope["app"].state.usher, scope, receive, send)


#: The requests :class:`UsherApp` answers on the bare ASGI scope, skipping
#: Starlette's layers (see usher.web.fastcheck and usher.web.api): path,
#: methods, handler. Their routes below run the same handlers; other methods
#: get 405 there.
_BARE_ROUTES: Final[tuple[tuple[str, tuple[str, ...], BareHandler], ...]] = (
    ("/api", ("POST",), serve_api),
    ("/stable/", ("POST",), serve_api),
    ("/stable", ("POST",), serve_api),
    ("/usher/check", ("GET", "POST"), serve_check),
)
_BARE: Final = {
    (path, method): handler for path, methods, handler in _BARE_ROUTES for method in methods
}

ROUTES = [
    *(
        Route(path, BareEndpoint(handler), methods=list(methods))
        for path, methods, handler in _BARE_ROUTES
    ),
    # nginx-rtmp POSTs by default; ``notify_method get`` sends the same as a query.
    Route("/usher/check/done", integrations.check_done, methods=["POST"]),
    Route("/usher/nginx-rtmp", integrations.nginx_rtmp, methods=["GET", "POST"]),
    Route("/usher/auth-request", integrations.auth_request, methods=["GET"]),
    Route("/usher/srs", integrations.srs, methods=["POST"]),
    Route("/usher/mediamtx", integrations.mediamtx, methods=["POST"]),
    Route("/usher/ome", integrations.ome, methods=["POST"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/v2/openapi.json", rest.openapi, methods=["GET"]),
    # Every other /v2 path and method reaches the handler, which checks the
    # credentials before it says NOT_FOUND or METHOD_NOT_ALLOWED (SPEC §7).
    Route("/v2", rest.V2_APP),
    Route("/v2/{path:path}", rest.V2_APP),
    panel_redirect(),
    panel_mount(),
]
_ROUTE_LABELS = frozenset(route.path for route in ROUTES if isinstance(route, Route))
#: The benchmark baseline: the same process and metrics, no database. Mounted
#: only with ``USHER_BENCH_ROUTES=1`` (see docs/benchmarks.md).
BENCH_CONSTANT = "/bench/constant"
_CONSTANT_START: Message = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"application/json"), (b"content-length", b"15")],
}
_CONSTANT_BODY: Message = {"type": "http.response.body", "body": b'{"status":"ok"}'}
#: The process's threads by the kernel's thread id (as in /proc/<pid>/task):
#: the benchmark splits the server's CPU time between them, and the kernel
#: names every Python thread "python".
BENCH_THREADS = "/bench/threads"


def _threads_by_native_id() -> bytes:
    # A thread started but not yet running has no kernel id.
    named = {str(t.native_id): t.name for t in threading.enumerate() if t.native_id is not None}
    return json.dumps(named).encode()


class UsherApp:
    """The Starlette app wrapped in a bare ASGI layer that counts and times
    every request by route (cheaper than BaseHTTPMiddleware on the hot path)."""

    def __init__(self, state: AppState) -> None:
        self.state = state
        self.starlette = Starlette(routes=ROUTES, lifespan=lambda _: self.running())
        # Starlette would answer ``/api/`` with a redirect to ``/api`` built
        # from the Host header, which the client chooses: an open redirect.
        # No API or callback client needs one; ``/panel`` redirects itself.
        self.starlette.router.redirect_slashes = False
        self.starlette.state.usher = state
        state.metrics.watch_pending_writes(lambda: float(state.storage.pending_writes))
        # Prometheus ``labels()`` takes a lock and builds a key on every call;
        # the children are looked up once per label set instead.
        self._request_counters: dict[tuple[str, int], Counter] = {}
        self._latencies: dict[str, Histogram] = {}
        self._disconnects: dict[str, Counter] = {}

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Open the storage for the app's lifetime (the ASGI lifespan; tests
        enter it directly), and prune old attempts meanwhile if asked to."""
        await self.state.storage.open()
        sweeping = asyncio.get_running_loop().create_task(
            SessionSweeper(self.state).run(), name="usher-sessions"
        )
        pruning: asyncio.Task[None] | None = None
        older_than = self.state.settings.prune_attempts_older_than
        if older_than is not None:
            pruner = Pruner(self.state.storage, older_than, clock=self.state.clock)
            self.state.pruner = pruner
            pruning = asyncio.get_running_loop().create_task(pruner.run(), name="usher-prune")
        try:
            yield
        finally:
            for task in (pruning, sweeping):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            await self.state.storage.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.starlette(scope, receive, send)
            return
        started = time.perf_counter()
        path = scope["path"]
        bare = _BARE.get((path, scope["method"]))
        if bare is not None:
            # Checks and signed commands skip Starlette (see usher.web.fastcheck).
            sent: int | None = 500
            try:
                sent = await bare(self.state, scope, receive, send)
            except ClientDisconnect:
                sent = None
            finally:
                self._finish(path, sent, scope, started)
            return
        if path == BENCH_CONSTANT and self.state.settings.bench_routes:
            await send(_CONSTANT_START)
            await send(_CONSTANT_BODY)
            self._observe(path, 200, started)
            return
        if path == BENCH_THREADS and self.state.settings.bench_routes:
            body = _threads_by_native_id()
            await send_answer(send, 200, body, b"application/json")
            self._observe(path, 200, started)
            return
        route = path if path in _ROUTE_LABELS else "other"
        if path.startswith("/panel/"):
            route = "/panel"  # one label for every panel page keeps the series few
        elif path.startswith("/v2/") and route == "other":
            route = "/v2"
        status: int | None = 500

        async def send_and_watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.starlette(scope, receive, send_and_watch)
        except ClientDisconnect:
            # Starlette's error middleware has "answered" 500 into the closed
            # connection on the way out; nobody received it.
            status = None
        finally:
            self._finish(route, status, scope, started)

    def _finish(self, route: str, status: int | None, scope: Scope, started: float) -> None:
        """Count a request that ended; ``status`` is ``None`` when its client
        went away while the body was being read (a ``ClientDisconnect``)."""
        if status is not None:
            self._observe(route, status, started)
        elif scope.get(BODY_TIMED_OUT):
            # Not a disconnect: the client was too slow and got a 408.
            self._observe(route, 408, started)
        else:
            self._client_gone(route, scope)

    def _client_gone(self, route: str, scope: Scope) -> None:
        # Not an error, and anyone can cause any number of them: counted
        # apart from answered requests, and logged only at debug level.
        counter = self._disconnects.get(route)
        if counter is None:
            counter = self._disconnects[route] = self.state.metrics.client_disconnects.labels(route)
        counter.inc()
        client = scope.get("client")
        log.debug(
            "The client %s went away before its %s %s request was read; nothing was answered.",
            client[0] if client else "(unknown)",
            scope["method"],
            route,
        )

    def _observe(self, route: str, status: int, started: float) -> None:
        counter = self._request_counters.get((route, status))
        if counter is None:
            counter = self.state.metrics.requests.labels(route, str(status))
            self._request_counters[route, status] = counter
        counter.inc()
        latency = self._latencies.get(route)
        if latency is None:
            latency = self._latencies[route] = self.state.metrics.latency.labels(route)
        latency.observe(time.perf_counter() - started)


def create_app(
    settings: Settings,
    storage: Storage | None = None,
    *,
    clock: Callable[[], float] = time.time,
) -> UsherApp:
    """The Usher ASGI app; it opens the storage on startup and closes it on shutdown."""
    storage = storage or storage_for_url(
        settings.database_url, sqlite_synchronous=settings.sqlite_synchronous
    )
    storage.max_write_wait = settings.max_write_wait_ms / 1000
    return UsherApp(AppState(settings, storage, clock=clock))
