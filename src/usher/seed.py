"""Synthetic but realistic tickets and attempts, for benchmarks and demos.

``usher seed-data`` fills a database with what a busy deployment
accumulates, so that counts, searches and checks can be measured at the
sizes the issue tracker's targets name (1 M tickets, 10 M attempts).

The shape follows what a streaming publisher sees:

* a few hundred apps spread over the accounts, each with its own videos
  (thousands in all), every app named ``<username>-…`` as the rules demand;
* one ticket per viewer session, with a per-viewer random pass, bound to the
  viewer's address (``auto``), to that exact address, or to none;
* about ten attempts per ticket on average, skewed: a few tickets (shared
  links, players stuck in a retry loop) get a hundred times more; viewers'
  addresses are mostly distinct, a few (carrier NAT) are shared by many;
* the heavy hitters real logs show, all in the first account: a CDN edge
  (:data:`EDGE_ADDRESS`) through which many of its tickets play, about 5% of
  all attempts; a brute-force address (:data:`BRUTE_FORCE_ADDRESS`) trying
  random unknown keys on one of its streams, about 2%, all refused; and a
  leaked ticket played from thousands of addresses, about 3%;
* about a third refused, for the reasons real logs show: wrong or stale
  passes, unknown keys, expiry, a link opened on another app, video or
  address, revoked tickets, and limited tickets whose uses ran out (counted
  exactly, so ``use_count`` agrees with the log).

Generation is deterministic for a given ``--seed`` except for the keys, which
come from :mod:`secrets` like real ones. Rows are produced in chunks as plain
tuples; the backend's bulk loader (:mod:`usher.storage.sqlite.bulk`) writes
them.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.queues
import operator
import os
import random
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Final

from usher import accounts as account_rules
from usher.progress import OnProgress, no_progress
from usher.protocol.errors import ConfigError
from usher.tickets.keys import new_ticket_key
from usher.tickets.model import Reason

#: Attempts are generated and written in chunks of this many rows.
CHUNK: Final = 50_000
#: Attempts span this many seconds before ``now`` (30 days).
SPAN: Final = 30 * 86_400
#: Attempt indexes kept while the rows go in (see ``drop_attempt_indexes``).
TIME_ORDERED_INDEXES: Final = ("attempts_cdn_at_success",)

# Each attempt's fate, as cumulative weights over these outcomes. Revoked
# and exhausted tickets add their own refusals on top (about 3% more).
_OK, _BAD_PASS, _UNKNOWN_KEY, _EXPIRED, _BAD_APP, _BAD_VIDEO, _BAD_IP = range(7)
_FATE_WEIGHTS: Final = (70, 7, 4, 4, 4, 4, 7)

# Who plays each attempt, as cumulative shares: the hot tickets (a fifth),
# the CDN edge's tickets, the brute-force address, the leaked key; the rest
# spread over all tickets.
_HOT, _EDGE, _BRUTE, _LEAKED = 0.20, 0.25, 0.27, 0.30
#: The address of a CDN edge (or a big carrier NAT) in front of the first
#: account's viewers: many tickets, one address (RFC 6598 shared space).
EDGE_ADDRESS: Final = "100.64.0.1"
#: The address of a bot guessing keys (RFC 5737 documentation space).
BRUTE_FORCE_ADDRESS: Final = "203.0.113.66"
#: The number of distinct addresses the leaked key is played from, at most.
LEAK_SPREAD: Final = 20_000
# Markers in place of a ticket index in the attempt loop: the leaked key
# from anywhere, and a brute-force guess.
_FROM_ANYWHERE, _GUESS = -1, -2

#: One ticket row: (cdn, key, pass, ip, video, app, uses, active, created, expire).
TicketRow = tuple[int, str, str, str, str, str, int, int, int, int]
#: One attempt row in ``attempts`` column order after ``id``.
AttemptRow = tuple[int, int, str, str, str, str, str, str, str, str, int, str, str]


@dataclass
class Shape:
    """Cardinalities derived from the requested sizes."""

    tickets: int
    attempts: int
    accounts: int
    apps: int
    videos: int
    addresses: int

    @classmethod
    def for_sizes(cls, tickets: int, attempts: int, accounts: int) -> Shape:
        # A few hundred apps and thousands of videos at 1 M tickets, scaled
        # down (never below one per account) for small runs.
        apps = max(accounts, min(300, tickets // 3000))
        videos = max(apps, min(5000, tickets // 200))
        return cls(tickets, attempts, accounts, apps, videos, max(1, tickets // 2))

    @property
    def hot(self) -> int:
        """Tickets ``0 … hot - 1`` draw a fifth of all attempts."""
        return max(1, self.tickets // 100)

    @property
    def edge_first(self) -> int:
        """Tickets from this index on play through :data:`EDGE_ADDRESS`."""
        return self.tickets - max(min(self.tickets, 10), self.tickets // 200)

    @property
    def leaked(self) -> int:
        """The index of the leaked ticket (none of the hot ones, if there
        are enough tickets)."""
        return min(self.hot, self.tickets - 1)


@dataclass
class SeedPlan:
    """Everything generated besides the attempts, and the running tallies."""

    shape: Shape
    usernames: list[str]
    cdns: list[int]
    now: int
    rng: random.Random
    apps: list[tuple[int, str]] = field(default_factory=list)  # (cdn, app)
    videos: list[tuple[int, str]] = field(default_factory=list)  # (app index, video)
    tickets: list[TicketRow] = field(default_factory=list)
    viewer_ip: list[str] = field(default_factory=list)
    use_count: list[int] = field(default_factory=list)
    used_at: list[int | None] = field(default_factory=list)
    bound: list[str] = field(default_factory=list)
    #: The addresses the leaked ticket is played from.
    leak_ips: list[str] = field(default_factory=list)
    #: Attempts per (cdn, app, video, success), for the rollup.
    tally: Counter[tuple[int, str, str, int]] = field(default_factory=Counter)


def _address(rng: random.Random, n: int) -> str:
    # One in twenty viewers on IPv6, as in many access networks.
    if n % 20 == 0:
        return f"2001:db8:{n >> 16 & 0xFFFF:x}:{n & 0xFFFF:x}::{rng.randrange(1, 0xFFFF):x}"
    return f"{1 + n % 223}.{n >> 16 & 0xFF}.{n >> 8 & 0xFF}.{n & 0xFF}"


def plan(shape: Shape, usernames: list[str], cdns: list[int], now: int, seed: int = 1) -> SeedPlan:
    """Apps, videos and tickets (held in memory: the attempts refer to them)."""
    rng = random.Random(seed)  # noqa: S311  # synthetic data, not secrets; keys use secrets
    p = SeedPlan(shape, usernames, cdns, now, rng)
    for i in range(shape.apps):
        account = i % shape.accounts
        p.apps.append((cdns[account], f"{usernames[account]}-{('live', 'vod', 'event')[i % 3]}{i}"))
    for i in range(shape.videos):
        owner = i % shape.apps
        kind = p.apps[owner][1].rsplit("-", 1)[1]
        name = f"stream{i}" if kind.startswith("live") else f"vod/{i // 100}/title{i}.mp4"
        p.videos.append((owner, name))
    # Keys as new_ticket_key makes them, without its per-call cost (half of
    # this plan's time, about 4 s at 1 M tickets): each video's head is
    # computed once, the random tails come from one urandom read.
    heads = {video: new_ticket_key(video).rsplit(".", 2)[0] for _, video in p.videos}
    tails = _key_tails(shape.tickets)
    # Viewer addresses: most distinct, 10% of viewers behind 1,000 shared ones.
    shared = max(1, min(1000, shape.addresses // 100))
    # The first account's videos, which the CDN edge's and the leaked
    # tickets are for (app i belongs to account i % accounts).
    first_account = [v for v, (owner, _) in enumerate(p.videos) if owner % shape.accounts == 0]
    edge_first, leaked = shape.edge_first, shape.leaked
    for i in range(shape.tickets):
        if i >= edge_first or i == leaked:
            app_index, video = p.videos[first_account[rng.randrange(len(first_account))]]
        else:
            app_index, video = p.videos[rng.randrange(shape.videos)]
        cdn, app = p.apps[app_index]
        if rng.random() < 0.1:
            ip_n = rng.randrange(shared)
        else:
            ip_n = shared + rng.randrange(shape.addresses)
        viewer = EDGE_ADDRESS if i >= edge_first else _address(rng, ip_n)
        rule = rng.random()
        ip_rule = "auto" if rule < 0.3 else (viewer if rule < 0.5 else "")
        uses = 0 if rng.random() < 0.8 else rng.choice((5, 10, 20, 50))
        active = 0 if rng.random() < 0.03 else 1
        created = now - SPAN - rng.randrange(86_400)
        expire = now + 7 * 86_400
        password = f"{rng.getrandbits(48):012x}"
        key = f"{heads[video]}.{next(tails)}"
        if i == leaked:
            # Shared on a forum: unbound, unlimited, never revoked.
            ip_rule, uses, active = "", 0, 1
        p.tickets.append((cdn, key, password, ip_rule, video, app, uses, active, created, expire))
        p.viewer_ip.append(viewer)
    p.leak_ips = [
        _address(rng, shared + rng.randrange(shape.addresses))
        for _ in range(min(LEAK_SPREAD, shape.addresses))
    ]
    p.use_count = [0] * shape.tickets
    p.used_at = [None] * shape.tickets
    p.bound = [""] * shape.tickets
    return p


def _key_tails(count: int) -> Iterator[str]:
    """``count`` random key tails, ``<14 hex>.<8 digits>`` as in new_ticket_key.

    Fifteen bytes of :func:`os.urandom` (the source :mod:`secrets` uses) per
    key: seven become the hex part, eight a number reduced mod 10**8, whose
    bias (under 10**-11) is far below anything a key's strength depends on.
    """
    raw = os.urandom(15 * count)
    for start in range(0, 15 * count, 15):
        number = int.from_bytes(raw[start + 7 : start + 15], "big") % 100_000_000
        yield f"{raw[start : start + 7].hex()}.{number:08d}"


def attempts(p: SeedPlan) -> Iterator[list[AttemptRow]]:
    """The attempt log in time order, in chunks; updates the plan's use
    counts (the rollup's tally is kept by :func:`tallied`)."""
    rng = p.rng
    shape = p.shape
    tickets = p.tickets
    count = shape.tickets
    hot, edge_first, leaked = shape.hot, shape.edge_first, shape.leaked
    leak_ips = p.leak_ips
    spread = len(leak_ips)
    # The bot guesses keys of one of the first account's streams.
    target = tickets[edge_first]
    target_cdn, target_video, target_app = target[0], target[4], target[5]
    guess_head = target_video.replace("/", "_")
    servers = [f"198.51.100.{n}" for n in range(1, 9)]
    pages = {app: f"https://www.{app.split('-', 1)[0]}.example/watch" for _, app in p.apps}
    first_at = p.now - SPAN
    cum = list(_cumulative(_FATE_WEIGHTS))
    fates = range(len(_FATE_WEIGHTS))
    reasons = {
        "auth": Reason.INVALID_AUTH_TOKEN.value,
        "revoked": Reason.TICKET_REVOKED.value,
        "expired": Reason.EXPIRED.value,
        "app": Reason.INVALID_APPLICATION.value,
        "video": Reason.INVALID_VIDEO.value,
        "ip": Reason.INVALID_IP.value,
        "uses": Reason.USES_EXHAUSTED.value,
    }
    # Locals, not attribute or global lookups, in the loop that runs once
    # per attempt: generation was the slower half of the insert pipeline.
    viewer_ip, use_count, used_at, bound = p.viewer_ip, p.use_count, p.used_at, p.bound
    ok, bad_pass, unknown_key, expired = _OK, _BAD_PASS, _UNKNOWN_KEY, _EXPIRED
    bad_app, bad_video = _BAD_APP, _BAD_VIDEO
    auth, revoked, exhausted = reasons["auth"], reasons["revoked"], reasons["uses"]
    hot_share, edge_share, brute_share, leak_share = _HOT, _EDGE, _BRUTE, _LEAKED
    guess_marker = _GUESS
    total = shape.attempts
    done = 0
    while done < total:
        n = min(CHUNK, total - done)
        # Most attempts take the first test, the rest one or two more.
        picks = [
            rng.randrange(count) if r >= leak_share
            else rng.randrange(hot) if r < hot_share
            else rng.randrange(edge_first, count) if r < edge_share
            else guess_marker if r < brute_share
            else _FROM_ANYWHERE
            for r in (rng.random() for _ in range(n))
        ]  # fmt: skip
        fate_of = rng.choices(fates, cum_weights=cum, k=n)
        rows: list[AttemptRow] = []
        append = rows.append
        for j, t, fate in zip(range(n), picks, fate_of, strict=True):
            at = first_at + (done + j) * SPAN // total
            if t >= 0:
                ip = viewer_ip[t]
            elif t == _FROM_ANYWHERE:
                t = leaked
                ip = leak_ips[rng.randrange(spread)]
            else:
                guess = f"{guess_head}.{rng.getrandbits(56):014x}.{rng.randrange(10**8):08d}"
                append(
                    (target_cdn, at, guess, f"{rng.getrandbits(48):012x}", BRUTE_FORCE_ADDRESS,
                     target_video, target_app, "", pages[target_app], "", 0, auth,
                     servers[j & 7])
                )  # fmt: skip
                continue
            cdn, key, password, ip_rule, video, app, uses, active, _, _ = tickets[t]
            if fate == ok:
                # Seven attempts in ten: only the ticket's own state can
                # refuse them, so the other fates are not tried one by one.
                if not active:
                    reason = revoked
                elif uses and use_count[t] >= uses:
                    reason = exhausted
                else:
                    use_count[t] += 1
                    used_at[t] = at
                    if ip_rule == "auto":
                        bound[t] = ip
                    append(
                        (cdn, at, key, password, ip, video, app, "", pages[app], "", 1, "",
                         servers[j & 7])
                    )  # fmt: skip
                    continue
            elif fate == bad_pass:
                password = tickets[rng.randrange(count)][2]
                reason = auth
            elif fate == unknown_key:
                key = f"{video.replace('/', '_')}.{rng.getrandbits(56):014x}.00000000"
                reason = auth
            elif not active:
                reason = revoked
            elif fate == expired:
                reason = reasons["expired"]
            elif fate == bad_app:
                app = p.apps[rng.randrange(shape.apps)][1]
                reason = reasons["app"]
            elif fate == bad_video:
                video = p.videos[rng.randrange(shape.videos)][1]
                reason = reasons["video"]
            else:  # bad_ip, the last fate
                ip = _address(rng, rng.randrange(shape.addresses))
                reason = reasons["ip"]
            append(
                (cdn, at, key, password, ip, video, app, "", pages[app], "", 0, reason,
                 servers[j & 7])
            )  # fmt: skip
        done += n
        yield rows


def tallied(p: SeedPlan, chunks: Iterable[list[AttemptRow]]) -> Iterator[list[AttemptRow]]:
    """``chunks``, counted into the plan's rollup tally on the way.

    Counted in C over each chunk rather than one Counter update per row, and
    by the process that writes them: the generating one is the slower half
    of the pipeline (profiled: the tally was a tenth of its time, while the
    writer waited for rows 30 % of its time).
    """
    tally = p.tally
    # (cdn, app, video, success) of a row, the rollup's finest grain.
    rollup_key = operator.itemgetter(0, 6, 5, 10)
    for rows in chunks:
        tally.update(map(rollup_key, rows))
        yield rows


def attempts_in_worker(p: SeedPlan) -> Iterator[list[AttemptRow]]:
    """:func:`attempts`, generated in a forked process while this one writes.

    Generating a row costs about as much as SQLite's insert of it, so on two
    cores the pipeline nearly halves the load. The worker inherits the plan
    through ``fork`` (nothing big is copied up front), sends chunks through a
    short queue (which also bounds memory), and finally sends back the use
    counts it kept, which replace this process's copies.
    """
    context = multiprocessing.get_context("fork")
    chunks: multiprocessing.queues.Queue[object] = context.Queue(maxsize=4)
    worker = context.Process(target=_generate_into, args=(p, chunks), daemon=True)
    worker.start()
    try:
        while True:
            item = chunks.get()
            if isinstance(item, list):
                yield item
                continue
            if isinstance(item, BaseException):
                raise item
            p.use_count, p.used_at, p.bound = item  # type: ignore[misc]  # the worker's final counts
            break
    finally:
        worker.join(timeout=5)
        if worker.is_alive():
            worker.kill()


def _generate_into(p: SeedPlan, out: multiprocessing.queues.Queue[object]) -> None:
    try:
        for rows in attempts(p):
            out.put(rows)
        out.put((p.use_count, p.used_at, p.bound))
    except BaseException as exc:  # reported to the parent, which re-raises it
        out.put(exc)


def _cumulative(weights: tuple[int, ...]) -> Iterator[int]:
    total = 0
    for weight in weights:
        total += weight
        yield total


@dataclass
class SeedResult:
    accounts: list[dict[str, object]]
    tickets: int
    attempts: int
    seconds: float
    attempt_seconds: float

    @property
    def attempts_per_second(self) -> float:
        return self.attempts / self.seconds if self.seconds else 0.0


def seed_database(
    database_url: str,
    *,
    tickets: int,
    attempts_total: int,
    accounts: int,
    seed: int = 1,
    now: int | None = None,
    progress: OnProgress = no_progress,
) -> SeedResult:
    """Create ``accounts`` new accounts and fill them with data (SQLite only)."""
    from usher.storage import storage_for_url
    from usher.storage.sqlite import sqlite_path
    from usher.storage.sqlite.bulk import BulkLoader

    if tickets < 1 or attempts_total < 0 or accounts < 1:
        raise ConfigError("seed-data needs --tickets ≥ 1, --attempts ≥ 0 and --accounts ≥ 1.")
    if not database_url.startswith("sqlite:"):
        raise ConfigError(
            "seed-data bulk-loads SQLite databases only; seed a SQLite file and copy it."
        )
    started = time.monotonic()
    # Create or migrate the schema the ordinary way first.
    storage = storage_for_url(database_url)

    async def migrate() -> None:
        await storage.open()
        await storage.close()

    asyncio.run(migrate())
    now = int(time.time()) if now is None else now
    with BulkLoader(sqlite_path(database_url)) as loader:
        taken = loader.taken_usernames()
        first_cdn = loader.next_cdn()
        usernames: list[str] = []
        n = 1
        while len(usernames) < accounts:
            if f"seed{n}" not in taken:
                usernames.append(f"seed{n}")
            n += 1
        created = [
            (first_cdn + i, name, account_rules.new_api_key(), account_rules.new_secret(), now)
            for i, name in enumerate(usernames)
        ]
        loader.insert_accounts(created)
        cdns = [row[0] for row in created]

        shape = Shape.for_sizes(tickets, attempts_total, accounts)
        progress("plan", 0, 1)
        p = plan(shape, usernames, cdns, now, seed)
        progress("plan", 1, 1)
        # The rows come in time order: the (cdn, at) index takes them as
        # appends while the loader waits for the generator anyway.
        dropped = loader.drop_attempt_indexes(keep=TIME_ORDERED_INDEXES)
        attempts_started = time.monotonic()
        done = 0

        def inserted(rows: int) -> None:
            nonlocal done
            done += rows
            progress("attempts", done, attempts_total)

        progress("attempts", 0, attempts_total)
        loader.insert_attempts(tallied(p, attempts_in_worker(p)), inserted)
        attempt_seconds = time.monotonic() - attempts_started
        # In TICKET_INSERT order: key, cdn, pass … uses, use_count, active,
        # created_at, expire_at, used_at, bound_ips, max_viewers (no limit).
        loader.insert_tickets(
            (row[1], row[0], *row[2:7], p.use_count[i], *row[7:10], p.used_at[i], p.bound[i], 0)
            for i, row in enumerate(p.tickets)
        )
        loader.add_counts(p.tally)
        # The last step of this phase fills the per-minute rollup, with the
        # (cdn, at, success) index back in place to read.
        progress("indexes", 0, dropped + 1)
        loader.restore_attempt_indexes(lambda rebuilt: progress("indexes", rebuilt, dropped + 1))
        loader.add_minute_counts(cdns)
        progress("indexes", dropped + 1, dropped + 1)
    return SeedResult(
        accounts=[
            {"cdn": cdn, "username": name, "api_key": key, "secret": secret}
            for cdn, name, key, secret, _ in created
        ],
        tickets=tickets,
        attempts=attempts_total,
        seconds=time.monotonic() - started,
        attempt_seconds=attempt_seconds,
    )
