"""The Publishers page, in-process: the account's stream users, adding one
with a pass shown once, replacing the pass, removing (each asked first, with
CSRF), never another account's; and the publish log."""

from __future__ import annotations

import dataclasses
import html
import logging
import re
from urllib.parse import quote

import httpx
import pytest

from tests.conftest import Harness
from tests.panel.conftest import Panel
from usher.config import parse_publish_url
from usher.passwords import verify_password
from usher.tickets.publishers import PUBLISH_REASON_TEXT, PublishAttempt, StreamUser
from usher.web.panel.publishers import LOG_PAGE_SIZE, PASS_BYTES

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("cheap_publisher_hashes")]

_FIELD = re.compile(r'id="(encoder-url|obs-server|obs-key|publish-pass)"[^>]*value="([^"]*)"')


def copy_fields(page: str) -> dict[str, str]:
    """The values of the page's Copy fields, by id."""
    return {name: html.unescape(value) for name, value in _FIELD.findall(page)}


async def stored(harness: Harness, cdn: int | None = None) -> list[StreamUser]:
    storage = harness.app.state.storage
    return await storage.list_stream_users(cdn or harness.account.cdn)


async def add(panel: Panel, **fields: str) -> str:
    """Add a stream user through the form; the result page."""
    values = {"app": "demo-live", "stream": "mystream", "access": "user", "user": "enc", **fields}
    response = await panel.post("/panel/publishers/new", values)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    return response.text


def pass_of(page: str) -> str:
    password = copy_fields(page)["publish-pass"]
    assert password
    return password


# -- listing and adding -------------------------------------------------------


async def test_the_nav_links_the_page_and_an_empty_list_says_so(panel: Panel) -> None:
    overview = await panel.get("/panel/")
    assert 'href="/panel/publishers"' in overview.text
    page = await panel.get("/panel/publishers")
    assert page.status_code == 200
    assert 'aria-current="page">Publishers' in page.text
    assert "No stream users yet" in page.text


