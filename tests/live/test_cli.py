"""The ``usher`` command line against real processes and a real database."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx
import pytest

import usher as usher_package
from tests.helpers import free_port
from tests.live.conftest import USHER, LiveServer, usher
from usher.storage import migrations

pytestmark = pytest.mark.slow


def call(
    server: LiveServer, *args: str, secret: str | None = None
) -> tuple[int, dict[str, object]]:
    env = {
        **os.environ,
        "USHER_URL": server.api,
        "USHER_CDN": str(server.cdn),
        "USHER_API_KEY": server.api_key,
        "USHER_SECRET": secret or server.secret,
    }
    result = subprocess.run(
        [*USHER, "call", *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    return result.returncode, json.loads(result.stdout)


def test_account_create_json_prints_exactly_the_four_values(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'a.db'}"
    out = usher("account", "create", "--username", "pub", "--json", "--database", database).stdout
    created = json.loads(out)
    assert set(created) == {"cdn", "username", "api_key", "secret"}
    assert created["cdn"] == 1 and created["username"] == "pub"
    assert len(created["api_key"]) == 32 and created["api_key"].isalnum()
    assert created["api_key"] == created["api_key"].upper()
    assert len(created["secret"]) == 64 and int(created["secret"], 16) >= 0

    second = json.loads(
        usher(
            "account", "create", "--username", "other", "--cdn", "158", "--api-key",
            "APX4GKLM0RKQLSP2FBO1ROPKSSW47DZE", "--secret", "s" * 64, "--json",
            "--database", database,
        ).stdout
    )  # fmt: skip
    assert second == {
        "cdn": 158,
        "username": "other",
        "api_key": "APX4GKLM0RKQLSP2FBO1ROPKSSW47DZE",
        "secret": "s" * 64,
    }
    third = json.loads(
        usher("account", "create", "--username", "third", "--json", "--database", database).stdout
    )
    assert third["cdn"] == 159  # next free integer


def test_account_create_refuses_duplicates_and_bad_names(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'a.db'}"
    usher("account", "create", "--username", "pub", "--database", database)
    for args in (["--username", "pub"], ["--username", "has-dash"], ["--username", ""]):
        result = subprocess.run(
            [*USHER, "account", "create", *args, "--database", database],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 2
        assert result.stderr.startswith("usher: ")
        assert "Traceback" not in result.stderr


def test_list_never_shows_secrets(live_server: LiveServer) -> None:
    listed = usher("account", "list", "--database", live_server.database).stdout
    assert live_server.api_key in listed
    assert live_server.secret not in listed
    rows = json.loads(usher("account", "list", "--json", "--database", live_server.database).stdout)
    assert rows == [
        {"cdn": live_server.cdn, "username": "demo", "api_key": live_server.api_key,
         "disabled": False}
    ]  # fmt: skip


def test_call_rotate_and_disable(live_server: LiveServer) -> None:
    code, body = call(
        live_server, "sevu.request", "app=demo-live", "video=mystream", "pass=pw", "ip=", "uses=2"
    )
    assert code == 0 and body["code"] == 2001
    ticket = body["ticket"]
    assert isinstance(ticket, dict)
    code, body = call(live_server, "sevu.errorcount", f"key={ticket['key']}")
    assert code == 0 and body["code"] == 2050

    rotated = json.loads(
        usher(
            "account", "rotate-secret", "--cdn", str(live_server.cdn), "--json",
            "--database", live_server.database,
        ).stdout
    )  # fmt: skip
    assert rotated["secret"] != live_server.secret
    code, body = call(live_server, "sevu.errorcount")
    assert code == 1 and body["code"] == 3  # the old secret no longer signs
    code, body = call(live_server, "sevu.errorcount", "ip=", secret=rotated["secret"])
    assert code == 0 and body["code"] == 2050
    live_server.secret = rotated["secret"]

    usher("account", "disable", "--username", "demo", "--database", live_server.database)
    code, body = call(live_server, "sevu.errorcount", "app=")
    assert code == 1 and body["code"] == 5
    check = httpx.get(
        f"{live_server.url}/usher/check",
        params={"key": ticket["key"], "pass": "pw", "app": "demo-live", "video": "mystream"},
    )
    assert check.status_code == 403
    assert check.json()["reason"] == "Ticket revoked"

    usher("account", "enable", "--cdn", str(live_server.cdn), "--database", live_server.database)
    code, body = call(live_server, "sevu.errorcount", "video=")
    assert code == 0 and body["code"] == 2051  # the refused check above is counted


def test_call_explains_missing_credentials() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("USHER_")}
    result = subprocess.run(
        [*USHER, "call", "sevu.errorcount"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "Missing credentials: --cdn/USHER_CDN" in result.stderr


def test_db_migrate_and_newer_schema_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    out = usher("db", "migrate", "--database", f"sqlite:///{path}").stdout
    # A fresh file ends at the newest migration shipped, however many there are.
    assert f"schema version {migrations.load('sqlite')[-1].version}." in out
    with sqlite3.connect(path) as db:
        db.execute("UPDATE schema_version SET version = 99")
    result = subprocess.run(
        [*USHER, "serve", "--port", str(free_port()), "--database", f"sqlite:///{path}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "schema version 99" in result.stdout + result.stderr
    assert "Upgrade Usher" in result.stdout + result.stderr


def test_db_prune_says_what_it_deleted_and_what_a_dry_run_would(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    url = f"sqlite:///{path}"
    usher("db", "migrate", "--database", url)
    old, recent = int(time.time()) - 10 * 86400, int(time.time()) - 60
    with sqlite3.connect(path) as db:
        db.execute(
            "INSERT INTO accounts (cdn, username, api_key, secret, disabled, created_at)"
            " VALUES (1, 'demo', 'k', 's', 0, 0)"
        )
        for at in (old, old, recent):
            db.execute(
                "INSERT INTO attempts (cdn, at, key, pass, ip, video, app, appinst, pageurl,"
                " refurl, success, reason, server_ip)"
                " VALUES (1, ?, 'k', '', '10.0.0.1', 'v', 'demo-live', '', '', '', 0, 'r', '')",
                (at,),
            )
        for at in (old, old, old, recent):
            db.execute(
                "INSERT INTO publish_log (cdn, at, ip, app, stream, login, allowed, reason,"
                " server, server_ip) VALUES (1, ?, '10.0.0.1', 'demo-live', 'cam', '', 0,"
                " 'no_credentials', 'srs', '')",
                (at,),
            )
    dry = usher("db", "prune", "--attempts-older-than", "7d", "--dry-run", "--database", url)
    assert dry.stdout.startswith("2 attempts were logged before ")
    assert dry.stdout.rstrip().endswith("nothing was deleted.")
    done = usher("db", "prune", "--attempts-older-than", "7d", "--database", url).stdout
    assert re.search(
        r"Deleted 2 attempts logged before .*, with 0 sessions that ended and 3 publishes "
        r"logged before it, in \d+\.\d s\.",
        done,
    ), done
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM publish_log").fetchone() == (1,)
        assert db.execute("SELECT COUNT(*) FROM attempts").fetchone() == (1,)


def _serve_demo(cwd: Path, port: int) -> tuple[subprocess.Popen[str], list[str]]:
    """``usher serve --demo`` in ``cwd``, healthy, and the banner it printed."""
    # The usher under test, wherever cwd is (a relative PYTHONPATH=src is not).
    here = str(Path(usher_package.__file__).parents[1])
    path = os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))
    process = subprocess.Popen(
        [*USHER, "serve", "--demo", "--port", str(port), "--log-level", "warning"],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": path},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    banner: list[str] = []
    while len(banner) < 40 and "sevu.errorcount" not in "".join(banner[-1:]):
        banner.append(process.stdout.readline())
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.05)
    return process, [line.rstrip("\n") for line in banner]


def _block(banner: list[str], title: str) -> dict[str, str]:
    """The ``  name value`` lines under the line starting with ``title``."""
    start = next(i for i, line in enumerate(banner) if line.startswith(title)) + 1
    block: dict[str, str] = {}
    for line in banner[start:]:
        if not line.startswith("  "):
            break
        name, value = line.split(maxsplit=1)
        block[name] = value
    return block


def _allowed(played: tuple[int, bytes]) -> bool:
    """An allowed check's answer: 200 and the live session it opened."""
    status, body = played
    return (
        status == 200
        and re.fullmatch(rb'\{"allowed":true,"reason":"","session":"[0-9a-f]{16}"\}', body)
        is not None
    )


