"""The stream-user commands (SPEC §6) in-process, on both backends: codes,
payloads, replacement, validation and per-account isolation."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Harness
from usher import accounts
from usher.passwords import verify_password
from usher.tickets.publishers import StreamUserName

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("cheap_publisher_hashes")]

SETTINGS: dict[str, object] = {
    "record": 1,
    "record_type": "flv",
    "segment_type": "duration",
    "segment_value": "3600",
    "save_folder": "recordings/",
    "playlist_count": 5,
    "playlist_timeout": 30,
    "enable_dvr": "0",
    "ga_key": "UA-12345-1",
}
NO_SETTINGS = dict.fromkeys(SETTINGS)


async def add(harness: Harness, **fields: object) -> dict[str, Any]:
    request: dict[str, object] = {"app": "demo-live", "stream": "cam", "user": "alice"}
    request["pass"] = "s3cret-pass"
    request.update(fields)
    status, body = await harness.call("sevu.addstreamuser", **request)
    assert (status, body["code"]) == (200, 2061), body
    assert body["message"] == "ScaleEngine Virtual Usher stream user saved"
    streamuser: dict[str, Any] = body["streamuser"]
    return streamuser


async def test_add_returns_the_stream_user_without_its_pass(harness: Harness) -> None:
    saved = await add(harness, **SETTINGS)
    assert saved == {
        "streamuser_id": saved["streamuser_id"],
        "app": "demo-live",
        "stream": "cam",
        "user": "alice",
        "created_date": "2027-01-15 08:00:00",
        "updated_date": "2027-01-15 08:00:00",
        **SETTINGS,
        "segment_value": 3600,
        "enable_dvr": 0,
    }
    stored = await harness.app.state.storage.get_stream_user(
        harness.account.cdn, id=saved["streamuser_id"]
    )
    assert stored is not None and stored.pass_hash is not None
    assert "s3cret-pass" not in stored.pass_hash
    assert verify_password("s3cret-pass", stored.pass_hash)


async def test_same_name_replaces_pass_and_settings(harness: Harness) -> None:
    first = await add(harness, **SETTINGS)
    harness.clock.advance(60)
    second = await add(harness, **{"pass": "another-pass"})
    assert second["streamuser_id"] == first["streamuser_id"]
    assert second["updated_date"] == "2027-01-15 08:01:00"
    assert second["created_date"] == first["created_date"]
    assert {k: second[k] for k in SETTINGS} == NO_SETTINGS
    stored = await harness.app.state.storage.get_stream_user(
        harness.account.cdn, id=first["streamuser_id"]
    )
    assert stored is not None and stored.pass_hash is not None
    assert verify_password("another-pass", stored.pass_hash)
    assert not verify_password("s3cret-pass", stored.pass_hash)


async def test_open_entry_and_every_stream(harness: Harness) -> None:
    opened = await add(harness, user="", **{"pass": None})
    assert opened["user"] is None
    again = await add(harness, user=None, **{"pass": ""})
    assert again["streamuser_id"] == opened["streamuser_id"]
    every = await add(harness, stream="*")
    assert every["stream"] == "*"


async def test_list_retrieve_remove(harness: Harness) -> None:
    status, body = await harness.call("sevu.liststreamusers")
    assert (status, body["code"], body["streamusers"]) == (200, 2080, [])
    assert body["message"] == "ScaleEngine Virtual Usher no stream users found"
    alice = await add(harness)
    opened = await add(harness, user="", **{"pass": ""})
    other = await add(harness, app="demo-vod", stream="x")
    status, body = await harness.call("sevu.liststreamusers", app="demo-live", stream="")
    assert (status, body["code"]) == (200, 2081)
    assert body["message"] == "ScaleEngine Virtual Usher stream users found"
    assert body["streamusers"] == [opened, alice]
    status, body = await harness.call("sevu.liststreamusers")
    assert len(body["streamusers"]) == 3

    status, body = await harness.call(
        "sevu.retrievestreamuser", streamuser_id=str(other["streamuser_id"])
    )
    assert (status, body["code"], body["streamuser"]) == (200, 2091, other)
    assert body["message"] == "ScaleEngine Virtual Usher stream user found"
    status, body = await harness.call("sevu.retrievestreamuser", app="demo-live", stream="cam")
    assert body["streamuser"] == opened

    status, body = await harness.call(
        "sevu.removestreamuser", app="demo-live", stream="cam", user="alice"
    )
    assert (status, body["code"]) == (200, 2071)
    assert body["message"] == "ScaleEngine Virtual Usher stream user removed"
    status, body = await harness.call("sevu.removestreamuser", streamuser_id=alice["streamuser_id"])
    assert (status, body["code"]) == (404, 2070)
    assert body["message"] == "ScaleEngine Virtual Usher stream user not found"
    status, body = await harness.call(
        "sevu.retrievestreamuser", streamuser_id=alice["streamuser_id"]
    )
    assert (status, body["code"]) == (404, 2090)
    assert body["message"] == "ScaleEngine Virtual Usher stream user not found"


@pytest.mark.parametrize(
    ("fields", "code", "named"),
    [
        ({"app": None}, 6, "app"),
        ({"stream": None}, 6, "stream"),
        ({"app": "other-live"}, 8, "app"),
        ({"app": "demo-a|demo-b"}, 8, "app"),
        ({"app": "demo-*"}, 8, "app"),
        ({"stream": "cam*"}, 8, "stream"),
        ({"user": ""}, 8, "user"),
        ({"pass": ""}, 8, "pass"),
        ({"pass": "x" * 257}, 8, "pass"),
        ({"segment_type": "hourly"}, 8, "segment_type"),
        ({"segment_value": -1}, 8, "segment_value"),
        ({"playlist_count": "many"}, 8, "playlist_count"),
        ({"record": "yes"}, 8, "record"),
        ({"enable_dvr": 2}, 8, "enable_dvr"),
        ({"playlist_timeout": 2**63}, 8, "playlist_timeout"),
    ],
)
async def test_add_validation(
    harness: Harness, fields: dict[str, object], code: int, named: str
) -> None:
    request: dict[str, object] = {"app": "demo-live", "stream": "cam", "user": "alice"}
    request["pass"] = "s3cret-pass"
    request.update(fields)
    status, body = await harness.call("sevu.addstreamuser", **request)
    assert (status, body["code"]) == (400, code), body
    assert named in body["message"]
    storage = harness.app.state.storage
    assert await storage.list_stream_users(harness.account.cdn) == []


async def test_remove_and_retrieve_need_a_name(harness: Harness) -> None:
    for command in ("sevu.removestreamuser", "sevu.retrievestreamuser"):
        status, body = await harness.call(command)
        assert (status, body["code"]) == (400, 6)
        assert "streamuser_id" in body["message"]
        status, body = await harness.call(command, app="demo-live")
        assert (status, body["code"]) == (400, 6)
        assert "stream" in body["message"]


async def test_accounts_are_isolated(harness: Harness) -> None:
    mine = await add(harness)
    rival = await accounts.create(harness.app.state.storage, "rival")
    ident = mine["streamuser_id"]
    # The rival cannot add to demo's app, nor see, fetch or remove demo's entry.
    status, body = await harness.call(
        "sevu.addstreamuser",
        account=rival,
        app="demo-live",
        stream="cam",
        user="alice",
        **{"pass": "hijack-pass"},
    )
    assert (status, body["code"]) == (400, 8)
    status, body = await harness.call("sevu.liststreamusers", account=rival)
    assert body["code"] == 2080
    for command in ("sevu.retrievestreamuser", "sevu.removestreamuser"):
        status, body = await harness.call(command, account=rival, streamuser_id=ident)
        assert status == 404
        status, body = await harness.call(
            command, account=rival, app="demo-live", stream="cam", user="alice"
        )
        assert status == 404
    name = StreamUserName("demo-live", "cam", "alice")
    storage = harness.app.state.storage
    stored = await storage.get_stream_user(harness.account.cdn, name=name)
    assert stored is not None and stored.pass_hash is not None
    assert verify_password("s3cret-pass", stored.pass_hash)


async def test_odd_input_is_a_failure_envelope_or_stored_safely(harness: Harness) -> None:
    saved = await add(harness, stream="c\x00m", user="a\x00")
    assert (saved["stream"], saved["user"]) == ("c\ufffdm", "a\ufffd")
    status, body = await harness.call("sevu.retrievestreamuser", streamuser_id="one")
    assert (status, body["code"]) == (400, 8)
    status, body = await harness.call("sevu.retrievestreamuser", streamuser_id=2**64)
    assert (status, body["code"]) == (400, 8)
    status, body = await harness.call("sevu.addstreamuser", app=["demo-live"], stream="cam")
    assert (status, body["code"]) == (400, 8)
