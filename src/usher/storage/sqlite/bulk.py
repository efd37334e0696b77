"""Bulk loading of tickets and attempts into SQLite (``usher seed-data``).

Loading ten million attempts row by row through the indexes and the rollup
triggers would take the better part of an hour: every index insert lands on a
random page. Instead, in ONE transaction:

1. the attempt indexes and triggers are dropped (their definitions are read
   back from ``sqlite_master`` first, so whatever the migrations made,
   including other features' indexes, is restored exactly), but for an
   index the rows arrive in the order of, which takes them as appends;
2. the rows go in with ``executemany``, appended in id order;
3. the rollup counts are added from tallies kept while generating;
4. the indexes (a sort each, far faster than random inserts) and the
   triggers are created again.

Because SQLite's DDL is transactional, a crash or Ctrl-C at any point rolls
all of it back: the database is either as it was or fully loaded, never left
without its indexes. The load holds the write lock throughout, so it is
meant for a database no server is writing to.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable, Sequence

from usher.protocol.errors import StorageError
from usher.storage.rows import placeholders
from usher.storage.schema import (
    ACCOUNT_COLUMNS,
    ATTEMPT_INSERT,
    ATTEMPT_INSERT_COLUMNS,
    TICKET_INSERT,
    TICKET_INSERT_COLUMNS,
)

AttemptRows = Iterable[Sequence[tuple[object, ...]]]


class BulkLoader:
    """One bulk load into the SQLite file at ``path`` (already migrated)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.conn = sqlite3.connect(path, isolation_level=None)
        self._wal = False
        self._restore: list[str] = []

    def __enter__(self) -> BulkLoader:
        conn = self.conn
        conn.execute("PRAGMA busy_timeout = 5000")
        # A rollback journal writes the new pages once; WAL would write the
        # whole load twice (log, then checkpoint). Switching needs every
        # other connection closed; if one is open we load in WAL mode.
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        self._wal = str(mode).lower() == "wal"
        if self._wal:
            with contextlib.suppress(sqlite3.OperationalError):
                conn.execute("PRAGMA journal_mode = DELETE")
        # A large page cache while the rows go in; this process exits after
        # the load. temp_store is left to its default (files) on purpose:
        # SQLite turns the sorter's worker threads off when temporary storage
        # is in memory (see restore_attempt_indexes).
        conn.execute("PRAGMA cache_size = -1000000")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("BEGIN IMMEDIATE")
        return self

    def __exit__(self, kind: object, error: object, traceback: object) -> None:
        conn = self.conn
        try:
            if error is None:
                conn.execute("COMMIT")
            elif conn.in_transaction:
                conn.execute("ROLLBACK")
        finally:
            if self._wal:
                with contextlib.suppress(sqlite3.OperationalError):
                    conn.execute("PRAGMA journal_mode = WAL")
            conn.close()

    def drop_attempt_indexes(self, keep: Iterable[str] = ()) -> int:
        """Drop the attempts table's indexes and triggers but the indexes named
        in ``keep``; they are recreated by :meth:`restore_attempt_indexes`.
        Returns how many were dropped.

        An index the rows arrive in the order of costs an append per row, less
        than its sort afterwards, and on the writing side of a pipeline that
        waits for its generator it comes for free."""
        kept = set(keep)
        rows = self.conn.execute(
            "SELECT type, name, sql FROM sqlite_master"
            " WHERE tbl_name = 'attempts' AND type IN ('index', 'trigger') AND sql IS NOT NULL"
            " ORDER BY type, name"
        ).fetchall()
        dropped = [
            (kind, name, sql) for kind, name, sql in rows if kind != "index" or name not in kept
        ]
        for kind, name, sql in dropped:
            self.conn.execute(f'DROP {kind.upper()} "{name}"')
            self._restore.append(sql)
        return len(dropped)

    def restore_attempt_indexes(self, progress: Callable[[int], None]) -> None:
        # Indexes first: the triggers only matter for later writes.
        ordered = sorted(self._restore, key=lambda sql: "TRIGGER" in sql.upper()[:20])
        # CREATE INDEX is one sort per index. SQLite's sorter splits it into
        # runs of at most cache_size bytes, sorts the runs on worker threads
        # and merges them, but only with threads > 0 AND temporary files
        # (with temp_store = MEMORY it silently stays single-threaded). Small
        # runs keep both cores busy: on 1 M attempts the five indexes took
        # 4.2 s this way against 9.0 s with one in-memory sort. The temporary
        # runs sit in the OS page cache and are deleted after each index.
        self.conn.execute("PRAGMA temp_store = FILE")
        self.conn.execute("PRAGMA threads = 2")
        self.conn.execute("PRAGMA cache_size = -5000")
        for done, sql in enumerate(ordered, 1):
            self.conn.execute(sql)
            progress(done)
        self._restore.clear()

    def insert_accounts(self, rows: list[tuple[int, str, str, str, int]]) -> None:
        self.conn.executemany(
            f"INSERT INTO accounts ({ACCOUNT_COLUMNS}) VALUES (?, ?, ?, ?, 0, ?)", rows
        )

    def next_cdn(self) -> int:
        row = self.conn.execute("SELECT COALESCE(MAX(cdn), 0) + 1 FROM accounts").fetchone()
        return int(row[0])

    def taken_usernames(self) -> set[str]:
        return {row[0] for row in self.conn.execute("SELECT username FROM accounts")}

    def insert_attempts(self, chunks: AttemptRows, progress: Callable[[int], None]) -> None:
        insert = (
            f"INSERT INTO attempts ({ATTEMPT_INSERT})"
            f" VALUES {placeholders(len(ATTEMPT_INSERT_COLUMNS), '?')}"
        )
        for rows in chunks:
            self.conn.executemany(insert, rows)
            progress(len(rows))

    def insert_tickets(self, rows: Iterable[tuple[object, ...]]) -> None:
        """Rows in :data:`~usher.storage.schema.TICKET_INSERT` order."""
        self.conn.executemany(
            f"INSERT INTO tickets ({TICKET_INSERT})"
            f" VALUES {placeholders(len(TICKET_INSERT_COLUMNS), '?')}",
            rows,
        )

    def add_minute_counts(self, cdns: list[int]) -> None:
        """Fill ``attempt_minutes`` for the attempts of ``cdns``, accounts
        made by this load (so none of their attempts was counted before)."""
        marks = placeholders(len(cdns), "?")
        self.conn.execute(
            "INSERT INTO attempt_minutes (cdn, minute, success, n)"
            " SELECT cdn, at - at % 60, success, COUNT(*) FROM attempts"
            f" WHERE cdn IN {marks} GROUP BY cdn, at - at % 60, success",
            cdns,
        )

    def add_counts(self, tally: Counter[tuple[int, str, str, int]]) -> None:
        """Add the loaded attempts to ``attempt_counts`` at every grain."""
        grains: Counter[tuple[int, int, str, str, int]] = Counter()
        for (cdn, app, video, success), n in tally.items():
            grains[cdn, 0, "", "", success] += n
            grains[cdn, 1, app, "", success] += n
            grains[cdn, 2, "", video, success] += n
            grains[cdn, 3, app, video, success] += n
        try:
            self.conn.executemany(
                "INSERT INTO attempt_counts (cdn, grain, app, video, success, n)"
                " VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (cdn, grain, app, video, success) DO UPDATE SET n = n + excluded.n",
                [(*k, n) for k, n in grains.items()],
            )
        except sqlite3.OperationalError as exc:
            raise StorageError(
                f"The database {self.path} has no attempt_counts table ({exc}); "
                "run `usher db migrate` first."
            ) from exc
