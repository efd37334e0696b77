"""Live sessions in the panel, in-process: max_viewers on the new-ticket
form, who is watching on a ticket's page, kicking (asked first, CSRF, never
another account's), watching now on the overview, and the sessions page."""

from __future__ import annotations

import re

import pytest
from markupsafe import escape

from tests.conftest import Clock, Harness
from tests.panel.conftest import Panel
from usher.web.panel import sessions as panel_sessions
from usher.web.panel.overview import CHARTS_TTL
from usher.web.panel.render import how_long

pytestmark = pytest.mark.anyio

PLAY = {"app": "demo-live", "video": "mystream", "pass": "pw-1234"}


async def watch(harness: Harness, key: str, ip: str, **extra: str) -> str:
    """Start one session through /usher/check; its id."""
    status, body = await harness.check(key=key, ip=ip, **PLAY, **extra)
    assert status == 200 and body["allowed"], body
    session = body["session"]
    assert isinstance(session, str) and session
    return session


async def recheck(harness: Harness, key: str, ip: str, session: str) -> tuple[bool, str]:
    """A sign of life of ``session``: whether it is allowed, and why not."""
    _, body = await harness.check(key=key, ip=ip, session=session, **PLAY)
    return bool(body["allowed"]), str(body["reason"])


async def open_ids(harness: Harness, **filters: object) -> set[str]:
    _, body = await harness.call("sevu.sessions", open=1, **filters)
    return {s["id"] for s in body.get("sessions", [])}


async def kicked_metric(harness: Harness) -> float:
    text = (await harness.http.get("/metrics")).text
    found = re.search(r'^usher_session_ends_total\{reason="kicked"\} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def session_rows(html: str) -> list[str]:
    return re.findall(r'<tr data-session="([^"]+)">', html)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0 s"), (45, "45 s"), (75, "1 min 15 s"), (3725, "1 h 02 min"), (273600, "3 d 4 h")],
)
def test_durations_read_as_the_two_largest_units(seconds: int, text: str) -> None:
    assert how_long(seconds) == text


# -- the new-ticket form ------------------------------------------------------


async def test_new_form_sets_max_viewers(harness: Harness, panel: Panel) -> None:
    form = await panel.get("/panel/tickets/new")
    assert 'name="max_viewers" type="text" value="0"' in form.text
    limited = await panel.create_ticket(max_viewers="2")
    _, body = await harness.call("sevu.status", key=limited)
    assert body["max_viewers"] == 2
    assert "at most 2" in (await panel.get(f"/panel/tickets/{limited}")).text
    # Empty is the command's default: no limit.
    free = await panel.create_ticket(max_viewers="")
    _, body = await harness.call("sevu.status", key=free)
    assert body["max_viewers"] == 0
    assert "no limit" in (await panel.get(f"/panel/tickets/{free}")).text


@pytest.mark.parametrize("value", ["-1", "many", "1.5", "99999999999999999999"])
async def test_new_form_refuses_what_sevu_request_refuses(
    harness: Harness, panel: Panel, value: str
) -> None:
    values = {"app": "demo-live", "video": "v", "pass": "p", "ip": "", "uses": "0"}
    _, api = await harness.call("sevu.request", **values, max_viewers=value)
    assert api["status"] == "failure"
    response = await panel.post("/panel/tickets/new", {**values, "max_viewers": value})
    assert response.status_code == 400
    assert str(escape(api["message"])) in response.text
    assert re.search(r'id="f-max_viewers"[^>]*aria-invalid="true"', response.text)
    _, found = await harness.call("sevu.search")
    assert found["ticket_count"] == 0


async def test_max_viewers_from_the_form_limits_playback(harness: Harness, panel: Panel) -> None:
    key = await panel.create_ticket(max_viewers="1")
    await watch(harness, key, "198.51.100.1")
    status, body = await harness.check(key=key, ip="198.51.100.2", **PLAY)
    assert (status, body["reason"]) == (403, "Too many viewers")


# -- a ticket's page: who is watching, and kicks --------------------------------


