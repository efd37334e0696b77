"""The overview: who is watching now, and attempt charts for a time range,
refreshed live.

The page and its refresh share one renderer: ``/panel/`` embeds the charts
fragment and the script re-fetches ``/panel/charts`` every few seconds and
swaps it in, so the charts are plain server-rendered HTML and SVG that work
(without the refresh) even with scripts off.

What keeps it cheap at tens of millions of attempts:

* The timeline starts at a whole bucket, so every bar is a whole bucket
  (what per-minute rollups can answer), and the page names the interval.
* The three top lists are ranked in Python from ONE bounded read, the
  latest :data:`DENIALS_WINDOW` denials of the range, not grouped over the
  whole range (30 days: millions of rows).
* "Watching now" is one count of the open sessions (an index of open rows
  only), read with the charts.
* Computed charts are kept per (account, range) for :data:`CHARTS_TTL`
  seconds and shared by every tab and poll, and a top-list window that read
  many rows is kept for :data:`TOPS_TTL` seconds.
* A recomputation reads only the newest minutes of the timeline: the bars'
  sums of older minutes are kept (:mod:`usher.web.panel.live`).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from markupsafe import escape
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from usher.storage.base import ReadBoundExceeded
from usher.tickets.expiry import format_utc
from usher.web.panel import forms
from usher.web.panel.auth import Viewer, signed_in
from usher.web.panel.bounds import SHORTER_RANGE, stopped
from usher.web.panel.cache import RecentAnswers
from usher.web.panel.live import LiveTimelines
from usher.web.panel.render import page, render_text

#: name -> (label, seconds)
RANGES: Final = {
    "1h": ("Last hour", 3600),
    "6h": ("Last 6 hours", 6 * 3600),
    "24h": ("Last 24 hours", 86400),
    "7d": ("Last 7 days", 7 * 86400),
    "30d": ("Last 30 days", 30 * 86400),
}
DEFAULT_RANGE: Final = "24h"
#: Bucket sizes a person reads easily; the smallest that keeps the chart
#: within MAX_BARS bars wins.
NICE_BUCKETS: Final = (60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
MAX_BARS: Final = 120
TOP: Final = 10
#: Milliseconds between live refreshes of the charts.
REFRESH_MS: Final = 5000
#: The top lists rank the latest this many denials of the range.
#: 5,000 keeps the first read of a 30-day overview near 50 ms at 10 M
#: attempts (20,000 took 170 ms, one table row fetched per denial).
DENIALS_WINDOW: Final = 5_000
#: Seconds computed charts are reused, by every tab (below the refresh
#: interval, so one tab sees fresh numbers at every refresh).
CHARTS_TTL: Final = 4.0
#: Seconds a top-list window that read more than LIVE_TOP_ROWS denials is
#: reused; a smaller one is cheap, and follows the charts' refresh.
TOPS_TTL: Final = 60.0
LIVE_TOP_ROWS: Final = 2_000
#: (account, range) pairs kept at once, least recently used dropped first.
CACHED: Final = 64


def bucket_for(span: int) -> int:
    for bucket in NICE_BUCKETS:
        if math.ceil(span / bucket) <= MAX_BARS:
            return bucket
    return math.ceil(span / MAX_BARS)


def nice_max(value: int) -> int:
    """The smallest "round" axis maximum ≥ ``value`` that splits into four
    whole-number steps (4, 8, 20, 40, 100, 200, …)."""
    step = max(1, math.ceil(value / 4))
    magnitude = 10 ** max(0, len(str(step)) - 1)
    for factor in (1, 2, 2.5, 5, 10):
        candidate = factor * magnitude
        if candidate >= step and candidate == int(candidate):
            return int(candidate) * 4
    return step * 4  # not reached: factor 10 always fits


def _duration(seconds: int) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} seconds"


def _time_label(ts: int, bucket: int, span: int) -> str:
    text = format_utc(ts)  # YYYY-MM-DD HH:MM:SS
    if bucket >= 86400:
        return text[5:10]
    return text[5:16] if span > 86400 else text[11:16]


@dataclass(frozen=True, slots=True)
class Bar:
    start: int
    allowed: int
    denied: int
    title: str
    # Geometry in the SVG's own units: each bar is 10 wide, the chart 100 high.
    x: float
    allowed_y: float
    allowed_h: float
    denied_y: float
    denied_h: float


@dataclass(frozen=True, slots=True)
class Ranked:
    value: str
    count: int
    share: float  # of the largest count, 0..100, for the bar's width


@dataclass(frozen=True, slots=True)
class TopLists:
    """The three top lists, ranked from the latest denials of a range."""

    reasons: list[tuple[str, int]]
    ips: list[tuple[str, int]]
    tickets: list[tuple[str, int]]
    #: Denials read; DENIALS_WINDOW when the range held more.
    read: int
    #: When they were ranked (UNIX seconds).
    at: int

    @property
    def capped(self) -> bool:
        return self.read >= DENIALS_WINDOW

    @property
    def throttled(self) -> bool:
        """Whether they are reused for TOPS_TTL (see LIVE_TOP_ROWS)."""
        return self.read > LIVE_TOP_ROWS


@dataclass(frozen=True, slots=True)
class Charts:
    range: str
    label: str
    #: The interval counted: from a bucket's start to now.
    start: int
    end: int
    bucket_text: str
    bars: list[Bar]
    y_max: int
    y_ticks: list[int]
    x_labels: list[str]
    allowed: int
    denied: int
    reasons: list[Ranked]
    ips: list[Ranked]
    tickets: list[Ranked]
    tops: TopLists
    #: The account's sessions open at ``end``.
    watching: int
    digest: str

    @property
    def busy(self) -> list[Bar]:
        """Bars with at least one attempt, for the table view."""
        return [bar for bar in self.bars if bar.allowed or bar.denied]

    @property
    def width(self) -> int:
        return len(self.bars) * 10

    @property
    def denial_rate(self) -> str:
        total = self.allowed + self.denied
        return "—" if total == 0 else f"{100 * self.denied / total:.0f}%"


def _ranked(pairs: list[tuple[str, int]]) -> list[Ranked]:
    top = max((count for _, count in pairs), default=0)
    return [
        Ranked(value, count, round(100 * count / top, 2) if top else 0.0) for value, count in pairs
    ]


def _most_common(values: Iterable[str]) -> list[tuple[str, int]]:
    """The TOP most frequent values, ties by value ascending (code point
    order, as ``top_attempt_values`` breaks them)."""
    counted = Counter(values)
    return sorted(counted.items(), key=lambda pair: (-pair[1], pair[0]))[:TOP]


async def rank_denials(viewer: Viewer, start: int, end: int) -> TopLists:
    """The top lists from one bounded read of the latest denials."""
    rows = await viewer.state.storage.recent_denials(viewer.account.cdn, start, end, DENIALS_WINDOW)
    return TopLists(
        reasons=_most_common(reason for reason, _, _ in rows),
        ips=_most_common(ip for _, ip, _ in rows),
        tickets=_most_common(key for _, _, key in rows),
        read=len(rows),
        at=viewer.now,
    )


@dataclass(slots=True)
class ChartCaches:
    """One app's reused charts and top lists (see the module docstring)."""

    charts: RecentAnswers[tuple[int, str], Charts]
    tops: RecentAnswers[tuple[int, str], TopLists]
    timelines: LiveTimelines


