"""The v2 REST API (SPEC §7) in-process, on SQLite and PostgreSQL: every
endpoint, status and error code; the same tickets and attempts as the
signed API; answers validated against /v2/openapi.json."""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import Any

import httpx
import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate as validate_openapi
from referencing import Registry, Resource

from tests.api.test_hostile_input import _assert_no_server_error
from tests.conftest import Harness
from tests.helpers import NOW, make_ticket
from usher import accounts
from usher.protocol.openapi import openapi_document
from usher.protocol.rest import TOKEN_FIELDS

pytestmark = pytest.mark.anyio

TOKEN = {"pass": "s3cret", "ip": "", "video": "mystream", "app": "demo-live", "uses": 3}
GENERATED = [f.name for f in TOKEN_FIELDS if f.create == "generated"]


def basic(cdn: int | str, secret: str) -> dict[str, str]:
    encoded = base64.b64encode(f"{cdn}:{secret}".encode()).decode()
    return {"authorization": f"Basic {encoded}"}


async def v2(
    harness: Harness,
    method: str,
    path: str,
    body: object = None,
    *,
    headers: dict[str, str] | None = None,
    params: list[tuple[str, str]] | None = None,
) -> httpx.Response:
    auth = basic(harness.account.cdn, harness.account.secret) if headers is None else headers
    content = None if body is None else json.dumps(body).encode()
    return await harness.http.request(
        method, f"/v2/{path}", content=content, headers=auth, params=tuple(params or ())
    )


def error_of(response: httpx.Response) -> tuple[int, str, str]:
    """Status, code and detail of a failure, checked against SPEC §7's shape."""
    body = response.json()
    [error] = body["errors"]
    assert set(error) == {"status", "code", "title", "detail"}
    assert error["status"] == response.status_code
    assert error["detail"].endswith(".")
    conforms(response)
    return response.status_code, error["code"], error["detail"]


async def play(
    harness: Harness, key: str, password: str = "s3cret", video: str = "mystream"
) -> tuple[int, dict[str, Any]]:
    return await harness.check(key=key, **{"pass": password}, app="demo-live", video=video)


async def create(harness: Harness, **fields: object) -> dict[str, Any]:
    response = await v2(harness, "PUT", "sevu_token", {**TOKEN, **fields})
    assert response.status_code == 201, response.text
    conforms(response)
    token: dict[str, Any] = response.json()["data"]
    return token


# -- answers against the OpenAPI document ------------------------------------------------


def _registry() -> Registry[Any]:
    document = {**openapi_document(), "$schema": "https://json-schema.org/draft/2020-12/schema"}
    registry: Registry[Any] = Registry().with_resource(
        "urn:usher-v2", Resource.from_contents(document)
    )
    return registry


def conforms(response: httpx.Response) -> None:
    """Validate a real answer against the document's schema for its path,
    method and status."""
    document = openapi_document()
    request = response.request
    path = request.url.path
    template = (
        "/v2/sevu_token/{key}" if path.startswith("/v2/sevu_token/") and path != "/v2/sevu_token/"
        else "/v2/sevu_attempt/{key}" if path.startswith("/v2/sevu_attempt/")
        and path != "/v2/sevu_attempt/"
        else path.rstrip("/") + "/"
    )  # fmt: skip
    operation = document["paths"].get(template, {}).get(request.method.lower())
    if operation is None:  # 404/405 of a path or method the document has not
        schema: dict[str, Any] = {"$ref": "urn:usher-v2#/components/schemas/Errors"}
    else:
        answer = operation["responses"][str(response.status_code)]
        if "content" not in answer:
            assert response.content == b""
            return
        schema = _rebase(answer["content"]["application/json"]["schema"])
    jsonschema.Draft202012Validator(schema, registry=_registry()).validate(response.json())


def _rebase(schema: Any) -> Any:
    """``#/components/…`` refs, made to point into the registered document."""
    if isinstance(schema, dict):
        return {
            key: ("urn:usher-v2" + value if key == "$ref" else _rebase(value))
            for key, value in schema.items()
        }
    if isinstance(schema, list):
        return [_rebase(item) for item in schema]
    return schema


async def test_the_document_is_valid_openapi_3_1_and_served(harness: Harness) -> None:
    response = await harness.http.get("/v2/openapi.json")
    assert response.status_code == 200
    assert response.json() == openapi_document()
    validate_openapi(response.json())
    create_schema = response.json()["components"]["schemas"]["TokenCreate"]
    assert create_schema["required"] == ["pass", "ip", "video", "app", "uses"]
    assert set(create_schema["properties"]) == {
        "pass", "ip", "video", "app", "uses", "active", "expire_date", "max_viewers",
    }  # fmt: skip


