"""The ``sevu.errorcount`` matrix: all 64 combinations of the six filters.

For each combination the suite draws filter values from random logged
attempts (so a busy key, address or app is drawn as often as it occurs),
and then again for each heavy hitter (:data:`HEAVY`: the busiest address
and the busiest key, as ``usher seed-data`` makes them) from random attempts
*of that value*, so that the matrix is timed for typical and heavy values.
It measures three things:

* **end to end**: a signed ``sevu.errorcount`` through HTTP, as a dashboard
  sends it (half the calls with ``limit``/``seek``), timed by the client;
  this includes signing, the replay-protection write and its fsync;
* **query**: the storage's own ``count_attempts`` (rollups, count filters
  and bounded index reads, see ``usher/storage/counting.py``), in this
  process on the same database;
* **plain COUNT(\\*)**: the same count left to SQLite's planner over the same
  indexes, the baseline the issue names; it is slow, so fewer samples (and
  each distinct filter is counted once: a heavy value repeats).

Every query result is compared with the plain count: a mismatch fails the run.

:func:`run_matrix_postgres` runs the same filters against a server on
PostgreSQL that holds a copy of the SQLite file: end to end, and the
storage's ``count_attempts`` on PostgreSQL in this process. Both counts,
and every answer, are compared with SQLite's count of the same filters on
the copied file (itself checked against the plain count).
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench import procs
from usher.client import Client
from usher.storage import storage_for_url
from usher.storage.base import Storage
from usher.storage.sqlite.counts import plain_count_query
from usher.tickets.model import AttemptFilter

#: The filters, which are also the attempts columns they match.
NAMES = ("key", "pass", "app", "video", "ip", "success")
#: Heavy hitter kinds: (name, the attempts column whose busiest value it is).
HEAVY = (("busiest address", "ip"), ("busiest key", "key"))
#: Random attempts read to find each kind's busiest value.
PROBE = 1000
#: A combination stops drawing more calls once its end-to-end calls took
#: this long in all, after two (one of each paging): one that meets the
#: 10 ms target never gets near it, and a run on code that misses it by a
#: hundredfold stays bounded.
COMBO_BUDGET_S = 5.0
#: How long one call may take: a count that misses the target a
#: thousandfold is a result to report, not a reason to stop the run.
TIMEOUT_S = 120.0
_FILTER_ARGS = ("key", "password", "app", "video", "ip", "success")
#: What half of the end-to-end calls send.
_PAGE = {"limit": 10, "seek": 1}

Row = tuple[Any, ...]
#: Called after each end-to-end call with (combination, sample index, cdn,
#: filters, the answered error_count, whether the call sent limit/seek).
Measure = Callable[["ComboTimes", int, int, AttemptFilter, int, bool], None]


def combo_name(mask: int) -> str:
    return "+".join(name for i, name in enumerate(NAMES) if mask >> i & 1) or "(none)"


@dataclass
class ComboTimes:
    name: str
    e2e_ms: list[float] = field(default_factory=list)
    e2e_paged_ms: list[float] = field(default_factory=list)
    query_ms: list[float] = field(default_factory=list)
    plain_ms: list[float] = field(default_factory=list)
    #: When each call was asked twice: the first asks, untimed otherwise
    #: (``e2e_ms`` and ``e2e_paged_ms`` then hold the second).
    first_ms: list[float] = field(default_factory=list)


@dataclass
class Draw:
    """The filter values of one matrix: typical, or one heavy hitter's."""

    kind: str
    #: ``(cdn, key, pass, app, video, ip, success)`` per call, ``drawn`` per combination.
    rows: list[Row]
    #: The heavy value, its column and cdn, and how many attempts hold it.
    column: str = ""
    value: str = ""
    cdn: int = 0
    attempts: int = 0


@dataclass
class Matrix:
    """One matrix's timings, with what its values were drawn from."""

    kind: str
    column: str
    value: str
    cdn: int
    attempts: int
    combos: list[ComboTimes]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def sample_rows(conn: sqlite3.Connection, count: int, rng: random.Random, max_id: int) -> list[Row]:
    # Only seeded attempts: the check benchmark logs hundreds of thousands
    # of attempts of its one ticket, which would otherwise be drawn as a
    # filter value far more often than any real ticket.
    low = conn.execute("SELECT MIN(id) FROM attempts").fetchone()[0]
    high = max_id
    rows: list[Row] = []
    while len(rows) < count:
        row = conn.execute(
            "SELECT cdn, key, pass, app, video, ip, success FROM attempts"
            " WHERE id >= ? AND cdn IS NOT NULL LIMIT 1",
            (rng.randint(low, high),),
        ).fetchone()
        if row is not None:
            rows.append(row)
    return rows


