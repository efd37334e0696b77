"""The ``sevu.*`` commands, one module each, and the table that names them."""

from __future__ import annotations

from usher.commands import (
    addstreamuser,
    errorcount,
    errorlog,
    kick,
    liststreamusers,
    removestreamuser,
    request,
    retrievestreamuser,
    revoke,
    search,
    sessions,
    status,
)
from usher.commands.base import Handler

COMMANDS: dict[str, Handler] = {
    "sevu.request": request.run,
    "sevu.status": status.run,
    "sevu.revoke": revoke.run,
    "sevu.search": search.run,
    "sevu.errorlog": errorlog.run,
    "sevu.errorcount": errorcount.run,
    "sevu.sessions": sessions.run,
    "sevu.kick": kick.run,
    "sevu.addstreamuser": addstreamuser.run,
    "sevu.removestreamuser": removestreamuser.run,
    "sevu.liststreamusers": liststreamusers.run,
    "sevu.retrievestreamuser": retrievestreamuser.run,
}
