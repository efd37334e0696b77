"""The storage contract: what every backend must do, written once.

Each module holds one section of the contract as a mixin of
:class:`~tests.storage.contract.base.ContractBase`; :class:`StorageContract`
combines them. The sections talk only to the
:class:`~usher.storage.base.Storage` interface, so each backend reuses them
by inheritance and supplies an open storage through the ``storage`` fixture
(``TestSQLite`` and ``TestPostgres`` in tests/storage/test_contract.py).
Nothing backend-specific belongs here: no SQL, no driver imports, no file
paths.

Time is a fixed ``NOW`` passed explicitly, never the real clock, so expiry
boundaries are exact and the suite is deterministic.
"""

from __future__ import annotations

from tests.storage.contract.accounts import AccountsContract
from tests.storage.contract.attempts import AttemptsContract
from tests.storage.contract.busy_counts import BusyCountsContract, PanelCountsContract
from tests.storage.contract.checks import ChecksContract
from tests.storage.contract.explorer import ExplorerContract
from tests.storage.contract.lifecycle import LifecycleContract
from tests.storage.contract.live_timeline import LiveTimelineContract
from tests.storage.contract.panel import PanelContract
from tests.storage.contract.publish_log import PublishLogContract
from tests.storage.contract.rest_storage import RestStorageContract
from tests.storage.contract.session_pages import SessionPagesContract
from tests.storage.contract.sessions import SessionContract
from tests.storage.contract.signatures import SignaturesContract
from tests.storage.contract.statistics import StatisticsContract
from tests.storage.contract.stream_users import StreamUsersContract
from tests.storage.contract.tickets import TicketsContract


class StorageContract(
    LifecycleContract,
    AccountsContract,
    SignaturesContract,
    TicketsContract,
    ChecksContract,
    AttemptsContract,
    BusyCountsContract,
    PanelCountsContract,
    StatisticsContract,
    LiveTimelineContract,
    ExplorerContract,
    PanelContract,
    SessionContract,
    SessionPagesContract,
    StreamUsersContract,
    PublishLogContract,
    RestStorageContract,
):
    """Behaviour every :class:`~usher.storage.base.Storage` backend must show."""


__all__ = ["StorageContract"]
