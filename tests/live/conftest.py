"""Fixtures that run a real ``usher serve`` process on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.helpers import free_port
from usher.client import Client

USHER = [sys.executable, "-m", "usher"]


def usher(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run one ``usher`` CLI command and fail loudly if it fails."""
    result = subprocess.run(
        [*USHER, *args], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    assert result.returncode == 0, result.stderr
    return result


def request_ticket(client: Client, **fields: object) -> str:
    """Create a ticket (unlimited plays of demo-live/mystream with pass "pw",
    unless ``fields`` says otherwise) and return its key."""
    body = client.call(
        "sevu.request",
        **{"app": "demo-live", "video": "mystream", "pass": "pw", "ip": "", "uses": 0, **fields},
    )
    assert body["code"] == 2001, body
    key: str = body["ticket"]["key"]
    return key


@dataclass
class LiveServer:
    url: str
    database: str
    cdn: int
    api_key: str
    secret: str
    username: str
    process: subprocess.Popen[bytes]
    log: Path
    #: Extra environment of the ``usher serve`` process (see :func:`server_env`).
    env: dict[str, str] = field(default_factory=dict)

    @property
    def api(self) -> str:
        return self.url + "/api"

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def start_again(self) -> None:
        self.process = _start(self.url.rsplit(":", 1)[1], self.database, self.log, self.env)


# The most verbose logging, so the no-secret-in-logs check at teardown sees
# every line the server can write.
_VERBOSE = ("--log-level", "debug", "--access-log")


def _start(
    port: str, database: str, log: Path, extra_env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "USHER_DATABASE_URL": database, **(extra_env or {})}
    with log.open("ab") as out:
        process = subprocess.Popen(
            [*USHER, "serve", "--host", "127.0.0.1", "--port", port, *_VERBOSE],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"usher serve exited early:\n{log.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"usher serve did not become healthy:\n{log.read_text()}")


def query_database(url: str, sql: str) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` (no parameters, SQL both backends read alike) from
    the database a server used, read behind its back."""
    if url.startswith("sqlite:///"):
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as db:
            return db.execute(sql).fetchall()
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


@pytest.fixture
def server_env() -> dict[str, str]:
    """Extra environment of the ``live_server`` process; a test module
    overrides this fixture to run the server with other settings."""
    return {}


@pytest.fixture
def live_server(
    database_url: str, tmp_path: Path, server_env: dict[str, str]
) -> Iterator[LiveServer]:
    # Parametrised through database_url: once on SQLite, once on PostgreSQL.
    database = database_url
    created = json.loads(
        usher("account", "create", "--username", "demo", "--json", "--database", database).stdout
    )
    port = str(free_port())
    log = tmp_path / "server.log"
    server = LiveServer(
        url=f"http://127.0.0.1:{port}",
        database=database,
        cdn=created["cdn"],
        api_key=created["api_key"],
        secret=created["secret"],
        username=created["username"],
        process=_start(port, database, log, server_env),
        log=log,
        env=server_env,
    )
    secrets = {created["secret"]}
    try:
        yield server
    finally:
        secrets.add(server.secret)  # a test may have rotated it
        if server.process.poll() is None:
            server.process.terminate()
            try:
                server.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.process.kill()
    written = log.read_text(errors="replace")
    assert "GET /healthz" in written, "the server log is not being captured"
    for secret in secrets:
        assert secret not in written, "an account secret reached the server log"
    # Tickets in these tests use the pass "pw"; checks send it in the query.
    assert "pass=pw" not in written, "a ticket pass reached the access log"
