"""What keeps the panel fast at 10 M attempts (issue 13), in-process on both
backends: bounded reads, the overview's windowed top lists, shared charts."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Awaitable, Callable
from html import unescape
from typing import Any

import pytest

from tests.conftest import Clock, Harness
from tests.helpers import slow_read
from tests.panel.conftest import Panel
from usher.storage.base import Storage
from usher.web.panel import overview

pytestmark = pytest.mark.anyio

PLAY = {"app": "demo-live", "video": "mystream"}
STOPPED = re.compile(
    r"This view needed more than 0\.2 s of database work and was stopped so that "
    r"playback checks are not slowed; ([^.]+)\."
)


def bound_panel_reads(harness: Harness, seconds: float) -> None:
    """Run the harness app as if started with ``USHER_PANEL_QUERY_TIMEOUT=seconds``."""
    state = harness.app.state
    state.settings = dataclasses.replace(state.settings, panel_query_timeout=seconds)


def make_slow(storage: Storage, method: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make one storage method run a slow statement through the real read path."""

    async def slow(*args: Any, **kwargs: Any) -> Any:
        return await slow_read(storage)

    monkeypatch.setattr(storage, method, slow)


async def stops(harness: Harness) -> float:
    text = (await harness.http.get("/metrics")).text
    found = re.search(r"^usher_panel_reads_stopped_total ([\d.]+)$", text, re.M)
    assert found is not None
    return float(found.group(1))


async def test_a_slow_explorer_read_is_stopped_with_a_503_page(
    harness: Harness, panel: Panel, monkeypatch: pytest.MonkeyPatch
) -> None:
    bound_panel_reads(harness, 0.2)
    make_slow(harness.app.state.storage, "count_attempts_upto", monkeypatch)
    assert await stops(harness) == 0
    page = await panel.get("/panel/attempts", ip="10.0.0.1")
    assert page.status_code == 503
    said = STOPPED.search(unescape(page.text))
    assert said is not None and said.group(1).startswith("narrow the filters (a key")
    # The normal page: the filters as they were, ready to narrow.
    assert 'name="ip" type="text" value="10.0.0.1"' in page.text
    assert "Traceback" not in page.text
    assert await stops(harness) == 1
    # The API and playback checks are not bounded by the panel's setting.
    status, body = await harness.call("sevu.errorcount")
    assert status == 200 and body["status"] == "success"


async def test_a_slow_overview_is_stopped_on_the_page_and_in_the_fragment(
    harness: Harness, panel: Panel, monkeypatch: pytest.MonkeyPatch
) -> None:
    bound_panel_reads(harness, 0.2)
    make_slow(harness.app.state.storage, "recent_denials", monkeypatch)
    page = await panel.get("/panel/", range="7d")
    assert page.status_code == 503
    said = STOPPED.search(unescape(page.text))
    assert said is not None and said.group(1) == "choose a shorter time range"
    assert 'aria-current="true">Last 7 days<' in page.text  # the range links stay
    fragment = await panel.get("/panel/charts", range="7d")
    assert fragment.status_code == 503
    assert fragment.text.startswith('<p class="alert" data-message>This view needed')
    assert await stops(harness) == 2


