"""The ``usher`` command line against real processes and a real database."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.live.conftest import USHER, LiveServer, free_port, usher
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


def test_serve_demo_prints_a_working_account(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [*USHER, "serve", "--demo", "--port", str(port), "--log-level", "warning"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        banner = [process.stdout.readline() for _ in range(6)]
        values = dict(line.split()[:2] for line in banner[1:5])
        assert set(values) == {"cdn", "username", "api_key", "secret"}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.05)
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
        assert code == 0 and body["code"] == 2050
        assert (tmp_path / "usher.db").exists()  # the SQLite default, in the cwd
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
