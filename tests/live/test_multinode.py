"""Three real ``usher serve`` nodes on one PostgreSQL database.

Requests are spread over the nodes the way a load balancer would, and every
rule that must hold across nodes is checked on what the nodes answered and
on what the database holds afterwards:

* concurrent checks of a ticket with ``uses = N`` allow exactly N;
* two ``auto`` slots bind exactly two distinct networks;
* a signature accepted by one node is a replay (code 7) on every other;
* a revoke on one node denies checks, and open HLS sessions, on every node
  within 1 s;
* concurrent starts of a ticket with ``max_viewers = M`` open exactly M
  sessions, and a kick on one node ends a session on every node within 1 s;
* errorcount and errorlog on any node see every node's attempts;
* restarting PostgreSQL under load gives code 4 / 1000 (never a hang or a
  500 page), and the nodes serve again once it is back.

Each test prints one summary line; ``pytest -s`` shows them.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import free_port
from tests.live.conftest import _start, request_ticket, usher
from tests.pgcluster import PostgresCluster
from usher.client import Client
from usher.protocol.signing import sign_request

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("timing")]

NODES = 3
#: Bounds every wait on the nodes, so a hang fails the test instead.
HTTP_TIMEOUT = 10.0


_used_seconds: set[int] = set()
_used_lock = threading.Lock()


def _distinct_seconds() -> float:
    """A timestamp no earlier call used, at most 250 s old. Two identical
    commands signed in the same second are one signature, and every node
    rightly refuses the second as a replay."""
    with _used_lock:
        now = int(time.time())
        stamp = now
        while stamp in _used_seconds:
            stamp -= 1
        assert now - stamp < 250, "over 250 signed calls within the replay window"
        _used_seconds.add(stamp)
        return stamp


@dataclass
class Cluster:
    urls: list[str]
    database: str
    cdn: int
    api_key: str
    secret: str
    processes: list[subprocess.Popen[bytes]]
    logs: list[Path]

    def client(self, node: int) -> Client:
        return Client(
            self.urls[node] + "/api",
            cdn=self.cdn,
            api_key=self.api_key,
            secret=self.secret,
            clock=_distinct_seconds,
        )

    def call(self, node: int, command: str, **fields: Any) -> dict[str, Any]:
        with self.client(node) as client:
            return client.call(command, **fields)

    def ticket(self, **fields: Any) -> str:
        with self.client(0) as client:
            return request_ticket(client, **fields)


@pytest.fixture(scope="module")
def cluster(
    pg_cluster: PostgresCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """Three nodes for the whole module (each test makes its own tickets):
    starting them costs seconds, checking them milliseconds."""
    name = pg_cluster.take_database()
    pg_url = pg_cluster.url(name)
    created = json.loads(
        usher("account", "create", "--username", "demo", "--json", "--database", pg_url).stdout
    )
    ports = [str(free_port()) for _ in range(NODES)]
    folder = tmp_path_factory.mktemp("nodes")
    logs = [folder / f"node{n}.log" for n in range(NODES)]
    processes: list[subprocess.Popen[bytes]] = []
    try:
        # Started side by side: each waits until its /healthz answers.
        with ThreadPoolExecutor(NODES) as starting:
            for process in starting.map(
                lambda pl: _start(pl[0], pg_url, pl[1]), zip(ports, logs, strict=True)
            ):
                processes.append(process)
        yield Cluster(
            urls=[f"http://127.0.0.1:{port}" for port in ports],
            database=pg_url,
            cdn=created["cdn"],
            api_key=created["api_key"],
            secret=created["secret"],
            processes=processes,
            logs=logs,
        )
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        pg_cluster.give_back(name)
    for log in logs:
        written = log.read_text(errors="replace")
        assert "Traceback" not in written, f"{log.name} logged a traceback:\n{written[-3000:]}"
        assert created["secret"] not in written, "an account secret reached a node's log"


async def _storm(cluster: Cluster, params: list[dict[str, str]]) -> list[httpx.Response]:
    """Every check at once, request n to node n % NODES, each on its own connection."""
    limits = httpx.Limits(max_connections=len(params))
    async with httpx.AsyncClient(limits=limits, timeout=HTTP_TIMEOUT) as http:
        gate = asyncio.Event()

        async def one(n: int, p: dict[str, str]) -> httpx.Response:
            await gate.wait()
            return await http.get(cluster.urls[n % NODES] + "/usher/check", params=p)

        tasks = [asyncio.create_task(one(n, p)) for n, p in enumerate(params)]
        await asyncio.sleep(0.1)  # every task waits at the gate
        gate.set()
        return await asyncio.gather(*tasks)


def _check(key: str, ip: str, marker: str = "") -> dict[str, str]:
    return {"key": key, "pass": "pw", "app": "demo-live", "video": "mystream", "ip": ip,
            "pageurl": marker}  # fmt: skip


def test_concurrent_checks_on_all_nodes_allow_exactly_n(cluster: Cluster) -> None:
    uses, players = 7, 90
    key = cluster.ticket(uses=uses)
    responses = asyncio.run(_storm(cluster, [_check(key, "10.0.0.1")] * players))
    statuses = Counter(r.status_code for r in responses)
    allowed_by_node = Counter(n % NODES for n, r in enumerate(responses) if r.status_code == 200)
    print(
        f"\nuses={uses}: {players} concurrent checks over {NODES} nodes -> "
        f"{statuses[200]} allowed (per node {dict(sorted(allowed_by_node.items()))}), "
        f"{statuses[403]} refused"
    )
    assert statuses == {200: uses, 403: players - uses}
    refused = {r.json()["reason"] for r in responses if r.status_code == 403}
    assert refused == {"Ticket uses exhausted"}
    for node in range(NODES):
        assert cluster.call(node, "sevu.status", key=key)["use_count"] == uses
        assert cluster.call(node, "sevu.errorcount", key=key, success=1)["error_count"] == uses


def test_two_auto_slots_bind_two_networks_under_concurrent_first_plays(cluster: Cluster) -> None:
    players = 60
    key = cluster.ticket(ip="auto/24|auto/24")
    params = [_check(key, f"10.{n}.7.9") for n in range(players)]  # 60 distinct /24s
    responses = asyncio.run(_storm(cluster, params))
    statuses = Counter(r.status_code for r in responses)
    bound = cluster.call(2, "sevu.status", key=key)["bound_ips"]
    winners = sorted(params[n]["ip"] for n, r in enumerate(responses) if r.status_code == 200)
    print(
        f"\nauto/24|auto/24: {players} first plays from distinct /24s over {NODES} nodes -> "
        f"{statuses[200]} allowed {winners}, bound_ips {bound}"
    )
    assert statuses == {200: 2, 403: players - 2}
    assert len(bound) == 2 and len(set(bound)) == 2
    # The slots hold the winners' own /24s.
    assert sorted(bound) == sorted(ip.rsplit(".", 1)[0] + ".0/24" for ip in winners)


def test_a_signature_accepted_by_one_node_is_a_replay_on_every_other(cluster: Cluster) -> None:
    request = {
        "command": "sevu.errorcount",
        "api_key": cluster.api_key,
        "timestamp": int(time.time()),
        "cdn": cluster.cdn,
        "key": "no-such-key",
    }
    body = sign_request(request, cluster.secret)
    codes = []
    with httpx.Client(timeout=HTTP_TIMEOUT) as http:
        for url in [*cluster.urls, *cluster.urls]:
            codes.append(http.post(url + "/api", files={"json": (None, body)}).json()["code"])
    print(f"\none signed request sent to nodes 0,1,2,0,1,2 -> codes {codes}")
    assert codes[0] == 2050
    assert codes[1:] == [7] * (2 * NODES - 1)


def test_a_revoke_on_one_node_denies_on_every_node_within_a_second(cluster: Cluster) -> None:
    key = cluster.ticket()
    segment_headers = {
        "X-Original-URI": f"/demo-live/mystream/seg1.ts?key={key}&pass=pw",
        "X-Real-IP": "198.51.100.5",
    }
    with httpx.Client(timeout=HTTP_TIMEOUT) as http:
        # An HLS session opened on node 1, its segments served through every node.
        for url in cluster.urls:
            assert http.get(url + "/usher/auth-request", headers=segment_headers).status_code == 200
            assert http.get(url + "/usher/check", params=_check(key, "10.0.0.1")).status_code == 200
        assert cluster.call(0, "sevu.revoke", key=key)["code"] == 2021
        revoked_at = time.monotonic()
        pending = {(url, route) for url in cluster.urls for route in ("check", "hls")}
        seen: dict[tuple[str, str], float] = {}
        while pending and time.monotonic() - revoked_at < 1.0:
            for url, route in sorted(pending):
                if route == "check":
                    r = http.get(url + "/usher/check", params=_check(key, "10.0.0.1"))
                    denied = r.status_code == 403 and r.json()["reason"] == "Ticket revoked"
                else:
                    r = http.get(url + "/usher/auth-request", headers=segment_headers)
                    denied = r.status_code == 403
                if denied:
                    seen[(url, route)] = time.monotonic() - revoked_at
                    pending.discard((url, route))
            time.sleep(0.02)
    slowest = max(seen.values(), default=0.0)
    print(
        f"\nrevoke on node 0 -> checks and open HLS sessions denied on all {NODES} nodes; "
        f"slowest after {slowest * 1000:.0f} ms"
    )
    assert not pending, f"still allowed 1 s after the revoke: {sorted(pending)}"


def test_concurrent_starts_on_all_nodes_open_exactly_max_viewers(cluster: Cluster) -> None:
    viewers, players = 3, 40
    key = cluster.ticket(uses=0, max_viewers=viewers)
    responses = asyncio.run(_storm(cluster, [_check(key, f"10.0.0.{n}") for n in range(players)]))
    statuses = Counter(r.status_code for r in responses)
    allowed_by_node = Counter(n % NODES for n, r in enumerate(responses) if r.status_code == 200)
    print(
        f"\nmax_viewers={viewers}: {players} concurrent starts over {NODES} nodes -> "
        f"{statuses[200]} allowed (per node {dict(sorted(allowed_by_node.items()))}), "
        f"{statuses[403]} refused"
    )
    assert statuses == {200: viewers, 403: players - viewers}
    assert len({r.json()["session"] for r in responses if r.status_code == 200}) == viewers
    for node in range(NODES):
        log = cluster.call(node, "sevu.errorlog", key=key, limit=100)["attempts"]
        assert Counter((a["success"], a["reason"]) for a in log) == {
            (1, ""): viewers,
            (0, "Too many viewers"): players - viewers,
        }
        assert cluster.call(node, "sevu.sessions", key=key, open=1)["session_count"] == viewers


def test_a_kick_on_one_node_ends_the_session_on_every_node_within_a_second(
    cluster: Cluster,
) -> None:
    key = cluster.ticket(uses=0)
    with httpx.Client(timeout=HTTP_TIMEOUT) as http:
        started = http.get(cluster.urls[0] + "/usher/check", params=_check(key, "10.0.0.1"))
        assert started.status_code == 200, started.text
        session = started.json()["session"]
        recheck = {**_check(key, "10.0.0.1"), "session": session}
        # Every node has just seen the session open, and remembers it.
        for url in cluster.urls:
            assert http.get(url + "/usher/check", params=recheck).status_code == 200
        kick = cluster.call(0, "sevu.kick", key=key, session=session)
        kicked_at = time.monotonic()
        assert (kick["code"], kick["ended"]) == (2111, 1), kick
        # The node that ran the kick refuses at once.
        r = http.get(cluster.urls[0] + "/usher/check", params=recheck)
        assert (r.status_code, r.json()["reason"]) == (403, "Session ended")
        pending = set(cluster.urls[1:])
        seen: dict[str, float] = {}
        while pending and time.monotonic() - kicked_at < 1.0:
            for url in sorted(pending):
                r = http.get(url + "/usher/check", params=recheck)
                if r.status_code == 403 and r.json()["reason"] == "Session ended":
                    seen[url] = time.monotonic() - kicked_at
                    pending.discard(url)
                else:
                    assert r.status_code == 200, r.text
            time.sleep(0.02)
    print(
        f"\nkick on node 0 -> re-checks of the session refused on nodes 1 and 2 "
        f"after {', '.join(f'{seen[u] * 1000:.0f}' for u in sorted(seen))} ms"
    )
    assert not pending, f"still allowed 1 s after the kick: {sorted(pending)}"
    assert cluster.call(1, "sevu.sessions", key=key)["sessions"][0]["end_reason"] == "kicked"


def test_errorcount_and_errorlog_see_every_nodes_attempts(cluster: Cluster) -> None:
    key = cluster.ticket(uses=2)
    with httpx.Client(timeout=HTTP_TIMEOUT) as http:
        for n in range(9):  # 2 allowed, then 7 refused, three per node
            url = cluster.urls[n % NODES]
            http.get(url + "/usher/check", params=_check(key, "10.0.0.1", marker=f"play-{n}"))
    counts = [cluster.call(node, "sevu.errorcount", key=key)["error_count"] for node in range(3)]
    failed = [
        cluster.call(node, "sevu.errorcount", key=key, success=0)["error_count"]
        for node in range(3)
    ]
    logs = [cluster.call(node, "sevu.errorlog", key=key)["attempts"] for node in range(3)]
    print(f"\n9 checks over {NODES} nodes -> errorcount per node {counts}, refused {failed}")
    assert counts == [9, 9, 9] and failed == [7, 7, 7]
    for attempts in logs:
        assert [a["pageurl"] for a in attempts] == [f"play-{n}" for n in range(9)]
        assert [a["success"] for a in attempts] == [1, 1] + [0] * 7


def _panel(cluster: Cluster, node: int) -> httpx.Client:
    """A browser signed in to ``node``'s panel with the account's API key."""
    browser = httpx.Client(base_url=cluster.urls[node], timeout=HTTP_TIMEOUT)
    form = re.search(r'name="csrf" value="([^"]+)"', browser.get("/panel/sign-in").text)
    assert form is not None
    fields = {"csrf": form.group(1), "cdn": str(cluster.cdn), "method": "api"}
    fields |= {"api_key": cluster.api_key, "secret": cluster.secret}
    assert browser.post("/panel/sign-in", data=fields).status_code == 303
    return browser


def _kpis(browser: httpx.Client) -> dict[str, int]:
    charts = browser.get("/panel/charts", params={"range": "1h"})
    assert charts.status_code == 200, charts.text
    found = re.findall(r'data-kpi="(total|allowed|denied)">(\d+)<', charts.text)
    return {name: int(value) for name, value in found}


def test_every_nodes_live_overview_counts_every_nodes_attempts(cluster: Cluster) -> None:
    # Each node's overview keeps its own settled minutes and re-reads only
    # the newest; attempts logged through the other nodes (and the pending
    # rollup deltas they leave) show at each node's next refresh.
    key = cluster.ticket(uses=0)
    browsers = [_panel(cluster, node) for node in range(NODES)]
    seen = []
    try:
        with httpx.Client(timeout=HTTP_TIMEOUT) as http:
            for round_ in range(3):
                for browser in browsers:
                    _kpis(browser)
                for n in range(2 * NODES):
                    params = _check(key, "10.0.0.1")
                    if (n + round_) % 3 == 0:
                        params["pass"] = "wrong"
                    http.get(cluster.urls[n % NODES] + "/usher/check", params=params)
                time.sleep(4.2)  # past the overview's shared 4-second computation
                allowed = cluster.call(0, "sevu.errorcount", success=1)["error_count"]
                denied = cluster.call(0, "sevu.errorcount", success=0)["error_count"]
                expected = {"total": allowed + denied, "allowed": allowed, "denied": denied}
                kpis = [_kpis(browser) for browser in browsers]
                seen.append(kpis[0])
                assert kpis == [expected] * NODES, (round_, kpis, expected)
    finally:
        for browser in browsers:
            browser.close()
    print(f"\nlive overview on {NODES} nodes, three refreshes: {seen}")


def test_restarting_postgres_under_load_gives_4_or_1000_then_recovers(
    cluster: Cluster, pg_cluster: PostgresCluster
) -> None:
    key = cluster.ticket()
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    stop = threading.Event()

    def player(worker: int) -> None:
        # Bounded: at most 3,000 requests per worker, or until stopped.
        with httpx.Client(timeout=HTTP_TIMEOUT) as http:
            for n in range(3000):
                if stop.is_set():
                    return
                url = cluster.urls[(worker + n) % NODES]
                try:
                    if n % 5 == 0:
                        with cluster.client((worker + n) % NODES) as client:
                            body = client.call("sevu.errorcount", key=key)
                        outcome = f"api {body['code']}"
                    else:
                        r = http.get(url + "/usher/check", params=_check(key, "10.0.0.1"))
                        outcome = f"check {r.status_code}"
                except (httpx.HTTPError, ValueError) as exc:
                    outcome = f"error {type(exc).__name__}"
                with lock:
                    outcomes[outcome] += 1

    threads = [threading.Thread(target=player, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    restart_started = time.monotonic()
    pg_cluster.stop("fast")
    time.sleep(1.0)  # a second with no database at all
    pg_cluster.start()
    restarted_in = time.monotonic() - restart_started
    # Every node must serve again, soon, without being restarted itself.
    recovered: list[float] = []
    with httpx.Client(timeout=HTTP_TIMEOUT) as http:
        for url in cluster.urls:
            deadline = time.monotonic() + 15
            while True:
                r = http.get(url + "/usher/check", params=_check(key, "10.0.0.1"))
                if r.status_code == 200:
                    recovered.append(time.monotonic() - restart_started)
                    break
                assert time.monotonic() < deadline, f"{url} did not recover: {r.status_code}"
                time.sleep(0.1)
    time.sleep(0.5)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    print(
        f"\nPostgreSQL down and back in {restarted_in:.1f} s under load; nodes serving again "
        f"after {', '.join(f'{t:.1f}' for t in recovered)} s; outcomes {dict(outcomes)}"
    )
    # Only answers Usher means: allowed, or "could not decide" (503 with
    # code 4's meaning for checks; code 4 / 1000 envelopes for the API).
    allowed_kinds = {"check 200", "check 503", "api 2050", "api 2051", "api 4", "api 1000"}
    assert set(outcomes) <= allowed_kinds, outcomes
    assert outcomes["check 503"] + outcomes["api 4"] + outcomes["api 1000"] > 0, (
        "the restart was never noticed; the test proves nothing"
    )
