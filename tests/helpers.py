"""Plain helpers shared by the tests: the fixed time, ticket and request builders.

Fixtures live in conftest.py; this module holds what tests import by name.
Each builder returns a valid default that the given keyword arguments
change (``dataclasses.replace``), so a test spells out only what it is about.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
import socket
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Final, cast

import psycopg

from usher.storage import counting
from usher.storage.base import Storage
from usher.storage.postgres import PostgresStorage
from usher.storage.sqlite import SQLiteStorage
from usher.tickets.model import AttemptFilter, CheckRequest, Ticket

#: The tests' "now": storage tests pass it explicitly, and the ``clock``
#: fixture starts at it, so expiry boundaries are exact and runs repeatable.
NOW = 1_800_000_000  # 2027-01-15 08:00:00 UTC
#: The cdn of the usual first account, ``demo``, and of a second one.
DEMO_CDN = 1
OTHER_CDN = 2
CLIENT = "203.0.113.7"


def make_ticket(**changes: Any) -> Ticket:
    """A ticket of account ``demo`` that ``request_for`` passes, unless changed."""
    ticket = Ticket(
        key="stream.0001",
        cdn=DEMO_CDN,
        password="pw",
        ip="",
        video="stream",
        app="demo-live",
        uses=0,
        use_count=0,
        active=True,
        created_at=NOW - 100,
        expire_at=NOW + 3600,
    )
    return dataclasses.replace(ticket, **changes)


def request_for(ticket: Ticket, **changes: Any) -> CheckRequest:
    """A playback request that ``decide`` allows against a fresh ``make_ticket``."""
    request = CheckRequest(
        key=ticket.key,
        password=ticket.password,
        app="demo-live",
        video="stream",
        ip=CLIENT,
    )
    return dataclasses.replace(request, **changes)


def session_ticket(**changes: Any) -> Ticket:
    """A ticket for a video on demand, which ``viewer`` passes, unless changed."""
    ticket = make_ticket(key="hls.0001", video="movie", app="demo-vod")
    return dataclasses.replace(ticket, **changes)


def viewer(ticket: Ticket, **changes: Any) -> CheckRequest:
    """A request that ``decide`` allows against a fresh ``session_ticket``."""
    return dataclasses.replace(request_for(ticket, app="demo-vod", video="movie"), **changes)


def passing_ticket(**changes: Any) -> Ticket:
    """A ticket that ``passing_request`` passes with every check doing real
    work (alternatives, wildcards, an address range, an auto slot, a count)."""
    ticket = make_ticket(
        key="stream.00000000000000.00000000",
        password="s3cret",
        ip="203.0.113.0/24|auto",
        video="stream|vod/*.mp4",
        app="demo-live|demo-vod-*",
        uses=3,
        use_count=1,
        expire_at=NOW + 100,
    )
    return dataclasses.replace(ticket, **changes)


def passing_request(**changes: Any) -> CheckRequest:
    """A request that ``decide`` allows against a fresh ``passing_ticket``."""
    request = request_for(passing_ticket(), app="demo-live", video="vod/2024/talk.mp4")
    return dataclasses.replace(request, **changes)


class DeciderAbort(BaseException):
    """Not an ``Exception``: what a decider could raise by way of
    ``SystemExit``, ``KeyboardInterrupt`` or a cancellation. It must reach
    only the call whose decider raised it."""


#: A read that runs for many seconds on either database (a billion-step
#: recursive count), for tests of the panel's read bound.
SLOW_SQL = (
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000000000)"
    " SELECT count(*) FROM n"
)


async def slow_read(storage: Storage) -> int:
    """Run :data:`SLOW_SQL` through the backend's own read path (the one
    every storage read takes), so a bound on reads stops it for real."""
    # Test-only reach into the backends: no storage method is slow on an
    # empty database, and the bound must be seen stopping a real statement.
    if isinstance(storage, SQLiteStorage):
        row = await storage._read(lambda conn: conn.execute(SLOW_SQL).fetchone())
    else:
        assert isinstance(storage, PostgresStorage)
        row = await storage._db.fetchone(SLOW_SQL)
    assert row is not None
    return int(row[0])


async def count_filters_of(
    storage: Storage, cdn: int, wheres: Iterable[AttemptFilter]
) -> dict[int, int]:
    """The count filters that exist for any of ``wheres``' combinations of
    key, pass and ip, or for one of those values alone: filter id by mask."""
    # Both backends' storages are counting.py's CountSource; its lookup sees
    # count filters without SQL.
    source = cast(counting.CountSource, storage)
    made: dict[int, int] = {}
    for where in wheres:
        selective = counting.value_filter(cdn, where)
        if selective is None:
            continue
        alone = {selective.alone(column) for column, _ in selective.named} - {selective}
        made.update(await source.find_filters([selective, *alone]))
    return made


class _AnySessionId:
    """Equal to any session id Usher makes (16 hex digits), for comparing
    whole check answers."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and re.fullmatch(r"[0-9a-f]{16}", other) is not None

    def __hash__(self) -> int:
        return 0

    def __repr__(self) -> str:
        return "<any session id>"


ANY_SESSION = _AnySessionId()


#: The head of an ``INSERT … SELECT`` that lays out generated attempts on
#: PostgreSQL (``generate_series``); the SELECT lists the columns in this order.
GENERATED_ATTEMPTS = (
    "INSERT INTO attempts (cdn, at, key, pass, ip, video, app, appinst, pageurl,"
    " refurl, success, reason, server_ip) "
)


async def pg_plan(
    conn: psycopg.AsyncConnection[Any],
    sql: str,
    params: Sequence[object] = (),
    *,
    explain: str = "EXPLAIN",
) -> str:
    """PostgreSQL's plan of ``sql`` (``explain`` names the options), a line a node."""
    rows = [row[0] async for row in await conn.execute(f"{explain} {sql}", params)]
    return "\n".join(rows)


#: Ports a pytest-xdist worker gives its servers: its own block below the
#: kernel's ephemeral range (32768 and up on Linux), which is where a port
#: bound to 0 comes from. A port found free by binding 0 and closing it can be
#: taken by the other worker before the server binds it; two blocks cannot.
PORTS_FROM: Final = 20000
PORTS_PER_WORKER: Final = 3000
_worker_ports: Iterator[int] | None = None


def free_port() -> int:
    """A port on 127.0.0.1 nothing listens on, for a server a test starts.

    Run by one pytest process, whatever the kernel hands out for port 0.
    Under pytest-xdist (``PYTEST_XDIST_WORKER`` is ``gw0``, ``gw1``, …), the
    next port of the worker's block that binds."""
    global _worker_ports
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw"):
        return _bind(0)
    if _worker_ports is None:
        first = PORTS_FROM + int(worker[2:]) * PORTS_PER_WORKER
        _worker_ports = itertools.cycle(range(first, first + PORTS_PER_WORKER))
    for port in itertools.islice(_worker_ports, PORTS_PER_WORKER):
        try:
            return _bind(port)
        except OSError:
            continue
    raise RuntimeError(f"No free port left in worker {worker}'s block; raise PORTS_PER_WORKER.")


def _bind(port: int) -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        bound: int = sock.getsockname()[1]
    return bound
