"""Ticket pages in-process: create validates as sevu.request, search, detail,
revoke, CSRF on every change, and isolation between accounts."""

from __future__ import annotations

import re

import pytest
from markupsafe import escape

from tests.conftest import Harness
from tests.helpers import count_filters_of
from tests.panel.conftest import Panel
from usher.storage import counting
from usher.tickets.model import AttemptFilter
from usher.web.panel import tickets as panel_tickets

pytestmark = pytest.mark.anyio


async def test_create_shows_the_ready_query_string(harness: Harness, panel: Panel) -> None:
    key = await panel.create_ticket(**{"pass": "a b&c", "ip": "auto/24", "uses": "3"})
    page = await panel.get(f"/panel/tickets/{key}", created="1")
    assert page.status_code == 200
    assert "Ticket created." in page.text
    # The pass is URL-encoded, so the string works pasted after any stream URL.
    assert f'value="?key={key}&amp;pass=a%20b%26c"' in page.text
    assert 'data-copy="play"' in page.text
    status, body = await harness.call("sevu.status", key=key)
    assert status == 200
    assert (body["pass"], body["ip"], body["uses"], body["active"]) == ("a b&c", "auto/24", 3, 1)


async def test_new_form_prefills_the_account_prefix_and_a_random_pass(panel: Panel) -> None:
    first = await panel.get("/panel/tickets/new")
    second = await panel.get("/panel/tickets/new")
    assert 'name="app" type="text" value="demo-"' in first.text
    pattern = r'name="pass" type="text" value="([^"]+)"'
    passes = [re.search(pattern, page.text) for page in (first, second)]
    assert passes[0] and passes[1] and passes[0].group(1) != passes[1].group(1)


async def test_unchecked_active_creates_an_inactive_ticket(harness: Harness, panel: Panel) -> None:
    values = {"app": "demo-live", "video": "v", "pass": "p", "ip": "", "uses": "0"}
    response = await panel.post("/panel/tickets/new", values)
    assert response.status_code == 303
    key = response.headers["location"].split("/")[-1].split("?")[0]
    _, body = await harness.call("sevu.status", key=key)
    assert body["active"] == 0


@pytest.mark.parametrize(
    "fields",
    [
        {"app": "other-live"},
        {"app": ""},
        {"ip": "300.1.2.3"},
        {"ip": "10.0.0.0/99"},
        {"uses": "-1"},
        {"uses": "many"},
        {"uses": ""},
        {"pass": ""},
        {"pass": "x" * 257},
        {"expire": "2001-01-01 00:00:00"},
        {"expire": "next tuesday"},
    ],
    ids=lambda fields: "-".join(f"{k}={v[:12]}" for k, v in fields.items()),
)
async def test_create_refuses_what_sevu_request_refuses(
    harness: Harness, panel: Panel, fields: dict[str, str]
) -> None:
    values = {"app": "demo-live", "video": "v", "pass": "p", "ip": "", "uses": "0", **fields}
    _, api = await harness.call("sevu.request", **values)
    assert api["status"] == "failure"
    response = await panel.post("/panel/tickets/new", {**values, "active": "1"})
    assert response.status_code == 400
    assert str(escape(api["message"])) in response.text
    assert 'aria-invalid="true"' in response.text
    # What was typed is kept for correcting; nothing was created.
    _, found = await harness.call("sevu.search")
    assert found["ticket_count"] == 0


async def test_changes_without_the_csrf_token_are_refused(harness: Harness, panel: Panel) -> None:
    values = {"app": "demo-live", "video": "v", "pass": "p", "ip": "", "uses": "0"}
    for csrf in (None, "", "forged-token"):
        data = values if csrf is None else {**values, "csrf": csrf}
        refused = await panel.post("/panel/tickets/new", data, csrf=False)
        assert refused.status_code == 403
        assert "Nothing was changed." in refused.text
    _, found = await harness.call("sevu.search")
    assert found["ticket_count"] == 0

    key = await panel.create_ticket()
    refused = await panel.post(f"/panel/tickets/{key}/revoke", {}, csrf=False)
    assert refused.status_code == 403
    cross_site = await panel.http.post(
        f"/panel/tickets/{key}/revoke",
        data={"csrf": panel.csrf},
        headers={"origin": "https://evil.example"},
    )
    assert cross_site.status_code == 403
    _, body = await harness.call("sevu.status", key=key)
    assert body["active"] == 1


