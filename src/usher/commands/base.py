"""What every ``sevu.*`` command gets and returns."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from usher.protocol.codes import Code
from usher.storage.base import Storage
from usher.tickets.expiry import format_utc
from usher.tickets.model import Account, Attempt, EndReason, PlaybackSession, Ticket

#: Told which sessions a command ended, and why: the server counts them and
#: forgets what it remembered of them, so its next playback request of one is
#: refused at once (``usher.web.playback.Checker.count_ends``).
SessionsEnded = Callable[[list[PlaybackSession], EndReason], None]


def _not_counted(_ended: list[PlaybackSession], _reason: EndReason) -> None:
    pass


@dataclass(frozen=True, slots=True)
class Context:
    """The authenticated caller and the clock, fixed for one request."""

    storage: Storage
    account: Account
    now: int
    sessions_ended: SessionsEnded = _not_counted


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
        "max_viewers": ticket.max_viewers,
        "viewers": ticket.viewers,
    }


async def with_viewers(ctx: Context, tickets: list[Ticket]) -> list[Ticket]:
    """The tickets with ``viewers`` (their open sessions now) filled in."""
    if not tickets:
        return tickets
    counts = await ctx.storage.count_viewers([t.key for t in tickets], ctx.now)
    return [
        t if t.key not in counts else dataclasses.replace(t, viewers=counts[t.key]) for t in tickets
    ]


def session_object(session: PlaybackSession, now: int) -> dict[str, object]:
    """The session object (README, "Live sessions")."""
    ending = session.ending(now)
    return {
        "id": session.id,
        "key": session.key,
        "app": session.app,
        "video": session.video,
        "ip": session.ip,
        "protocol": session.protocol,
        "started_date": format_utc(session.started_at),
        "last_seen_date": format_utc(session.last_seen_at),
        "ended_date": None if ending is None else format_utc(ending[0]),
        "end_reason": None if ending is None else ending[1],
        "seconds": session.seconds(now),
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