# -- authentication, paths and methods ------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": "Bearer abc"},
        {"authorization": "Basic !!!not-base64"},
        basic(1, "wrong-secret"),
        basic(999_999, "whatever"),
        basic("not-a-cdn", "x"),
        basic("", ""),
    ],
    ids=["none", "bearer", "garbage", "wrong-secret", "unknown-cdn", "bad-cdn", "empty"],
)
@pytest.mark.parametrize("path", ["sevu_token/", "sevu_token/x", "nowhere", "sevu_attempt/"])
async def test_authentication_comes_first(
    harness: Harness, headers: dict[str, str], path: str
) -> None:
    response = await v2(harness, "GET", path, headers=headers)
    status, code, _ = error_of(response)
    assert (status, code) == (401, "UNAUTHORIZED")
    assert response.headers["www-authenticate"].startswith("Basic ")


async def test_the_api_key_is_not_the_password(harness: Harness) -> None:
    response = await v2(
        harness, "GET", "sevu_token/", headers=basic(harness.account.cdn, harness.account.api_key)
    )
    assert error_of(response)[:2] == (401, "UNAUTHORIZED")


async def test_a_disabled_account_is_refused(harness: Harness) -> None:
    await harness.app.state.storage.update_account(harness.account.cdn, disabled=True)
    assert error_of(await v2(harness, "GET", "sevu_token/"))[:2] == (401, "UNAUTHORIZED")


@pytest.mark.parametrize("path", ["", "nowhere", "sevu_tokens/", "sevu_token/a/b", "openapi"])
async def test_an_unknown_path_is_not_found(harness: Harness, path: str) -> None:
    assert error_of(await v2(harness, "GET", path))[:2] == (404, "NOT_FOUND")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "sevu_token/", "GET, PUT"),
        ("POST", "sevu_token/", "GET, PUT"),
        ("PUT", "sevu_token/k", "DELETE, GET, POST"),
        ("PUT", "sevu_attempt/", "GET"),
        ("POST", "sevu_attempt/k", "GET"),
        ("DELETE", "sevu_attempt/k", "GET"),
        ("PATCH", "sevu_token/k", "DELETE, GET, POST"),
    ],
)
async def test_an_unlisted_method_is_not_allowed(
    harness: Harness, method: str, path: str, allowed: str
) -> None:
    response = await v2(harness, method, path)
    assert error_of(response)[:2] == (405, "METHOD_NOT_ALLOWED")
    assert response.headers["allow"] == allowed


# -- creating tokens -------------------------------------------------------------------------


async def test_put_creates_the_same_ticket_sevu_status_sees(harness: Harness) -> None:
    token = await create(harness, max_viewers=2, expire_date="+1 day")
    assert isinstance(token["id"], int) and token["id"] > 0
    assert token["cdn_id"] == harness.account.cdn
    _, status = await harness.call("sevu.status", key=token["key"])
    ticket = status["ticket"]
    assert {k: v for k, v in token.items() if k not in ("id", "cdn_id")} == ticket
    assert (ticket["uses"], ticket["max_viewers"], ticket["active"]) == (3, 2, 1)


async def test_numbers_may_be_numeric_strings_and_flags_booleans(harness: Harness) -> None:
    token = await create(harness, uses="5", active=False, max_viewers="0")
    assert (token["uses"], token["active"]) == (5, 0)


async def test_a_missing_field_is_required_field(harness: Harness) -> None:
    body = {k: v for k, v in TOKEN.items() if k not in ("app", "uses")}
    status, code, detail = error_of(await v2(harness, "PUT", "sevu_token", body))
    assert (status, code) == (400, "REQUIRED_FIELD")
    assert "app" in detail and "uses" in detail


@pytest.mark.parametrize(
    ("field", "value"),
    [("uses", [1]), ("uses", {"n": 1}), ("uses", True), ("app", 5), ("pass", ["x"]),
     ("active", [1]), ("expire_date", 7), ("max_viewers", "many!")],
)  # fmt: skip
async def test_a_wrong_json_type_is_type_mismatch_or_invalid(
    harness: Harness, field: str, value: object
) -> None:
    status, code, detail = error_of(await v2(harness, "PUT", "sevu_token", {**TOKEN, field: value}))
    # "many!" is a string, the right JSON type, but not a number: invalid.
    expected = "REQUEST_INVALID" if value == "many!" else "TYPE_MISMATCH"
    assert (status, code) == (400, expected)
    assert field in detail


