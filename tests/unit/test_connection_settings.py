"""The slow-client and connection settings of ``usher serve``."""

from __future__ import annotations

import pytest

from usher.config import Settings
from usher.protocol.errors import ConfigError


def test_defaults_bound_slow_clients_and_connections() -> None:
    settings = Settings.from_env({})
    assert (settings.header_timeout, settings.body_timeout) == (10, 30)
    # Above the benchmark's 4,096 connections, so `make bench` is never refused.
    assert settings.max_connections == 8192


def test_settings_are_read_from_the_environment() -> None:
    settings = Settings.from_env(
        {"USHER_HEADER_TIMEOUT": "2", "USHER_BODY_TIMEOUT": "5", "USHER_MAX_CONNECTIONS": "20"}
    )
    assert (settings.header_timeout, settings.body_timeout, settings.max_connections) == (2, 5, 20)


@pytest.mark.parametrize(
    "name", ["USHER_HEADER_TIMEOUT", "USHER_BODY_TIMEOUT", "USHER_MAX_CONNECTIONS"]
)
def test_zero_or_words_are_refused_with_a_sentence(name: str) -> None:
    with pytest.raises(ConfigError, match=rf"{name}=0 is too small; it must be at least 1\."):
        Settings.from_env({name: "0"})
    with pytest.raises(ConfigError, match=rf"{name}='ten' is not an integer"):
        Settings.from_env({name: "ten"})
