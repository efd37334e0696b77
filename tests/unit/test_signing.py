"""Signed JSON requests: the signed bytes every client style produces are
recovered exactly, verification is strict, and hostile bodies only ever
raise the protocol's own errors."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from usher.protocol.errors import ApiError, BadSignature, MalformedRequest, MissingFields
from usher.protocol.signing import (
    MAX_DEPTH,
    compute_signature,
    parse_json_request,
    php_json_encode,
    sign_request,
    signature_digest,
    signature_matches,
    strip_signature_member,
)

# The request from the ScaleEngine PHP example, with the clock frozen.
DOC_SECRET = "8fc8c48da81e6a2a06a9556379bf798af508dc0792497c678b4c3532ba8b637f"
DOC_REQUEST: dict[str, object] = {
    "command": "sevu.errorcount",
    "api_key": "APX4GKLM0RKQLSP2FBO1ROPKSSW47DZE",
    "timestamp": 1700000000,
    "cdn": 158,
    "key": "mystream.53ffc996dd39d5.39102367",
    "app": "demo-origin",
    "video": "mystream",
    "ip": "",
    "pass": "unique_random_string_per_request",
    "success": 1,
    "limit": "25",
    "seek": "0",
}
DOC_JSON = (
    '{"command":"sevu.errorcount","api_key":"APX4GKLM0RKQLSP2FBO1ROPKSSW47DZE",'
    '"timestamp":1700000000,"cdn":158,"key":"mystream.53ffc996dd39d5.39102367",'
    '"app":"demo-origin","video":"mystream","ip":"",'
    '"pass":"unique_random_string_per_request","success":1,"limit":"25","seek":"0"}'
)
# Computed independently: printf '%s' "$DOC_JSON" | openssl dgst -sha256 -hmac "$SECRET" -binary
DOC_SIGNATURE = "Qed8Hp/HirzvnwQ8yREKTsYI3tXYHouP1rmbhglJr+I="
# PHP's second json_encode escapes the '/' inside the base64 signature.
DOC_SIGNED = DOC_JSON[:-1] + r',"signature":"Qed8Hp\/HirzvnwQ8yREKTsYI3tXYHouP1rmbhglJr+I="}'


def test_php_example_encodes_signs_and_verifies_like_php() -> None:
    assert php_json_encode(DOC_REQUEST) == DOC_JSON
    assert compute_signature(DOC_JSON.encode(), DOC_SECRET) == DOC_SIGNATURE
    assert sign_request(DOC_REQUEST, DOC_SECRET) == DOC_SIGNED

    request = parse_json_request(DOC_SIGNED.encode())
    assert request.message == DOC_JSON.encode()
    assert request.signature == DOC_SIGNATURE
    assert request.fields == DOC_REQUEST
    assert signature_matches(request.message, request.signature, DOC_SECRET)
    assert not signature_matches(request.message, request.signature, DOC_SECRET[:-1])


def test_php_json_encode_escapes_slashes_and_non_ascii_like_php() -> None:
    value = {"video": "sestore3/username/path/filename.mp4", "x": "é😀"}
    assert php_json_encode(value) == (
        r'{"video":"sestore3\/username\/path\/filename.mp4","x":"\u00e9\ud83d\ude00"}'
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('\x00\x1f\x7f\b\f\n\r\t"\\', r'"\u0000\u001f' + "\x7f" + r'\b\f\n\r\t\"\\"'),
        (None, "null"),
        ([True, False, 0, -7], "[true,false,0,-7]"),
        (
            [10.0, 0.1, -0.0, 1e25, 1e-5, 0.0001, 0.1 + 0.2],
            "[10,0.1,-0,1.0e+25,1.0e-5,0.0001,0.30000000000000004]",
        ),
        ({}, "[]"),
        ([], "[]"),
        ((1, "a"), '[1,"a"]'),
        ({"0": "a", "1": "b"}, '["a","b"]'),
        ({"1": "a", "0": "b"}, '{"1":"a","0":"b"}'),
        ({"05": 1, "-3": 2, "x/y": {}}, '{"05":1,"-3":2,"x\\/y":[]}'),
        ({"a": [1, {"b": None}]}, '{"a":[1,{"b":null}]}'),
    ],
)
def test_php_json_encode_matches_php_output(value: object, expected: str) -> None:
    assert php_json_encode(value) == expected


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "\ud800", {1.5: 1}, object()])
def test_php_json_encode_refuses_what_php_cannot_encode(value: object) -> None:
    with pytest.raises((TypeError, ValueError)):  # either is a caller bug
        php_json_encode(value)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"a":1,"signature":"x"}', b'{"a":1}'),
        (b'{"a": 1, "signature": "x"}', b'{"a": 1}'),
        (b'{\n  "a": 1,\n  "signature": "x"\n}', b'{\n  "a": 1\n}'),
        (b'{"signature": "x", "a": 1}', b'{"a": 1}'),
        (b'{\n  "signature": "x",\n  "a": 1\n}', b'{\n  "a": 1\n}'),
        (b'{"a":1,"signature":"x","b":2}', b'{"a":1,"b":2}'),
        (b'{"signature":"x"}', b"{}"),
        (b' \n{ "signature" : "x" }\n', b" \n{}\n"),
        (b'{"a":1 , "signature" : "x" }', b'{"a":1  }'),
        (b'{"a":["}",{"signature":1}],"signature":"x"}', b'{"a":["}",{"signature":1}]}'),
        (b'{"a":"\\"signature\\"","signature":"x"}', b'{"a":"\\"signature\\""}'),
        (b'{"sig\\u006eature":"x","a":"\\\\"}', b'{"a":"\\\\"}'),
        (b'{"a":1,"signature":null}', b'{"a":1}'),
    ],
)
def test_strip_signature_member_examples(raw: bytes, message: bytes) -> None:
    assert strip_signature_member(raw) == (message, 1)


@pytest.mark.parametrize(
    ("raw", "count"),
    [
        (b"{}", 0),
        (b'{"a":{"signature":"x"}}', 0),
        (b'{"signature":"x","signature":"y"}', 2),
        (b'{"signature":"x","sign\\u0061ture":"y"}', 2),
    ],
)
def test_strip_signature_member_leaves_text_alone_unless_exactly_one(
    raw: bytes, count: int
) -> None:
    assert strip_signature_member(raw) == (raw, count)


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b'{"a":1}', MissingFields),
        (b'{"signature":"x","signature":"x"}', BadSignature),
        (b'{"a":1,"signature":"x","sig\\u006eature":"x"}', BadSignature),
        (b'{"a":1,"signature":5}', BadSignature),
        (b'{"a":1,"signature":["x"]}', BadSignature),
        (b'{"a":1,"a":2,"signature":"x"}', MalformedRequest),
        (b'{"a":NaN,"signature":"x"}', MalformedRequest),
        (b'{"a":[Infinity],"signature":"x"}', MalformedRequest),
        (b'{"a":[1e999],"signature":"x"}', MalformedRequest),
        (b'{"a":-1E+400,"signature":"x"}', MalformedRequest),
        (b'{"a":"\\ud800","signature":"x"}', MalformedRequest),
        (b'{"a":"\xff","signature":"x"}', MalformedRequest),
        (b'\xef\xbb\xbf{"signature":"x"}', MalformedRequest),
        (b'["signature","x"]', MalformedRequest),
        (b'"signature"', MalformedRequest),
        (b"", MalformedRequest),
        (b'{"signature":"x"} {}', MalformedRequest),
        (b'{"signature":"x",}', MalformedRequest),
        (b'{"a":[1,},"signature":"x"}', MalformedRequest),
        (b'{"a":[1 2],"signature":"x"}', MalformedRequest),
        (b'{"a":"\\x","signature":"x"}', MalformedRequest),
        (b'{"a":01,"signature":"x"}', MalformedRequest),
        (b'{"a":1' + b"0" * 5000 + b',"signature":"x"}', MalformedRequest),
    ],
)
def test_parse_json_request_refusals(raw: bytes, error: type[ApiError]) -> None:
    with pytest.raises(error) as caught:
        parse_json_request(raw)
    assert type(caught.value) is error


def test_malformed_details_are_sentences_for_the_client() -> None:
    with pytest.raises(MalformedRequest) as caught:
        parse_json_request(b'{"a":"\xff"}')
    assert caught.value.message == (
        "Malformed request: the body is not valid UTF-8; send UTF-8 encoded JSON"
    )
    with pytest.raises(MalformedRequest, match="'a' appears more than once"):
        parse_json_request(b'{"a":1,"a":1,"signature":"x"}')


SUFFIX = b',"signature":"x"}'


def unsigned(signed: bytes) -> bytes:
    """``signed`` (which ends with SUFFIX) as its client signed it."""
    assert signed.endswith(SUFFIX)
    return signed[: -len(SUFFIX)] + b"}"


def nested(depth: int) -> bytes:
    """A request whose deepest container is at ``depth`` (the top object is 1)."""
    return b'{"a":' + b"[" * (depth - 1) + b"]" * (depth - 1) + SUFFIX


def test_nesting_up_to_the_limit_is_accepted() -> None:
    assert parse_json_request(nested(MAX_DEPTH)).message == unsigned(nested(MAX_DEPTH))


@pytest.mark.timeout(10)
@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 10_000, 500_000])
def test_deep_nesting_is_refused_quickly(depth: int) -> None:
    with pytest.raises(MalformedRequest, match="nested deeper"):
        parse_json_request(nested(depth))
    with pytest.raises(MalformedRequest):
        parse_json_request(b'{"a":' + b"[" * depth)


@pytest.mark.timeout(10)
def test_large_bodies_scan_in_linear_time() -> None:
    many = b'{"a":[' + b'"\\"\\u00e9",' * 100_000 + b"1]" + SUFFIX
    assert parse_json_request(many).message == unsigned(many)
    long = b'{"a":"' + b"\\\\" * 500_000 + b'"' + SUFFIX
    assert parse_json_request(long).message == unsigned(long)


def test_signature_spellings() -> None:
    message = b'{"a":1}'
    signature = compute_signature(message, "s")
    assert signature.endswith("=")
    assert signature_matches(message, signature, "s")
    assert signature_matches(message, signature.rstrip("="), "s")
    assert signature_digest(signature) == signature_digest(signature.rstrip("="))
    assert signature_digest(signature) != signature_digest(compute_signature(b"{}", "s"))
    assert len(signature_digest("not base64!")) == 32
    for garbage in [
        "",
        "=",
        "====",
        signature + "=",
        signature[:-2] + "=",
        " " + signature,
        signature + "\n",
        "é" * 44,
        "\ud800",
    ]:
        assert not signature_matches(message, garbage, "s"), garbage


def test_url_safe_base64_is_not_the_documented_encoding() -> None:
    url_safe = DOC_SIGNATURE.replace("/", "_").replace("+", "-")
    assert not signature_matches(DOC_JSON.encode(), url_safe, DOC_SECRET)


def test_signature_with_nonzero_spare_bits_is_refused() -> None:
    signature = compute_signature(b"{}", "s")  # 43 chars + "=": 2 spare bits in the last one
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet.index(signature[42])
    sibling = signature[:42] + alphabet[last ^ 1] + "="
    assert not signature_matches(b"{}", sibling, "s")


# --- property tests -------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
# Keys favour the characters clients escape differently; "signature" is added by the tests.
keys = st.text(
    alphabet=st.sampled_from('ab/"\\é😀\x01 ') | st.characters(codec="utf-8"), max_size=10
).filter(lambda k: k != "signature")
requests = st.dictionaries(keys, json_values, max_size=6).map(lambda d: {"command": "x", **d})

Encoder = Callable[[dict[str, object]], str]
ENCODERS: dict[str, Encoder] = {
    "php": php_json_encode,
    "python": json.dumps,
    "python-compact": lambda d: json.dumps(d, separators=(",", ":")),
    "python-utf8": lambda d: json.dumps(d, ensure_ascii=False),
    "python-indent": lambda d: json.dumps(d, indent=2),
}
signatures = st.text(alphabet="ABCxyz019+/=", min_size=1, max_size=44)


def with_member(fields: dict[str, object], position: int, value: str) -> dict[str, object]:
    items = list(fields.items())
    position %= len(items) + 1
    return dict([*items[:position], ("signature", value), *items[position:]])


@settings(deadline=None)
@given(requests, st.sampled_from(sorted(ENCODERS)), st.integers(0, 10), st.text(max_size=20))
def test_signed_bytes_are_recovered_for_every_encoder_and_position(
    fields: dict[str, object], encoder: str, position: int, secret: str
) -> None:
    encode = ENCODERS[encoder]
    unsigned = encode(fields).encode()
    signature = compute_signature(unsigned, secret)
    signed = encode(with_member(fields, position, signature)).encode()

    assert strip_signature_member(signed) == (unsigned, 1)
    request = parse_json_request(signed)
    assert request.message == unsigned
    assert request.signature == signature
    assert request.fields == json.loads(unsigned)
    assert signature_matches(request.message, request.signature, secret)


@settings(deadline=None)
@given(requests, st.sampled_from(sorted(ENCODERS)), st.text(max_size=20))
def test_perl_style_textual_append_is_recovered(
    fields: dict[str, object], encoder: str, secret: str
) -> None:
    unsigned = ENCODERS[encoder](fields)
    signature = compute_signature(unsigned.encode(), secret)
    signed = unsigned[:-1] + f',"signature":"{signature}"}}'
    request = parse_json_request(signed.encode())
    assert request.message == unsigned.encode()
    assert signature_matches(request.message, request.signature, secret)


@settings(deadline=None)
@given(requests, st.text(max_size=20))
def test_sign_request_round_trips(fields: dict[str, object], secret: str) -> None:
    request = parse_json_request(sign_request(fields, secret).encode())
    assert request.message == php_json_encode(fields).encode()
    assert request.fields == json.loads(php_json_encode(fields))
    assert signature_matches(request.message, request.signature, secret)


@given(st.binary(min_size=1, max_size=64), st.data())
def test_any_changed_message_byte_fails(message: bytes, data: st.DataObject) -> None:
    signature = compute_signature(message, "secret")
    index = data.draw(st.integers(0, len(message) - 1))
    flip = data.draw(st.integers(1, 255))
    changed = bytearray(message)
    changed[index] ^= flip
    assert signature_matches(message, signature, "secret")
    assert not signature_matches(bytes(changed), signature, "secret")


@given(st.binary(max_size=64), st.data())
def test_any_changed_signature_character_fails(message: bytes, data: st.DataObject) -> None:
    signature = compute_signature(message, "secret")
    index = data.draw(st.integers(0, len(signature) - 1))
    replacement = data.draw(st.characters().filter(lambda c: c != signature[index]))
    changed = signature[:index] + replacement + signature[index + 1 :]
    assert not signature_matches(message, changed, "secret")


@given(requests, st.sampled_from(sorted(ENCODERS)), st.integers(0, 10), signatures, signatures)
def test_two_signature_members_fail(
    fields: dict[str, object], encoder: str, position: int, first: str, second: str
) -> None:
    signed = ENCODERS[encoder](with_member(fields, position, first))
    doubled = signed[:-1] + f',"sig\\u006eature":"{second}"}}'
    with pytest.raises(BadSignature):
        parse_json_request(doubled.encode())


@given(st.binary(max_size=200))
def test_random_bytes_only_raise_protocol_errors(raw: bytes) -> None:
    with contextlib.suppress(ApiError):
        parse_json_request(raw)


@given(requests, st.data())
def test_mutated_requests_only_raise_protocol_errors(
    fields: dict[str, object], data: st.DataObject
) -> None:
    signed = bytearray(sign_request(fields, "s").encode())
    for _ in range(data.draw(st.integers(1, 3))):
        index = data.draw(st.integers(0, len(signed) - 1))
        signed[index] = data.draw(st.sampled_from(b'{}[]",:\\ 0a\xff'))
    try:
        request = parse_json_request(bytes(signed))
    except ApiError:
        return
    # Whatever parsed, the verified bytes are the body minus one member.
    assert strip_signature_member(bytes(signed)) == (request.message, 1)
