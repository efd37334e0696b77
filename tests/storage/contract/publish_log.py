"""The storage contract: the publish log (publishers, SPEC §6)."""

from __future__ import annotations

import dataclasses

import pytest

from tests.helpers import DEMO_CDN, NOW, OTHER_CDN
from tests.storage.contract.base import ContractBase
from usher.storage.base import (
    MAX_ATTEMPT_FIELD,
    MAX_PUBLISH_BATCH,
    MAX_PUBLISH_DENIALS,
    Storage,
)
from usher.tickets.model import MAX_PAGE_ROWS, Account
from usher.tickets.publishers import PublishAttempt, PublishFilter, PublishReason

ANY = PublishFilter()


def publish(
    at: int = NOW,
    *,
    cdn: int | None = DEMO_CDN,
    ip: str = "192.0.2.1",
    app: str = "demo-live",
    stream: str = "cam",
    user: str | None = "alice",
    reason: PublishReason = "credentials",
    stream_user_id: int | None = None,
) -> PublishAttempt:
    allowed = reason in ("open", "credentials")
    return PublishAttempt(
        0, cdn, at, ip, app, stream, user, allowed, reason, "srs", "198.51.100.9", stream_user_id
    )


async def log(storage: Storage, *attempts: PublishAttempt) -> list[PublishAttempt]:
    """``attempts`` as stored, with their ids."""
    return [
        dataclasses.replace(a, id=await storage.record_publish(dataclasses.replace(a, id=99)))
        for a in attempts
    ]


