"""``sevu.errorlog``: one ticket's attempts, oldest first."""

from __future__ import annotations

from collections.abc import Mapping

from usher.commands import fields
from usher.commands.base import Context, Result, attempt_object
from usher.protocol.codes import Code
from usher.tickets.model import AttemptFilter


async def run(ctx: Context, request: Mapping[str, object]) -> Result:
    fields.require(request, "key")
    start, end = fields.time_range(request)
    where = AttemptFilter(key=fields.text(request, "key") or "", start=start, end=end)
    attempts = await ctx.storage.list_attempts(ctx.account.cdn, where, fields.page(request))
    return Result(
        Code.ERRORLOG_FOUND if attempts else Code.ERRORLOG_NONE,
        {"attempts": [attempt_object(a) for a in attempts]},
    )
