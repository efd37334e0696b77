"""Where the demo banner's lines point (``usher serve --demo``)."""

from __future__ import annotations

import pytest

from usher.demo import base_url


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:8080"),
        # A wildcard bind is reached on loopback, the callers allowed by default.
        ("0.0.0.0", "http://127.0.0.1:8080"),
        ("::", "http://[::1]:8080"),
        ("::1", "http://[::1]:8080"),
        ("usher.example", "http://usher.example:8080"),
    ],
)
def test_base_url_is_reachable_from_this_machine(host: str, url: str) -> None:
    assert base_url(host, 8080) == url
