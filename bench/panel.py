"""The control panel's pages, timed through HTTP as a browser fetches them.

The suite signs in to the panel of the account that holds the heavy
hitters (the busiest address among random seeded attempts; ``usher
seed-data`` puts its CDN edge, brute-force bot and leaked key in its first
account) with its API key and secret, through the sign-in form and its CSRF
token, and then fetches each page :attr:`Plan.repeats` times with httpx:

* the overview for every range, and the charts fragment it refreshes with;
* the tickets list, a typical ticket's page and the hammered key's page;
* the attempts explorer with no filter, with each single filter (typical and
  heavy values, ``success`` 0 and 1, ``starttime`` an hour, a day and a week
  ago), with common pairs, and deep in the log, reached by following its
  "Older" link up to :attr:`Plan.deep` times.

Typical values come from a random successful attempt of the account that
shares no value with a heavy hitter; heavy values are the account's most
common key, pass, app, video and address among the random attempts.

Every fetch must answer 200: anything else (a 503 from an overloaded
database, a 500, a timeout) fails the page's row. A page slower than
:data:`SLOW_MS` is not fetched again, so that a run on data the panel cannot
yet serve stays bounded; its row is not met either way.
"""

from __future__ import annotations

import html
import random
import re
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from bench.counts import NAMES, PROBE, Row, sample_rows
from usher.tickets.expiry import format_utc

#: Every page and fragment, at 10 M attempts (docs/benchmarks.md).
TARGET_MS = 300.0
#: A page this slow is fetched once: ten times the target.
SLOW_MS = 10 * TARGET_MS
#: How long one fetch may take before it counts as failed.
FETCH_TIMEOUT_S = 120.0
#: How long following the explorer's "Older" links may take in all.
WALK_BUDGET_S = 120.0
RANGES = ("1h", "6h", "24h", "7d", "30d")
#: The explorer's text filters (``success`` aside).
_COLUMNS = NAMES[:5]
# The "Older" link: an anchor whose text starts with "Older" (the pager
# today, keyset pagination tomorrow).
_OLDER = re.compile(r"<a\b([^>]*)>\s*Older\b")
_HREF = re.compile(r'\bhref="([^"]*)"')
_CSRF = re.compile(r'<input type="hidden" name="csrf" value="([^"]+)"')


@dataclass
class PageTimes:
    """One page's fetches."""

    name: str
    #: Path and query, as fetched.
    url: str
    ms: list[float] = field(default_factory=list)
    #: HTTP status of each fetch; 0 for a timeout or a broken connection.
    statuses: list[int] = field(default_factory=list)
    note: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.statuses) and all(status == 200 for status in self.statuses)


@dataclass
class Targets:
    """The signed-in account and the filter values its pages use."""

    cdn: int
    #: key, pass, app, video and ip of a typical successful attempt.
    typical: dict[str, str]
    #: The account's most common key, pass, app, video and ip.
    heavy: dict[str, str]
    #: An address the heavy key was played from.
    heavy_key_ip: str


@dataclass
class PanelRun:
    cdn: int
    typical: dict[str, str]
    heavy: dict[str, str]
    pages: list[PageTimes]
    #: "Older" links followed from the unfiltered explorer, and how long each took.
    deep_links: int
    deep_walk_ms: list[float]
    deep_note: str


def targets(db_path: str, max_id: int, seed: int = 11) -> Targets:
    """The account with the busiest address among random seeded attempts,
    and its typical and heavy filter values."""
    rng = random.Random(seed)  # noqa: S311  # sampling, not secrets
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        probe = sample_rows(conn, PROBE, rng, max_id)
    finally:
        conn.close()
    (cdn, _), _ = Counter((row[0], row[5]) for row in probe).most_common(1)[0]
    mine = [row for row in probe if row[0] == cdn]
    heavy = {
        name: str(Counter(row[1 + i] for row in mine).most_common(1)[0][0])
        for i, name in enumerate(_COLUMNS)
    }

    def values(row: Row) -> dict[str, str]:
        return {name: str(row[1 + i]) for i, name in enumerate(_COLUMNS)}

    allowed = [row for row in mine if row[6] == 1]
    plain = [row for row in allowed if not set(values(row).items()) & set(heavy.items())]
    typical = values(rng.choice(plain or allowed or mine))
    played_from = [str(row[5]) for row in mine if row[1] == heavy["key"]]
    return Targets(int(cdn), typical, heavy, rng.choice(played_from))