async def test_any_other_slow_view_gets_the_503_error_page(
    harness: Harness, panel: Panel, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = await panel.create_ticket()
    bound_panel_reads(harness, 0.2)
    make_slow(harness.app.state.storage, "list_attempts", monkeypatch)
    page = await panel.get(f"/panel/tickets/{key}")
    assert page.status_code == 503
    said = STOPPED.search(unescape(page.text))
    assert said is not None and said.group(1) == "try again in a moment"


async def denials(harness: Harness, panel: Panel, clock: Clock, count: int) -> str:
    key = await panel.create_ticket(ip="auto")
    await harness.check(key=key, **{"pass": "pw-1234"}, ip="10.9.0.1", **PLAY)
    for n in range(count):
        # Every third from one address; all refused for the bound address.
        ip = "10.2.0.1" if n % 3 == 0 else f"10.3.0.{n}"
        await harness.check(key=key, **{"pass": "pw-1234"}, ip=ip, **PLAY)
        clock.advance(1)
    return key


async def test_top_lists_rank_the_latest_denials_and_say_so(
    harness: Harness, panel: Panel, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(overview, "DENIALS_WINDOW", 6)
    await denials(harness, panel, clock, 9)
    charts = await panel.get("/panel/charts", range="1h")
    text = unescape(charts.text)
    # All nine denials are counted; the lists rank the latest six of them.
    assert 'data-kpi="denied">9<' in charts.text
    assert "rank the latest 6 denials of this range, not all of them" in text
    ips = charts.text.split('id="ips-h"')[1].split("</section>")[0]
    assert re.findall(r'title="([\d.]+)"[^<]*</a>\s*<span class="count">(\d+)', ips)[0] == (
        "10.2.0.1",
        "2",
    )


async def test_small_top_lists_follow_every_refresh(
    harness: Harness, panel: Panel, clock: Clock
) -> None:
    await denials(harness, panel, clock, 3)
    first = unescape((await panel.get("/panel/charts", range="1h")).text)
    assert "rank all 3 denials of this range." in first
    await denials(harness, panel, clock, 3)
    clock.advance(overview.CHARTS_TTL)
    again = unescape((await panel.get("/panel/charts", range="1h")).text)
    assert "rank all 6 denials of this range." in again
    assert "updated every minute" not in again


async def test_large_top_lists_are_ranked_at_most_once_a_minute(
    harness: Harness, panel: Panel, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(overview, "LIVE_TOP_ROWS", 2)
    await denials(harness, panel, clock, 3)
    first = unescape((await panel.get("/panel/charts", range="1h")).text)
    assert "rank all 3 denials of this range; they are updated every minute" in first
    await denials(harness, panel, clock, 3)
    clock.advance(overview.CHARTS_TTL)
    later = (await panel.get("/panel/charts", range="1h")).text
    # The timeline is fresh; the lists wait for their minute.
    assert 'data-kpi="denied">6<' in later
    assert "rank all 3 denials" in unescape(later)
    clock.advance(overview.TOPS_TTL)
    assert "rank all 6 denials" in unescape((await panel.get("/panel/charts", range="1h")).text)


async def test_tabs_polling_together_share_one_computation(
    harness: Harness, panel: Panel, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = harness.app.state.storage
    calls = {"attempt_timeline": 0, "minute_tail": 0, "recent_denials": 0}

    def counted(name: str) -> Callable[..., Awaitable[Any]]:
        real = getattr(storage, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return await real(*args, **kwargs)

        return call

    for name in calls:
        monkeypatch.setattr(storage, name, counted(name))
    tabs = await asyncio.gather(*(panel.get("/panel/charts", range="6h") for _ in range(8)))
    assert {tab.status_code for tab in tabs} == {200}
    assert len({tab.text for tab in tabs}) == 1
    assert calls == {"attempt_timeline": 1, "minute_tail": 1, "recent_denials": 1}
    clock.advance(overview.CHARTS_TTL)
    await panel.get("/panel/charts", range="6h")
    # The refresh reads the newest minutes only, not the range again.
    assert calls == {"attempt_timeline": 1, "minute_tail": 2, "recent_denials": 2}
    await panel.get("/panel/charts", range="1h")  # another range: its own charts
    assert calls == {"attempt_timeline": 2, "minute_tail": 3, "recent_denials": 3}


async def test_every_bar_is_a_whole_bucket_and_the_interval_is_named(
    panel: Panel, clock: Clock
) -> None:
    clock.advance(37)  # not on a bucket boundary
    charts = await panel.get("/panel/charts", range="24h")
    starts = [int(s) for s in re.findall(r'<g class="bar" data-start="(\d+)"', charts.text)]
    assert all(start % 900 == 0 for start in starts)
    assert starts[0] <= int(clock.now) - 86400 + 1 < starts[0] + 900
    assert "Counted from 2027-01-14 08:00:00 UTC, the start of the first whole bar" in (charts.text)
