"""``sevu.revoke``: deactivate a ticket for good, and end its open sessions."""

from __future__ import annotations

from collections.abc import Mapping

from usher.commands import fields
from usher.commands.base import Context, Result
from usher.protocol.codes import Code
from usher.protocol.errors import NotFound


async def run(ctx: Context, request: Mapping[str, object]) -> Result:
    fields.require(request, "key")
    key = fields.text(request, "key") or ""
    if not await ctx.storage.revoke_ticket(ctx.account.cdn, key, now=ctx.now):
        raise NotFound(Code.REVOKE_NOT_FOUND)
    return Result(Code.REVOKED)
