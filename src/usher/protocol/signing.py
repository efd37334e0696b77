"""Signed JSON requests: finding the signed bytes, verifying and signing.

A SEVU client encodes its request without ``signature``, signs those exact
bytes with HMAC-SHA256, adds ``signature`` and encodes again (README, "The control API"). PHP's
``json_encode`` writes ``\\/`` and ``\\u00e9``, Python's ``json.dumps`` puts
spaces after ``,`` and ``:``, Perl clients splice the member in as text, so
no re-encoding on the server can reproduce what every client signed. The
server therefore verifies the body *as sent* minus the one top-level
signature member, which :func:`strip_signature_member` cuts out with a small
scanner that never rewrites a byte it keeps.

The client half (:func:`php_json_encode`, :func:`sign_request`) reproduces
PHP byte for byte so the SDK signs exactly as the documented PHP example.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass

from usher.protocol.errors import BadSignature, MalformedRequest, MissingFields
from usher.protocol.phpserial import php_array_key, php_float_repr

__all__ = [
    "MAX_DEPTH",
    "SignedRequest",
    "compute_signature",
    "parse_json_request",
    "php_json_encode",
    "sign_request",
    "signature_digest",
    "signature_matches",
    "strip_signature_member",
]

MAX_DEPTH = 32
"""Deepest array/object nesting accepted; SEVU requests are flat objects."""

SIGNATURE = "signature"

_WS = re.compile(rb"[ \t\n\r]*")
# A whole JSON string; possessive repeats keep the match linear on any input.
_STRING = re.compile(rb'"(?:[^"\\\x00-\x1f]++|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*+"')
_SCALAR = re.compile(rb"-?(?:0|[1-9][0-9]*+)(?:\.[0-9]++)?(?:[eE][+-]?[0-9]++)?|true|false|null")
_NESTED_TOKEN = re.compile(rb'[\[\]{}"]')
_CLOSER = {ord("["): ord("]"), ord("{"): ord("}")}
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class SignedRequest:
    """A JSON request's fields (without ``signature``) and the bytes it signed."""

    fields: dict[str, object]
    message: bytes
    signature: str


