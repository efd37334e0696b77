"""Reading a ``postgresql://`` database URL: libpq settings plus Usher's pool settings.

The URL is what libpq accepts (``postgresql://user:pass@host:port/db?sslmode=…``)
with a few extra query parameters that size the node's connection pool. Those
are taken out before the rest reaches libpq, which would refuse them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict

from usher.protocol.errors import ConfigError

SCHEMES: Final = ("postgresql", "postgres")


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """How one Usher node talks to PostgreSQL (see docs/scaling.md)."""

    #: Connections kept open while idle; the first requests after start need
    #: no connection set-up.
    min_size: int = 2
    #: Connections at most. Every node of a cluster holds up to this many, so
    #: nodes * max_size must stay below the server's ``max_connections``.
    max_size: int = 10
    #: Seconds a request waits for a free connection before it is answered
    #: with code 1000 (saturated) or 4 (database unreachable).
    timeout: float = 5.0
    #: Requests allowed to queue for a connection; beyond that, code 1000 at
    #: once instead of a growing queue (the SQLite backend's queue bound).
    max_waiting: int = 20_000
    #: Milliseconds one statement may run (``statement_timeout``). Also bounds
    #: how long a check waits for another node's lock on the same ticket.
    statement_timeout_ms: int = 10_000


#: URL parameter -> (PoolSettings field, smallest value allowed).
_POOL_PARAMS: Final = {
    "pool_min_size": ("min_size", 0),
    "pool_max_size": ("max_size", 1),
    "pool_timeout": ("timeout", 0.1),
    "pool_max_waiting": ("max_waiting", 1),
    "statement_timeout_ms": ("statement_timeout_ms", 100),
}


@dataclass(frozen=True, slots=True)
class PostgresTarget:
    """A parsed database URL: what libpq gets, the pool settings, and a
    password-free name for messages."""

    conninfo: str
    pool: PoolSettings
    display: str


def _number(name: str, raw: str, minimum: float) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(
            f"The database URL sets {name}={raw!r}, which is not a number; give a number."
        ) from None
    if value < minimum:
        raise ConfigError(f"The database URL sets {name}={raw}; it must be at least {minimum:g}.")
    return value


def parse_url(url: str) -> PostgresTarget:
    """Split ``url`` into libpq's part and the pool settings."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ConfigError(
            f"{parts.scheme or url!r} is not a PostgreSQL URL; "
            "use postgresql://user:password@host:5432/dbname."
        )
    libpq: list[tuple[str, str]] = []
    pool: dict[str, float] = {}
    for name, raw in parse_qsl(parts.query, keep_blank_values=True):
        if name in _POOL_PARAMS:
            field, minimum = _POOL_PARAMS[name]
            pool[field] = _number(name, raw, minimum)
        else:
            libpq.append((name, raw))
    default = PoolSettings()
    settings = PoolSettings(
        min_size=int(pool.get("min_size", default.min_size)),
        max_size=int(pool.get("max_size", default.max_size)),
        timeout=pool.get("timeout", default.timeout),
        max_waiting=int(pool.get("max_waiting", default.max_waiting)),
        statement_timeout_ms=int(pool.get("statement_timeout_ms", default.statement_timeout_ms)),
    )
    if settings.min_size > settings.max_size:
        raise ConfigError(
            f"The database URL sets pool_min_size={settings.min_size} above "
            f"pool_max_size={settings.max_size}; lower the first or raise the second."
        )
    # Not urlunsplit: it turns postgresql:///db (socket, no host) into the
    # postgresql:/db that libpq cannot read.
    query = urlencode(libpq, quote_via=quote)  # %20, not +: libpq does not read + as a space
    conninfo = f"{parts.scheme}://{parts.netloc}{parts.path}" + (f"?{query}" if query else "")
    try:
        fields = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError as exc:
        raise ConfigError(
            f"The PostgreSQL URL is not valid ({exc}); "
            "use postgresql://user:password@host:5432/dbname."
        ) from None
    return PostgresTarget(conninfo, settings, _display(fields))


def _display(fields: Mapping[str, object]) -> str:
    """``user@host:port/dbname``: enough to tell databases apart, never the password."""
    host = str(fields.get("host") or "localhost")
    port = str(fields.get("port") or "5432")
    db = str(fields.get("dbname") or fields.get("user") or "")
    user = f"{fields['user']}@" if fields.get("user") else ""
    return f"{user}{host}:{port}/{db}"
