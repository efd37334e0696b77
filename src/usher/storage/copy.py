"""``usher db copy``: move a deployment's data between databases and backends.

A publisher outgrowing one machine copies its SQLite file into PostgreSQL
(and back, if need be). What is copied, in this order: accounts (with their
panel passwords), tickets (bound ``auto`` slots and use counts included),
the attempt log, and optionally the replay-protection signatures. Ids are
kept, so ``sevu.search`` and ``sevu.errorlog`` list in the same order.
Playback and panel sessions are not copied: they are short-lived, and
viewers and publishers simply start new ones.

Resumable: each table is copied in order of its primary key, in batches that
each commit in one transaction, and a run starts each table after the
highest key the destination already holds. An interrupted copy re-run with
the same arguments continues where it stopped and never duplicates a row.
A destination holding rows that did not come from this source is refused.

The copy reads the source as it is: stop the nodes writing to it first (or
accept that tickets used after their batch was copied keep their older use
count). At the end the row counts of both sides are compared and reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, TextIO

import psycopg

from usher.protocol.errors import ConfigError, StorageError
from usher.storage import storage_for_url
from usher.storage.pgconfig import parse_url
from usher.storage.pgsql import storable
from usher.storage.sqlite import sqlite_path

Row = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    key: str
    columns: tuple[str, ...]
    #: Columns SQLite keeps as 0/1 and PostgreSQL as booleans.
    booleans: frozenset[str] = frozenset()
    #: Columns that never change once a row exists: a resumed copy checks
    #: that the destination's last row is the source's row with that key.
    identity: tuple[str, ...] = ()


TABLES: Final = (
    Table("accounts", "cdn", ("cdn", "username", "api_key", "secret", "disabled", "created_at"),
          frozenset({"disabled"}), ("cdn", "username")),
    Table("panel_passwords", "cdn", ("cdn", "hash", "updated_at"), identity=("cdn",)),
    Table("tickets", "id", ("id", "cdn", "key", "pass", "ip", "video", "app", "uses", "use_count",
                            "active", "created_at", "expire_at", "used_at", "bound_ips"),
          frozenset({"active"}), ("id", "key", "created_at")),
    Table("attempts", "id", ("id", "cdn", "at", "key", "pass", "ip", "video", "app", "appinst",
                             "pageurl", "refurl", "success", "reason", "server_ip"),
          frozenset({"success"}), ("id", "at", "key")),
)  # fmt: skip
SIGNATURES: Final = Table(
    "used_signatures", "digest", ("digest", "expires_at"), identity=("digest",)
)

#: Rows per batch (and per destination transaction).
DEFAULT_BATCH: Final = 5000


class Endpoint(Protocol):
    """One side of a copy: the few table operations copying needs."""

    def count(self, table: Table, upto: object | None = None) -> int: ...
    def max_key(self, table: Table) -> object | None: ...
    def read(self, table: Table, after: object | None, limit: int) -> list[Row]: ...
    def row_at(self, table: Table, key: object) -> Row | None: ...
    def write(self, table: Table, rows: Sequence[Row]) -> None: ...
    def finish(self, table: Table) -> None: ...
    def close(self) -> None: ...


class SQLiteEndpoint:
    def __init__(self, url: str) -> None:
        self.db = sqlite3.connect(sqlite_path(url), isolation_level=None)
        self.db.execute("PRAGMA foreign_keys = ON")

    def count(self, table: Table, upto: object | None = None) -> int:
        where = f" WHERE {table.key} <= ?" if upto is not None else ""
        params = (upto,) if upto is not None else ()
        return int(
            self.db.execute(f"SELECT count(*) FROM {table.name}{where}", params).fetchone()[0]
        )

    def max_key(self, table: Table) -> object | None:
        row = self.db.execute(
            f"SELECT {table.key} FROM {table.name} ORDER BY {table.key} DESC LIMIT 1"
        ).fetchone()
        return None if row is None else row[0]

    def read(self, table: Table, after: object | None, limit: int) -> list[Row]:
        where = f" WHERE {table.key} > ?" if after is not None else ""
        params = (after,) if after is not None else ()
        rows = self.db.execute(
            f"SELECT {', '.join(table.columns)} FROM {table.name}{where}"
            f" ORDER BY {table.key} LIMIT {int(limit)}",
            params,
        ).fetchall()
        flags = [i for i, c in enumerate(table.columns) if c in table.booleans]
        if not flags:
            return rows
        return [tuple(bool(v) if i in flags else v for i, v in enumerate(row)) for row in rows]

    def row_at(self, table: Table, key: object) -> Row | None:
        row: Row | None = self.db.execute(
            f"SELECT {', '.join(table.columns)} FROM {table.name} WHERE {table.key} = ?", (key,)
        ).fetchone()
        return row

    def write(self, table: Table, rows: Sequence[Row]) -> None:
        marks = ", ".join("?" * len(table.columns))
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.executemany(
                f"INSERT INTO {table.name} ({', '.join(table.columns)}) VALUES ({marks})", rows
            )
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def finish(self, table: Table) -> None:
        """Nothing to do: SQLite numbers new rows after the highest id itself."""

    def close(self) -> None:
        self.db.close()


class PostgresEndpoint:
    def __init__(self, url: str) -> None:
        self.db = psycopg.connect(parse_url(url).conninfo, autocommit=True)

    def count(self, table: Table, upto: object | None = None) -> int:
        where = f" WHERE {table.key} <= %s" if upto is not None else ""
        params = (upto,) if upto is not None else ()
        row = self.db.execute(f"SELECT count(*) FROM {table.name}{where}", params).fetchone()
        return int(row[0]) if row else 0

    def max_key(self, table: Table) -> object | None:
        # ORDER BY, not max(): PostgreSQL has no max() for bytea keys.
        row = self.db.execute(
            f"SELECT {table.key} FROM {table.name} ORDER BY {table.key} DESC LIMIT 1"
        ).fetchone()
        return None if row is None else row[0]

    def read(self, table: Table, after: object | None, limit: int) -> list[Row]:
        where = f" WHERE {table.key} > %s" if after is not None else ""
        params = (after,) if after is not None else ()
        return self.db.execute(
            f"SELECT {', '.join(table.columns)} FROM {table.name}{where}"
            f" ORDER BY {table.key} LIMIT %s",
            (*params, limit),
        ).fetchall()

    def row_at(self, table: Table, key: object) -> Row | None:
        return self.db.execute(
            f"SELECT {', '.join(table.columns)} FROM {table.name} WHERE {table.key} = %s", (key,)
        ).fetchone()

    def write(self, table: Table, rows: Sequence[Row]) -> None:
        # COPY: the fastest way into PostgreSQL, in one transaction per batch.
        with self.db.transaction(), self.db.cursor() as cursor:
            columns = ", ".join(table.columns)
            with cursor.copy(f"COPY {table.name} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    # SQLite text may hold NUL, which PostgreSQL cannot store.
                    copy.write_row([storable(v) if isinstance(v, str) else v for v in row])

    def finish(self, table: Table) -> None:
        # Rows arrived with their ids: move the identity past them, or the
        # next ticket or attempt would collide with a copied one.
        if table.key == "id":
            self.db.execute(
                f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'),"
                f" GREATEST((SELECT max(id) FROM {table.name}), 1))"
            )

    def close(self) -> None:
        self.db.close()


def endpoint(url: str) -> Endpoint:
    if url.startswith("sqlite:"):
        return SQLiteEndpoint(url)
    if url.startswith(("postgresql:", "postgres:")):
        return PostgresEndpoint(url)
    raise ConfigError("Use sqlite:///path.db or postgresql://… for --from and --to.")


async def _migrate(url: str) -> int:
    """Create or migrate the schema (refusing a newer one); its version."""
    storage = storage_for_url(url)
    await storage.open()
    try:
        return await storage.schema_version()
    finally:
        await storage.close()


class Progress:
    """A one-line progress bar on a terminal, a line per 10 % otherwise."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self._last_tenth = -1

    def update(self, table: str, done: int, total: int) -> None:
        share = done / total if total else 1.0
        if self.tty:
            bar = "#" * int(share * 30)
            self.out.write(f"\r  {table:16} [{bar:30}] {done:>12,} / {total:,} {share:4.0%}")
            self.out.flush()
        elif int(share * 10) != self._last_tenth:
            self._last_tenth = int(share * 10)
            self.out.write(f"  {table:16} {done:>12,} / {total:,} ({share:.0%})\n")

    def done(self) -> None:
        if self.tty:
            self.out.write("\n")
        self._last_tenth = -1