@pytest.mark.parametrize("field", GENERATED)
async def test_a_generated_field_is_an_access_violation(harness: Harness, field: str) -> None:
    status, code, detail = error_of(await v2(harness, "PUT", "sevu_token", {**TOKEN, field: 1}))
    assert (status, code) == (400, "ACCESS_VIOLATION")
    assert field in detail


@pytest.mark.parametrize(
    ("field", "value"),
    [("app", "other-live"), ("ip", "10.0.0.0/99"), ("uses", -1), ("uses", 2**63),
     ("expire_date", "yesterday-ish"), ("pass", ""), ("active", 2), ("colour", "red")],
)  # fmt: skip
async def test_what_sevu_request_refuses_is_request_invalid(
    harness: Harness, field: str, value: object
) -> None:
    status, code, detail = error_of(await v2(harness, "PUT", "sevu_token", {**TOKEN, field: value}))
    assert (status, code) == (400, "REQUEST_INVALID")
    assert field in detail


@pytest.mark.parametrize("body", [b"", b"not json", b"[1, 2]", b'"text"', b"null"])
async def test_a_body_that_is_not_an_object_is_request_invalid(
    harness: Harness, body: bytes
) -> None:
    response = await harness.http.put(
        "/v2/sevu_token", content=body, headers=basic(harness.account.cdn, harness.account.secret)
    )
    assert error_of(response)[:2] == (400, "REQUEST_INVALID")


# -- reading, listing, changing and revoking ------------------------------------------------


async def test_get_one_token_and_not_another_accounts(harness: Harness) -> None:
    token = await create(harness)
    response = await v2(harness, "GET", f"sevu_token/{token['key']}")
    assert response.status_code == 200 and response.json()["data"] == token
    conforms(response)
    other = await accounts.create(harness.app.state.storage, "other")
    foreign = await v2(
        harness, "GET", f"sevu_token/{token['key']}", headers=basic(other.cdn, other.secret)
    )
    assert error_of(foreign)[:2] == (404, "NOT_FOUND")
    assert error_of(await v2(harness, "GET", "sevu_token/no.such.key"))[:2] == (404, "NOT_FOUND")


async def test_the_list_is_newest_first_filtered_and_paged(harness: Harness) -> None:
    made = []
    for n in range(5):
        harness.clock.advance(1)
        made.append(await create(harness, uses=n % 2, video=f"v{n}"))
    response = await v2(harness, "GET", "sevu_token/")
    conforms(response)
    assert [t["key"] for t in response.json()["data"]] == [t["key"] for t in made[::-1]]

    async def keys(params: list[tuple[str, str]]) -> list[str]:
        answer = await v2(harness, "GET", "sevu_token/", params=params)
        assert answer.status_code == 200, answer.text
        return [t["key"] for t in answer.json()["data"]]

    assert await keys([("uses", "1")]) == [made[3]["key"], made[1]["key"]]
    assert await keys([("video", "v2")]) == [made[2]["key"]]
    assert await keys([("key", made[0]["key"])]) == [made[0]["key"]]
    assert await keys([("option:limit", "2")]) == [made[4]["key"], made[3]["key"]]
    assert await keys([("option:limit", "2"), ("option:offset", "3")]) == [
        made[1]["key"],
        made[0]["key"],
    ]
    await v2(harness, "DELETE", f"sevu_token/{made[4]['key']}")
    assert await keys([("active", "0")]) == [made[4]["key"]]
    assert len(await keys([("active", "1")])) == 4


async def test_the_list_holds_100_by_default_and_at_most_1000(harness: Harness) -> None:
    for n in range(101):
        await harness.app.state.storage.insert_ticket(
            make_ticket(cdn=harness.account.cdn, key=f"bulk.{n}", created_at=NOW + n)
        )
    default = await v2(harness, "GET", "sevu_token/")
    assert len(default.json()["data"]) == 100
    larger = await v2(harness, "GET", "sevu_token/", params=[("option:limit", "5000")])
    assert len(larger.json()["data"]) == 101


@pytest.mark.parametrize(
    "params",
    [("colour", "red"), ("uses", "many"), ("active", "maybe"), ("option:limit", "-1"),
     ("option:offset", "x"), ("option:starttime", "soon")],
)  # fmt: skip
async def test_a_bad_filter_or_option_is_request_invalid(
    harness: Harness, params: tuple[str, str]
) -> None:
    path = "sevu_attempt/" if params[0] == "option:starttime" else "sevu_token/"
    assert error_of(await v2(harness, "GET", path, params=[params]))[:2] == (
        400,
        "REQUEST_INVALID",
    )


