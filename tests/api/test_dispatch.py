"""When a command runs relative to the spending of its signature, and
which account copy a signature may be verified with.

A safe command (only reads) runs while the replay-protection write commits,
and its answer waits for that commit; any other command runs only after it.
A node's copy of an account may accept a request, and only through the
claim; every refusal is decided on the account's row.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest

from tests.conftest import DOC_API_KEY, DOC_CDN, DOC_SECRET
from usher import accounts
from usher.commands import COMMANDS, SAFE_COMMANDS
from usher.commands.base import Result
from usher.commands.dispatch import CLAIM_TRIES, execute
from usher.protocol.errors import (
    BadSignature,
    Replayed,
    StorageBusy,
    TimestampOutOfRange,
    Unauthorized,
)
from usher.protocol.signing import sign_request
from usher.storage import storage_for_url
from usher.storage.base import Claim, Storage
from usher.tickets.model import Account
from usher.web.body import parse_request

pytestmark = pytest.mark.anyio

#: The storage methods a safe command may call: they change nothing a caller
#: can see (``count_attempts`` may add a count filter, a cache of exact counts).
READS = frozenset(
    {
        "cached_account",
        "get_account",
        "claim_signature",
        "get_ticket",
        "count_viewers",
        "search_tickets",
        "list_attempts",
        "count_attempts",
        "list_sessions",
        "list_stream_users",
        "get_stream_user",
    }
)
#: Fields each safe command is run with below (the others need none);
#: ``KEY`` stands for the key of a ticket the test has made.
KEY = object()
SAFE_FIELDS: dict[str, dict[str, object]] = {
    "sevu.status": {"key": KEY},
    "sevu.errorlog": {"key": KEY},
    "sevu.retrievestreamuser": {"streamuser_id": 1},
}
#: How long a test waits for what the code under test should do at once.
PATIENCE_S = 5.0


class Watched:
    """A storage that records each method called and can hold the claim.

    ``claim_gate``, when set, is awaited before the signature is spent;
    ``claim_answer`` replaces the claim's result; ``claim_error`` is raised
    in its place. ``copies`` replace the account copies ``cached_account``
    gives (SQLite keeps none; a PostgreSQL node does, possibly out of date).
    """

    def __init__(self, inner: Storage) -> None:
        self._inner = inner
        self.called: list[str] = []
        self.claim_gate: asyncio.Event | None = None
        self.claim_answer: Claim | None = None
        self.claim_error: Exception | None = None
        self.copies: dict[int, Account] = {}

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._inner, name)

        async def recorded(*args: Any, **kwargs: Any) -> Any:
            self.called.append(name)
            return await method(*args, **kwargs)

        return recorded

    def cached_account(self, cdn: int) -> Account | None:
        self.called.append("cached_account")
        return self.copies[cdn] if cdn in self.copies else self._inner.cached_account(cdn)

    async def claim_signature(
        self, digest: bytes, *, now: int, expires_at: int, account: Account
    ) -> Claim:
        self.called.append("claim_signature")
        if self.claim_gate is not None:
            await asyncio.wait_for(self.claim_gate.wait(), PATIENCE_S)
        if self.claim_error is not None:
            raise self.claim_error
        claimed = await self._inner.claim_signature(
            digest, now=now, expires_at=expires_at, account=account
        )
        self.called.append("claimed")
        return claimed if self.claim_answer is None else self.claim_answer

    async def count_attempts(self, cdn: int, where: Any) -> int:
        self.called.append("count_attempts")
        if self.claim_gate is not None:
            self.claim_gate.set()
        return await self._inner.count_attempts(cdn, where)

    async def insert_ticket(self, ticket: Any) -> None:
        self.called.append("insert_ticket")
        await self._inner.insert_ticket(ticket)


@pytest.fixture
async def watched(tmp_path: Path) -> AsyncIterator[Watched]:
    storage = storage_for_url(f"sqlite:///{tmp_path / 'usher.db'}")
    await storage.open()
    try:
        await accounts.create(storage, "demo", cdn=DOC_CDN, api_key=DOC_API_KEY, secret=DOC_SECRET)
        yield Watched(storage)
    finally:
        await storage.close()


#: A ticket's fields for ``sevu.request``.
TICKET: dict[str, object] = {"app": "demo-live", "video": "v", "pass": "p", "ip": "", "uses": 0}


async def run(storage: Watched, command: str, **fields: object) -> Result:
    return await run_signed(storage, command, fields)


async def run_signed(
    storage: Watched,
    command: str,
    fields: dict[str, object],
    *,
    secret: str = DOC_SECRET,
    timestamp: int | None = None,
) -> Result:
    now = int(time.time())
    request: dict[str, object] = {
        "command": command,
        "api_key": DOC_API_KEY,
        "timestamp": now if timestamp is None else timestamp,
        "cdn": DOC_CDN,
        **fields,
    }
    signed = parse_request(sign_request(request, secret).encode(), "json")
    # Watched forwards every Storage method, recording it.
    return await execute(signed, cast(Storage, storage), now=now, tolerance=300)


async def test_a_safe_command_runs_while_its_signature_is_spent(watched: Watched) -> None:
    # The claim waits until the count has started: run one after the other,
    # the claim would wait for a count that never comes, and time out.
    watched.claim_gate = asyncio.Event()
    result = await run(watched, "sevu.errorcount", ip="192.0.2.1")
    assert result.payload["error_count"] == 0
    assert watched.called.index("count_attempts") < watched.called.index("claimed")


async def test_a_safe_commands_answer_is_dropped_when_the_signature_was_spent(
    watched: Watched,
) -> None:
    watched.claim_answer = Claim.REPLAYED
    with pytest.raises(Replayed):
        await run(watched, "sevu.errorcount")
    assert "count_attempts" in watched.called


async def test_the_claims_own_failure_wins_over_the_commands_answer(watched: Watched) -> None:
    watched.claim_error = StorageBusy("The writer is behind.")
    with pytest.raises(StorageBusy):
        # The command itself fails too (a field it refuses); nobody sees that.
        await run(watched, "sevu.errorcount", limit=-1)
    await asyncio.sleep(0)


async def test_a_command_that_changes_something_runs_only_after_its_signature_is_spent(
    watched: Watched,
) -> None:
    watched.claim_answer = Claim.REPLAYED
    with pytest.raises(Replayed):
        await run(watched, "sevu.request", **{**TICKET, "pass": "p"})
    assert "insert_ticket" not in watched.called

    watched.claim_answer = None
    await run(watched, "sevu.request", **{**TICKET, "pass": "q"})
    assert watched.called.index("claimed", 3) < watched.called.index("insert_ticket")


@pytest.mark.parametrize("command", sorted(SAFE_COMMANDS))
async def test_a_safe_command_only_reads(
    watched: Watched, command: str, cheap_publisher_hashes: None
) -> None:
    assert command in COMMANDS
    made = await run(watched, "sevu.request", **TICKET)
    ticket = made.payload["ticket"]
    assert isinstance(ticket, dict)
    await run(watched, "sevu.addstreamuser", app="demo-live", stream="s", user="u", **{"pass": "p"})
    fields = {k: ticket["key"] if v is KEY else v for k, v in SAFE_FIELDS.get(command, {}).items()}
    watched.called.clear()
    await run(watched, command, **fields)  # raises unless the command ran through
    assert set(watched.called) - {"claimed"} <= READS
    assert "claimed" in watched.called


# -- the account a signature is verified with ---------------------------------


async def account_now(watched: Watched) -> Account:
    account = await watched._inner.get_account(DOC_CDN)
    assert account is not None
    return account


async def test_an_up_to_date_copy_saves_the_account_read(watched: Watched) -> None:
    watched.copies[DOC_CDN] = await account_now(watched)
    await run(watched, "sevu.errorcount", ip="192.0.2.1")
    assert "get_account" not in watched.called
    assert "claimed" in watched.called


async def test_a_copy_with_a_rotated_secret_accepts_nothing(
    watched: Watched, tmp_path: Path
) -> None:
    # Another node rotated the secret; this node's copy still has the old
    # one, and a request signed with it verifies against the copy.
    watched.copies[DOC_CDN] = await account_now(watched)
    await watched._inner.update_account(DOC_CDN, secret="rotated-elsewhere")
    with pytest.raises(BadSignature):
        await run(watched, "sevu.request", **TICKET)
    assert "insert_ticket" not in watched.called
    # The claim was made, found the row changed, and recorded nothing.
    assert watched.called.count("claim_signature") == 1
    with contextlib.closing(sqlite3.connect(tmp_path / "usher.db")) as db:
        assert db.execute("SELECT count(*) FROM used_signatures").fetchone() == (0,)
    # Signed with the new secret, the same request passes (the old copy
    # refuses it, the row accepts it).
    watched.called.clear()
    result = await run_signed(watched, "sevu.request", TICKET, secret="rotated-elsewhere")
    assert result.payload["ticket"]
    assert watched.called.index("get_account") < watched.called.index("claim_signature")


async def test_a_copy_never_refuses_what_the_row_accepts(watched: Watched) -> None:
    # A copy that says "disabled" (the account was enabled again elsewhere).
    disabled = await watched._inner.update_account(DOC_CDN, disabled=True)
    assert disabled is not None
    await watched._inner.update_account(DOC_CDN, disabled=False)
    watched.copies[DOC_CDN] = disabled
    result = await run(watched, "sevu.errorcount", ip="192.0.2.1")
    assert result.payload["error_count"] == 0


async def test_a_late_timestamp_is_refused_on_the_row(watched: Watched) -> None:
    # The copy verifies, but every refusal is decided on the row: here the
    # row is read before the timestamp is refused.
    watched.copies[DOC_CDN] = await account_now(watched)
    with pytest.raises(TimestampOutOfRange):
        await run_signed(watched, "sevu.errorcount", {}, timestamp=int(time.time()) - 3600)
    assert "get_account" in watched.called
    assert "claim_signature" not in watched.called


async def test_an_account_that_keeps_changing_is_busy_after_a_few_claims(
    watched: Watched,
) -> None:
    watched.claim_answer = Claim.ACCOUNT_CHANGED
    with pytest.raises(StorageBusy):
        await run(watched, "sevu.request", **TICKET)
    assert watched.called.count("claim_signature") == CLAIM_TRIES
    assert "insert_ticket" not in watched.called


async def test_two_postgresql_nodes_a_secret_rotated_on_one_is_the_others_at_once(
    pg_url: str,
) -> None:
    # Node B has a copy of the account (it served a request); node A rotates
    # the secret. B's very next request signed with the old secret is
    # refused, though B's copy would verify it, and one signed with the new
    # secret passes.
    node_a, node_b = storage_for_url(pg_url), storage_for_url(pg_url)
    await node_a.open()
    await node_b.open()
    try:
        await accounts.create(node_a, "demo", cdn=DOC_CDN, api_key=DOC_API_KEY, secret=DOC_SECRET)
        b = Watched(node_b)
        await run(b, "sevu.errorcount", ip="192.0.2.1")
        assert node_b.cached_account(DOC_CDN) is not None
        b.called.clear()
        await run(b, "sevu.errorcount", ip="192.0.2.2")
        assert "get_account" not in b.called  # B answers from its copy

        await node_a.update_account(DOC_CDN, secret="rotated-on-a")
        with pytest.raises(BadSignature):
            await run(b, "sevu.request", **TICKET)
        assert "insert_ticket" not in b.called
        made = await run_signed(b, "sevu.request", TICKET, secret="rotated-on-a")
        assert made.payload["ticket"]

        await node_a.update_account(DOC_CDN, disabled=True)
        with pytest.raises(Unauthorized):
            await run_signed(b, "sevu.errorcount", {}, secret="rotated-on-a")
    finally:
        await node_b.close()
        await node_a.close()
