"""Row shapes and SQL fragments shared by the SQLite storage modules."""

from __future__ import annotations

from usher.tickets.model import Page


def page_sql(page: Page) -> str:
    # Both values are validated ints, so inlining them is safe and keeps the
    # statement cache keyed on shape only.
    return f" LIMIT {int(page.rows)} OFFSET {int(page.seek)}"