def _draws(conn: sqlite3.Connection, drawn: int, max_id: int, seed: int) -> list[Draw]:
    """The typical draw, then one per heavy hitter kind; the same for the
    same seed on the same rows, so the PostgreSQL matrix gets the SQLite
    one's values."""
    rng = random.Random(seed)  # noqa: S311  # sampling, not secrets
    draws = [Draw("typical", sample_rows(conn, 64 * drawn, rng, max_id))]
    probe = sample_rows(conn, PROBE, rng, max_id)
    for kind, column in HEAVY:
        at = 1 + NAMES.index(column)
        (cdn, value), _ = Counter((row[0], row[at]) for row in probe).most_common(1)[0]
        # The column is one of HEAVY's names, never input.
        ids = [
            found
            for (found,) in conn.execute(
                f"SELECT id FROM attempts WHERE cdn = ? AND {column} = ? AND id <= ?",  # noqa: S608
                (cdn, value, max_id),
            )
        ]
        rows = [
            conn.execute(
                "SELECT cdn, key, pass, app, video, ip, success FROM attempts WHERE id = ?", (i,)
            ).fetchone()
            for i in rng.choices(ids, k=64 * drawn)
        ]
        draws.append(Draw(kind, rows, column, str(value), int(cdn), len(ids)))
    return draws


def settle(
    conn: sqlite3.Connection, server_url: str, quiet_s: float = 2.0, limit_s: float = 120.0
) -> None:
    """Wait until the server at ``server_url`` has no write queued and no
    attempt has been logged for ``quiet_s``: after the overload curve the
    server goes on answering (and logging) the checks queued before wrk
    stopped, and a count compared with one taken before such a write would
    differ. The queue matters as much as the log: checks can wait in it
    for longer than ``quiet_s``. Checks still in the listen queue are not
    seen here; :func:`run_matrix` counts again when a cached count
    disagrees."""
    deadline = time.monotonic() + limit_s
    last = conn.execute("SELECT MAX(id) FROM attempts").fetchone()[0]
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        now = conn.execute("SELECT MAX(id) FROM attempts").fetchone()[0]
        if now == last and procs.pending_writes(server_url) == 0:
            return
        last = now
    raise RuntimeError(
        f"Attempts were still being logged {limit_s:g} s after the check load ended; "
        "stop whatever else uses the benchmark's server."
    )


def _clients(api_url: str, accounts: dict[int, dict[str, Any]]) -> dict[int, Client]:
    """One client per account for all of a server's calls: the client dates
    a repeated call (a heavy value repeats often) one second later than the
    last, so it is never refused as a replay."""
    return {
        cdn: Client(api_url, cdn=cdn, api_key=a["api_key"], secret=a["secret"], timeout=TIMEOUT_S)
        for cdn, a in accounts.items()
    }


def _drive(
    clients: dict[int, Client],
    draw: Draw,
    *,
    samples: int,
    drawn: int,
    measure: Measure,
    twice: bool = False,
) -> Matrix:
    """The end-to-end calls of the first ``samples`` of the ``drawn`` rows
    per combination; ``measure`` adds what else is timed and checked. With
    ``twice``, each call is made twice in a row, and the second is the one
    timed (the first goes to ``first_ms``)."""
    rows = draw.rows
    results: list[ComboTimes] = []
    for mask in range(64):
        combo = ComboTimes(combo_name(mask))
        spent = 0.0
        for i in range(samples):
            if i >= 2 and spent > COMBO_BUDGET_S * 1000:
                break
            row = rows[mask * drawn + i]
            cdn, values = row[0], row[1:]
            chosen = {NAMES[j]: values[j] for j in range(6) if mask >> j & 1}
            where = AttemptFilter(**{_FILTER_ARGS[j]: values[j] for j in range(6) if mask >> j & 1})
            if "success" in chosen:
                where = _with_success(where)
            paged = i % 2 == 1
            fields: dict[str, object] = {k: str(v) for k, v in chosen.items()}
            if paged:
                fields.update(_PAGE)
            if twice:
                started = time.perf_counter()
                clients[cdn].call("sevu.errorcount", **fields)
                combo.first_ms.append((time.perf_counter() - started) * 1000)
                spent += combo.first_ms[-1]
            started = time.perf_counter()
            answer = clients[cdn].call("sevu.errorcount", **fields)
            elapsed = (time.perf_counter() - started) * 1000
            spent += elapsed
            if answer.get("code") not in (2050, 2051):
                raise RuntimeError(f"sevu.errorcount failed for {combo.name}: {answer}")
            (combo.e2e_paged_ms if paged else combo.e2e_ms).append(elapsed)
            measure(combo, i, cdn, where, int(answer.get("error_count", -1)), paged)
        results.append(combo)
    return Matrix(draw.kind, draw.column, draw.value, draw.cdn, draw.attempts, results)


