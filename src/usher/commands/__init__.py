"""The ``sevu.*`` commands, one module each, and the table that names them."""

from __future__ import annotations

from usher.commands import errorcount, errorlog, kick, request, revoke, search, sessions, status
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
}
