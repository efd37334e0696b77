"""Persistent state behind one interface (:class:`usher.storage.base.Storage`).

:func:`storage_for_url` picks the backend from the database URL.
"""

from __future__ import annotations

from typing import Literal

from usher.protocol.errors import ConfigError
from usher.storage.base import Storage

DEFAULT_DATABASE_URL = "sqlite:///usher.db"


def storage_for_url(url: str, *, sqlite_synchronous: Literal["full", "normal"] = "full") -> Storage:
    """A closed backend for ``url``; call ``await storage.open()`` before use.
    ``sqlite_synchronous`` is SQLite's ``PRAGMA synchronous`` (see
    ``USHER_SQLITE_SYNCHRONOUS``); PostgreSQL ignores it."""
    if url.startswith("sqlite:"):
        from usher.storage.sqlite import SQLiteStorage, sqlite_path

        return SQLiteStorage(sqlite_path(url), synchronous=sqlite_synchronous)
    if url.startswith(("postgresql:", "postgres:")):
        from usher.storage.postgres import PostgresStorage

        return PostgresStorage(url)
    # Not the URL itself: it may carry a password.
    raise ConfigError(
        f"Unknown database URL scheme {url.partition(':')[0]!r}; use sqlite:///path/to/usher.db "
        "or postgresql://user:password@host:5432/dbname."
    )