async def test_post_changes_active_and_expiry_only(harness: Harness) -> None:
    token = await create(harness)
    key = token["key"]
    response = await v2(harness, "POST", f"sevu_token/{key}", {"active": 0})
    assert response.status_code == 200 and response.json()["data"]["active"] == 0
    conforms(response)
    status, body = await harness.check(
        key=key, **{"pass": "s3cret"}, app="demo-live", video="mystream"
    )
    assert (status, body["reason"]) == (403, "Ticket revoked")
    response = await v2(
        harness, "POST", f"sevu_token/{key}", {"active": True, "expire_date": "2030-01-01 00:00:00"}
    )
    assert response.json()["data"]["expire_date"] == "2030-01-01 00:00:00"
    assert response.json()["data"]["active"] == 1
    status, _ = await harness.check(
        key=key, **{"pass": "s3cret"}, app="demo-live", video="mystream"
    )
    assert status == 200
    for field in ("uses", "pass", "key", "use_count"):
        answer = await v2(harness, "POST", f"sevu_token/{key}", {field: 1})
        assert error_of(answer)[:2] == (400, "ACCESS_VIOLATION")
    assert error_of(await v2(harness, "POST", f"sevu_token/{key}", {}))[:2] == (
        400,
        "REQUIRED_FIELD",
    )
    missing = await v2(harness, "POST", "sevu_token/no.such.key", {"active": 1})
    assert error_of(missing)[:2] == (404, "NOT_FOUND")


async def test_delete_revokes_with_204_and_no_body(harness: Harness) -> None:
    token = await create(harness)
    response = await v2(harness, "DELETE", f"sevu_token/{token['key']}")
    assert (response.status_code, response.content) == (204, b"")
    _, status = await harness.call("sevu.status", key=token["key"])
    assert status["ticket"]["active"] == 0
    again = await v2(harness, "DELETE", "sevu_token/no.such.key")
    assert error_of(again)[:2] == (404, "NOT_FOUND")


# -- attempts ------------------------------------------------------------------------------


async def test_a_tokens_attempts_are_what_sevu_errorlog_lists(harness: Harness) -> None:
    token = await create(harness)
    for password in ("s3cret", "wrong", "s3cret"):
        harness.clock.advance(1)
        await harness.check(
            key=token["key"], **{"pass": password}, app="demo-live", video="mystream"
        )
    response = await v2(harness, "GET", f"sevu_attempt/{token['key']}")
    conforms(response)
    _, errorlog = await harness.call("sevu.errorlog", key=token["key"])
    assert response.json()["data"] == errorlog["attempts"]
    assert [a["success"] for a in response.json()["data"]] == [1, 0, 1]
    empty = await v2(harness, "GET", "sevu_attempt/no.such.key")
    assert (empty.status_code, empty.json()) == (200, {"data": []})


async def test_the_attempt_list_filters_oldest_first(harness: Harness) -> None:
    first = await create(harness)
    second = await create(harness, video="other")
    for token, password in ((first, "s3cret"), (second, "nope"), (first, "nope")):
        harness.clock.advance(60)
        video = token["video"]
        await play(harness, token["key"], password, video=video)

    async def listed(params: list[tuple[str, str]]) -> list[tuple[str, int]]:
        answer = await v2(harness, "GET", "sevu_attempt/", params=params)
        assert answer.status_code == 200, answer.text
        conforms(answer)
        return [(a["key"], a["success"]) for a in answer.json()["data"]]

    everything = await listed([])
    assert everything == [(first["key"], 1), (second["key"], 0), (first["key"], 0)]
    assert await listed([("success", "0")]) == everything[1:]
    assert await listed([("video", "other")]) == [everything[1]]
    assert await listed([("key", first["key"]), ("success", "1")]) == [everything[0]]
    assert await listed([("option:limit", "1"), ("option:offset", "1")]) == [everything[1]]
    assert await listed([("appinst", "nothing")]) == []


# -- hostile input -------------------------------------------------------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
_BODY_FIELDS = st.dictionaries(
    st.sampled_from([f.name for f in TOKEN_FIELDS] + ["expire", "x"]), _JSON, max_size=8
)


