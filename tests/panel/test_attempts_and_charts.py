"""The attempts explorer, the charts, and the panel's edges, in-process."""

from __future__ import annotations

import re
from html import unescape
from importlib import resources
from urllib.parse import parse_qsl

import pytest
from markupsafe import escape

from tests.conftest import Clock, Harness
from tests.panel.conftest import Panel
from usher.web.panel import attempts
from usher.web.panel.render import SECURITY_HEADERS

pytestmark = pytest.mark.anyio

PLAY = {"app": "demo-live", "video": "mystream"}


async def played(harness: Harness, panel: Panel, clock: Clock) -> tuple[str, str]:
    """Two tickets and a mixed log of attempts, a minute apart."""
    first = await panel.create_ticket(**{"pass": "p1", "ip": "auto"})
    second = await panel.create_ticket(**{"pass": "p2", "video": "other"})
    plays = [
        (first, "p1", "10.0.0.1", PLAY),  # allowed, binds 10.0.0.1
        (first, "bad", "10.0.0.1", PLAY),  # Invalid Auth Token
        (first, "p1", "10.0.0.2", PLAY),  # Invalid IP Address
        (first, "p1", "10.0.0.3", PLAY),  # Invalid IP Address
        (second, "p2", "10.0.0.3", {**PLAY, "video": "other"}),  # allowed
        (second, "p2", "10.0.0.3", {**PLAY, "app": "demo-vod", "video": "other"}),  # app
    ]
    for key, password, ip, where in plays:
        await harness.check(key=key, **{"pass": password}, ip=ip, **where)
        clock.advance(60)
    return first, second


@pytest.mark.parametrize(
    "filters",
    [
        {},
        {"success": "0"},
        {"success": "1"},
        {"ip": "10.0.0.3"},
        {"pass": "bad"},
        {"app": "demo-vod"},
        {"video": "other", "success": "1"},
        {"starttime": "2027-01-15 08:02:00"},
        {"endtime": "2027-01-15 08:02:00"},
        {"starttime": "2027-01-15", "endtime": "2027-01-15"},
        {"ip": "10.9.9.9"},
    ],
    ids=lambda filters: "&".join(f"{k}={v}" for k, v in filters.items()) or "none",
)
async def test_explorer_count_is_what_errorcount_returns(
    harness: Harness, panel: Panel, clock: Clock, filters: dict[str, str]
) -> None:
    first, _ = await played(harness, panel, clock)
    for extra in ({}, {"key": first}):
        _, api = await harness.call("sevu.errorcount", **filters, **extra)
        page = await panel.get("/panel/attempts", **filters, **extra)
        assert page.status_code == 200
        shown = re.search(r"data-total>(\d+)<", page.text)
        assert shown is not None
        assert int(shown.group(1)) == api["error_count"], (filters, extra)
        assert page.text.count('data-label="Time (UTC)">2027-') == api["error_count"]


async def test_explorer_rows_are_newest_first_and_link_to_their_ticket(
    harness: Harness, panel: Panel, clock: Clock
) -> None:
    first, second = await played(harness, panel, clock)
    page = await panel.get("/panel/attempts")
    times = re.findall(r'data-label="Time \(UTC\)">(2027-[^<]+)</td>', page.text)
    assert times == sorted(times, reverse=True) and len(times) == 6
    links = re.findall(r'href="/panel/tickets/([^"]+)" title', page.text)
    assert links == [second, second, first, first, first, first]


def _ips(html: str) -> list[str]:
    return re.findall(r'title="(10\.1\.0\.\d+)"', html)


def _link(html: str, rel: str) -> dict[str, str] | None:
    found = re.search(rf'rel="{rel}" href="/panel/attempts\?([^"]+)"', html)
    if found is None:
        return None
    return dict(parse_qsl(unescape(found.group(1))))


