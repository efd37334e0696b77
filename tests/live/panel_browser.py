"""Helpers of the control-panel browser tests: Chromium, screenshots, seed data."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
from playwright.sync_api import Page, ViewportSize

from tests.live.conftest import LiveServer
from usher.storage import storage_for_url
from usher.tickets.decision import decide
from usher.tickets.keys import new_ticket_key
from usher.tickets.model import CheckRequest, Ticket

#: Debian's Chromium, installed by scripts/install-system-deps. Playwright
#: never downloads a browser of its own here.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 844}
#: Where `make screenshots` (USHER_UPDATE_SCREENSHOTS=1) puts the README's images.
DOCS_SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def screenshot(page: Page, folder: Path, name: str, *, full_page: bool = True) -> Path:
    """A PNG in ``folder``; copied into docs/screenshots on request."""
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    # A blank or failed rendering is a few hundred bytes; a real page is more.
    assert path.stat().st_size > 8_000, f"{name}.png looks empty"
    if os.environ.get("USHER_UPDATE_SCREENSHOTS") == "1":
        DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_SCREENSHOTS / path.name)
    return path


def play(server: LiveServer, key: str, password: str, **fields: str) -> tuple[int, str]:
    """One playback check through /usher/check, as a streaming server sends it."""
    params = {"key": key, "pass": password, "app": "demo-live", "video": "mystream", **fields}
    response = httpx.get(f"{server.url}/usher/check", params=params, timeout=10)
    return response.status_code, str(response.json()["reason"])


def no_horizontal_scroll(page: Page) -> bool:
    width = page.evaluate("document.documentElement.scrollWidth")
    viewport = page.evaluate("window.innerWidth")
    return bool(width <= viewport)


@dataclass
class Seeded:
    shared_key: str
    tickets: int
    attempts: int


def seed_busy_account(server: LiveServer, now: int) -> Seeded:
    """A day of realistic traffic for the demo account, written through the
    storage interface with past times (the server only ever logs "now").

    Deterministic apart from the keys: a dozen tickets played mostly
    successfully, one shared ticket hammered from many addresses, wrong
    passes, a used-up ticket and a few wrong-app attempts.
    """
    # On its own thread: Playwright's sync API already runs an event loop here.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, _seed(server, now)).result(timeout=120)


async def _seed(server: LiveServer, now: int) -> Seeded:
    rng = random.Random(7)
    storage = storage_for_url(server.database)
    await storage.open()
    try:
        tickets = []
        videos = ["launch-keynote", "match-day", "concert-live", "vod/episode-12.mp4"]
        for i in range(12):
            video = videos[i % len(videos)]
            ticket = Ticket(
                key=new_ticket_key(video),
                cdn=server.cdn,
                password=f"viewer-{i:02d}",
                ip="auto" if i % 3 else "",
                video=video,
                app="demo-live" if "/" not in video else "demo-vod",
                uses=3 if i == 5 else 0,
                use_count=0,
                active=True,
                created_at=now - 86400 - 600,
                expire_at=now + 6 * 86400,
            )
            await storage.insert_ticket(ticket)
            tickets.append(ticket)
        shared = tickets[1]
        requests: list[tuple[int, CheckRequest]] = []

        def at() -> int:
            # Busier in the evening (UTC), like a real audience.
            hour = rng.choices(range(24), weights=[1 + 3 * (17 <= h <= 22) for h in range(24)])[0]
            return now - 86400 + hour * 3600 + rng.randrange(3600)

        for ticket in tickets:
            home = f"198.51.100.{10 + tickets.index(ticket)}"
            for _ in range(rng.randint(8, 20)):
                requests.append((at(), _request(ticket, ticket.password, home)))
        for _ in range(70):  # the shared ticket, from all over
            ip = f"203.0.113.{rng.randint(2, 60)}"
            requests.append((at(), _request(shared, shared.password, ip)))
        for _ in range(35):  # guessing passes
            victim = rng.choice(tickets)
            requests.append((at(), _request(victim, f"guess{rng.randint(1, 999)}", "192.0.2.66")))
        for _ in range(8):
            ticket = rng.choice(tickets)
            request = _request(ticket, ticket.password, "198.51.100.200")
            requests.append((at(), dataclasses.replace(request, app="demo-backup")))
        requests.sort(key=lambda item: item[0])
        for when, request in requests:
            await storage.record_check(request, decide, min(when, now))
        return Seeded(shared.key, len(tickets), len(requests))
    finally:
        await storage.close()


def _request(ticket: Ticket, password: str, ip: str) -> CheckRequest:
    return CheckRequest(
        key=ticket.key, password=password, app=ticket.app, video=ticket.video, ip=ip
    )