def _play(curl_line: str) -> tuple[int, bytes]:
    """Run the printed curl line as a user pasting it would (through a shell)
    and return the status and body it shows."""
    if shutil.which("curl") is None:  # the line's URL, fetched as curl would
        response = httpx.get(shlex.split(curl_line)[-1])
        return response.status_code, response.content
    shown = subprocess.run(
        ["sh", "-c", curl_line], capture_output=True, timeout=30, check=True
    ).stdout
    head, _, body = shown.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_serve_demo_prints_a_working_account_and_ticket(tmp_path: Path) -> None:
    port = free_port()
    process, banner = _serve_demo(tmp_path, port)
    try:
        values = _block(banner, "Usher demo account")
        assert set(values) == {"cdn", "username", "api_key", "secret"}
        ticket = _block(banner, "Demo ticket")
        assert set(ticket) == {"key", "pass", "app", "video", "expires"}
        assert banner[[line.startswith("Demo ticket") for line in banner].index(True)] == (
            "Demo ticket (new; each start reuses it while it is valid):"
        )
        curl = [line.strip() for line in banner if line.startswith("  curl ")]
        assert len(curl) == 1
        assert ticket["key"] in curl[0] and f"127.0.0.1:{port}" in curl[0]
        assert _allowed(_play(curl[0]))
        assert _play(curl[0].replace("demo-pass", "wrong")) == (
            403,
            b'{"allowed":false,"reason":"Invalid Auth Token"}',
        )
        exports = dict(
            item.split("=", 1)
            for line in banner
            if line.startswith("  export ")
            for item in line.split()[1:]
        )
        assert exports == {
            "USHER_URL": f"http://127.0.0.1:{port}/api",
            "USHER_CDN": values["cdn"],
            "USHER_API_KEY": values["api_key"],
            "USHER_SECRET": values["secret"],
        }
        assert any(".venv/bin/usher call sevu.request app=demo-live" in line for line in banner)
        server = LiveServer(
            url=f"http://127.0.0.1:{port}",
            database=f"sqlite:///{tmp_path / 'usher.db'}",
            cdn=int(values["cdn"]),
            api_key=values["api_key"],
            secret=values["secret"],
            username=values["username"],
            process=process,  # type: ignore[arg-type]  # text-mode Popen; only killed here
            log=tmp_path / "unused.log",
        )
        code, body = call(server, "sevu.errorcount")
        assert code == 0 and body["error_count"] == 2  # the play and the wrong pass
        assert (tmp_path / "usher.db").exists()  # the SQLite default, in the cwd
    finally:
        process.terminate()
        process.wait(timeout=10)

    # A second start prints the same ticket, so a curl line copied earlier
    # keeps working; once that ticket is revoked, the next start makes another.
    process, again = _serve_demo(tmp_path, port)
    try:
        assert _block(again, "Usher demo account") == values
        assert _block(again, "Demo ticket") == ticket
        assert "Demo ticket (reused from the last start; " in "\n".join(again)
        assert [line.strip() for line in again if line.startswith("  curl ")] == curl
        assert _play(curl[0])[0] == 200
        code, body = call(server, "sevu.revoke", f"key={ticket['key']}")
        assert code == 0, body
    finally:
        process.terminate()
        process.wait(timeout=10)
    process, third = _serve_demo(tmp_path, port)
    try:
        renewed = _block(third, "Demo ticket")
        assert renewed["key"] != ticket["key"]
        assert _allowed(_play(next(line.strip() for line in third if line.startswith("  curl "))))
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_serve_refuses_an_empty_callback_allow_list(tmp_path: Path) -> None:
    result = subprocess.run(
        [*USHER, "serve", "--port", str(free_port()), "--database", f"sqlite:///{tmp_path}/e.db"],
        capture_output=True,
        text=True,
        env={**os.environ, "USHER_CALLBACK_ALLOW": ""},
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "USHER_CALLBACK_ALLOW is set but empty" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_sdk_never_replays_an_identical_call_within_a_second(live_server: LiveServer) -> None:
    from usher.client import Client

    frozen = time.time()
    with Client(
        live_server.api,
        cdn=live_server.cdn,
        api_key=live_server.api_key,
        secret=live_server.secret,
        clock=lambda: frozen,
    ) as client:
        answers = [client.call("sevu.errorcount", key="k")["code"] for _ in range(3)]
    assert answers == [2050, 2050, 2050]
