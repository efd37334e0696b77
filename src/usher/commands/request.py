"""``sevu.request``: create a ticket."""

from __future__ import annotations

from collections.abc import Mapping

from usher.commands import fields
from usher.commands.base import Context, Result, ticket_object
from usher.protocol.codes import Code
from usher.protocol.errors import InvalidField
from usher.tickets.expiry import DEFAULT_TTL, parse_expire
from usher.tickets.ipnet import parse_ip_rules
from usher.tickets.keys import new_ticket_key
from usher.tickets.model import Ticket
from usher.tickets.wildcard import parse_pattern_list, validate_app_list

#: Published clients spell the expiry three ways; the first one present wins.
EXPIRE_ALIASES = ("expire", "expires", "expire_date")
MAX_PASS = 256


async def run(ctx: Context, request: Mapping[str, object]) -> Result:
    fields.require(request, "app", "video", "pass", "ip", "uses")
    app = fields.text(request, "app") or ""
    video = fields.text(request, "video") or ""
    password = fields.text(request, "pass") or ""
    ip = fields.text(request, "ip") or ""
    uses = fields.integer(request, "uses")
    if uses is None:
        raise InvalidField("uses", "expected an integer, 0 for unlimited uses")
    if not password:
        raise InvalidField("pass", "the pass must not be empty; send a random string")
    if len(password) > MAX_PASS:
        raise InvalidField("pass", f"the pass is longer than {MAX_PASS} characters")
    validate_app_list(app, ctx.account.username)
    parse_pattern_list(video, "video")
    parse_ip_rules(ip)
    expire_at = ctx.now + DEFAULT_TTL
    for alias in EXPIRE_ALIASES:
        expire_text = fields.filter_text(request, alias)
        if expire_text is not None:
            expire_at = parse_expire(expire_text, ctx.now, field=alias)
            break
    active = fields.flag(request, "active")
    max_viewers = fields.integer(request, "max_viewers") or 0

    ticket = Ticket(
        key=new_ticket_key(video),
        cdn=ctx.account.cdn,
        password=password,
        ip=ip,
        video=video,
        app=app,
        uses=uses,
        use_count=0,
        active=True if active is None else active,
        created_at=ctx.now,
        expire_at=expire_at,
        max_viewers=max_viewers,
    )
    await ctx.storage.insert_ticket(ticket)
    return Result(Code.TICKET_CREATED, {"ticket": ticket_object(ticket)})
