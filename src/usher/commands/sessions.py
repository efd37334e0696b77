"""``sevu.sessions``: the account's live sessions and their history."""

from __future__ import annotations

from collections.abc import Mapping

from usher.commands import fields
from usher.commands.base import Context, Result, session_object
from usher.protocol.codes import Code
from usher.storage.base import SessionFilter


def session_filter(request: Mapping[str, object]) -> SessionFilter:
    """The command's filters; the control panel's sessions page uses them too."""
    start, end = fields.time_range(request)
    return SessionFilter(
        key=fields.filter_text(request, "key"),
        app=fields.filter_text(request, "app"),
        video=fields.filter_text(request, "video"),
        ip=fields.filter_text(request, "ip"),
        open=fields.flag(request, "open"),
        start=start,
        end=end,
    )


async def run(ctx: Context, request: Mapping[str, object]) -> Result:
    where = session_filter(request)
    found, total = await ctx.storage.list_sessions(
        ctx.account.cdn, where, fields.page(request), ctx.now
    )
    return Result(
        Code.SESSIONS_FOUND if found else Code.SESSIONS_NONE,
        {"sessions": [session_object(s, ctx.now) for s in found], "session_count": total},
    )
