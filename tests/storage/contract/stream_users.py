"""The storage contract: stream users (publishers, SPEC §6)."""

from __future__ import annotations

import dataclasses

import pytest

from tests.helpers import DEMO_CDN, NOW, OTHER_CDN
from tests.storage.contract.base import ContractBase
from usher.storage.base import Storage
from usher.tickets.model import Account
from usher.tickets.publishers import StreamUser, StreamUserName, StreamUserSettings

NO_SETTINGS = StreamUserSettings()
SETTINGS = StreamUserSettings(
    record=True,
    record_type="flv",
    segment_type="duration",
    segment_value=3600,
    save_folder="rec/",
    playlist_count=5,
    playlist_timeout=0,
    enable_dvr=False,
    ga_key="UA-1",
)


def entry(
    app: str = "demo-live",
    stream: str = "cam",
    user: str | None = "alice",
    *,
    cdn: int = DEMO_CDN,
    pass_hash: str | None = "scrypt$one",
    settings: StreamUserSettings = NO_SETTINGS,
    now: int = NOW,
) -> StreamUser:
    return StreamUser(0, cdn, app, stream, user, pass_hash if user else None, settings, now, now)


class StreamUsersContract(ContractBase):
    """Saving, replacing, listing, removing and the publish lookup."""

    async def test_save_returns_the_row_with_its_settings(
        self, storage: Storage, demo: Account
    ) -> None:
        saved = await storage.save_stream_user(entry(settings=SETTINGS))
        assert saved.id > 0
        assert saved == dataclasses.replace(entry(settings=SETTINGS), id=saved.id)
        assert await storage.get_stream_user(DEMO_CDN, id=saved.id) == saved
        name = StreamUserName("demo-live", "cam", "alice")
        assert await storage.get_stream_user(DEMO_CDN, name=name) == saved

    async def test_same_name_replaces_pass_and_settings(
        self, storage: Storage, demo: Account
    ) -> None:
        first = await storage.save_stream_user(entry(settings=SETTINGS))
        second = await storage.save_stream_user(entry(pass_hash="scrypt$two", now=NOW + 5))
        assert second.id == first.id
        assert second.pass_hash == "scrypt$two"
        assert second.settings == StreamUserSettings()
        assert (second.created_at, second.updated_at) == (NOW, NOW + 5)
        assert await storage.list_stream_users(DEMO_CDN) == [second]

    async def test_open_entry_is_one_value(self, storage: Storage, demo: Account) -> None:
        first = await storage.save_stream_user(entry(user=None))
        again = await storage.save_stream_user(entry(user=None, settings=SETTINGS, now=NOW + 1))
        assert again.id == first.id and again.user is None and again.pass_hash is None
        assert again.settings == SETTINGS
        named = await storage.save_stream_user(entry())
        assert named.id != first.id
        open_name = StreamUserName("demo-live", "cam", None)
        assert await storage.get_stream_user(DEMO_CDN, name=open_name) == again
        assert [u.user for u in await storage.list_stream_users(DEMO_CDN)] == [None, "alice"]

    async def test_list_filters_and_order(self, storage: Storage, demo: Account) -> None:
        for app, stream, user in [
            ("demo-live", "cam", "bob"),
            ("demo-b", "x", "alice"),
            ("demo-live", "*", "alice"),
            ("demo-live", "cam", "alice"),
        ]:
            await storage.save_stream_user(entry(app, stream, user))
        names = [(u.app, u.stream, u.user) for u in await storage.list_stream_users(DEMO_CDN)]
        assert names == [
            ("demo-b", "x", "alice"),
            ("demo-live", "*", "alice"),
            ("demo-live", "cam", "alice"),
            ("demo-live", "cam", "bob"),
        ]
        by_app = await storage.list_stream_users(DEMO_CDN, app="demo-live")
        assert len(by_app) == 3
        by_both = await storage.list_stream_users(DEMO_CDN, app="demo-live", stream="cam")
        assert [u.user for u in by_both] == ["alice", "bob"]
        assert await storage.list_stream_users(DEMO_CDN, stream="nope") == []

    async def test_remove_by_id_or_name(self, storage: Storage, demo: Account) -> None:
        one = await storage.save_stream_user(entry())
        two = await storage.save_stream_user(entry(user=None))
        assert await storage.remove_stream_user(DEMO_CDN, id=one.id)
        assert not await storage.remove_stream_user(DEMO_CDN, id=one.id)
        assert not await storage.remove_stream_user(
            DEMO_CDN, name=StreamUserName("demo-live", "cam", "alice")
        )
        assert await storage.remove_stream_user(
            DEMO_CDN, name=StreamUserName("demo-live", "cam", None)
        )
        assert await storage.get_stream_user(DEMO_CDN, id=two.id) is None
        assert await storage.list_stream_users(DEMO_CDN) == []

    async def test_naming_both_or_neither_is_refused(self, storage: Storage, demo: Account) -> None:
        name = StreamUserName("demo-live", "cam", "alice")
        with pytest.raises(ValueError, match="exactly one"):
            await storage.get_stream_user(DEMO_CDN)
        with pytest.raises(ValueError, match="exactly one"):
            await storage.remove_stream_user(DEMO_CDN, id=1, name=name)

    async def test_accounts_are_isolated(
        self, storage: Storage, demo: Account, other: Account
    ) -> None:
        mine = await storage.save_stream_user(entry())
        theirs = await storage.save_stream_user(entry("other-live", cdn=OTHER_CDN))
        name = StreamUserName("demo-live", "cam", "alice")
        assert await storage.get_stream_user(OTHER_CDN, id=mine.id) is None
        assert await storage.get_stream_user(OTHER_CDN, name=name) is None
        assert not await storage.remove_stream_user(OTHER_CDN, id=mine.id)
        assert not await storage.remove_stream_user(OTHER_CDN, name=name)
        assert await storage.list_stream_users(OTHER_CDN) == [theirs]
        assert await storage.list_stream_users(DEMO_CDN) == [mine]

    async def test_unstorable_text_is_stored_as_replacement_characters(
        self, storage: Storage, demo: Account
    ) -> None:
        odd = "c\x00a\ud800m"
        settings = StreamUserSettings(ga_key=odd)
        saved = await storage.save_stream_user(entry(stream=odd, user=odd, settings=settings))
        shown = "c\ufffda\ufffdm"
        assert (saved.stream, saved.user, saved.settings.ga_key) == (shown, shown, shown)
        for text in (odd, shown):
            name = StreamUserName("demo-live", text, text)
            assert await storage.get_stream_user(DEMO_CDN, name=name) == saved
        assert await storage.list_stream_users(DEMO_CDN, stream=odd) == [saved]
        assert await storage.stream_users_for("demo-live", odd) == [saved]

    async def test_publish_lookup_reads_exact_and_every_stream(
        self, storage: Storage, demo: Account, other: Account
    ) -> None:
        exact = await storage.save_stream_user(entry())
        every = await storage.save_stream_user(entry(stream="*", user="bob"))
        await storage.save_stream_user(entry(stream="other"))
        await storage.save_stream_user(entry(app="demo-vod"))
        await storage.save_stream_user(entry("other-live", cdn=OTHER_CDN))
        found = await storage.stream_users_for("demo-live", "cam")
        assert sorted(found, key=lambda u: u.id) == [exact, every]
        # '*' as a published stream name matches only '*' entries literally.
        assert await storage.stream_users_for("demo-live", "*") == [every]
        assert await storage.stream_users_for("demo-nothing", "cam") == []

    async def test_publish_lookup_leaves_out_disabled_accounts(
        self, storage: Storage, demo: Account
    ) -> None:
        saved = await storage.save_stream_user(entry())
        await storage.update_account(DEMO_CDN, disabled=True)
        assert await storage.stream_users_for("demo-live", "cam") == []
        assert await storage.list_stream_users(DEMO_CDN) == [saved]
        await storage.update_account(DEMO_CDN, disabled=False)
        assert await storage.stream_users_for("demo-live", "cam") == [saved]
