"""Viewer passes stay out of sight on the panel's pages until the operator
clicks Show: in the page, but only inside a closed ``<details>``."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from tests.conftest import Harness
from tests.panel.conftest import Panel
from usher.web.panel.render import PASS_MASK

pytestmark = pytest.mark.anyio

_VOID = frozenset(
    ["area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"]
)


class _Shown(HTMLParser):
    """Where ``needle`` shows before any click: in text or an attribute
    (a title is a tooltip, a value is an input's text) of an element that
    is displayed, that is, not behind a closed <details> or ``hidden``."""

    def __init__(self, needle: str) -> None:
        super().__init__()
        self.needle = needle
        self.stack: list[tuple[str, bool]] = []  # (tag, its content is hidden)
        self.shown: list[str] = []

    def _inside_hidden(self, tag: str) -> bool:
        if not self.stack:
            return False
        parent, hidden = self.stack[-1]
        return hidden or (parent == "details:closed" and tag != "summary")

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        hidden = self._inside_hidden(tag) or "hidden" in names
        if not hidden:
            self.shown += [f"<{tag} {n}>" for n, v in attrs if v and self.needle in v]
        if tag in _VOID:
            return
        if tag == "details" and "open" not in names:
            tag = "details:closed"
        self.stack.append((tag, hidden))

    def handle_endtag(self, tag: str) -> None:
        while self.stack:
            if self.stack.pop()[0].split(":")[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        if self.needle in data and not self._inside_hidden("#text"):
            self.shown.append(f"text in <{self.stack[-1][0] if self.stack else ''}>")


def shown(html: str, needle: str) -> list[str]:
    parser = _Shown(needle)
    parser.feed(html)
    parser.close()
    return parser.shown


def test_the_helper_sees_a_shown_pass() -> None:
    assert shown('<p title="pw-1">x</p>', "pw-1") == ["<p title>"]
    assert shown("<dd><span>pw-1</span></dd>", "pw-1") == ["text in <span>"]
    assert shown("<details open><summary>S</summary>pw-1</details>", "pw-1") != []
    assert shown("<details><summary>S</summary><span>pw-1</span></details>", "pw-1") == []
    assert shown('<details><summary>S</summary><input value="pw-1"></details>', "pw-1") == []


async def test_ticket_and_attempt_pages_mask_passes(harness: Harness, panel: Panel) -> None:
    key = await panel.create_ticket(**{"pass": "pw-1234"})
    play = {"key": key, "app": "demo-live", "video": "mystream"}
    await harness.check(**play, **{"pass": "pw-1234"})
    await harness.check(**play, **{"pass": "wrong-5678"})
    for path in (f"/panel/tickets/{key}", "/panel/attempts", f"/panel/attempts?key={key}"):
        page = await panel.http.get(path)
        assert page.status_code == 200
        for password in ("pw-1234", "wrong-5678"):
            # One click away (no script needed), but not shown by default.
            assert password in page.text, path
            assert shown(page.text, password) == [], (path, password)
        assert PASS_MASK in page.text and 'class="secret' in page.text
    ticket = (await panel.http.get(f"/panel/tickets/{key}")).text
    # The player's query string too, with the copy button still at hand.
    assert f"?key={key}&amp;pass={PASS_MASK}" in ticket
    assert f'value="?key={key}&amp;pass=pw-1234"' in ticket and 'data-copy="play"' in ticket


async def test_an_attempt_without_a_pass_says_so(harness: Harness, panel: Panel) -> None:
    await harness.check(key="nope", app="demo-live", video="mystream")
    page = (await panel.http.get("/panel/attempts")).text
    cell = page.split('data-label="Pass">')[1].split("</td>")[0]
    assert "(empty)" in cell and "details" not in cell
