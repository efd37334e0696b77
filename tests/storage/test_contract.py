"""The storage contract (tests/storage/contract/) run against each backend.

Each class supplies an open, empty storage through the ``storage`` fixture
and the newest schema version its backend ships; the tests themselves are
all in :class:`~tests.storage.contract.StorageContract`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.storage.contract import StorageContract
from usher.storage import migrations
from usher.storage.base import Storage
from usher.storage.postgres import PostgresStorage
from usher.storage.sqlite import SQLiteStorage


class TestSQLite(StorageContract):
    # A fresh file ends at the newest migration shipped, however many there are.
    expected_schema_version = migrations.load("sqlite")[-1].version

    @pytest.fixture
    async def storage(self, tmp_path: Path) -> AsyncIterator[Storage]:
        s = SQLiteStorage(str(tmp_path / "c.db"))
        # The contract gathers a thousand checks at once; on a busy machine
        # the writer would rightly shed some (tests/storage/test_sqlite_shedding.py).
        s.max_write_wait = 60.0
        await s.open()
        yield s
        await s.close()


class TestPostgres(StorageContract):
    # A fresh database (cloned from the session's migrated template) ends at
    # the newest migration shipped.
    expected_schema_version = migrations.load("postgresql")[-1].version

    @pytest.fixture
    async def storage(self, pg_url: str) -> AsyncIterator[Storage]:
        s = PostgresStorage(pg_url)
        await s.open()
        yield s
        await s.close()
