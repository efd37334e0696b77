"""What every section of the storage contract builds on.

Each section is a mixin of :class:`ContractBase`, so it can name the
``storage``, ``demo`` and ``other`` fixtures; a backend's test class supplies
the open storage. Like the rest of the contract this talks only to the
:class:`~usher.storage.base.Storage` interface.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar

import pytest

from tests.helpers import DEMO_CDN, NOW, OTHER_CDN
from usher.storage.base import Storage
from usher.tickets.model import MAX_PAGE_ROWS, Account

#: Far above any single operation on a working backend; turns a hang into a failure.
HANG_LIMIT_S = 2
#: One page more than a listing may hold, and a few rows over.
OVER_CAP = MAX_PAGE_ROWS + 5


class ContractBase:
    """The fixtures every section of the contract uses.

    Subclasses override ``storage`` to yield an open, empty backend and close
    it afterwards. Closing must tolerate an already closed storage, because
    some tests close (and reopen) it themselves. They also set
    ``expected_schema_version`` to the newest schema the backend ships.
    """

    # The contract is async throughout; the mark reaches every subclass.
    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.anyio]

    expected_schema_version: ClassVar[int]

    @pytest.fixture
    def storage(self, *args: Any, **kwargs: Any) -> AsyncIterator[Storage]:
        # Typed like the async-generator overrides (which may take any
        # fixtures they need), so mypy checks every override against it.
        raise NotImplementedError("a backend's test class provides an open storage")

    @pytest.fixture
    async def demo(self, storage: Storage) -> Account:
        return await storage.create_account(
            username="demo", api_key="DEMOKEY", secret="demo-secret", cdn=DEMO_CDN, now=NOW
        )

    @pytest.fixture
    async def other(self, storage: Storage) -> Account:
        return await storage.create_account(
            username="other", api_key="OTHERKEY", secret="other-secret", cdn=OTHER_CDN, now=NOW
        )
