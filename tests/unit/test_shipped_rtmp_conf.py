"""docs/nginx/rtmp.conf keeps nginx-rtmp sessions alive.

nginx-rtmp sends ``update_play`` only with ``on_update``, every
``notify_update_timeout``; a session that hears nothing for
``USHER_SESSION_TTL`` ends idle while the viewer still plays: it no longer
counts toward ``max_viewers``, and a later update is refused with
``Session ended``. So the shipped file must send updates, to Usher, more
often than the default TTL.
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