class StorageCounts:
    """A storage opened in this process, on its own event loop, for timing
    ``count_attempts`` outside the server."""

    def __init__(self, url: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._storage: Storage = storage_for_url(url)
        self._loop.run_until_complete(self._storage.open())

    def count(self, cdn: int, where: AttemptFilter) -> int:
        return self._loop.run_until_complete(self._storage.count_attempts(cdn, where))

    def close(self) -> None:
        self._loop.run_until_complete(self._storage.close())
        self._loop.close()


def run_matrix(
    api_url: str,
    db_path: str,
    accounts: dict[int, dict[str, Any]],
    *,
    samples: int,
    plain_samples: int,
    max_id: int,
    seed: int = 7,
) -> list[Matrix]:
    """The typical matrix, then one per heavy hitter kind."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    settle(conn, api_url.removesuffix("/api"))
    counts = StorageCounts(f"sqlite:///{db_path}")
    # A heavy value repeats: each distinct filter's plain count is run once.
    plain_counts: dict[tuple[int, AttemptFilter], int] = {}

    def measure(
        combo: ComboTimes, i: int, cdn: int, where: AttemptFilter, _answered: int, _paged: bool
    ) -> None:
        started = time.perf_counter()
        fast = counts.count(cdn, where)
        combo.query_ms.append((time.perf_counter() - started) * 1000)
        if i < plain_samples:
            plain = plain_counts.get((cdn, where))
            if plain is None:
                sql, params = plain_count_query(cdn, where)
                started = time.perf_counter()
                plain = plain_counts[cdn, where] = conn.execute(sql, params).fetchone()[0]
                combo.plain_ms.append((time.perf_counter() - started) * 1000)
            if plain != fast:
                # A plain count is kept for the filter's later samples, and
                # the server may have logged attempts since: a check of the
                # load that waited in the listen queue after its client had
                # gone (a full run logged 86 of them 17 s after the overload
                # curve, past settle()). Both counts again, back to back.
                sql, params = plain_count_query(cdn, where)
                plain = plain_counts[cdn, where] = conn.execute(sql, params).fetchone()[0]
                fast = counts.count(cdn, where)
            if plain != fast:
                raise RuntimeError(
                    f"{combo.name} ({cdn}, {where}): rollup/index count {fast} != {plain}."
                )

    clients = _clients(api_url, accounts)
    try:
        return [
            _drive(clients, draw, samples=samples, drawn=samples, measure=measure)
            for draw in _draws(conn, samples, max_id, seed)
        ]
    finally:
        for client in clients.values():
            client.close()
        counts.close()
        conn.close()


def run_matrix_postgres(
    api_url: str,
    db_path: str,
    database: str,
    accounts: dict[int, dict[str, Any]],
    *,
    samples: int,
    drawn: int,
    max_id: int,
    seed: int = 7,
) -> list[Matrix]:
    """The matrices against a server on ``database`` (PostgreSQL), which
    holds a copy of the SQLite file ``db_path`` and nothing written since.

    Each call is asked twice and the second timed, the way the counts issue
    measured PostgreSQL: the copy has just been written and analysed, and
    what its first reads find in memory is up to the machine (this one's
    kernel reclaims page cache within minutes). The first asks are kept as
    ``first_ms`` and reported beside.

    Their filters are the first ``samples`` of the ``drawn`` per combination
    that :func:`run_matrix` used (the same seed on the same rows). The
    expected count is the SQLite storage's on the copied file, which
    :func:`run_matrix` checked against the plain ``COUNT(*)``.
    """
    sqlite = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    expected_counts = StorageCounts(f"sqlite:///{db_path}")
    pg = StorageCounts(database)

    def measure(
        combo: ComboTimes, _i: int, cdn: int, where: AttemptFilter, answered: int, paged: bool
    ) -> None:
        started = time.perf_counter()
        counted = pg.count(cdn, where)
        combo.query_ms.append((time.perf_counter() - started) * 1000)
        expected = expected_counts.count(cdn, where)
        shown = min(_PAGE["limit"], max(0, expected - _PAGE["seek"])) if paged else expected
        if counted != expected or answered != shown:
            raise RuntimeError(
                f"{combo.name} ({cdn}, {where}) on PostgreSQL: the server answered {answered} "
                f"and the storage counted {counted}, where SQLite counts {expected} "
                f"(so {shown} expected)."
            )

    clients = _clients(api_url, accounts)
    try:
        return [
            _drive(clients, draw, samples=samples, drawn=drawn, measure=measure, twice=True)
            for draw in _draws(sqlite, drawn, max_id, seed)
        ]
    finally:
        for client in clients.values():
            client.close()
        pg.close()
        expected_counts.close()
        sqlite.close()


def _with_success(where: AttemptFilter) -> AttemptFilter:
    # Rows carry success as 0/1; the filter takes a bool.
    return AttemptFilter(
        key=where.key, password=where.password, app=where.app, video=where.video,
        ip=where.ip, success=bool(where.success),
    )  # fmt: skip