async def test_ticket_page_lists_its_open_sessions(
    harness: Harness, panel: Panel, clock: Clock
) -> None:
    key = await panel.create_ticket(max_viewers="3")
    first = await watch(harness, key, "198.51.100.1")
    clock.advance(30)
    second = await watch(harness, key, "198.51.100.2")
    done = await watch(harness, key, "198.51.100.3")
    ended = await harness.http.post("/usher/check/done", data={"session": done})
    assert ended.json() == {"ended": True}
    clock.advance(15)
    page = await panel.get(f"/panel/tickets/{key}")
    assert page.status_code == 200
    assert "Watching now: <span data-watching>2</span>" in page.text
    assert "of at most 3" in page.text
    # Newest first; the ended session is not listed.
    assert session_rows(page.text) == [second, first]
    row = page.text.split(f'data-session="{first}"')[1].split("</tr>")[0]
    assert "198.51.100.1" in row and ">check<" in row
    assert "2027-01-15 08:00:00" in row  # started
    assert "45 s" in row  # watching for, until now
    assert f"/kick?session={first}" in row
    assert f"/panel/tickets/{key}/kick?all=1" in page.text
    assert f"/panel/sessions?key={key}" in page.text


async def test_kick_one_asks_first_then_ends_only_that_session(
    harness: Harness, panel: Panel
) -> None:
    key = await panel.create_ticket()
    stay = await watch(harness, key, "198.51.100.1")
    leave = await watch(harness, key, "198.51.100.2")
    before = await kicked_metric(harness)
    confirm = await panel.get(f"/panel/tickets/{key}/kick", session=leave)
    assert confirm.status_code == 200
    assert "Kick this viewer?" in confirm.text and "198.51.100.2" in confirm.text
    assert f'name="session" value="{leave}"' in confirm.text
    assert await open_ids(harness, key=key) == {stay, leave}, "asking must not kick"
    response = await panel.post(f"/panel/tickets/{key}/kick", {"session": leave})
    assert response.status_code == 303
    assert response.headers["location"] == f"/panel/tickets/{key}?kicked=1"
    assert await open_ids(harness, key=key) == {stay}
    assert await recheck(harness, key, "198.51.100.2", leave) == (False, "Session ended")
    assert await recheck(harness, key, "198.51.100.1", stay) == (True, "")
    assert await kicked_metric(harness) == before + 1
    page = await panel.get(f"/panel/tickets/{key}", kicked="1")
    assert "1 session kicked." in page.text
    assert session_rows(page.text) == [stay]
    # Kicking it again ends nothing; the page says so instead of pretending.
    again = await panel.post(f"/panel/tickets/{key}/kick", {"session": leave})
    assert again.headers["location"] == f"/panel/tickets/{key}?kicked=0"
    assert "No session was kicked" in (await panel.get(f"/panel/tickets/{key}", kicked="0")).text
    gone = await panel.get(f"/panel/tickets/{key}/kick", session=leave)
    assert gone.status_code == 404 and "Session not open" in gone.text


async def test_kick_all_ends_every_open_session_of_the_ticket(
    harness: Harness, panel: Panel
) -> None:
    key = await panel.create_ticket()
    other = await panel.create_ticket(video="mystream")
    for n in range(3):
        await watch(harness, key, f"198.51.100.{n}")
    elsewhere = await watch(harness, other, "198.51.100.9")
    before = await kicked_metric(harness)
    confirm = await panel.get(f"/panel/tickets/{key}/kick", all="1")
    assert confirm.status_code == 200 and "Kick every viewer?" in confirm.text
    assert 'name="all" value="1"' in confirm.text
    response = await panel.post(f"/panel/tickets/{key}/kick", {"all": "1"})
    assert response.headers["location"] == f"/panel/tickets/{key}?kicked=3"
    assert await open_ids(harness, key=key) == set()
    assert await open_ids(harness, key=other) == {elsewhere}
    assert await kicked_metric(harness) == before + 3
    page = await panel.get(f"/panel/tickets/{key}", kicked="3")
    assert "3 sessions kicked." in page.text
    assert "Nobody is watching with this ticket now." in page.text
    assert "Kick all…" not in page.text
    _, body = await harness.call("sevu.status", key=key)
    assert body["active"] == 1, "a kick is not a revoke"


@pytest.mark.parametrize(
    "form",
    [{}, {"session": ""}, {"all": "0"}, {"all": "1", "session": "x"}, {"session": "x" * 1025}],
    ids=["nothing", "empty-session", "all-0", "both", "long-id"],
)
async def test_a_kick_must_name_one_session_or_all(
    harness: Harness, panel: Panel, form: dict[str, str]
) -> None:
    key = await panel.create_ticket()
    session = await watch(harness, key, "198.51.100.1")
    response = await panel.post(f"/panel/tickets/{key}/kick", form)
    assert response.status_code == 400
    assert "Say which viewers to kick" in response.text
    confirm = await panel.get(f"/panel/tickets/{key}/kick", **form)
    assert confirm.status_code == 400
    assert await open_ids(harness, key=key) == {session}


