"""``sevu.errorcount``: how many of the account's attempts match the filters.

``seek`` skips matches and ``limit`` caps the count, exactly as the seed
documentation's example uses them: min(limit, max(0, total - seek)).
"""

from __future__ import annotations

from collections.abc import Mapping

from usher.commands import fields
from usher.commands.base import Context, Result
from usher.protocol.codes import Code
from usher.tickets.model import AttemptFilter


def attempt_filter(request: Mapping[str, object]) -> AttemptFilter:
    """The command's filters (everything but ``limit``/``seek``); the control
    panel's attempts explorer reads its form through this too, so that its
    count is the one this command returns."""
    start, end = fields.time_range(request)
    return AttemptFilter(
        key=fields.filter_text(request, "key"),
        password=fields.filter_text(request, "pass"),
        app=fields.filter_text(request, "app"),
        video=fields.filter_text(request, "video"),
        ip=fields.filter_text(request, "ip"),
        success=fields.flag(request, "success"),
        start=start,
        end=end,
    )


async def run(ctx: Context, request: Mapping[str, object]) -> Result:
    where = attempt_filter(request)
    page = fields.page(request)
    total = await ctx.storage.count_attempts(ctx.account.cdn, where)
    count = max(0, total - page.seek)
    if page.limit is not None:
        count = min(page.limit, count)
    return Result(Code.ERRORCOUNT_FOUND if count else Code.ERRORCOUNT_NONE, {"error_count": count})