def parse_json_request(raw: bytes) -> SignedRequest:
    """Parse a signed JSON request and recover the exact bytes to verify.

    Refuses everything that would let the verified bytes and the fields the
    server acts on disagree: non-UTF-8 input, a second member with the same
    top-level name, or more than one ``signature`` member.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedRequest("the body is not valid UTF-8; send UTF-8 encoded JSON") from None
    # The scanner runs first: it also bounds the nesting depth before
    # json.loads recurses into it.
    message, scanned = strip_signature_member(raw)

    top_pairs: list[tuple[str, object]] = []

    def keep_pairs(pairs: list[tuple[str, object]]) -> dict[str, object]:
        # Objects close innermost first, so the last call is the top level.
        nonlocal top_pairs
        top_pairs = pairs
        return dict(pairs)

    try:
        parsed = json.loads(
            text,
            object_pairs_hook=keep_pairs,
            parse_constant=_refuse_constant,
            parse_float=_finite_float,
        )
    except RecursionError:
        raise MalformedRequest("the JSON is nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise MalformedRequest(
            f"the body is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    except ValueError:  # int() refuses more than sys.get_int_max_str_digits() digits
        raise MalformedRequest("a number in the JSON has too many digits") from None
    if not isinstance(parsed, dict):
        raise MalformedRequest("the JSON text must be an object {...}")

    names = [name for name, _ in top_pairs]
    signatures = [value for name, value in top_pairs if name == SIGNATURE]
    if len(signatures) != scanned:
        # Cannot happen for valid JSON; refuse rather than verify other bytes.
        raise MalformedRequest("the signature member could not be located")
    if not signatures:
        raise MissingFields([SIGNATURE])
    if len(signatures) > 1:
        raise BadSignature()
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise MalformedRequest(f"the field {name!r} appears more than once")
        seen.add(name)
    signature = signatures[0]
    if not isinstance(signature, str):
        raise BadSignature()
    fields = {name: value for name, value in top_pairs if name != SIGNATURE}
    if any(_SURROGATE.search(s) for s in _strings(fields)):
        # A lone \ud800 escape decodes fine but can never be stored or echoed.
        raise MalformedRequest("a string holds an unpaired UTF-16 surrogate escape")
    return SignedRequest(fields=fields, message=message, signature=signature)


def _refuse_constant(name: str) -> object:
    raise MalformedRequest(f"{name} is not a JSON number; send finite numbers only")


def _finite_float(text: str) -> float:
    # 1e999 is valid JSON but would become inf, which nothing downstream expects.
    value = float(text)
    if not math.isfinite(value):
        raise MalformedRequest(f"the number {text[:40]} is out of range")
    return value


def _strings(value: object) -> Iterator[str]:
    """Every key and string inside ``value``; iterative, depth is bounded anyway."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def strip_signature_member(raw: bytes) -> tuple[bytes, int]:
    """The top-level object without its ``signature`` member, and how many there were.

    The member goes with the comma that separates it from its neighbour: the
    comma before it when it has a predecessor, else the comma (and the
    whitespace) after it; a lone member leaves ``{}``. That is precisely the
    inverse of every client's way of adding it. When the count is not 1 the
    input is returned unchanged; the caller refuses the request anyway.

    Keys are compared after JSON unescaping, so ``"sig\\u006eature"`` is a
    signature member too; otherwise a second one could hide from this scan
    while the JSON parser still sees it.
    """
    pos = _skip_ws(raw, 0)
    if raw[pos : pos + 1] != b"{":
        raise MalformedRequest("the JSON text must be an object {...}")
    open_brace = pos
    pos = _skip_ws(raw, pos + 1)
    # Per member: where its key starts, where its value ends, and the comma after it.
    members: list[tuple[int, int, int]] = []
    hits: list[int] = []
    if raw[pos : pos + 1] != b"}":
        while True:
            key_start = pos
            key_end = _string_end(raw, pos)
            pos = _skip_ws(raw, key_end)
            if raw[pos : pos + 1] != b":":
                raise MalformedRequest(f"a ':' is missing after the key at byte {key_start}")
            pos = _skip_ws(raw, pos + 1)
            value_end = _value_end(raw, pos)
            if _is_signature(raw[key_start:key_end]):
                hits.append(len(members))
            pos = _skip_ws(raw, value_end)
            members.append((key_start, value_end, pos))
            if raw[pos : pos + 1] == b",":
                pos = _skip_ws(raw, pos + 1)
                continue
            if raw[pos : pos + 1] == b"}":
                break
            raise MalformedRequest(f"a ',' or '}}' is expected at byte {pos}")
    close_brace = pos
    if _skip_ws(raw, close_brace + 1) != len(raw):
        raise MalformedRequest(f"unexpected data after the JSON object at byte {close_brace + 1}")

    if len(hits) != 1:
        return raw, len(hits)
    index = hits[0]
    if index > 0:
        cut_from, cut_to = members[index - 1][2], members[index][1]
    elif len(members) > 1:
        cut_from, cut_to = members[0][0], members[1][0]
    else:
        cut_from, cut_to = open_brace + 1, close_brace
    return raw[:cut_from] + raw[cut_to:], 1


def _skip_ws(raw: bytes, pos: int) -> int:
    m = _WS.match(raw, pos)
    return pos if m is None else m.end()


def _is_signature(key: bytes) -> bool:
    if key == b'"signature"':
        return True
    # Only an escaped key can spell "signature" differently; keys are short.
    if b"\\" not in key:
        return False
    try:
        return bool(json.loads(key.decode("utf-8")) == SIGNATURE)
    except UnicodeDecodeError:
        raise MalformedRequest("the body is not valid UTF-8; send UTF-8 encoded JSON") from None


def _string_end(raw: bytes, pos: int) -> int:
    m = _STRING.match(raw, pos)
    if m is None:
        raise MalformedRequest(f"a valid JSON string is expected at byte {pos}")
    return m.end()


def _value_end(raw: bytes, pos: int) -> int:
    """Where the value starting at ``pos`` ends.

    Nested arrays and objects are only bracket-matched, with strings skipped
    whole; json.loads checks their grammar afterwards. Depth 1 is the
    top-level object itself.
    """
    first = raw[pos : pos + 1]
    if first == b'"':
        return _string_end(raw, pos)
    if first not in (b"[", b"{"):
        m = _SCALAR.match(raw, pos)
        if m is None:
            raise MalformedRequest(f"a JSON value is expected at byte {pos}")
        return m.end()
    expected = [_CLOSER[raw[pos]]]
    pos += 1
    while expected:
        m = _NESTED_TOKEN.search(raw, pos)
        if m is None:
            raise MalformedRequest("the JSON ends inside an array or object")
        pos = m.start()
        token = raw[pos]
        if token == ord('"'):
            pos = _string_end(raw, pos)
            continue
        if token in _CLOSER:
            expected.append(_CLOSER[token])
            if len(expected) + 1 > MAX_DEPTH:  # + 1: the top-level object
                raise MalformedRequest(f"the JSON is nested deeper than {MAX_DEPTH} levels")
        elif token != expected.pop():
            raise MalformedRequest(f"a bracket at byte {pos} does not match its opener")
        pos += 1
    return pos