async def test_explorer_pages_by_cursor_and_keeps_the_filters(
    harness: Harness, panel: Panel
) -> None:
    key = await panel.create_ticket()
    for n in range(120):
        await harness.check(key=key, **{"pass": "pw-1234"}, ip=f"10.1.0.{n}", **PLAY)
    page_one = await panel.get("/panel/attempts", key=key)
    assert _ips(page_one.text) == [f"10.1.0.{n}" for n in range(119, 69, -1)]
    assert "data-total>120<" in page_one.text
    assert _link(page_one.text, "prev") is None
    older = _link(page_one.text, "next")
    assert older is not None and older["key"] == key and set(older) == {"key", "before"}
    page_two = await panel.get("/panel/attempts", **older)
    assert _ips(page_two.text) == [f"10.1.0.{n}" for n in range(69, 19, -1)]
    page_three = await panel.get("/panel/attempts", **_link(page_two.text, "next") or {})
    assert _ips(page_three.text) == [f"10.1.0.{n}" for n in range(19, -1, -1)]
    assert _link(page_three.text, "next") is None
    # Newer goes back the same way, page by page.
    back = _link(page_three.text, "prev")
    assert back is not None and set(back) == {"key", "after"}
    again = await panel.get("/panel/attempts", **back)
    assert _ips(again.text) == _ips(page_two.text)
    # Within a page of the newest, Newer shows the newest page, full.
    newest = await panel.get("/panel/attempts", **(_link(again.text, "prev") or {}))
    assert _ips(newest.text) == _ips(page_one.text)
    assert _link(newest.text, "prev") is None


@pytest.mark.parametrize(
    "cursor",
    [
        {"before": "x"},
        {"before": "-3"},
        {"after": "0"},
        {"after": "1e5"},
        {"before": "9" * 30},
        {"before": str(2**63)},
        {"before": "5", "after": "2"},
    ],
    ids=["letters", "negative", "zero", "float", "huge", "past-64-bits", "both"],
)
async def test_a_malformed_cursor_is_a_clear_400(panel: Panel, cursor: dict[str, str]) -> None:
    page = await panel.get("/panel/attempts", success="0", **cursor)
    assert page.status_code == 400
    assert "Start again from the newest attempts." in page.text
    assert 'href="/panel/attempts?success=0">Newest attempts<' in page.text


async def test_a_stale_cursor_is_a_clear_400(harness: Harness, panel: Panel) -> None:
    key = await panel.create_ticket()
    await harness.check(key=key, **{"pass": "pw-1234"}, ip="10.1.0.1", **PLAY)
    # Nothing is older than the first attempt: what a pruned log leaves.
    page = await panel.get("/panel/attempts", before="1")
    assert page.status_code == 400
    assert "no attempts older than this page's link" in unescape(page.text)


