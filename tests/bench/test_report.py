"""The benchmark table's verdicts, on made-up wrk figures."""

from __future__ import annotations

from typing import Any

import pytest

from bench import procs, report


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
