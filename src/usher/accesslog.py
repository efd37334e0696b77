"""Access log lines without ticket passes.

Players put the ticket's pass in the query string (``/usher/check?key=…&pass=…``),
so ``usher serve --access-log`` would write every viewer's pass to the log,
where anyone who reads logs could replay it until the ticket runs out. The
filter rewrites the logged path before it is formatted: the value of every
``pass`` and ``password`` parameter becomes ``***``, whatever percent-encoding
its name was sent with. So does the value of any parameter that itself
carries one: nginx-rtmp's ``notify_method get`` sends the connection URL as
``tcurl``, and an encoder may have put ``?user=…&pass=…`` on it. The key
stays: it identifies the ticket in ``sevu.errorlog`` and is not enough to
play.
"""

from __future__ import annotations

import logging
import re
from typing import Final
from urllib.parse import unquote_plus

_HIDDEN: Final = frozenset({"pass", "password"})
#: A decoded value carrying a pass parameter of its own (a URL or a query).
_CARRIES_PASS: Final = re.compile(r"(?:^|[?&])(?:pass|password)=", re.IGNORECASE)


def redact_path(path: str) -> str:
    """``path`` with the values of its ``pass``/``password`` parameters hidden."""
    head, question, query = path.partition("?")
    if not question:
        return path
    parts = query.split("&")
    for i, part in enumerate(parts):
        name, equals, value = part.partition("=")
        if equals and (
            unquote_plus(name).lower() in _HIDDEN or _CARRIES_PASS.search(unquote_plus(value))
        ):
            parts[i] = f"{name}=***"
    return f"{head}?{'&'.join(parts)}"


class RedactPasses(logging.Filter):
    """For uvicorn's access logger, whose third argument is the path with
    its query string."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], redact_path(args[2]), *args[3:])
        return True