def _caches(viewer: Viewer) -> ChartCaches:
    state = viewer.state
    caches = state.charts
    if caches is None:
        caches = state.charts = ChartCaches(
            RecentAnswers(CACHED, CHARTS_TTL, state.clock),
            RecentAnswers(
                CACHED,
                CHARTS_TTL,
                state.clock,
                ttl_of=lambda tops: TOPS_TTL if tops.throttled else CHARTS_TTL,
            ),
            LiveTimelines(CACHED),
        )
    return caches


async def build_charts(viewer: Viewer, range_name: str) -> Charts:
    """The charts of ``range_name``, computed at most once per CHARTS_TTL
    for every viewer of the account."""
    key = (viewer.account.cdn, range_name)
    return await _caches(viewer).charts.get(key, lambda: _compute(viewer, range_name))


async def _compute(viewer: Viewer, range_name: str) -> Charts:
    label, span = RANGES[range_name]
    bucket = bucket_for(span)
    end = viewer.now
    # From a bucket's start, so that every bar counts a whole bucket.
    first = end - span + 1
    first -= first % bucket
    storage = viewer.state.storage
    cdn = viewer.account.cdn
    caches = _caches(viewer)
    key = (cdn, range_name)
    # Independent reads: the reader pool runs them side by side.
    timeline, tops, watching = await asyncio.gather(
        caches.timelines.timeline(key, storage, cdn, first, end, bucket, viewer.state.clock()),
        caches.tops.get(key, lambda: rank_denials(viewer, first, end)),
        storage.count_open_sessions(end, cdn),
    )
    counted = {b.start: (b.allowed, b.denied) for b in timeline}
    starts = list(range(first, end + 1, bucket))
    y_max = nice_max(max((a + d for a, d in counted.values()), default=0))
    bars = []
    for i, bar_start in enumerate(starts):
        allowed, denied = counted.get(bar_start, (0, 0))
        allowed_h = round(100 * allowed / y_max, 3)
        denied_h = round(100 * denied / y_max, 3)
        until = format_utc(bar_start + bucket - 1)[11:16]
        title = f"{format_utc(bar_start)[:16]} to {until} UTC: {allowed} allowed, {denied} denied"
        bars.append(
            Bar(
                bar_start,
                allowed,
                denied,
                title,
                x=i * 10 + 1,
                allowed_y=round(100 - allowed_h, 3),
                allowed_h=allowed_h,
                denied_y=round(100 - allowed_h - denied_h, 3),
                denied_h=denied_h,
            )
        )
    marks = sorted({0, len(starts) // 4, len(starts) // 2, 3 * len(starts) // 4, len(starts) - 1})
    # What the fragment shows, and nothing that changes without it (the
    # script swaps the charts only when this changes).
    ranked = (tops.reasons, tops.ips, tops.tickets, tops.read, tops.throttled and tops.at)
    data = repr((range_name, timeline, ranked, first, watching)).encode()
    return Charts(
        range=range_name,
        label=label,
        start=first,
        end=end,
        bucket_text=_duration(bucket),
        bars=bars,
        y_max=y_max,
        y_ticks=[y_max * i // 4 for i in range(4, -1, -1)],
        x_labels=[_time_label(starts[i], bucket, span) for i in marks],
        allowed=sum(a for a, _ in counted.values()),
        denied=sum(d for _, d in counted.values()),
        reasons=_ranked(tops.reasons),
        ips=_ranked(tops.ips),
        tickets=_ranked(tops.tickets),
        tops=tops,
        watching=watching,
        digest=hashlib.sha256(data).hexdigest()[:16],
    )


def _range_of(request: Request) -> str | None:
    name = forms.query_values(request).get("range", DEFAULT_RANGE)
    return name if name in RANGES else None


async def _overview(request: Request, viewer: Viewer) -> Response:
    name = _range_of(request)
    status = 200
    error = ""
    if name is None:
        name, status = DEFAULT_RANGE, 400
        error = "Unknown range; showing the last 24 hours."
    charts: Charts | None = None
    try:
        charts = await build_charts(viewer, name)
    except ReadBoundExceeded as exc:
        status, error = 503, stopped(viewer.state, exc, SHORTER_RANGE)
    return page(
        request,
        "overview.html",
        {
            "viewer": viewer,
            "nav": "overview",
            "charts": charts,
            "range_name": name,
            "ranges": RANGES,
            "refresh_ms": REFRESH_MS,
            "error": error,
        },
        status=status,
    )


def _short(status: int, text: str) -> HTMLResponse:
    """A fragment that is only a message (the script shows it as the status)."""
    body = f'<p class="alert" data-message>{escape(text)}</p>'
    return HTMLResponse(body, status, headers={"cache-control": "no-store"})


async def _fragment(request: Request, viewer: Viewer) -> Response:
    name = _range_of(request)
    if name is None:
        return _short(400, "Unknown range.")
    try:
        charts = await build_charts(viewer, name)
    except ReadBoundExceeded as exc:
        return _short(503, stopped(viewer.state, exc, SHORTER_RANGE))
    body = render_text("_charts.html", {"charts": charts})
    return HTMLResponse(body, headers={"cache-control": "no-store"})


overview = signed_in(_overview)
fragment = signed_in(_fragment, fragment=True)