@dataclass(frozen=True, slots=True)
class CopyResult:
    #: (table, rows in the source, rows in the destination)
    counts: list[tuple[str, int, int]]

    @property
    def verified(self) -> bool:
        return all(source == target for _, source, target in self.counts)


def copy_database(
    source_url: str,
    target_url: str,
    *,
    signatures: bool = False,
    batch: int = DEFAULT_BATCH,
    out: TextIO = sys.stderr,
    after_batch: Callable[[str, int], None] | None = None,
) -> CopyResult:
    """Copy ``source_url`` into ``target_url``; see the module doc."""
    if source_url == target_url:
        raise ConfigError("--from and --to name the same database; give two different ones.")
    versions = [asyncio.run(_migrate(url)) for url in (source_url, target_url)]
    if versions[0] != versions[1]:
        raise StorageError(
            f"The source is at schema version {versions[0]} and the destination at "
            f"{versions[1]}; run both with the same Usher release."
        )
    tables = (*TABLES, SIGNATURES) if signatures else TABLES
    source, target = endpoint(source_url), endpoint(target_url)
    progress = Progress(out)
    try:
        for table in tables:
            _refuse_foreign_rows(source, target, table)
        for table in tables:
            _copy_table(source, target, table, batch, progress, after_batch)
        counts = [(t.name, source.count(t), target.count(t)) for t in tables]
    except (sqlite3.Error, psycopg.Error) as exc:
        raise StorageError(
            f"The copy stopped: {str(exc).strip()}. Fix the cause and run the same command "
            "again; it continues where it stopped."
        ) from None
    finally:
        with contextlib.suppress(sqlite3.Error, psycopg.Error):
            source.close()
        with contextlib.suppress(sqlite3.Error, psycopg.Error):
            target.close()
    return CopyResult(counts)


