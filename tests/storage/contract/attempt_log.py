"""The attempt log that the attempt listing and statistics sections query."""

from __future__ import annotations

import pytest

from tests.helpers import NOW, OTHER_CDN, make_ticket
from tests.storage.contract.base import ContractBase
from usher.storage.base import Storage
from usher.tickets.decision import decide
from usher.tickets.model import Account, AttemptFilter, CheckRequest

# The attempt log built by the ``attempt_log`` fixture, one row per attempt:
# (at, key, password, app, video, ip). Tickets: k1/p1 and k2/p2 of demo,
# k3/p3 of other. Index 4 belongs to ``other`` and must never show for demo.
LOG_ROWS: list[tuple[int, str, str, str, str, str]] = [
    (NOW, "k1", "p1", "demo-live", "a", "10.0.0.1"),  # 0 allowed
    (NOW + 10, "k1", "bad", "demo-live", "a", "10.0.0.1"),  # 1 Invalid Auth Token
    (NOW + 20, "k2", "p2", "demo-live", "b", "10.0.0.2"),  # 2 allowed
    (NOW + 30, "k2", "p2", "demo-vod", "b", "10.0.0.3"),  # 3 Invalid Application
    (NOW + 40, "k3", "p3", "other-live", "a", "10.0.0.2"),  # 4 allowed, other's
    (NOW + 50, "k1", "p1", "demo-live", "a", "10.0.0.2"),  # 5 allowed
]
DEMO_ROWS = [0, 1, 2, 3, 5]

ATTEMPT_FILTERS: list[tuple[str, AttemptFilter, list[int]]] = [
    ("none", AttemptFilter(), DEMO_ROWS),
    ("key", AttemptFilter(key="k1"), [0, 1, 5]),
    ("password", AttemptFilter(password="bad"), [1]),
    ("app", AttemptFilter(app="demo-vod"), [3]),
    ("video", AttemptFilter(video="b"), [2, 3]),
    ("ip", AttemptFilter(ip="10.0.0.2"), [2, 5]),
    ("success-true", AttemptFilter(success=True), [0, 2, 5]),
    ("success-false", AttemptFilter(success=False), [1, 3]),
    # Bounds are inclusive: an attempt exactly at start or end is in.
    ("start", AttemptFilter(start=NOW + 20), [2, 3, 5]),
    ("end", AttemptFilter(end=NOW + 20), [0, 1, 2]),
    ("start-equals-end", AttemptFilter(start=NOW + 20, end=NOW + 20), [2]),
    ("empty-range", AttemptFilter(start=NOW + 21, end=NOW + 29), []),
    ("combined", AttemptFilter(key="k1", success=True, ip="10.0.0.2"), [5]),
    ("no-match", AttemptFilter(key="nope"), []),
    # Another account's key gives nothing, even though the attempt exists.
    ("foreign-key", AttemptFilter(key="k3"), []),
]


class AttemptLogFixture(ContractBase):
    """Provides ``attempt_log``: ``LOG_ROWS`` recorded in order."""

    @pytest.fixture
    async def attempt_log(self, storage: Storage, demo: Account, other: Account) -> list[int]:
        """Record ``LOG_ROWS`` in order; the attempt id of each row."""
        await storage.insert_ticket(make_ticket(key="k1", password="p1", video="a"))
        await storage.insert_ticket(make_ticket(key="k2", password="p2", video="b"))
        await storage.insert_ticket(
            make_ticket(key="k3", cdn=OTHER_CDN, password="p3", app="other-live", video="a")
        )
        ids = []
        for at, key, password, app, video, ip in LOG_ROWS:
            request = CheckRequest(key=key, password=password, app=app, video=video, ip=ip)
            ids.append((await storage.record_check(request, decide, at)).attempt_id)
        return ids
