"""Bounded reads (``bounded_reads``, the panel's ``USHER_PANEL_QUERY_TIMEOUT``)
stop a real statement on each backend, and leave the connection usable."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from tests.helpers import slow_read
from usher.storage.base import ReadBoundExceeded, Storage, bounded_reads
from usher.storage.postgres import PostgresStorage
from usher.storage.sqlite import SQLiteStorage, sqlite_path
from usher.tickets.model import AttemptFilter

pytestmark = pytest.mark.anyio


@pytest.fixture
async def storage(database_url: str) -> AsyncIterator[Storage]:
    # One reader on SQLite, so the read after a stopped one reuses its connection.
    opened: Storage = (
        SQLiteStorage(sqlite_path(database_url), readers=1)
        if database_url.startswith("sqlite")
        else PostgresStorage(database_url)
    )
    await opened.open()
    yield opened
    await opened.close()


@pytest.mark.xdist_group("timing")  # bounds a duration (see conftest.py, xdist)
async def test_a_slow_read_is_stopped_at_the_bound(storage: Storage) -> None:
    started = time.monotonic()
    with bounded_reads(0.2), pytest.raises(ReadBoundExceeded) as stopped:
        await slow_read(storage)
    took = time.monotonic() - started
    assert 0.2 <= took < 1.5, took
    assert stopped.value.seconds == 0.2
    assert str(stopped.value).endswith(".")
    # The connection is clean: reads go on, bounded or not.
    with bounded_reads(5):
        assert await storage.count_attempts(1, AttemptFilter()) == 0
    assert await storage.count_attempts(1, AttemptFilter()) == 0


async def test_the_bound_covers_every_read_of_its_block_together(storage: Storage) -> None:
    with bounded_reads(0.3):
        with pytest.raises(ReadBoundExceeded):
            await slow_read(storage)
        # The budget is spent: the next read stops before it starts.
        with pytest.raises(ReadBoundExceeded):
            await storage.count_attempts(1, AttemptFilter())
