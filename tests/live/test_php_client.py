"""The ScaleEngine documentation's own PHP client against a real ``usher serve``.

Python's client shares the server's idea of PHP encoding, so it cannot catch a
mismatch between the two. These tests run real ``php`` with real libcurl:
``json_encode`` escaping ``/`` as ``\\/``, curl's multipart framing, and
``serialize()``/``unserialize()`` are PHP's, not our reimplementations.
"""

from __future__ import annotations

import calendar
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import ANY_SESSION
from tests.live.conftest import LiveServer
from usher.client import Client

pytestmark = pytest.mark.slow

PHP_DIR = Path(__file__).parent / "php"
INSTALL_SYSTEM_DEPS = Path(__file__).parents[2] / "scripts" / "install-system-deps"

APP = "demo-origin"
VIDEO = "mystream"
PASS = "unique_random_string_per_request"
VOD_APP = "demo-vod"
VOD_VIDEO = "sestore3/demo/path/filename.mp4"
VIEWER = "203.0.113.7"
HANDLE_TIME = re.compile(r"^\d+\.\d{4} seconds$")


def _php_ready() -> bool:
    php = shutil.which("php")
    if php is None:
        return False
    probe = subprocess.run(
        [php, "-r", "exit(function_exists('curl_init') ? 0 : 1);"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    return probe.returncode == 0


@pytest.fixture(scope="session")
def php() -> str:
    """The ``php`` binary with curl, installed once if missing.

    These tests are the only proof that the documented PHP client works, so a
    missing PHP is a failure to fix, not a reason to skip.
    """
    if not _php_ready():
        subprocess.run([str(INSTALL_SYSTEM_DEPS)], timeout=900, check=False)
    php = shutil.which("php")
    if php is None or not _php_ready():
        pytest.fail(
            "php-cli with php-curl is required for tests/live/test_php_client.py; "
            f"run {INSTALL_SYSTEM_DEPS} as root (or with sudo) and re-run."
        )
    return php


@pytest.fixture
def client(live_server: LiveServer) -> Iterator[Client]:
    with Client(
        live_server.api,
        cdn=live_server.cdn,
        api_key=live_server.api_key,
        secret=live_server.secret,
    ) as client:
        yield client


def run_php(
    php: str, script: str, server: LiveServer, *, secret: str | None = None, **values: str
) -> dict[str, Any]:
    """Run one PHP script and decode the JSON it prints.

    ``values`` become ``SEVU_<NAME>`` variables; a trailing ``_`` is dropped
    so that ``pass_`` can name the Python keyword ``pass``.

    The environment is built from scratch: libcurl honours ``http_proxy`` and
    friends, and a proxy from the developer's shell must not carry loopback
    requests.
    """
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "SEVU_URL": server.api,
        "SEVU_API_KEY": server.api_key,
        "SEVU_CDN": str(server.cdn),
        "SEVU_SECRET": server.secret if secret is None else secret,
        **{f"SEVU_{name.rstrip('_').upper()}": value for name, value in values.items()},
    }
    result = subprocess.run(
        [php, str(PHP_DIR / script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"{script} failed: {result.stderr}{result.stdout}"
    try:
        decoded = json.loads(result.stdout)
    except ValueError:
        pytest.fail(f"{script} printed something that is not JSON: {result.stdout!r}")
    assert isinstance(decoded, dict), decoded
    return decoded


def play(server: LiveServer, ticket: dict[str, Any], **overrides: str) -> httpx.Response:
    params = {
        "key": ticket["key"],
        "pass": ticket["pass"],
        "app": ticket["app"],
        "video": ticket["video"],
        "ip": VIEWER,
        **overrides,
    }
    return httpx.get(f"{server.url}/usher/check", params=params, timeout=10)


def live_ticket(client: Client) -> dict[str, Any]:
    created = client.call("sevu.request", app=APP, video=VIDEO, ip="", uses=5, **{"pass": PASS})
    assert created["code"] == 2001, created
    ticket: dict[str, Any] = created["ticket"]
    return ticket


def assert_envelope(body: dict[str, Any], code: int, status: str) -> None:
    # bool is an int subclass in Python; the spec wants a JSON integer.
    assert type(body["code"]) is int, body
    assert body["code"] == code, body
    assert body["status"] == status, body
    assert HANDLE_TIME.match(body["handle_time"]), body


def test_documented_errorcount_counts_successful_plays(
    php: str, live_server: LiveServer, client: Client
) -> None:
    ticket = live_ticket(client)
    plays = 3
    for _ in range(plays):
        allowed = play(live_server, ticket)
        assert allowed.status_code == 200, allowed.text
        assert allowed.json() == {"allowed": True, "reason": "", "session": ANY_SESSION}
    # A denied attempt matches key, app and video too; success=1 must leave it out.
    denied = play(live_server, ticket, **{"pass": "wrong"})
    assert denied.status_code == 403, denied.text
    assert denied.json() == {"allowed": False, "reason": "Invalid Auth Token"}

    body = run_php(
        php, "errorcount.php", live_server, key=ticket["key"], app=APP, video=VIDEO, pass_=PASS
    )

    assert_envelope(body, 2051, "success")
    assert body["message"] == "ScaleEngine Virtual Usher unsuccessful tickets attempts found"
    assert type(body["error_count"]) is int, body
    assert body["error_count"] == plays


def test_documented_errorcount_with_no_match(
    php: str, live_server: LiveServer, client: Client
) -> None:
    ticket = live_ticket(client)
    assert play(live_server, ticket).status_code == 200
    never_issued = "mystream.00000000000000.00000000"

    body = run_php(
        php, "errorcount.php", live_server, key=never_issued, app=APP, video=VIDEO, pass_=PASS
    )

    assert_envelope(body, 2050, "success")
    assert body["message"] == "ScaleEngine Virtual Usher no unsuccessful tickets attempts found"
    assert body["error_count"] == 0


def test_documented_errorcount_with_wrong_secret(php: str, live_server: LiveServer) -> None:
    # The documentation's own secret: well formed, but not this account's.
    wrong = "8fc8c48da81e6a2a06a9556379bf798af508dc0792497c678b4c3532ba8b637f"
    assert wrong != live_server.secret

    body = run_php(
        php,
        "errorcount.php",
        live_server,
        secret=wrong,
        key="mystream.00000000000000.00000000",
        app=APP,
        video=VIDEO,
        pass_=PASS,
    )

    assert_envelope(body, 3, "failure")
    assert body["message"] == "Failed HMAC-SHA256 Signature. Check your Private Key"
    assert "error_count" not in body


def test_php_request_for_a_vod_path(php: str, live_server: LiveServer, client: Client) -> None:
    before = int(time.time())
    body = run_php(php, "request_vod.php", live_server, pass_="vod-pass-1")

    assert_envelope(body, 2001, "success")
    ticket = body["ticket"]
    # Sent as "sestore3\/demo\/..."; stored and returned with plain slashes.
    assert ticket["video"] == VOD_VIDEO
    assert re.match(r"^sestore3_demo_path_filename_mp4\.[0-9a-f]{14}\.\d{8}$", ticket["key"])
    assert ticket["app"] == VOD_APP
    assert ticket["ip"] == "auto/24"
    assert ticket["uses"] == 5
    assert ticket["pass"] == "vod-pass-1"
    expire = calendar.timegm(time.strptime(ticket["expire_date"], "%Y-%m-%d %H:%M:%S"))
    assert before + 3600 <= expire <= int(time.time()) + 3600

    first = play(live_server, ticket, ip=VIEWER)
    assert first.status_code == 200, first.text
    assert first.json() == {"allowed": True, "reason": "", "session": ANY_SESSION}
    # auto/24 bound the first viewer's network: a neighbour plays, a stranger does not.
    assert play(live_server, ticket, ip="203.0.113.200").status_code == 200
    stranger = play(live_server, ticket, ip="198.51.100.1")
    assert stranger.status_code == 403
    assert stranger.json()["reason"] == "Invalid IP Address"

    status = client.call("sevu.status", key=ticket["key"])
    assert status["code"] == 2011, status
    assert status["ticket"]["bound_ips"] == ["203.0.113.0/24"]
    assert status["ticket"]["use_count"] == 2


def test_php_serialized_request_and_response(
    php: str, live_server: LiveServer, client: Client
) -> None:
    ticket = live_ticket(client)
    for _ in range(2):
        assert play(live_server, ticket).status_code == 200
    assert play(live_server, ticket, **{"pass": "wrong"}).status_code == 403

    found = run_php(php, "php_serialized.php", live_server, key=ticket["key"])

    assert_envelope(found, 2051, "success")
    assert found["message"] == "ScaleEngine Virtual Usher unsuccessful tickets attempts found"
    assert found["error_count"] == 2

    # A different key, so not a byte-identical request within the same second.
    missing = run_php(
        php, "php_serialized.php", live_server, key="mystream.00000000000000.00000000"
    )

    assert_envelope(missing, 2050, "success")
    assert missing["error_count"] == 0


def test_php_client_every_accepted_expire_form_in_every_encoding(
    php: str, live_server: LiveServer
) -> None:
    results = run_php(php, "request_forms.php", live_server)["results"]
    forms = {result["form"] for result in results}
    assert {"rfc2822", "iso8601", "utc", "day", "weeks"} <= forms
    for result in results:
        answer = result["answer"]
        where = f"{result['form']} {result['sent']!r} sent {result['encoding']}: {answer}"
        assert isinstance(answer, dict) and answer["code"] == 2001, where
        ticket = answer["ticket"]
        assert ticket["video"].startswith("café-"), where
        # PHP's strtotime() is what the client meant; relative forms may be a
        # second or two apart (the server's clock reads "now" a little later).
        meant = calendar.timegm(time.strptime(result["strtotime"], "%Y-%m-%d %H:%M:%S"))
        stored = calendar.timegm(time.strptime(ticket["expire_date"], "%Y-%m-%d %H:%M:%S"))
        if result["form"] == "date":
            meant = meant - meant % 86400  # a bare date is that day's midnight, UTC
        assert abs(stored - meant) <= 2, where
