"""The realistic check workload: playback starts spread over many tickets.

Tickets are made as a publisher's site makes them, through the signed API
(``sevu.request``), each for an app and a video the seeded account streams;
their check URLs, each with its own viewer address, go to a file that
``wrk`` cycles through (bench/paths.lua). Every request is a playback start
without a session id, so every allowed one is counted, logged and opens a
live session (web/playback.py, ``Checker.check``).
"""

from __future__ import annotations

import ipaddress
import json
import random
import secrets
import sqlite3
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

from usher.client import Client

#: Threads making tickets, each with its own clients: the server batches
#: concurrent writes, so a few callers make them several times faster than one.
WORKERS = 4
#: The ticket mix. Most of a publisher's tickets are unlimited (as in the
#: seeded data, where 80% are), so ``uses = 0`` dominates. One in ten has a
#: ``uses`` limit and one in ten a ``max_viewers`` limit, so that the costs
#: these add to a start (a use counted in the ticket's row; the ticket's
#: open sessions counted with the ticket locked) are part of the measured
#: mix. Both limits are far above what a run can reach (a ticket gets tens
#: of starts in a full run, a few hundred in the tiny one, and its sessions
#: stay open for USHER_SESSION_TTL), so the limits cost work but never refuse.
EVERY_LIMITED = 10
USES_LIMIT = 1_000_000
MAX_VIEWERS = 100_000
#: Viewer addresses: one per ticket, from the range set aside for
#: benchmarks (RFC 2544, 198.18.0.0/15: 131,072 addresses).
VIEWERS = ipaddress.ip_network("198.18.0.0/15")
#: Check URLs tried before measuring.
SAMPLE = 20


@dataclass(frozen=True)
class Workload:
    #: The check paths, one a line, in the order the tickets were made.
    paths: Path
    tickets: int
    #: Tickets by kind: unlimited, uses-limited, viewer-limited.
    mix: dict[str, int]
    seconds: float


def kind(index: int) -> str:
    """Which kind of ticket the ``index``-th one is (see :data:`EVERY_LIMITED`)."""
    slot = index % EVERY_LIMITED
    return "uses" if slot == 1 else "max_viewers" if slot == 2 else "unlimited"


def streams(db_path: Path) -> list[tuple[int, str, str]]:
    """The seeded (cdn, app, video) triples, read from the tickets table."""
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT DISTINCT cdn, app, video FROM tickets ORDER BY 1, 2, 3")
        found = [(int(cdn), str(app), str(video)) for cdn, app, video in rows]
    if not found:
        raise RuntimeError(f"{db_path} holds no tickets to take apps and videos from.")
    return found


def make(
    url: str,
    accounts: dict[int, dict[str, Any]],
    names: Sequence[tuple[int, str, str]],
    count: int,
    out: Path,
) -> Workload:
    """``count`` tickets made through ``url``'s API, each for a stream drawn
    from ``names``; their check paths written to ``out``."""
    if count > VIEWERS.num_addresses:
        raise ValueError(f"At most {VIEWERS.num_addresses:,} tickets get a viewer address each.")
    rng = random.Random(17)  # noqa: S311  # which streams get tickets; the passes use secrets
    chosen = [names[rng.randrange(len(names))] for _ in range(count)]
    paths: list[str] = [""] * count
    made = 0
    lock = threading.Lock()
    started = time.perf_counter()

    def work(first: int) -> None:
        nonlocal made
        clients: dict[int, Client] = {}
        try:
            for i in range(first, count, WORKERS):
                cdn, app, video = chosen[i]
                if cdn not in clients:
                    a = accounts[cdn]
                    clients[cdn] = Client(
                        url + "/api", cdn=cdn, api_key=a["api_key"], secret=a["secret"]
                    )
                password = secrets.token_hex(6)
                limits = {"uses": 0}
                if kind(i) == "uses":
                    limits["uses"] = USES_LIMIT
                elif kind(i) == "max_viewers":
                    limits["max_viewers"] = MAX_VIEWERS
                answer = clients[cdn].call(
                    "sevu.request", app=app, video=video, ip="", **limits, **{"pass": password}
                )
                if "ticket" not in answer:
                    raise RuntimeError(
                        f"sevu.request for {app} {video} of cdn {cdn} was refused: {answer}"
                    )
                query = {"key": answer["ticket"]["key"], "pass": password, "app": app,
                         "video": video, "ip": str(VIEWERS[i])}  # fmt: skip
                paths[i] = "/usher/check?" + urlencode(query)
                with lock:
                    made += 1
                    if made % max(1, count // 10) == 0 or made == count:
                        print(f"   {made:,} of {count:,} tickets made", file=sys.stderr)
        finally:
            for client in clients.values():
                client.close()

    with ThreadPoolExecutor(WORKERS) as pool:
        # list(): a failed call is raised here, not lost.
        list(pool.map(work, range(WORKERS)))
    out.write_text("\n".join(paths) + "\n")
    mix = {name: sum(kind(i) == name for i in range(count))
           for name in ("unlimited", "uses", "max_viewers")}  # fmt: skip
    return Workload(out, count, mix, time.perf_counter() - started)


def split(paths: Path, parts: int) -> list[Path]:
    """``paths`` cut into ``parts`` files of consecutive lines, one per node,
    so that each ticket is played on one node only."""
    lines = paths.read_text().split()
    size = -(-len(lines) // parts)
    files = []
    for n in range(parts):
        part = paths.with_name(f"{paths.stem}-{parts}-{n + 1}{paths.suffix}")
        part.write_text("\n".join(lines[n * size : (n + 1) * size]) + "\n")
        files.append(part)
    return files


def validate(url: str, paths: Path) -> None:
    """A sample of the paths, spread over the file, asked of ``url``: each
    must be allowed and open a session, or the run stops before measuring."""
    lines = paths.read_text().split()
    step = max(1, len(lines) // SAMPLE)
    with httpx.Client(base_url=url, timeout=10) as http:
        for path in lines[::step][:SAMPLE]:
            answer = http.get(path)
            try:
                body = json.loads(answer.text)
            except ValueError:
                body = None
            if not isinstance(body, dict):
                body = {}
            if answer.status_code != 200 or body.get("allowed") is not True:
                raise RuntimeError(
                    f"The realistic workload's check {url}{path} was answered "
                    f"HTTP {answer.status_code}: {answer.text[:300]}. Every check URL in "
                    f"{paths} must be allowed; the tickets were made just before."
                )
            if not body.get("session"):
                raise RuntimeError(
                    f"The realistic workload's check {url}{path} was allowed without "
                    "opening a session, but every playback start must open one: the "
                    "workload would not measure the cost of sessions."
                )