class PublishLogContract(ContractBase):
    """Recording, listing with filters and a cursor, the brute-force read, pruning."""

    async def test_recorded_rows_are_listed_newest_first(
        self, storage: Storage, demo: Account
    ) -> None:
        rows = await log(
            storage,
            publish(stream_user_id=7),
            publish(NOW + 1, user=None, reason="no_credentials"),
            publish(NOW + 2, user=None, reason="open", stream_user_id=8),
            # An older time logged later still lists first: the order is the id's.
            publish(NOW - 50, reason="bad_credentials"),
        )
        assert [r.id for r in rows] == sorted({r.id for r in rows})
        assert await storage.list_publishes(DEMO_CDN, ANY, 10) == rows[::-1]

    async def test_a_batch_is_logged_in_order_with_its_ids(
        self, storage: Storage, demo: Account
    ) -> None:
        batch = [publish(NOW + n, stream=f"cam{n}", reason="blocked") for n in range(300)]
        ids = await storage.record_publishes(batch)
        assert ids == sorted(set(ids)) and len(ids) == 300
        listed = await storage.list_publishes(DEMO_CDN, ANY, MAX_PAGE_ROWS)
        assert [(r.id, r.stream) for r in listed[::-1]] == [
            (i, a.stream) for i, a in zip(ids, batch, strict=True)
        ]
        assert await storage.record_publishes([]) == []

    async def test_a_batch_over_the_limit_is_refused(self, storage: Storage, demo: Account) -> None:
        with pytest.raises(ValueError, match="at most"):
            await storage.record_publishes([publish()] * (MAX_PUBLISH_BATCH + 1))
        assert await storage.list_publishes(DEMO_CDN, ANY, 10) == []

    async def test_each_filter_lists_its_rows(self, storage: Storage, demo: Account) -> None:
        rows = await log(
            storage,
            publish(),
            publish(ip="203.0.113.5", reason="bad_credentials"),
            publish(app="demo-vod", reason="no_stream_user"),
            publish(ip="203.0.113.5", app="demo-vod"),
            publish(reason="blocked"),
        )

        async def listed(where: PublishFilter) -> list[int]:
            return [r.id for r in await storage.list_publishes(DEMO_CDN, where, 10)]

        def ids(*picked: int) -> list[int]:
            return [rows[i].id for i in sorted(picked, reverse=True)]

        assert await listed(PublishFilter(allowed=True)) == ids(0, 3)
        assert await listed(PublishFilter(allowed=False)) == ids(1, 2, 4)
        assert await listed(PublishFilter(ip="203.0.113.5")) == ids(1, 3)
        assert await listed(PublishFilter(app="demo-vod")) == ids(2, 3)
        assert await listed(PublishFilter(ip="203.0.113.5", allowed=False)) == ids(1)
        assert await listed(PublishFilter(ip="203.0.113.5", app="demo-vod")) == ids(3)
        assert await listed(PublishFilter(app="demo-vod", allowed=True)) == ids(3)
        assert await listed(PublishFilter(ip="198.51.100.1")) == []

    async def test_cursor_pages_through_every_row_once(
        self, storage: Storage, demo: Account
    ) -> None:
        rows = await log(
            storage, *(publish(NOW + i, reason=("open", "blocked")[i % 2]) for i in range(11))
        )
        for where in (ANY, PublishFilter(allowed=False), PublishFilter(app="demo-live")):
            seen: list[PublishAttempt] = []
            before: int | None = None
            while page := await storage.list_publishes(DEMO_CDN, where, 3, before=before):
                assert len(page) <= 3
                seen += page
                before = page[-1].id
            expected = [r for r in rows if where.allowed in (None, r.allowed)]
            assert seen == expected[::-1], where
        assert await storage.list_publishes(DEMO_CDN, ANY, 2, before=rows[5].id) == [
            rows[4],
            rows[3],
        ]
        assert await storage.list_publishes(DEMO_CDN, ANY, 5, before=rows[0].id) == []

    async def test_accounts_are_isolated_and_unowned_rows_never_listed(
        self, storage: Storage, demo: Account, other: Account
    ) -> None:
        mine, theirs, nobodys = await log(
            storage,
            publish(),
            publish(cdn=OTHER_CDN, app="other-live"),
            publish(cdn=None, app="ghost-live", reason="no_stream_user"),
        )
        assert await storage.list_publishes(DEMO_CDN, ANY, 10) == [mine]
        assert await storage.list_publishes(OTHER_CDN, ANY, 10) == [theirs]
        assert await storage.list_publishes(DEMO_CDN, PublishFilter(app="ghost-live"), 10) == []
        assert await storage.list_publishes(DEMO_CDN, PublishFilter(app="other-live"), 10) == []
        assert nobodys.id > theirs.id  # stored, only never listed

    async def test_text_is_stored_storable_and_cut_like_attempts(
        self, storage: Storage, demo: Account
    ) -> None:
        odd = "c\x00a\ud800m"
        shown = "c\ufffda\ufffdm"
        long = "s" * (MAX_ATTEMPT_FIELD + 10)
        (row,) = await log(storage, publish(ip=odd, stream=long, user=odd))
        (listed,) = await storage.list_publishes(DEMO_CDN, ANY, 1)
        assert (listed.ip, listed.user, listed.stream) == (shown, shown, long[:MAX_ATTEMPT_FIELD])
        assert listed == dataclasses.replace(row, ip=shown, user=shown, stream=listed.stream)
        # Filters match as the text was stored.
        for ip in (odd, shown):
            assert await storage.list_publishes(DEMO_CDN, PublishFilter(ip=ip), 1) == [listed]

    async def test_denials_are_the_checked_denials_of_one_address(
        self, storage: Storage, demo: Account, other: Account
    ) -> None:
        ip = "203.0.113.5"
        await log(
            storage,
            publish(NOW, ip=ip, reason="bad_credentials"),
            publish(NOW + 1, ip=ip, reason="credentials"),  # allowed
            publish(NOW + 2, ip=ip, reason="blocked"),  # refused unchecked
            publish(NOW + 3, ip="203.0.113.6", reason="bad_credentials"),  # another address
            publish(NOW + 4, ip=ip, cdn=OTHER_CDN, app="other-live", reason="no_credentials"),
            publish(NOW + 5, ip=ip, cdn=None, app="ghost-live", reason="no_stream_user"),
            publish(NOW + 6, ip=ip, user=None, reason="open"),  # allowed
        )
        assert await storage.publish_denials(ip, NOW - 100, 10) == [NOW, NOW + 4, NOW + 5]
        assert await storage.publish_denials(ip, NOW + 4, 10) == [NOW + 4, NOW + 5]  # since
        assert await storage.publish_denials(ip, NOW + 6, 10) == []
        assert await storage.publish_denials("198.51.100.7", NOW - 100, 10) == []

    async def test_denials_limit_keeps_the_latest_oldest_first(
        self, storage: Storage, demo: Account
    ) -> None:
        # Logged out of time order: the latest by time are kept, not by id.
        times = [NOW + t for t in (5, 1, 9, 3, 7, 7)]
        await log(storage, *(publish(t, reason="bad_credentials") for t in times))
        assert await storage.publish_denials("192.0.2.1", NOW, 3) == [NOW + 7, NOW + 7, NOW + 9]
        assert await storage.publish_denials("192.0.2.1", NOW, MAX_PUBLISH_DENIALS) == sorted(times)

    @pytest.mark.parametrize("limit", [0, -1, MAX_PUBLISH_DENIALS + 1])
    async def test_denials_limit_out_of_range_is_refused(
        self, storage: Storage, limit: int
    ) -> None:
        with pytest.raises(ValueError, match=f"from 1 to {MAX_PUBLISH_DENIALS}"):
            await storage.publish_denials("192.0.2.1", NOW, limit)

    @pytest.mark.parametrize("rows", [0, -3, MAX_PAGE_ROWS + 1])
    async def test_listing_rows_out_of_range_is_refused(
        self, storage: Storage, demo: Account, rows: int
    ) -> None:
        with pytest.raises(ValueError, match=f"from 1 to {MAX_PAGE_ROWS}"):
            await storage.list_publishes(DEMO_CDN, ANY, rows)

    async def test_prune_deletes_the_old_rows_batch_by_batch(
        self, storage: Storage, demo: Account
    ) -> None:
        rows = await log(
            storage,
            *(
                publish(NOW + 10 * i, cdn=(DEMO_CDN, None)[i % 2], reason="bad_credentials")
                for i in range(7)
            ),
        )
        batches = []
        while went := await storage.prune_publishes(NOW + 40, 2):
            assert went <= 2
            batches.append(went)
        assert sum(batches) == 4  # at 0, 10, 20, 30: ``at < before``
        assert await storage.prune_publishes(NOW + 40, 2) == 0
        assert await storage.list_publishes(DEMO_CDN, ANY, 10) == [rows[6], rows[4]]
        assert await storage.publish_denials("192.0.2.1", NOW, 10) == [
            NOW + t for t in (40, 50, 60)
        ]
        with pytest.raises(ValueError, match="at least 1"):
            await storage.prune_publishes(NOW + 40, 0)

    async def test_ids_are_not_reused_after_pruning_everything(
        self, storage: Storage, demo: Account
    ) -> None:
        (first,) = await log(storage, publish())
        assert await storage.prune_publishes(NOW + 1, 10) == 1
        (second,) = await log(storage, publish(NOW + 2))
        assert second.id > first.id
