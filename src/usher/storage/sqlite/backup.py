"""``usher db backup``: a consistent copy of a live SQLite database.

The copy is made with SQLite's online backup API from a connection of its
own (the command's process, not the server's), so it is safe while
``usher serve`` writes:

* The source connection opens one read transaction and keeps it for the
  whole copy. In WAL mode a reader never blocks the writer, so checks go
  on at full speed; and every step copies pages of that one snapshot. Left
  to itself, the backup API would take a fresh snapshot per step and start
  over whenever another process had written in between, which under a
  steady load of checks means it never finishes. The snapshot holds every
  attempt committed (acknowledged) before the copy began.
* While the snapshot is held, the WAL cannot be recycled past it, so the
  ``-wal`` file grows by what is written during the copy and shrinks again
  at the next checkpoint after.
* The copy is written to ``<FILE>.partial``, switched from WAL to a
  rollback journal (so it is one self-contained file), checked with
  ``PRAGMA integrity_check``, flushed to disk, and only then renamed to
  ``FILE``: an interrupted or unsound backup never leaves a file that looks
  complete.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from usher.progress import OnProgress, no_progress
from usher.protocol.errors import ConfigError, StorageError

#: Pages copied per step; with 4 KiB pages, 4 MiB between progress reports.
PAGES_PER_STEP: Final = 1024


@dataclass(frozen=True, slots=True)
class BackupResult:
    path: Path
    bytes: int
    seconds: float


def backup_sqlite(
    source: str,
    target: Path,
    *,
    force: bool = False,
    progress: OnProgress = no_progress,
) -> BackupResult:
    """Copy the SQLite database at ``source`` to ``target`` (see the module docstring)."""
    started = time.monotonic()
    if not Path(source).is_file():
        raise ConfigError(
            f"There is no SQLite database at {source}; check --database (or USHER_DATABASE_URL)."
        )
    if target.is_dir():
        raise ConfigError(f"{target} is a folder; give --to the name of a file to write.")
    if not target.parent.is_dir():
        raise ConfigError(
            f"The folder {target.parent} does not exist; create it, or choose another --to."
        )
    if target.exists() and not force:
        raise ConfigError(
            f"{target} already exists; choose another --to, or add --force to replace it."
        )
    if target.exists() and target.resolve() == Path(source).resolve():
        raise ConfigError(f"--to names the database itself ({source}); choose another file.")
    partial = target.with_name(target.name + ".partial")
    for leftover in _files_of(partial):
        leftover.unlink(missing_ok=True)
    try:
        _copy(source, partial, progress)
        _finish(partial)
    except sqlite3.Error as exc:
        for leftover in _files_of(partial):
            leftover.unlink(missing_ok=True)
        raise StorageError(
            f"The backup of {source} failed, and {target} was not written: {exc}."
        ) from exc
    except BaseException:
        for leftover in _files_of(partial):
            leftover.unlink(missing_ok=True)
        raise
    os.replace(partial, target)
    _sync_folder(target.parent)
    return BackupResult(target, target.stat().st_size, time.monotonic() - started)


def _files_of(path: Path) -> list[Path]:
    return [path, *(path.with_name(path.name + s) for s in ("-journal", "-wal", "-shm"))]


def _copy(source: str, partial: Path, progress: OnProgress) -> None:
    with (
        contextlib.closing(sqlite3.connect(source, isolation_level=None)) as src,
        contextlib.closing(sqlite3.connect(partial, isolation_level=None)) as dst,
    ):
        src.execute("PRAGMA query_only = ON")
        src.execute("PRAGMA busy_timeout = 5000")
        # The snapshot every step copies from (see the module docstring).
        src.execute("BEGIN")
        src.execute("SELECT COUNT(*) FROM sqlite_schema").fetchone()

        def report(status: int, remaining: int, total: int) -> None:
            progress("backup", total - remaining, total)

        try:
            src.backup(dst, pages=PAGES_PER_STEP, progress=report)
        finally:
            src.execute("COMMIT")


def _finish(partial: Path) -> None:
    with contextlib.closing(sqlite3.connect(partial, isolation_level=None)) as conn:
        # The pages say WAL, as the source was; one file is what a backup
        # should be. ``usher serve`` turns WAL back on when it opens it.
        conn.execute("PRAGMA journal_mode = DELETE").fetchone()
        rows = conn.execute("PRAGMA integrity_check").fetchall()
    integrity = "; ".join(str(row[0]) for row in rows)
    if integrity != "ok":
        raise StorageError(
            f"The copy failed PRAGMA integrity_check ({integrity[:500]}), so it was not kept. "
            "Run the same check on the database itself; if it fails too, restore the last good "
            "backup."
        )
    with partial.open("rb+") as file:
        os.fsync(file.fileno())


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
