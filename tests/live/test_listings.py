"""Listings stay small however much an account holds (a real ``usher serve``
on a database filled by ``usher seed-data``).

An unfiltered ``sevu.search`` used to answer with every ticket of the
account, and ``sevu.errorlog`` with every attempt of the key: the server held
all of them, several times over, while it built the answer. Now one answer
holds at most ``MAX_PAGE_ROWS`` and the client pages with ``seek``; the
server's peak memory must stay far below what the whole account would take.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import free_port
from tests.live.conftest import _start, query_database, usher
from usher.client import Client
from usher.tickets.model import MAX_PAGE_ROWS

pytestmark = pytest.mark.slow

#: Tickets of the big account. Answering the searches below, the uncapped
#: server's peak RSS was 390 MiB; the capped one's is 45 MiB (39 MiB idle).
TICKETS = 200_000
#: Attempts of a small account whose one hot ticket draws a fifth of them
#: plus its share of the rest, about 60,000: a busy key's log.
ATTEMPTS = 300_000
#: The performance target for the server's memory, whatever a client asks.
RSS_BOUND_KIB = 200 * 1024


@dataclass
class Seeded:
    """A server on a seeded database and the two seeded accounts."""

    url: str
    many_tickets: dict[str, object]
    busy_log: dict[str, object]
    busy_key: str
    busy_attempts: int
    pid: int


def _seed(database: str, tickets: int, attempts: int) -> dict[str, object]:
    out = usher(
        "seed-data", "--tickets", str(tickets), "--attempts", str(attempts),
        "--accounts", "1", "--json", "--database", database,
    ).stdout  # fmt: skip
    [account] = json.loads(out)["accounts"]
    assert isinstance(account, dict)
    return account


def _client(server: Seeded, account: dict[str, object]) -> Client:
    return Client(
        server.url + "/api",
        cdn=int(str(account["cdn"])),
        api_key=str(account["api_key"]),
        secret=str(account["secret"]),
        # The unfixed server took several seconds to build a 200,000-ticket answer.
        timeout=60,
    )


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"/proc/{pid}/status has no {field} line.")


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    folder = tmp_path_factory.mktemp("listings")
    database = f"sqlite:///{folder / 'seeded.db'}"
    many_tickets = _seed(database, TICKETS, 0)
    busy_log = _seed(database, 100, ATTEMPTS)
    [(busy_key, busy_attempts)] = query_database(
        database,
        "SELECT key, COUNT(*) FROM attempts WHERE cdn = "
        f"{int(str(busy_log['cdn']))} GROUP BY key ORDER BY 2 DESC LIMIT 1",
    )
    assert busy_attempts > 10 * MAX_PAGE_ROWS, "the seeded log has no busy key"
    port = str(free_port())
    process = _start(port, database, folder / "server.log")
    try:
        yield Seeded(
            f"http://127.0.0.1:{port}",
            many_tickets,
            busy_log,
            busy_key,
            busy_attempts,
            process.pid,
        )
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def test_unbounded_listings_answer_one_page_in_bounded_memory(seeded: Seeded) -> None:
    idle_kib = _status_kib(seeded.pid, "VmRSS")
    with _client(seeded, seeded.many_tickets) as tickets, _client(seeded, seeded.busy_log) as log:
        # No filter at all, a filter SPEC says to ignore (empty string), and
        # a limit far beyond the cap.
        searches = [tickets.call("sevu.search", **f) for f in ({}, {"ip": ""}, {"limit": 10**12})]
        errorlog = log.call("sevu.errorlog", key=seeded.busy_key)
        peak_kib = _status_kib(seeded.pid, "VmHWM")
        assert peak_kib < RSS_BOUND_KIB, (
            f"the server's peak RSS was {peak_kib // 1024} MiB (idle {idle_kib // 1024} MiB); "
            f"the bound is {RSS_BOUND_KIB // 1024} MiB"
        )

        for body in searches:
            assert body["code"] == 2031, body["message"]
            assert len(body["tickets"]) == MAX_PAGE_ROWS
            assert body["ticket_count"] == TICKETS
        # ``seek`` pages on: the next answer holds the next tickets.
        body = tickets.call("sevu.search", seek=MAX_PAGE_ROWS)
        assert body["ticket_count"] == TICKETS
        first = {t["key"] for t in searches[0]["tickets"]}
        second = {t["key"] for t in body["tickets"]}
        assert len(second) == MAX_PAGE_ROWS and not first & second

        assert errorlog["code"] == 2041, errorlog["message"]
        assert len(errorlog["attempts"]) == MAX_PAGE_ROWS
        last = log.call("sevu.errorlog", key=seeded.busy_key, seek=seeded.busy_attempts - 1)
        assert len(last["attempts"]) == 1
        assert last["attempts"][0]["id"] > errorlog["attempts"][-1]["id"]
        # The count is not capped: it is a number, not a listing.
        count = log.call("sevu.errorcount", key=seeded.busy_key)
        assert count["error_count"] == seeded.busy_attempts
