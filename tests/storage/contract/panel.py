"""The storage contract: control-panel sign-in (passwords and sessions)."""

from __future__ import annotations

import dataclasses

import pytest

from tests.helpers import DEMO_CDN, NOW, OTHER_CDN
from tests.storage.contract.base import ContractBase
from usher.protocol.errors import AlreadyExists
from usher.storage.base import PanelSession, PanelSessionFilter, Storage
from usher.tickets.model import Account


class PanelContract(ContractBase):
    """Control-panel passwords and sign-in sessions."""

    async def test_panel_password_set_replace_clear(
        self, storage: Storage, demo: Account, other: Account
    ) -> None:
        assert await storage.get_panel_password(DEMO_CDN) is None
        assert await storage.set_panel_password(DEMO_CDN, "scrypt$first", now=NOW)
        assert await storage.get_panel_password(DEMO_CDN) == "scrypt$first"
        assert await storage.set_panel_password(DEMO_CDN, "scrypt$second", now=NOW + 1)
        assert await storage.get_panel_password(DEMO_CDN) == "scrypt$second"
        assert await storage.get_panel_password(OTHER_CDN) is None
        assert await storage.set_panel_password(DEMO_CDN, None, now=NOW + 2)
        assert await storage.get_panel_password(DEMO_CDN) is None
        # Clearing twice is fine; an unknown account is reported, not created.
        assert await storage.set_panel_password(DEMO_CDN, None, now=NOW + 3)
        assert not await storage.set_panel_password(999, "scrypt$x", now=NOW)
        assert await storage.get_panel_password(999) is None

    async def test_panel_session_round_trip_and_touch(
        self, storage: Storage, demo: Account
    ) -> None:
        session = PanelSession(b"\x00\xff" * 16, DEMO_CDN, NOW, NOW)
        await storage.create_panel_session(session)
        assert await storage.get_panel_session(session.token_hash) == session
        assert await storage.get_panel_session(b"\x00" * 32) is None
        await storage.touch_panel_session(session.token_hash, now=NOW + 30)
        touched = dataclasses.replace(session, seen_at=NOW + 30)
        assert await storage.get_panel_session(session.token_hash) == touched
        # A late touch from another node never moves seen_at back.
        await storage.touch_panel_session(session.token_hash, now=NOW + 10)
        assert await storage.get_panel_session(session.token_hash) == touched
        # Touching an unknown token does nothing (and does not create one).
        await storage.touch_panel_session(b"\x01" * 32, now=NOW)
        assert await storage.get_panel_session(b"\x01" * 32) is None

    async def test_panel_session_tokens_are_unique(self, storage: Storage, demo: Account) -> None:
        session = PanelSession(b"s" * 32, DEMO_CDN, NOW, NOW)
        await storage.create_panel_session(session)
        with pytest.raises(AlreadyExists):
            await storage.create_panel_session(dataclasses.replace(session, created_at=NOW + 1))
        assert await storage.get_panel_session(session.token_hash) == session

    async def test_panel_sessions_delete_by_any_criterion(
        self, storage: Storage, demo: Account, other: Account
    ) -> None:
        sessions = {
            "fresh": PanelSession(b"a" * 32, DEMO_CDN, NOW, NOW + 100),
            "idle": PanelSession(b"b" * 32, DEMO_CDN, NOW, NOW + 10),
            "old": PanelSession(b"c" * 32, OTHER_CDN, NOW - 1000, NOW + 100),
            "other": PanelSession(b"d" * 32, OTHER_CDN, NOW, NOW + 100),
        }
        for session in sessions.values():
            await storage.create_panel_session(session)

        async def left() -> set[str]:
            return {
                name
                for name, s in sessions.items()
                if await storage.get_panel_session(s.token_hash) is not None
            }

        assert await storage.delete_panel_sessions(PanelSessionFilter()) == 0
        assert await left() == set(sessions)
        # Expiry: idle since before, or created before; either one is enough.
        assert (
            await storage.delete_panel_sessions(
                PanelSessionFilter(seen_before=NOW + 50, created_before=NOW)
            )
            == 2
        )
        assert await left() == {"fresh", "other"}
        assert (
            await storage.delete_panel_sessions(
                PanelSessionFilter(token_hash=sessions["fresh"].token_hash)
            )
            == 1
        )
        assert (
            await storage.delete_panel_sessions(
                PanelSessionFilter(token_hash=sessions["fresh"].token_hash)
            )
            == 0
        )
        assert await left() == {"other"}
        assert await storage.delete_panel_sessions(PanelSessionFilter(cdn=DEMO_CDN)) == 0
        assert await storage.delete_panel_sessions(PanelSessionFilter(cdn=OTHER_CDN)) == 1
        assert await left() == set()

    async def test_panel_state_survives_reopen(self, storage: Storage, demo: Account) -> None:
        session = PanelSession(b"r" * 32, DEMO_CDN, NOW, NOW)
        await storage.create_panel_session(session)
        assert await storage.set_panel_password(DEMO_CDN, "scrypt$kept", now=NOW)
        await storage.close()
        await storage.open()
        assert await storage.get_panel_session(session.token_hash) == session
        assert await storage.get_panel_password(DEMO_CDN) == "scrypt$kept"
