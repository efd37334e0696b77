"""Settings read from the environment: refused with a sentence saying what to set."""

from __future__ import annotations

import ipaddress

import pytest

from usher.config import Settings, parse_networks
from usher.protocol.errors import ConfigError
from usher.tickets.publishers import BruteForceLimit
from usher.web.callers import peer_allowed


@pytest.mark.parametrize("value", ["", " ", ",", " , "])
def test_an_empty_callback_allow_list_refuses_to_start(value: str) -> None:
    with pytest.raises(ConfigError, match="USHER_CALLBACK_ALLOW is set but empty"):
        Settings.from_env({"USHER_CALLBACK_ALLOW": value})


def test_an_unset_callback_allow_list_is_loopback() -> None:
    allow = Settings.from_env({}).callback_allow
    assert peer_allowed("127.0.0.1", allow) and peer_allowed("::1", allow)
    assert not peer_allowed("192.0.2.1", allow)


@pytest.mark.parametrize(
    ("entry", "peer"),
    [
        ("::ffff:127.0.0.1", "127.0.0.1"),
        ("::ffff:127.0.0.1", "::ffff:127.0.0.1"),
        ("::ffff:10.0.0.0/104", "10.1.2.3"),
        ("127.0.0.1", "::ffff:127.0.0.1"),
    ],
)
def test_ipv4_mapped_entries_match_ipv4_callers(entry: str, peer: str) -> None:
    assert peer_allowed(peer, parse_networks(entry, "USHER_CALLBACK_ALLOW"))


def test_ipv4_mapped_entries_are_stored_as_ipv4() -> None:
    assert parse_networks("::ffff:192.0.2.0/120", "X") == (ipaddress.ip_network("192.0.2.0/24"),)


def test_a_bad_entry_names_the_setting() -> None:
    with pytest.raises(ConfigError, match="USHER_CALLBACK_ALLOW holds 'nope'"):
        Settings.from_env({"USHER_CALLBACK_ALLOW": "127.0.0.1,nope"})


def test_the_panel_query_timeout_is_two_seconds_unless_set() -> None:
    assert Settings.from_env({}).panel_query_timeout == 2.0
    assert Settings.from_env({"USHER_PANEL_QUERY_TIMEOUT": "0.5"}).panel_query_timeout == 0.5
    assert Settings.from_env({"USHER_PANEL_QUERY_TIMEOUT": "10"}).panel_query_timeout == 10.0


@pytest.mark.parametrize("value", ["0", "-1", "two", "nan", "inf", "3601"])
def test_a_bad_panel_query_timeout_names_the_setting(value: str) -> None:
    with pytest.raises(ConfigError, match=r"^USHER_PANEL_QUERY_TIMEOUT=.*\.$"):
        Settings.from_env({"USHER_PANEL_QUERY_TIMEOUT": value})


def test_the_ome_secret_is_empty_unless_set() -> None:
    assert Settings.from_env({}).ome_secret == ""
    assert Settings.from_env({"USHER_OME_SECRET": ""}).ome_secret == ""
    assert Settings.from_env({"USHER_OME_SECRET": "s3cr:et é"}).ome_secret == "s3cr:et é"
    assert "s3cr" not in repr(Settings.from_env({"USHER_OME_SECRET": "s3cr"}))


@pytest.mark.parametrize("value", [" ", "secret\n", " secret", "secret\t"])
def test_an_ome_secret_with_surrounding_space_names_the_setting(value: str) -> None:
    with pytest.raises(ConfigError, match="USHER_OME_SECRET begins or ends with white space"):
        Settings.from_env({"USHER_OME_SECRET": value})


@pytest.mark.parametrize(
    ("value", "url"),
    [
        ("", ""),
        ("  ", ""),
        ("rtmp://live.example.com:1935", "rtmp://live.example.com:1935"),
        ("rtmp://live.example.com/", "rtmp://live.example.com"),
        ("rtmps://live.example.com:443", "rtmps://live.example.com:443"),
        ("rtmp://192.0.2.7", "rtmp://192.0.2.7"),
        ("rtmp://[2001:db8::7]:1935", "rtmp://[2001:db8::7]:1935"),
    ],
)
def test_the_publish_url_is_an_rtmp_server(value: str, url: str) -> None:
    assert Settings.from_env({"USHER_PUBLISH_URL": value}).publish_url == url


@pytest.mark.parametrize(
    "value",
    [
        "live.example.com",
        "http://live.example.com",
        "rtmp://",
        "rtmp://live.example.com/live",
        "rtmp://live.example.com:0",
        "rtmp://live.example.com:99999",
        "rtmp://user:pw@live.example.com",
        "rtmp://live.example.com?x=1",
        "rtmp://live example.com",
    ],
)
def test_a_publish_url_that_is_not_an_rtmp_server_names_the_setting(value: str) -> None:
    with pytest.raises(ConfigError, match=r"USHER_PUBLISH_URL=.* set rtmp:// or rtmps://") as exc:
        Settings.from_env({"USHER_PUBLISH_URL": value})
    assert str(exc.value).endswith(".")


def test_the_publish_limit_is_ten_in_a_minute_for_five_minutes_unless_set() -> None:
    assert Settings.from_env({}).publish_limit == BruteForceLimit(10, 60, 300)
    env = {
        "USHER_PUBLISH_MAX_DENIALS": "3",
        "USHER_PUBLISH_DENIAL_WINDOW": "20",
        "USHER_PUBLISH_BLOCK": "900",
    }
    assert Settings.from_env(env).publish_limit == BruteForceLimit(3, 20, 900)


@pytest.mark.parametrize(
    "name", ["USHER_PUBLISH_MAX_DENIALS", "USHER_PUBLISH_DENIAL_WINDOW", "USHER_PUBLISH_BLOCK"]
)
@pytest.mark.parametrize("value", ["0", "-1", "ten"])
def test_a_bad_publish_limit_names_the_setting(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        # The rule reads at most 1,000 denials: more could never be reached.
        ("USHER_PUBLISH_MAX_DENIALS", "1001"),
        ("USHER_PUBLISH_DENIAL_WINDOW", str(30 * 86400 + 1)),
        ("USHER_PUBLISH_BLOCK", "10000000000000000000"),
    ],
)
def test_a_publish_limit_past_its_bound_names_the_setting(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{name}=\d+ is too large; it must be at most "):
        Settings.from_env({name: value})


@pytest.mark.parametrize(
    ("value", "chosen"),
    [("", "full"), ("full", "full"), ("NORMAL", "normal"), (" normal ", "normal")],
)
def test_sqlite_synchronous_is_full_unless_normal_is_chosen(value: str, chosen: str) -> None:
    assert Settings.from_env({"USHER_SQLITE_SYNCHRONOUS": value}).sqlite_synchronous == chosen


def test_a_bad_sqlite_synchronous_names_the_setting() -> None:
    with pytest.raises(ConfigError, match="USHER_SQLITE_SYNCHRONOUS='off' is not a choice"):
        Settings.from_env({"USHER_SQLITE_SYNCHRONOUS": "off"})
