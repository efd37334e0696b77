"""Reading a control-API body in any of the encodings SEVU clients use.

PHP curl sends ``multipart/form-data`` with a ``json`` (or ``php``) field,
Perl LWP sends the same field urlencoded, and modern clients post the JSON
itself. Field bytes are kept exactly as sent: the signature covers them.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from usher.commands.dispatch import SignedCommand
from usher.protocol.envelope import Format
from usher.protocol.errors import BodyTooLarge, MalformedRequest, MissingFields
from usher.protocol.phpserial import parse_php_request
from usher.protocol.signing import parse_json_request

_FIELDS = (b"json", b"php")
_HOW = "post a 'json' form field, a 'php' form field, or an application/json body"


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing more than ``limit`` bytes without reading it all."""
    refuse_declared(request.headers.get("content-length"), limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def refuse_declared(declared: str | None, limit: int) -> None:
    """Refuse a body whose ``Content-Length`` is over ``limit`` before reading it."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)


def find_request(content_type: str, body: bytes) -> tuple[bytes, Format]:
    """The request text in the body, and the format to answer in.

    Split from parsing so that a malformed ``php`` field is still answered
    PHP-serialized: that client cannot decode a JSON error.
    """
    mime, params = parse_options_header(content_type)
    if mime in (b"application/json", b"text/json") or (not mime and body.lstrip()[:1] == b"{"):
        return body, "json"
    if mime == b"multipart/form-data":
        boundary = params.get(b"boundary")
        if not boundary:
            raise MalformedRequest("the multipart body has no boundary; " + _HOW)
        form = _multipart_fields(body, boundary)
    elif mime == b"application/x-www-form-urlencoded":
        form = _urlencoded_fields(body)
    else:
        raise MalformedRequest(f"unsupported Content-Type {content_type!r}; " + _HOW)
    if b"json" in form:
        return form[b"json"], "json"
    if b"php" in form:
        return form[b"php"], "php"
    # Readable, but without the request: a missing field, as the contract
    # says, named the way the documentation example sends it.
    raise MissingFields(["json"])


def parse_request(text: bytes, fmt: Format) -> SignedCommand:
    """Split the signature off the request text, byte-exact."""
    if fmt == "php":
        parsed = parse_php_request(text)
        return SignedCommand(parsed.fields, parsed.message, parsed.signature)
    return _from_json(text)


def _from_json(text: bytes) -> SignedCommand:
    parsed = parse_json_request(text)
    return SignedCommand(parsed.fields, parsed.message, parsed.signature)


def _urlencoded_fields(body: bytes) -> dict[bytes, bytes]:
    """The ``json``/``php`` fields of an urlencoded body, as the exact bytes sent.

    Latin-1 maps every byte to one code point and back, so percent-decoding
    through it hands raw UTF-8 (PHP's ``serialize()``, ``JSON_UNESCAPED_UNICODE``)
    to the signature check unchanged; ``parse_qsl`` on bytes would re-encode
    its result as ASCII and refuse it.
    """
    form: dict[bytes, bytes] = {}
    try:
        pairs = parse_qsl(
            body.decode("latin-1"),
            keep_blank_values=True,
            strict_parsing=False,
            encoding="latin-1",
            max_num_fields=100,
        )
    except ValueError as exc:
        raise MalformedRequest(f"the form could not be read ({exc}); " + _HOW) from None
    for text_name, text_value in pairs:
        name = text_name.encode("latin-1")
        if name in _FIELDS:
            if name in form:
                raise MalformedRequest(f"the form has more than one {text_name!r} field")
            form[name] = text_value.encode("latin-1")
    return form


def _multipart_fields(body: bytes, boundary: bytes) -> dict[bytes, bytes]:
    """The ``json``/``php`` parts of a multipart body, as raw bytes."""
    form: dict[bytes, bytes] = {}
    parts = 0
    header_name = bytearray()
    header_value = bytearray()
    disposition = b""
    data = bytearray()

    def on_part_begin() -> None:
        nonlocal disposition, parts
        parts += 1
        if parts > 100:
            raise MalformedRequest("the multipart body has more than 100 parts")
        disposition = b""
        data.clear()

    def on_header_field(chunk: bytes, start: int, end: int) -> None:
        header_name.extend(chunk[start:end])

    def on_header_value(chunk: bytes, start: int, end: int) -> None:
        header_value.extend(chunk[start:end])

    def on_header_end() -> None:
        nonlocal disposition
        if bytes(header_name).lower() == b"content-disposition":
            disposition = bytes(header_value)
        header_name.clear()
        header_value.clear()

    def on_part_data(chunk: bytes, start: int, end: int) -> None:
        data.extend(chunk[start:end])

    def on_part_end() -> None:
        _, options = parse_options_header(disposition)
        name = options.get(b"name", b"")
        if name in _FIELDS:
            if name in form:
                raise MalformedRequest(f"the form has more than one {name.decode()!r} field")
            form[name] = bytes(data)

    try:
        # The constructor validates the boundary (at most 256 characters, no
        # odd bytes), so it belongs inside the ``try`` like the parsing.
        parser = MultipartParser(
            boundary,
            {
                "on_part_begin": on_part_begin,
                "on_header_field": on_header_field,
                "on_header_value": on_header_value,
                "on_header_end": on_header_end,
                "on_part_data": on_part_data,
                "on_part_end": on_part_end,
            },
        )
        parser.write(body)
        parser.finalize()
    except FormParserError as exc:
        raise MalformedRequest(f"the multipart body could not be read ({exc}); " + _HOW) from None
    return form