async def test_a_large_total_is_shown_as_more_than_the_cap(
    harness: Harness, panel: Panel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(attempts, "COUNT_CAP", 3)
    key = await panel.create_ticket()
    for n in range(4):
        await harness.check(key=key, **{"pass": "pw-1234"}, ip=f"10.1.0.{n}", **PLAY)
    capped = await panel.get("/panel/attempts")
    assert re.search(r'More than <span class="count" data-total="capped">3</span>', capped.text)
    assert len(_ips(capped.text)) == 4
    exact = await panel.get("/panel/attempts", ip="10.1.0.2")
    assert "data-total>1<" in exact.text


@pytest.mark.parametrize(
    "filters",
    [{"starttime": "yesterday"}, {"endtime": "2027-13-45"}, {"success": "maybe"}],
    ids=["starttime", "endtime", "success"],
)
async def test_explorer_refuses_what_errorcount_refuses(
    harness: Harness, panel: Panel, filters: dict[str, str]
) -> None:
    _, api = await harness.call("sevu.errorcount", **filters)
    assert api["status"] == "failure"
    page = await panel.get("/panel/attempts", **filters)
    assert page.status_code == 400
    assert str(escape(api["message"])) in page.text


def kpis(html: str) -> dict[str, str]:
    """The attempt totals (watching now is tested in test_sessions.py)."""
    found = dict(re.findall(r'data-kpi="(\w+)">([^<]*)<', html))
    found.pop("watching", None)
    return found


async def test_charts_count_and_rank_denials(harness: Harness, panel: Panel, clock: Clock) -> None:
    empty = await panel.get("/panel/charts", range="1h")
    assert kpis(empty.text) == {"total": "0", "allowed": "0", "denied": "0", "rate": "—"}
    first, second = await played(harness, panel, clock)
    charts = await panel.get("/panel/charts", range="1h")
    assert charts.status_code == 200
    assert kpis(charts.text) == {"total": "6", "allowed": "2", "denied": "4", "rate": "67%"}
    reasons = charts.text.split('id="reasons-h"')[1].split("</section>")[0]
    assert re.findall(r"<span>([^<]+)</span>\s*<span class=\"count\">(\d+)", reasons) == [
        ("Invalid IP Address", "2"),
        ("Invalid Application", "1"),
        ("Invalid Auth Token", "1"),
    ]
    ips = charts.text.split('id="ips-h"')[1].split("</section>")[0]
    assert re.findall(r'title="([\d.]+)"', ips) == ["10.0.0.3", "10.0.0.1", "10.0.0.2"]
    tickets = charts.text.split('id="tickets-h"')[1].split("</section>")[0]
    assert re.findall(r'title="([^"]+)"', tickets) == [first, second]
    # One bar per minute over the last hour: the six attempts sit in six bars.
    bars = re.findall(r'data-allowed="(\d+)" data-denied="(\d+)"', charts.text)
    assert 60 <= len(bars) <= 61
    assert [bar for bar in bars if bar != ("0", "0")] == [
        ("1", "0"),
        ("0", "1"),
        ("0", "1"),
        ("0", "1"),
        ("1", "0"),
        ("0", "1"),
    ]
    assert "one bar per 1 minute" in charts.text


@pytest.mark.parametrize(
    ("name", "bars", "bucket"),
    [
        ("1h", 60, "1 minute"),
        ("6h", 72, "5 minutes"),
        ("24h", 96, "15 minutes"),
        ("7d", 84, "2 hours"),
        ("30d", 120, "6 hours"),
    ],
)
async def test_each_range_gets_a_fitting_bucket(
    panel: Panel, name: str, bars: int, bucket: str
) -> None:
    charts = await panel.get("/panel/charts", range=name)
    assert charts.status_code == 200
    assert f"one bar per {bucket}" in charts.text
    # The window rarely starts on a bucket boundary, adding one partial bar.
    assert len(re.findall(r'<g class="bar"', charts.text)) in (bars, bars + 1)


async def test_old_attempts_leave_the_range(harness: Harness, panel: Panel, clock: Clock) -> None:
    await played(harness, panel, clock)
    clock.advance(3600)
    await panel.sign_in()  # the old session idled out meanwhile
    assert kpis((await panel.get("/panel/charts", range="1h")).text)["total"] == "0"
    assert kpis((await panel.get("/panel/charts", range="24h")).text)["total"] == "6"


async def test_unknown_range_is_refused(panel: Panel) -> None:
    assert (await panel.get("/panel/charts", range="1y")).status_code == 400
    page = await panel.get("/panel/", range="1y")
    assert page.status_code == 400
    assert "Unknown range; showing the last 24 hours." in page.text


async def test_every_panel_response_carries_the_security_headers(panel: Panel) -> None:
    paths = [
        "/panel/",
        "/panel/tickets",
        "/panel/attempts",
        "/panel/no-such-page",
        "/panel/static/panel.css",
        "/panel/static/panel.js",
    ]
    for path in paths:
        response = await panel.get(path)
        for name, value in SECURITY_HEADERS.items():
            assert response.headers.get(name) == value, (path, name)
    page = await panel.get("/panel/")
    assert page.headers["cache-control"] == "no-store"


async def test_assets_are_served_by_usher_with_no_external_reference(panel: Panel) -> None:
    page = await panel.get("/panel/")
    assets = re.findall(r'(?:src|href)="(/panel/static/[^"?]+)\?v=[0-9a-f]+"', page.text)
    assert sorted(set(assets)) == [
        "/panel/static/favicon.svg",
        "/panel/static/panel.css",
        "/panel/static/panel.js",
    ]
    types = {"css": "text/css", "js": "javascript", "svg": "image/svg+xml"}
    for path in set(assets):
        response = await panel.get(path)
        assert response.status_code == 200
        assert types[path.rsplit(".", 1)[1]] in response.headers["content-type"]
    # Nothing the panel ships loads from another host.
    package = resources.files("usher.web.panel")
    for folder in ("templates", "static"):
        for entry in package.joinpath(folder).iterdir():
            text = entry.read_text("utf-8")
            for url in re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}", text):
                assert url == "http://www.w3.org", (entry.name, url)


async def test_unknown_pages_and_wrong_methods(panel: Panel) -> None:
    missing = await panel.get("/panel/nothing/here")
    assert missing.status_code == 404
    assert "There is no panel page at this address." in missing.text
    assert (await panel.http.put("/panel/tickets")).status_code == 405


async def test_a_failing_database_gives_a_503_page(harness: Harness, panel: Panel) -> None:
    await harness.app.state.storage.close()
    try:
        page = await panel.get("/panel/")
        assert page.status_code == 503
        assert "Usher cannot reach its database right now." in page.text
        assert "Traceback" not in page.text
    finally:
        await harness.app.state.storage.open()


async def test_a_huge_form_is_refused(panel: Panel) -> None:
    response = await panel.post("/panel/tickets/new", {"video": "v" * 70_000})
    assert response.status_code == 413