async def test_revoke_asks_first_then_revokes(harness: Harness, panel: Panel) -> None:
    key = await panel.create_ticket()
    confirm = await panel.get(f"/panel/tickets/{key}/revoke")
    assert confirm.status_code == 200
    assert "Revoke this ticket?" in confirm.text
    _, before = await harness.call("sevu.status", key=key)
    assert before["active"] == 1, "showing the confirmation must not revoke"
    response = await panel.post(f"/panel/tickets/{key}/revoke", {})
    assert response.status_code == 303
    assert response.headers["location"] == f"/panel/tickets/{key}?revoked=1"
    _, after = await harness.call("sevu.status", key=key)
    assert after["active"] == 0
    page = await panel.get(f"/panel/tickets/{key}")
    assert "Revoked" in page.text and "Revoke…" not in page.text


async def test_one_account_cannot_see_or_revoke_anothers_tickets(
    harness: Harness, panel: Panel, rival: Panel
) -> None:
    key = await panel.create_ticket()
    await harness.check(key=key, **{"pass": "pw-1234"}, app="demo-live", video="mystream")
    for path in (f"/panel/tickets/{key}", f"/panel/tickets/{key}/revoke"):
        seen = await rival.get(path)
        assert seen.status_code == 404
        assert key not in seen.text
    revoked = await rival.post(f"/panel/tickets/{key}/revoke", {})
    assert revoked.status_code == 404
    _, body = await harness.call("sevu.status", key=key)
    assert body["active"] == 1
    # Nor through search, the explorer, or the charts.
    # (The filter forms echo the key typed, so look for the results, not the key.)
    assert "No ticket matches these filters." in (await rival.get("/panel/tickets", key=key)).text
    assert key not in (await rival.get("/panel/tickets")).text
    assert key not in (await rival.get("/panel/attempts")).text
    assert key not in (await rival.get("/panel/charts")).text
    assert "data-total>0<" in (await rival.get("/panel/attempts", key=key)).text
    # The owner still sees it all.
    assert key in (await panel.get("/panel/tickets")).text
    assert "data-total>1<" in (await panel.get("/panel/attempts", key=key)).text


async def test_search_filters_and_pages_newest_first(harness: Harness, panel: Panel) -> None:
    keys = [await panel.create_ticket(video=f"v{i}") for i in range(27)]
    first = await panel.get("/panel/tickets")
    shown = re.findall(r'href="/panel/tickets/(v\d+\.[^"]+)"', first.text)
    assert shown == list(reversed(keys))[:25]
    assert "1\N{EN DASH}25 of 27 tickets" in first.text
    second = await panel.get("/panel/tickets", page="2")
    assert re.findall(r'href="/panel/tickets/(v\d+\.[^"]+)"', second.text) == keys[1::-1]
    one = await panel.get("/panel/tickets", video="v3")
    assert re.findall(r'href="/panel/tickets/(v\d+\.[^"]+)"', one.text) == [keys[3]]
    none = await panel.get("/panel/tickets", app="demo-nothing")
    assert "No ticket matches these filters." in none.text
    past = await panel.get("/panel/tickets", page="99")
    assert "Page 99 is past the last ticket" in past.text


