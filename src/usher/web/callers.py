"""Who may call the playback callbacks (``USHER_CALLBACK_ALLOW``), and whose
address a callback reports."""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from starlette.requests import Request
from starlette.responses import Response

from usher.config import Network

FORBIDDEN_CALLER = (
    b"This address may not call Usher's playback callbacks; add it to USHER_CALLBACK_ALLOW.\n"
)
#: Callback bodies are small forms; anything bigger is not a check.
MAX_CHECK_BODY = 64 * 1024


def forbidden_caller() -> Response:
    return Response(FORBIDDEN_CALLER, 403, media_type="text/plain")


@lru_cache(maxsize=4096)
def _allowed(peer: str, networks: tuple[Network, ...]) -> bool:
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


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
