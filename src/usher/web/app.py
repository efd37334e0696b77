"""The ASGI application: routes, lifespan and per-request metrics."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from usher.config import Settings
from usher.storage import storage_for_url
from usher.storage.base import Storage
from usher.web.api import api
from usher.web.check import check
from usher.web.ops import healthz, metrics
from usher.web.state import AppState

ROUTES = [
    Route("/api", api, methods=["POST"]),
    Route("/stable/", api, methods=["POST"]),
    Route("/stable", api, methods=["POST"]),
    Route("/usher/check", check, methods=["GET", "POST"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
_ROUTE_LABELS = frozenset(route.path for route in ROUTES)


class UsherApp:
    """The Starlette app wrapped in a bare ASGI layer that counts and times
    every request by route (cheaper than BaseHTTPMiddleware on the hot path)."""

    def __init__(self, state: AppState) -> None:
        self.state = state
        self.starlette = Starlette(routes=ROUTES, lifespan=lambda _: self.running())
        self.starlette.state.usher = state
        state.metrics.watch_pending_writes(lambda: float(state.storage.pending_writes))

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Open the storage for the app's lifetime (the ASGI lifespan; tests
        enter it directly)."""
        await self.state.storage.open()
        try:
            yield
        finally:
            await self.state.storage.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.starlette(scope, receive, send)
            return
        started = time.perf_counter()
        path = scope["path"]
        route = path if path in _ROUTE_LABELS else "other"
        status = 500

        async def send_and_watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.starlette(scope, receive, send_and_watch)
        finally:
            metrics = self.state.metrics
            metrics.requests.labels(route, str(status)).inc()
            metrics.latency.labels(route).observe(time.perf_counter() - started)


def create_app(
    settings: Settings,
    storage: Storage | None = None,
    *,
    clock: Callable[[], float] = time.time,
) -> UsherApp:
    """The Usher ASGI app; it opens the storage on startup and closes it on shutdown."""
    return UsherApp(
        AppState(settings, storage or storage_for_url(settings.database_url), clock=clock)
    )
