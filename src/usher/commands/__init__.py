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

#: Commands that change nothing a caller can see: they only read (a count may
#: add a count filter, which is a cache of exact counts). Such a command runs
#: while its signature is being spent, and its answer is sent only once the
#: signature is spent; every other command runs after that (see
#: :func:`usher.commands.dispatch.execute`).
SAFE_COMMANDS: frozenset[str] = frozenset(
    {
        "sevu.status",
        "sevu.search",
        "sevu.errorlog",
        "sevu.errorcount",
        "sevu.sessions",
        "sevu.liststreamusers",
        "sevu.retrievestreamuser",
    }
)
