"""The OpenAPI 3.1 description of ``/v2/``, written from the field tables
of :mod:`usher.protocol.rest`, the ones the handlers check requests with.
Stdlib only, no I/O."""

from __future__ import annotations

import functools
from typing import Any, Final

from usher.protocol.rest import (
    ATTEMPT_FIELDS,
    DEFAULT_LIMIT,
    MAX_LIMIT,
    PAGING_OPTIONS,
    TIME_OPTIONS,
    TOKEN_FIELDS,
    ErrorCode,
    Field,
)

_FORMATS: Final[dict[str, dict[str, Any]]] = {
    "string": {"type": "string"},
    "integer": {"type": "integer"},
    "flag": {"type": "integer", "enum": [0, 1]},
    "date": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$"},
    "strings": {"type": "array", "items": {"type": "string"}},
}
#: What a request may send for each kind: numbers may be numeric strings,
#: flags true/false, a new expiry a relative time as well as a date, and
#: any field null, which counts as not sent.
_SENT: Final[dict[str, dict[str, Any]]] = {
    "string": {"type": ["string", "null"]},
    "integer": {"type": ["integer", "string", "null"]},
    "flag": {"type": ["boolean", "integer", "string", "null"]},
    "date": {"type": ["string", "null"]},
    "strings": {"type": ["array", "null"], "items": {"type": "string"}},
}


def _schema(field: Field) -> dict[str, Any]:
    schema = {**_FORMATS[field.kind], "description": field.description}
    if field.nullable:
        schema["type"] = [schema["type"], "null"]
    return schema


def _object(fields: tuple[Field, ...]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {f.name: _schema(f) for f in fields},
        "required": [f.name for f in fields],
        "additionalProperties": False,
    }


def _request(fields: tuple[Field, ...], *, create: bool) -> dict[str, Any]:
    chosen = [f for f in fields if (f.create != "generated" if create else f.update)]
    return {
        "type": "object",
        "properties": {f.name: {**_SENT[f.kind], "description": f.description} for f in chosen},
        "required": [f.name for f in chosen if create and f.create == "required"],
        "additionalProperties": False,
        **({} if create else {"minProperties": 1}),
    }


def _query(fields: tuple[Field, ...], options: tuple[str, ...]) -> list[dict[str, Any]]:
    described = {
        "option:limit": f"Most items to answer (default {DEFAULT_LIMIT}; at most {MAX_LIMIT}).",
        "option:offset": "Items to skip first.",
        "option:starttime": "Only attempts at or after this time (UTC date, or a UNIX time).",
        "option:endtime": "Only attempts at or before this time (UTC date, or a UNIX time).",
    }
    parameters = [
        {
            "name": f.name,
            "in": "query",
            "required": False,
            "description": f"Only items whose {f.name} is exactly this.",
            "schema": {"type": "string"},
        }
        for f in fields
        if f.filter
    ]
    parameters += [
        {
            "name": name,
            "in": "query",
            "required": False,
            "description": described[name],
            "schema": {"type": "string"},
        }
        for name in options
    ]
    return parameters


def _data(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"data": schema},
                    "required": ["data"],
                    "additionalProperties": False,
                }
            }
        },
    }


def _failures(*codes: ErrorCode) -> dict[str, Any]:
    answers: dict[str, Any] = {}
    for code in (ErrorCode.UNAUTHORIZED, *codes, ErrorCode.SERVER_BUSY):
        answers.setdefault(
            str(code.status),
            {
                "description": " / ".join(c.name for c in ErrorCode if c.status == code.status),
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Errors"}}
                },
            },
        )
    return answers


_KEY: Final = {
    "name": "key",
    "in": "path",
    "required": True,
    "description": "The token's key.",
    "schema": {"type": "string"},
}


def _ref(schema: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{schema}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


_TOKEN: Final = _ref("Token")
_ATTEMPT: Final = _ref("Attempt")


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The document ``GET /v2/openapi.json`` serves."""
    bad = (ErrorCode.REQUIRED_FIELD, ErrorCode.NOT_FOUND, ErrorCode.METHOD_NOT_ALLOWED)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Usher v2 REST API",
            "version": "2",
            "description": "ScaleEngine v2-compatible tokens (tickets) and attempts. "
            "HTTP Basic: the account's cdn as the user name, its secret as the password.",
        },
        "security": [{"basic": []}],
        "paths": {
            "/v2/sevu_token/": {
                "put": {
                    "summary": "Create a token",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/TokenCreate"}
                            }
                        },
                    },
                    "responses": {"201": _data(_TOKEN, "The new token."), **_failures(*bad)},
                },
                "get": {
                    "summary": "List tokens, newest first",
                    "parameters": _query(TOKEN_FIELDS, PAGING_OPTIONS),
                    "responses": {
                        "200": _data({"type": "array", "items": _TOKEN}, "Matching tokens."),
                        **_failures(*bad),
                    },
                },
            },
            "/v2/sevu_token/{key}": {
                "parameters": [_KEY],
                "get": {
                    "summary": "One token",
                    "responses": {"200": _data(_TOKEN, "The token."), **_failures(*bad)},
                },
                "post": {
                    "summary": "Change a token's active flag or expiry",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/TokenUpdate"}
                            }
                        },
                    },
                    "responses": {"200": _data(_TOKEN, "The changed token."), **_failures(*bad)},
                },
                "delete": {
                    "summary": "Revoke a token",
                    "responses": {"204": {"description": "Revoked."}, **_failures(*bad)},
                },
            },
            "/v2/sevu_attempt/": {
                "get": {
                    "summary": "List attempts, oldest first",
                    "parameters": _query(ATTEMPT_FIELDS, PAGING_OPTIONS + TIME_OPTIONS),
                    "responses": {
                        "200": _data({"type": "array", "items": _ATTEMPT}, "Matching attempts."),
                        **_failures(*bad),
                    },
                },
            },
            "/v2/sevu_attempt/{key}": {
                "parameters": [_KEY],
                "get": {
                    "summary": "A token's attempts, oldest first",
                    "parameters": _query((), PAGING_OPTIONS + TIME_OPTIONS),
                    "responses": {
                        "200": _data({"type": "array", "items": _ATTEMPT}, "Its attempts."),
                        **_failures(*bad),
                    },
                },
            },
        },
        "components": {
            "securitySchemes": {"basic": {"type": "http", "scheme": "basic"}},
            "schemas": {
                "Token": _object(TOKEN_FIELDS),
                "Attempt": _object(ATTEMPT_FIELDS),
                "TokenCreate": _request(TOKEN_FIELDS, create=True),
                "TokenUpdate": _request(TOKEN_FIELDS, create=False),
                "Errors": {
                    "type": "object",
                    "properties": {
                        "errors": {
                            "type": "array",
                            "minItems": 1,
                            "items": {
                                "type": "object",
                                "properties": {
                                    "status": {"type": "integer"},
                                    "code": {"enum": [c.name for c in ErrorCode]},
                                    "title": {"type": "string"},
                                    "detail": {"type": "string"},
                                },
                                "required": ["status", "code", "title", "detail"],
                                "additionalProperties": False,
                            },
                        }
                    },
                    "required": ["errors"],
                    "additionalProperties": False,
                },
            },
        },
    }