async def test_adding_shows_a_strong_pass_once_with_encoder_urls(
    harness: Harness, panel: Panel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    result = await add(panel, user="my enc&1")
    password = pass_of(result)
    # secrets.token_urlsafe: URL-safe, at least 128 bits.
    assert re.fullmatch(r"[A-Za-z0-9_-]+", password)
    assert len(password) >= 4 * PASS_BYTES // 3 and PASS_BYTES * 8 >= 128
    fields = copy_fields(result)
    query = f"?user={quote('my enc&1', safe='')}&pass={password}"
    # No USHER_PUBLISH_URL: the host the panel was reached by, without its port.
    assert fields["encoder-url"] == f"rtmp://usher.test/demo-live/mystream{query}"
    assert fields["obs-server"] == "rtmp://usher.test/demo-live"
    assert fields["obs-key"] == f"mystream{query}"
    assert "This is the only time Usher shows the pass" in result

    # Stored: only its hash, which the pass matches.
    (entry,) = await stored(harness)
    assert (entry.app, entry.stream, entry.user) == ("demo-live", "mystream", "my enc&1")
    assert entry.pass_hash and password not in entry.pass_hash
    assert verify_password(password, entry.pass_hash)

    # Never again: not on the list, its confirmation pages, nor in any log.
    later = [
        await panel.get("/panel/publishers"),
        await panel.get(f"/panel/publishers/{entry.id}/replace"),
        await panel.get(f"/panel/publishers/{entry.id}/remove"),
        await panel.get("/panel/"),
    ]
    for response in later:
        assert response.status_code == 200
        assert password not in response.text
    listing = later[0].text
    assert f'data-streamuser="{entry.id}"' in listing and "my enc&amp;1" in listing
    assert password not in caplog.text
    _, body = await harness.call("sevu.liststreamusers")
    assert password not in str(body)


async def test_the_publish_url_setting_names_the_server(harness: Harness, panel: Panel) -> None:
    state = harness.app.state
    url = parse_publish_url("rtmp://live.example.com:1935/")
    state.settings = dataclasses.replace(state.settings, publish_url=url)
    fields = copy_fields(await add(panel))
    assert fields["obs-server"] == "rtmp://live.example.com:1935/demo-live"
    assert fields["encoder-url"].startswith("rtmp://live.example.com:1935/demo-live/mystream?")


async def test_every_stream_entries_show_a_placeholder_stream(panel: Panel) -> None:
    result = await add(panel, stream="*")
    fields = copy_fields(result)
    assert fields["obs-key"].startswith("your-stream-name?user=enc&pass=")
    assert "replace <code>your-stream-name</code>" in result


async def test_an_open_entry_has_no_pass(harness: Harness, panel: Panel) -> None:
    result = await add(panel, access="open", user="")
    fields = copy_fields(result)
    assert "publish-pass" not in fields
    assert fields["encoder-url"] == "rtmp://usher.test/demo-live/mystream"
    (entry,) = await stored(harness)
    assert entry.user is None and entry.pass_hash is None
    listing = (await panel.get("/panel/publishers")).text
    assert "Open entry" in listing
    # Nothing to replace on an open entry.
    assert f"/publishers/{entry.id}/replace" not in listing
    refused = await panel.post(f"/panel/publishers/{entry.id}/replace", {})
    assert refused.status_code == 400


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"app": "other-live"}, "app", "app: "),
        ({"app": "demo-a|demo-b"}, "app", "app: give one application name"),
        ({"stream": ""}, "stream", "stream: give a stream name"),
        ({"stream": "a*"}, "stream", "stream: give one stream name"),
        ({"user": ""}, "user", "Give the user name"),
        ({"access": "open", "user": "enc"}, "user", "An open entry has no user"),
        ({"user": "u" * 257}, "user", "user: the value is longer than 256"),
    ],
)
async def test_the_form_refuses_what_sevu_addstreamuser_refuses(
    harness: Harness, panel: Panel, fields: dict[str, str], field: str, message: str
) -> None:
    values = {"app": "demo-live", "stream": "mystream", "access": "user", "user": "enc", **fields}
    response = await panel.post("/panel/publishers/new", values)
    assert response.status_code == 400
    assert message in html.unescape(response.text)
    assert f'id="f-{field}" name="{field}"' in response.text
    assert re.search(rf'id="f-{field}"[^>]*aria-invalid="true"', response.text)
    assert "publish-pass" not in response.text
    assert await stored(harness) == []


async def test_adding_an_existing_entry_points_to_replace(harness: Harness, panel: Panel) -> None:
    first = pass_of(await add(panel))
    response = await panel.post(
        "/panel/publishers/new",
        {"app": "demo-live", "stream": "mystream", "access": "user", "user": "enc"},
    )
    assert response.status_code == 400
    assert "already have an entry" in response.text
    (entry,) = await stored(harness)
    assert entry.pass_hash and verify_password(first, entry.pass_hash)


async def test_forms_without_the_csrf_token_change_nothing(harness: Harness, panel: Panel) -> None:
    values = {"app": "demo-live", "stream": "mystream", "access": "user", "user": "enc"}
    refused = await panel.post("/panel/publishers/new", values, csrf=False)
    assert refused.status_code == 403
    assert await stored(harness) == []
    await add(panel)
    (entry,) = await stored(harness)
    for action in ("replace", "remove"):
        refused = await panel.post(f"/panel/publishers/{entry.id}/{action}", {}, csrf=False)
        assert refused.status_code == 403
        wrong = await panel.post(f"/panel/publishers/{entry.id}/{action}", {"csrf": "x" * 43})
        assert wrong.status_code == 403
    assert await stored(harness) == [entry]


# -- replace and remove -------------------------------------------------------


async def test_replacing_the_pass_is_asked_first_and_keeps_the_settings(
    harness: Harness, panel: Panel
) -> None:
    status, body = await harness.call(
        "sevu.addstreamuser",
        app="demo-live",
        stream="mystream",
        user="enc",
        **{"pass": "old-pass-123"},
        record=1,
        segment_type="duration",
        segment_value=600,
    )
    assert status == 200, body
    (before,) = await stored(harness)
    listing = (await panel.get("/panel/publishers")).text
    assert "record=1 segment_type=duration segment_value=600" in listing
    confirm = await panel.get(f"/panel/publishers/{before.id}/replace")
    assert "Replace this publisher's pass?" in confirm.text
    assert f'action="/panel/publishers/{before.id}/replace"' in confirm.text
    assert 'name="csrf"' in confirm.text

    response = await panel.post(f"/panel/publishers/{before.id}/replace", {})
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert "Pass replaced" in response.text
    password = pass_of(response.text)
    (after,) = await stored(harness)
    assert after.id == before.id and after.settings == before.settings
    assert after.pass_hash and verify_password(password, after.pass_hash)
    assert not verify_password("old-pass-123", after.pass_hash)
    assert password not in (await panel.get("/panel/publishers")).text


