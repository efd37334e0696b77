"""PHP serialize()/unserialize(): PHP's exact bytes, safe refusal of hostile
input, and recovery of the bytes a PHP client signed."""

from __future__ import annotations

import contextlib
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from usher.protocol.errors import ApiError, BadSignature, MalformedRequest, MissingFields
from usher.protocol.phpserial import (
    MAX_DEPTH,
    PhpSerializeError,
    dumps,
    loads,
    parse_php_request,
    php_array_key,
    php_float_repr,
)
from usher.protocol.signing import compute_signature, signature_matches

DOC_VECTOR = (
    b'a:4:{s:7:"command";s:15:"sevu.errorcount";s:3:"cdn";i:158;'
    b's:5:"limit";s:2:"25";s:2:"ip";s:0:"";}'
)


def test_known_vector_from_php() -> None:
    value = {"command": "sevu.errorcount", "cdn": 158, "limit": "25", "ip": ""}
    assert dumps(value) == DOC_VECTOR
    assert loads(DOC_VECTOR) == value


@pytest.mark.parametrize(
    ("value", "serialized"),
    [
        (None, b"N;"),
        (True, b"b:1;"),
        (False, b"b:0;"),
        (5, b"i:5;"),
        (-(2**63), b"i:-9223372036854775808;"),
        (0.5, b"d:0.5;"),
        (4.0, b"d:4;"),
        (-0.0, b"d:-0;"),
        (0.1 + 0.2, b"d:0.30000000000000004;"),
        (1e25, b"d:1.0E+25;"),
        (1e-5, b"d:1.0E-5;"),
        (0.0001, b"d:0.0001;"),
        (1e17, b"d:1.0E+17;"),
        (123456789012345678.0, b"d:1.2345678901234568E+17;"),
        (math.inf, b"d:INF;"),
        (-math.inf, b"d:-INF;"),
        ("", b's:0:"";'),
        ("é", b's:2:"\xc3\xa9";'),
        ("😀", b's:4:"\xf0\x9f\x98\x80";'),
        ('a";s:1:"b', b's:9:"a";s:1:"b";'),
        (["a", None], b'a:2:{i:0;s:1:"a";i:1;N;}'),
        ({}, b"a:0:{}"),
        (
            {"07": 1, "-3": 2, "10": 3, "x": 4.0, "y": 1e25, "-0": 5},
            b'a:6:{s:2:"07";i:1;i:-3;i:2;i:10;i:3;s:1:"x";d:4;s:1:"y";d:1.0E+25;s:2:"-0";i:5;}',
        ),
        ({"a": {"b": [True]}}, b'a:1:{s:1:"a";a:1:{s:1:"b";a:1:{i:0;b:1;}}}'),
    ],
)
def test_dumps_matches_php(value: object, serialized: bytes) -> None:
    assert dumps(value) == serialized


def test_nan_is_written_like_php_and_read_back() -> None:
    assert dumps(math.nan) == b"d:NAN;"
    result = loads(b"d:NAN;")
    assert isinstance(result, float)
    assert math.isnan(result)


def test_dumps_merges_keys_php_considers_equal() -> None:
    # PHP: ['1' => 'a', 'b' => 'c', 1 => 'd'] keeps the first position, last value.
    assert dumps({"1": "a", "b": "c", 1: "d"}) == b'a:2:{i:1;s:1:"d";s:1:"b";s:1:"c";}'


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("5", 5),
        ("-5", -5),
        ("0", 0),
        ("05", "05"),
        ("-0", "-0"),
        ("+5", "+5"),
        ("5 ", "5 "),
        ("9223372036854775807", 2**63 - 1),
        ("9223372036854775808", "9223372036854775808"),
        ("٣", "٣"),
        (7, 7),
    ],
)
def test_php_array_key(key: str | int, expected: str | int) -> None:
    assert php_array_key(key) == expected


@pytest.mark.parametrize("value", [object(), {1.5: 1}, {None: 1}, {True: 1}, b"bytes"])
def test_dumps_refuses_unrepresentable_types(value: object) -> None:
    with pytest.raises(TypeError):
        dumps(value)


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, "\ud800"])
def test_dumps_refuses_unrepresentable_values(value: object) -> None:
    with pytest.raises(PhpSerializeError):
        dumps(value)