async def test_kicks_without_the_csrf_token_are_refused(harness: Harness, panel: Panel) -> None:
    key = await panel.create_ticket()
    session = await watch(harness, key, "198.51.100.1")
    for form in ({"session": session}, {"all": "1"}):
        for csrf in (None, "", "forged-token"):
            data = form if csrf is None else {**form, "csrf": csrf}
            refused = await panel.post(f"/panel/tickets/{key}/kick", data, csrf=False)
            assert refused.status_code == 403
            assert "Nothing was changed." in refused.text
        cross_site = await panel.http.post(
            f"/panel/tickets/{key}/kick",
            data={"csrf": panel.csrf, **form},
            headers={"origin": "https://evil.example"},
        )
        assert cross_site.status_code == 403
    assert await open_ids(harness, key=key) == {session}


async def test_one_account_cannot_see_or_kick_anothers_sessions(
    harness: Harness, panel: Panel, rival: Panel
) -> None:
    key = await panel.create_ticket()
    session = await watch(harness, key, "198.51.100.1")
    # Through the owner's ticket: not found, as for revoking.
    for params in ({"session": session}, {"all": "1"}):
        seen = await rival.get(f"/panel/tickets/{key}/kick", **params)
        assert seen.status_code == 404 and "Ticket not found" in seen.text
        assert session not in seen.text
        kicked = await rival.post(f"/panel/tickets/{key}/kick", params)
        assert kicked.status_code == 404
    # Through a ticket of its own, naming the owner's session: nothing ends,
    # and the answer is the one for any id that is not open.
    own = await rival.create_ticket(app="rival-live")
    seen = await rival.get(f"/panel/tickets/{own}/kick", session=session)
    assert seen.status_code == 404 and "Session not open" in seen.text
    assert "198.51.100.1" not in seen.text
    kicked = await rival.post(f"/panel/tickets/{own}/kick", {"session": session})
    assert kicked.headers["location"] == f"/panel/tickets/{own}?kicked=0"
    assert await open_ids(harness, key=key) == {session}
    assert await recheck(harness, key, "198.51.100.1", session) == (True, "")
    # Nor through the sessions page or the overview.
    listed = await rival.get("/panel/sessions")
    assert session not in listed.text and "data-total>0<" in listed.text
    assert "data-total>0<" in (await rival.get("/panel/sessions", key=key)).text
    assert 'data-kpi="watching">0<' in (await rival.get("/panel/charts")).text
    # The owner still sees it.
    assert session_rows((await panel.get("/panel/sessions")).text) == [session]


# -- the overview ---------------------------------------------------------------


async def test_watching_now_follows_starts_and_kicks(
    harness: Harness, panel: Panel, clock: Clock
) -> None:
    async def watching() -> str:
        clock.advance(CHARTS_TTL + 1)  # past the charts' reuse
        found = re.search(
            r'data-kpi="watching">(\d+)<', (await panel.get("/panel/charts", range="1h")).text
        )
        assert found is not None
        return found.group(1)

    overview = await panel.get("/panel/")
    assert 'data-kpi="watching">0<' in overview.text
    assert "/panel/sessions?open=1" in overview.text
    key = await panel.create_ticket()
    first = await watch(harness, key, "198.51.100.1")
    await watch(harness, key, "198.51.100.2")
    assert await watching() == "2"
    await panel.post(f"/panel/tickets/{key}/kick", {"session": first})
    assert await watching() == "1"
    await panel.post(f"/panel/tickets/{key}/kick", {"all": "1"})
    assert await watching() == "0"


# -- the sessions page ------------------------------------------------------------


