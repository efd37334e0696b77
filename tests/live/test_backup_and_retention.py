"""Keeping data, against a real ``usher serve``: ``usher db backup`` while
checks are being answered, and background pruning on both backends."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.live.conftest import USHER, LiveServer, query_database, request_ticket
from usher.client import Client

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("timing")]

#: Bounds of the load thread: it stops after this many checks or seconds.
LOAD_MAX_CHECKS = 20_000
LOAD_MAX_SECONDS = 60.0
#: Filler attempts, so the backup takes many steps while checks go on.
FILLER = 100_000


def _client(server: LiveServer) -> Client:
    return Client(server.api, cdn=server.cdn, api_key=server.api_key, secret=server.secret)


def _insert_attempts(url: str, rows: list[tuple[Any, ...]]) -> None:
    """Attempts written behind the server's back (13 columns after ``id``)."""
    columns = (
        "cdn, at, key, pass, ip, video, app, appinst, pageurl, refurl, success, reason, server_ip"
    )
    if url.startswith("sqlite:///"):
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"), timeout=30)) as db:
            db.executemany(f"INSERT INTO attempts ({columns}) VALUES ({', '.join('?' * 13)})", rows)
            db.commit()
        return
    with psycopg.connect(url) as conn, conn.cursor() as cursor:
        cursor.executemany(
            f"INSERT INTO attempts ({columns}) VALUES ({', '.join(['%s'] * 13)})", rows
        )


class CheckLoad(threading.Thread):
    """Checks of one ticket, one after another, each marked by a unique
    ``pageurl``; remembers the marks the server acknowledged (HTTP 200)."""

    def __init__(self, server: LiveServer, key: str) -> None:
        super().__init__(daemon=True)
        self.url = server.url + "/usher/check"
        self.key = key
        self.acknowledged: list[str] = []
        self.failures: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + LOAD_MAX_SECONDS
        with httpx.Client(timeout=10) as http:
            for i in range(LOAD_MAX_CHECKS):
                if self.stop.is_set() or time.monotonic() > deadline:
                    return
                mark = f"load-{i}"
                params = {
                    "key": self.key, "pass": "pw", "app": "demo-live",
                    "video": "mystream", "pageurl": mark,
                }  # fmt: skip
                response = http.get(self.url, params=params)
                if response.status_code == 200:
                    self.acknowledged.append(mark)
                else:
                    self.failures.append(f"{response.status_code} {response.text}")


