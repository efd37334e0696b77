"""The storage contract: replay protection (``claim_signature``)."""

from __future__ import annotations

import asyncio

from tests.helpers import NOW
from tests.storage.contract.base import ContractBase
from usher.storage.base import Storage


class SignaturesContract(ContractBase):
    """A request signature is admitted once until it expires, even under races."""

    async def test_signature_is_refused_until_it_expires(self, storage: Storage) -> None:
        digest = b"\x01" * 32
        assert await storage.claim_signature(digest, now=NOW, expires_at=NOW + 60)
        assert not await storage.claim_signature(digest, now=NOW, expires_at=NOW + 60)
        assert not await storage.claim_signature(digest, now=NOW + 59, expires_at=NOW + 119)
        # expires_at itself is still inside the window: the freshness check
        # accepts a timestamp exactly `tolerance` old, so the replay check must
        # still refuse it then.
        assert not await storage.claim_signature(digest, now=NOW + 60, expires_at=NOW + 120)
        assert await storage.claim_signature(digest, now=NOW + 61, expires_at=NOW + 121)
        # The new claim restarted the window.
        assert not await storage.claim_signature(digest, now=NOW + 100, expires_at=NOW + 160)

    async def test_distinct_signatures_are_independent(self, storage: Storage) -> None:
        assert await storage.claim_signature(b"a" * 32, now=NOW, expires_at=NOW + 60)
        assert await storage.claim_signature(b"b" * 32, now=NOW, expires_at=NOW + 60)
        # A digest that is a prefix of another is still a different digest.
        assert await storage.claim_signature(b"a" * 31, now=NOW, expires_at=NOW + 60)
        assert not await storage.claim_signature(b"a" * 32, now=NOW, expires_at=NOW + 60)

    async def test_concurrent_claims_of_one_signature_admit_exactly_one(
        self, storage: Storage
    ) -> None:
        results = await asyncio.gather(
            *(storage.claim_signature(b"race", now=NOW, expires_at=NOW + 60) for _ in range(30))
        )
        assert results.count(True) == 1

    async def test_claims_survive_many_later_claims(self, storage: Storage) -> None:
        # Enough traffic for a backend to purge expired rows on the way: the
        # purge may drop expired digests but never one still in its window.
        assert await storage.claim_signature(b"live", now=NOW, expires_at=NOW + 300)
        assert await storage.claim_signature(b"dead", now=NOW, expires_at=NOW + 1)
        later = NOW + 10
        results = await asyncio.gather(
            *(
                storage.claim_signature(i.to_bytes(4, "big"), now=later, expires_at=later + 60)
                for i in range(1100)
            )
        )
        assert all(results)
        assert not await storage.claim_signature(b"live", now=later, expires_at=later + 60)
        assert await storage.claim_signature(b"dead", now=later, expires_at=later + 60)