def test_dumps_bounds_nesting_and_cycles() -> None:
    cyclic: list[object] = []
    cyclic.append(cyclic)
    with pytest.raises(PhpSerializeError):
        dumps(cyclic)
    deep: object = 1
    for _ in range(MAX_DEPTH):
        deep = [deep]
    assert loads(dumps(deep)) is not None
    with pytest.raises(PhpSerializeError):
        dumps([deep])


@pytest.mark.parametrize(
    ("serialized", "value"),
    [
        (b"i:+5;", 5),
        (b"i:05;", 5),
        (b"i:-0;", 0),
        (b"d:1;", 1.0),
        (b"d:1e3;", 1000.0),
        (b"d:.5;", 0.5),
        (b"d:5.;", 5.0),
        (b"d:-.5e+1;", -5.0),
        (b"d:1.0E+25;", 1e25),
        (b"d:-INF;", -math.inf),
        (b'a:1:{s:1:"5";b:0;}', {5: False}),
        (b'a:2:{i:0;s:0:"";i:1;a:0:{}}', {0: "", 1: {}}),
    ],
)
def test_loads_accepts_what_php_accepts(serialized: bytes, value: object) -> None:
    assert loads(serialized) == value


def nested_arrays(depth: int) -> bytes:
    return b"a:1:{i:0;" * depth + b"N;" + b"}" * depth


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "serialized",
    [
        b"",
        b'O:8:"stdClass":0:{}',
        b'a:1:{i:0;O:8:"stdClass":0:{}}',
        b'C:11:"ArrayObject":21:{x:i:0;a:0:{};m:a:0:{}}',
        b'E:7:"Foo:Bar";',
        b"a:2:{i:0;i:1;i:1;r:2;}",
        b"a:2:{i:0;i:1;i:1;R:2;}",
        b'S:1:"\\61";',
        b"a:999999999:{",
        b"a:99999999999999999999999:{}",
        b"i:" + b"9" * 5000 + b";",
        b"i:9223372036854775808;",
        b"b:2;",
        b"N",
        b"N;N;",
        b"i:1;garbage",
        b's:5:"abc";',
        b's:2:"abc";',
        b's:1:"\xff";',
        b's:-1:"";',
        b"d:1e;",
        b"d:NaN;",
        b"a:1:{i:0;N;i:1;N;}",
        b"a:2:{i:0;N;}",
        b"a:1:{d:0.5;N;}",
        b"a:1:{N;N;}",
        b"a:1:{a:0:{}N;}",
        b'a:2:{i:1;N;s:1:"1";N;}',
        b"a:1:{i:0;N;",
        nested_arrays(MAX_DEPTH + 1),
        nested_arrays(10_000),
        b"a:1:{i:0;" * 500_000,
    ],
)
def test_hostile_input_is_refused_quickly(serialized: bytes) -> None:
    with pytest.raises(PhpSerializeError) as caught:
        loads(serialized)
    message = str(caught.value)
    assert message[0].isupper()
    assert message.endswith(".")


def test_nesting_up_to_the_limit_is_accepted() -> None:
    assert loads(nested_arrays(MAX_DEPTH)) is not None


def test_every_truncation_is_refused() -> None:
    serialized = dumps({"a": [1, 2.5, "é", None, True, {"b": "c"}], "d": ""})
    for end in range(len(serialized)):
        with pytest.raises(PhpSerializeError):
            loads(serialized[:end])


# --- property tests -------------------------------------------------------

int64 = st.integers(-(2**63), 2**63 - 1)
php_scalars = st.none() | st.booleans() | int64 | st.floats() | st.text()
php_keys = int64 | st.text(max_size=6) | st.sampled_from(["0", "1", "-1", "07", "-0"])
php_values = st.recursive(
    php_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(php_keys, inner, max_size=4),
    max_leaves=15,
)


def php_normalized(value: object) -> object:
    """What PHP holds after serialize(): arrays with PHP keys, in first-seen order."""
    if isinstance(value, list):
        value = dict(enumerate(value))
    if isinstance(value, dict):
        result: dict[int | str, object] = {}
        for key, item in value.items():
            result[php_array_key(key)] = php_normalized(item)
        return result
    return value


@given(php_values)
def test_round_trip(value: object) -> None:
    serialized = dumps(value)
    assert dumps(loads(serialized)) == serialized


def has_nan(value: object) -> bool:
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, dict):
        return any(has_nan(item) for item in value.values())
    return isinstance(value, list) and any(has_nan(item) for item in value)


