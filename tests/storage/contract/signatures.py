"""The storage contract: replay protection (``claim_signature``) and the
account copy a signed command may be verified with (``cached_account``)."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from tests.helpers import DEMO_CDN, NOW
from tests.storage.contract.base import ContractBase
from usher.storage.base import Claim, Storage
from usher.tickets.model import Account

SPENT, REPLAYED, CHANGED = Claim.SPENT, Claim.REPLAYED, Claim.ACCOUNT_CHANGED


class SignaturesContract(ContractBase):
    """A request signature is admitted once until it expires, even under
    races, and only while its account still authenticates as it did."""

    async def test_signature_is_refused_until_it_expires(
        self, storage: Storage, demo: Account
    ) -> None:
        digest = b"\x01" * 32

        async def claim(now: int) -> Claim:
            return await storage.claim_signature(digest, now=now, expires_at=now + 60, account=demo)

        assert await claim(NOW) is SPENT
        assert await claim(NOW) is REPLAYED
        assert await claim(NOW + 59) is REPLAYED
        # expires_at itself is still inside the window: the freshness check
        # accepts a timestamp exactly `tolerance` old, so the replay check must
        # still refuse it then.
        assert await claim(NOW + 60) is REPLAYED
        assert await claim(NOW + 61) is SPENT
        # The new claim restarted the window.
        assert await claim(NOW + 100) is REPLAYED

    async def test_distinct_signatures_are_independent(
        self, storage: Storage, demo: Account
    ) -> None:
        async def claim(digest: bytes) -> Claim:
            return await storage.claim_signature(digest, now=NOW, expires_at=NOW + 60, account=demo)

        assert await claim(b"a" * 32) is SPENT
        assert await claim(b"b" * 32) is SPENT
        # A digest that is a prefix of another is still a different digest.
        assert await claim(b"a" * 31) is SPENT
        assert await claim(b"a" * 32) is REPLAYED

    async def test_concurrent_claims_of_one_signature_admit_exactly_one(
        self, storage: Storage, demo: Account
    ) -> None:
        results = await asyncio.gather(
            *(
                storage.claim_signature(b"race", now=NOW, expires_at=NOW + 60, account=demo)
                for _ in range(30)
            )
        )
        assert results.count(SPENT) == 1
        assert results.count(REPLAYED) == 29

    async def test_claims_survive_many_later_claims(self, storage: Storage, demo: Account) -> None:
        # Enough traffic for a backend to purge expired rows on the way: the
        # purge may drop expired digests but never one still in its window.
        async def claim(digest: bytes, now: int, expires_at: int) -> Claim:
            return await storage.claim_signature(
                digest, now=now, expires_at=expires_at, account=demo
            )

        assert await claim(b"live", NOW, NOW + 300) is SPENT
        assert await claim(b"dead", NOW, NOW + 1) is SPENT
        later = NOW + 10
        results = await asyncio.gather(
            *(claim(i.to_bytes(4, "big"), later, later + 60) for i in range(1100))
        )
        assert set(results) == {SPENT}
        assert await claim(b"live", later, later + 60) is REPLAYED
        assert await claim(b"dead", later, later + 60) is SPENT

    @pytest.mark.parametrize(
        "change",
        [{"secret": "rotated"}, {"disabled": True}],
        ids=["secret rotated", "account disabled"],
    )
    async def test_a_changed_account_spends_nothing(
        self, storage: Storage, demo: Account, change: dict[str, object]
    ) -> None:
        changed = await storage.update_account(DEMO_CDN, **change)  # type: ignore[arg-type]  # the two keyword arguments, parametrized
        assert changed is not None
        assert (
            await storage.claim_signature(b"sig", now=NOW, expires_at=NOW + 60, account=demo)
            is CHANGED
        )
        if not changed.disabled:
            # Nothing was recorded: the current account may still spend it.
            assert (
                await storage.claim_signature(b"sig", now=NOW, expires_at=NOW + 60, account=changed)
                is SPENT
            )

    @pytest.mark.parametrize(
        "copy",
        [
            {"api_key": "OLDKEY"},
            {"secret": "old-secret"},
            {"cdn": DEMO_CDN + 1000},
        ],
        ids=["api_key", "secret", "unknown cdn"],
    )
    async def test_an_account_unlike_the_row_spends_nothing(
        self, storage: Storage, demo: Account, copy: dict[str, object]
    ) -> None:
        # A copy whose key or secret is not the row's is out of date.
        stale = dataclasses.replace(demo, **copy)  # type: ignore[arg-type]  # Account's own fields, parametrized
        assert (
            await storage.claim_signature(b"sig", now=NOW, expires_at=NOW + 60, account=stale)
            is CHANGED
        )
        assert (
            await storage.claim_signature(b"sig", now=NOW, expires_at=NOW + 60, account=demo)
            is SPENT
        )

    async def test_an_account_copy_is_never_newer_than_the_row(
        self, storage: Storage, demo: Account
    ) -> None:
        # Whatever a backend keeps (nothing at all is fine), the copy of an
        # account is one it read or wrote, and it follows this node's writes.
        assert storage.cached_account(DEMO_CDN) in (None, demo)
        rotated = await storage.update_account(DEMO_CDN, secret="rotated")
        assert storage.cached_account(DEMO_CDN) in (None, rotated)
        assert await storage.get_account(DEMO_CDN) == rotated
        assert storage.cached_account(DEMO_CDN) in (None, rotated)
        assert storage.cached_account(DEMO_CDN + 1000) is None
