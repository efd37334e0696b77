"""What every ``sevu.*`` command gets and returns."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from usher.protocol.codes import Code
from usher.storage.base import Storage
from usher.tickets.expiry import format_utc
from usher.tickets.model import Account, Attempt, Ticket


@dataclass(frozen=True, slots=True)
class Context:
    """The authenticated caller and the clock, fixed for one request."""

    storage: Storage
    account: Account
    now: int


@dataclass(frozen=True, slots=True)
class Result:
    """A command's answer: its code (success or its own failure) and payload."""

    code: Code
    payload: dict[str, object] = field(default_factory=dict)


Handler = Callable[[Context, Mapping[str, object]], Awaitable[Result]]


def ticket_object(ticket: Ticket) -> dict[str, object]:
    """The SEVU ticket object (README, "Commands")."""
    return {
        "key": ticket.key,
        "pass": ticket.password,
        "ip": ticket.ip,
        "video": ticket.video,
        "app": ticket.app,
        "uses": ticket.uses,
        "use_count": ticket.use_count,
        "active": 1 if ticket.active else 0,
        "created_date": format_utc(ticket.created_at),
        "expire_date": format_utc(ticket.expire_at),
        "used_date": format_utc(ticket.used_at),
        "bound_ips": list(ticket.bound_ips),
    }


def attempt_object(attempt: Attempt) -> dict[str, object]:
    """The SEVU attempt object (README, "Commands")."""
    return {
        "id": attempt.id,
        "datetime": format_utc(attempt.at),
        "key": attempt.key,
        "pass": attempt.password,
        "ip": attempt.ip,
        "video": attempt.video,
        "app": attempt.app,
        "appinst": attempt.appinst,
        "pageurl": attempt.pageurl,
        "refurl": attempt.refurl,
        "success": 1 if attempt.success else 0,
        "reason": attempt.reason,
        "server_ip": attempt.server_ip,
    }
