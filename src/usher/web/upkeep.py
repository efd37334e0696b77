"""Session upkeep in the background of ``usher serve``.

A session past its expiry is already ended for every read (see
:mod:`usher.storage.sessions`); the sweep only writes the idle end down, so
that history, metrics and the open-sessions indexes stay small. It reads the
open sessions' expiry index and nothing else, ends at most
:data:`~usher.storage.base.SWEEP_BATCH` sessions per short write (fewer on
SQLite, whose writes it keeps to a few milliseconds), and every node may run
it (ending a session twice changes nothing).
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
        """End every session whose expiry had passed when the sweep began;
        how many."""
        # One instant for the whole sweep: sessions expiring meanwhile wait
        # for the next, so a sweep ends even when they expire as fast as it
        # ends them.
        now = self.state.now()
        total = 0
        while True:
            # A call may end fewer than asked while more remain (SQLite's
            # writes are cut short in time); only 0 means none is left.
            ended = await self.state.storage.sweep_sessions(now, SWEEP_BATCH)
            total += ended
            if ended == 0:
                break
        self.ended += total
        self.state.metrics.count_session_ends(total, EndReason.IDLE)
        return total
