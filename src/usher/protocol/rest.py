"""The ScaleEngine v2 REST API's wire format (SPEC §7): its resources'
fields, the error objects, the bodies, and the reading of a request's JSON
body and query against those fields. Stdlib only, no I/O.

The field tables below are the one description of each resource: the
handlers read and check requests with them, and :mod:`usher.protocol.openapi`
writes the OpenAPI document from them, so the two cannot drift apart.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Final, Literal

#: How a field's value is written in JSON.
Kind = Literal["string", "integer", "flag", "date", "strings"]
#: What a create (``PUT``) may do with a field.
OnCreate = Literal["required", "optional", "generated"]


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    kind: Kind
    description: str
    #: Whether ``PUT`` must, may or must not (the server makes it) send it.
    create: OnCreate = "generated"
    #: Whether ``POST`` may change it.
    update: bool = False
    #: Whether a listing may filter by it (``?name=value``, exact match).
    filter: bool = False
    #: Whether it is ``null`` until something happens (``used_date``).
    nullable: bool = False


TOKEN_FIELDS: Final = (
    Field("id", "integer", "The ticket's number in this Usher."),
    Field("cdn_id", "integer", "The account (cdn) the ticket belongs to."),
    Field("key", "string", "The ticket's key: the player sends it as key=.", filter=True),
    Field("pass", "string", "The ticket's pass: the player sends it as pass=.", "required",
          filter=True),
    Field("ip", "string", "Addresses, CIDR ranges or auto slots the ticket plays from, "
          "separated by |; empty for any address.", "required", filter=True),
    Field("video", "string", "Videos (streams) the ticket opens, separated by |; * is a "
          "wildcard.", "required", filter=True),
    Field("app", "string", "Applications the ticket opens, separated by |; each begins with "
          "the account's username and a dash.", "required", filter=True),
    Field("uses", "integer", "Playback starts allowed; 0 for unlimited.", "required",
          filter=True),
    Field("use_count", "integer", "Playback starts so far."),
    Field("active", "flag", "1 while the ticket may play; 0 once revoked.", "optional",
          update=True, filter=True),
    Field("created_date", "date", "When the ticket was made (UTC)."),
    Field("expire_date", "date", "When the ticket stops playing (UTC). On create: a date, "
          "or a relative time such as +1 day; one week when not sent.", "optional",
          update=True),
    Field("used_date", "date", "The latest playback start (UTC); null before the first.",
          nullable=True),
    Field("bound_ips", "strings", "Addresses that took the ticket's auto slots."),
    Field("max_viewers", "integer", "Most viewers watching at once; 0 for no limit.",
          "optional"),
    Field("viewers", "integer", "Viewers watching now (open sessions)."),
)  # fmt: skip
ATTEMPT_FIELDS: Final = (
    Field("id", "integer", "The attempt's number."),
    Field("datetime", "date", "When the streaming server asked (UTC)."),
    Field("key", "string", "The key the player sent.", filter=True),
    Field("pass", "string", "The pass the player sent.", filter=True),
    Field("ip", "string", "The viewer's address.", filter=True),
    Field("video", "string", "The video asked for.", filter=True),
    Field("app", "string", "The application asked for.", filter=True),
    Field("appinst", "string", "The application instance.", filter=True),
    Field("pageurl", "string", "The page the player was on, when the server says."),
    Field("refurl", "string", "The referring URL, when the server says."),
    Field("success", "flag", "1 when the playback was allowed.", filter=True),
    Field("reason", "string", "Why it was refused; empty when allowed."),
    Field("server_ip", "string", "The streaming server's address."),
)  # fmt: skip

#: Listing options, beside the filters: ``option:limit`` (default
#: :data:`DEFAULT_LIMIT`, larger values are cut to :data:`MAX_LIMIT`) and
#: ``option:offset``; attempts also take a time range.
PAGING_OPTIONS: Final = ("option:limit", "option:offset")
TIME_OPTIONS: Final = ("option:starttime", "option:endtime")
DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 1000


# -- errors -------------------------------------------------------------------------


class ErrorCode(Enum):
    UNAUTHORIZED = (401, "Authentication required")
    REQUIRED_FIELD = (400, "A required field is missing")
    TYPE_MISMATCH = (400, "A field has the wrong type")
    ACCESS_VIOLATION = (400, "A field may not be set")
    REQUEST_INVALID = (400, "The request is invalid")
    NOT_FOUND = (404, "Not found")
    METHOD_NOT_ALLOWED = (405, "Method not allowed")
    SERVER_BUSY = (503, "The server is busy")

    @property
    def status(self) -> int:
        return self.value[0]

    @property
    def title(self) -> str:
        return self.value[1]


class RestError(Exception):
    """One failure of a v2 request, answered as ``{"errors": [...]}``."""

    def __init__(self, code: ErrorCode, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail

    def as_object(self) -> dict[str, object]:
        return {
            "status": self.code.status,
            "code": self.code.name,
            "title": self.code.title,
            "detail": self.detail,
        }


def encode(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def data_body(value: object) -> bytes:
    return encode({"data": value})


def errors_body(errors: list[RestError]) -> bytes:
    return encode({"errors": [error.as_object() for error in errors]})


# -- reading requests ------------------------------------------------------------------

_TOKEN_BY_NAME: Final = {f.name: f for f in TOKEN_FIELDS}


def read_object(body: bytes) -> dict[str, object]:
    """A request body that must be one JSON object."""
    try:
        value = json.loads(body.decode("utf-8", "replace") or "null")
    except (ValueError, RecursionError):
        raise RestError(
            ErrorCode.REQUEST_INVALID, "The body is not JSON; send one JSON object."
        ) from None
    if not isinstance(value, dict):
        raise RestError(
            ErrorCode.REQUEST_INVALID,
            'The body must be one JSON object, such as {"pass": "…", …}.',
        )
    return value


def token_fields(body: Mapping[str, object], *, create: bool) -> dict[str, object]:
    """The fields of a ``PUT`` (``create``) or ``POST`` body, checked
    against :data:`TOKEN_FIELDS`: as the signed API's commands read them
    (strings, numbers or numeric strings), every problem raised as a
    :class:`RestError` naming the field. ``null`` counts as not sent."""
    # null is "not sent"; so is "" in a change, which would otherwise be a
    # 200 that changed nothing.
    sent = {
        name: value for name, value in body.items() if value is not None and (create or value != "")
    }
    for name in sent:
        field = _TOKEN_BY_NAME.get(name)
        if field is None:
            raise RestError(
                ErrorCode.REQUEST_INVALID,
                f"A token has no field '{_shown(name)}'; send only the fields it has.",
            )
        if (create and field.create == "generated") or (not create and not field.update):
            allowed = "create" if create else "change"
            raise RestError(
                ErrorCode.ACCESS_VIOLATION,
                f"'{name}' is not a field you may {allowed}"
                + ("; Usher makes it." if field.create == "generated" else
                   "; only active and expire_date may be changed."),
            )  # fmt: skip
        _check_type(field, sent[name])
    if create:
        missing = [f.name for f in TOKEN_FIELDS if f.create == "required" and f.name not in sent]
        if missing:
            raise RestError(
                ErrorCode.REQUIRED_FIELD,
                f"The token needs {', '.join(missing)}; 'ip' may be \"\" for any address.",
            )
    elif not sent:
        raise RestError(
            ErrorCode.REQUIRED_FIELD, "Send active, expire_date or both to change a token."
        )
    return sent


def _check_type(field: Field, value: object) -> None:
    if field.kind == "flag":
        ok = isinstance(value, bool | int | str)
        wanted = "true/false or 1/0"
    elif field.kind == "integer":
        ok = isinstance(value, int | float | str) and not isinstance(value, bool)
        wanted = "a number (or a string of digits)"
    else:
        ok = isinstance(value, str)
        wanted = "a string"
    if not ok:
        raise RestError(
            ErrorCode.TYPE_MISMATCH, f"'{field.name}' must be {wanted}, not {_json_type(value)}."
        )


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return "a number" if isinstance(value, int | float) else "a string"


def query_filters(
    pairs: list[tuple[str, str]], fields: tuple[Field, ...], options: tuple[str, ...]
) -> tuple[dict[str, str], dict[str, str]]:
    """A listing's query: its filters (by :data:`Field.filter`) and its
    options, each given at most once; anything else is ``REQUEST_INVALID``."""
    filters: dict[str, str] = {}
    chosen: dict[str, str] = {}
    names = {f.name for f in fields if f.filter}
    for name, value in pairs:
        target = filters if name in names else chosen if name in options else None
        if target is None:
            listed = ", ".join(sorted(names | set(options)))
            raise RestError(
                ErrorCode.REQUEST_INVALID,
                f"'{_shown(name)}' is not a filter or option of this listing; use {listed}.",
            )
        if name in target and target[name] != value:
            raise RestError(ErrorCode.REQUEST_INVALID, f"'{name}' is given twice; give it once.")
        target[name] = value
    return filters, chosen


def _shown(name: str) -> str:
    return name[:40].encode("ascii", "backslashreplace").decode("ascii")
