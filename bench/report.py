"""The results table and plots of one benchmark run."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from bench.counts import median, percentile
from bench.panel import TARGET_MS

_HEADER = (
    "| figure | value | baseline (same run) | ratio | median | p99 | target | met |\n"
    "|---|---|---|---|---|---|---|---|"
)


def _fmt(value: float, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:,.{digits}f}"


def _best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median round by throughput (the suite runs one or two rounds)."""
    ordered = sorted(runs, key=lambda r: r["requests_per_s"])
    return ordered[len(ordered) // 2]


class _Rows(list[str]):
    """The table's rows, one markdown line each."""

    def __call__(self, figure: str, value: str, base: str, ratio: str, med: str, p99: str,
                 target: str, met: bool | None) -> None:  # fmt: skip
        mark = "—" if met is None else ("yes" if met else "**no**")
        self.append(
            f"| {figure} | {value} | {base} | {ratio} | {med} | {p99} | {target} | {mark} |"
        )


def _refused(non_2xx: int, errors: int, statuses: dict[str, int] | None = None) -> str:
    """What a wrk value cell adds when not every request got a 2xx answer;
    with the server's answers by status, which ones they were."""
    others = {s: n for s, n in (statuses or {}).items() if not s.startswith("2")}
    which = ": " + ", ".join(f"{s} x {n:,}" for s, n in others.items()) if others else ""
    parts = [f"{non_2xx:,} non-2xx{which}"] if non_2xx else []
    parts += [f"{errors:,} socket errors"] if errors else []
    return f" ({', '.join(parts)})" if parts else ""


def _check_row(
    row: _Rows, figure: str, wrk: dict[str, list[dict[str, Any]]], name: str = "check"
) -> None:
    check, const = _best(wrk[name]), _best(wrk["constant"])
    ratio = check["requests_per_s"] / const["requests_per_s"]
    row(figure,
        _fmt(check["requests_per_s"], 0)
        + _refused(check["non_2xx"], check["errors"], check.get("statuses")),
        _fmt(const["requests_per_s"], 0), f"{ratio:.2f}",
        f"{_fmt(check['p50_ms'], 2)} ms", f"{_fmt(check['p99_ms'], 2)} ms",
        # Fast refusals (503 shedding, 403) would raise the rate and lower
        # the tail: a run with any is not a check rate.
        "ratio ≥ 0.5, p99 ≤ 20 ms, every answer 2xx",
        ratio >= 0.5 and check["p99_ms"] <= 20
        and not check["non_2xx"] and not check["errors"])  # fmt: skip


def _times(value: float, base: float) -> str:
    """How many times slower (or faster) ``value`` is than ``base``."""
    if value >= base:
        return f"{value / max(base, 1e-6):,.1f}x slower"
    return f"{base / max(value, 1e-6):,.1f}x faster"


def _versus_row(row: _Rows, figure: str, values: list[float], base: list[float], ratio: str,
                *, base_digits: int = 3) -> None:  # fmt: skip
    """A row of two timings side by side: medians, then p99s."""
    a, b = (median(values), median(base)), (percentile(values, 0.99), percentile(base, 0.99))
    row(figure, _fmt(a[0], 3), _fmt(a[1], base_digits), ratio,
        f"{_fmt(a[0], 3)} vs {_fmt(a[1], base_digits)}",
        f"{_fmt(b[0], 3)} vs {_fmt(b[1], base_digits)}", "—", None)  # fmt: skip


def _e2e(combo: dict[str, Any]) -> list[float]:
    return list(combo["e2e_ms"] + combo["e2e_paged_ms"])


def _heavy_rows(row: _Rows, r: dict[str, Any], backend: str) -> None:
    """A row per heavy hitter kind: its matrix's p99 against the typical one's."""
    typical = [v for c in r["counts"] for v in _e2e(c)]
    for m in r.get("counts_heavy", []):
        times = [v for c in m["combos"] for v in _e2e(c)]
        worst = max(m["combos"], key=lambda c: percentile(_e2e(c), 0.99))
        p99, base = percentile(times, 0.99), percentile(typical, 0.99)
        row(f"`sevu.errorcount`, all 64 combinations, {m['kind']} `{m['value']}` "
            f"({m['attempts']:,} attempts of cdn {m['cdn']}){backend} (ms)",
            _fmt(p99, 2), f"typical values p99 {_fmt(base, 2)}", _times(p99, base),
            _fmt(median(times), 2),
            f"{_fmt(p99, 2)} (worst: {worst['name']} {_fmt(percentile(_e2e(worst), 0.99), 1)})",
            "p99 ≤ 10 ms", p99 <= 10)  # fmt: skip


def _page_met(page: dict[str, Any]) -> bool:
    ok = bool(page["statuses"]) and all(status == 200 for status in page["statuses"])
    return ok and percentile(page["ms"], 0.99) <= TARGET_MS


def _panel_rows(row: _Rows, measured: dict[str, Any], backend: str) -> None:
    """Two rows of the main table: the slowest page, and the server's RSS."""
    pages = measured["pages"]
    met = sum(_page_met(page) for page in pages)
    worst = max(pages, key=lambda page: (not _page_met(page), percentile(page["ms"], 0.99)))
    times = [v for page in pages for v in page["ms"]]
    row(f"control panel{backend}: {len(pages)} pages and fragments, slowest "
        f"({worst['name']}) (ms)",
        _fmt(percentile(worst["ms"], 0.99), 0), f"{met} of {len(pages)} pages met", "—",
        f"all fetches {_fmt(median(times), 1)}", f"all fetches {_fmt(percentile(times, 0.99), 0)}",
        f"every page p99 ≤ {TARGET_MS:g} ms, HTTP 200", met == len(pages))  # fmt: skip
    row(f"server RSS{backend}, peak during the panel pages (MiB)", _fmt(measured["rss_mib"], 0),
        "—", "—", "—", "—", "≤ 200 MiB", measured["rss_mib"] <= 200)  # fmt: skip


def _page_cells(page: dict[str, Any] | None) -> list[str]:
    if page is None:
        return ["—", "—"]
    bad = sorted({status for status in page["statuses"] if status != 200})
    failed = ", ".join("timeout" if status == 0 else f"HTTP {status}" for status in bad)
    p99 = _fmt(percentile(page["ms"], 0.99), 0)
    return [_fmt(median(page["ms"]), 1), f"**{failed}** ({p99})" if failed else p99]


def panel_table(r: dict[str, Any]) -> str:
    """One row per page: median and p99 on each backend against the target."""
    sqlite = r["panel"]
    pg = r.get("postgres", {}).get("panel")
    pg_pages = {page["name"]: page for page in pg["pages"]} if pg else {}
    lines = [
        "| page | SQLite median | SQLite p99 | PostgreSQL median | PostgreSQL p99 | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    notes: list[str] = []
    for page in sqlite["pages"]:
        other = pg_pages.get(page["name"])
        met = _page_met(page) and (other is None or _page_met(other))
        cells = [page["name"], *_page_cells(page), *_page_cells(other)]
        cells += [f"p99 ≤ {TARGET_MS:g} ms", "yes" if met else "**no**"]
        lines.append("| " + " | ".join(cells) + " |")
        for name, measured in (("SQLite", page), ("PostgreSQL", other)):
            if measured is not None and measured["note"]:
                notes.append(f"{page['name']} on {name}: {measured['note']}.")
    for name, measured in (("SQLite", sqlite), ("PostgreSQL", pg)):
        if measured is not None and measured["deep_walk_ms"]:
            walk = measured["deep_walk_ms"]
            notes.append(
                f"Deep page on {name}: {measured['deep_links']} Older links followed, "
                f"each page on the way median {_fmt(median(walk), 1)} ms, "
                f"p99 {_fmt(percentile(walk, 0.99), 0)} ms"
                + (f" ({measured['deep_note']})" if measured["deep_note"] else "")
                + "."
            )
    head = (
        f"Control panel of cdn {sqlite['cdn']} (typical values {_values(sqlite['typical'])}; "
        f"heavy values {_values(sqlite['heavy'])}), each page fetched "
        f"{r['mode_sizes']['panel_repeats']} time(s), ms:\n\n"
    )
    return head + "\n".join(lines) + ("\n\n" + "\n".join(notes) if notes else "")


def _values(values: dict[str, str]) -> str:
    return ", ".join(f"{name} `{value}`" for name, value in values.items())


def table(r: dict[str, Any]) -> str:
    row = _Rows()
    _check_row(row, "`/usher/check` req/s (c=64) vs constant 200 in the same process", r["wrk"])
    if "realistic" in r["wrk"]:
        _check_row(row, f"realistic checks ({r['realistic']['tickets']:,} distinct tickets) vs "
                   "the constant route (c=64, req/s)", r["wrk"], "realistic")  # fmt: skip
    check, const, nginx = (_best(r["wrk"][k]) for k in ("check", "constant", "nginx"))
    row(
        "constant 200 (`/bench/constant`, no database)",
        _fmt(const["requests_per_s"], 0),
        "—",
        "—",
        f"{_fmt(const['p50_ms'], 2)} ms",
        f"{_fmt(const['p99_ms'], 2)} ms",
        "—",
        None,
    )
    row("`/usher/check` req/s vs nginx `secure_link` (C, stateless, 1 worker)",
        _fmt(check["requests_per_s"], 0), _fmt(nginx["requests_per_s"], 0),
        f"{check['requests_per_s'] / nginx['requests_per_s']:.2f}",
        f"{_fmt(nginx['p50_ms'], 2)} ms", f"{_fmt(nginx['p99_ms'], 2)} ms",
        "reported", None)  # fmt: skip

    combos = r["counts"]
    e2e = [v for c in combos for v in c["e2e_ms"]]
    paged = [v for c in combos for v in c["e2e_paged_ms"]]
    query = [v for c in combos for v in c["query_ms"]]
    plain = [v for c in combos for v in c["plain_ms"]]
    worst = max(combos, key=lambda c: percentile(_e2e(c), 0.99))
    both = e2e + paged
    row("`sevu.errorcount` end to end, all 64 combinations (ms)",
        _fmt(percentile(both, 0.99), 2), f"plain COUNT(*) p99 {_fmt(percentile(plain, 0.99), 1)}",
        f"{percentile(plain, 0.99) / percentile(both, 0.99):,.0f}x faster",
        _fmt(median(both), 2), _fmt(percentile(both, 0.99), 2), "p99 ≤ 10 ms",
        percentile(both, 0.99) <= 10)  # fmt: skip
    row("… without `limit`/`seek` / with them (ms)",
        f"{_fmt(percentile(e2e, 0.99), 2)} / {_fmt(percentile(paged, 0.99), 2)}", "—", "—",
        f"{_fmt(median(e2e), 2)} / {_fmt(median(paged), 2)}",
        f"{_fmt(percentile(e2e, 0.99), 2)} / {_fmt(percentile(paged, 0.99), 2)}", "p99 ≤ 10 ms",
        max(percentile(e2e, 0.99), percentile(paged, 0.99)) <= 10)  # fmt: skip
    row(f"… worst combination ({worst['name']}) (ms)",
        _fmt(percentile(worst["e2e_ms"] + worst["e2e_paged_ms"], 0.99), 2), "—", "—",
        _fmt(median(worst["e2e_ms"] + worst["e2e_paged_ms"]), 2),
        _fmt(percentile(worst["e2e_ms"] + worst["e2e_paged_ms"], 0.99), 2), "—", None)  # fmt: skip
    _versus_row(row, "count query alone vs plain indexed COUNT(*) (ms)", query, plain,
                f"{median(plain) / max(median(query), 1e-6):,.0f}x faster (median)",
                base_digits=1)  # fmt: skip
    _heavy_rows(row, r, "")
    _panel_rows(row, r["panel"], "")

    seed = r["seed"]
    row("ingest: `usher seed-data`, indexes and rollups included (attempts/s)",
        _fmt(seed["attempts_per_second"], 0),
        f"insert phase alone {_fmt(seed['attempt_phase_per_second'], 0)}/s", "—",
        f"{_fmt(seed['seconds'], 1)} s total", "—", "≥ 100,000/s",
        seed["attempts_per_second"] >= 100_000)  # fmt: skip

    row("server RSS, peak during check load / during count matrix (MiB)",
        f"{_fmt(r['rss_check_mib'], 0)} / {_fmt(r['rss_counts_mib'], 0)}", "—", "—", "—", "—",
        "≤ 200 MiB", max(r["rss_check_mib"], r["rss_counts_mib"]) <= 200)  # fmt: skip

    top = r["curve"][-1]
    shed = top["non_2xx"] / max(top["requests"], 1)
    allowed = (top["requests"] - top["non_2xx"]) / max(r["mode_sizes"]["curve_s"], 1e-9)
    server_p99 = top.get("server_p99_ms", float("nan"))
    constant = top.get("constant")
    base = "—" if constant is None else (
        f"constant 200 at c={top['connections']}: {_fmt(constant['requests_per_s'], 0)} req/s, "
        f"p99 {_fmt(constant['p99_ms'], 1)} ms"
    )  # fmt: skip
    row(f"overload: check at c={top['connections']} (ms)",
        f"{_fmt(top['requests_per_s'], 0)} req/s, {shed:.0%} shed with 503, "
        f"{_fmt(allowed, 0)} answered 2xx/s; inside the server p99 ≤ {_fmt(server_p99, 0)} ms",
        base, "—", f"{_fmt(top['p50_ms'], 1)} ms", f"{_fmt(top['p99_ms'], 1)} ms",
        "bounded latency inside the server (p99 ≤ 1 s); 503 once a write waited 0.5 s",
        server_p99 <= 1000)  # fmt: skip
    if "postgres" in r:
        _postgres_rows(row, r["postgres"], both, query)
        _node_rows(row, r["postgres"].get("nodes", []), r.get("realistic", {}))
        _heavy_rows(row, r["postgres"], ", PostgreSQL")
        _panel_rows(row, r["postgres"]["panel"], " on PostgreSQL")

    load = r["load_avg_before"], r["load_avg_after"]
    sizes = r["mode_sizes"]
    head = (
        f"Mode `{r['mode']}`: {sizes['tickets']:,} tickets, {sizes['attempts']:,} attempts; "
        f"wrk -t2 -c64 for {sizes['wrk_s']:g} s, {sizes['rounds']} round(s).\n"
        f"Machine: {r['machine']}. Load average before/after: "
        f"{load[0][0]:.2f} / {load[1][0]:.2f}.\n"
    )
    if "realistic" in r:
        made = r["realistic"]
        mix = made["mix"]
        head += (
            f"Realistic checks: {made['tickets']:,} tickets made with `sevu.request` in "
            f"{made['seconds']:.1f} s ({mix['unlimited']:,} unlimited, {mix['uses']:,} with "
            f"uses {made['uses_limit']:,}, {mix['max_viewers']:,} with max_viewers "
            f"{made['max_viewers']:,}), wrk cycling through their check URLs, one viewer "
            "address each; every allowed start opens a session.\n"
        )
    if "postgres" in r:
        pg = r["postgres"]
        head += (
            f"PostgreSQL: a copy made with `usher db copy` into a throw-away local cluster "
            f"(shared_buffers {pg['settings']['shared_buffers']}, fsync and synchronous_commit "
            f"on), `VACUUM (ANALYZE)` after it; errorcount there with {pg['count_samples']} "
            f"call(s) per combination (SQLite: {sizes['samples']}), each asked twice and the "
            "second timed (the first asks are reported apart), a plain indexed count(*) "
            "with no rollup.\n"
        )
    else:
        head += "PostgreSQL: not measured (`--backends sqlite`).\n"
    cpu = cpu_table(r)
    return (
        head + "\n" + _HEADER + "\n" + "\n".join(row) + "\n\n" + (cpu + "\n\n" if cpu else "")
        + panel_table(r)
    )  # fmt: skip


_CPU_PARTS = (
    ("loop_us", "event loop"),
    ("writer_us", "SQLite writer"),
    ("other_us", "other threads"),
)


def cpu_table(r: dict[str, Any]) -> str:
    """Usher's CPU time per answer by thread, for each wrk target of the
    main table, and how busy the machine was: where a check's time goes."""
    lines = [
        "Where a request's time goes: Usher's CPU time per answer (µs) by thread, "
        "in the same runs as the table above; machine busy is the share of all "
        "cores in use meanwhile (wrk included; on PostgreSQL the database's own "
        "processes too, which Usher's columns leave out).",
        "",
        "| requests | req/s | " + " | ".join(label for _, label in _CPU_PARTS)
        + " | Usher in all | machine busy |",
        "|---|---|" + "---|" * (len(_CPU_PARTS) + 2),
    ]  # fmt: skip
    measured = [("", r["wrk"])]
    if "postgres" in r:
        measured.append((" on PostgreSQL", r["postgres"]["wrk"]))
    rows = []
    for backend, wrk in measured:
        for name in ("constant", "check", "realistic"):
            if name not in wrk:
                continue
            run = _best(wrk[name])
            cpu = run.get("cpu")
            if not cpu:
                continue
            parts = [_fmt(cpu[key], 0) for key, _ in _CPU_PARTS]
            if backend:
                parts[1] = "—"  # PostgreSQL has no writer thread
            total = sum(cpu[key] for key, _ in _CPU_PARTS)
            rows.append(
                f"| {name}{backend} | {_fmt(run['requests_per_s'], 0)} | " + " | ".join(parts)
                + f" | {_fmt(total, 0)} | {cpu['machine_busy']:.0%} |"
            )  # fmt: skip
    # Results of a run from before the CPU was measured have none.
    return "\n".join(lines + rows) if rows else ""


def _postgres_rows(
    row: _Rows, pg: dict[str, Any], sqlite_e2e: list[float], sqlite_query: list[float]
) -> None:
    """The rows of the PostgreSQL part; its baselines are SQLite's figures."""
    _check_row(row, "`/usher/check` req/s (c=64) vs constant, PostgreSQL", pg["wrk"])
    combos = pg["counts"]
    e2e = [v for c in combos for v in _e2e(c)]
    query = [v for c in combos for v in c["query_ms"]]
    p99, sqlite_p99 = percentile(e2e, 0.99), percentile(sqlite_e2e, 0.99)
    row(f"`sevu.errorcount` end to end, all 64 combinations, PostgreSQL, "
        f"{pg['count_samples']} call(s) each, each asked twice, the second timed (ms)",
        _fmt(p99, 2), f"SQLite p99 {_fmt(sqlite_p99, 2)}", _times(p99, sqlite_p99),
        _fmt(median(e2e), 2), _fmt(p99, 2), "p99 ≤ 10 ms", p99 <= 10)  # fmt: skip
    matrices = [("typical", combos)] + [
        (m["kind"], m["combos"]) for m in pg.get("counts_heavy", [])
    ]
    firsts = [[v for c in m for v in c.get("first_ms", [])] for _, m in matrices]
    if all(firsts):
        kinds = " / ".join(kind for kind, _ in matrices)
        row(f"… the first asks: {kinds} values (ms)",
            " / ".join(_fmt(percentile(f, 0.99), 2) for f in firsts), "—", "—",
            " / ".join(_fmt(median(f), 2) for f in firsts),
            " / ".join(_fmt(percentile(f, 0.99), 2) for f in firsts), "reported", None)  # fmt: skip
    worst = max(combos, key=lambda c: percentile(_e2e(c), 0.99))
    row(f"… worst combination on PostgreSQL ({worst['name']}) (ms)",
        _fmt(percentile(_e2e(worst), 0.99), 2),
        f"its count(*) alone p99 {_fmt(percentile(worst['query_ms'], 0.99), 2)}", "—",
        _fmt(median(_e2e(worst)), 2), _fmt(percentile(_e2e(worst), 0.99), 2), "—",
        None)  # fmt: skip
    _versus_row(
        row,
        "PostgreSQL count(*) alone vs SQLite's count query (ms)",
        query,
        sqlite_query,
        _times(median(query), median(sqlite_query)) + " (median)",
    )
    copy = pg["copy"]
    row("`usher db copy` SQLite → PostgreSQL, whole command (rows/s)",
        _fmt(copy["rows_per_s"], 0), "—", "—",
        f"{_fmt(copy['seconds'], 1)} s for {sum(copy['rows'].values()):,} rows; "
        f"VACUUM ANALYZE {_fmt(copy['vacuum_analyze_s'], 1)} s", "—", "reported",
        None)  # fmt: skip
    row("server RSS on PostgreSQL, peak during check load / during count matrix (MiB)",
        f"{_fmt(pg['rss_check_mib'], 0)} / {_fmt(pg['rss_counts_mib'], 0)}", "—", "—", "—", "—",
        "≤ 200 MiB", max(pg["rss_check_mib"], pg["rss_counts_mib"]) <= 200)  # fmt: skip


def _node_rows(row: _Rows, nodes: list[dict[str, Any]], workload: dict[str, Any]) -> None:
    """A row per node count: the realistic workload against every node at
    once (the median round by total rate); the baseline is one node's total."""
    one: float | None = None
    for measured in nodes:
        runs = sorted(measured["rounds"], key=lambda r: sum(n["requests_per_s"] for n in r))
        best = runs[len(runs) // 2]
        total = sum(n["requests_per_s"] for n in best)
        one = total if one is None else one
        refused = _refused(sum(n["non_2xx"] for n in best), sum(n["errors"] for n in best))
        count = measured["nodes"]
        row(f"realistic checks ({workload.get('tickets', 0):,} distinct tickets), PostgreSQL, "
            f"{count} node(s) on one database, c={sum(measured['connections'])} split "
            "(checks/s in total)",
            _fmt(total, 0) + refused,
            f"1 node {_fmt(one, 0)}", f"{total / one:.2f}",
            "per node " + " / ".join(_fmt(n["requests_per_s"], 0) for n in best),
            f"{_fmt(max(n['p99_ms'] for n in best), 2)} ms (worst node)", "—", None)  # fmt: skip


def plots(r: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = r["curve"]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    conns = [p["connections"] for p in curve]
    ax.plot(conns, [p["p50_ms"] for p in curve], "o-", label="p50 latency")
    ax.plot(conns, [p["p99_ms"] for p in curve], "s-", label="p99 latency")
    if all("constant" in p for p in curve):
        ax.plot(conns, [p["constant"]["p99_ms"] for p in curve], "d:", color="green",
                label="p99, constant 200 (same load)")  # fmt: skip
        ax.plot(conns, [p["server_p99_ms"] for p in curve], "v-.", color="purple",
                label="p99 inside the server (histogram bucket)")  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("offered load: concurrent wrk connections (closed loop)")
    ax.set_ylabel("latency (ms)")
    ax2 = ax.twinx()
    ax2.plot(conns, [p["requests_per_s"] for p in curve], "^--", color="gray", label="req/s")
    ax2.plot(conns, [p["non_2xx"] / max(p["requests"], 1) * max(p["requests_per_s"] for p in curve)
                     for p in curve], "x:", color="red", label="503 share (scaled)")  # fmt: skip
    ax2.set_ylabel("requests/s")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="upper left", fontsize=8)
    ax.set_title("/usher/check latency vs offered load")
    fig.tight_layout()
    fig.savefig(out / "check_latency_vs_load.png", dpi=110)
    plt.close(fig)

    combos = r["counts"]
    fig, ax = plt.subplots(figsize=(12, 5))
    names = [c["name"] for c in combos]
    xs = range(len(combos))
    ax.plot(xs, [percentile(c["e2e_ms"] + c["e2e_paged_ms"], 0.99) for c in combos], "o",
            ms=4, label="errorcount end to end, p99")  # fmt: skip
    ax.plot(xs, [median(c["query_ms"]) for c in combos], ".", ms=5, label="count query, median")
    ax.plot(xs, [statistics.median(c["plain_ms"]) if c["plain_ms"] else float("nan")
                 for c in combos], "x", ms=5, label="plain COUNT(*), median")  # fmt: skip
    for m, marker in zip(r.get("counts_heavy", []), "^v<>", strict=False):
        ax.plot(xs, [percentile(_e2e(c), 0.99) for c in m["combos"]], marker, ms=4, mfc="none",
                label=f"errorcount end to end, p99, {m['kind']}")  # fmt: skip
    if "postgres" in r:
        pg = r["postgres"]["counts"]
        ax.plot(xs, [percentile(_e2e(c), 0.99) for c in pg], "D", ms=4, mfc="none",
                label="PostgreSQL: errorcount end to end, p99")  # fmt: skip
        ax.plot(xs, [median(c["query_ms"]) for c in pg], "+", ms=6,
                label="PostgreSQL: count(*), median")  # fmt: skip
    ax.axhline(10, color="red", lw=0.8, ls="--", label="10 ms target")
    ax.set_yscale("log")
    ax.set_ylabel("ms")
    ax.set_xticks(list(xs))
    ax.set_xticklabels(names, rotation=90, fontsize=6)
    # Outside the axes: inside, it hid the points of the first combinations.
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.set_title("sevu.errorcount latency per filter combination")
    fig.tight_layout()
    fig.savefig(out / "errorcount_per_combination.png", dpi=110)
    plt.close(fig)
