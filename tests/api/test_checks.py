"""``/usher/check`` in-process: every reason of the contract, auto binding, use
counting, who may call, and what gets logged."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.conftest import Harness
from usher import accounts

pytestmark = pytest.mark.anyio

CLIENT = "198.51.100.7"


async def play(harness: Harness, ticket: dict[str, Any], **changes: str) -> tuple[int, str]:
    params = {
        "key": ticket["key"],
        "pass": ticket["pass"],
        "app": "demo-live",
        "video": "mystream",
        "ip": CLIENT,
    }
    params.update(changes)
    status, body = await harness.check(**params)
    assert body["allowed"] is (status == 200)
    return status, body["reason"]


async def last_attempt(harness: Harness, key: str) -> dict[str, Any]:
    _, body = await harness.call("sevu.errorlog", key=key)
    attempts: list[dict[str, Any]] = body["attempts"]
    return attempts[-1]


async def test_allowed_play_counts_a_use_and_logs(harness: Harness) -> None:
    ticket = await harness.ticket(uses=3)
    assert await play(harness, ticket) == (200, "")
    _, body = await harness.call("sevu.status", key=ticket["key"])
    assert body["use_count"] == 1
    assert body["used_date"] == "2027-01-15 08:00:00"
    attempt = await last_attempt(harness, ticket["key"])
    assert attempt["success"] == 1 and attempt["reason"] == ""


@pytest.mark.parametrize(
    ("ticket_fields", "changes", "reason"),
    [
        ({}, {"pass": "wrong"}, "Invalid Auth Token"),
        ({}, {"key": "mystream.00000000000000.00000000"}, "Invalid Auth Token"),
        ({"active": 0}, {}, "Ticket revoked"),
        ({}, {"app": "demo-other"}, "Invalid Application"),
        ({}, {"video": "otherstream"}, "Invalid Video"),
        ({"ip": "203.0.113.0/24"}, {}, "Invalid IP Address"),
        ({"ip": "203.0.113.0/24"}, {"ip": "garbage"}, "Invalid IP Address"),
    ],
)
async def test_each_denial_reason(
    harness: Harness, ticket_fields: dict[str, object], changes: dict[str, str], reason: str
) -> None:
    ticket = await harness.ticket(**ticket_fields)
    assert await play(harness, ticket, **changes) == (403, reason)
    attempt = await last_attempt(harness, ticket["key"]) if "key" not in changes else None
    if attempt is not None:
        assert attempt["success"] == 0 and attempt["reason"] == reason


async def test_expired_and_exhausted(harness: Harness) -> None:
    ticket = await harness.ticket(expire="+1 hour", uses=1)
    assert await play(harness, ticket) == (200, "")
    assert await play(harness, ticket) == (403, "Ticket uses exhausted")
    harness.clock.advance(3600)
    assert await play(harness, ticket) == (403, "Expiration date surpassed")


async def test_uses_zero_is_unlimited(harness: Harness) -> None:
    ticket = await harness.ticket(uses=0)
    for _ in range(20):
        assert await play(harness, ticket) == (200, "")


async def test_revoke_and_disabled_account(harness: Harness) -> None:
    ticket = await harness.ticket()
    assert await play(harness, ticket) == (200, "")
    await harness.call("sevu.revoke", key=ticket["key"])
    assert await play(harness, ticket) == (403, "Ticket revoked")

    fresh = await harness.ticket()
    await harness.app.state.storage.update_account(harness.account.cdn, disabled=True)
    assert await play(harness, fresh) == (403, "Ticket revoked")


async def test_wildcards_in_app_and_video(harness: Harness) -> None:
    ticket = await harness.ticket(app="demo-*", video="sestore3/demo/*.mp4|live*")
    assert (await play(harness, ticket, app="demo-vod", video="sestore3/demo/a/b.mp4"))[0] == 200
    assert (await play(harness, ticket, video="live_720p"))[0] == 200
    assert (await play(harness, ticket, video="sestore3/other/a.mp4"))[1] == "Invalid Video"


async def test_auto_slots_bind_in_order_and_hold(harness: Harness) -> None:
    ticket = await harness.ticket(ip="auto/24|auto")
    assert await play(harness, ticket, ip="198.51.100.7") == (200, "")
    assert await play(harness, ticket, ip="198.51.100.200") == (200, "")  # same /24
    assert await play(harness, ticket, ip="203.0.113.9") == (200, "")  # second slot
    assert await play(harness, ticket, ip="203.0.113.10") == (403, "Invalid IP Address")
    assert await play(harness, ticket, ip="::ffff:198.51.100.9") == (200, "")  # mapped v4
    _, body = await harness.call("sevu.status", key=ticket["key"])
    assert body["bound_ips"] == ["198.51.100.0/24", "203.0.113.9"]
    assert body["ip"] == "auto/24|auto"


async def test_refused_attempt_does_not_burn_an_auto_slot(harness: Harness) -> None:
    ticket = await harness.ticket(ip="auto", uses=1)
    assert (await play(harness, ticket, ip="198.51.100.1", video="nope"))[0] == 403
    assert await play(harness, ticket, ip="198.51.100.2") == (200, "")
    _, body = await harness.call("sevu.status", key=ticket["key"])
    assert body["bound_ips"] == ["198.51.100.2"]


async def test_any_address_and_ipv6(harness: Harness) -> None:
    ticket = await harness.ticket(ip="0.0.0.0/0")
    assert await play(harness, ticket, ip="2001:db8::1") == (200, "")
    ticket = await harness.ticket(ip="2001:db8::/32")
    assert await play(harness, ticket, ip="2001:db8:ffff::1") == (200, "")
    assert await play(harness, ticket, ip="2001:db9::1") == (403, "Invalid IP Address")


async def test_unknown_key_attempt_belongs_to_the_app_owner(harness: Harness) -> None:
    await harness.check(key="ghost", app="demo-live", video="v", ip=CLIENT)
    await harness.check(key="ghost", app="nobody-live", video="v", ip=CLIENT)
    _, body = await harness.call("sevu.errorcount", key="ghost")
    assert body["error_count"] == 1
    _, body = await harness.call("sevu.errorlog", key="ghost")
    assert body["attempts"][0]["reason"] == "Invalid Auth Token"


async def test_post_form_and_json_bodies(harness: Harness) -> None:
    ticket = await harness.ticket()
    fields = {
        "key": ticket["key"],
        "pass": "pw",
        "app": "demo-live",
        "video": "mystream",
        "ip": CLIENT,
        "appinst": "live",
        "server_ip": "10.1.1.1",
        "refurl": "https://ref.example/",
    }
    response = await harness.http.post("/usher/check", data=fields)
    assert response.status_code == 200
    response = await harness.http.post("/usher/check", json=fields)
    assert response.status_code == 200
    attempt = await last_attempt(harness, ticket["key"])
    assert attempt["appinst"] == "live"
    assert attempt["server_ip"] == "10.1.1.1"
    assert attempt["refurl"] == "https://ref.example/"


async def test_client_address_falls_back_to_x_real_ip(harness: Harness) -> None:
    ticket = await harness.ticket(ip="203.0.113.5")
    params = {"key": ticket["key"], "pass": "pw", "app": "demo-live", "video": "mystream"}
    response = await harness.http.get(
        "/usher/check", params=params, headers={"X-Real-IP": "203.0.113.5"}
    )
    assert response.status_code == 200
    response = await harness.http.get("/usher/check", params=params)
    assert response.status_code == 403  # the peer is 127.0.0.1


async def test_conflicting_duplicate_key_is_no_key(harness: Harness) -> None:
    ticket = await harness.ticket()
    query = (
        f"key={ticket['key']}&key=other&pass=pw&app=demo-live&video=mystream&ip={CLIENT}"
    ).encode()
    response = await harness.http.get("/usher/check?" + query.decode())
    assert response.status_code == 403
    assert response.json()["reason"] == "Invalid Auth Token"


async def test_non_utf8_and_huge_values_are_denied_not_500(harness: Harness) -> None:
    response = await harness.http.get("/usher/check?key=%ff%fe&pass=%00&app=demo-%ff")
    assert response.status_code == 403
    response = await harness.http.post(
        "/usher/check", content=b"key=" + b"k" * 10_000 + b"&app=demo-x&pass=\xff"
    )
    assert response.status_code == 403
    _, body = await harness.call("sevu.errorlog", key="k" * 10_000)
    assert body["attempts"] == []  # logged, but clipped to 1024 characters
    _, body = await harness.call("sevu.errorcount", key="k" * 1024)
    assert body["error_count"] == 1
    response = await harness.http.post("/usher/check", content=b"x" * (65 * 1024))
    assert response.status_code == 413


async def test_callers_outside_the_allow_list_are_refused_and_not_logged(
    harness: Harness,
) -> None:
    ticket = await harness.ticket()
    transport = httpx.ASGITransport(app=harness.app, client=("192.0.2.50", 5555))
    async with httpx.AsyncClient(transport=transport, base_url="http://usher.test") as outsider:
        response = await outsider.get(
            "/usher/check",
            params={"key": ticket["key"], "pass": "pw", "app": "demo-live", "video": "mystream"},
        )
        assert response.status_code == 403
        assert "USHER_CALLBACK_ALLOW" in response.text
        response = await outsider.post("/usher/check", data={"key": ticket["key"]})
        assert response.status_code == 403
    _, body = await harness.call("sevu.errorcount")
    assert body["error_count"] == 0


async def test_other_accounts_tickets_do_not_leak_through_checks(harness: Harness) -> None:
    rival = await accounts.create(harness.app.state.storage, "rival")
    ticket = await harness.ticket()
    await play(harness, ticket)
    _, body = await harness.call("sevu.errorcount", account=rival)
    assert body["error_count"] == 0
    payload = json.dumps(body)
    assert ticket["key"] not in payload


async def test_pathological_wildcards_answer_at_once(harness: Harness) -> None:
    # A backtracking matcher would take ~forever here; the per-test timeout
    # (pytest-timeout) is what fails this test if matching ever regresses.
    hostile = "*" + "a*" * 200 + "b"
    ticket = await harness.ticket(app="demo-" + hostile, video=hostile)
    status, reason = await play(harness, ticket, app="demo-" + "a" * 4000, video="a" * 4000)
    assert (status, reason) == (403, "Invalid Application")
    status, reason = await play(harness, ticket, app="demo-" + "a" * 4000 + "b", video="a" * 4000)
    assert (status, reason) == (403, "Invalid Video")
    fits = "a" * 200 + "b"
    assert (await play(harness, ticket, app="demo-" + fits, video=fits))[0] == 200


async def test_lone_surrogate_in_a_json_check_is_logged_not_500(harness: Harness) -> None:
    ticket = await harness.ticket()
    # ensure_ascii writes the lone surrogate as the JSON escape \\ud800.
    body = json.dumps(
        {"key": ticket["key"], "pass": "pw", "app": "demo-live", "video": "mystream",
         "ip": "198.51.100.7", "pageurl": "https://x/\ud800"}
    )  # fmt: skip
    response = await harness.http.post(
        "/usher/check", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 200
    attempt = await last_attempt(harness, ticket["key"])
    assert attempt["pageurl"] == "https://x/\ufffd"


async def test_other_methods_on_check(harness: Harness) -> None:
    ticket = await harness.ticket()
    params = {"key": ticket["key"], "pass": "pw", "app": "demo-live", "video": "mystream"}
    response = await harness.http.head("/usher/check", params=params)
    assert response.status_code == 200  # the same handler as GET, through Starlette's route
    response = await harness.http.put("/usher/check", params=params)
    assert response.status_code == 405
