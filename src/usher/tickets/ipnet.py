"""A ticket's ``ip`` list: which client addresses may play.

The text is a ``|``-separated list of entries:

- an IPv4 or IPv6 address, allowing exactly that address;
- a CIDR network; host bits are accepted and masked off (``192.168.0.1/24``
  is ``192.168.0.0/24``) because publishers often paste an address with the
  prefix they mean;
- ``0.0.0.0/0`` or ``::/0``: any address, IPv6 included, since publishers
  write the IPv4 form to mean "anyone" whatever the viewer's protocol;
- ``auto``: a slot that binds to the exact address of the first client that
  plays through it;
- ``auto/N``: a slot that binds to that client's network. An IPv4 client binds
  its ``/min(N, 32)`` network. An IPv6 client binds its ``/N`` network when
  N > 32, but an IPv4-sized prefix (N <= 32, e.g. ``auto/24``) binds its ``/64``
  instead: the publisher meant "this viewer's neighbourhood", and a /24 of
  IPv6 would be a whole provider while a /64 is one customer's link.

An empty text allows any address. IPv4-mapped IPv6 (``::ffff:1.2.3.4``) is
the IPv4 address, in entries and client addresses alike, because dual-stack
servers report IPv4 clients that way.

Slots fill in the order the ``auto`` entries appear; the bound values are
stored on the ticket (``bound_ips``) as strings, an address for ``auto`` and a
network for ``auto/N``, so the n-th stored value belongs to the n-th slot.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    ip_address,
    ip_network,
)
from typing import TypeAlias

from usher.protocol.errors import InvalidField

MAX_ENTRIES = 1000
MAX_ENTRY_LENGTH = 100

_FIELD = "ip"
_V4_BITS = 32
_V6_BITS = 128
_V4_ALL = (1 << _V4_BITS) - 1
_V6_ALL = (1 << _V6_BITS) - 1
# An IPv6 client given an IPv4-sized auto prefix binds this network instead.
_V6_SUBSCRIBER_PREFIX = 64
_MAPPED_NET = 0xFFFF << 32
_MAPPED_MASK = _V6_ALL ^ _V4_ALL
_EXAMPLES = "203.0.113.7, 203.0.113.0/24, 2001:db8::/32, auto or auto/24"
_CACHE_SIZE = 4096
# See the same limit in wildcard.py: big texts are compiled on each call so
# they cannot pin memory in the cache.
_CACHE_TEXT_LIMIT = 8192

IPAddress: TypeAlias = IPv4Address | IPv6Address
# Networks grouped by prefix: (mask, network numbers with that mask), so a
# membership test costs one set lookup per distinct prefix length, not one
# comparison per entry.
_Table: TypeAlias = tuple[tuple[int, frozenset[int]], ...]


@dataclass(frozen=True, slots=True)
class IpMatch:
    """Whether an address may play and, if it takes a free ``auto`` slot, the
    value that slot binds to."""

    allowed: bool
    bind: str | None = None


_ALLOWED = IpMatch(True)
_DENIED = IpMatch(False)


def _mask(bits: int, prefix: int) -> int:
    return ((1 << bits) - 1) ^ ((1 << (bits - prefix)) - 1)


def _unmap(addr: IPAddress) -> IPAddress:
    """The IPv4 address behind an IPv4-mapped IPv6 one; drops any zone id,
    which means nothing for a remote client and would leak into bound values."""
    if isinstance(addr, IPv4Address):
        return addr
    mapped = addr.ipv4_mapped
    if mapped is not None:
        return mapped
    return IPv6Address(int(addr)) if addr.scope_id else addr


def _slot_value(addr: IPAddress, prefix: int | None) -> str:
    """What an ``auto`` (prefix None) or ``auto/prefix`` slot binds to for ``addr``."""
    if prefix is None:
        return str(addr)
    if isinstance(addr, IPv4Address):
        p = min(prefix, _V4_BITS)
        return str(IPv4Network((int(addr) & _mask(_V4_BITS, p), p)))
    p = prefix if prefix > _V4_BITS else _V6_SUBSCRIBER_PREFIX
    return str(IPv6Network((int(addr) & _mask(_V6_BITS, p), p)))


@lru_cache(maxsize=_CACHE_SIZE)
def _bound_network(value: str) -> tuple[int, int, int] | None:
    """A stored bound value as (version, mask, network); None if unreadable,
    which then matches nothing rather than failing the check."""
    try:
        net = ip_network(value, strict=False)
    except ValueError:
        return None
    return net.version, int(net.netmask), int(net.network_address)


@dataclass(frozen=True, slots=True)
class IpRules:
    """A compiled ``ip`` list; build it with :func:`parse_ip_rules` or
    :func:`compiled_ip_rules`."""

    allow_any: bool
    v4: _Table
    v6: _Table
    # The prefix of each auto entry in list order; None for plain ``auto``.
    autos: tuple[int | None, ...]

    @property
    def slots(self) -> int:
        """How many ``auto`` entries the list has."""
        return len(self.autos)

    def match(self, addr: IPAddress, bound: tuple[str, ...], *, may_bind: bool = True) -> IpMatch:
        """Check ``addr`` against the static entries, then the values already
        bound (``bound``, in slot order), then offer the next free slot.

        ``may_bind=False`` is for re-checks of an open session, which must not
        take a slot: its address already bound one when the session started.
        """
        if self.allow_any:
            return _ALLOWED
        addr = _unmap(addr)
        number = int(addr)
        if isinstance(addr, IPv4Address):
            version, table = 4, self.v4
        else:
            version, table = 6, self.v6
        for mask, networks in table:
            if number & mask in networks:
                return _ALLOWED
        for value in bound:
            parsed = _bound_network(value)
            if parsed is not None and parsed[0] == version and number & parsed[1] == parsed[2]:
                return _ALLOWED
        used = len(bound)
        if may_bind and used < len(self.autos):
            return IpMatch(True, _slot_value(addr, self.autos[used]))
        return _DENIED


@lru_cache(maxsize=_CACHE_SIZE)
def parse_client_address(text: str) -> IPAddress | None:
    """The client address a streaming server reported, or None if it is not one.

    Servers differ in how they write it: some bracket IPv6 (``[2001:db8::1]``),
    dual-stack ones report IPv4 clients as ``::ffff:1.2.3.4``.
    """
    text = text.strip()
    if len(text) > MAX_ENTRY_LENGTH:
        return None
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return _unmap(ip_address(text))
    except ValueError:
        return None


class _Bad(ValueError):
    """An entry that cannot be used; carries the sentence for InvalidField."""


def _parse_prefix(raw: str, entry: str) -> int:
    # int() alone would accept '+24', ' 24' and non-ASCII digits.
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 3):
        raise _Bad(f"'{entry}' has prefix length '{raw}'; auto/N needs a whole number N")
    prefix = int(raw)
    if not 1 <= prefix <= _V6_BITS:
        raise _Bad(
            f"'{entry}' has prefix length {prefix}; auto/N needs N from 1 to {_V6_BITS}"
            " (send 0.0.0.0/0 to allow any address)"
        )
    return prefix


def _parse_network(entry: str) -> IPv4Network | IPv6Network:
    try:
        net = ip_network(entry, strict=False)
    except ValueError:
        address, slash, _ = entry.partition("/")
        if slash:
            try:
                ip_address(address)
            except ValueError:
                pass
            else:
                raise _Bad(
                    f"'{entry}' has an invalid prefix; IPv4 networks take /0 to /32 "
                    "and IPv6 networks /0 to /128"
                ) from None
        raise _Bad(
            f"'{entry}' is not an IP address, a CIDR network, auto or auto/N; "
            f"use forms such as {_EXAMPLES}"
        ) from None
    if isinstance(net, IPv6Network) and "%" in entry:
        raise _Bad(f"'{entry}' has a zone id, which cannot match a remote client")
    return net


class _Builder:
    def __init__(self) -> None:
        self.allow_any = False
        self.v4: dict[int, set[int]] = {}
        self.v6: dict[int, set[int]] = {}
        self.autos: list[int | None] = []

    def add(self, entry: str) -> None:
        lowered = entry.lower()
        if lowered == "auto":
            self.autos.append(None)
            return
        if lowered.startswith("auto/"):
            self.autos.append(_parse_prefix(entry[5:], entry))
            return
        net = _parse_network(entry)
        if net.prefixlen == 0:
            # Only the literal any-network means "anyone"; a mapped
            # ::ffff:0:0/96 is merely every IPv4 address (handled below).
            self.allow_any = True
            return
        number, mask = int(net.network_address), int(net.netmask)
        if (
            isinstance(net, IPv6Network)
            and net.prefixlen >= 96
            and (number & _MAPPED_MASK == _MAPPED_NET)
        ):
            self.v4.setdefault(mask & _V4_ALL, set()).add(number & _V4_ALL)
        elif isinstance(net, IPv4Network):
            self.v4.setdefault(mask, set()).add(number)
        else:
            self.v6.setdefault(mask, set()).add(number)

    def build(self) -> IpRules:
        def table(groups: dict[int, set[int]]) -> _Table:
            # Longest prefixes first: exact addresses are the common entry.
            return tuple(
                (mask, frozenset(nets)) for mask, nets in sorted(groups.items(), reverse=True)
            )

        return IpRules(self.allow_any, table(self.v4), table(self.v6), tuple(self.autos))


_ANYONE = IpRules(True, (), (), ())


def parse_ip_rules(text: str) -> IpRules:
    """Validate a publisher's ``ip`` list and compile it.

    Whitespace around entries is ignored: unlike names, an address cannot
    contain it, so ``1.2.3.4 | auto`` has only one meaning.
    """
    if text.strip() == "":
        return _ANYONE
    count = text.count("|") + 1
    if count > MAX_ENTRIES:
        raise InvalidField(
            _FIELD, f"the list has {count} entries; at most {MAX_ENTRIES} are allowed"
        )
    builder = _Builder()
    for number, raw in enumerate(text.split("|"), start=1):
        entry = raw.strip()
        if entry == "":
            raise InvalidField(
                _FIELD,
                f"entry {number} of the list is empty; "
                "separate entries with a single '|' and do not start or end with one",
            )
        if len(entry) > MAX_ENTRY_LENGTH:
            raise InvalidField(
                _FIELD,
                f"entry {number} is {len(entry)} characters long; "
                f"at most {MAX_ENTRY_LENGTH} are allowed",
            )
        try:
            builder.add(entry)
        except _Bad as bad:
            raise InvalidField(_FIELD, str(bad)) from None
    return builder.build()


def _compile_lenient(text: str) -> IpRules:
    # Decided on the text, not on what survives parsing: a stored list whose
    # entries are all unreadable must deny everyone, not allow everyone.
    if text.strip() == "":
        return _ANYONE
    builder = _Builder()
    for raw in text.split("|"):
        entry = raw.strip()
        if not entry or len(entry) > MAX_ENTRY_LENGTH:
            continue
        try:
            builder.add(entry)
        except _Bad:
            continue
    return builder.build()


_compiled_cached = lru_cache(maxsize=_CACHE_SIZE)(_compile_lenient)


def compiled_ip_rules(text: str) -> IpRules:
    """The compiled form of a stored ``ip`` list, for the playback hot path.

    Stored lists were validated at creation, so this never raises: an entry it
    cannot read is skipped (it allows no one), never widened.
    """
    if len(text) > _CACHE_TEXT_LIMIT:
        return _compile_lenient(text)
    return _compiled_cached(text)
