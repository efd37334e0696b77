"""The benchmark suite runs end to end (tiny sizes; it measures nothing here).

Speed is never asserted in the test suite: this machine is shared and its
timings drift. ``make bench`` measures; this only proves that every step of
it (seeding, servers, wrk, nginx, the count matrix, the table, the plots)
still works.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.mark.skipif(
    shutil.which("wrk") is None or not Path("/usr/sbin/nginx").exists(),
    reason="the benchmark needs wrk and nginx: scripts/install-system-deps",
)
def test_tiny_benchmark_run_prints_the_table_and_writes_the_plots(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the plots need the bench extra")
    result = subprocess.run(
        [sys.executable, "-m", "bench.run", "--mode", "tiny", "--out", str(tmp_path / "out"),
         "--workdir", str(tmp_path / "work")],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    table = result.stdout
    for figure in ("/usher/check", "secure_link", "sevu.errorcount", "ingest", "RSS", "overload"):
        assert figure in table
    assert table.count("\n|") >= 10
    out = tmp_path / "out"
    for name in ("results.json", "results.md", "check_latency_vs_load.png",
                 "errorcount_per_combination.png"):  # fmt: skip
        assert (out / name).stat().st_size > 0
