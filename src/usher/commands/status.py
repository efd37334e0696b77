"""``sevu.status``: one ticket by key."""

from __future__ import annotations

from collections.abc import Mapping

from usher.commands import fields
from usher.commands.base import Context, Result, ticket_object, with_viewers
from usher.protocol.codes import Code
from usher.protocol.errors import NotFound


async def run(ctx: Context, request: Mapping[str, object]) -> Result:
    fields.require(request, "key")
    ticket = await ctx.storage.get_ticket(ctx.account.cdn, fields.text(request, "key") or "")
    if ticket is None:
        raise NotFound(Code.STATUS_NOT_FOUND)
    (ticket,) = await with_viewers(ctx, [ticket])
    rendered = ticket_object(ticket)
    # Older clients read the ticket's fields at top level, newer ones `ticket`.
    return Result(Code.STATUS_FOUND, {"ticket": rendered, **rendered})
