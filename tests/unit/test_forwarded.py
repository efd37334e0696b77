"""Which address the panel believes a request comes from (``forwarded_client``)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from usher.config import parse_networks
from usher.web.callers import forwarded_client

TRUSTED = parse_networks("10.0.0.0/8,127.0.0.0/8,fd00::/8", "test")
PROXY = "10.0.0.2"

addresses = st.ip_addresses()
trusted_hops = st.one_of(st.ip_addresses(network="10.0.0.0/8"), st.ip_addresses(network="fd00::/8"))
untrusted = addresses.filter(
    lambda a: (
        not any(a in net for net in TRUSTED)
        and not (isinstance(a, IPv6Address) and a.ipv4_mapped is not None)
    )
)
#: Whatever a browser may write to the left of the hops the proxies add.
made_up = st.lists(st.text(alphabet=st.characters(exclude_characters=","), max_size=20))


def canonical(address: IPv4Address | IPv6Address) -> str:
    return str(address)


@given(peer=untrusted, real=st.text(), forwarded=st.text())
def test_an_untrusted_peer_is_the_client_whatever_it_says(
    peer: IPv4Address | IPv6Address, real: str, forwarded: str
) -> None:
    assert forwarded_client(str(peer), real, forwarded, TRUSTED) == canonical(peer)


@given(client=untrusted, proxies=st.lists(trusted_hops, max_size=4), prefix=made_up)
def test_the_rightmost_untrusted_hop_is_the_client(
    client: IPv4Address | IPv6Address,
    proxies: list[IPv4Address | IPv6Address],
    prefix: list[str],
) -> None:
    header = ", ".join([*prefix, str(client), *map(str, proxies)])
    assert forwarded_client(PROXY, None, header, TRUSTED) == canonical(client)


@given(client=untrusted, forwarded=st.text())
def test_a_trusted_proxy_s_x_real_ip_wins(
    client: IPv4Address | IPv6Address, forwarded: str
) -> None:
    assert forwarded_client(PROXY, str(client), forwarded, TRUSTED) == canonical(client)


@given(client=untrusted, edge=trusted_hops)
def test_an_x_real_ip_naming_a_trusted_proxy_gives_way_to_x_forwarded_for(
    client: IPv4Address | IPv6Address, edge: IPv4Address | IPv6Address
) -> None:
    # CDN edge -> nginx -> Usher: nginx's X-Real-IP is the edge, a proxy.
    forwarded = f"{client}, {edge}"
    assert forwarded_client(PROXY, str(edge), forwarded, TRUSTED) == canonical(client)


@given(peer=st.one_of(addresses, trusted_hops), real=st.text(), forwarded=st.text())
def test_the_answer_is_always_an_address(
    peer: IPv4Address | IPv6Address, real: str, forwarded: str
) -> None:
    answer = ip_address(forwarded_client(str(peer), real, forwarded, TRUSTED))
    assert not (isinstance(answer, IPv6Address) and answer.ipv4_mapped is not None)


@pytest.mark.parametrize(
    ("peer", "real", "forwarded", "expected"),
    [
        ("10.0.0.2", None, None, "10.0.0.2"),
        ("10.0.0.2", "", "", "10.0.0.2"),
        ("10.0.0.2", "not an address", None, "10.0.0.2"),
        ("10.0.0.2", "203.0.113.9:4711", None, "10.0.0.2"),
        ("10.0.0.2", "1" * 500, None, "10.0.0.2"),
        ("10.0.0.2", "not an address", "203.0.113.9", "203.0.113.9"),
        ("10.0.0.2", None, "203.0.113.9, junk", "10.0.0.2"),
        ("10.0.0.2", None, "junk, 203.0.113.9", "203.0.113.9"),
        ("10.0.0.2", None, "203.0.113.9, 10.1.1.1", "203.0.113.9"),
        ("10.0.0.2", None, "198.51.100.1, 203.0.113.9", "203.0.113.9"),
        ("10.0.0.2", None, "10.9.9.9, 10.1.1.1", "10.9.9.9"),
        ("10.0.0.2", None, " 2001:DB8::1 ", "2001:db8::1"),
        ("10.0.0.2", "::ffff:203.0.113.9", None, "203.0.113.9"),
        ("::ffff:10.0.0.2", "203.0.113.9", None, "203.0.113.9"),
        ("::ffff:203.0.113.9", "198.51.100.1", None, "203.0.113.9"),
        ("203.0.113.9", "198.51.100.1", "198.51.100.2", "203.0.113.9"),
    ],
)
def test_forwarding_headers(
    peer: str, real: str | None, forwarded: str | None, expected: str
) -> None:
    assert forwarded_client(peer, real, forwarded, TRUSTED) == expected


def test_with_no_trusted_proxy_the_peer_is_the_client() -> None:
    assert forwarded_client("127.0.0.1", "203.0.113.9", "198.51.100.1", ()) == "127.0.0.1"
