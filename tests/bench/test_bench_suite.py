"""The benchmark suite runs end to end (tiny sizes; it measures nothing here).

Speed is never asserted in the test suite: this machine is shared and its
timings drift. ``make bench`` measures; this only proves that every step of
it (seeding, servers, wrk, nginx, the realistic workload's tickets and
URLs, the count matrix for typical and heavy values, the panel's pages, the
copy into PostgreSQL and the same measurements there, 1, 2 and 3 nodes on
it, the table, the plots) still works. Without
PostgreSQL's server programs the run is SQLite only.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from bench.procs import require_postgres
from bench.run import node_visits

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("timing")]


@pytest.mark.skipif(
    shutil.which("wrk") is None or not Path("/usr/sbin/nginx").exists(),
    reason="the benchmark needs wrk and nginx: scripts/install-system-deps",
)
def test_tiny_benchmark_run_prints_the_table_and_writes_the_plots(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the plots need the bench extra")
    try:
        require_postgres()
        postgres = True
    except SystemExit:
        postgres = False
    result = subprocess.run(
        [sys.executable, "-m", "bench.run", "--mode", "tiny", "--out", str(tmp_path / "out"),
         "--workdir", str(tmp_path / "work"),
         "--backends", "sqlite,postgres" if postgres else "sqlite"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    table = result.stdout
    figures = (
        "/usher/check", "secure_link", "sevu.errorcount", "ingest", "RSS", "overload",
        "busiest address", "busiest key", "control panel", "during the panel pages",
    )  # fmt: skip
    for figure in figures:
        assert figure in table
    assert table.count("\n|") >= 10
    # Every panel page answered 200 on every fetch (tiny data is fast, so
    # each was fetched the mode's number of times), the deep page included.
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    panels = [results["panel"]] + ([results["postgres"]["panel"]] if postgres else [])
    for panel in panels:
        assert len(panel["pages"]) > 30
        for page in panel["pages"]:
            assert page["statuses"] == [200, 200], page
        assert panel["deep_links"] > 10
    assert "| attempts: ip (heavy) |" in table and "Older links deep |" in table
    # The realistic workload: its tickets made through the API, every one
    # played, a row with a number against its target; the one-ticket row stays.
    assert results["realistic"]["tickets"] == 50
    assert sum(results["realistic"]["mix"].values()) == 50
    assert all(results["realistic"]["mix"].values())
    assert results["wrk"]["realistic"][0]["requests"] > 0
    # Usher's own count of the realistic run's answers, by status, matches wrk's.
    answered = results["wrk"]["realistic"][0]["statuses"]
    assert sum(answered.values()) >= results["wrk"]["realistic"][0]["requests"]
    # Where a check's time goes: Usher's CPU per answer by thread, every
    # Usher target measured (the event loop works for every answer; the
    # SQLite writer for the checks), nginx not.
    for name in ("constant", "check", "realistic"):
        cpu = results["wrk"][name][0]["cpu"]
        assert cpu["loop_us"] > 0 and 0 < cpu["machine_busy"] <= 1, (name, cpu)
    assert results["wrk"]["realistic"][0]["cpu"]["writer_us"] > 0
    assert results["wrk"]["nginx"][0]["cpu"] == {}
    assert _row(table, r"realistic \| [\d,]+ \| [\d,]+ \| [\d,]+ \|")
    assert _row(table, r"realistic checks \(50 distinct tickets\) vs the constant route")
    assert "ratio ≥ 0.5, p99 ≤ 20 ms" in _row(table, "realistic checks")
    assert _row(table, r"`/usher/check` req/s \(c=64\) vs constant 200")
    assert "| ≥ 100,000/s |" in _row(table, "ingest: `usher seed-data`")
    if postgres:
        for figure in ("vs constant, PostgreSQL", "64 combinations, PostgreSQL",
                       "worst combination on PostgreSQL", "`usher db copy`",
                       "server RSS on PostgreSQL", "control panel on PostgreSQL"):  # fmt: skip
            assert figure in table
        assert table.count("\n|") >= 16
        nodes = results["postgres"]["nodes"]
        assert [n["nodes"] for n in nodes] == [1, 2, 3]
        for measured in nodes:
            assert sum(measured["connections"]) == 64
            assert measured["visits"] == [measured["nodes"]]  # tiny: one round, rising
            for round_ in measured["rounds"]:
                assert len(round_) == measured["nodes"]
                assert all(node["requests"] > 0 for node in round_)
            row = _row(table, rf"PostgreSQL, {measured['nodes']} node\(s\) on one database")
            assert "per node " in row and "(worst node)" in row
        assert not list((tmp_path / "work").glob("postgres*")), "the cluster was left behind"
    out = tmp_path / "out"
    for name in ("results.json", "results.md", "check_latency_vs_load.png",
                 "errorcount_per_combination.png"):  # fmt: skip
        assert (out / name).stat().st_size > 0


def _row(table: str, figure: str) -> str:
    """The table's row whose figure matches ``figure``, with a number for value."""
    match = re.search(rf"^\| [^|]*{figure}[^|]*\| [\d,.]+[^|]*\|.*$", table, re.MULTILINE)
    assert match, f"no row {figure!r} with a number in:\n{table}"
    return match.group(0)


def test_node_counts_are_measured_rising_then_falling() -> None:
    # A database warming up raises each round over the one before: every
    # count gets an early round and a late one.
    assert node_visits(1) == [1, 2, 3]
    assert node_visits(2) == [1, 2, 3, 3, 2, 1]
    assert node_visits(3) == [1, 2, 3, 3, 2, 1, 1, 2, 3]
