"""The attempts explorer: ``sevu.errorcount``'s filters over the attempt log.

The form is read by :func:`usher.commands.errorcount.attempt_filter`, the
command's own parser, so the rows are those ``sevu.errorcount`` counts.

At tens of millions of attempts, two things keep every page fast:

* **Paging by cursor.** "Older" carries ``before=<id of the last row shown>``
  and "Newer" ``after=<id of the first>``, so a page is one index range read
  from that id, however deep it is; an offset would read and skip every
  newer row first.
* **A capped count.** The total is counted up to :data:`COUNT_CAP`; past it
  the page says "more than 10,000" instead of reading millions of rows.
"""

from __future__ import annotations

import asyncio
from typing import Final

from starlette.requests import Request
from starlette.responses import Response

from usher.commands.errorcount import attempt_filter
from usher.protocol.errors import ApiError
from usher.storage.base import ReadBoundExceeded
from usher.tickets.expiry import format_utc
from usher.tickets.model import Attempt, AttemptFilter, Page
from usher.web.panel import forms
from usher.web.panel.auth import Viewer, signed_in
from usher.web.panel.bounds import COUNT_CAP, NARROW_FILTERS, stopped
from usher.web.panel.render import page
from usher.web.panel.tickets import message_of

PAGE_SIZE: Final = 50
FILTER_FIELDS = ("key", "pass", "app", "video", "ip", "success", "starttime", "endtime")
#: The page's cursors: at most one of them.
CURSORS: Final = ("before", "after")
#: Attempt ids are 64-bit integers on both backends.
_MAX_ID: Final = 2**63 - 1
#: Shortcuts that fill ``starttime`` (and clear ``endtime``).
QUICK_RANGES = (("Last hour", 3600), ("Last 24 hours", 86400), ("Last 7 days", 7 * 86400))


class BadCursor(ValueError):
    """A ``before``/``after`` value no link of the explorer makes."""


def read_cursor(values: dict[str, str]) -> tuple[str, int] | None:
    """``("before", id)``, ``("after", id)`` or ``None`` (the newest page)."""
    given = [(name, values[name].strip()) for name in CURSORS if values.get(name, "").strip()]
    if not given:
        return None
    if len(given) > 1:
        raise BadCursor(
            "This page link names both an older and a newer position. "
            "Start again from the newest attempts."
        )
    name, raw = given[0]
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 19 and 0 < int(raw) <= _MAX_ID):
        raise BadCursor(
            f"This page link is damaged: {name} must be an attempt number, as the Older "
            "and Newer links write it. Start again from the newest attempts."
        )
    return name, int(raw)


async def _rows(
    viewer: Viewer, where: AttemptFilter, cursor: tuple[str, int] | None
) -> tuple[list[Attempt], bool, bool]:
    """The page's attempts newest first, and whether newer and older ones exist."""
    storage = viewer.state.storage
    cdn = viewer.account.cdn
    probe = Page(limit=PAGE_SIZE + 1)  # one row more says whether another page follows
    if cursor is not None and cursor[0] == "after":
        newer = await storage.list_attempts(cdn, where, probe, after=cursor[1])
        if len(newer) > PAGE_SIZE:
            return newer[PAGE_SIZE - 1 :: -1], True, True
        cursor = None  # within a page of the newest: show the newest page, full
    before = None if cursor is None else cursor[1]
    rows = await storage.list_attempts(cdn, where, probe, newest_first=True, before=before)
    return rows[:PAGE_SIZE], before is not None, len(rows) > PAGE_SIZE


async def _explore(request: Request, viewer: Viewer) -> Response:
    values = forms.query_values(request)
    filters = forms.pick(values, FILTER_FIELDS)
    quick = [
        (label, {**filters, "starttime": format_utc(viewer.now - seconds), "endtime": ""})
        for label, seconds in QUICK_RANGES
    ]
    context: dict[str, object] = {
        "viewer": viewer,
        "nav": "attempts",
        "filters": filters,
        "attempts": [],
        "total": 0,
        "cap": COUNT_CAP,
        "newer": None,
        "older": None,
        "quick": quick,
        "error": "",
        "restart": False,
    }
    try:
        where = attempt_filter(filters)
        cursor = read_cursor(values)
    except ApiError as exc:
        context["error"] = message_of(exc)
        return page(request, "attempts.html", context, status=400)
    except BadCursor as exc:
        context.update(error=str(exc), restart=True)
        return page(request, "attempts.html", context, status=400)
    try:
        # Side by side on the reader pool; both are bounded reads.
        total, (rows, has_newer, has_older) = await asyncio.gather(
            viewer.state.storage.count_attempts_upto(viewer.account.cdn, where, COUNT_CAP),
            _rows(viewer, where, cursor),
        )
    except ReadBoundExceeded as exc:
        context["error"] = stopped(viewer.state, exc, NARROW_FILTERS)
        return page(request, "attempts.html", context, status=503)
    if cursor is not None and cursor[0] == "before" and not rows:
        context.update(
            error="There are no attempts older than this page's link any more (they may "
            "have been pruned since it was made). Start again from the newest attempts.",
            restart=True,
        )
        return page(request, "attempts.html", context, status=400)
    context.update(
        attempts=rows,
        total=total,
        newer={**filters, "after": rows[0].id} if has_newer and rows else None,
        older={**filters, "before": rows[-1].id} if has_older else None,
    )
    return page(request, "attempts.html", context)


explore = signed_in(_explore)
