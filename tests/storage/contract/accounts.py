"""The storage contract: accounts (``create_account`` and friends)."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from tests.helpers import DEMO_CDN, NOW, OTHER_CDN
from tests.storage.contract.base import ContractBase
from usher.protocol.errors import AlreadyExists
from usher.storage.base import Storage
from usher.tickets.model import Account


class AccountsContract(ContractBase):
    """Accounts: cdn numbering, uniqueness under concurrency, lookups, updates."""

    async def test_create_account_with_explicit_cdn(self, storage: Storage) -> None:
        account = await storage.create_account(
            username="demo", api_key="KEY", secret="SECRET", cdn=158, now=NOW
        )
        assert account == Account(158, "demo", "KEY", "SECRET", disabled=False, created_at=NOW)
        assert account.secret == "SECRET"  # __eq__ covers it, but repr hides it
        assert await storage.get_account(158) == account
        assert await storage.get_account_by_username("demo") == account

    async def test_cdn_none_takes_max_plus_one_starting_at_1(self, storage: Storage) -> None:
        async def create(username: str, cdn: int | None) -> int:
            account = await storage.create_account(
                username=username, api_key="K", secret="S", cdn=cdn, now=NOW
            )
            return account.cdn

        assert await create("a", None) == 1
        assert await create("b", None) == 2
        assert await create("c", 10) == 10
        # Next free means above the highest, not the first gap (3..9).
        assert await create("d", None) == 11
        assert await create("e", 5) == 5
        assert await create("f", None) == 12

    async def test_cdn_zero_is_a_valid_explicit_cdn(self, storage: Storage) -> None:
        # `usher account create --cdn 0` is allowed, so 0 must not read as "unset".
        zero = await storage.create_account(username="z", api_key="K", secret="S", cdn=0, now=NOW)
        assert zero.cdn == 0
        assert await storage.get_account(0) == zero
        nxt = await storage.create_account(username="n", api_key="K", secret="S", cdn=None, now=NOW)
        assert nxt.cdn == 1

    @pytest.mark.parametrize("cdn", [None, 7], ids=["auto-cdn", "free-cdn"])
    async def test_duplicate_username_is_refused(
        self, storage: Storage, demo: Account, cdn: int | None
    ) -> None:
        with pytest.raises(AlreadyExists):
            await storage.create_account(username="demo", api_key="X", secret="Y", cdn=cdn, now=NOW)
        assert await storage.list_accounts() == [demo]

    async def test_duplicate_cdn_is_refused(self, storage: Storage, demo: Account) -> None:
        with pytest.raises(AlreadyExists):
            await storage.create_account(
                username="fresh", api_key="X", secret="Y", cdn=DEMO_CDN, now=NOW
            )
        assert await storage.list_accounts() == [demo]
        assert await storage.get_account_by_username("fresh") is None

    async def test_concurrent_creates_get_distinct_cdns(self, storage: Storage) -> None:
        accounts = await asyncio.gather(
            *(
                storage.create_account(username=f"u{i}", api_key="K", secret="S", cdn=None, now=NOW)
                for i in range(10)
            )
        )
        assert sorted(a.cdn for a in accounts) == list(range(1, 11))
        assert [a.cdn for a in await storage.list_accounts()] == list(range(1, 11))

    async def test_concurrent_creates_of_one_username_admit_exactly_one(
        self, storage: Storage
    ) -> None:
        results = await asyncio.gather(
            *(
                storage.create_account(username="dup", api_key="K", secret="S", cdn=None, now=NOW)
                for _ in range(10)
            ),
            return_exceptions=True,
        )
        created = [r for r in results if isinstance(r, Account)]
        assert len(created) == 1
        assert all(isinstance(r, AlreadyExists) for r in results if r not in created)
        assert await storage.list_accounts() == created

    async def test_unknown_account_lookups_give_none(self, storage: Storage, demo: Account) -> None:
        assert await storage.get_account(999) is None
        assert await storage.get_account_by_username("nobody") is None
        # Usernames are exact: no prefix or case folding.
        assert await storage.get_account_by_username("dem") is None
        assert await storage.get_account_by_username("DEMO") is None

    async def test_list_accounts_is_ordered_by_cdn(self, storage: Storage) -> None:
        assert await storage.list_accounts() == []
        for username, cdn in [("five", 5), ("two", 2), ("nine", 9)]:
            await storage.create_account(
                username=username, api_key="K", secret="S", cdn=cdn, now=NOW
            )
        listed = await storage.list_accounts()
        assert [(a.cdn, a.username) for a in listed] == [(2, "two"), (5, "five"), (9, "nine")]

    async def test_update_account_secret(
        self, storage: Storage, demo: Account, other: Account
    ) -> None:
        updated = await storage.update_account(DEMO_CDN, secret="rotated")
        assert updated == dataclasses.replace(demo, secret="rotated")
        assert await storage.get_account(DEMO_CDN) == updated
        assert await storage.get_account(OTHER_CDN) == other

    async def test_update_account_disabled_flag_both_ways(
        self, storage: Storage, demo: Account, other: Account
    ) -> None:
        disabled = await storage.update_account(DEMO_CDN, disabled=True)
        assert disabled == dataclasses.replace(demo, disabled=True)
        assert await storage.get_account_by_username("demo") == disabled
        assert await storage.get_account(OTHER_CDN) == other
        enabled = await storage.update_account(DEMO_CDN, disabled=False)
        assert enabled == demo
        assert await storage.get_account(DEMO_CDN) == demo

    async def test_update_account_both_fields_and_neither(
        self, storage: Storage, demo: Account
    ) -> None:
        both = await storage.update_account(DEMO_CDN, secret="new", disabled=True)
        assert both == dataclasses.replace(demo, secret="new", disabled=True)
        # No change requested: the current account comes back unchanged.
        assert await storage.update_account(DEMO_CDN) == both

    async def test_update_unknown_account_gives_none(self, storage: Storage, demo: Account) -> None:
        assert await storage.update_account(999, secret="x", disabled=True) is None
        assert await storage.list_accounts() == [demo]
