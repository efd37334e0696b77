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
"""

from __future__ import annotations

import random
import sqlite3
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from usher.client import Client
from usher.storage.sqlite_counts import count_query, plain_count_query
from usher.tickets.model import AttemptFilter

NAMES = ("key", "pass", "app", "video", "ip", "success")
_FILTER_ARGS = ("key", "password", "app", "video", "ip", "success")


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
) -> list[tuple[Any, ...]]:
    # Only seeded attempts: the check benchmark logs hundreds of thousands
    # of attempts of its one ticket, which would otherwise be drawn as a
    # filter value far more often than any real ticket.
    low = conn.execute("SELECT MIN(id) FROM attempts").fetchone()[0]
    high = max_id
    rows: list[tuple[Any, ...]] = []
    while len(rows) < count:
        row = conn.execute(
            "SELECT cdn, key, pass, app, video, ip, success FROM attempts"
            " WHERE id >= ? AND cdn IS NOT NULL LIMIT 1",
            (rng.randint(low, high),),
        ).fetchone()
        if row is not None:
            rows.append(row)
    return rows


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
    rows = _sample_rows(conn, 64 * samples, rng, max_id)
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
                row = rows[mask * samples + i]
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
                    fields.update(limit=10, seek=1)
                started = time.perf_counter()
                answer = clients[cdn].call("sevu.errorcount", **fields)
                elapsed = (time.perf_counter() - started) * 1000
                if answer.get("code") not in (2050, 2051):
                    raise RuntimeError(f"sevu.errorcount failed for {combo.name}: {answer}")
                (combo.e2e_paged_ms if paged else combo.e2e_ms).append(elapsed)

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
            results.append(combo)
    finally:
        for client in clients.values():
            client.close()
        conn.close()
    return results


def _with_success(where: AttemptFilter) -> AttemptFilter:
    # Rows carry success as 0/1; the filter takes a bool.
    return AttemptFilter(
        key=where.key, password=where.password, app=where.app, video=where.video,
        ip=where.ip, success=bool(where.success),
    )  # fmt: skip
