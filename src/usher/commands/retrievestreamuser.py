"""``sevu.retrievestreamuser``: one stream user, by id or by name."""

from __future__ import annotations

from collections.abc import Mapping

from usher.commands.base import Context, Result
from usher.commands.streamuser import stream_user_object, stream_user_target
from usher.protocol.codes import Code
from usher.protocol.errors import NotFound


async def run(ctx: Context, request: Mapping[str, object]) -> Result:
    target = stream_user_target(request)
    cdn = ctx.account.cdn
    if isinstance(target, int):
        found = await ctx.storage.get_stream_user(cdn, id=target)
    else:
        found = await ctx.storage.get_stream_user(cdn, name=target)
    if found is None:
        raise NotFound(Code.RETRIEVE_STREAM_USER_NOT_FOUND)
    return Result(Code.STREAM_USER_FOUND, {"streamuser": stream_user_object(found)})
