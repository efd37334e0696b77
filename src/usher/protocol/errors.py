"""Every error Usher raises on purpose, in one tree.

::

    UsherError
    ├── ApiError                  a failure envelope: code, message, HTTP status
    │   ├── UnrecognizedCommand        0
    │   ├── AuthorizationFailed        1
    │   ├── TimestampOutOfRange        2
    │   ├── BadSignature               3
    │   ├── UnexpectedError            4
    │   ├── Unauthorized               5
    │   ├── MissingFields              6
    │   ├── Replayed                   7
    │   ├── InvalidField               8
    │   ├── MalformedRequest           9   (BodyTooLarge: HTTP 413)
    │   ├── Overloaded              1000
    │   └── NotFound             2010/2020 (a command's "ticket not found")
    ├── StorageError              the database failed or refused
    │   ├── StorageUnavailable         cannot reach or write the database
    │   │   └── StorageBusy                too many writes queued: shed load
    │   ├── AlreadyExists              a unique name or id is taken
    │   └── SchemaError                schema newer than this code, or corrupt
    └── ConfigError               bad settings or command-line values

Only :mod:`usher.protocol.envelope` turns an :class:`ApiError` into bytes, and
the web layer maps a :class:`StorageError` to code 4 (or 1000 when the storage
is saturated), so a traceback never reaches a client.
"""

from __future__ import annotations

from usher.protocol.codes import MESSAGES, Code, http_status


class UsherError(Exception):
    """Base of every error Usher raises on purpose."""


class ApiError(UsherError):
    """A failure that is answered with the SEVU failure envelope."""

    code: Code = Code.UNEXPECTED_ERROR

    def __init__(self, detail: str = "", *, http: int | None = None) -> None:
        self.detail = detail
        self.http = http_status(self.code) if http is None else http
        super().__init__(self.message)

    @property
    def message(self) -> str:
        return MESSAGES[self.code] + self.detail


class UnrecognizedCommand(ApiError):
    code = Code.UNRECOGNIZED_COMMAND


class AuthorizationFailed(ApiError):
    code = Code.AUTHORIZATION_FAILED


class TimestampOutOfRange(ApiError):
    code = Code.TIMESTAMP_OUT_OF_RANGE


class BadSignature(ApiError):
    code = Code.BAD_SIGNATURE


class UnexpectedError(ApiError):
    code = Code.UNEXPECTED_ERROR


class Unauthorized(ApiError):
    code = Code.UNAUTHORIZED


class MissingFields(ApiError):
    code = Code.MISSING_FIELDS

    def __init__(self, names: list[str]) -> None:
        self.names = names
        super().__init__(", ".join(names))


class Replayed(ApiError):
    code = Code.REPLAYED


class InvalidField(ApiError):
    code = Code.INVALID_FIELD

    def __init__(self, name: str, why: str) -> None:
        self.name = name
        self.why = why
        super().__init__(f"{name}: {why}")


class MalformedRequest(ApiError):
    code = Code.MALFORMED


class BodyTooLarge(MalformedRequest):
    def __init__(self, limit: int) -> None:
        super().__init__(f"the body is larger than {limit} bytes; send a smaller request", http=413)


class Overloaded(ApiError):
    code = Code.OVERLOADED


class NotFound(ApiError):
    """A command's own "not found" failure (2010 for status, 2020 for revoke)."""

    def __init__(self, code: Code) -> None:
        self.code = code
        super().__init__()


class StorageError(UsherError):
    """The database failed or refused an operation."""


class StorageUnavailable(StorageError):
    """The database cannot be reached or written right now."""


class StorageBusy(StorageUnavailable):
    """More writes are queued than the backend accepts; answer code 1000."""


class AlreadyExists(StorageError):
    """A unique value (account username or cdn) is already taken."""


class SchemaError(StorageError):
    """The schema is newer than this code knows, or is not Usher's."""


class ConfigError(UsherError):
    """A setting or command-line value is unusable; the message says which."""
