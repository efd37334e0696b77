"""Deadlines and a cap for ``usher serve``'s connections.

uvicorn bounds the idle time between requests (``timeout_keep_alive``) but
not the time a client takes to send one: a client sending its headers one
byte at a time, or a body that never ends, held its socket and memory for
as long as it liked. :class:`GuardedHttpProtocol` is uvicorn's httptools
protocol with three additions:

- the headers must arrive within ``USHER_HEADER_TIMEOUT`` seconds of the
  connection opening (or of the request's first byte, on a kept-alive
  connection), else the connection is answered 408 and closed;
- the body must then arrive within ``USHER_BODY_TIMEOUT`` seconds, else the
  same; the request is counted as a 408 on its route;
- beyond ``USHER_MAX_CONNECTIONS`` open connections, a new one is answered
  503 and closed at once instead of joining the pile.

uvicorn's own ``limit_concurrency`` is not used: it still accepts and parses
every connection, answers each request 503 and logs a warning per request.

The cost on the hot path is one timer per connection: a request that
arrives whole in one read (as a streaming server's callback does) arms
nothing; the timer only runs while a request is incomplete.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from asyncio import TimerHandle
from enum import Enum
from typing import Any, ClassVar, Final, cast

from prometheus_client import Counter
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from usher.config import Settings
from usher.metrics import Metrics
from usher.web.app import BODY_TIMED_OUT

log = logging.getLogger("usher.connections")

#: How often, at most, a refused connection is logged (they are all counted).
_WARN_EVERY_S: Final = 60.0


class _Waiting(Enum):
    NOTHING = "nothing"
    HEADERS = "header_timeout"
    BODY = "body_timeout"


def _plain_response(status: bytes, text: str) -> bytes:
    body = (text + "\n").encode()
    return (
        b"HTTP/1.1 " + status + b"\r\n"
        b"content-type: text/plain; charset=utf-8\r\n"
        b"content-length: %d\r\n"
        b"connection: close\r\n\r\n" % len(body)
    ) + body


class ConnectionGuard:
    """The limits one server's connections share, and their counters."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.timeouts = {
            _Waiting.HEADERS: float(settings.header_timeout),
            _Waiting.BODY: float(settings.body_timeout),
        }
        self.max_connections = settings.max_connections
        self.answers = {
            _Waiting.HEADERS: _plain_response(
                b"408 Request Timeout",
                f"The request headers did not arrive within {settings.header_timeout} s; "
                "send the whole request at once.",
            ),
            _Waiting.BODY: _plain_response(
                b"408 Request Timeout",
                f"The request body did not arrive within {settings.body_timeout} s; "
                "send the whole request at once.",
            ),
        }
        self.full = _plain_response(
            b"503 Service Unavailable",
            f"Usher has {settings.max_connections} connections open, its limit; try again shortly.",
        )
        self._closed: dict[str, Counter] = {
            reason: metrics.connections_closed.labels(reason)
            for reason in ("header_timeout", "body_timeout", "over_limit")
        }
        self._warned_at = -math.inf

    def closed(self, reason: str) -> None:
        self._closed[reason].inc()

    def refused(self) -> None:
        self.closed("over_limit")
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY_S:
            self._warned_at = now
            log.warning(
                "Refused a connection: %d are open, the USHER_MAX_CONNECTIONS limit. Raise it "
                "if this load is expected; refusals are counted in "
                'usher_connections_closed_total{reason="over_limit"} and logged at most once '
                "a minute.",
                self.max_connections,
            )


# The per-request overrides below call these directly: ``super()`` costs
# about 0.2 µs a call, four times a request on the hot path.
_data_received = HttpToolsProtocol.data_received
_on_message_begin = HttpToolsProtocol.on_message_begin
_on_headers_complete = HttpToolsProtocol.on_headers_complete
_on_message_complete = HttpToolsProtocol.on_message_complete


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header and body deadlines and a
    connection cap (see the module docstring); :func:`protocol_class` binds
    it to a :class:`ConnectionGuard`."""

    guard: ClassVar[ConnectionGuard]

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._waiting = _Waiting.NOTHING
        #: What the running deadline is for; NOTHING when none runs.
        self._timed = _Waiting.NOTHING
        self._deadline: TimerHandle | None = None
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # (The override is as uvicorn's own: asyncio's signature takes a BaseTransport.)
        if len(self.connections) >= self.guard.max_connections:
            self._refused = True
            self.guard.refused()
            transport.write(self.guard.full)
            transport.close()
            return
        super().connection_made(transport)
        self._waiting = _Waiting.HEADERS
        self._time(_Waiting.HEADERS)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if not self._refused:  # a refused connection never became uvicorn's
            super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        _data_received(self, data)
        # The parser's callbacks below have moved ``_waiting`` along; a
        # request that arrived whole leaves it at NOTHING and arms no timer.
        if self._waiting is not self._timed:
            self._time(self._waiting)

    def on_message_begin(self) -> None:
        _on_message_begin(self)
        self._waiting = _Waiting.HEADERS

    def on_headers_complete(self) -> None:
        _on_headers_complete(self)
        self._waiting = _Waiting.BODY

    def on_message_complete(self) -> None:
        _on_message_complete(self)
        self._waiting = _Waiting.NOTHING

    def _time(self, waiting: _Waiting) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._timed = waiting
        if waiting is not _Waiting.NOTHING:
            self._deadline = self.loop.call_later(self.guard.timeouts[waiting], self._too_slow)

    def _too_slow(self) -> None:
        """The running deadline passed: answer 408 if nothing else is being
        answered on this connection, and close it."""
        self._deadline = None
        waiting, self._timed = self._timed, _Waiting.NOTHING
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if waiting is _Waiting.BODY:
            # The app is waiting for the body; closing wakes it with a
            # disconnect, and the tag makes UsherApp count a 408, not a
            # disconnect. Once the app has answered (e.g. refused the
            # caller without reading), the trickle is only cut off.
            answer = cycle is not None and not cycle.response_started and not self.pipeline
            if answer:
                cast("dict[str, object]", cycle.scope)[BODY_TIMED_OUT] = True
        else:
            # No request is being answered, unless a pipelined one is.
            answer = cycle is None or cycle.response_complete
        if answer:
            self.transport.write(self.guard.answers[waiting])
        self.guard.closed(waiting.value)
        if self.client is not None:
            log.debug("Closed the connection of %s:%d: %s.", *self.client, waiting.value)
        self.transport.close()


def protocol_class(guard: ConnectionGuard) -> type[GuardedHttpProtocol]:
    """The protocol class to give uvicorn's ``Config(http=...)``."""

    class Guarded(GuardedHttpProtocol):
        pass

    Guarded.guard = guard
    return Guarded
