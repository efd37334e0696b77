"""docs/nginx/rtmp.conf keeps nginx-rtmp sessions alive.

nginx-rtmp sends ``update_play`` only with ``on_update``, every
``notify_update_timeout``; a session that hears nothing for
``USHER_SESSION_TTL`` ends idle while the viewer still plays: it no longer
counts toward ``max_viewers``, and a later update is refused with
``Session ended``. So the shipped file must send updates, to Usher, more
often than the default TTL.

Publishes are checked by Usher too (``on_publish``, SPEC §6): the live
application sends them to Usher, and the application of recorded files
refuses every publish.
"""

from __future__ import annotations

import re
from pathlib import Path

from usher.config import DEFAULT_SESSION_TTL

RTMP_CONF = Path(__file__).parents[2] / "docs" / "nginx" / "rtmp.conf"


def _directives(name: str) -> list[str]:
    text = "\n".join(line.split("#", 1)[0] for line in RTMP_CONF.read_text().splitlines())
    return re.findall(rf"^\s*{name}\s+([^;]+);", text, re.M)


def test_every_play_notification_goes_to_usher() -> None:
    for name in ("on_play", "on_update", "on_play_done"):
        assert _directives(name) == ["http://127.0.0.1:8080/usher/nginx-rtmp"], name


def test_updates_come_well_within_the_session_ttl() -> None:
    [timeout] = _directives("notify_update_timeout")
    assert timeout.endswith("s"), "give notify_update_timeout in seconds"
    seconds = int(timeout.removesuffix("s"))
    # Two updates per TTL at least: one late or lost update must not end it.
    assert 0 < seconds <= DEFAULT_SESSION_TTL // 2


def _application(name: str) -> str:
    """The directives of one ``application`` block, comments dropped."""
    text = "\n".join(line.split("#", 1)[0] for line in RTMP_CONF.read_text().splitlines())
    match = re.search(rf"^\s*application\s+{name}\s*\{{(.*?)^\s*\}}", text, re.M | re.S)
    assert match, f"docs/nginx/rtmp.conf has no application {name}"
    return match.group(1)


def test_live_publishes_are_checked_by_usher() -> None:
    live = _application("demo-live")
    for name in ("on_publish", "on_publish_done"):
        found = re.findall(rf"^\s*{name}\s+([^;]+);", live, re.M)
        assert found == ["http://127.0.0.1:8080/usher/nginx-rtmp"], name
    # An address rule left in place would refuse encoders before Usher is asked.
    assert not re.search(r"^\s*deny\s+publish", live, re.M)


def test_recorded_files_cannot_be_published_to() -> None:
    vod = _application("demo-vod")
    assert re.findall(r"^\s*deny\s+publish\s+([^;]+);", vod, re.M) == ["all"]
    assert "on_publish" not in vod
