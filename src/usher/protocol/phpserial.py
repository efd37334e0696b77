"""PHP ``serialize()`` / ``unserialize()`` for the scalar-and-array subset.

SEVU lets a client post its request as a PHP-serialized array (form field
``php``) and then answers in the same format (README, "The control API"). The input is hostile,
so this reader refuses everything PHP would turn into code paths on the
other side (objects, custom serializers, enums, references), bounds nesting
and element counts before acting on them, and never recurses deeper than
:data:`MAX_DEPTH`.

:func:`parse_php_request` is the server half of the signature check: the
client signed ``serialize($request)`` before it added ``signature``, so the
signed bytes are recovered by *splicing* the received bytes, never by
re-serializing (a float or key written by another PHP version would differ).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from usher.protocol.errors import BadSignature, MalformedRequest, MissingFields

__all__ = [
    "MAX_DEPTH",
    "PhpSerializeError",
    "SignedPhpRequest",
    "dumps",
    "loads",
    "parse_php_request",
    "php_array_key",
    "php_float_repr",
]

MAX_DEPTH = 32
"""Deepest array nesting accepted; a SEVU request is flat, so 32 is generous."""

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1

# PHP's own grammar (ext/standard/var_unserializer.re): iv = [+-]?[0-9]+, and
# a float is iv, nv or nvexp, or one of the non-finite spellings.
_NULL = re.compile(rb"N;")
_BOOL = re.compile(rb"b:([01]);")
_INT = re.compile(rb"i:([+-]?[0-9]+);")
_FLOAT = re.compile(rb"d:(NAN|-?INF|[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?);")
_STRING_HEAD = re.compile(rb's:([0-9]+):"')
_ARRAY_HEAD = re.compile(rb"a:([0-9]+):\{")
# A canonical PHP integer key: what PHP's ZEND_HANDLE_NUMERIC_STR turns into int.
_CANONICAL_INT = re.compile(r"-?(?:0|[1-9][0-9]*)\Z")

# The digits of an int64 never exceed 19, so longer runs are rejected before
# int() ever sees them (int() of a long digit run is super-linear).
_MAX_DIGITS = 20
# The smallest element is "i:0;N;" (6 bytes); a count that cannot fit in the
# remaining bytes is a lie, whatever the parser would find later.
_MIN_ELEMENT_BYTES = 6

_REFUSED = {
    ord("O"): "objects",
    ord("C"): "objects with custom serializers",
    ord("E"): "enums",
    ord("r"): "references",
    ord("R"): "references",
    ord("S"): "escaped strings",
}


class PhpSerializeError(ValueError):
    """The data is not PHP-serialized data of the accepted subset."""


@dataclass(frozen=True)
class SignedPhpRequest:
    """A PHP-serialized request, its fields and the bytes its signature covers."""

    fields: dict[str, object]
    message: bytes
    signature: str


def php_array_key(key: object) -> int | str:
    """The key PHP stores for ``key``: canonical decimal strings become ints.

    PHP arrays have no ``"5"`` key, only ``5``; both serialize() and
    json_encode() show the converted key, so encoders must apply it too.
    """
    if isinstance(key, bool) or not isinstance(key, int | str):
        raise TypeError(f"PHP array keys are int or str, not {type(key).__name__}")
    if isinstance(key, str) and _CANONICAL_INT.match(key) and key != "-0":
        as_int = int(key)
        if _INT64_MIN <= as_int <= _INT64_MAX:
            return as_int
    return key


def php_float_repr(value: float, exponent_char: str = "E") -> str:
    """``value`` written like PHP ≥ 7.1 does with ``serialize_precision = -1``.

    PHP prints the shortest round-trip digits (as Python's ``repr``) but in
    its own layout (``php_gcvt`` mode 0): plain notation unless the decimal
    exponent is below -4 or above 17, an exponent without zero padding
    (``1.0E+25``), and no ``.0`` on whole numbers. serialize() uses ``E``,
    json_encode() uses ``e``.
    """
    if math.isnan(value):
        return "NAN"
    if math.isinf(value):
        return "INF" if value > 0 else "-INF"
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    mantissa, _, exp_text = repr(abs(value)).partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = (whole + frac).lstrip("0")
    # decpt: value == 0.<digits> * 10**decpt, as zend_dtoa reports it.
    decpt = len(whole) + int(exp_text or "0") - (len(whole + frac) - len(digits))
    digits = digits.rstrip("0")
    if not digits:
        return sign + "0"
    if decpt > 17 or decpt < -3:
        exponent = decpt - 1
        return (
            f"{sign}{digits[0]}.{digits[1:] or '0'}{exponent_char}"
            f"{'-' if exponent < 0 else '+'}{abs(exponent)}"
        )
    if decpt <= 0:
        return f"{sign}0.{'0' * -decpt}{digits}"
    if len(digits) <= decpt:
        return sign + digits + "0" * (decpt - len(digits))
    return f"{sign}{digits[:decpt]}.{digits[decpt:]}"


def dumps(value: object) -> bytes:
    """``serialize($value)`` as PHP ≥ 7.1 writes it, for scalars, dicts and lists."""
    out: list[bytes] = []
    _dump(value, out, 0)
    return b"".join(out)


def _dump(value: object, out: list[bytes], depth: int) -> None:
    if value is None:
        out.append(b"N;")
    elif isinstance(value, bool):  # before int: bool is an int subclass
        out.append(b"b:1;" if value else b"b:0;")
    elif isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise PhpSerializeError(f"The integer {value} does not fit in a PHP integer.")
        out.append(b"i:%d;" % value)
    elif isinstance(value, float):
        out.append(b"d:" + php_float_repr(value).encode("ascii") + b";")
    elif isinstance(value, str):
        out.append(_dump_string(value))
    elif isinstance(value, dict | list | tuple):
        if depth >= MAX_DEPTH:
            raise PhpSerializeError(f"The value is nested deeper than {MAX_DEPTH} arrays.")
        items: dict[int | str, object] = {}
        pairs = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in pairs:
            # Assigning an existing key keeps its first position, as PHP does.
            items[php_array_key(key)] = item
        out.append(b"a:%d:{" % len(items))
        for key, item in items.items():
            out.append(b"i:%d;" % key if isinstance(key, int) else _dump_string(key))
            _dump(item, out, depth + 1)
        out.append(b"}")
    else:
        raise TypeError(f"PHP serialize() has no form for {type(value).__name__}")


def _dump_string(text: str) -> bytes:
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise PhpSerializeError("The string holds an unpaired surrogate.") from exc
    return b's:%d:"%s";' % (len(raw), raw)


def loads(data: bytes) -> object:
    """``unserialize($data)`` for null, bool, int, float, string and arrays.

    Arrays become dicts (PHP has no separate list type). Duplicate keys are
    refused rather than silently overwritten: serialize() never writes them,
    so they only appear in forged input.
    """
    parser = _Parser(data)
    value = parser.value(1)
    parser.expect_end()
    return value


def parse_php_request(raw: bytes) -> SignedPhpRequest:
    """Read a PHP-serialized signed request and recover the bytes it signed.

    The client signed ``serialize()`` of the array without ``signature``; that
    is the received bytes with the one signature key/value cut out and the
    element count lowered by one. Everything else is kept byte for byte.
    """
    parser = _Parser(raw)
    try:
        count_start, count_end, members = parser.top_level()
    except PhpSerializeError as exc:
        raise MalformedRequest(f"the PHP-serialized request cannot be read. {exc}") from exc

    fields: dict[str, object] = {}
    signature_members: list[tuple[int, int, object]] = []
    for key, value, start, end in members:
        if not isinstance(key, str):
            raise MalformedRequest(
                f"the PHP-serialized request has the integer key {key}; "
                "every request field needs a name"
            )
        if key == "signature":
            signature_members.append((start, end, value))
        elif key in fields:
            raise MalformedRequest(f"the field {key!r} appears more than once")
        else:
            fields[key] = value

    if not signature_members:
        raise MissingFields(["signature"])
    if len(signature_members) > 1:
        raise BadSignature()
    start, end, signature = signature_members[0]
    if not isinstance(signature, str):
        raise BadSignature()
    message = b"".join(
        (
            raw[:count_start],
            b"%d" % (len(members) - 1),
            raw[count_end:start],
            raw[end:],
        )
    )
    return SignedPhpRequest(fields=fields, message=message, signature=signature)


class _Parser:
    """A cursor over serialized bytes; every step is a regex match or a slice."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def fail(self, what: str) -> PhpSerializeError:
        return PhpSerializeError(f"{what} (at byte {self.pos} of {len(self.data)}).")

    def expect_end(self) -> None:
        if self.pos != len(self.data):
            raise self.fail("Unexpected data follows the serialized value")

    def number(self, digits: bytes, what: str) -> int:
        if len(digits) > _MAX_DIGITS:
            raise self.fail(f"The {what} has too many digits")
        return int(digits)

    def value(self, depth: int) -> object:
        data, pos = self.data, self.pos
        if pos >= len(data):
            raise self.fail("The serialized data ends where a value should start")
        if m := _NULL.match(data, pos):
            self.pos = m.end()
            return None
        if m := _BOOL.match(data, pos):
            self.pos = m.end()
            return m.group(1) == b"1"
        if m := _INT.match(data, pos):
            return self.integer(m)
        if m := _FLOAT.match(data, pos):
            self.pos = m.end()
            return float(m.group(1))
        if _STRING_HEAD.match(data, pos):
            return self.string()
        if m := _ARRAY_HEAD.match(data, pos):
            if depth > MAX_DEPTH:
                raise self.fail(f"Arrays are nested deeper than {MAX_DEPTH} levels")
            self.pos = m.end()
            result: dict[int | str, object] = {}
            for key, item, _, _ in self.members(self.number(m.group(1), "array size"), depth):
                if key in result:
                    raise self.fail(f"The array key {key!r} appears twice")
                result[key] = item
            return result
        what = _REFUSED.get(data[pos])
        if what is not None:
            raise self.fail(f"Serialized {what} are not accepted; send arrays and scalars only")
        raise self.fail("This is not a serialized null, bool, int, float, string or array")

    def integer(self, m: re.Match[bytes]) -> int:
        number = self.number(m.group(1).lstrip(b"+-"), "integer")
        number = -number if m.group(1).startswith(b"-") else number
        if not _INT64_MIN <= number <= _INT64_MAX:
            raise self.fail("The integer does not fit in 64 bits")
        self.pos = m.end()
        return number

    def string(self) -> str:
        m = _STRING_HEAD.match(self.data, self.pos)
        if m is None:
            raise self.fail("A string is expected here")
        length = self.number(m.group(1), "string length")
        start = m.end()
        end = start + length
        if self.data[end : end + 2] != b'";':
            raise self.fail("A string's byte length does not match its contents")
        try:
            text = self.data[start:end].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self.fail("A string is not valid UTF-8") from exc
        self.pos = end + 2
        return text

    def members(self, count: int, depth: int) -> list[tuple[int | str, object, int, int]]:
        """``count`` key/value pairs and the closing brace, with each pair's span."""
        if count * _MIN_ELEMENT_BYTES > len(self.data) - self.pos:
            raise self.fail(f"The array claims {count} elements, more than the data can hold")
        members: list[tuple[int | str, object, int, int]] = []
        for _ in range(count):
            start = self.pos
            key: int | str
            if m := _INT.match(self.data, start):
                key = self.integer(m)
            elif _STRING_HEAD.match(self.data, start):
                key = php_array_key(self.string())
            else:
                raise self.fail("An array key must be an integer or a string")
            item = self.value(depth + 1)
            members.append((key, item, start, self.pos))
        if self.data[self.pos : self.pos + 1] != b"}":
            raise self.fail("An array has more elements than its count says")
        self.pos += 1
        return members

    def top_level(self) -> tuple[int, int, list[tuple[int | str, object, int, int]]]:
        """The top-level array's count span and its members, duplicates kept."""
        m = _ARRAY_HEAD.match(self.data, 0)
        if m is None:
            raise self.fail("The request must be a serialized array")
        self.pos = m.end()
        members = self.members(self.number(m.group(1), "array size"), 1)
        self.expect_end()
        return m.start(1), m.end(1), members
