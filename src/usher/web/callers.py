"""Whom Usher believes about a request's origin.

Two separate trust decisions live here: who may call the playback callbacks
(``USHER_CALLBACK_ALLOW``, whose ``X-Real-IP`` names the viewer), and which
reverse proxies the panel believes about the browser's address
(``USHER_PANEL_TRUSTED_PROXIES``).
"""

from __future__ import annotations

from functools import lru_cache

from starlette.requests import Request
from starlette.responses import Response

from usher.config import Network
from usher.tickets.ipnet import MAX_ENTRY_LENGTH, IPAddress, parse_client_address


def _within(address: IPAddress, networks: tuple[Network, ...]) -> bool:
    return any(address in network for network in networks)


FORBIDDEN_CALLER = (
    b"This address may not call Usher's playback callbacks; add it to USHER_CALLBACK_ALLOW.\n"
)
#: Callback bodies are small forms; anything bigger is not a check.
MAX_CHECK_BODY = 64 * 1024


def forbidden_caller() -> Response:
    return Response(FORBIDDEN_CALLER, 403, media_type="text/plain")


@lru_cache(maxsize=4096)
def _allowed(peer: str, networks: tuple[Network, ...]) -> bool:
    # parse_client_address reads an IPv4-mapped IPv6 peer (a dual-stack
    # listener's view of an IPv4 client) as the IPv4 address it is.
    address = parse_client_address(peer)
    return address is not None and _within(address, networks)


def peer_allowed(peer: str | None, networks: tuple[Network, ...]) -> bool:
    """:func:`caller_allowed` for a bare ASGI ``scope["client"]`` host."""
    return peer is not None and _allowed(peer, networks)


def caller_allowed(request: Request, networks: tuple[Network, ...]) -> bool:
    client = request.client
    return client is not None and _allowed(client.host, networks)


def header_text(raw: bytes) -> str:
    """A header value that should be an address, as text.

    Decoded as UTF-8 (invalid bytes replaced), not Latin-1 as HTTP's default:
    a non-ASCII value then reads as sent (``1.2.3.4é``, not ``1.2.3.4Ã©``),
    and the check refuses it as not an address. Falling back to the peer
    instead would judge the viewer by the proxy's own address.
    """
    return raw.decode("utf-8", "replace").strip()


def client_address(request: Request) -> str:
    """The viewer's address: ``X-Real-IP`` from an allowed caller, else the peer.

    Only call this after :func:`caller_allowed`: the header is trusted
    because the caller is.
    """
    for name, value in request.scope["headers"]:
        if name == b"x-real-ip":
            real = header_text(value)
            if real:
                return real
            break
    return request.client.host if request.client else ""


def forwarded_client(
    peer: str, real_ip: str | None, forwarded_for: str | None, trusted: tuple[Network, ...]
) -> str:
    """The browser's address, given what a request's peer and headers say.

    Headers count only when ``peer`` is in ``trusted``. Then the browser is
    ``real_ip`` (``X-Real-IP``) unless it names a trusted proxy itself, or
    else the rightmost address of
    ``forwarded_for`` (``X-Forwarded-For``) that is not a trusted proxy:
    each proxy appends the address it received from, so everything left of
    the first untrusted hop may be made up by the browser. This is how
    nginx's ``real_ip_recursive`` and uvicorn's ``--forwarded-allow-ips``
    read it. A header that does not hold addresses is ignored, and the
    peer is the answer. Addresses come back in canonical form, an
    IPv4-mapped IPv6 address as IPv4.
    """
    peer_address = parse_client_address(peer)
    if peer_address is None or not _within(peer_address, trusted):
        return str(peer_address) if peer_address is not None else peer
    if real_ip is not None:
        real = _header_address(real_ip)
        # An X-Real-IP that names a trusted proxy was set by the proxy
        # nearest us from its own peer, another proxy: the browser is
        # further out, in X-Forwarded-For.
        if real is not None and not _within(real, trusted):
            return str(real)
    if forwarded_for is not None:
        hop = _rightmost_untrusted(forwarded_for, trusted)
        if hop is not None:
            return str(hop)
    return str(peer_address)


def _header_address(text: str) -> IPAddress | None:
    # A browser may write anything in these headers; a long text must not
    # reach (and sit in) parse_client_address's cache.
    return parse_client_address(text) if len(text) <= MAX_ENTRY_LENGTH else None


def _rightmost_untrusted(header: str, trusted: tuple[Network, ...]) -> IPAddress | None:
    leftmost: IPAddress | None = None
    for entry in reversed(header.split(",")):
        hop = _header_address(entry)
        if hop is None:
            return None
        if not _within(hop, trusted):
            return hop
        leftmost = hop
    # Every hop is a trusted proxy: the first of them is the browser.
    return leftmost


def panel_client(request: Request, trusted: tuple[Network, ...]) -> str:
    """:func:`forwarded_client` for a request (several ``X-Forwarded-For``
    headers read as one list, as HTTP says they must)."""
    forwarded = request.headers.getlist("x-forwarded-for")
    return forwarded_client(
        request.client.host if request.client else "",
        request.headers.get("x-real-ip"),
        ",".join(forwarded) if forwarded else None,
        trusted,
    )
