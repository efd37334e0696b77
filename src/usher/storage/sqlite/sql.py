"""Row shapes and SQL fragments shared by the SQLite storage modules."""

from __future__ import annotations

from typing import Final

from usher.storage.base import SessionFilter
from usher.storage.sessions import SESSIONS
from usher.tickets.model import Page

# SQLite keeps no statistics unless told to, and without them it read a
# ticket's or an account's whole session history through the (key|cdn,
# started_at) indexes (1.6 to 4 s at 1 M sessions) where the open sessions'
# partial indexes hold a few rows.
OPEN_BY_KEY: Final = f"{SESSIONS} INDEXED BY sessions_open_key"
OPEN_BY_EXPIRY: Final = f"{SESSIONS} INDEXED BY sessions_open_expiry"


def ticket_ids_sql(count: int) -> str:
    """``Storage.ticket_ids`` for ``count`` keys: one probe of the unique key
    index each. ``+cdn``: without statistics SQLite would rather read the
    account's whole ``(cdn, id)`` range for many keys."""
    return f"SELECT key, id FROM tickets WHERE key IN ({', '.join(['?'] * count)}) AND +cdn = ?"


def page_sql(page: Page) -> str:
    # Both values are validated ints, so inlining them is safe and keeps the
    # statement cache keyed on shape only.
    return f" LIMIT {int(page.rows)} OFFSET {int(page.seek)}"


def sessions_hint(where: SessionFilter) -> str:
    """The index a session listing filtered by ``where`` reads (see above):
    a ticket's, an address's, the open sessions', or the account's history."""
    if where.key is not None:
        index = "sessions_open_key" if where.open is True else "sessions_key_started"
    elif where.ip is not None:
        index = "sessions_cdn_ip_started"
    elif where.open is True:
        index = "sessions_open_expiry"
    else:
        index = "sessions_cdn_started"
    return f" INDEXED BY {index}"
