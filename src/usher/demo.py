"""``usher serve --demo``: a demo account and a ticket that plays, printed
so that the first check is one paste away."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from urllib.parse import urlencode

from usher import accounts
from usher.commands import request
from usher.commands.base import Context
from usher.storage.base import Storage
from usher.tickets.decision import decide
from usher.tickets.expiry import format_utc
from usher.tickets.model import CheckRequest, Page, Ticket, TicketFilter

USERNAME = "demo"
#: Fixed, so that the printed curl line stays the same from one start to the
#: next; the key, which is random, is what keeps other tickets out.
PASS = "demo-pass"  # noqa: S105  # a demo ticket's pass, printed on purpose
VIDEO = "mystream"
#: Tickets of this database looked at for one to reuse, newest first.
_REUSE_SCAN = 20


@dataclass(frozen=True, slots=True)
class Demo:
    account: dict[str, object]
    ticket: Ticket
    #: False when the ticket was made by this start.
    reused: bool


def _app(username: str) -> str:
    return f"{username}-live"


def _plays(ticket: Ticket, now: int) -> bool:
    """The demo ticket still plays for anyone, today and on every later
    start: active, not expired, unlimited uses, any address."""
    if ticket.uses != 0 or ticket.ip != "":
        return False
    probe = CheckRequest(key=ticket.key, password=PASS, app=ticket.app, video=VIDEO, ip="127.0.0.1")
    return decide(ticket, probe, now).allowed


async def prepare(storage: Storage, now: int) -> Demo:
    """The demo account (created once) and a ticket for it: the newest demo
    ticket that still plays, else a new one made as ``sevu.request`` makes
    it, so running ``make serve`` twice prints the same curl line."""
    account = await storage.get_account_by_username(USERNAME) or await accounts.create(
        storage, USERNAME
    )
    app = _app(account.username)
    found, _ = await storage.search_tickets(
        account.cdn,
        TicketFilter(app=app, video=VIDEO, password=PASS, ip=""),
        Page(limit=_REUSE_SCAN),
    )
    for ticket in found:
        if _plays(ticket, now):
            return Demo(accounts.credentials(account), ticket, reused=True)
    result = await request.run(
        Context(storage, account, now),
        {"app": app, "video": VIDEO, "pass": PASS, "ip": "", "uses": 0},
    )
    key = result.payload["ticket"]["key"]  # type: ignore[index]  # the ticket object just made
    made = await storage.get_ticket(account.cdn, key)
    assert made is not None  # inserted just above
    return Demo(accounts.credentials(account), made, reused=False)


def base_url(host: str, port: int) -> str:
    """Where a shell on this machine reaches the server: a wildcard bind is
    reached on loopback (the only callers ``USHER_CALLBACK_ALLOW`` lets
    check by default), an IPv6 address in brackets."""
    if host in ("", "0.0.0.0"):  # noqa: S104  # a bind address read, not bound
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def check_url(demo: Demo, host: str, port: int) -> str:
    query = urlencode(
        {"key": demo.ticket.key, "pass": PASS, "app": demo.ticket.app, "video": VIDEO}
    )
    return f"{base_url(host, port)}/usher/check?{query}"


def banner(demo: Demo, host: str, port: int) -> str:
    account = demo.account
    ticket = demo.ticket
    made = "reused from the last start" if demo.reused else "new"
    return (
        "Usher demo account (this database only; create real ones with `usher account create`):\n"
        f"  cdn      {account['cdn']}\n"
        f"  username {account['username']}\n"
        f"  api_key  {account['api_key']}\n"
        f"  secret   {account['secret']}\n"
        "\n"
        f"Demo ticket ({made}; each start reuses it while it is valid):\n"
        f"  key      {ticket.key}\n"
        f"  pass     {PASS}\n"
        f"  app      {ticket.app}\n"
        f"  video    {VIDEO}\n"
        f"  expires  {format_utc(ticket.expire_at)} UTC\n"
        "\n"
        "Play it, from another shell on this machine (200 allowed; change the pass for a 403):\n"
        f"  curl -i {shlex.quote(check_url(demo, host, port))}\n"
        "\n"
        "Call the API, from another shell in this folder:\n"
        f"  export USHER_URL={base_url(host, port)}/api USHER_CDN={account['cdn']} "
        f"USHER_API_KEY={account['api_key']} USHER_SECRET={account['secret']}\n"
        f"  .venv/bin/usher call sevu.request app={ticket.app} video={VIDEO} pass=s3cret "
        "ip=auto uses=5\n"
        "  .venv/bin/usher call sevu.errorcount\n"
    )