async def test_sessions_page_shows_history_newest_first_with_filters(
    harness: Harness, panel: Panel, clock: Clock
) -> None:
    key = await panel.create_ticket()
    other = await panel.create_ticket(video="mystream")
    done = await watch(harness, key, "198.51.100.1")
    clock.advance(75)
    await harness.http.post("/usher/check/done", data={"session": done})
    kicked = await watch(harness, key, "198.51.100.2")
    clock.advance(10)
    await panel.post(f"/panel/tickets/{key}/kick", {"session": kicked})
    clock.advance(5)
    live = await watch(harness, other, "198.51.100.1")
    clock.advance(100)  # a sign of life keeps it open
    assert await recheck(harness, other, "198.51.100.1", live) == (True, "")

    page = await panel.get("/panel/sessions")
    assert page.status_code == 200
    assert 'aria-current="page">Sessions<' in page.text
    assert session_rows(page.text) == [live, kicked, done]
    assert "data-total>3<" in page.text
    rows = {
        sid: page.text.split(f'data-session="{sid}"')[1].split("</tr>")[0]
        for sid in (live, kicked, done)
    }
    assert "demo-live / mystream" in rows[done] and "198.51.100.1" in rows[done]
    assert ">done<" in rows[done] and "1 min 15 s" in rows[done]
    assert "2027-01-15 08:00:00" in rows[done] and "2027-01-15 08:01:15" in rows[done]
    assert ">kicked<" in rows[kicked] and "10 s" in rows[kicked]
    assert "Open" in rows[live] and "1 min 40 s" in rows[live]
    assert f"/panel/tickets/{other}/kick?session={live}" in rows[live]
    assert "/kick?" not in rows[done]

    by_key = await panel.get("/panel/sessions", key=key)
    assert session_rows(by_key.text) == [kicked, done]
    by_ip = await panel.get("/panel/sessions", ip="198.51.100.1")
    assert session_rows(by_ip.text) == [live, done]
    assert session_rows((await panel.get("/panel/sessions", open="1")).text) == [live]
    ended = await panel.get("/panel/sessions", open="0", ip="198.51.100.1")
    assert session_rows(ended.text) == [done]
    assert '<option value="0" selected>' in ended.text
    assert "data-total>1<" in ended.text
    none = await panel.get("/panel/sessions", key="nope")
    assert "No sessions." in none.text and "data-total>0<" in none.text


async def test_sessions_page_refuses_what_sevu_sessions_refuses(
    harness: Harness, panel: Panel
) -> None:
    _, api = await harness.call("sevu.sessions", open="maybe")
    assert api["status"] == "failure"
    page = await panel.get("/panel/sessions", open="maybe")
    assert page.status_code == 400
    assert str(escape(api["message"])) in page.text


async def test_sessions_page_pages_by_cursor_and_caps_its_count(
    harness: Harness, panel: Panel, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(panel_sessions, "PAGE_SIZE", 2)
    monkeypatch.setattr(panel_sessions, "COUNT_CAP", 3)
    key = await panel.create_ticket()
    ids = []
    for n in range(5):
        ids.append(await watch(harness, key, f"198.51.100.{n}"))
        if n != 2:  # two starts in one second: their order is by id
            clock.advance(1)
    first = await panel.get("/panel/sessions", key=key)
    shown = session_rows(first.text)
    assert shown == [ids[4], max(ids[2], ids[3])]
    assert 'More than <span class="count" data-total="capped">3</span>' in first.text
    assert "Newer" not in first.text
    older = re.search(r'href="(/panel/sessions\?[^"]*before=[^"]+)"', first.text)
    assert older is not None
    second = await panel.http.get(older.group(1).replace("&amp;", "&"))
    assert session_rows(second.text) == [min(ids[2], ids[3]), ids[1]]
    third_link = re.search(r'href="(/panel/sessions\?[^"]*before=[^"]+)"', second.text)
    assert third_link is not None
    third = await panel.http.get(third_link.group(1).replace("&amp;", "&"))
    assert session_rows(third.text) == [ids[0]]
    assert "Older" not in third.text
    # Newer from the last page comes back, and the filter is kept.
    newer = re.search(r'href="(/panel/sessions\?[^"]*after=[^"]+)"', third.text)
    assert newer is not None and f"key={key}" in newer.group(1)
    back = await panel.http.get(newer.group(1).replace("&amp;", "&"))
    assert session_rows(back.text) == session_rows(second.text)


@pytest.mark.parametrize(
    "params",
    [
        {"before": "x-1"},
        {"before": "12"},
        {"after": "-abc"},
        {"before": "1-a", "after": "1-a"},
        {"before": "9" * 20 + "-a"},
    ],
    ids=["not-a-time", "no-id", "no-time", "both", "huge"],
)
async def test_sessions_page_refuses_damaged_links(panel: Panel, params: dict[str, str]) -> None:
    page = await panel.get("/panel/sessions", **params)
    assert page.status_code == 400
    assert "Newest sessions" in page.text


async def test_sessions_page_escapes_what_viewers_send(harness: Harness, panel: Panel) -> None:
    hostile = '<script>alert("x")</script>'
    key = await panel.create_ticket()
    session = await watch(harness, key, "198.51.100.1", session=hostile)
    assert session == hostile
    for path in ("/panel/sessions", f"/panel/tickets/{key}"):
        page = await panel.get(path)
        assert hostile not in page.text, path
        assert "&lt;script&gt;" in page.text, path
    confirm = await panel.get(f"/panel/tickets/{key}/kick", session=hostile)
    assert confirm.status_code == 200 and hostile not in confirm.text
    response = await panel.post(f"/panel/tickets/{key}/kick", {"session": hostile})
    assert response.headers["location"].endswith("?kicked=1")