def compute_signature(message: bytes, secret: str) -> str:
    """``base64_encode(hash_hmac('sha256', $message, $secret, true))``."""
    return base64.b64encode(_hmac(message, secret)).decode("ascii")


def signature_matches(message: bytes, signature: str, secret: str) -> bool:
    """Whether ``signature`` is the HMAC of ``message``; constant-time, never raises."""
    claimed = _decode_signature(signature)
    if claimed is None:
        # Still spend the HMAC so a malformed signature is not faster to refuse.
        hmac.compare_digest(_hmac(message, secret), bytes(32))
        return False
    return hmac.compare_digest(_hmac(message, secret), claimed)


def signature_digest(signature: str) -> bytes:
    """A fixed-size identity of ``signature`` for replay detection.

    It is taken over the decoded HMAC, so re-sending a request with the
    padding stripped (or otherwise re-spelled) is still the same replay.
    """
    decoded = _decode_signature(signature)
    if decoded is None:
        # Such a signature never verifies; keep it apart from decoded ones.
        return hashlib.sha256(b"text:" + signature.encode("utf-8", "surrogatepass")).digest()
    return hashlib.sha256(b"hmac:" + decoded).digest()


def _hmac(message: bytes, secret: str) -> bytes:
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).digest()


def _decode_signature(signature: str) -> bytes | None:
    unpadded = signature.rstrip("=")
    padded = unpadded + "=" * (-len(unpadded) % 4)
    if signature not in (padded, unpadded):
        return None
    try:
        decoded = base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):  # bad alphabet, bad length, non-ASCII text
        return None
    # Only the canonical spelling (padding optional) counts, so one HMAC has
    # exactly two accepted texts and no hidden bits or trailing data.
    if base64.b64encode(decoded).decode("ascii") != padded:
        return None
    return decoded


def php_json_encode(value: object) -> str:
    """``json_encode($value)`` with PHP's default flags, byte for byte.

    A dict is a PHP array: keys like ``"5"`` become integers, and an empty
    dict or one keyed 0..n-1 in order is written as a JSON list, as PHP does.
    """
    out: list[str] = []
    _encode(value, out, 0)
    return "".join(out)


def _encode(value: object, out: list[str], depth: int) -> None:
    if value is None:
        out.append("null")
    elif isinstance(value, bool):  # before int: bool is an int subclass
        out.append("true" if value else "false")
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, float):
        text = php_float_repr(value, "e")
        if text in ("NAN", "INF", "-INF"):
            raise ValueError("json_encode() cannot encode INF or NAN")
        out.append(text)
    elif isinstance(value, str):
        out.append(_php_json_string(value))
    elif isinstance(value, dict | list | tuple):
        if depth >= MAX_DEPTH:
            raise ValueError(f"the value is nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            items: dict[int | str, object] = {}
            for key, item in value.items():
                items[php_array_key(key)] = item  # a repeated key keeps its first place
            is_list = list(items) == list(range(len(items)))
            values: list[object] = list(items.values())
        else:
            is_list, values = True, list(value)
        if is_list:
            out.append("[")
            for i, item in enumerate(values):
                out.append("," if i else "")
                _encode(item, out, depth + 1)
            out.append("]")
            return
        out.append("{")
        for i, (key, item) in enumerate(items.items()):
            out.append(("," if i else "") + _php_json_string(str(key)) + ":")
            _encode(item, out, depth + 1)
        out.append("}")
    else:
        raise TypeError(f"json_encode() has no form for {type(value).__name__}")


_PHP_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "/": "\\/",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}
_NEEDS_ESCAPE = re.compile(r'["\\/\x00-\x1f]|[^\x00-\x7f]')


def _php_escape(m: re.Match[str]) -> str:
    char = m.group()
    if char in _PHP_ESCAPES:
        return _PHP_ESCAPES[char]
    code = ord(char)
    if 0xD800 <= code <= 0xDFFF:
        raise ValueError("json_encode() cannot encode an unpaired surrogate")
    if code > 0xFFFF:
        code -= 0x10000
        return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
    return f"\\u{code:04x}"


def _php_json_string(text: str) -> str:
    return '"' + _NEEDS_ESCAPE.sub(_php_escape, text) + '"'


def sign_request(fields: dict[str, object], secret: str) -> str:
    """The request text a PHP client would send for ``fields``.

    Any ``signature`` already in ``fields`` is dropped, so a request can be
    re-signed; the new one is appended last, where PHP puts it.
    """
    unsigned = {name: value for name, value in fields.items() if name != SIGNATURE}
    signature = compute_signature(php_json_encode(unsigned).encode("utf-8"), secret)
    return php_json_encode({**unsigned, SIGNATURE: signature})