class TestBackupWhileServing:
    @pytest.fixture
    def database_url(self, db_path: Path) -> str:
        return f"sqlite:///{db_path}"  # usher db backup is for SQLite

    def test_the_copy_is_sound_and_holds_every_acknowledged_attempt(
        self, live_server: LiveServer, tmp_path: Path
    ) -> None:
        filler = [
            (None, 1_700_000_000 + i, f"filler.{i}", "x", "10.0.0.1", "v", "nobody-live",
             "", "p" * 200, "", False, "Invalid Auth Token", "")
            for i in range(FILLER)
        ]  # fmt: skip
        _insert_attempts(live_server.database, filler)
        with _client(live_server) as client:
            key = request_ticket(client)
        load = CheckLoad(live_server, key)
        load.start()
        try:
            while len(load.acknowledged) < 200 and load.is_alive():
                time.sleep(0.01)
            before = list(load.acknowledged)
            ids = dict(query_database(live_server.database, "SELECT pageurl, id FROM attempts"))
            copy = tmp_path / "backup.db"
            started = len(load.acknowledged)
            result = subprocess.run(
                [*USHER, "db", "backup", "--to", str(copy), "--database", live_server.database],
                capture_output=True, text=True, timeout=120, check=False,
            )  # fmt: skip
            during = len(load.acknowledged) - started
        finally:
            load.stop.set()
            load.join(timeout=30)
        assert result.returncode == 0, result.stderr
        assert not load.failures, load.failures[:5]
        # Checks were answered while the copy was being made.
        assert during > 0

        with contextlib.closing(sqlite3.connect(copy)) as db:
            assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            assert db.execute("PRAGMA journal_mode").fetchone() == ("delete",)
            marked = "SELECT pageurl, id FROM attempts WHERE pageurl LIKE 'load-%'"
            copied = dict(db.execute(marked))
            assert db.execute("SELECT COUNT(*) FROM attempts WHERE cdn IS NULL").fetchone() == (
                FILLER,
            )
        assert before, "no check was acknowledged before the backup"
        for mark in before:
            assert copied.get(mark) == ids[mark], mark
        assert not (copy.parent / (copy.name + ".partial")).exists()

        # A second backup to the same file needs --force.
        again = subprocess.run(
            [*USHER, "db", "backup", "--to", str(copy), "--database", live_server.database],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert again.returncode == 2 and "--force" in again.stderr

    def test_a_restored_copy_serves(self, live_server: LiveServer, tmp_path: Path) -> None:
        with _client(live_server) as client:
            key = request_ticket(client)
        copy = tmp_path / "backup.db"
        subprocess.run(
            [*USHER, "db", "backup", "--to", str(copy), "--database", live_server.database],
            capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
        # Restore as docs/operations.md says: stop, drop the -wal and -shm
        # files, put the copy in place, start.
        live_server.process.terminate()
        live_server.process.wait(timeout=10)
        path = Path(live_server.database.removeprefix("sqlite:///"))
        for suffix in ("-wal", "-shm"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)
        copy.replace(path)
        live_server.start_again()
        response = httpx.get(
            live_server.url + "/usher/check",
            params={"key": key, "pass": "pw", "app": "demo-live", "video": "mystream"},
        )
        assert response.status_code == 200, response.text


class TestBackgroundPruning:
    @pytest.fixture
    def server_env(self) -> dict[str, str]:
        return {"USHER_PRUNE_ATTEMPTS_OLDER_THAN": "1h"}

    def test_serve_prunes_old_attempts_and_counts_stay_exact(self, live_server: LiveServer) -> None:
        now = int(time.time())
        with _client(live_server) as client:
            key = request_ticket(client)
        old = [
            (live_server.cdn if i % 4 else None, now - 7200 - i, key, "pw" if i % 3 else "bad",
             "10.0.0.1", "mystream", "demo-live", "", "", "", bool(i % 3), "", "")
            for i in range(2500)
        ]  # fmt: skip
        _insert_attempts(live_server.database, old)
        for _ in range(5):  # recent attempts, which must stay
            played = httpx.get(
                live_server.url + "/usher/check",
                params={"key": key, "pass": "pw", "app": "demo-live", "video": "mystream"},
            )
            assert played.status_code in (200, 403), played.text
        # The pruner's first pass runs when the server starts.
        live_server.process.terminate()
        live_server.process.wait(timeout=10)
        live_server.start_again()
        deadline = time.monotonic() + 30
        cutoff = now - 3600
        while time.monotonic() < deadline:
            (left,) = query_database(
                live_server.database, f"SELECT COUNT(*) FROM attempts WHERE at < {cutoff}"
            )[0]
            if left == 0:
                break
            time.sleep(0.2)
        assert left == 0
        (kept,) = query_database(live_server.database, "SELECT COUNT(*) FROM attempts")[0]
        assert kept == 5
        with _client(live_server) as client:
            for fields, where in (
                ({}, "TRUE"),
                ({"success": "1"}, "success"),
                ({"app": "demo-live", "video": "mystream"}, "app = 'demo-live'"),
                ({"pass": "bad"}, "pass = 'bad'"),
            ):
                (expected,) = query_database(
                    live_server.database,
                    f"SELECT COUNT(*) FROM attempts WHERE cdn = {live_server.cdn} AND ({where})",
                )[0]
                body = client.call("sevu.errorcount", **fields)
                assert int(body.get("error_count", 0)) == expected, (fields, body)
        # The pass logs once it has finished, which may be a moment after
        # its last batch committed.
        deadline = time.monotonic() + 10
        while "Pruned 2500 attempts" not in live_server.log.read_text():
            assert time.monotonic() < deadline, live_server.log.read_text()[-2000:]
            time.sleep(0.1)
