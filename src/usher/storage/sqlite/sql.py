"""Row shapes and SQL fragments shared by the SQLite storage modules."""

from __future__ import annotations

from typing import Final

from usher.storage.rows import placeholders
from usher.storage.schema import SESSION_INSERT, SESSION_WIDTH
from usher.tickets.model import Page

#: A new session row, replacing a leftover under the same id.
SESSION_REPLACE: Final = (
    f"INSERT OR REPLACE INTO playback_sessions ({SESSION_INSERT})"
    f" VALUES {placeholders(SESSION_WIDTH, '?')}"
)


def page_sql(page: Page) -> str:
    # Both values are validated ints, so inlining them is safe and keeps the
    # statement cache keyed on shape only.
    return f" LIMIT {int(page.rows)} OFFSET {int(page.seek)}"
