"""``sevu.kick``: end a ticket's open sessions now, or one of them."""

from __future__ import annotations

from collections.abc import Mapping

from usher.commands import fields
from usher.commands.base import Context, Result
from usher.protocol.codes import Code
from usher.protocol.errors import NotFound
from usher.tickets.model import EndReason


async def run(ctx: Context, request: Mapping[str, object]) -> Result:
    fields.require(request, "key")
    key = fields.text(request, "key") or ""
    session_id = fields.filter_text(request, "session")
    if await ctx.storage.get_ticket(ctx.account.cdn, key) is None:
        raise NotFound(Code.REVOKE_NOT_FOUND)
    ended = await ctx.storage.end_sessions(
        now=ctx.now, reason=EndReason.KICKED, cdn=ctx.account.cdn, key=key, session_id=session_id
    )
    ctx.sessions_ended(ended, EndReason.KICKED)
    return Result(Code.KICKED if ended else Code.KICK_NONE, {"ended": len(ended)})
