"""Prometheus metrics of one Usher process.

A private registry (not the global default) so that tests can build several
apps in one process without duplicate-metric errors.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from usher.tickets.model import EndReason

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Latency buckets from 0.5 ms: a playback check is expected to take a few ms.
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "usher_http_requests",
            "HTTP requests answered, by route and status code.",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "usher_http_request_duration_seconds",
            "Time from request start to response, by route.",
            ["route"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.client_disconnects = Counter(
            "usher_client_disconnects",
            "Requests whose client went away before its body arrived; nothing was answered.",
            ["route"],
            registry=self.registry,
        )
        self.connections_closed = Counter(
            "usher_connections_closed",
            "Connections the server closed on a slow or surplus client, by reason "
            "(header_timeout, body_timeout, over_limit).",
            ["reason"],
            registry=self.registry,
        )
        self.commands = Counter(
            "usher_api_commands",
            "Control-API commands answered, by command and response code.",
            ["command", "code"],
            registry=self.registry,
        )
        self.checks = Counter(
            "usher_checks",
            "Playback checks, by outcome and reason (empty when allowed).",
            ["outcome", "reason"],
            registry=self.registry,
        )
        # ``labels()`` takes a lock and builds a key on every call; a check
        # looks its child up here instead (a handful of outcome/reason pairs).
        self._check_children: dict[tuple[str, str], Counter] = {}
        self.panel_reads_stopped = Counter(
            "usher_panel_reads_stopped",
            "Control-panel requests whose database reads ran past "
            "USHER_PANEL_QUERY_TIMEOUT and were stopped (answered 503).",
            registry=self.registry,
        )
        self.session_starts = Counter(
            "usher_session_starts",
            "Live sessions this process opened, by protocol.",
            ["protocol"],
            registry=self.registry,
        )
        self.session_ends = Counter(
            "usher_session_ends",
            "Live sessions this process ended, by end reason (done, idle, kicked, "
            "revoked, expired).",
            ["reason"],
            registry=self.registry,
        )
        # Looked up once per protocol, as the check children are.
        self._start_children: dict[str, Counter] = {}
        self.sessions_open = Gauge(
            "usher_sessions_open",
            "Live sessions open now, all nodes together (read from the database at each scrape).",
            registry=self.registry,
        )
        self.rest_answers = Counter(
            "usher_rest_answers",
            "Answers of the v2 REST API, by resource (sevu_token, sevu_attempt, other) and "
            "code (OK, or the error code: UNAUTHORIZED counts failed authentications).",
            ["resource", "code"],
            registry=self.registry,
        )
        self.publishes = Counter(
            "usher_publishes",
            "Publish attempts this process decided, by outcome (allowed, denied) and "
            "reason (open, credentials, no_stream_user, no_credentials, bad_credentials, "
            "blocked) and by the streaming server that asked.",
            ["outcome", "reason", "server"],
            registry=self.registry,
        )
        self.pending_writes = Gauge(
            "usher_storage_pending_writes",
            "Writes waiting for the storage's writer.",
            registry=self.registry,
        )

    def count_check(self, outcome: str, reason: str) -> None:
        """One check: ``allowed`` or ``denied`` (a logged attempt), or
        ``resumed`` (a request of an open session, allowed without a write)."""
        child = self._check_children.get((outcome, reason))
        if child is None:
            child = self.checks.labels(outcome, reason)
            self._check_children[outcome, reason] = child
        child.inc()

    def count_session_start(self, protocol: str) -> None:
        child = self._start_children.get(protocol)
        if child is None:
            child = self._start_children[protocol] = self.session_starts.labels(protocol)
        child.inc()

    def count_session_ends(self, ended: int, reason: EndReason) -> None:
        if ended:
            self.session_ends.labels(reason.value).inc(ended)

    def count_publish(self, allowed: bool, reason: str, server: str) -> None:
        self.publishes.labels("allowed" if allowed else "denied", reason, server).inc()

    def watch_pending_writes(self, probe: Callable[[], float]) -> None:
        self.pending_writes.set_function(probe)

    def render(self) -> bytes:
        return generate_latest(self.registry)
