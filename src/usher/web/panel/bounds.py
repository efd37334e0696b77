"""What the panel says when a view's database reads were stopped.

Every panel request runs inside :func:`usher.storage.base.bounded_reads`
(``USHER_PANEL_QUERY_TIMEOUT``, set up by :func:`usher.web.panel.routes.guarded`),
so that no view can hold the database for long. When the bound is hit, the
view answers 503 with one of these sentences, and the stop is counted in
``/metrics``.

Counts are bounded too: a panel count reads at most :data:`COUNT_CAP` + 1
matching attempts, or the rollups and the count filters ``sevu.errorcount``
made (see :func:`usher.storage.counting.count_attempts_upto`); it never
makes a count filter itself.
"""

from __future__ import annotations

from typing import Final

from usher.storage.base import ReadBoundExceeded
from usher.web.state import AppState

#: Panel counts stop at this many and say "more than".
COUNT_CAP: Final = 10_000

#: What to do next, per kind of view.
NARROW_FILTERS: Final = "narrow the filters (a key, an address, a shorter time range)"
SHORTER_RANGE: Final = "choose a shorter time range"
TRY_AGAIN: Final = "try again in a moment"


def stopped(state: AppState, exc: ReadBoundExceeded, advice: str) -> str:
    """Count the stop, and the sentence that tells the reader what happened."""
    state.metrics.panel_reads_stopped.inc()
    return (
        f"This view needed more than {exc.seconds:g} s of database work and was stopped "
        f"so that playback checks are not slowed; {advice}."
    )
