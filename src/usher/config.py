"""Settings from the environment and the command line, validated once at start."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from usher.durations import parse_duration
from usher.protocol.errors import ConfigError
from usher.storage import DEFAULT_DATABASE_URL
from usher.storage.base import MAX_PUBLISH_DENIALS
from usher.tickets.publishers import BruteForceLimit

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_CALLBACK_ALLOW = "127.0.0.0/8,::1"
DEFAULT_TOLERANCE = 300
#: An HTTP-streaming playback session lasts this long after its last request
#: (README, "Streaming-server integrations").
DEFAULT_SESSION_TTL = 120
#: SRS and OvenMediaEngine send no sign of life: their sessions end at their
#: end notice, or after this many seconds if the notice was lost.
DEFAULT_SESSION_MAX = 86_400
#: A session TTL below this would make a player's normal pauses between
#: requests (a segment is often 6-10 s) cost a new use each time.
MIN_SESSION_TTL = 10
#: Control-API bodies over 1 MiB are refused with 413 (README, "The control API").
MAX_BODY = 1024 * 1024
# Panel sign-in throttles (see usher.web.panel.limits for why these numbers).
DEFAULT_PANEL_ADDRESS_FAILURES = 10
DEFAULT_PANEL_ACCOUNT_FAILURES = 30
DEFAULT_PANEL_FAILURE_WINDOW = 600
DEFAULT_PANEL_ACCOUNT_LOCK = 300
#: Seconds a client has to send its request headers, then its body.
DEFAULT_HEADER_TIMEOUT = 10
DEFAULT_BODY_TIMEOUT = 30
#: Seconds of database reads one control-panel request may take
#: (``USHER_PANEL_QUERY_TIMEOUT``); see usher.storage.base.bounded_reads.
DEFAULT_PANEL_QUERY_TIMEOUT = 2.0
#: Open connections beyond which new ones are refused. Above the 4,096 of
#: the benchmark's overload curve (docs/benchmarks.md), which is well past
#: the point where more connections stop adding checks per second.
DEFAULT_MAX_CONNECTIONS = 8192


def parse_networks(text: str, setting: str) -> tuple[Network, ...]:
    """A comma-separated list of addresses and CIDR networks."""
    networks: list[Network] = []
    for part in text.split(","):
        entry = part.strip()
        if not entry:
            continue
        try:
            networks.append(_unmapped(ipaddress.ip_network(entry, strict=False)))
        except ValueError:
            raise ConfigError(
                f"{setting} holds {entry!r}, which is not an address or CIDR network; "
                "use a comma-separated list such as 127.0.0.1,10.0.0.0/8,::1."
            ) from None
    return tuple(networks)


_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def _unmapped(network: Network) -> Network:
    """An IPv4-mapped IPv6 network as the IPv4 network it maps.

    Callers' addresses are compared as IPv4 once unmapped, so ``::ffff:127.0.0.1``
    in a list must mean 127.0.0.1 to match them.
    """
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_MAPPED):
        mapped = network.network_address.ipv4_mapped
        assert mapped is not None  # inside ::ffff:0:0/96, so it maps
        return ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    return network


def parse_uri_pattern(text: str) -> re.Pattern[str] | None:
    """``USHER_URI_PATTERN``: a regular expression over the URI path with named
    groups ``app`` and ``video`` (and optionally ``appinst``); empty means the
    default layout."""
    if not text.strip():
        return None
    try:
        pattern = re.compile(text)
    except re.error as exc:
        raise ConfigError(
            f"USHER_URI_PATTERN is not a valid regular expression ({exc}); "
            r"write one such as ^/(?P<app>[^/]+)/(?P<appinst>[^/]+)/(?P<video>[^/]+)/[^/]+$."
        ) from None
    missing = [name for name in ("app", "video") if name not in pattern.groupindex]
    if missing:
        raise ConfigError(
            f"USHER_URI_PATTERN has no named group {' or '.join(missing)}; "
            "name the parts with (?P<app>...) and (?P<video>...)."
        )
    return pattern


def _int(
    env: Mapping[str, str], name: str, default: int, minimum: int, maximum: int | None = None
) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer; set a whole number.") from None
    if value < minimum:
        raise ConfigError(f"{name}={value} is too small; it must be at least {minimum}.")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name}={value} is too large; it must be at most {maximum:,}.")
    return value


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    """A positive number of seconds, fractions allowed (``0.5``)."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(
            f"{name}={raw!r} is not a number; set seconds, such as 2 or 0.5."
        ) from None
    if not 0 < value <= 3600:
        raise ConfigError(
            f"{name}={raw} is out of range; set a number of seconds above 0 and at most 3600."
        )
    return value


