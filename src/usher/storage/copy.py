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
Into PostgreSQL, a table's plain (non-unique) indexes are dropped while it
is copied and built again once it is complete; their definitions wait in
the destination's ``usher_copy_deferred_indexes`` table meanwhile, so the
re-run of an interrupted copy puts them back too.

The copy reads the source as it is: stop the nodes writing to it first (or
accept that tickets used after their batch was copied keep their older use
count). At the end the row counts of both sides are compared and reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final, Protocol

import psycopg

from usher.progress import OnProgress, no_progress
from usher.protocol.errors import ConfigError, StorageError
from usher.storage import storage_for_url
from usher.storage.postgres.config import parse_url
from usher.storage.schema import SIGNATURES, TABLES, Table
from usher.storage.sqlite import sqlite_path
from usher.tickets.text import storable

Row = tuple[Any, ...]


#: Where a PostgreSQL destination keeps the definitions of the indexes it
#: builds only once a table is copied (see PostgresEndpoint.begin).
DEFERRED_INDEXES: Final = "usher_copy_deferred_indexes"

#: Rows per batch (and per destination transaction).
DEFAULT_BATCH: Final = 5000


class Endpoint(Protocol):
    """One side of a copy: the few table operations copying needs."""

    def count(self, table: Table, upto: object | None = None) -> int: ...
    def max_key(self, table: Table) -> object | None: ...
    def read(self, table: Table, after: object | None, limit: int) -> list[Row]: ...
    def row_at(self, table: Table, key: object) -> Row | None: ...
    #: ``rows`` in the form ``write`` takes. Called on the reading thread,
    #: so that it overlaps with the destination storing the previous batch.
    def prepare(self, table: Table, rows: list[Row]) -> Any: ...
    def write(self, table: Table, batch: Any) -> None: ...
    def begin(self, table: Table) -> None: ...
    def finish(self, table: Table) -> None: ...
    def close(self) -> None: ...


class _Reads:
    """The reading half of an endpoint, the same SQL on both databases but
    for the placeholder. Booleans stay as each database returns them: every
    destination takes SQLite's 0/1 and PostgreSQL's booleans as they are, and
    converting them here cost a Python call per value."""

    #: A DB-API connection whose ``execute`` returns its cursor (sqlite3's
    #: and psycopg's both do); typed loosely because the two share no type.
    db: Any
    mark: str

    def count(self, table: Table, upto: object | None = None) -> int:
        where = f" WHERE {table.key} <= {self.mark}" if upto is not None else ""
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
        where = f" WHERE {table.key} > {self.mark}" if after is not None else ""
        params = (after,) if after is not None else ()
        rows: list[Row] = self.db.execute(
            f"SELECT {', '.join(table.columns)} FROM {table.name}{where}"
            f" ORDER BY {table.key} LIMIT {int(limit)}",
            params,
        ).fetchall()
        return rows

    def row_at(self, table: Table, key: object) -> Row | None:
        row: Row | None = self.db.execute(
            f"SELECT {', '.join(table.columns)} FROM {table.name} WHERE {table.key} = {self.mark}",
            (key,),
        ).fetchone()
        return row


