"""Session upkeep in the background of ``usher serve``.

A session past its expiry is already ended for every read (see
:mod:`usher.storage.sessions`); the sweep only writes the idle end down, so
that history, metrics and the open-sessions indexes stay small. It reads the
open sessions' expiry index and nothing else, ends at most
:data:`~usher.storage.base.SWEEP_BATCH` sessions per short write, and every
node may run it (ending a session twice changes nothing).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from usher.protocol.errors import StorageError
from usher.storage.base import SWEEP_BATCH
from usher.tickets.model import EndReason
from usher.web.state import AppState

log = logging.getLogger("usher.sessions")

#: Seconds between sweeps: idle ends are written down this late at most.
SWEEP_EVERY: Final = 5.0
#: Seconds to wait after the storage failed.
SWEEP_RETRY: Final = 30.0


class SessionSweeper:
    def __init__(self, state: AppState, *, every: float = SWEEP_EVERY) -> None:
        self.state = state
        self.every = every
        #: Sessions this sweeper ended (for tests and metrics).
        self.ended = 0

    async def run(self) -> None:
        """Sweep until cancelled."""
        while True:
            try:
                await self.sweep()
            except StorageError as exc:
                log.warning("Ending idle sessions paused: %s", exc)
                await asyncio.sleep(SWEEP_RETRY)
                continue
            except Exception:
                # A bug must not end the upkeep for the rest of the process's life.
                log.exception("Ending idle sessions failed; trying again later.")
                await asyncio.sleep(SWEEP_RETRY)
                continue
            await asyncio.sleep(self.every)

    async def sweep(self) -> int:
        """End every session whose expiry has passed; how many."""
        total = 0
        while True:
            ended = await self.state.storage.sweep_sessions(self.state.now(), SWEEP_BATCH)
            total += ended
            if ended < SWEEP_BATCH:
                break
        self.ended += total
        self.state.metrics.count_session_ends(total, EndReason.IDLE)
        return total
