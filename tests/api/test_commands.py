"""Every ``sevu.*`` command in-process: codes, messages, payloads, paging and
per-account isolation."""

from __future__ import annotations

import re

import pytest

from tests.conftest import Harness
from tests.helpers import NOW
from usher import accounts
from usher.tickets.model import Account

pytestmark = pytest.mark.anyio

KEY = re.compile(r"^mystream\.[0-9a-f]{14}\.\d{8}$")


async def test_request_creates_a_ticket(harness: Harness) -> None:
    status, body = await harness.call(
        "sevu.request",
        app="demo-origin|demo-vod*",
        video="mystream|sestore3/demo/*.mp4",
        ip="192.168.0.0/24|auto/24",
        uses="5",
        expire="2027-02-01 00:00:00",
        **{"pass": "unique_random_string_per_request"},
    )
    assert status == 200
    assert body["code"] == 2001
    assert body["message"] == "ScaleEngine Virtual Usher ticket created"
    ticket = body["ticket"]
    assert KEY.match(ticket["key"])
    assert ticket == {
        "key": ticket["key"],
        "pass": "unique_random_string_per_request",
        "ip": "192.168.0.0/24|auto/24",
        "video": "mystream|sestore3/demo/*.mp4",
        "app": "demo-origin|demo-vod*",
        "uses": 5,
        "use_count": 0,
        "active": 1,
        "created_date": "2027-01-15 08:00:00",
        "expire_date": "2027-02-01 00:00:00",
        "used_date": None,
        "bound_ips": [],
        "max_viewers": 0,
        "viewers": 0,
    }


async def test_request_defaults_and_aliases(harness: Harness) -> None:
    ticket = await harness.ticket()
    assert ticket["expire_date"] == "2027-01-22 08:00:00"  # +1 week
    for alias in ("expires", "expire_date"):
        ticket = await harness.ticket(**{alias: "+2 hours"})
        assert ticket["expire_date"] == "2027-01-15 10:00:00"
    ticket = await harness.ticket(expire="2027-01-16T08:00:00+02:00", active="0")
    assert ticket["expire_date"] == "2027-01-16 06:00:00"
    assert ticket["active"] == 0


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"app": "other-live"}, "app"),
        ({"app": "demo-a|other-b"}, "app"),
        ({"ip": "10.0.0.0/33"}, "ip"),
        ({"ip": "auto/129"}, "ip"),
        ({"ip": "not-an-ip"}, "ip"),
        ({"uses": -1}, "uses"),
        ({"uses": "many"}, "uses"),
        ({"expire": "2020-01-01 00:00:00"}, "expire"),
        ({"expire": "next tuesday"}, "expire"),
        ({"video": "|".join(f"v{i}" for i in range(10_000))}, "video"),
        ({"app": "|".join(f"demo-{i}" for i in range(10_000))}, "app"),
        ({"ip": "|".join("10.0.0.1" for _ in range(10_000))}, "ip"),
        ({"pass": ""}, "pass"),
    ],
)
async def test_request_refuses_bad_values_with_code_8(
    harness: Harness, fields: dict[str, object], name: str
) -> None:
    base: dict[str, object] = {
        "app": "demo-live",
        "video": "v",
        "pass": "p",
        "ip": "",
        "uses": 1,
    }
    base.update(fields)
    status, body = await harness.call("sevu.request", **base)
    assert status == 400, body
    assert body["code"] == 8
    assert body["message"].startswith(f"Invalid value for field {name}: ")


async def test_request_key_comes_from_the_first_video(harness: Harness) -> None:
    ticket = await harness.ticket(video="sestore3/demo/path/file name.mp4|other")
    assert re.match(r"^sestore3_demo_path_file_name_mp4\.[0-9a-f]{14}\.\d{8}$", ticket["key"])


async def test_status_found_and_not_found(harness: Harness) -> None:
    ticket = await harness.ticket()
    status, body = await harness.call("sevu.status", key=ticket["key"])
    assert status == 200
    assert body["code"] == 2011
    assert body["message"] == "ScaleEngine Virtual Usher ticket found"
    assert body["ticket"] == ticket
    assert body["key"] == ticket["key"] and body["uses"] == 0  # also at top level

    status, body = await harness.call("sevu.status", key="nope.00000000000000.00000000")
    assert status == 404
    assert body["code"] == 2010 and body["status"] == "failure"
    assert body["message"] == "ScaleEngine Virtual Usher ticket not found"