class SQLiteEndpoint(_Reads):
    db: sqlite3.Connection
    mark = "?"

    def __init__(self, url: str) -> None:
        # A source is read from a helper thread (never two at once).
        self.db = sqlite3.connect(sqlite_path(url), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA foreign_keys = ON")
        # A destination's inserts land on random pages of five attempt
        # indexes and the rollup counts: SQLite's default 2 MB cache would
        # re-read them from the OS for nearly every row.
        self.db.execute("PRAGMA cache_size = -262144")
        if str(self.db.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
            # No fsync per batch: in WAL mode a power cut may lose the last
            # batches but never corrupts, and a re-run copies them again.
            self.db.execute("PRAGMA synchronous = NORMAL")

    def prepare(self, table: Table, rows: list[Row]) -> list[Row]:
        return rows

    def write(self, table: Table, batch: Sequence[Row]) -> None:
        marks = ", ".join("?" * len(table.columns))
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.executemany(
                f"INSERT INTO {table.name} ({', '.join(table.columns)}) VALUES ({marks})", batch
            )
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def begin(self, table: Table) -> None:
        """Nothing to do: SQLite keeps its indexes (see PostgresEndpoint)."""

    def finish(self, table: Table) -> None:
        """Nothing to do: SQLite numbers new rows after the highest id itself."""

    def close(self) -> None:
        self.db.close()


class PostgresEndpoint(_Reads):
    db: psycopg.Connection[Row]
    mark = "%s"

    def __init__(self, url: str) -> None:
        self.db = psycopg.connect(parse_url(url).conninfo, autocommit=True)

    def prepare(self, table: Table, rows: list[Row]) -> str:
        """The batch as one block of COPY text, built column by column:
        per-row write_row() and per-value cleaning were most of the copy's
        time, and a column of one type is converted by C-level map/join."""
        columns = [_copy_column(values) for values in zip(*rows, strict=True)]
        return "\n".join(map("\t".join, zip(*columns, strict=True))) + "\n" if rows else ""

    def write(self, table: Table, batch: str) -> None:
        # COPY: the fastest way into PostgreSQL, in one transaction per batch.
        if not batch:
            return
        with self.db.transaction(), self.db.cursor() as cursor:
            names = ", ".join(table.columns)
            with cursor.copy(f"COPY {table.name} ({names}) FROM STDIN") as copy:
                copy.write(batch)

    def begin(self, table: Table) -> None:
        """Set the table's plain indexes aside until :meth:`finish`.

        Keeping five attempt indexes up to date row by row is most of what
        PostgreSQL does during a copy (a random page per index and row);
        building each once at the end is a sort, over twice as fast at
        500 k rows and more so as the table outgrows shared_buffers. Their
        definitions go into :data:`DEFERRED_INDEXES` in the same transaction
        as the drop, so an interrupted copy's re-run still restores them.
        Unique and primary-key indexes stay: they guard the data, and
        resuming relies on the key's.
        """
        with self.db.transaction():
            plain = self.db.execute(
                "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)"
                " FROM pg_index i WHERE i.indrelid = %s::regclass AND NOT i.indisunique"
                " AND NOT EXISTS (SELECT FROM pg_constraint WHERE conindid = i.indexrelid)",
                (table.name,),
            ).fetchall()
            if not plain:
                return
            self.db.execute(
                f"CREATE TABLE IF NOT EXISTS {DEFERRED_INDEXES}"
                " (tablename text NOT NULL, definition text NOT NULL)"
            )
            for name, definition in plain:
                self.db.execute(
                    f"INSERT INTO {DEFERRED_INDEXES} VALUES (%s, %s)", (table.name, definition)
                )
                self.db.execute(f"DROP INDEX {name}")

    def finish(self, table: Table) -> None:
        with self.db.transaction():
            held = self.db.execute("SELECT to_regclass(%s) IS NOT NULL", (DEFERRED_INDEXES,))
            if held.fetchone() == (True,):
                deferred = self.db.execute(
                    f"DELETE FROM {DEFERRED_INDEXES} WHERE tablename = %s RETURNING definition",
                    (table.name,),
                ).fetchall()
                for (definition,) in deferred:
                    self.db.execute(definition)
                if self.db.execute(f"SELECT FROM {DEFERRED_INDEXES} LIMIT 1").fetchone() is None:
                    self.db.execute(f"DROP TABLE {DEFERRED_INDEXES}")
        if table.name == "attempts":
            # The rollups' statement triggers left one delta row per group
            # and COPY block; fold them in now rather than on the first
            # server's first merge.
            self.db.execute("SELECT merge_rollup_deltas()")
        # Rows arrived with their ids: move the identity past them, or the
        # next ticket or attempt would collide with a copied one.
        if table.key == "id":
            self.db.execute(
                f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'),"
                f" GREATEST((SELECT max(id) FROM {table.name}), 1))"
            )

    def close(self) -> None:
        self.db.close()


#: COPY's text format for NULL.
_NULL: Final = "\\N"
#: What a text value cannot hold as it is in COPY's text format (backslash,
#: and the row and field separators) or in PostgreSQL's text type at all
#: (NUL and lone surrogates, see :func:`storable`).
_AWKWARD: Final = re.compile("[\\\\\t\n\r\x00\ud800-\udfff]")
#: Types whose str() PostgreSQL reads back as the same integer or boolean
#: (it takes "True", "False", "0" and "1" for a boolean).
_NUMBERS: Final = frozenset({int, bool, type(None)})


def _copy_text(value: str) -> str:
    """A text value as COPY's text format carries it, made storable first
    (SQLite text may hold NUL, which PostgreSQL cannot store)."""
    if not _AWKWARD.search(value):
        return value
    value = storable(value)
    return (
        value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    )


def _copy_field(value: object) -> str:
    """Any one value in COPY's text format: the slow path, for columns
    whose values are of mixed types (SQLite does not enforce column types)."""
    if value is None:
        return _NULL
    if isinstance(value, str):
        return _copy_text(value)
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, bytes | bytearray | memoryview):
        # bytea's hex input, its backslash doubled for COPY.
        return "\\\\x" + bytes(value).hex()
    return str(value)


def _copy_column(values: Sequence[object]) -> Sequence[str]:
    """One column of a batch in COPY's text format."""
    kinds = set(map(type, values))
    if kinds <= _NUMBERS:
        if type(None) not in kinds:
            return list(map(str, values))
        # No int or bool prints as "None".
        return [_NULL if text == "None" else text for text in map(str, values)]
    if kinds <= {str, type(None)}:
        texts: Sequence[str] = values  # type: ignore[assignment]
        # One search over the whole column: nearly always there is nothing
        # to escape or clean, and then no value needs looking at.
        if _AWKWARD.search("".join(filter(None, texts))):
            return list(map(_copy_field, values))
        if type(None) in kinds:
            return [_NULL if text is None else text for text in texts]
        return texts
    return list(map(_copy_field, values))


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
    progress: OnProgress = no_progress,
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
    try:
        for table in tables:
            _refuse_foreign_rows(source, target, table)
        for table in tables:
            _copy_table(source, target, table, batch, progress)
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
    """The row's never-changing columns, text as any destination stores it
    (a source written before the one text rule may still hold NUL or ``?``
    where the copy holds U+FFFD)."""
    picks = [table.columns.index(c) for c in table.identity]
    if row is None:
        return None
    return tuple(storable(row[i]) if isinstance(row[i], str) else row[i] for i in picks)


def _copy_table(
    source: Endpoint,
    target: Endpoint,
    table: Table,
    batch: int,
    progress: OnProgress,
) -> None:
    total = source.count(table)
    after = target.max_key(table)
    done = 0 if after is None else target.count(table)
    progress(table.name, done, total)
    if done < total:
        target.begin(table)
    key = table.columns.index(table.key)

    def fetch(after: object | None) -> tuple[list[Row], Any]:
        rows = source.read(table, after, batch)
        return rows, target.prepare(table, rows)

    # The next batch is read and prepared while the destination stores this
    # one: PostgreSQL spends most of a copy updating indexes, and the
    # source's reading need not wait for it. Leaving the block waits for
    # the batch in hand, so nothing reads the source after an error.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="usher-copy") as reader:
        upcoming = reader.submit(fetch, after)
        while True:
            rows, prepared = upcoming.result()
            if not rows:
                break
            upcoming = reader.submit(fetch, rows[-1][key])
            target.write(table, prepared)
            done += len(rows)
            progress(table.name, done, total)
    # Rebuilding deferred indexes over millions of rows takes minutes; a
    # phase of its own shows it, where a bar stuck at 100 % would look hung.
    phase = f"{table.name}: indexes and id sequence"
    if total:
        progress(phase, 0, 1)
    target.finish(table)
    if total:
        progress(phase, 1, 1)