async def test_removing_is_asked_first(harness: Harness, panel: Panel) -> None:
    await add(panel)
    await add(panel, stream="other")
    first, second = await stored(harness)
    confirm = await panel.get(f"/panel/publishers/{first.id}/remove")
    assert "Remove this publisher?" in confirm.text
    response = await panel.post(f"/panel/publishers/{first.id}/remove", {})
    assert response.status_code == 303
    assert response.headers["location"] == "/panel/publishers?removed=1"
    assert await stored(harness) == [second]
    assert "Stream user removed" in (await panel.get("/panel/publishers", removed="1")).text
    again = await panel.post(f"/panel/publishers/{first.id}/remove", {})
    assert again.status_code == 404


@pytest.mark.parametrize("id", ["0", "abc", "-1", "9" * 19, "9" * 40])
async def test_ids_that_name_nothing_are_not_found(panel: Panel, id: str) -> None:
    for action in ("replace", "remove"):
        assert (await panel.get(f"/panel/publishers/{id}/{action}")).status_code == 404
        assert (await panel.post(f"/panel/publishers/{id}/{action}", {})).status_code == 404


async def test_another_accounts_stream_user_is_not_found(
    harness: Harness, panel: Panel, rival: Panel
) -> None:
    password = pass_of(await add(panel))
    (entry,) = await stored(harness)
    for action in ("replace", "remove"):
        assert (await rival.get(f"/panel/publishers/{entry.id}/{action}")).status_code == 404
        assert (await rival.post(f"/panel/publishers/{entry.id}/{action}", {})).status_code == 404
    assert await stored(harness) == [entry]
    assert entry.pass_hash and verify_password(password, entry.pass_hash)
    theirs = (await rival.get("/panel/publishers")).text
    assert f'data-streamuser="{entry.id}"' not in theirs and "demo-live" not in theirs
    # Nor can they add to this account's apps.
    response = await rival.post(
        "/panel/publishers/new",
        {"app": "demo-live", "stream": "x", "access": "open", "user": ""},
    )
    assert response.status_code == 400
    assert await stored(harness, rival.account.cdn) == []


async def test_signed_out_the_page_asks_to_sign_in(harness: Harness) -> None:
    response = await harness.http.get("/panel/publishers")
    assert response.status_code == 303
    assert response.headers["location"].startswith("/panel/sign-in?next=%2Fpanel%2Fpublishers")


# -- the publish log ------------------------------------------------------------


async def log_row(harness: Harness, cdn: int | None = None, **fields: object) -> int:
    """Write one publish log row as the hooks do; its id."""
    values: dict[str, object] = {
        "id": 0,
        "cdn": harness.account.cdn if cdn is None else cdn,
        "at": int(harness.clock()),
        "ip": "192.0.2.7",
        "app": "demo-live",
        "stream": "mystream",
        "user": "enc",
        "allowed": False,
        "reason": "bad_credentials",
        "server": "nginx-rtmp",
        "server_ip": "127.0.0.1",
        "stream_user_id": None,
        **fields,
    }
    return await harness.app.state.storage.record_publish(PublishAttempt(**values))  # type: ignore[arg-type]  # the test's field values


def log_ids(page: str) -> list[int]:
    return [int(id) for id in re.findall(r'<tr data-publish="(\d+)">', page)]


