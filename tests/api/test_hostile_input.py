"""Hostile input to the control API: integers past 64 bits, non-ASCII
urlencoded fields, unreadable multipart bodies, and arbitrary bytes to every
endpoint's parser. The contract: a clear 4xx, never a 500 or a traceback."""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import DOC_SECRET, Harness
from usher.commands.fields import INT64_MAX, INT64_MIN
from usher.protocol import phpserial
from usher.protocol.signing import compute_signature, sign_request

pytestmark = pytest.mark.anyio


def _raw_utf8_json(request: dict[str, object]) -> bytes:
    """What ``json_encode($r, JSON_UNESCAPED_UNICODE)`` sends: raw UTF-8, signed as is."""
    unsigned = json.dumps(request, ensure_ascii=False, separators=(",", ":"))
    signature = compute_signature(unsigned.encode(), DOC_SECRET)
    return (unsigned[:-1] + f',"signature":"{signature}"}}').encode()


# -- 1. integers past 64 bits -------------------------------------------------------


TICKET = {"app": "demo-live", "video": "v", "pass": "pw", "ip": ""}


@pytest.mark.parametrize(
    ("command", "fields", "name"),
    [
        ("sevu.search", {"limit": 2**63}, "limit"),
        ("sevu.search", {"seek": str(2**63)}, "seek"),
        ("sevu.errorlog", {"key": "k", "seek": 2**63}, "seek"),
        ("sevu.errorlog", {"key": "k", "limit": "9" * 40}, "limit"),
        ("sevu.errorcount", {"limit": -(2**70)}, "limit"),
        ("sevu.request", {**TICKET, "uses": 2**63}, "uses"),
        ("sevu.request", {**TICKET, "uses": 1e19}, "uses"),
        ("sevu.request", {**TICKET, "uses": "-1"}, "uses"),
        ("sevu.request", {**TICKET, "uses": "0" * 30 + "1e3"}, "uses"),
    ],
)
async def test_integers_outside_their_bounds_are_code_8_naming_the_field(
    harness: Harness,
    caplog: pytest.LogCaptureFixture,
    command: str,
    fields: dict[str, object],
    name: str,
) -> None:
    status, body = await harness.call(command, **fields)
    assert status == 400, body
    assert body["code"] == 8
    assert body["message"].startswith(f"Invalid value for field {name}: ")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_the_largest_allowed_integers_are_stored_and_returned(harness: Harness) -> None:
    ticket = await harness.ticket(uses=INT64_MAX)
    assert ticket["uses"] == INT64_MAX
    status, body = await harness.call("sevu.search", limit=INT64_MAX, seek="0" * 25 + "0")
    assert (status, body["ticket_count"]) == (200, 1)
    status, body = await harness.call("sevu.errorlog", key=ticket["key"], seek=INT64_MAX)
    assert (status, body["attempts"]) == (200, [])


async def test_php_form_float_uses_past_64_bits_is_code_8(harness: Harness) -> None:
    request = harness.unsigned("sevu.request", **TICKET, uses=1e19)
    signature = compute_signature(phpserial.dumps(request), DOC_SECRET)
    body = phpserial.dumps({**request, "signature": signature})
    response = await harness.http.post("/api", files={"php": (None, body)})
    assert response.status_code == 400
    answer = phpserial.loads(response.content)
    assert isinstance(answer, dict)
    assert answer["code"] == 8 and "uses" in str(answer["message"])


@pytest.mark.parametrize(("name", "value"), [("cdn", 2**64), ("timestamp", INT64_MIN - 1)])
async def test_envelope_integers_outside_64_bits_are_code_8(
    harness: Harness, name: str, value: int
) -> None:
    request = harness.unsigned("sevu.errorcount", **{name: value})
    response = await harness.http.post(
        "/api", files={"json": (None, sign_request(request, DOC_SECRET))}
    )
    assert response.status_code == 400
    assert response.json()["message"].startswith(f"Invalid value for field {name}: ")


