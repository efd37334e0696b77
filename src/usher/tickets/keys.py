"""Ticket keys: ``<first video, sanitised>.<14 hex>.<8 digits>`` (README, "Commands").

The readable head lets publishers and operators tell tickets apart in logs;
only the random tail, from :mod:`secrets`, makes a key unguessable (the
``pass`` is still required to play). The head keeps to ``[A-Za-z0-9_-]`` so a
key is safe in URLs, query strings and log lines without escaping.
"""

from __future__ import annotations

import secrets
import string

MAX_HEAD_LENGTH = 64

_SAFE = frozenset(string.ascii_letters + string.digits + "_-")


def new_ticket_key(video: str) -> str:
    """A fresh key for a ticket whose ``video`` list is ``video``."""
    first = video.split("|", 1)[0][:MAX_HEAD_LENGTH]
    # An empty first entry cannot come from a validated request, but a key
    # must never start with "." whatever it is given.
    head = "".join(char if char in _SAFE else "_" for char in first) or "_"
    return f"{head}.{secrets.token_hex(7)}.{secrets.randbelow(10**8):08d}"