async def test_the_log_shows_each_publish_with_its_reason_and_server(
    harness: Harness, panel: Panel, rival: Panel
) -> None:
    denied = await log_row(harness)
    allowed = await log_row(
        harness, ip="198.51.100.4", allowed=True, reason="credentials", server="srs"
    )
    await log_row(harness, cdn=rival.account.cdn, app="rival-live", ip="203.0.113.9")
    page = (await panel.get("/panel/publishers/log")).text
    assert log_ids(page) == [allowed, denied]  # newest first, only this account's
    assert PUBLISH_REASON_TEXT["bad_credentials"] in page
    assert PUBLISH_REASON_TEXT["credentials"] in page
    assert "203.0.113.9" not in page and "rival-live" not in page
    assert "nginx-rtmp" in page and "srs" in page and "127.0.0.1" in page
    assert 'href="/panel/publishers/log"' in (await panel.get("/panel/publishers")).text


async def test_the_log_filters_by_outcome_address_and_app(harness: Harness, panel: Panel) -> None:
    a = await log_row(harness)
    b = await log_row(harness, allowed=True, reason="open", user=None)
    c = await log_row(harness, ip="198.51.100.4", app="demo-backup", reason="no_stream_user")

    async def ids(**filters: str) -> list[int]:
        response = await panel.get("/panel/publishers/log", **filters)
        assert response.status_code == 200
        return log_ids(response.text)

    assert await ids() == [c, b, a]
    assert await ids(outcome="denied") == [c, a]
    assert await ids(outcome="allowed") == [b]
    assert await ids(ip="198.51.100.4") == [c]
    assert await ids(app="demo-live") == [b, a]
    assert await ids(app="demo-live", outcome="denied", ip="192.0.2.7") == [a]
    assert await ids(app="nothing") == []


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"outcome": "maybe"}, "The outcome filter must be"),
        ({"ip": "1" * 1025}, "The ip filter is longer than"),
        ({"before": "abc"}, "This page link is damaged"),
        ({"before": "9" * 20}, "This page link is damaged"),
    ],
)
async def test_the_log_refuses_filters_no_form_makes(
    panel: Panel, params: dict[str, str], message: str
) -> None:
    response = await panel.get("/panel/publishers/log", **params)
    assert response.status_code == 400
    assert message in response.text


async def test_the_log_pages_by_cursor(harness: Harness, panel: Panel) -> None:
    written = [await log_row(harness, stream=f"s{i}") for i in range(2 * LOG_PAGE_SIZE + 5)]
    await log_row(harness, allowed=True, reason="open")  # filtered out below
    newest = list(reversed(written))
    seen: list[int] = []
    params: dict[str, str] = {"outcome": "denied"}
    for _ in range(5):
        page = (await panel.get("/panel/publishers/log", **params)).text
        seen += log_ids(page)
        older = re.search(r'rel="next" href="([^"]+)"', page)
        if older is None:
            break
        link = httpx.URL(html.unescape(older.group(1)))
        params = dict(link.params)
        assert params["outcome"] == "denied" and params["before"] == str(seen[-1])
    assert seen == newest
    # A cursor past the oldest row says so.
    empty = await panel.get("/panel/publishers/log", before=str(written[0]))
    assert empty.status_code == 200 and "No older publishes" in empty.text


async def test_a_denied_publish_through_the_hook_is_in_the_log(
    harness: Harness, panel: Panel
) -> None:
    password = pass_of(await add(panel))
    response = await harness.http.post(
        "/usher/nginx-rtmp",
        data={
            "call": "publish",
            "app": "demo-live",
            "name": "mystream",
            "addr": "192.0.2.99",
            "clientid": "1",
            "user": "enc",
            "pass": "wrong-pass",
        },
    )
    assert response.status_code == 403
    ok = await harness.http.post(
        "/usher/nginx-rtmp",
        data={
            "call": "publish",
            "app": "demo-live",
            "name": "mystream",
            "addr": "192.0.2.98",
            "clientid": "2",
            "user": "enc",
            "pass": password,
        },
    )
    assert ok.status_code == 200, ok.text
    page = (await panel.get("/panel/publishers/log", outcome="denied")).text
    assert len(log_ids(page)) == 1
    assert "192.0.2.99" in page and PUBLISH_REASON_TEXT["bad_credentials"] in page
    assert "wrong-pass" not in page
    everything = (await panel.get("/panel/publishers/log")).text
    assert len(log_ids(everything)) == 2 and password not in everything