async def test_revoke(harness: Harness) -> None:
    ticket = await harness.ticket()
    status, body = await harness.call("sevu.revoke", key=ticket["key"])
    assert status == 200
    assert body["code"] == 2021
    assert body["message"] == "ScaleEngine Virtual Usher ticket revoked"
    assert set(body) == {"code", "message", "status", "handle_time"}
    _, body = await harness.call("sevu.status", key=ticket["key"])
    assert body["ticket"]["active"] == 0

    status, body = await harness.call("sevu.revoke", key="missing")
    assert status == 404
    assert body["code"] == 2020 and body["status"] == "failure"


async def test_search_filters_paging_and_count(harness: Harness) -> None:
    made = [await harness.ticket(video=f"v{i}", **{"pass": "same"}) for i in range(5)]
    await harness.ticket(video="other", **{"pass": "different"})

    status, body = await harness.call("sevu.search", **{"pass": "same"}, ip="")
    assert status == 200
    assert body["code"] == 2031
    assert body["message"] == "ScaleEngine Virtual Usher tickets found"
    assert body["ticket_count"] == 5
    assert [t["key"] for t in body["tickets"]] == [t["key"] for t in reversed(made)]

    _, body = await harness.call("sevu.search", **{"pass": "same"}, limit="2", seek="1")
    assert [t["key"] for t in body["tickets"]] == [made[3]["key"], made[2]["key"]]
    assert body["ticket_count"] == 5

    _, body = await harness.call("sevu.search", video="v3")
    assert [t["key"] for t in body["tickets"]] == [made[3]["key"]]

    status, body = await harness.call("sevu.search", video="nothing")
    assert status == 200
    assert body["code"] == 2030
    assert body["message"] == "ScaleEngine Virtual Usher no tickets found"
    assert body["tickets"] == [] and body["ticket_count"] == 0


async def test_errorlog_lists_attempts_oldest_first(harness: Harness) -> None:
    ticket = await harness.ticket(uses=1)
    key = ticket["key"]
    base = {"key": key, "app": "demo-live", "video": "mystream", "ip": "198.51.100.4"}
    await harness.check(**base, **{"pass": "pw"}, pageurl="https://example.com/watch")
    harness.clock.advance(86400)
    await harness.check(**base, **{"pass": "pw"})
    await harness.check(**base, **{"pass": "wrong"})

    status, body = await harness.call("sevu.errorlog", key=key)
    assert status == 200
    assert body["code"] == 2041
    assert body["message"] == "ScaleEngine Virtual Usher ticket attempts found"
    attempts = body["attempts"]
    assert [a["success"] for a in attempts] == [1, 0, 0]
    assert [a["reason"] for a in attempts] == [
        "",
        "Ticket uses exhausted",
        "Invalid Auth Token",
    ]
    first = attempts[0]
    assert set(first) == {
        "id", "datetime", "key", "pass", "ip", "video", "app", "appinst",
        "pageurl", "refurl", "success", "reason", "server_ip",
    }  # fmt: skip
    assert first["datetime"] == "2027-01-15 08:00:00"
    assert first["pageurl"] == "https://example.com/watch"
    assert first["ip"] == "198.51.100.4"

    _, body = await harness.call("sevu.errorlog", key=key, starttime="2027-01-16")
    assert len(body["attempts"]) == 2
    _, body = await harness.call("sevu.errorlog", key=key, endtime="2027-01-15")
    assert len(body["attempts"]) == 1  # a date as endtime includes that whole day
    _, body = await harness.call("sevu.errorlog", key=key, limit=1, seek=1)
    assert [a["reason"] for a in body["attempts"]] == ["Ticket uses exhausted"]

    status, body = await harness.call("sevu.errorlog", key="other")
    assert status == 200
    assert body["code"] == 2040
    assert body["message"] == "ScaleEngine Virtual Usher no ticket attempts found"
    assert body["attempts"] == []

    status, body = await harness.call("sevu.errorlog")
    assert status == 400 and body["code"] == 6


