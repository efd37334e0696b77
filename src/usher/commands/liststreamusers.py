"""``sevu.liststreamusers``: the account's stream users, by app and stream."""

from __future__ import annotations

from collections.abc import Mapping

from usher.commands import fields
from usher.commands.base import Context, Result
from usher.commands.streamuser import stream_user_object
from usher.protocol.codes import Code


async def run(ctx: Context, request: Mapping[str, object]) -> Result:
    found = await ctx.storage.list_stream_users(
        ctx.account.cdn,
        app=fields.filter_text(request, "app"),
        stream=fields.filter_text(request, "stream"),
    )
    return Result(
        Code.STREAM_USERS_FOUND if found else Code.STREAM_USERS_NONE,
        {"streamusers": [stream_user_object(u) for u in found]},
    )
