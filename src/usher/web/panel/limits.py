"""Throttling of failed panel sign-ins (kept in :class:`~usher.web.state.AppState`)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass(slots=True)
class SignInLimiter:
    """Failed sign-ins per client address, in a fixed window.

    Per process: behind a load balancer each node counts on its own, which
    still caps guessing at a few attempts per minute per node. Account
    secrets are 256-bit; this protects the (possibly weak) panel passwords.
    """

    limit: int = 10
    window: int = 600
    max_clients: int = 10_000
    _failures: dict[str, tuple[float, int]] = field(default_factory=dict)

    def blocked(self, client: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        started, count = self._failures.get(client, (now, 0))
        if now - started >= self.window:
            self._failures.pop(client, None)
            return False
        return count >= self.limit

    def failed(self, client: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if len(self._failures) >= self.max_clients:
            # Under a flood of addresses, forget the oldest half rather than
            # grow without bound.
            oldest = sorted(self._failures.items(), key=lambda item: item[1][0])
            for key, _ in oldest[: self.max_clients // 2]:
                del self._failures[key]
        started, count = self._failures.get(client, (now, 0))
        if now - started >= self.window:
            started, count = now, 0
        self._failures[client] = (started, count + 1)

    def succeeded(self, client: str) -> None:
        self._failures.pop(client, None)
