"""Throttling of failed panel sign-ins (kept in :class:`~usher.web.state.AppState`).

Two throttles, and a sign-in must pass both:

* **Per address** (10 failures in 10 minutes by default): one browser, or one
  IPv6 /64, cannot guess quickly. Which address a request comes from is
  :func:`usher.web.callers.panel_client`'s answer.
* **Per account** (30 failed *password* sign-ins for one cdn in 10 minutes,
  then a 5-minute lock, by default): many addresses together cannot guess
  one account's password quickly either. It is keyed by the cdn as typed
  (canonical digits), so an unknown cdn is throttled exactly like a real one
  and a 429 tells nothing about which accounts exist.

The trade-off of the second: anyone can make the failures that lock an
account, so an attacker can keep its owner out. That is why it is bounded
above the per-address one (an attacker needs several addresses to reach
it at all), why the lock is short and starts a fresh count when it ends
(so a lock never outlives the attack that keeps it up), and why it
guards only password sign-ins: the API key and secret are 256-bit, so
guessing them is hopeless whatever the rate, and an owner kept out of the
password form can still sign in with them. The ceiling an attacker with
unlimited addresses gets is then about ``account_failures`` password guesses
per ``account_lock`` seconds per account, for each Usher process.

Every attempt counts as a failure *before* its credentials are checked, and
a success gives it back: otherwise a burst of concurrent guesses would all
pass the check before the first of them failed.

Per process: behind a load balancer each node counts on its own, so N nodes
allow N times the guesses. Memory is bounded: each throttle keeps at most
``max_keys`` keys and, when full, forgets unlocked keys before locked ones.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from usher.config import Settings
from usher.tickets.ipnet import parse_client_address

#: An IPv6 subscriber is usually given a whole /64, so every address in it
#: counts as one (or a single host could use 2⁶⁴ fresh addresses).
_V6_SUBSCRIBER_BITS = 64


@dataclass(slots=True)
class _Tally:
    started: float
    failures: int = 0
    #: When ``failures`` reached the limit; ``None`` while below it.
    locked_at: float | None = None


@dataclass(slots=True)
class FailureThrottle:
    """After ``limit`` failures for one key within ``window`` seconds, the
    key is refused for ``lock`` seconds; then it starts afresh."""

    limit: int
    window: float
    lock: float
    max_keys: int = 10_000
    _tallies: dict[str, _Tally] = field(default_factory=dict)

    def wait(self, key: str, now: float) -> float:
        """Seconds until ``key`` may try again; 0 when it may now."""
        tally = self._current(key, now)
        if tally is None or tally.locked_at is None:
            return 0.0
        return tally.locked_at + self.lock - now

    def attempt(self, key: str, now: float) -> None:
        """Count an attempt for ``key`` as failed (:meth:`refund` if it was not)."""
        tally = self._current(key, now)
        if tally is None:
            self._make_room(now)
            tally = self._tallies[key] = _Tally(now)
        tally.failures += 1
        if tally.failures >= self.limit and tally.locked_at is None:
            tally.locked_at = now

    def refund(self, key: str) -> None:
        """Take back one :meth:`attempt` that turned out to succeed.

        One attempt only, not the whole tally: an account of one's own must
        not be a way to wipe the failures one's address made against others.
        """
        tally = self._tallies.get(key)
        if tally is None or tally.failures <= 0:
            return
        tally.failures -= 1
        if tally.failures < self.limit:
            tally.locked_at = None

    def __len__(self) -> int:
        return len(self._tallies)

    def _current(self, key: str, now: float) -> _Tally | None:
        tally = self._tallies.get(key)
        if tally is not None and self._over(tally, now):
            del self._tallies[key]
            return None
        return tally

    def _over(self, tally: _Tally, now: float) -> bool:
        if tally.locked_at is not None:
            return now - tally.locked_at >= self.lock
        return now - tally.started >= self.window

    def _make_room(self, now: float) -> None:
        if len(self._tallies) < self.max_keys:
            return
        live = [(key, tally) for key, tally in self._tallies.items() if not self._over(tally, now)]
        if len(live) >= self.max_keys // 2:
            # Under a flood of keys, forget half: first the keys still
            # counting (oldest first), locked ones only when nothing else
            # is left (those closest to unlocking first). Forgetting locks
            # first would let a flood of made-up cdns unlock an account.
            live.sort(
                key=lambda item: (
                    item[1].locked_at is not None,
                    item[1].started if item[1].locked_at is None else item[1].locked_at,
                )
            )
            live = live[len(live) - self.max_keys // 2 :]
        self._tallies = dict(live)


def address_key(client: str) -> str:
    """The per-address throttle's key for a client address: the address
    itself, or its /64 for IPv6."""
    address = parse_client_address(client)
    if address is None:
        return client
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, _V6_SUBSCRIBER_BITS), strict=False))
    return str(address)


@dataclass(slots=True)
class SignInLimiter:
    """Both sign-in throttles of one process."""

    by_address: FailureThrottle
    by_account: FailureThrottle

    @classmethod
    def from_settings(cls, settings: Settings) -> SignInLimiter:
        window = settings.panel_failure_window
        return cls(
            FailureThrottle(settings.panel_address_failures, window, window),
            FailureThrottle(settings.panel_account_failures, window, settings.panel_account_lock),
        )