def _refuse_foreign_rows(source: Endpoint, target: Endpoint, table: Table) -> None:
    """The destination may only hold a prefix of the source (a resumed copy)."""
    highest = target.max_key(table)
    if highest is None:
        return
    held, expected = target.count(table), source.count(table, upto=highest)
    mine, theirs = (_identity(table, side.row_at(table, highest)) for side in (target, source))
    if held != expected or mine != theirs:
        raise ConfigError(
            f"The destination's {table.name} table holds {held} rows where this source has "
            f"{expected} up to the same key, so it holds data that did not come from this "
            "source. Copy into an empty database."
        )


def _identity(table: Table, row: Row | None) -> Row | None:
    picks = [table.columns.index(c) for c in table.identity]
    return None if row is None else tuple(row[i] for i in picks)


def _copy_table(
    source: Endpoint,
    target: Endpoint,
    table: Table,
    batch: int,
    progress: Progress,
    after_batch: Callable[[str, int], None] | None,
) -> None:
    total = source.count(table)
    after = target.max_key(table)
    done = 0 if after is None else target.count(table)
    progress.update(table.name, done, total)
    while True:
        rows = source.read(table, after, batch)
        if not rows:
            break
        target.write(table, rows)
        done += len(rows)
        after = rows[-1][table.columns.index(table.key)]
        progress.update(table.name, done, total)
        if after_batch is not None:
            after_batch(table.name, done)
    target.finish(table)
    progress.done()