@given(php_values.filter(lambda v: not has_nan(v)))
def test_round_trip_values(value: object) -> None:
    assert loads(dumps(value)) == php_normalized(value)


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_float_repr_round_trips(value: float) -> None:
    text = php_float_repr(value)
    assert float(text) == value
    assert math.copysign(1, float(text)) == math.copysign(1, value)
    assert "e" not in text  # PHP's serialize() writes the exponent as E


@given(st.binary(max_size=100))
def test_random_bytes_only_raise_php_serialize_error(data: bytes) -> None:
    with contextlib.suppress(PhpSerializeError):
        loads(data)
    with contextlib.suppress(ApiError):
        parse_php_request(data)


@given(php_values, st.data())
def test_mutated_data_only_raises_php_serialize_error(value: object, data: st.DataObject) -> None:
    serialized = bytearray(dumps([value]))
    index = data.draw(st.integers(0, len(serialized) - 1))
    serialized[index] = data.draw(st.sampled_from(b'aisdbNO{};:"0179-.E\xff'))
    with contextlib.suppress(PhpSerializeError):
        loads(bytes(serialized))


# Field names PHP would keep as strings ("5" would become the integer 5).
field_names = st.text(max_size=8).filter(
    lambda k: k != "signature" and isinstance(php_array_key(k), str)
)


@settings(deadline=None)
@given(
    st.dictionaries(field_names, php_values, max_size=6),
    st.integers(0, 10),
    st.text(max_size=20),
)
def test_parse_php_request_recovers_the_signed_serialization(
    fields: dict[str, object], position: int, secret: str
) -> None:
    unsigned = dumps(fields)
    signature = compute_signature(unsigned, secret)
    items = list(fields.items())
    position %= len(items) + 1
    signed = dumps(dict([*items[:position], ("signature", signature), *items[position:]]))

    request = parse_php_request(signed)
    assert request.message == unsigned
    assert request.signature == signature
    assert dumps(request.fields) == unsigned  # bytes, because NaN != NaN
    assert signature_matches(request.message, request.signature, secret)


def test_parse_php_request_with_only_a_signature() -> None:
    request = parse_php_request(b'a:1:{s:9:"signature";s:3:"abc";}')
    assert request.message == b"a:0:{}"
    assert request.fields == {}
    assert request.signature == "abc"


def test_parse_php_request_keeps_foreign_float_spellings() -> None:
    # Another PHP version (or client) may write floats differently; only the
    # signature member and the count may change, never the other bytes.
    signed = b'a:3:{s:1:"x";d:1.0e25;s:9:"signature";s:1:"s";s:1:"y";d:.50;}'
    assert parse_php_request(signed).message == b'a:2:{s:1:"x";d:1.0e25;s:1:"y";d:.50;}'


@pytest.mark.parametrize(
    ("serialized", "error"),
    [
        (DOC_VECTOR, MissingFields),
        (b'a:2:{s:9:"signature";s:1:"a";s:9:"signature";s:1:"b";}', BadSignature),
        (b'a:1:{s:9:"signature";i:5;}', BadSignature),
        (b'a:1:{s:9:"signature";a:0:{}}', BadSignature),
        (b'a:2:{s:1:"a";i:1;s:1:"a";i:2;}', MalformedRequest),
        (b'a:2:{i:0;s:1:"a";s:9:"signature";s:1:"b";}', MalformedRequest),
        (b'a:2:{s:1:"5";s:1:"a";s:9:"signature";s:1:"b";}', MalformedRequest),
        (b's:9:"signature";', MalformedRequest),
        (b'a:1:{s:9:"signature";s:1:"a";}trailing', MalformedRequest),
        (b'a:1:{s:9:"signature";O:8:"stdClass":0:{}}', MalformedRequest),
        (b"", MalformedRequest),
    ],
)
def test_parse_php_request_refusals(serialized: bytes, error: type[ApiError]) -> None:
    with pytest.raises(error) as caught:
        parse_php_request(serialized)
    assert type(caught.value) is error


def test_parse_php_request_detail_explains() -> None:
    with pytest.raises(MalformedRequest) as caught:
        parse_php_request(b'O:8:"stdClass":0:{}')
    assert caught.value.message.startswith(
        "Malformed request: the PHP-serialized request cannot be read. "
    )
