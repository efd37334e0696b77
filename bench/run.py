"""Usher's benchmark suite: ``make bench`` (full) or ``make bench-quick``.

One command builds the data, starts the servers, times the control panel's
pages, makes the realistic workload's tickets through the API, runs ``wrk``
(one hot ticket, and the realistic workload cycling through many tickets'
check URLs) and the count matrix (typical and heavy-hitter values), and
prints one table: each figure, its baseline measured in the same run, the
ratio, median and p99, then a table of the panel's pages. It also writes
``results.json``, ``results.md`` and two plots into ``--out`` (default
``bench/results``).

With ``--backends sqlite,postgres`` (the default) the SQLite database is then
copied into a throw-away PostgreSQL cluster with ``usher db copy``, and the
check, count and panel measurements run again against a server on that copy;
then the realistic workload runs against 1, 2 and 3 servers on it at once.

Absolute numbers drift on a shared machine; the ratios against baselines
from the same run are what the targets are stated in (see
docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench import counts, panel, procs, realistic
from usher.client import Client
from usher.storage.postgres.config import parse_url


@dataclass(frozen=True)
class Mode:
    tickets: int
    attempts: int
    accounts: int
    wrk_s: float
    rounds: int
    curve: tuple[int, ...]
    curve_s: float
    samples: int
    plain_samples: int
    #: errorcount calls per combination on PostgreSQL, where a broad count
    #: scans up to an account's whole log; at most ``plain_samples``, so each
    #: one's filters were also counted by SQLite's plain COUNT(*).
    pg_samples: int
    #: Fetches of each panel page.
    panel_repeats: int
    #: "Older" links followed from the unfiltered attempts explorer.
    deep_links: int
    #: Tickets of the realistic check workload, made through the API.
    realistic: int


_FULL_CURVE = (16, 64, 256, 1024, 2048, 4096)
MODES = {
    # The suite's own test: proves every step works, measures nothing.
    "tiny": Mode(300, 3_000, 2, 1, 1, (8, 64, 256), 1, 2, 1, 1, 2, 100, 50),
    "quick": Mode(20_000, 200_000, 5, 5, 1, (16, 64, 256, 1024), 3, 6, 2, 2, 3, 100, 2_000),
    "full": Mode(1_000_000, 10_000_000, 10, 15, 2, _FULL_CURVE, 8, 20, 4, 4, 5, 100, 20_000),
}
CHECK_CONNECTIONS = 64
#: wrk's threads in all, split between the wrk of each node (at least one
#: each): on a 2-core machine the load generator should take about the
#: same share of the cores in every row.
WRK_THREADS = 2
#: How many ``usher serve`` processes share the PostgreSQL database, in turn.
PG_NODES = (1, 2, 3)
BACKENDS = ("sqlite", "postgres")


def _seed(database: str, mode: Mode, workdir: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "usher", "seed-data", "--tickets", str(mode.tickets),
         "--attempts", str(mode.attempts), "--accounts", str(mode.accounts), "--json",
         "--database", database],
        stdout=subprocess.PIPE, text=True, check=True, timeout=3600,
    ).stdout  # fmt: skip
    seeded: dict[str, Any] = json.loads(out)
    (workdir / "seed.json").write_text(out)
    return seeded


def _bench_ticket(url: str, account: dict[str, Any]) -> str:
    """A valid ticket with unlimited uses; its check URL."""
    with Client(url + "/api", cdn=account["cdn"], api_key=account["api_key"],
                secret=account["secret"]) as client:  # fmt: skip
        answer = client.call(
            "sevu.request", app=f"{account['username']}-bench", video="bench", ip="", uses=0,
            **{"pass": "bench-pass"},
        )  # fmt: skip
    key = answer["ticket"]["key"]
    return (
        f"{url}/usher/check?key={key}&pass=bench-pass&app={account['username']}-bench"
        "&video=bench&ip=203.0.113.10"
    )


def _targets(url: str, account: dict[str, Any]) -> tuple[str, str]:
    """The constant and check URLs of a running server, each tried once."""
    check_url = _bench_ticket(url, account)
    answer = httpx.get(check_url, timeout=5)
    if answer.status_code != 200:
        raise RuntimeError(f"The benchmark ticket is refused: {answer.text}")
    constant_url = url + "/bench/constant"
    if httpx.get(constant_url, timeout=5).status_code != 200:
        raise RuntimeError("/bench/constant is not mounted (USHER_BENCH_ROUTES=1).")
    return constant_url, check_url


#: The wrk targets of a round that are Usher's check route, whose answers by
#: status are read from the server around each run.
CHECK_TARGETS = frozenset({"check", "realistic"})


def _rounds(
    mode: Mode,
    url: str,
    pid: int,
    targets: dict[str, str],
    paths: dict[str, Path] | None = None,
) -> dict[str, list[procs.WrkResult]]:
    """``mode.rounds`` interleaved rounds of wrk at CHECK_CONNECTIONS; a
    target named in ``paths`` cycles through that file's paths. ``url`` is
    the Usher server (process ``pid``) the targets but nginx run against."""
    runs: dict[str, list[procs.WrkResult]] = {name: [] for name in targets}
    for _ in range(mode.rounds):
        for name, target in targets.items():
            before = procs.check_answers(url) if name in CHECK_TARGETS else {}
            cpu_before = procs.cpu_sample(pid)
            measured = procs.wrk(target, connections=CHECK_CONNECTIONS, seconds=mode.wrk_s,
                                 threads=WRK_THREADS, paths=(paths or {}).get(name))  # fmt: skip
            if name != "nginx":
                procs.wait_for_writes(url)
                cpu_after, names = procs.cpu_sample(pid), procs.thread_names(url)
                measured.cpu = procs.cpu_between(
                    pid, cpu_before, cpu_after, measured.requests, names
                )
            if name in CHECK_TARGETS:
                measured.statuses = procs.answers_between(before, procs.check_answers(url))
            runs[name].append(measured)
    return runs


def _realistic(
    url: str, db_path: Path, mode: Mode, seeded: dict[str, Any], workdir: Path
) -> realistic.Workload:
    """The realistic workload's tickets, made on a running server, and
    their check paths, a sample of them tried."""
    print(f"== making {mode.realistic:,} tickets through the API (realistic checks)",
          file=sys.stderr)  # fmt: skip
    accounts = {a["cdn"]: a for a in seeded["accounts"]}
    workload = realistic.make(
        url, accounts, realistic.streams(db_path), mode.realistic, workdir / "realistic-paths.txt"
    )
    realistic.validate(url, workload.paths)
    return workload


def node_visits(rounds: int) -> list[int]:
    """The node counts in the order their rounds run: 1, 2, 3, then 3, 2, 1,
    and so on, a round each. Measured in rising order only, a database
    still warming up after the copy (in one run every round did better
    than the one before, up to three nodes) passes for nodes scaling;
    each count measured once early and once late tells them apart."""
    visits: list[int] = []
    for n in range(rounds):
        visits += PG_NODES if n % 2 == 0 else PG_NODES[::-1]
    return visits


def _nodes(
    mode: Mode, database: str, workdir: Path, first: str, paths: Path
) -> list[dict[str, Any]]:
    """The realistic workload against 1, 2 and 3 servers on one database,
    all at once, in the order of :func:`node_visits`: a wrk per node, each
    cycling through its own share of the check paths, CHECK_CONNECTIONS and
    WRK_THREADS split between them. ``first`` is the server already running.
    Each count's rounds are in the order they ran; ``visits`` says where in
    the whole sequence (1 is the first round)."""
    measured: dict[int, dict[str, Any]] = {}
    with contextlib.ExitStack() as stack:
        urls = [first]
        for visit, count in enumerate(node_visits(mode.rounds), 1):
            while len(urls) < count:
                name = f"usher-postgres-{len(urls) + 1}"
                url, _pid = stack.enter_context(procs.usher_server(database, workdir, name))
                urls.append(url)
            print(f"== realistic checks on PostgreSQL, {count} node(s)", file=sys.stderr)
            parts = realistic.split(paths, count)
            nodes = urls[:count]
            for url, part in zip(nodes, parts, strict=True):
                # The round before may have left a queue on this node: its
                # oldest check past the write budget would shed the first
                # check tried here with 503.
                procs.wait_for_writes(url)
                realistic.validate(url, part)
            connections = [CHECK_CONNECTIONS // count + (n < CHECK_CONNECTIONS % count)
                           for n in range(count)]  # fmt: skip
            threads = max(1, WRK_THREADS // count)
            loads = list(zip(nodes, connections, parts, strict=True))
            entry = measured.setdefault(count, {"nodes": count, "connections": connections,
                                                "wrk_threads": threads, "rounds": [],
                                                "visits": []})  # fmt: skip
            entry["rounds"].append(
                [asdict(r) for r in _at_once(loads, seconds=mode.wrk_s, threads=threads)]
            )
            entry["visits"].append(visit)
    return [measured[count] for count in PG_NODES]


def _at_once(
    loads: list[tuple[str, int, Path]], *, seconds: float, threads: int
) -> list[procs.WrkResult]:
    """A wrk per (server URL, connections, paths file), all running at once."""

    def load(one: tuple[str, int, Path]) -> procs.WrkResult:
        url, connections, paths = one
        return procs.wrk(url, connections=connections, seconds=seconds, threads=threads,
                         paths=paths)  # fmt: skip

    with ThreadPoolExecutor(len(loads)) as pool:
        return list(pool.map(load, loads))


def _copy(database: str, pg_database: str) -> dict[str, Any]:
    """``usher db copy`` into PostgreSQL, timed; then VACUUM ANALYZE, as
    after any bulk load, so that autovacuum does not run during the
    measurements and the planner has statistics."""
    started = time.perf_counter()
    printed = subprocess.run(
        [sys.executable, "-m", "usher", "db", "copy", "--from", database, "--to", pg_database],
        stdout=subprocess.PIPE, text=True, check=True, timeout=7200,
    ).stdout  # fmt: skip
    seconds = time.perf_counter() - started
    print(printed, end="", file=sys.stderr)
    rows = {
        match[1]: int(match[2].replace(",", ""))
        for match in re.finditer(r"^\s+(\w+)\s+source\s+([\d,]+)", printed, re.MULTILINE)
    }
    if not rows:
        raise RuntimeError(f"Could not read the row counts `usher db copy` printed:\n{printed}")
    started = time.perf_counter()
    with psycopg.connect(parse_url(pg_database).conninfo, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")
    return {
        "seconds": seconds,
        "rows": rows,
        "rows_per_s": sum(rows.values()) / seconds,
        "vacuum_analyze_s": time.perf_counter() - started,
    }


def _keep(results: dict[str, Any], workdir: Path, part: str = "") -> None:
    """What is measured so far, in ``<workdir>/results[-<part>].partial.json``:
    a full run takes half an hour, and a late failure should not lose it."""
    name = f"results-{part}" if part else "results"
    (workdir / f"{name}.partial.json").write_text(json.dumps(results, indent=1))


def _counted(matrices: list[counts.Matrix]) -> dict[str, Any]:
    """The typical matrix's combinations, and the heavy hitters' matrices."""
    typical, *heavy = matrices
    return {
        "counts": [asdict(c) for c in typical.combos],
        "counts_heavy": [asdict(m) for m in heavy],
    }


def _panel(
    url: str, pid: int, mode: Mode, seeded: dict[str, Any], t: panel.Targets
) -> dict[str, Any]:
    """The panel's pages, with the server's peak RSS while they load."""
    account = next(a for a in seeded["accounts"] if a["cdn"] == t.cdn)
    with procs.RssSampler(pid) as rss:
        measured = panel.run(url, account, t, repeats=mode.panel_repeats, deep=mode.deep_links)
    return {**asdict(measured), "rss_mib": rss.peak_kib / 1024}


def _postgres(
    mode: Mode,
    db_path: Path,
    seeded: dict[str, Any],
    workdir: Path,
    t: panel.Targets,
    paths: Path,
) -> dict[str, Any]:
    """Copy the SQLite database into PostgreSQL and measure a server on it,
    then 1, 2 and 3 servers with the realistic workload (``paths``)."""
    accounts = {a["cdn"]: a for a in seeded["accounts"]}
    measured: dict[str, Any] = {"settings": procs.PG_SETTINGS, "count_samples": mode.pg_samples}
    with procs.postgres_cluster(workdir) as pg_database:
        print("== usher db copy into PostgreSQL", file=sys.stderr)
        measured["copy"] = _copy(f"sqlite:///{db_path}", pg_database)
        with procs.usher_server(pg_database, workdir, "usher-postgres") as (url, pid):
            # Before any check: the copy must still hold exactly the SQLite
            # file's attempts for the counts to be compared.
            print("== errorcount matrix on PostgreSQL", file=sys.stderr)
            with procs.RssSampler(pid) as rss_counts:
                matrix = counts.run_matrix_postgres(
                    url + "/api", str(db_path), pg_database, accounts,
                    samples=mode.pg_samples, drawn=mode.samples, max_id=mode.attempts,
                )  # fmt: skip
            # On the same attempts as SQLite's panel pages: before this
            # server's own checks add theirs.
            print("== panel pages on PostgreSQL", file=sys.stderr)
            measured["panel"] = _panel(url, pid, mode, seeded, t)
            _keep({**measured, **_counted(matrix)}, workdir, "postgres")
            print("== wrk on PostgreSQL: constant, check", file=sys.stderr)
            constant_url, check_url = _targets(url, seeded["accounts"][0])
            with procs.RssSampler(pid) as rss_check:
                runs = _rounds(mode, url, pid, {"constant": constant_url, "check": check_url})
            # The realistic workload's tickets came with the copy: the same
            # tickets as on SQLite, without making them again. Their use
            # counts came along (far below the limits); their sessions did
            # not (the copy leaves sessions behind), so viewer limits start
            # from zero open sessions.
            measured["nodes"] = _nodes(mode, pg_database, workdir, url, paths)
    measured["wrk"] = {k: [asdict(r) for r in v] for k, v in runs.items()}
    measured.update(_counted(matrix))
    measured["rss_check_mib"] = rss_check.peak_kib / 1024
    measured["rss_counts_mib"] = rss_counts.peak_kib / 1024
    return measured


def _machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return (
        f"{os.cpu_count()} x {cpu}, {mem_kib / 1048576:.0f} GiB RAM, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    )


def run(
    mode_name: str,
    out: Path,
    workdir: Path,
    *,
    reuse: bool = False,
    backends: tuple[str, ...] = BACKENDS,
) -> dict[str, Any]:
    mode = MODES[mode_name]
    # wrk and Usher need a descriptor per connection of the overload curve.
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    db_path = workdir / "usher.db"
    database = f"sqlite:///{db_path}"
    results: dict[str, Any] = {"mode": mode_name, "mode_sizes": asdict(mode),
                               "machine": _machine(), "started": time.time(),
                               "backends": list(backends)}  # fmt: skip
    load_avg_before = os.getloadavg()

    saved = workdir / "seed.json"
    if reuse and saved.exists():
        # The database of an earlier run with the same --workdir; its ingest
        # figure is the one measured when it was seeded.
        print(f"== reusing {db_path}", file=sys.stderr)
        seeded = json.loads(saved.read_text())
    else:
        print(f"== seeding {mode.tickets:,} tickets, {mode.attempts:,} attempts", file=sys.stderr)
        seeded = _seed(database, mode, workdir)
    results["seed"] = {k: v for k, v in seeded.items() if k != "accounts"}
    accounts = {a["cdn"]: a for a in seeded["accounts"]}

    with (
        procs.usher_server(database, workdir) as (url, pid),
        procs.nginx_secure_link(workdir) as nginx_url,
    ):
        # The values the panel pages name, from the seeded data alone (the
        # checks below add attempts of the benchmark's own tickets).
        panel_targets = panel.targets(str(db_path), mode.attempts)
        workload = _realistic(url, db_path, mode, seeded, workdir)
        results["realistic"] = {**asdict(workload), "paths": str(workload.paths),
                                "uses_limit": realistic.USES_LIMIT,
                                "max_viewers": realistic.MAX_VIEWERS}  # fmt: skip
        constant_url, check_url = _targets(url, seeded["accounts"][0])

        print("== wrk: constant, check, realistic checks, nginx secure_link", file=sys.stderr)
        with procs.RssSampler(pid) as rss_check:
            runs = _rounds(mode, url, pid, {"constant": constant_url, "check": check_url,
                                            "realistic": url, "nginx": nginx_url},
                           paths={"realistic": workload.paths})  # fmt: skip
            print("== overload curve", file=sys.stderr)
            curve = []
            for connections in mode.curve:
                before = procs.latency_buckets(url, "/usher/check")
                r = procs.wrk(check_url, connections=connections, seconds=mode.curve_s)
                after = procs.latency_buckets(url, "/usher/check")
                # The same load on the constant route: how much of the tail
                # is wrk, the kernel and the HTTP server rather than the check.
                c = procs.wrk(constant_url, connections=connections, seconds=mode.curve_s)
                curve.append({"connections": connections, **asdict(r),
                              "server_p99_ms": procs.bucket_quantile(before, after, 0.99),
                              "constant": asdict(c)})  # fmt: skip
        results["wrk"] = {k: [asdict(r) for r in v] for k, v in runs.items()}
        results["curve"] = curve
        results["rss_check_mib"] = rss_check.peak_kib / 1024

        print("== errorcount matrix (64 combinations; typical, then heavy values)", file=sys.stderr)
        with procs.RssSampler(pid) as rss_counts:
            matrix = counts.run_matrix(
                url + "/api", str(db_path), accounts,
                samples=mode.samples, plain_samples=mode.plain_samples,
                max_id=mode.attempts,
            )  # fmt: skip
        results.update(_counted(matrix))
        results["rss_counts_mib"] = rss_counts.peak_kib / 1024
        # Last, on the data PostgreSQL's copy will hold: the seed and, as
        # its newest attempts, hundreds of thousands of the checks above,
        # as an operator opens the panel during or after a busy event.
        print("== panel pages", file=sys.stderr)
        results["panel"] = _panel(url, pid, mode, seeded, panel_targets)
        _keep(results, workdir)
    if "postgres" in backends:
        # After the SQLite servers stopped: `usher db copy` wants a source
        # nobody writes to.
        results["postgres"] = _postgres(
            mode, db_path, seeded, workdir, panel_targets, workload.paths
        )
    results["load_avg_before"] = load_avg_before
    results["load_avg_after"] = os.getloadavg()
    results["finished"] = time.time()

    from bench import report

    table = report.table(results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "results.md").write_text(table + "\n")
    report.plots(results, out)
    print(table)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--mode", choices=sorted(MODES), default="quick")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--workdir", type=Path, help="keep the database here (default: a temp dir)")
    parser.add_argument(
        "--reuse", action="store_true", help="use the database already seeded in --workdir"
    )
    parser.add_argument(
        "--backends",
        type=_backends,
        default=BACKENDS,
        help="sqlite, or sqlite,postgres (default): also measure a PostgreSQL copy",
    )
    args = parser.parse_args(argv)
    procs.require("wrk")
    procs.require("nginx")
    if "postgres" in args.backends:
        # Before seeding, which takes minutes in the full mode.
        procs.require_postgres()
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        run(args.mode, args.out, args.workdir, reuse=args.reuse, backends=args.backends)
    else:
        with tempfile.TemporaryDirectory(prefix="usher-bench-") as tmp:
            # The PostgreSQL cluster inside runs as the postgres user (under
            # root), which must be able to pass through.
            Path(tmp).chmod(0o711)
            run(args.mode, args.out, Path(tmp), backends=args.backends)
    return 0


def _backends(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    if not set(names) <= set(BACKENDS) or "sqlite" not in names:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a choice; give sqlite or sqlite,postgres (the PostgreSQL part "
            "measures a copy of the database the SQLite part seeds)."
        )
    return names


if __name__ == "__main__":
    sys.exit(main())
