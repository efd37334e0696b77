"""``sevu.removestreamuser``: forget a stream user, by id or by name."""

from __future__ import annotations

from collections.abc import Mapping

from usher.commands.base import Context, Result
from usher.commands.streamuser import stream_user_target
from usher.protocol.codes import Code
from usher.protocol.errors import NotFound


async def run(ctx: Context, request: Mapping[str, object]) -> Result:
    target = stream_user_target(request)
    cdn = ctx.account.cdn
    if isinstance(target, int):
        removed = await ctx.storage.remove_stream_user(cdn, id=target)
    else:
        removed = await ctx.storage.remove_stream_user(cdn, name=target)
    if not removed:
        raise NotFound(Code.REMOVE_STREAM_USER_NOT_FOUND)
    return Result(Code.STREAM_USER_REMOVED)