def _duration(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name, "")
    return None if raw.strip() == "" else parse_duration(raw, name)


def _callback_allow(env: Mapping[str, str]) -> tuple[Network, ...]:
    networks = parse_networks(
        env.get("USHER_CALLBACK_ALLOW", DEFAULT_CALLBACK_ALLOW), "USHER_CALLBACK_ALLOW"
    )
    if not networks:
        raise ConfigError(
            "USHER_CALLBACK_ALLOW is set but empty, so every playback callback would be "
            "refused; set it to the addresses of your streaming servers or proxy, such as "
            f"{DEFAULT_CALLBACK_ALLOW},10.0.0.0/8, or unset it for loopback only."
        )
    return networks


def _switch(env: Mapping[str, str], name: str) -> bool:
    """A 0/1 setting (unset is 0)."""
    raw = env.get(name, "").strip()
    if raw not in ("", "0", "1"):
        raise ConfigError(f"{name} must be 1 or 0, got {raw[:40]!r}.")
    return raw == "1"


def _ome_secret(env: Mapping[str, str]) -> str:
    """``USHER_OME_SECRET``: empty means admission requests are not signed."""
    raw = env.get("USHER_OME_SECRET", "")
    if raw != raw.strip():
        # Almost certainly a stray space or newline from an env file, which
        # would refuse every admission request as forged, silently.
        raise ConfigError(
            "USHER_OME_SECRET begins or ends with white space; set it to exactly the "
            "<SecretKey> of OvenMediaEngine's <AdmissionWebhooks>, without spaces around it."
        )
    return raw


_PUBLISH_URL = re.compile(
    r"rtmps?://(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]{2,45}\])"
    r"(?::(?P<port>[0-9]{1,5}))?"
)


def parse_publish_url(text: str) -> str:
    """``USHER_PUBLISH_URL``: the RTMP server encoders publish to, as the
    panel writes it in front of ``/<app>/<stream>``; ``""`` when unset."""
    url = text.strip().removesuffix("/")
    if not url:
        return ""
    match = _PUBLISH_URL.fullmatch(url)
    port = None if match is None else match.group("port")
    if match is None or (port is not None and not 0 < int(port) <= 65535):
        raise ConfigError(
            f"USHER_PUBLISH_URL={text[:200]!r} is not the address of an RTMP server; set "
            "rtmp:// or rtmps:// followed by the host name encoders publish to and, if it "
            "is not the default, its port, such as rtmp://live.example.com:1935, with no "
            "path (the panel adds /<app>/<stream>)."
        )
    return url


def _sqlite_synchronous(env: Mapping[str, str]) -> Literal["full", "normal"]:
    raw = env.get("USHER_SQLITE_SYNCHRONOUS", "").strip().lower()
    if raw in ("", "full"):
        return "full"
    if raw == "normal":
        return "normal"
    raise ConfigError(
        f"USHER_SQLITE_SYNCHRONOUS={raw[:20]!r} is not a choice; set full (the default: "
        "acknowledged writes survive power loss) or normal (faster; safe against a killed "
        "process, not against power loss)."
    )


#: Longest publish denial window and block: 30 days.
MAX_PUBLISH_SECONDS = 30 * 86_400