async def test_leading_zeros_cost_nothing_and_never_fail_the_server(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    zeros = "0" * 5000
    status, body = await harness.call("sevu.search", limit=zeros + "5")
    assert (status, body["code"]) == (200, 2030)
    for name in ("cdn", "timestamp"):
        request = harness.unsigned("sevu.errorcount", **{name: zeros + "1"})
        response = await harness.http.post(
            "/api", files={"json": (None, sign_request(request, DOC_SECRET))}
        )
        assert response.status_code in (400, 401), response.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# -- 2. urlencoded fields carrying raw UTF-8 ----------------------------------------


async def test_urlencoded_json_field_with_raw_utf8_verifies(harness: Harness) -> None:
    text = _raw_utf8_json(harness.unsigned("sevu.errorcount", video="café/ünï"))
    assert "é".encode() in text  # raw UTF-8, not \u00e9
    response = await harness.http.post(
        "/api",
        content=urlencode({"json": text}),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["code"] == 2050


async def test_urlencoded_php_field_with_raw_utf8_verifies(harness: Harness) -> None:
    request = harness.unsigned("sevu.request", **{**TICKET, "video": "café"}, uses=1)
    signature = compute_signature(phpserial.dumps(request), DOC_SECRET)
    body = phpserial.dumps({**request, "signature": signature})
    assert "é".encode() in body
    response = await harness.http.post(
        "/api",
        content=urlencode({"php": body}),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200, response.content
    answer = phpserial.loads(response.content)
    assert isinstance(answer, dict) and answer["code"] == 2001
    ticket = answer["ticket"]
    assert isinstance(ticket, dict) and ticket["video"] == "café"


async def test_urlencoded_field_bytes_that_are_not_utf8_fail_the_signature_not_the_server(
    harness: Harness,
) -> None:
    text = _raw_utf8_json(harness.unsigned("sevu.errorcount", video="café"))
    mangled = text.replace("é".encode(), b"\xe9")  # Latin-1 on the wire: not what was signed
    response = await harness.http.post(
        "/api",
        content=urlencode({"json": mangled}),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 400
    assert response.json()["code"] == 9


# -- 3. unreadable multipart bodies --------------------------------------------------


@pytest.mark.parametrize("boundary", ["b" * 257, "x" * 5000])
async def test_multipart_boundary_over_256_characters_is_code_9(
    harness: Harness, boundary: str
) -> None:
    part = 'Content-Disposition: form-data; name="json"\r\n\r\n{}'
    body = f"--{boundary}\r\n{part}\r\n--{boundary}--\r\n"
    response = await harness.http.post(
        "/api",
        content=body.encode(),
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert response.status_code == 400
    assert response.json()["code"] == 9
    assert "boundary" in response.json()["message"].lower()


# -- any bytes, any content type, every endpoint: no 5xx, no traceback ----------------

_POST_PATHS = [
    "/api",
    "/stable/",
    "/usher/check",
    "/usher/nginx-rtmp",
    "/usher/srs",
    "/usher/mediamtx",
    "/usher/ome",
    "/panel/sign-in",
]
_GET_PATHS = ["/usher/check", "/usher/nginx-rtmp", "/usher/auth-request", "/healthz", "/panel/"]
_CONTENT_TYPES = st.sampled_from(
    [
        "",
        "application/json",
        "text/json",
        "application/x-www-form-urlencoded",
        "application/x-www-form-urlencoded; charset=latin-1",
        "multipart/form-data",
        "multipart/form-data; boundary=",
        "multipart/form-data; boundary=xyz",
        "multipart/form-data; boundary=" + "b" * 300,
        "text/plain",
        "application/json; charset=\xff",
    ]
)
_BODIES = st.one_of(
    st.binary(max_size=2048),
    st.text(max_size=512).map(lambda text: text.encode("utf-8", "surrogatepass")),
    st.builds(
        lambda name, value: urlencode({name: value}).encode(),
        st.sampled_from(["json", "php", "key", "call"]),
        st.binary(max_size=256),
    ),
    st.builds(
        lambda value: (
            b'--xyz\r\nContent-Disposition: form-data; name="json"\r\n\r\n'
            + value
            + b"\r\n--xyz--\r\n"
        ),
        st.binary(max_size=256),
    ),
)
_QUERIES = st.lists(
    st.tuples(
        st.sampled_from(["key", "pass", "app", "video", "ip", "call", "addr", "name", "session"]),
        st.text(max_size=40),
    ),
    max_size=6,
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    path=st.sampled_from(_POST_PATHS),
    content_type=_CONTENT_TYPES,
    body=_BODIES,
    real_ip=st.one_of(st.none(), st.text(max_size=20)),
)
async def test_any_post_body_gets_no_5xx(
    harness: Harness,
    caplog: pytest.LogCaptureFixture,
    path: str,
    content_type: str,
    body: bytes,
    real_ip: str | None,
) -> None:
    headers = {b"content-type": content_type.encode("utf-8", "surrogatepass")}
    if real_ip is not None:
        headers[b"x-real-ip"] = real_ip.encode("utf-8", "surrogatepass")
    caplog.clear()
    response = await harness.http.post(path, content=body, headers=headers)
    _assert_no_server_error(response.status_code, response.text, caplog)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    path=st.sampled_from(_GET_PATHS),
    query=_QUERIES,
    uri=st.text(max_size=80),
)
async def test_any_query_gets_no_5xx(
    harness: Harness,
    caplog: pytest.LogCaptureFixture,
    path: str,
    query: list[tuple[str, str]],
    uri: str,
) -> None:
    encoded = urlencode([(name, value.encode("utf-8", "surrogatepass")) for name, value in query])
    headers = {b"x-original-uri": uri.encode("utf-8", "surrogatepass")}
    caplog.clear()
    response = await harness.http.get(f"{path}?{encoded}", headers=headers)
    _assert_no_server_error(response.status_code, response.text, caplog)


def _assert_no_server_error(status: int, text: str, caplog: pytest.LogCaptureFixture) -> None:
    assert status < 500 or (status == 503 and "overloaded" in text.lower()), (status, text)
    assert "Traceback" not in text
    errors: list[Any] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
