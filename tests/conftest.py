"""Fixtures shared by every test: a fresh database, an app, signed calls.

``make test`` runs the suite on two pytest-xdist workers (``-n 2 --dist
loadgroup``); each worker has its own PostgreSQL cluster (a session
fixture) and takes the ports of the servers it starts from its own block
(``tests.helpers.free_port``). Tests that share an expensive module fixture
or bound a duration carry an ``xdist_group``, so that each group runs on
one worker, one test after another:

* ``timing``: the tests that assert something happens within a time (the
  streaming, multi-node, hostile-client, durability and retention tests,
  the benchmark's own run, and a few storage tests), so that no two of
  them compete for the cores;
* ``browser``: the panel in Chromium (one browser, not one a worker);
* ``deploy``: the wheel build and its wheelhouse, made once.
"""

from __future__ import annotations

import functools
import json
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import settings

from tests.helpers import DEMO_CDN, NOW
from tests.pgcluster import PostgresCluster, start_cluster
from usher import accounts, passwords
from usher.commands import addstreamuser
from usher.config import Settings
from usher.protocol.signing import sign_request
from usher.storage import storage_for_url
from usher.storage.postgres import PostgresStorage
from usher.tickets.model import Account
from usher.web import publishing
from usher.web.app import UsherApp, create_app

#: The credentials of the ScaleEngine documentation's PHP example.
DOC_CDN = 158
DOC_API_KEY = "APX4GKLM0RKQLSP2FBO1ROPKSSW47DZE"
DOC_SECRET = "8fc8c48da81e6a2a06a9556379bf798af508dc0792497c678b4c3532ba8b637f"

# CI machines are shared and noisy: a per-example deadline would make the
# property tests flaky without making them stricter. Speed lives in bench/.
settings.register_profile("usher", deadline=None)
settings.load_profile("usher")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Clock:
    """A settable clock: tests move time instead of sleeping."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "usher.db"


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    """A throw-away PostgreSQL server, started on first use, stopped at session end."""
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def pg_url(pg_cluster: PostgresCluster) -> Iterator[str]:
    """A migrated PostgreSQL database holding no rows, for this test alone."""
    name = pg_cluster.take_database()
    yield pg_cluster.url(name)
    pg_cluster.give_back(name)


@pytest.fixture
async def pg_demo(pg_url: str) -> AsyncIterator[PostgresStorage]:
    """An open PostgreSQL storage with the ``demo`` account (``DEMO_CDN``)."""
    storage = PostgresStorage(pg_url)
    await storage.open()
    await storage.create_account(
        username="demo", api_key="DEMOKEY", secret="s", cdn=DEMO_CDN, now=NOW
    )
    yield storage
    await storage.close()


#: Every backend the API and live tests run against.
BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, db_path: Path) -> str:
    """A fresh database of each backend in turn (the test runs once per backend)."""
    if request.param == "sqlite":
        return f"sqlite:///{db_path}"
    url: str = request.getfixturevalue("pg_url")
    return url


@dataclass
class Harness:
    """An in-process Usher with one account, and helpers to call it."""

    app: UsherApp
    http: httpx.AsyncClient
    account: Account
    clock: Clock
    calls: int = 0

    async def call(self, command: str, **fields: Any) -> tuple[int, dict[str, Any]]:
        """Send a correctly signed command as the PHP client would.

        Identical requests in one second would share a signature (and be
        refused as replays, correctly), so each call steps the timestamp
        back a little within the window. ``account=`` signs as another
        account; ``timestamp=`` overrides the timestamp.
        """
        who: Account = fields.pop("account", None) or self.account
        timestamp: int | None = fields.pop("timestamp", None)
        self.calls += 1
        request: dict[str, object] = {
            "command": command,
            "api_key": who.api_key,
            "timestamp": int(self.clock()) - self.calls % 250 if timestamp is None else timestamp,
            "cdn": who.cdn,
            **fields,
        }
        body = sign_request(request, who.secret)
        response = await self.http.post("/api", files={"json": (None, body)})
        return response.status_code, json.loads(response.text)

    def unsigned(self, command: str, **fields: object) -> dict[str, object]:
        """A request as the PHP client builds it before signing, dated now."""
        return {
            "command": command,
            "api_key": self.account.api_key,
            "timestamp": int(self.clock()),
            "cdn": self.account.cdn,
            **fields,
        }

    async def post_json_field(self, text: str | bytes) -> tuple[int, dict[str, Any]]:
        response = await self.http.post("/api", files={"json": (None, text)})
        return response.status_code, json.loads(response.text)

    async def ticket(self, **overrides: object) -> dict[str, Any]:
        fields: dict[str, object] = {
            "app": f"{self.account.username}-live",
            "video": "mystream",
            "pass": "pw",
            "ip": "",
            "uses": 0,
        }
        fields.update(overrides)
        status, body = await self.call("sevu.request", **fields)
        assert status == 200, body
        ticket: dict[str, Any] = body["ticket"]
        return ticket

    async def check(self, **params: str) -> tuple[int, dict[str, Any]]:
        response = await self.http.get("/usher/check", params=params)
        return response.status_code, json.loads(response.text)


@pytest.fixture
async def harness(database_url: str, clock: Clock) -> AsyncIterator[Harness]:
    app = create_app(Settings(), storage_for_url(database_url), clock=clock)
    async with app.running():
        account = await accounts.create(
            app.state.storage, "demo", cdn=DOC_CDN, api_key=DOC_API_KEY, secret=DOC_SECRET
        )
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://usher.test") as http:
            yield Harness(app, http, account, clock)


@pytest.fixture
def cheap_publisher_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stream users' passes (and the decoy) hashed at the cheapest scrypt
    cost ``verify_password`` accepts: the same code, about 30 times faster,
    for suites that add publishers and deny publishes by the hundred."""
    cheap = functools.partial(passwords.hash_password, log2_n=passwords.MIN_LOG2_N)
    decoy = cheap(secrets.token_urlsafe(16))
    monkeypatch.setattr(addstreamuser, "hash_password", cheap)
    monkeypatch.setattr(publishing, "dummy_hash", lambda: decoy)