@settings(max_examples=120, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    method=st.sampled_from(["PUT", "POST", "GET", "DELETE"]),
    path=st.sampled_from(["sevu_token", "sevu_token/", "sevu_token/k.1", "sevu_attempt/"]),
    body=st.one_of(_JSON, _BODY_FIELDS),
    query=st.lists(
        st.tuples(
            st.sampled_from(["key", "uses", "active", "success", "option:limit",
                             "option:offset", "option:starttime", "app", "zz"]),
            st.text(max_size=20),
        ),
        max_size=4,
    ),
)  # fmt: skip
async def test_any_body_or_query_gets_no_5xx(
    harness: Harness,
    caplog: pytest.LogCaptureFixture,
    method: str,
    path: str,
    body: object,
    query: list[tuple[str, str]],
) -> None:
    caplog.clear()
    response = await v2(harness, method, path, body, params=query)
    _assert_no_server_error(response.status_code, response.text, caplog)
    if response.status_code >= 400:
        error_of(response)
    elif response.status_code != 204:
        conforms(response)


async def test_answers_and_failed_authentications_are_counted(harness: Harness) -> None:
    await v2(harness, "GET", "sevu_token/", headers=basic(harness.account.cdn, "guess"))
    await v2(harness, "GET", "sevu_token/")
    await v2(harness, "DELETE", "sevu_attempt/k")
    metrics = (await harness.http.get("/metrics")).text
    for line in (
        'usher_rest_answers_total{code="UNAUTHORIZED",resource="sevu_token"} 1.0',
        'usher_rest_answers_total{code="OK",resource="sevu_token"} 1.0',
        'usher_rest_answers_total{code="METHOD_NOT_ALLOWED",resource="sevu_attempt"} 1.0',
    ):
        assert line in metrics


async def test_a_listing_past_its_read_budget_is_stopped_with_503(harness: Harness) -> None:
    await create(harness)
    state = harness.app.state
    state.settings = dataclasses.replace(state.settings, rest_query_timeout=0.000001)
    response = await v2(harness, "GET", "sevu_token/")
    status, code, detail = error_of(response)
    assert (status, code) == (503, "SERVER_BUSY")
    assert "USHER_REST_QUERY_TIMEOUT" in detail and "narrow it" in detail


# -- found in review -------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"Basic " + base64.b64encode(b"9999999999999999999:x"),  # past 64 bits
        b"Basic \xe9\xe9\xe9=",  # not ASCII
        b"Basic " + base64.b64encode(b"158:\xff\xfe"),  # not UTF-8
    ],
    ids=["huge-cdn", "non-ascii", "non-utf8"],
)
async def test_odd_credentials_are_401_not_500(harness: Harness, raw: bytes) -> None:
    response = await harness.http.get("/v2/sevu_token/", headers=[(b"authorization", raw)])
    assert error_of(response)[:2] == (401, "UNAUTHORIZED")


@pytest.mark.parametrize("method", ["TRACE", "PROPFIND", "PURGE"])
async def test_any_method_meets_the_credentials_first(harness: Harness, method: str) -> None:
    anonymous = await v2(harness, method, "sevu_token/", headers={})
    assert error_of(anonymous)[:2] == (401, "UNAUTHORIZED")
    assert error_of(await v2(harness, method, "sevu_token/"))[:2] == (405, "METHOD_NOT_ALLOWED")


async def test_the_key_in_the_path_is_decoded_once(harness: Harness) -> None:
    token = await create(harness)
    twice = token["key"].replace(".", "%252E")
    assert error_of(await v2(harness, "GET", f"sevu_token/{twice}"))[:2] == (404, "NOT_FOUND")
    once = token["key"].replace(".", "%2E")
    assert (await v2(harness, "GET", f"sevu_token/{once}")).status_code == 200


async def test_a_filter_past_the_parameter_limit_is_refused_not_dropped(harness: Harness) -> None:
    await create(harness)
    params = [("option:limit", "2")] * 100 + [("key", "no-such-key")]
    response = await v2(harness, "GET", "sevu_token/", params=params)
    assert error_of(response)[:2] == (400, "REQUEST_INVALID")


@pytest.mark.parametrize("body", [{"active": ""}, {"expire_date": ""}, {"active": None}])
async def test_a_change_of_nothing_is_required_field_not_200(
    harness: Harness, body: dict[str, object]
) -> None:
    token = await create(harness)
    response = await v2(harness, "POST", f"sevu_token/{token['key']}", body)
    assert error_of(response)[:2] == (400, "REQUIRED_FIELD")


async def test_a_disabled_account_is_told_so_only_with_the_right_secret(harness: Harness) -> None:
    await harness.app.state.storage.update_account(harness.account.cdn, disabled=True)
    _, _, right = error_of(await v2(harness, "GET", "sevu_token/"))
    wrong = await v2(harness, "GET", "sevu_token/", headers=basic(harness.account.cdn, "guess"))
    assert "disabled" in right and "disabled" not in error_of(wrong)[2]
