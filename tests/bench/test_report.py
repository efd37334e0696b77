"""The benchmark table's verdicts, on made-up wrk figures."""

from __future__ import annotations

import math
import os
from typing import Any

import pytest

from bench import procs, report
from usher.storage.sqlite.engine import WRITER_THREAD


def _run(rate: float, p99: float, non_2xx: int = 0, errors: int = 0) -> dict[str, Any]:
    return {"requests_per_s": rate, "p50_ms": p99 / 2, "p99_ms": p99,
            "non_2xx": non_2xx, "errors": errors}  # fmt: skip


@pytest.mark.parametrize(
    ("check", "met"),
    [
        (_run(9_000, 5), "yes"),
        (_run(4_000, 5), "**no**"),
        (_run(9_000, 25), "**no**"),
        # Shedding with fast 503s raises the rate and lowers the tail.
        (_run(9_000, 5, non_2xx=1), "**no**"),
        (_run(9_000, 5, errors=3), "**no**"),
    ],
)
def test_a_check_row_is_met_only_by_rate_tail_and_every_answer(
    check: dict[str, Any], met: str
) -> None:
    rows = report._Rows()
    report._check_row(rows, "checks", {"check": [check], "constant": [_run(10_000, 2)]})
    (line,) = rows
    assert line.rstrip(" |").endswith(met)
    if check["non_2xx"] or check["errors"]:
        assert "non-2xx" in line or "socket errors" in line


def test_a_check_row_says_which_answers_were_not_2xx() -> None:
    rows = report._Rows()
    check = {**_run(9_000, 5, non_2xx=3), "statuses": {"200": 97, "403": 1, "503": 2}}
    report._check_row(rows, "checks", {"check": [check], "constant": [_run(10_000, 2)]})
    (line,) = rows
    assert "9,000 (3 non-2xx: 403 x 1, 503 x 2)" in line


def test_the_answers_between_two_looks_at_the_metrics() -> None:
    before = {"200": 10, "503": 1}
    after = {"200": 25, "403": 2, "503": 1}
    assert procs.answers_between(before, after) == {"200": 15, "403": 2}


def test_a_thread_name_may_hold_parentheses_and_spaces() -> None:
    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt
    # majflt cmajflt utime stime …
    stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0"
    assert procs._thread_ticks(stat) == ("a (b) c", 300)


def test_cpu_per_request_by_thread_and_the_machine_busy_share() -> None:
    ticks_us = 1e6 / os.sysconf("SC_CLK_TCK")
    before = procs.CpuSample(
        1_000,
        {7: ("python", 100), 8: ("python", 40), 9: ("python", 5), 11: ("python", 20)},
        machine_busy=1_000, machine_total=4_000,
    )  # fmt: skip
    after = procs.CpuSample(
        # Thread 10 began between the samples: all of its time counts.
        # Thread 11 ended meanwhile after 30 more ticks: the process's
        # total still holds them.
        1_000 + 200 + 100 + 10 + 30,
        {7: ("python", 300), 8: ("python", 140), 9: ("python", 5), 10: ("python", 10)},
        machine_busy=1_900, machine_total=5_000,
    )  # fmt: skip
    names = {7: "MainThread", 8: WRITER_THREAD, 9: "usher-sqlite-read_0"}
    cpu = procs.cpu_between(7, before, after, requests=100, names=names)
    expected = {"loop_us": 2 * ticks_us, "writer_us": ticks_us, "other_us": 0.4 * ticks_us,
                "machine_busy": 0.9}  # fmt: skip
    assert cpu == pytest.approx(expected)
    # A run that got no answer has no CPU per answer (the table shows "—").
    idle = procs.cpu_between(7, before, after, requests=0, names=names)
    assert math.isnan(idle["loop_us"]) and idle["machine_busy"] == pytest.approx(0.9)
    assert report._fmt(idle["loop_us"], 0) == "—"


def test_a_cpu_sample_of_this_process() -> None:
    sample = procs.cpu_sample(os.getpid())
    assert os.getpid() in sample.threads
    assert all(ticks >= 0 for _, ticks in sample.threads.values())
    assert 0 <= sample.machine_busy <= sample.machine_total


def test_the_cpu_table_has_a_row_per_measured_target() -> None:
    cpu = {"loop_us": 150.4, "writer_us": 180.0, "other_us": 3.0, "machine_busy": 0.97}
    results = {"wrk": {"constant": [{**_run(30_000, 2), "cpu": {**cpu, "writer_us": 0.0}}],
                       "check": [{**_run(4_000, 50), "cpu": cpu}],
                       "nginx": [{**_run(50_000, 1), "cpu": {}}]}}  # fmt: skip
    table = report.cpu_table(results)
    assert "| check | 4,000 | 150 | 180 | 3 | 333 | 97% |" in table
    assert "| constant | 30,000 | 150 | 0 | 3 | 153 | 97% |" in table
    assert "nginx" not in table and "realistic" not in table
    with_postgres = {**results, "postgres": {"wrk": {"check": [{**_run(2_000, 90), "cpu": {
        **cpu, "writer_us": 0.0}}]}}}  # fmt: skip
    assert "| check on PostgreSQL | 2,000 | 150 | — | 3 | 153 | 97% |" in report.cpu_table(
        with_postgres
    )
    # Results from before the CPU was measured: no table at all.
    assert report.cpu_table({"wrk": {"check": [_run(4_000, 50)]}}) == ""


def test_the_cpu_window_waits_for_the_runs_queued_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    gauges = iter(["3.0", "1.0", "0.0"])
    asked: list[str] = []

    class Answer:
        def __init__(self, url: str) -> None:
            asked.append(url)
            gauge = next(gauges)
            self.text = (
                f"# TYPE usher_storage_pending_writes gauge\nusher_storage_pending_writes {gauge}\n"
            )

    # As procs sees them (the module's own imports of httpx and time).
    monkeypatch.setattr("bench.procs.httpx.get", lambda url, timeout: Answer(url))
    monkeypatch.setattr("bench.procs.time.sleep", lambda seconds: None)
    procs.wait_for_writes("http://usher.test")
    assert asked == ["http://usher.test/metrics"] * 3
