"""``sevu.addstreamuser``: save who may publish a stream (or replace the
pass and settings of the same app + stream + user)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Final

from usher.commands import fields
from usher.commands.base import Context, Result
from usher.commands.streamuser import (
    MAX_CREDENTIAL,
    MAX_NAME,
    bounded_text,
    stream_user_name,
    stream_user_object,
)
from usher.passwords import hash_password
from usher.protocol.codes import Code
from usher.protocol.errors import InvalidField
from usher.tickets.publishers import StreamUser, StreamUserName, StreamUserSettings
from usher.tickets.wildcard import validate_app_name

SEGMENT_TYPES: Final = ("size", "schedule", "duration")


def settings(request: Mapping[str, object]) -> StreamUserSettings:
    """ScaleEngine's recording settings, validated; absent ones are ``None``."""
    segment_type = bounded_text(request, "segment_type", MAX_NAME)
    if segment_type is not None and segment_type not in SEGMENT_TYPES:
        raise InvalidField("segment_type", f"expected one of {', '.join(SEGMENT_TYPES)}")
    return StreamUserSettings(
        record=fields.flag(request, "record"),
        record_type=bounded_text(request, "record_type", MAX_NAME),
        segment_type=segment_type,
        segment_value=fields.integer(request, "segment_value"),
        save_folder=bounded_text(request, "save_folder", MAX_NAME),
        playlist_count=fields.integer(request, "playlist_count"),
        playlist_timeout=fields.integer(request, "playlist_timeout"),
        enable_dvr=fields.flag(request, "enable_dvr"),
        ga_key=bounded_text(request, "ga_key", MAX_NAME),
    )


async def save(
    ctx: Context, name: StreamUserName, password: str | None, chosen: StreamUserSettings
) -> StreamUser:
    """Validate and store one stream user, hashing its pass: what
    ``sevu.addstreamuser`` and the panel's Publishers page both save with.

    The same app + stream + user replaces that entry's pass and settings.
    """
    validate_app_name(name.app, ctx.account.username)
    if name.user is None and password is not None:
        raise InvalidField("user", "a pass needs a user; send both, or neither for an open entry")
    if name.user is not None and password is None:
        raise InvalidField("pass", "a user needs a pass; send both, or neither for an open entry")
    # Slow by design (scrypt): off the event loop, as the panel's sign-in.
    pass_hash = None if password is None else await asyncio.to_thread(hash_password, password)
    return await ctx.storage.save_stream_user(
        StreamUser(
            0,
            ctx.account.cdn,
            name.app,
            name.stream,
            name.user,
            pass_hash,
            chosen,
            ctx.now,
            ctx.now,
        )
    )


async def run(ctx: Context, request: Mapping[str, object]) -> Result:
    name = stream_user_name(request)
    password = bounded_text(request, "pass", MAX_CREDENTIAL)
    saved = await save(ctx, name, password, settings(request))
    return Result(Code.STREAM_USER_SAVED, {"streamuser": stream_user_object(saved)})
