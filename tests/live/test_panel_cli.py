"""``usher account set-panel-password`` (and what rotate-secret does to panel
sessions), run as real processes against a real SQLite file."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

from tests.live.conftest import USHER, usher
from usher.passwords import verify_password
from usher.storage.base import PanelSession
from usher.storage.sqlite import SQLiteStorage

pytestmark = pytest.mark.slow

PASSWORD = "a long enough passphrase"


def run(*args: str, stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*USHER, *args], input=stdin, capture_output=True, text=True, timeout=60, check=False
    )


async def _stored(path: Path, cdn: int) -> str | None:
    storage = SQLiteStorage(str(path))
    await storage.open()
    try:
        return await storage.get_panel_password(cdn)
    finally:
        await storage.close()


async def _add_session(path: Path, cdn: int, token_hash: bytes) -> None:
    storage = SQLiteStorage(str(path))
    await storage.open()
    try:
        await storage.create_panel_session(PanelSession(token_hash, cdn, 1, 1))
    finally:
        await storage.close()


async def _has_session(path: Path, token_hash: bytes) -> bool:
    storage = SQLiteStorage(str(path))
    await storage.open()
    try:
        return await storage.get_panel_session(token_hash) is not None
    finally:
        await storage.close()


@pytest.fixture
def account(tmp_path: Path) -> tuple[Path, str, int]:
    path = tmp_path / "p.db"
    database = f"sqlite:///{path}"
    created = json.loads(
        usher("account", "create", "--username", "pub", "--json", "--database", database).stdout
    )
    return path, database, int(created["cdn"])


def test_set_panel_password_from_stdin(account: tuple[Path, str, int]) -> None:
    path, database, cdn = account
    asyncio.run(_add_session(path, cdn, b"s" * 32))
    result = run(
        "account",
        "set-panel-password",
        "--cdn",
        str(cdn),
        "--database",
        database,
        stdin=PASSWORD + "\n",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"Set the panel password of cdn {cdn} (pub).",
        "Signed out 1 panel session of this account.",
    ]
    assert PASSWORD not in result.stdout + result.stderr
    stored = asyncio.run(_stored(path, cdn))
    assert stored is not None and PASSWORD not in stored
    assert verify_password(PASSWORD, stored)
    assert not asyncio.run(_has_session(path, b"s" * 32))

    cleared = run(
        "account",
        "set-panel-password",
        "--username",
        "pub",
        "--clear",
        "--database",
        database,
        stdin="",
    )
    assert cleared.returncode == 0, cleared.stderr
    assert "Removed the panel password of" in cleared.stdout
    assert asyncio.run(_stored(path, cdn)) is None


@pytest.mark.parametrize(
    ("stdin", "message"),
    [
        ("short\n", "The panel password is 5 characters long; use at least 10"),
        ("", "No password on standard input"),
    ],
)
def test_refused_passwords_change_nothing(
    account: tuple[Path, str, int], stdin: str, message: str
) -> None:
    path, database, cdn = account
    result = run(
        "account", "set-panel-password", "--cdn", str(cdn), "--database", database, stdin=stdin
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert asyncio.run(_stored(path, cdn)) is None


def test_unknown_account_is_named(account: tuple[Path, str, int]) -> None:
    _, database, _ = account
    result = run(
        "account", "set-panel-password", "--cdn", "999", "--database", database, stdin=PASSWORD
    )
    assert result.returncode == 2
    assert "No account with cdn 999" in result.stderr


def test_rotating_the_secret_signs_out_the_panel(account: tuple[Path, str, int]) -> None:
    path, database, cdn = account
    asyncio.run(_add_session(path, cdn, b"r" * 32))
    usher("account", "rotate-secret", "--cdn", str(cdn), "--database", database)
    assert not asyncio.run(_has_session(path, b"r" * 32))
