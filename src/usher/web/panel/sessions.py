"""The sessions page: who watched, from where, for how long, newest first.

The filters are read by :func:`usher.commands.sessions.session_filter`, the
parser of ``sevu.sessions``, so the rows are those the command lists. Like
the attempts explorer, a page is read from a cursor (the ``(started_at, id)``
of the last row shown) and the total is counted up to :data:`COUNT_CAP`, so
every page costs about the same at millions of sessions.
"""

from __future__ import annotations

import asyncio
from typing import Final

from starlette.requests import Request
from starlette.responses import Response

from usher.commands.sessions import session_filter
from usher.protocol.errors import ApiError
from usher.storage.base import MAX_ATTEMPT_FIELD, ReadBoundExceeded, SessionCursor, SessionFilter
from usher.tickets.model import Page, PlaybackSession
from usher.web.panel import forms
from usher.web.panel.auth import Viewer, signed_in
from usher.web.panel.bounds import NARROW_FILTERS, stopped
from usher.web.panel.render import page
from usher.web.panel.session_rows import rows_of
from usher.web.panel.tickets import message_of

PAGE_SIZE: Final = 50
#: The page counts matches up to this many, then says "more than".
COUNT_CAP: Final = 10_000
#: ``open`` as ``sevu.sessions`` reads it: "" any, "1" open only, "0" ended only.
FILTER_FIELDS: Final = ("key", "ip", "open")
CURSORS: Final = ("before", "after")
#: Session start times are 64-bit integers on both backends.
_MAX_TIME: Final = 2**63 - 1


class BadCursor(ValueError):
    """A ``before``/``after`` value no link of this page makes."""


def read_cursor(values: dict[str, str]) -> tuple[str, SessionCursor] | None:
    """``("before", (started_at, id))``, ``("after", …)`` or ``None`` (the newest page)."""
    given = [(name, values[name]) for name in CURSORS if values.get(name, "")]
    if not given:
        return None
    if len(given) > 1:
        raise BadCursor(
            "This page link names both an older and a newer position. "
            "Start again from the newest sessions."
        )
    name, raw = given[0]
    started, _, session_id = raw.partition("-")
    if not (
        started.isascii()
        and started.isdigit()
        and len(started) <= 19
        and int(started) <= _MAX_TIME
        and 0 < len(session_id) <= MAX_ATTEMPT_FIELD
    ):
        raise BadCursor(
            f"This page link is damaged: {name} must be a start time and a session id, "
            "as the Older and Newer links write it. Start again from the newest sessions."
        )
    return name, (int(started), session_id)


async def _rows(
    viewer: Viewer, where: SessionFilter, cursor: tuple[str, SessionCursor] | None
) -> tuple[list[PlaybackSession], bool, bool]:
    """The page's sessions newest first, and whether newer and older ones exist."""
    storage = viewer.state.storage
    cdn = viewer.account.cdn
    now = viewer.now
    probe = Page(limit=PAGE_SIZE + 1)  # one row more says whether another page follows
    if cursor is not None and cursor[0] == "after":
        newer = await storage.browse_sessions(cdn, where, probe, now, after=cursor[1])
        if len(newer) > PAGE_SIZE:
            return newer[PAGE_SIZE - 1 :: -1], True, True
        cursor = None  # within a page of the newest: show the newest page, full
    before = None if cursor is None else cursor[1]
    rows = await storage.browse_sessions(cdn, where, probe, now, before=before)
    return rows[:PAGE_SIZE], before is not None, len(rows) > PAGE_SIZE


async def _sessions(request: Request, viewer: Viewer) -> Response:
    values = forms.query_values(request)
    filters = forms.pick(values, FILTER_FIELDS)
    context: dict[str, object] = {
        "viewer": viewer,
        "nav": "sessions",
        "filters": filters,
        "rows": [],
        "total": 0,
        "cap": COUNT_CAP,
        "newer": None,
        "older": None,
        "error": "",
        "restart": False,
    }
    try:
        where = session_filter(filters)
        cursor = read_cursor(forms.pick(values, CURSORS))
    except ApiError as exc:
        context["error"] = message_of(exc)
        return page(request, "sessions.html", context, status=400)
    except BadCursor as exc:
        context.update(error=str(exc), restart=True)
        return page(request, "sessions.html", context, status=400)
    storage = viewer.state.storage
    try:
        # Side by side on the reader pool; both are bounded reads.
        total, (found, has_newer, has_older) = await asyncio.gather(
            storage.count_sessions_upto(viewer.account.cdn, where, viewer.now, COUNT_CAP),
            _rows(viewer, where, cursor),
        )
    except ReadBoundExceeded as exc:
        context["error"] = stopped(viewer.state, exc, NARROW_FILTERS)
        return page(request, "sessions.html", context, status=503)
    if cursor is not None and cursor[0] == "before" and not found:
        context.update(
            error="There are no sessions older than this page's link any more (they may "
            "have been pruned since it was made). Start again from the newest sessions.",
            restart=True,
        )
        return page(request, "sessions.html", context, status=400)
    rows = rows_of(found, viewer.now)
    context.update(
        rows=rows,
        total=total,
        newer={**filters, "after": rows[0].cursor} if has_newer and rows else None,
        older={**filters, "before": rows[-1].cursor} if has_older else None,
    )
    return page(request, "sessions.html", context)


sessions = signed_in(_sessions)
