"""The command line's progress bars: drawn from (phase, done, total) reports."""

from __future__ import annotations

import io

from usher.progress import Bars


def test_each_phase_gets_its_own_bar_in_a_log() -> None:
    out = io.StringIO()  # not a terminal: a line per tenth, then the last one
    with Bars(out) as bars:
        for done in range(0, 101, 5):
            bars("attempts", done, 100)
        bars("indexes", 0, 3)
        bars("indexes", 3, 3)
    lines = out.getvalue().splitlines()
    attempts = [line for line in lines if line.startswith("attempts")]
    indexes = [line for line in lines if line.startswith("indexes")]
    assert len(attempts) == 10 and "100/100" in attempts[-1]
    assert len(indexes) == 1 and "3/3" in indexes[0]


def test_a_phase_that_did_nothing_still_ends_with_one_line() -> None:
    out = io.StringIO()
    with Bars(out) as bars:
        bars("tickets", 0, 0)
    assert out.getvalue().count("\n") == 1