def _publish_limit(env: Mapping[str, str]) -> BruteForceLimit:
    default = BruteForceLimit()
    return BruteForceLimit(
        # The rule reads at most MAX_PUBLISH_DENIALS denials: a larger
        # number could never be reached, and would turn the rule off.
        denials=_int(env, "USHER_PUBLISH_MAX_DENIALS", default.denials, 1, MAX_PUBLISH_DENIALS),
        window=_int(env, "USHER_PUBLISH_DENIAL_WINDOW", default.window, 1, MAX_PUBLISH_SECONDS),
        block=_int(env, "USHER_PUBLISH_BLOCK", default.block, 1, MAX_PUBLISH_SECONDS),
    )


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    timestamp_tolerance: int = DEFAULT_TOLERANCE
    callback_allow: tuple[Network, ...] = field(
        default_factory=lambda: parse_networks(DEFAULT_CALLBACK_ALLOW, "USHER_CALLBACK_ALLOW")
    )
    max_body: int = MAX_BODY
    session_ttl: int = DEFAULT_SESSION_TTL
    session_max: int = DEFAULT_SESSION_MAX
    #: MediaMTX's ``runOnUnread`` calls ``/usher/check/done``: its sessions
    #: then last until that notice (at most ``session_max``), not ``session_ttl``.
    mediamtx_end_notice: bool = False
    #: ``USHER_URI_PATTERN``: how /usher/auth-request reads app and video from
    #: a URI; ``None`` is the default ``/<app>/<video path>/<file>`` layout.
    uri_pattern: re.Pattern[str] | None = None
    #: ``USHER_BENCH_ROUTES=1`` mounts ``GET /bench/constant`` (a constant 200
    #: that touches no database), the baseline of the benchmark suite, and
    #: ``GET /bench/threads`` (thread names by kernel thread id), its CPU
    #: split. Both answer any caller. Off by default: production has no use
    #: for them.
    bench_routes: bool = False
    #: ``USHER_MAX_WRITE_WAIT_MS``: once the oldest queued write has waited
    #: this long (on SQLite also: once a new write would not be committed
    #: within it), new writes are shed with code 1000 (HTTP 503).
    max_write_wait_ms: int = 500
    #: ``USHER_PANEL_TRUSTED_PROXIES``: the reverse proxies whose ``X-Real-IP``,
    #: ``X-Forwarded-For`` and ``X-Forwarded-Proto`` the panel believes. Empty:
    #: the panel believes no forwarding header, and the peer is the browser.
    #: Apart from ``callback_allow`` on purpose: a streaming server allowed to
    #: call the playback callbacks is not thereby a proxy in front of the panel.
    panel_trusted_proxies: tuple[Network, ...] = ()
    #: Failed panel sign-ins from one address (an IPv6 /64) within
    #: ``panel_failure_window`` seconds, after which that address's sign-ins
    #: are refused for ``panel_failure_window`` seconds.
    panel_address_failures: int = DEFAULT_PANEL_ADDRESS_FAILURES
    #: Failed panel password sign-ins for one cdn, from any addresses, within
    #: ``panel_failure_window`` seconds, after which that cdn's password
    #: sign-ins are refused for ``panel_account_lock`` seconds.
    panel_account_failures: int = DEFAULT_PANEL_ACCOUNT_FAILURES
    panel_failure_window: int = DEFAULT_PANEL_FAILURE_WINDOW
    panel_account_lock: int = DEFAULT_PANEL_ACCOUNT_LOCK
    #: ``USHER_HEADER_TIMEOUT`` and ``USHER_BODY_TIMEOUT``: seconds a client
    #: has to send its request headers, then its body, before the
    #: connection is answered 408 and closed (see usher.web.connections).
    header_timeout: int = DEFAULT_HEADER_TIMEOUT
    body_timeout: int = DEFAULT_BODY_TIMEOUT
    #: ``USHER_MAX_CONNECTIONS``: open connections beyond which a new one is
    #: answered 503 and closed at once.
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    #: ``USHER_PRUNE_ATTEMPTS_OLDER_THAN`` (``90d``): ``usher serve`` deletes
    #: attempts older than this many seconds in the background
    #: (:class:`usher.storage.retention.Pruner`); ``None``, the default,
    #: keeps every attempt.
    prune_attempts_older_than: int | None = None
    #: ``USHER_PANEL_QUERY_TIMEOUT``: seconds of database reads one panel
    #: request may take before they are stopped (and the page says so with
    #: a 503), so that no view holds the database for long.
    panel_query_timeout: float = DEFAULT_PANEL_QUERY_TIMEOUT
    #: ``USHER_REST_QUERY_TIMEOUT``: seconds of database reads one v2 REST
    #: request may take before they are stopped (answered 503 SERVER_BUSY),
    #: so that no listing holds the database for long.
    rest_query_timeout: float = DEFAULT_PANEL_QUERY_TIMEOUT
    #: ``USHER_SQLITE_SYNCHRONOUS``: ``full`` (the default: every group
    #: commit is fsynced, so an acknowledged write survives power loss) or
    #: ``normal`` (opt-in: in WAL mode safe against a killed process, but
    #: power loss or an OS crash may lose the last acknowledged writes).
    sqlite_synchronous: Literal["full", "normal"] = "full"
    #: ``USHER_OME_SECRET``: the ``<SecretKey>`` of OvenMediaEngine's
    #: AdmissionWebhooks. Set, ``/usher/ome`` refuses requests whose
    #: ``X-OME-Signature`` does not match; empty, it checks no signature.
    ome_secret: str = ""
    #: ``USHER_PUBLISH_URL``: the RTMP server the panel's Publishers page
    #: writes into encoder URLs (``rtmp://live.example.com:1935``); empty,
    #: ``rtmp://`` and the host name the panel was reached by.
    publish_url: str = ""
    #: ``USHER_PUBLISH_MAX_DENIALS``, ``USHER_PUBLISH_DENIAL_WINDOW`` and
    #: ``USHER_PUBLISH_BLOCK``: the brute-force rule of publishes (SPEC §6).
    publish_limit: BruteForceLimit = field(default_factory=BruteForceLimit)

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, database_url: str | None = None
    ) -> Settings:
        env = os.environ if env is None else env
        return cls(
            database_url=database_url or env.get("USHER_DATABASE_URL") or DEFAULT_DATABASE_URL,
            timestamp_tolerance=_int(env, "USHER_TIMESTAMP_TOLERANCE", DEFAULT_TOLERANCE, 1),
            callback_allow=_callback_allow(env),
            session_ttl=_int(env, "USHER_SESSION_TTL", DEFAULT_SESSION_TTL, MIN_SESSION_TTL),
            session_max=_int(env, "USHER_SESSION_MAX", DEFAULT_SESSION_MAX, MIN_SESSION_TTL),
            uri_pattern=parse_uri_pattern(env.get("USHER_URI_PATTERN", "")),
            bench_routes=env.get("USHER_BENCH_ROUTES", "").strip() == "1",
            mediamtx_end_notice=_switch(env, "USHER_MEDIAMTX_END_NOTICE"),
            max_write_wait_ms=_int(env, "USHER_MAX_WRITE_WAIT_MS", 500, 1),
            panel_trusted_proxies=parse_networks(
                env.get("USHER_PANEL_TRUSTED_PROXIES", ""), "USHER_PANEL_TRUSTED_PROXIES"
            ),
            panel_address_failures=_int(
                env, "USHER_PANEL_ADDRESS_FAILURES", DEFAULT_PANEL_ADDRESS_FAILURES, 1
            ),
            panel_account_failures=_int(
                env, "USHER_PANEL_ACCOUNT_FAILURES", DEFAULT_PANEL_ACCOUNT_FAILURES, 1
            ),
            panel_failure_window=_int(
                env, "USHER_PANEL_FAILURE_WINDOW", DEFAULT_PANEL_FAILURE_WINDOW, 1
            ),
            panel_account_lock=_int(env, "USHER_PANEL_ACCOUNT_LOCK", DEFAULT_PANEL_ACCOUNT_LOCK, 1),
            header_timeout=_int(env, "USHER_HEADER_TIMEOUT", DEFAULT_HEADER_TIMEOUT, 1),
            body_timeout=_int(env, "USHER_BODY_TIMEOUT", DEFAULT_BODY_TIMEOUT, 1),
            max_connections=_int(env, "USHER_MAX_CONNECTIONS", DEFAULT_MAX_CONNECTIONS, 1),
            prune_attempts_older_than=_duration(env, "USHER_PRUNE_ATTEMPTS_OLDER_THAN"),
            panel_query_timeout=_seconds(
                env, "USHER_PANEL_QUERY_TIMEOUT", DEFAULT_PANEL_QUERY_TIMEOUT
            ),
            rest_query_timeout=_seconds(
                env, "USHER_REST_QUERY_TIMEOUT", DEFAULT_PANEL_QUERY_TIMEOUT
            ),
            ome_secret=_ome_secret(env),
            sqlite_synchronous=_sqlite_synchronous(env),
            publish_url=parse_publish_url(env.get("USHER_PUBLISH_URL", "")),
            publish_limit=_publish_limit(env),
        )

    def __repr__(self) -> str:
        # The database URL may carry a password.
        return f"Settings(timestamp_tolerance={self.timestamp_tolerance}, ...)"
