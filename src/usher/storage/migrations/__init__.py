"""Versioned schema migrations, one folder of numbered ``.sql`` files per backend.

``0001_initial.sql`` takes an empty database to version 1, ``0002_….sql`` to
version 2, and so on. A backend applies the files above its current version in
one transaction each and refuses a database whose version is higher than the
highest file it ships, since older code cannot know what a newer schema means.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from usher.protocol.errors import SchemaError

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def load(backend: str) -> list[Migration]:
    """The backend's migrations in version order."""
    folder = resources.files(__package__).joinpath(backend)
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise SchemaError(f"The {backend} migrations are not numbered 1..N; reinstall Usher.")
    return found


def check_not_newer(current: int, migrations: list[Migration], where: str) -> None:
    """Refuse a database migrated by newer code than this one."""
    known = migrations[-1].version if migrations else 0
    if current > known:
        raise SchemaError(
            f"The database {where} is at schema version {current}, but this Usher "
            f"only knows versions up to {known}. Upgrade Usher to the release that "
            "migrated it, or point --database at another database."
        )
