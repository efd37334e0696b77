"""Retention ages (``90d``) in one spelling for the option and the setting."""

from __future__ import annotations

import pytest

from usher.config import Settings
from usher.durations import parse_duration
from usher.protocol.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90d", 90 * 86_400), ("12h", 12 * 3600), ("2w", 14 * 86_400), (" 1D ", 86_400)],
)
def test_hours_days_and_weeks(text: str, seconds: int) -> None:
    assert parse_duration(text, "--attempts-older-than") == seconds


@pytest.mark.parametrize("text", ["", "90", "d", "0d", "-1d", "1.5d", "90m", "90 d", "1d2h"])
def test_anything_else_is_refused_with_the_accepted_units(text: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_duration(text, "--attempts-older-than")
    message = str(refused.value)
    assert message.startswith("--attempts-older-than is ")
    assert "h (hours), d (days) or w (weeks)" in message


def test_the_setting_is_off_unless_set_and_uses_the_same_rule() -> None:
    assert Settings.from_env({}).prune_attempts_older_than is None
    blank = Settings.from_env({"USHER_PRUNE_ATTEMPTS_OLDER_THAN": " "})
    assert blank.prune_attempts_older_than is None
    on = Settings.from_env({"USHER_PRUNE_ATTEMPTS_OLDER_THAN": "90d"})
    assert on.prune_attempts_older_than == 90 * 86_400
    with pytest.raises(ConfigError, match=r"^USHER_PRUNE_ATTEMPTS_OLDER_THAN is '90'"):
        Settings.from_env({"USHER_PRUNE_ATTEMPTS_OLDER_THAN": "90"})
