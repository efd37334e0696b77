"""Settings from the environment and the command line, validated once at start."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from usher.protocol.errors import ConfigError
from usher.storage import DEFAULT_DATABASE_URL

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_CALLBACK_ALLOW = "127.0.0.0/8,::1"
DEFAULT_TOLERANCE = 300
#: SPEC §2: bodies over 1 MiB are refused with 413.
MAX_BODY = 1024 * 1024


def parse_networks(text: str, setting: str) -> tuple[Network, ...]:
    """A comma-separated list of addresses and CIDR networks."""
    networks: list[Network] = []
    for part in text.split(","):
        entry = part.strip()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ConfigError(
                f"{setting} holds {entry!r}, which is not an address or CIDR network; "
                "use a comma-separated list such as 127.0.0.1,10.0.0.0/8,::1."
            ) from None
    return tuple(networks)


def _int(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer; set a whole number.") from None
    if value < minimum:
        raise ConfigError(f"{name}={value} is too small; it must be at least {minimum}.")
    return value


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    timestamp_tolerance: int = DEFAULT_TOLERANCE
    callback_allow: tuple[Network, ...] = field(
        default_factory=lambda: parse_networks(DEFAULT_CALLBACK_ALLOW, "USHER_CALLBACK_ALLOW")
    )
    max_body: int = MAX_BODY

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, database_url: str | None = None
    ) -> Settings:
        env = os.environ if env is None else env
        return cls(
            database_url=database_url or env.get("USHER_DATABASE_URL") or DEFAULT_DATABASE_URL,
            timestamp_tolerance=_int(env, "USHER_TIMESTAMP_TOLERANCE", DEFAULT_TOLERANCE, 1),
            callback_allow=parse_networks(
                env.get("USHER_CALLBACK_ALLOW", DEFAULT_CALLBACK_ALLOW), "USHER_CALLBACK_ALLOW"
            ),
        )

    def __repr__(self) -> str:
        # The database URL may carry a password.
        return f"Settings(timestamp_tolerance={self.timestamp_tolerance}, ...)"
