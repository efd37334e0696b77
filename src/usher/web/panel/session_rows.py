"""Sessions as the panel's pages show them (the ticket's page, the sessions
page, the kick confirmation)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from usher.tickets.model import PlaybackSession


@dataclass(frozen=True, slots=True)
class SessionRow:
    """A session as the panel shows it at ``now``: an open one's duration
    runs to now, and one past its expiry has ended ``idle``."""

    session: PlaybackSession
    ended_at: int | None
    end_reason: str | None
    seconds: int

    @property
    def open(self) -> bool:
        return self.ended_at is None

    @property
    def cursor(self) -> str:
        """This row as a page link's position: ``<started_at>-<id>``."""
        return f"{self.session.started_at}-{self.session.id}"


def rows_of(sessions: Iterable[PlaybackSession], now: int) -> list[SessionRow]:
    rows = []
    for session in sessions:
        ending = session.ending(now)
        rows.append(
            SessionRow(
                session,
                None if ending is None else ending[0],
                None if ending is None else ending[1],
                session.seconds(now),
            )
        )
    return rows