async def test_detail_lists_attempts_and_bound_addresses(harness: Harness, panel: Panel) -> None:
    key = await panel.create_ticket(ip="auto")
    play = {"key": key, "app": "demo-live", "video": "mystream"}
    await harness.check(**play, **{"pass": "pw-1234"}, ip="198.51.100.7")
    await harness.check(**play, **{"pass": "wrong"}, ip="198.51.100.8")
    await harness.check(**play, **{"pass": "pw-1234"}, ip="198.51.100.9")
    page = await panel.get(f"/panel/tickets/{key}")
    text = page.text
    assert "1 allowed" in text and "2 denied" in text
    assert "Invalid Auth Token" in text and "Invalid IP Address" in text
    bound = text.split("Bound by auto slots")[1].split("Seen in attempts")[0]
    assert "198.51.100.7" in bound and "198.51.100.9" not in bound
    seen = text.split("Seen in attempts")[1].split("Recent attempts")[0]
    assert all(f"198.51.100.{n}" in seen for n in (7, 8, 9))
    table = text.split("Recent attempts")[1]
    # Newest attempt first.
    assert table.index("198.51.100.9") < table.index("198.51.100.8") < table.index("198.51.100.7")


async def test_a_busy_keys_page_counts_without_making_a_count_filter(
    harness: Harness, panel: Panel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Filling a count filter reads every attempt of the key: a leaked key's
    # first page view spent its whole read budget on it. The page counts up
    # to its cap instead; only sevu.errorcount makes the filter.
    monkeypatch.setattr(counting, "BUSY_AT", 3)
    monkeypatch.setattr(panel_tickets, "COUNT_CAP", 4)
    key = await panel.create_ticket()
    play = {"key": key, "app": "demo-live", "video": "mystream"}
    for n in range(6):
        await harness.check(**play, **{"pass": "pw-1234"}, ip=f"198.51.100.{n}")
    for n in range(3):
        await harness.check(**play, **{"pass": "wrong"}, ip=f"198.51.100.{n}")
    storage = harness.app.state.storage
    cdn = harness.account.cdn
    page = await panel.get(f"/panel/tickets/{key}")
    assert "more than 4 allowed" in page.text and "3 denied" in page.text
    assert "198.51.100.5" in page.text.split("Seen in attempts")[1]
    assert await count_filters_of(storage, cdn, [AttemptFilter(key=key)]) == {}
    status, body = await harness.call("sevu.errorcount", key=key, success=1)
    assert (status, body["error_count"]) == (200, 6)
    made = await count_filters_of(storage, cdn, [AttemptFilter(key=key)])
    assert list(made) == [1]  # the key's own filter, which the page now reads
    again = await panel.get(f"/panel/tickets/{key}")
    assert "more than 4 allowed" in again.text and "3 denied" in again.text


async def test_pages_escape_what_publishers_and_viewers_send(
    harness: Harness, panel: Panel
) -> None:
    hostile = '<script>alert("x")</script>'
    key = await panel.create_ticket(video=hostile)
    await harness.check(key=key, **{"pass": hostile}, app="demo-live", video=hostile)
    for path in (f"/panel/tickets/{key}", "/panel/attempts", "/panel/tickets", "/panel/"):
        page = await panel.get(path)
        assert hostile not in page.text, path
    assert "&lt;script&gt;" in (await panel.get(f"/panel/tickets/{key}")).text


async def test_unknown_and_odd_keys_are_not_found(panel: Panel) -> None:
    for key in ("nope", "a%2Fb", "..%2F..%2Fapi", "x" * 2000):
        response = await panel.get(f"/panel/tickets/{key}")
        assert response.status_code == 404
        assert "Your account has no ticket with this key." in response.text


async def test_seen_addresses_rank_the_latest_attempts_only(
    harness: Harness, panel: Panel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(panel_tickets, "ADDRESS_WINDOW", 4)
    key = await panel.create_ticket()
    play = {"key": key, "app": "demo-live", "video": "mystream", "pass": "pw-1234"}
    for ip in ["198.51.100.1"] * 3 + ["198.51.100.2"] * 4:
        await harness.check(**play, ip=ip)
    text = (await panel.get(f"/panel/tickets/{key}")).text
    seen = text.split("Seen in attempts")[1].split("Recent attempts")[0]
    assert "Among the latest 4 attempts." in seen
    assert "198.51.100.2" in seen and "198.51.100.1" not in seen
