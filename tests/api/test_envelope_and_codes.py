"""The control API's general codes 0-9 and 1000, each with its HTTP status,
and the shape of the envelope (pinned here, in one place)."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest

from tests.conftest import DOC_SECRET, Harness
from usher import accounts
from usher.protocol import phpserial
from usher.protocol.codes import MESSAGES, Code
from usher.protocol.errors import StorageBusy, StorageUnavailable
from usher.protocol.signing import compute_signature, php_json_encode, sign_request

pytestmark = pytest.mark.anyio

HANDLE_TIME = re.compile(r"^\d+\.\d{4} seconds$")


def assert_envelope(body: dict[str, Any], code: Code, status: str) -> None:
    assert list(body)[:3] == ["code", "message", "status"]
    assert list(body)[-1] == "handle_time"
    assert type(body["code"]) is int
    assert body["code"] == int(code)
    assert body["status"] == status
    assert body["message"].startswith(MESSAGES[code])
    assert HANDLE_TIME.match(body["handle_time"])


async def test_envelope_shape_of_a_success(harness: Harness) -> None:
    status, body = await harness.call("sevu.errorcount")
    assert status == 200
    assert_envelope(body, Code.ERRORCOUNT_NONE, "success")
    assert body == {
        "code": 2050,
        "message": "ScaleEngine Virtual Usher no unsuccessful tickets attempts found",
        "status": "success",
        "error_count": 0,
        "handle_time": body["handle_time"],
    }


async def test_envelope_shape_of_a_failure(harness: Harness) -> None:
    status, body = await harness.call("sevu.nosuchthing")
    assert status == 404
    assert body == {
        "code": 0,
        "message": "Unrecognized API Command",
        "status": "failure",
        "handle_time": body["handle_time"],
    }


async def test_code_1_unknown_cdn_and_wrong_key_look_the_same(harness: Harness) -> None:
    other = await accounts.create(harness.app.state.storage, "other")
    wrong_key = other.__class__(other.cdn, other.username, "WRONGKEY", other.secret)
    unknown_cdn = other.__class__(9999, other.username, other.api_key, other.secret)
    # The demo account's key under the other account's cdn must not work either.
    crossed = other.__class__(other.cdn, other.username, harness.account.api_key, DOC_SECRET)
    answers = []
    for who in (wrong_key, unknown_cdn, crossed):
        status, body = await harness.call("sevu.errorcount", account=who)
        assert status == 401
        assert_envelope(body, Code.AUTHORIZATION_FAILED, "failure")
        answers.append(body["message"])
    assert len(set(answers)) == 1


async def test_code_2_timestamp_outside_the_window(harness: Harness) -> None:
    now = int(harness.clock())
    for timestamp in (now - 301, now + 301):
        status, body = await harness.call("sevu.errorcount", timestamp=timestamp)
        assert status == 401
        assert_envelope(body, Code.TIMESTAMP_OUT_OF_RANGE, "failure")
    for timestamp in (now - 300, now + 300):
        status, body = await harness.call("sevu.errorcount", timestamp=timestamp)
        assert status == 200, body


async def test_code_3_wrong_secret(harness: Harness) -> None:
    account = harness.account
    forged = account.__class__(account.cdn, account.username, account.api_key, "0" * 64)
    status, body = await harness.call("sevu.errorcount", account=forged)
    assert status == 401
    assert_envelope(body, Code.BAD_SIGNATURE, "failure")


async def test_code_3_two_signature_members(harness: Harness) -> None:
    request = harness.unsigned("sevu.errorcount")
    text = sign_request(request, DOC_SECRET)
    doubled = text[:-1] + ',"signature":"AAAA"}'
    status, body = await harness.post_json_field(doubled)
    assert status == 401
    assert_envelope(body, Code.BAD_SIGNATURE, "failure")


async def test_code_3_a_field_changed_after_signing(harness: Harness) -> None:
    text = sign_request(harness.unsigned("sevu.errorcount", key="a"), DOC_SECRET)
    status, body = await harness.post_json_field(text.replace('"key":"a"', '"key":"b"'))
    assert status == 401
    assert body["code"] == 3


async def test_code_4_storage_failure_is_an_envelope(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_: object, **__: object) -> int:
        raise StorageUnavailable("disk on fire")

    monkeypatch.setattr(harness.app.state.storage, "count_attempts", broken)
    status, body = await harness.call("sevu.errorcount")
    assert status == 500
    assert_envelope(body, Code.UNEXPECTED_ERROR, "failure")
    assert "disk" not in json.dumps(body)


async def test_code_4_unexpected_exception_never_leaks_a_traceback(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def buggy(*_: object, **__: object) -> int:
        raise ZeroDivisionError("secret internals")

    monkeypatch.setattr(harness.app.state.storage, "count_attempts", buggy)
    status, body = await harness.call("sevu.errorcount")
    assert status == 500
    assert body["code"] == 4
    assert "Traceback" not in json.dumps(body) and "internals" not in json.dumps(body)


async def test_code_5_disabled_account(harness: Harness) -> None:
    await harness.app.state.storage.update_account(harness.account.cdn, disabled=True)
    status, body = await harness.call("sevu.errorcount")
    assert status == 401
    assert_envelope(body, Code.UNAUTHORIZED, "failure")


async def test_code_6_names_every_missing_field(harness: Harness) -> None:
    text = json.dumps({"command": "sevu.errorcount", "signature": "x"})
    status, body = await harness.post_json_field(text)
    assert status == 400
    assert_envelope(body, Code.MISSING_FIELDS, "failure")
    assert body["message"].endswith("cdn, api_key, timestamp")

    status, body = await harness.call("sevu.request", app="demo-live", video="v")
    assert status == 400
    assert body["message"] == "One or more required fields are missing: pass, ip, uses"


async def test_code_7_replayed_signature(harness: Harness) -> None:
    text = sign_request(harness.unsigned("sevu.errorcount"), DOC_SECRET)
    status, _ = await harness.post_json_field(text)
    assert status == 200
    status, body = await harness.post_json_field(text)
    assert status == 401
    assert_envelope(body, Code.REPLAYED, "failure")


@pytest.mark.parametrize(
    ("command", "fields", "name"),
    [
        ("sevu.errorcount", {"limit": -1}, "limit"),
        ("sevu.errorcount", {"seek": "-5"}, "seek"),
        ("sevu.errorcount", {"limit": "ten"}, "limit"),
        ("sevu.errorcount", {"success": 2}, "success"),
        ("sevu.search", {"limit": [1]}, "limit"),
        ("sevu.errorcount", {"key": {"a": 1}}, "key"),
        ("sevu.errorlog", {"key": "k", "starttime": "yesterday-ish"}, "starttime"),
    ],
)
async def test_code_8_invalid_field_values(
    harness: Harness, command: str, fields: dict[str, object], name: str
) -> None:
    status, body = await harness.call(command, **fields)
    assert status == 400
    assert_envelope(body, Code.INVALID_FIELD, "failure")
    assert body["message"].startswith(f"Invalid value for field {name}: ")


@pytest.mark.parametrize(
    "payload",
    [
        b"{not json",
        b"[1, 2, 3]",
        b'"just a string"',
        b"\xff\xfe{}",
        b'{"a": NaN}',
        b"[" * 100_000,
        b"",
    ],
)
async def test_code_9_malformed_json(harness: Harness, payload: bytes) -> None:
    status, body = await harness.post_json_field(payload)
    assert status == 400
    assert body["code"] in (6, 9)
    assert body["status"] == "failure"


async def test_code_6_form_without_json_field(harness: Harness) -> None:
    response = await harness.http.post("/api", data={"jsn": "{}"})
    assert response.status_code == 400
    body = response.json()
    assert_envelope(body, Code.MISSING_FIELDS, "failure")
    assert body["message"] == "One or more required fields are missing: json"


async def test_code_9_unsupported_content_type(harness: Harness) -> None:
    response = await harness.http.post(
        "/api", content=b"hello", headers={"content-type": "text/plain"}
    )
    assert response.status_code == 400
    assert response.json()["code"] == 9


async def test_body_over_one_mebibyte_is_413(harness: Harness) -> None:
    response = await harness.http.post(
        "/api", files={"json": (None, b"{" + b" " * (1024 * 1024) + b"}")}
    )
    assert response.status_code == 413
    body = response.json()
    assert body["code"] == 9 and body["status"] == "failure"


async def test_code_1000_when_storage_sheds_load(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def busy(*_: object, **__: object) -> bool:
        raise StorageBusy("queue full")

    monkeypatch.setattr(harness.app.state.storage, "claim_signature", busy)
    status, body = await harness.call("sevu.errorcount")
    assert status == 503
    assert_envelope(body, Code.OVERLOADED, "failure")


# -- the three encodings ----------------------------------------------------------


async def test_urlencoded_json_field(harness: Harness) -> None:
    text = sign_request(harness.unsigned("sevu.errorcount", video="a/b c+d"), DOC_SECRET)
    response = await harness.http.post("/api", data={"json": text})
    assert response.status_code == 200, response.text
    assert response.json()["code"] == 2050


async def test_raw_application_json_with_python_spacing(harness: Harness) -> None:
    request = harness.unsigned("sevu.errorcount", video="dir/file.mp4")
    unsigned = json.dumps(request)  # ", " and ": " separators, "/" unescaped
    signature = compute_signature(unsigned.encode(), DOC_SECRET)
    signed = json.dumps({"signature": signature, **request})  # signature first
    response = await harness.http.post(
        "/api", content=signed, headers={"content-type": "application/json"}
    )
    assert response.status_code == 200, response.text


async def test_php_serialized_form_answers_in_php(harness: Harness) -> None:
    request = harness.unsigned("sevu.errorcount", ip="", limit="25", seek="0")
    signature = compute_signature(phpserial.dumps(request), DOC_SECRET)
    body = phpserial.dumps({**request, "signature": signature})
    response = await harness.http.post("/api", files={"php": (None, body)})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    decoded = phpserial.loads(response.content)
    assert isinstance(decoded, dict)
    assert decoded["code"] == 2050 and decoded["status"] == "success"


async def test_no_response_contains_the_secret(harness: Harness) -> None:
    responses = [
        await harness.call("sevu.errorcount"),
        await harness.call("sevu.request", app="x", video="v", ip="", uses=1, **{"pass": "p"}),
        await harness.post_json_field(b"{bad"),
    ]
    for _, body in responses:
        assert DOC_SECRET not in json.dumps(body)


async def test_unknown_path_is_a_plain_404(harness: Harness) -> None:
    response = await harness.http.get("/nope")
    assert response.status_code == 404


def test_php_json_encode_is_what_the_client_signs() -> None:
    # Guard the harness itself: it must sign the way the PHP example does.
    assert php_json_encode({"v": "a/b"}) == '{"v":"a\\/b"}'


async def test_healthz_and_metrics(harness: Harness) -> None:
    response = await harness.http.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    await harness.call("sevu.errorcount")
    await harness.check(key="nope", app="demo-live", video="v", ip="127.0.0.1")
    response = await harness.http.get("/metrics")
    assert response.status_code == 200
    text = response.text
    assert 'usher_api_commands_total{code="2050",command="sevu.errorcount"} 1.0' in text
    assert 'usher_checks_total{outcome="denied",reason="Invalid Auth Token"} 1.0' in text
    assert "usher_http_request_duration_seconds_bucket" in text
    assert 'route="/usher/check"' in text


async def test_healthz_reports_a_dead_database(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def dead() -> None:
        raise StorageUnavailable("gone")

    monkeypatch.setattr(harness.app.state.storage, "ping", dead)
    response = await harness.http.get("/healthz")
    assert response.status_code == 503


async def test_api_is_also_served_at_stable(harness: Harness) -> None:
    text = sign_request(harness.unsigned("sevu.errorcount"), DOC_SECRET)
    response = await harness.http.post("/stable/", files={"json": (None, text)})
    assert response.status_code == 200
    assert response.json()["code"] == 2050


async def test_get_on_api_is_refused_cleanly(harness: Harness) -> None:
    response = await harness.http.get("/api")
    assert response.status_code == 405


def _unused(_: httpx.Response) -> None:  # keeps the httpx import typed for mypy
    return None


async def test_malformed_php_request_is_answered_in_php(harness: Harness) -> None:
    response = await harness.http.post("/api", files={"php": (None, b"a:1:{s:3:")})
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/plain")
    decoded = phpserial.loads(response.content)
    assert isinstance(decoded, dict)
    assert decoded["code"] == 9 and decoded["status"] == "failure"
