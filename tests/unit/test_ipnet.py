"""``ip`` lists: CIDR membership against :mod:`ipaddress`, IPv4-mapped
clients, ``auto`` slots and the refusal of absurd entries."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from usher.protocol.errors import InvalidField
from usher.tickets.ipnet import (
    MAX_ENTRIES,
    IPAddress,
    IpMatch,
    IpRules,
    compiled_ip_rules,
    parse_client_address,
    parse_ip_rules,
)

V4_MAX = (1 << 32) - 1
V6_MAX = (1 << 128) - 1
MAPPED = 0xFFFF << 32

v4_ints = st.integers(0, V4_MAX)
v6_ints = st.integers(0, V6_MAX)


def host_bits(bits: int, prefix: int) -> int:
    return (1 << (bits - prefix)) - 1


@st.composite
def v4_case(draw: st.DrawFn) -> tuple[int, int, int]:
    """A network (address, prefix) and a client that is often inside it."""
    network, prefix = draw(v4_ints), draw(st.integers(1, 32))
    if draw(st.booleans()):
        client = (network & ~host_bits(32, prefix)) | (draw(v4_ints) & host_bits(32, prefix))
    else:
        client = draw(v4_ints)
    return network, prefix, client


@st.composite
def v6_case(draw: st.DrawFn) -> tuple[int, int, int]:
    network, prefix = draw(v6_ints), draw(st.integers(1, 128))
    if draw(st.booleans()):
        client = (network & ~host_bits(128, prefix)) | (draw(v6_ints) & host_bits(128, prefix))
    else:
        client = draw(v6_ints)
    # Mapped addresses are IPv4 by definition; they have their own tests.
    assume(client >> 32 != 0xFFFF)
    return network, prefix, client


def allowed(rules: IpRules, addr: IPAddress, bound: tuple[str, ...] = ()) -> bool:
    return rules.match(addr, bound, may_bind=False).allowed


@given(v4_case())
def test_ipv4_cidr_membership_agrees_with_ipaddress(case: tuple[int, int, int]) -> None:
    network, prefix, client = case
    entry = f"{IPv4Address(network)}/{prefix}"
    expected = IPv4Address(client) in ip_network(entry, strict=False)
    assert allowed(parse_ip_rules(entry), IPv4Address(client)) == expected


@given(v6_case())
def test_ipv6_cidr_membership_agrees_with_ipaddress(case: tuple[int, int, int]) -> None:
    network, prefix, client = case
    assume(network >> 32 != 0xFFFF or prefix < 96)
    entry = f"{IPv6Address(network)}/{prefix}"
    expected = IPv6Address(client) in ip_network(entry, strict=False)
    assert allowed(parse_ip_rules(entry), IPv6Address(client)) == expected


@given(v4_case())
def test_ipv4_mapped_client_is_the_ipv4_client(case: tuple[int, int, int]) -> None:
    network, prefix, client = case
    rules = parse_ip_rules(f"{IPv4Address(network)}/{prefix}")
    mapped = parse_client_address(str(IPv6Address(MAPPED | client)))
    assert mapped == IPv4Address(client)
    assert allowed(rules, mapped) == allowed(rules, IPv4Address(client))


@given(v4_case())
def test_ipv4_mapped_entry_is_the_ipv4_entry(case: tuple[int, int, int]) -> None:
    network, prefix, client = case
    plain = parse_ip_rules(f"{IPv4Address(network)}/{prefix}")
    mapped = parse_ip_rules(f"{IPv6Address(MAPPED | network)}/{96 + prefix}")
    assert allowed(mapped, IPv4Address(client)) == allowed(plain, IPv4Address(client))


def test_host_bits_are_masked() -> None:
    assert parse_ip_rules("192.168.0.1/24") == parse_ip_rules("192.168.0.0/24")
    assert allowed(parse_ip_rules("192.168.0.1/24"), IPv4Address("192.168.0.200"))


def test_exact_addresses() -> None:
    rules = parse_ip_rules("203.0.113.7|2001:db8::1")
    assert allowed(rules, IPv4Address("203.0.113.7"))
    assert not allowed(rules, IPv4Address("203.0.113.8"))
    assert allowed(rules, IPv6Address("2001:db8::1"))
    assert not allowed(rules, IPv6Address("2001:db8::2"))


@pytest.mark.parametrize("text", ["", "   ", "0.0.0.0/0", "::/0", "1.2.3.4|0.0.0.0/0|auto"])
def test_any_address(text: str) -> None:
    rules = parse_ip_rules(text)
    for addr in ("1.2.3.4", "2001:db8::1", "::1", "255.255.255.255"):
        match = rules.match(ip_address(addr), ())
        assert match.allowed
        assert match.bind is None


def test_mapped_ipv4_space_is_not_every_address() -> None:
    rules = parse_ip_rules("::ffff:0:0/96")
    assert allowed(rules, IPv4Address("198.51.100.1"))
    assert not allowed(rules, IPv6Address("2001:db8::1"))


addresses = st.one_of(
    v4_ints.map(IPv4Address),
    v6_ints.filter(lambda n: n >> 32 != 0xFFFF).map(IPv6Address),
)


def expected_prefix(addr: IPAddress, n: int) -> int:
    if isinstance(addr, IPv4Address):
        return min(n, 32)
    return n if n > 32 else 64


@given(addresses, st.integers(1, 128), addresses)
def test_auto_n_binds_the_clients_network(first: IPAddress, n: int, other: IPAddress) -> None:
    rules = parse_ip_rules(f"auto/{n}")
    assert rules.slots == 1
    match = rules.match(first, ())
    assert match.allowed
    assert match.bind is not None
    network = ip_network(match.bind)
    assert first in network
    assert network.prefixlen == expected_prefix(first, n)
    assert str(network) == match.bind

    later = rules.match(other, (match.bind,))
    assert later.bind is None
    assert later.allowed == (other in network)


@given(addresses)
def test_plain_auto_binds_the_exact_address(first: IPAddress) -> None:
    rules = parse_ip_rules("auto")
    match = rules.match(first, ())
    assert match.bind == str(first)
    assert not rules.match(first, (), may_bind=False).allowed
    assert rules.match(first, (str(first),), may_bind=False) == IpMatch(True, None)


def test_auto_bound_value_formats() -> None:
    rules = parse_ip_rules("auto|auto/24")
    assert rules.match(IPv4Address("203.0.113.7"), ()).bind == "203.0.113.7"
    assert rules.match(IPv6Address("2001:db8::1"), ()).bind == "2001:db8::1"
    assert rules.match(IPv4Address("203.0.113.7"), ("x",)).bind == "203.0.113.0/24"
    assert rules.match(IPv6Address("2001:db8:1:2::9"), ("x",)).bind == "2001:db8:1:2::/64"
    assert parse_ip_rules("auto/48").match(IPv6Address("2001:db8:1:2::9"), ()).bind == (
        "2001:db8:1::/48"
    )


@given(
    st.lists(st.sampled_from(["auto", "auto/24", "auto/16", "auto/64", "auto/120"]), max_size=4),
    st.lists(addresses, max_size=12),
)
def test_slots_bind_at_most_their_number_of_networks(
    autos: list[str], clients: list[IPAddress]
) -> None:
    rules = parse_ip_rules("|".join(["192.0.2.1", *autos]))
    assert rules.slots == len(autos)
    bound: tuple[str, ...] = ()
    for client in clients:
        match = rules.match(client, bound)
        if match.bind is not None:
            assert match.allowed
            bound = (*bound, match.bind)
        if match.allowed:
            assert client == IPv4Address("192.0.2.1") or any(
                client in ip_network(value) for value in bound
            )
        else:
            assert len(bound) == rules.slots
    assert len(bound) <= len(autos)
    assert len(set(bound)) == len(bound)


def test_may_bind_false_never_offers_a_slot() -> None:
    rules = parse_ip_rules("auto/24")
    match = rules.match(IPv4Address("198.51.100.1"), (), may_bind=False)
    assert not match.allowed
    assert match.bind is None


@pytest.mark.parametrize(
    "text",
    [
        "1.2.3.4/33",
        "2001:db8::/129",
        "auto/129",
        "auto/-1",
        "auto/0",
        "auto/",
        "auto/x",
        "auto/٢٤",
        "garbage",
        "1.2.3",
        "01.2.3.4",
        "1.2.3.4/",
        "1.2.3.4/+24",
        "::1::2",
        "fe80::1%eth0",
        "1.2.3.4||5.6.7.8",
        "1.2.3.4|",
        "auto|" + "1" * 101,
        "|".join(["auto"] * (MAX_ENTRIES + 1)),
    ],
)
def test_absurd_entries_are_refused(text: str) -> None:
    with pytest.raises(InvalidField) as caught:
        parse_ip_rules(text)
    assert caught.value.name == "ip"
    assert caught.value.why


def test_entry_limits_are_stated() -> None:
    with pytest.raises(InvalidField) as caught:
        parse_ip_rules("|".join(["auto"] * 10_000))
    assert caught.value.why == "the list has 10000 entries; at most 1000 are allowed"
    parse_ip_rules("|".join(["auto"] * MAX_ENTRIES))


@given(st.text(max_size=40))
def test_arbitrary_text_parses_or_is_refused_cleanly(text: str) -> None:
    try:
        parse_ip_rules(text)
    except InvalidField as refused:
        name = refused.name
    else:
        name = "ip"
    assert name == "ip"
    compiled_ip_rules(text)
    parse_client_address(text)


def test_lenient_compile_skips_bad_entries_but_never_opens_up() -> None:
    assert not allowed(compiled_ip_rules("garbage|auto/999"), IPv4Address("1.2.3.4"))
    rules = compiled_ip_rules("garbage||1.2.3.4")
    assert allowed(rules, IPv4Address("1.2.3.4"))
    assert not allowed(rules, IPv4Address("1.2.3.5"))


def test_unreadable_bound_values_match_nothing() -> None:
    rules = parse_ip_rules("auto")
    assert not allowed(rules, IPv4Address("1.2.3.4"), ("not an address",))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("203.0.113.7", IPv4Address("203.0.113.7")),
        ("  203.0.113.7\n", IPv4Address("203.0.113.7")),
        ("[2001:db8::1]", IPv6Address("2001:db8::1")),
        ("::ffff:1.2.3.4", IPv4Address("1.2.3.4")),
        ("[::ffff:1.2.3.4]", IPv4Address("1.2.3.4")),
        ("fe80::1%eth0", IPv6Address("fe80::1")),
        ("", None),
        ("unix:", None),
        ("1.2.3.4:80", None),
        ("[1.2.3.4", None),
        ("1" * 200, None),
    ],
)
def test_parse_client_address(text: str, expected: IPAddress | None) -> None:
    assert parse_client_address(text) == expected


def test_scope_is_dropped_from_bound_values() -> None:
    addr = parse_client_address("fe80::1%eth0")
    assert addr is not None
    assert parse_ip_rules("auto").match(addr, ()).bind == "fe80::1"
