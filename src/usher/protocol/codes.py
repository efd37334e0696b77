"""Response codes and their fixed messages (README, "The control API" and "Commands").

The numbers, texts and HTTP statuses are the wire contract that SEVU clients
already depend on; nothing here may be reworded.
"""

from __future__ import annotations

from enum import IntEnum


class Code(IntEnum):
    UNRECOGNIZED_COMMAND = 0
    AUTHORIZATION_FAILED = 1
    TIMESTAMP_OUT_OF_RANGE = 2
    BAD_SIGNATURE = 3
    UNEXPECTED_ERROR = 4
    UNAUTHORIZED = 5
    MISSING_FIELDS = 6
    REPLAYED = 7
    INVALID_FIELD = 8
    MALFORMED = 9
    OVERLOADED = 1000

    TICKET_CREATED = 2001
    STATUS_NOT_FOUND = 2010
    STATUS_FOUND = 2011
    REVOKE_NOT_FOUND = 2020
    REVOKED = 2021
    SEARCH_NONE = 2030
    SEARCH_FOUND = 2031
    ERRORLOG_NONE = 2040
    ERRORLOG_FOUND = 2041
    ERRORCOUNT_NONE = 2050
    ERRORCOUNT_FOUND = 2051
    STREAM_USER_SAVED = 2061
    REMOVE_STREAM_USER_NOT_FOUND = 2070
    STREAM_USER_REMOVED = 2071
    STREAM_USERS_NONE = 2080
    STREAM_USERS_FOUND = 2081
    RETRIEVE_STREAM_USER_NOT_FOUND = 2090
    STREAM_USER_FOUND = 2091
    SESSIONS_NONE = 2100
    SESSIONS_FOUND = 2101
    KICK_NONE = 2110
    KICKED = 2111


MESSAGES: dict[Code, str] = {
    Code.UNRECOGNIZED_COMMAND: "Unrecognized API Command",
    Code.AUTHORIZATION_FAILED: (
        "CDN Authorization failed. Invalid API Key or not authorized for that account."
    ),
    Code.TIMESTAMP_OUT_OF_RANGE: (
        "Timestamp outside valid range. Make sure your timestamp is in UTC not local time"
    ),
    Code.BAD_SIGNATURE: "Failed HMAC-SHA256 Signature. Check your Private Key",
    Code.UNEXPECTED_ERROR: "API encountered an unexpected error",
    Code.UNAUTHORIZED: "Unauthorized Access to API",
    Code.MISSING_FIELDS: "One or more required fields are missing: ",
    Code.REPLAYED: "Request already processed: this signature has been used",
    Code.INVALID_FIELD: "Invalid value for field ",
    Code.MALFORMED: "Malformed request: ",
    Code.OVERLOADED: (
        "Servers are experiencing a larger than usual volume of traffic, "
        "please try again in a few minutes"
    ),
    Code.TICKET_CREATED: "ScaleEngine Virtual Usher ticket created",
    Code.STATUS_NOT_FOUND: "ScaleEngine Virtual Usher ticket not found",
    Code.STATUS_FOUND: "ScaleEngine Virtual Usher ticket found",
    Code.REVOKE_NOT_FOUND: "ScaleEngine Virtual Usher ticket not found",
    Code.REVOKED: "ScaleEngine Virtual Usher ticket revoked",
    Code.SEARCH_NONE: "ScaleEngine Virtual Usher no tickets found",
    Code.SEARCH_FOUND: "ScaleEngine Virtual Usher tickets found",
    Code.ERRORLOG_NONE: "ScaleEngine Virtual Usher no ticket attempts found",
    Code.ERRORLOG_FOUND: "ScaleEngine Virtual Usher ticket attempts found",
    Code.ERRORCOUNT_NONE: "ScaleEngine Virtual Usher no unsuccessful tickets attempts found",
    Code.ERRORCOUNT_FOUND: "ScaleEngine Virtual Usher unsuccessful tickets attempts found",
    Code.STREAM_USER_SAVED: "ScaleEngine Virtual Usher stream user saved",
    Code.REMOVE_STREAM_USER_NOT_FOUND: "ScaleEngine Virtual Usher stream user not found",
    Code.STREAM_USER_REMOVED: "ScaleEngine Virtual Usher stream user removed",
    Code.STREAM_USERS_NONE: "ScaleEngine Virtual Usher no stream users found",
    Code.STREAM_USERS_FOUND: "ScaleEngine Virtual Usher stream users found",
    Code.RETRIEVE_STREAM_USER_NOT_FOUND: "ScaleEngine Virtual Usher stream user not found",
    Code.STREAM_USER_FOUND: "ScaleEngine Virtual Usher stream user found",
    Code.SESSIONS_NONE: "ScaleEngine Virtual Usher no sessions found",
    Code.SESSIONS_FOUND: "ScaleEngine Virtual Usher sessions found",
    Code.KICK_NONE: "ScaleEngine Virtual Usher no open sessions found",
    Code.KICKED: "ScaleEngine Virtual Usher sessions ended",
}

HTTP_STATUS: dict[Code, int] = {
    Code.UNRECOGNIZED_COMMAND: 404,
    Code.AUTHORIZATION_FAILED: 401,
    Code.TIMESTAMP_OUT_OF_RANGE: 401,
    Code.BAD_SIGNATURE: 401,
    Code.UNEXPECTED_ERROR: 500,
    Code.UNAUTHORIZED: 401,
    Code.MISSING_FIELDS: 400,
    Code.REPLAYED: 401,
    Code.INVALID_FIELD: 400,
    Code.MALFORMED: 400,
    Code.OVERLOADED: 503,
    Code.STATUS_NOT_FOUND: 404,
    Code.REVOKE_NOT_FOUND: 404,
    Code.REMOVE_STREAM_USER_NOT_FOUND: 404,
    Code.RETRIEVE_STREAM_USER_NOT_FOUND: 404,
}


def http_status(code: Code) -> int:
    """The HTTP status a response with ``code`` is sent with."""
    return HTTP_STATUS.get(code, 200)
