"""The ``sevu.errorcount`` matrix: all 64 combinations of the six filters.

For each combination the suite draws filter values from random logged
attempts (so a busy key, address or app is drawn as often as it occurs) and
measures three things:

* **end to end**: a signed ``sevu.errorcount`` through HTTP, as a dashboard
  sends it (half the calls with ``limit``/``seek``), timed by the client;
  this includes signing, the replay-protection write and its fsync;
* **query**: the statement the server runs (:func:`count_query`), on a
  read-only connection of the same file;
* **plain COUNT(\\*)**: the same count left to SQLite's planner over the same
  indexes, the baseline the issue names; it is slow, so fewer samples.

Every query result is compared with the plain count: a mismatch fails the run.

:func:`run_matrix_postgres` runs the same filters against a server on
PostgreSQL that holds a copy of the SQLite file: end to end, and the
server's ``count(*)`` statement through psycopg (PostgreSQL has no rollup;
there is no other baseline). Both counts, and every answer, are compared
with SQLite's count of the same filters on the copied file.
"""

from __future__ import annotations

import random
import sqlite3
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from usher.client import Client
from usher.storage.postgres.config import parse_url
from usher.storage.rows import attempt_where
from usher.storage.sqlite.counts import count_query, plain_count_query
from usher.tickets.model import AttemptFilter

NAMES = ("key", "pass", "app", "video", "ip", "success")
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


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


class _SteppingClock:
    """A distinct whole-second timestamp for every call of one account,
    within ±290 s of now (the server accepts ±300 s), so that identical
    requests (the unfiltered count, say) are never refused as replays."""

    def __init__(self) -> None:
        self.used: set[int] = set()

    def __call__(self) -> float:
        now = int(time.time())
        self.used = {t for t in self.used if t > now - 290}
        for stamp in range(now + 290, now - 290, -1):
            if stamp not in self.used:
                self.used.add(stamp)
                return float(stamp)
        raise RuntimeError("More than 580 calls per account within 290 s; seed more accounts.")


def _sample_rows(
    conn: sqlite3.Connection, count: int, rng: random.Random, max_id: int
) -> list[Row]:
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


def _drive(
    api_url: str,
    accounts: dict[int, dict[str, Any]],
    rows: list[Row],
    *,
    samples: int,
    drawn: int,
    measure: Measure,
) -> list[ComboTimes]:
    """The end-to-end calls of the first ``samples`` of the ``drawn`` rows
    per combination; ``measure`` adds what else is timed and checked."""
    clients = {
        cdn: Client(api_url, cdn=cdn, api_key=a["api_key"], secret=a["secret"],
                    clock=_SteppingClock())
        for cdn, a in accounts.items()
    }  # fmt: skip
    results: list[ComboTimes] = []
    try:
        for mask in range(64):
            combo = ComboTimes(combo_name(mask))
            for i in range(samples):
                row = rows[mask * drawn + i]
                cdn, values = row[0], row[1:]
                chosen = {NAMES[j]: values[j] for j in range(6) if mask >> j & 1}
                where = AttemptFilter(
                    **{_FILTER_ARGS[j]: values[j] for j in range(6) if mask >> j & 1}
                )
                if "success" in chosen:
                    where = _with_success(where)
                paged = i % 2 == 1
                fields: dict[str, object] = {k: str(v) for k, v in chosen.items()}
                if paged:
                    fields.update(_PAGE)
                started = time.perf_counter()
                answer = clients[cdn].call("sevu.errorcount", **fields)
                elapsed = (time.perf_counter() - started) * 1000
                if answer.get("code") not in (2050, 2051):
                    raise RuntimeError(f"sevu.errorcount failed for {combo.name}: {answer}")
                (combo.e2e_paged_ms if paged else combo.e2e_ms).append(elapsed)
                measure(combo, i, cdn, where, int(answer.get("error_count", -1)), paged)
            results.append(combo)
    finally:
        for client in clients.values():
            client.close()
    return results


def run_matrix(
    api_url: str,
    db_path: str,
    accounts: dict[int, dict[str, Any]],
    *,
    samples: int,
    plain_samples: int,
    max_id: int,
    seed: int = 7,
) -> list[ComboTimes]:
    rng = random.Random(seed)  # noqa: S311  # sampling, not secrets
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)

    def measure(
        combo: ComboTimes, i: int, cdn: int, where: AttemptFilter, _answered: int, _paged: bool
    ) -> None:
        sql, params = count_query(cdn, where)
        started = time.perf_counter()
        fast = conn.execute(sql, params).fetchone()[0]
        combo.query_ms.append((time.perf_counter() - started) * 1000)
        if i < plain_samples:
            sql, params = plain_count_query(cdn, where)
            started = time.perf_counter()
            plain = conn.execute(sql, params).fetchone()[0]
            combo.plain_ms.append((time.perf_counter() - started) * 1000)
            if plain != fast:
                raise RuntimeError(f"{combo.name}: rollup/index count {fast} != {plain}.")

    try:
        rows = _sample_rows(conn, 64 * samples, rng, max_id)
        return _drive(api_url, accounts, rows, samples=samples, drawn=samples, measure=measure)
    finally:
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
) -> list[ComboTimes]:
    """The matrix against a server on ``database`` (PostgreSQL), which holds
    a copy of the SQLite file ``db_path`` and nothing written since.

    Its filters are the first ``samples`` of the ``drawn`` per combination
    that :func:`run_matrix` used (the same seed on the same rows). The
    expected count is SQLite's :func:`count_query` on the copied file, which
    :func:`run_matrix` checked against the plain ``COUNT(*)``.
    """
    rng = random.Random(seed)  # noqa: S311  # sampling, not secrets
    sqlite = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    pg = psycopg.connect(parse_url(database).conninfo, autocommit=True)

    def measure(
        combo: ComboTimes, _i: int, cdn: int, where: AttemptFilter, answered: int, paged: bool
    ) -> None:
        sql, params = attempt_where(cdn, where, "%s")
        # The statement PostgresStorage.count_attempts runs; the WHERE body
        # holds placeholders only.
        query = f"SELECT count(*) FROM attempts WHERE {sql}"  # noqa: S608
        started = time.perf_counter()
        row = pg.execute(query, params).fetchone()
        combo.query_ms.append((time.perf_counter() - started) * 1000)
        sql, params = count_query(cdn, where)
        expected = int(sqlite.execute(sql, params).fetchone()[0])
        shown = min(_PAGE["limit"], max(0, expected - _PAGE["seek"])) if paged else expected
        if row is None or row[0] != expected or answered != shown:
            raise RuntimeError(
                f"{combo.name} on PostgreSQL: the server answered {answered} and its count(*) "
                f"gave {row and row[0]}, where SQLite counts {expected} (so {shown} expected)."
            )

    try:
        rows = _sample_rows(sqlite, 64 * drawn, rng, max_id)
        return _drive(api_url, accounts, rows, samples=samples, drawn=drawn, measure=measure)
    finally:
        pg.close()
        sqlite.close()


def _with_success(where: AttemptFilter) -> AttemptFilter:
    # Rows carry success as 0/1; the filter takes a bool.
    return AttemptFilter(
        key=where.key, password=where.password, app=where.app, video=where.video,
        ip=where.ip, success=bool(where.success),
    )  # fmt: skip
