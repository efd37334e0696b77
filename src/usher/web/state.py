"""What the handlers share: settings, storage, metrics and the clock."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from starlette.requests import Request

from usher.config import Settings
from usher.metrics import Metrics
from usher.storage.base import Storage
from usher.storage.retention import Pruner
from usher.web.memory import Playback, PublishGuard
from usher.web.panel.limits import SignInLimiter
from usher.web.publishing import PublishLogWriter

if TYPE_CHECKING:  # the overview's module needs this one: import for types only
    from usher.web.panel.overview import ChartCaches


@dataclass
class AppState:
    settings: Settings
    storage: Storage
    metrics: Metrics = field(default_factory=Metrics)
    # Failed control-panel sign-ins per address and per account (this process only).
    sign_in_limiter: SignInLimiter = field(init=False)
    # Injected so tests can move time (expiry, timestamp window) without sleeping.
    clock: Callable[[], float] = time.time
    # What storage said a moment ago about playback sessions (this process only).
    playback: Playback = field(default_factory=Playback)
    #: Blocks of the publish brute-force rule, and the hashing queue (this process only).
    publishes: PublishGuard = field(default_factory=PublishGuard)
    #: Writes the publish log in groups (see usher.web.publishing).
    publish_log: PublishLogWriter = field(init=False)
    #: The background pruner, while ``USHER_PRUNE_ATTEMPTS_OLDER_THAN`` runs one.
    pruner: Pruner | None = None
    #: The overview's reused charts (this process only), made at first use.
    charts: ChartCaches | None = None

    def __post_init__(self) -> None:
        self.sign_in_limiter = SignInLimiter.from_settings(self.settings)
        self.publish_log = PublishLogWriter(self.storage)

    def now(self) -> int:
        return int(self.clock())


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.usher
    return state