def _pages(t: Targets, now: int) -> list[tuple[str, str, dict[str, str]]]:
    """(name, path, query) of every page timed, the deep page aside."""
    typ, hv = t.typical, t.heavy
    spans = (("1 h", 3600), ("24 h", 86400), ("7 days", 7 * 86400))
    ago = {label: format_utc(now - seconds) for label, seconds in spans}
    explorer = "/panel/attempts"
    pages: list[tuple[str, str, dict[str, str]]] = []
    pages += [(f"overview, range {r}", "/panel/", {"range": r}) for r in RANGES]
    pages += [(f"charts fragment, range {r}", "/panel/charts", {"range": r}) for r in RANGES]
    pages += [
        ("tickets list", "/panel/tickets", {}),
        ("ticket page, typical ticket", f"/panel/tickets/{quote(typ['key'], safe='')}", {}),
        ("ticket page, hammered key", f"/panel/tickets/{quote(hv['key'], safe='')}", {}),
        ("attempts, no filter", explorer, {}),
    ]
    for name in _COLUMNS:
        pages.append((f"attempts: {name} (typical)", explorer, {name: typ[name]}))
        pages.append((f"attempts: {name} (heavy)", explorer, {name: hv[name]}))
    pages.append(("attempts: success=0", explorer, {"success": "0"}))
    pages.append(("attempts: success=1", explorer, {"success": "1"}))
    for label, stamp in ago.items():
        pages.append((f"attempts: starttime {label} ago", explorer, {"starttime": stamp}))
    pairs = {
        "app+success=0 (typical)": {"app": typ["app"], "success": "0"},
        "app+success=0 (heavy)": {"app": hv["app"], "success": "0"},
        "ip+success=0 (typical)": {"ip": typ["ip"], "success": "0"},
        "ip+success=0 (heavy)": {"ip": hv["ip"], "success": "0"},
        "key+ip (typical)": {"key": typ["key"], "ip": typ["ip"]},
        "key+ip (heavy key)": {"key": hv["key"], "ip": t.heavy_key_ip},
        "starttime 24 h ago+success=0": {"starttime": ago["24 h"], "success": "0"},
        "app+video (typical)": {"app": typ["app"], "video": typ["video"]},
        "app+video (heavy)": {"app": hv["app"], "video": hv["video"]},
    }
    pages += [(f"attempts: {name}", explorer, query) for name, query in pairs.items()]
    return pages


def sign_in(client: httpx.Client, account: dict[str, Any]) -> None:
    """Sign ``client`` in with the account's API key and secret, as the
    form does: the form's CSRF token back with its cookie."""
    form = client.get("/panel/sign-in")
    token = _CSRF.search(form.text)
    if form.status_code != 200 or token is None:
        raise RuntimeError(f"The panel's sign-in form did not load ({form.status_code}).")
    answer = client.post(
        "/panel/sign-in",
        data={"csrf": html.unescape(token[1]), "method": "api", "cdn": str(account["cdn"]),
              "api_key": account["api_key"], "secret": account["secret"], "next": ""},
    )  # fmt: skip
    landed = client.get("/panel/")
    if answer.status_code != 303 or landed.status_code != 200 or "sign-out" not in landed.text:
        raise RuntimeError(
            f"Signing in to the panel as cdn {account['cdn']} failed ({answer.status_code}, "
            f"then {landed.status_code}); check the seeded credentials."
        )


def _fetch(client: httpx.Client, url: str) -> tuple[float, int, str]:
    started = time.perf_counter()
    try:
        answer = client.get(url)
    except httpx.HTTPError:
        return (time.perf_counter() - started) * 1000, 0, ""
    return (time.perf_counter() - started) * 1000, answer.status_code, answer.text


def _time(client: httpx.Client, name: str, url: str, repeats: int) -> PageTimes:
    times = PageTimes(name, url)
    for _ in range(repeats):
        ms, status, _ = _fetch(client, url)
        times.ms.append(ms)
        times.statuses.append(status)
        if ms > SLOW_MS:
            times.note = f"not fetched again after a fetch slower than {SLOW_MS / 1000:g} s"
            break
    return times


def older_link(page: str) -> str | None:
    """The explorer page's "Older" link (path and query), if it has one."""
    for anchor in _OLDER.finditer(page):
        href = _HREF.search(anchor[1])
        if href:
            return html.unescape(href[1])
    return None


def _deep(
    client: httpx.Client, links: int, repeats: int
) -> tuple[PageTimes, int, list[float], str]:
    """Follow "Older" from the unfiltered explorer up to ``links`` times
    (within :data:`WALK_BUDGET_S`), then time the page reached; also the
    links followed, each fetch on the way (ms) and why the walk stopped early."""
    url = "/panel/attempts"
    walk: list[float] = []
    followed = 0
    note = ""
    started = time.monotonic()
    while followed < links:
        if time.monotonic() - started > WALK_BUDGET_S:
            note = f"walk stopped after {WALK_BUDGET_S:g} s"
            break
        ms, status, text = _fetch(client, url)
        walk.append(ms)
        if status != 200:
            note = f"HTTP {status} after {followed} Older links"
            return PageTimes("attempts, deep page", url, [ms], [status], note), followed, walk, note
        following = older_link(text)
        if following is None:
            note = f"no Older link after {followed}"
            break
        url = following
        followed += 1
    return (
        _time(client, f"attempts, {followed} Older links deep", url, repeats),
        followed,
        walk,
        note,
    )


def run(base_url: str, account: dict[str, Any], t: Targets, *, repeats: int, deep: int) -> PanelRun:
    """Sign in and time every page; ``account`` must be the one ``t`` is of."""
    with httpx.Client(base_url=base_url, timeout=FETCH_TIMEOUT_S) as client:
        sign_in(client, account)
        pages = [
            _time(client, name, str(httpx.URL(path, params=params)), repeats)
            for name, path, params in _pages(t, int(time.time()))
        ]
        page, followed, walk, note = _deep(client, deep, repeats)
    pages.append(page)
    return PanelRun(t.cdn, t.typical, t.heavy, pages, followed, walk, note)
