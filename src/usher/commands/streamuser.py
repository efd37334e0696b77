"""What the ``sevu.*streamuser*`` commands share: naming a stream user in a
request, and the stream user object (SPEC §6)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from usher.commands import fields
from usher.protocol.errors import InvalidField, MissingFields
from usher.tickets.expiry import format_utc
from usher.tickets.publishers import EVERY_STREAM, StreamUser, StreamUserName

#: Longest user and pass accepted (as a ticket's pass).
MAX_CREDENTIAL: Final = 256
#: Longest stream name, and longest settings text.
MAX_NAME: Final = 1024


def bounded_text(request: Mapping[str, object], name: str, most: int) -> str | None:
    """An optional text field, ``None`` when absent or empty, at most ``most`` long."""
    value = fields.filter_text(request, name)
    if value is not None and len(value) > most:
        raise InvalidField(name, f"the value is longer than {most} characters")
    return value


def stream_user_name(request: Mapping[str, object]) -> StreamUserName:
    """``app`` + ``stream`` (both required) + ``user`` (empty or absent names
    the open entry)."""
    fields.require(request, "app", "stream")
    app = fields.text(request, "app") or ""
    stream = fields.text(request, "stream") or ""
    if not app:
        raise InvalidField("app", "give the application name")
    if not stream:
        raise InvalidField("stream", "give a stream name, or * for every stream of the app")
    if len(stream) > MAX_NAME:
        raise InvalidField("stream", f"the value is longer than {MAX_NAME} characters")
    if stream != EVERY_STREAM and "*" in stream:
        raise InvalidField("stream", "give one stream name, or * alone for every stream")
    return StreamUserName(app, stream, bounded_text(request, "user", MAX_CREDENTIAL))


def stream_user_target(request: Mapping[str, object]) -> int | StreamUserName:
    """The stream user a request names: by ``streamuser_id``, else by name."""
    id = fields.integer(request, "streamuser_id")
    if id is not None:
        return id
    if all(fields.filter_text(request, name) is None for name in ("app", "stream")):
        raise MissingFields(["streamuser_id"])
    return stream_user_name(request)


def flag_value(value: bool | None) -> int | None:
    return None if value is None else int(value)


def stream_user_object(user: StreamUser) -> dict[str, object]:
    """The stream user object (SPEC §6); never the pass nor its hash."""
    s = user.settings
    return {
        "streamuser_id": user.id,
        "app": user.app,
        "stream": user.stream,
        "user": user.user,
        "created_date": format_utc(user.created_at),
        "updated_date": format_utc(user.updated_at),
        "record": flag_value(s.record),
        "record_type": s.record_type,
        "segment_type": s.segment_type,
        "segment_value": s.segment_value,
        "save_folder": s.save_folder,
        "playlist_count": s.playlist_count,
        "playlist_timeout": s.playlist_timeout,
        "enable_dvr": flag_value(s.enable_dvr),
        "ga_key": s.ga_key,
    }
