"""``sevu.search``: the account's tickets by exact-match filters."""

from __future__ import annotations

from collections.abc import Mapping

from usher.commands import fields
from usher.commands.base import Context, Result, ticket_object, with_viewers
from usher.protocol.codes import Code
from usher.tickets.model import TicketFilter


def ticket_filter(request: Mapping[str, object]) -> TicketFilter:
    """The command's filters; the control panel's ticket search uses them too."""
    return TicketFilter(
        key=fields.filter_text(request, "key"),
        app=fields.filter_text(request, "app"),
        video=fields.filter_text(request, "video"),
        ip=fields.filter_text(request, "ip"),
        password=fields.filter_text(request, "pass"),
    )


async def run(ctx: Context, request: Mapping[str, object]) -> Result:
    where = ticket_filter(request)
    tickets, total = await ctx.storage.search_tickets(ctx.account.cdn, where, fields.page(request))
    tickets = await with_viewers(ctx, tickets)
    return Result(
        Code.SEARCH_FOUND if tickets else Code.SEARCH_NONE,
        {"tickets": [ticket_object(t) for t in tickets], "ticket_count": total},
    )