async def test_errorcount_follows_the_seed(harness: Harness) -> None:
    ticket = await harness.ticket(uses=2)
    key = ticket["key"]
    ok = {"key": key, "pass": "pw", "app": "demo-live", "video": "mystream"}
    for ip in ("198.51.100.1", "198.51.100.1", "198.51.100.1", "198.51.100.2"):
        await harness.check(**ok, ip=ip)
    await harness.check(**{**ok, "pass": "bad"}, ip="198.51.100.2")
    await harness.check(**{**ok, "video": "other"}, ip="198.51.100.2")

    async def count(**filters: object) -> int:
        status, body = await harness.call("sevu.errorcount", **filters)
        assert status == 200, body
        expected = 2051 if body["error_count"] else 2050
        assert body["code"] == expected
        return int(body["error_count"])

    assert await count() == 6
    assert await count(key=key) == 6
    assert await count(key=key, success=1) == 2
    assert await count(key=key, success="0") == 4
    assert await count(ip="198.51.100.1") == 3
    assert await count(ip="198.51.100.1", success=0) == 1
    assert await count(key=key, ip="198.51.100.2", success=0) == 3
    assert await count(**{"pass": "bad"}) == 1
    assert await count(video="other") == 1
    assert await count(app="demo-live", video="mystream") == 5
    # The seed sends empty strings for filters it does not use.
    assert await count(key=key, ip="", app="", video="", **{"pass": ""}) == 6
    # error_count = min(limit, max(0, total - seek))
    assert await count(limit="25", seek="0") == 6
    assert await count(limit=4) == 4
    assert await count(seek=4) == 2
    assert await count(seek=10) == 0
    assert await count(limit=0) == 0
    assert await count(limit=3, seek=2) == 3
    assert await count(limit=3, seek=5) == 1

    _, body = await harness.call("sevu.errorcount", key="none")
    assert body["message"] == "ScaleEngine Virtual Usher no unsuccessful tickets attempts found"
    _, body = await harness.call("sevu.errorcount")
    assert body["message"] == "ScaleEngine Virtual Usher unsuccessful tickets attempts found"


async def test_errorcount_time_range(harness: Harness) -> None:
    await harness.check(key="k", app="demo-live", video="v", ip="198.51.100.1")
    harness.clock.advance(2 * 86400)
    await harness.check(key="k", app="demo-live", video="v", ip="198.51.100.1")
    _, body = await harness.call("sevu.errorcount", starttime="2027-01-16")
    assert body["error_count"] == 1
    _, body = await harness.call(
        "sevu.errorcount", starttime="2027-01-15 08:00:00", endtime="2027-01-15 08:00:00"
    )
    assert body["error_count"] == 1


async def test_accounts_are_isolated(harness: Harness) -> None:
    other: Account = await accounts.create(harness.app.state.storage, "rival")
    mine = await harness.ticket()
    await harness.check(
        key=mine["key"], app="demo-live", video="mystream", ip="198.51.100.1", **{"pass": "pw"}
    )

    _, body = await harness.call("sevu.status", key=mine["key"], account=other)
    assert body["code"] == 2010
    _, body = await harness.call("sevu.revoke", key=mine["key"], account=other)
    assert body["code"] == 2020
    _, body = await harness.call("sevu.search", account=other)
    assert body["ticket_count"] == 0
    _, body = await harness.call("sevu.errorlog", key=mine["key"], account=other)
    assert body["attempts"] == []
    _, body = await harness.call("sevu.errorcount", account=other)
    assert body["error_count"] == 0
    _, body = await harness.call("sevu.status", key=mine["key"])
    assert body["ticket"]["active"] == 1


async def test_start_is_the_fixture_time() -> None:
    # The expected dates above are written out by hand from NOW.
    assert NOW == 1_800_000_000


@pytest.mark.parametrize("alias", ["expire", "expires", "expire_date"])
async def test_an_unreadable_expiry_names_the_field_as_sent(harness: Harness, alias: str) -> None:
    fields = {"app": "demo-live", "video": "v", "pass": "pw", "ip": "", "uses": 1}
    status, body = await harness.call("sevu.request", **fields, **{alias: "next tuesday"})
    assert status == 400
    assert body["message"].startswith(f"Invalid value for field {alias}: ")
