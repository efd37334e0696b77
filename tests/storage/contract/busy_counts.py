"""The storage contract: exact counts for busy values (``count_attempts``
through count filters, see usher/storage/counting.py).

``BUSY_AT`` is lowered so that a small log has busy keys, passes and
addresses, and every combination of the six filters is compared with a
count of the listed attempts: before any count filter exists, after counts
created them, after more checks were logged into them, after rollup upkeep,
and after pruning.

Only ``count_attempts`` (``sevu.errorcount``) makes count filters: the
panel's counts and lists leave ``count_filters`` as they found it
(:class:`PanelCountsContract`).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator

import pytest

from tests.helpers import DEMO_CDN, NOW, count_filters_of, make_ticket
from tests.storage.contract.base import ContractBase
from usher.storage import counting
from usher.storage.base import Storage
from usher.tickets.decision import decide
from usher.tickets.model import Account, Attempt, AttemptFilter, CheckRequest, Page

#: The capped counts' caps: below and above what the busy values hold.
CAPS = (5, 1000)

NAMES = ("key", "password", "app", "video", "ip", "success")
TICKETS = 4


def _request(i: int) -> CheckRequest:
    # Few keys and addresses, so that most values are busy at BUSY_AT = 3.
    return CheckRequest(
        key=f"busy{i % TICKETS}" if i % 9 else "unknown",
        password="pw" if i % 5 else "wrong",
        app=("demo-live", "demo-vod")[i % 2],
        video=f"v{i % 3}",
        ip=f"10.0.0.{i % 3}" if i % 4 else "192.0.2.9",
    )


def _wheres(log: list[Attempt]) -> Iterator[AttemptFilter]:
    samples = [log[0], log[len(log) // 3], log[-1]]
    for mask, sample in itertools.product(range(64), samples):
        yield AttemptFilter(**{n: getattr(sample, n) for i, n in enumerate(NAMES) if mask >> i & 1})


class BusyCountsContract(ContractBase):
    """Counts by busy values stay exact through every change of the log."""

    @pytest.fixture(autouse=True)
    def _small_busy_threshold(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(counting, "BUSY_AT", 3)

    async def _record(self, storage: Storage, numbers: range) -> None:
        for i in numbers:
            await storage.record_check(_request(i), decide, NOW + i)

    async def _assert_exact(self, storage: Storage) -> None:
        log = await storage.list_attempts(DEMO_CDN, AttemptFilter(), Page())
        for where in _wheres(log):
            expected = len(await storage.list_attempts(DEMO_CDN, where, Page()))
            assert await storage.count_attempts(DEMO_CDN, where) == expected, where

    async def test_busy_counts_stay_exact(self, storage: Storage, demo: Account) -> None:
        for n in range(TICKETS):
            await storage.insert_ticket(make_ticket(key=f"busy{n}", password="pw", video="*"))
        await self._record(storage, range(60))
        # The first round creates count filters; the second reads them.
        await self._assert_exact(storage)
        await self._assert_exact(storage)
        await self._record(storage, range(60, 120))
        await self._assert_exact(storage)
        await storage.flush_rollups()
        await self._assert_exact(storage)
        while await storage.prune_attempts(NOW + 30, 7):
            pass
        await self._assert_exact(storage)
        await storage.flush_rollups()
        await self._assert_exact(storage)

    async def test_busy_counts_are_exact_while_checks_run(
        self, storage: Storage, demo: Account
    ) -> None:
        for n in range(TICKETS):
            await storage.insert_ticket(make_ticket(key=f"busy{n}", password="pw", video="*"))
        await self._record(storage, range(12))
        log = await storage.list_attempts(DEMO_CDN, AttemptFilter(), Page())
        # Counts that create count filters run while checks are logged.
        await asyncio.gather(
            *(storage.record_check(_request(i), decide, NOW + i) for i in range(12, 150)),
            *(storage.count_attempts(DEMO_CDN, where) for where in _wheres(log)),
        )
        await self._assert_exact(storage)


class PanelCountsContract(ContractBase):
    """The panel's counts and lists never make a count filter: a fill reads
    every attempt of a busy value, more than a panel view may read. They use
    the filters ``count_attempts`` made, or capped counts."""

    @pytest.fixture(autouse=True)
    def _small_busy_threshold(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(counting, "BUSY_AT", 3)

    @pytest.fixture
    async def log(self, storage: Storage, demo: Account) -> list[Attempt]:
        for n in range(TICKETS):
            await storage.insert_ticket(make_ticket(key=f"busy{n}", password="pw", video="*"))
        for i in range(60):
            await storage.record_check(_request(i), decide, NOW + i)
        return await storage.list_attempts(DEMO_CDN, AttemptFilter(), Page())

    async def test_capped_counts_make_no_count_filter(
        self, storage: Storage, log: list[Attempt]
    ) -> None:
        wheres = list(_wheres(log))
        for where, cap in itertools.product(wheres, CAPS):
            expected = len(await storage.list_attempts(DEMO_CDN, where, Page()))
            got = await storage.count_attempts_upto(DEMO_CDN, where, cap)
            assert got == min(expected, cap + 1), (where, cap)
        assert await count_filters_of(storage, DEMO_CDN, wheres) == {}

    async def test_lists_make_no_count_filter(self, storage: Storage, log: list[Attempt]) -> None:
        wheres = list(_wheres(log))
        for where in wheres:
            newest = await storage.list_attempts(DEMO_CDN, where, Page(limit=2), newest_first=True)
            everything = await storage.list_attempts(DEMO_CDN, where, Page())
            assert newest == everything[::-1][:2], where
        assert await count_filters_of(storage, DEMO_CDN, wheres) == {}

    async def test_capped_counts_read_the_filters_errorcount_made(
        self, storage: Storage, log: list[Attempt]
    ) -> None:
        busy = AttemptFilter(key="busy1")
        assert await count_filters_of(storage, DEMO_CDN, [busy]) == {}
        expected = len(await storage.list_attempts(DEMO_CDN, busy, Page()))
        assert expected > counting.BUSY_AT
        assert await storage.count_attempts(DEMO_CDN, busy) == expected
        made = await count_filters_of(storage, DEMO_CDN, [busy])
        assert list(made) == [1]  # the key's own filter
        # Capped counts by the key now read that filter's rollup, exactly.
        for success in (None, True, False):
            where = AttemptFilter(key="busy1", success=success)
            matching = await storage.list_attempts(DEMO_CDN, where, Page())
            got = await storage.count_attempts_upto(DEMO_CDN, where, 1000)
            assert got == len(matching), where
        assert await count_filters_of(storage, DEMO_CDN, [busy]) == made
