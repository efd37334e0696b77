"""The attempts explorer, the charts, and the panel's edges, in-process."""

from __future__ import annotations

import re
from importlib import resources

import pytest
from markupsafe import escape

from tests.conftest import Clock, Harness
from tests.panel.conftest import Panel
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


async def test_explorer_pages(harness: Harness, panel: Panel) -> None:
    key = await panel.create_ticket()
    for n in range(55):
        await harness.check(key=key, **{"pass": "pw-1234"}, ip=f"10.1.0.{n}", **PLAY)
    page_one = await panel.get("/panel/attempts")
    assert "1\N{EN DASH}50 of 55 attempts" in page_one.text
    assert "10.1.0.54" in page_one.text and "10.1.0.4<" not in page_one.text
    page_two = await panel.get("/panel/attempts", page="2")
    ips = re.findall(r'title="(10\.1\.0\.\d+)"', page_two.text)
    assert ips == [f"10.1.0.{n}" for n in (4, 3, 2, 1, 0)]


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
    return dict(re.findall(r'data-kpi="(\w+)">([^<]*)<', html))


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
