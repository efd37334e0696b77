"""The attempts explorer: ``sevu.errorcount``'s filters over the attempt log.

The form is read by :func:`usher.commands.errorcount.attempt_filter`, the
command's own parser, so the count shown is the number ``sevu.errorcount``
returns for the same fields (without ``limit``/``seek``).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from usher.commands.errorcount import attempt_filter
from usher.protocol.errors import ApiError
from usher.tickets.expiry import format_utc
from usher.tickets.model import Page
from usher.web.panel import forms
from usher.web.panel.auth import Viewer, signed_in
from usher.web.panel.render import page
from usher.web.panel.tickets import message_of

PAGE_SIZE = 50
FILTER_FIELDS = ("key", "pass", "app", "video", "ip", "success", "starttime", "endtime")
#: Shortcuts that fill ``starttime`` (and clear ``endtime``).
QUICK_RANGES = (("Last hour", 3600), ("Last 24 hours", 86400), ("Last 7 days", 7 * 86400))


async def _explore(request: Request, viewer: Viewer) -> Response:
    values = forms.query_values(request)
    filters = forms.pick(values, FILTER_FIELDS)
    number = forms.page_number(values)
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
        "page": number,
        "page_size": PAGE_SIZE,
        "quick": quick,
        "error": "",
    }
    try:
        where = attempt_filter(filters)
    except ApiError as exc:
        context["error"] = message_of(exc)
        return page(request, "attempts.html", context, status=400)
    storage = viewer.state.storage
    total = await storage.count_attempts(viewer.account.cdn, where)
    rows = await storage.list_attempts(
        viewer.account.cdn,
        where,
        Page(limit=PAGE_SIZE, seek=(number - 1) * PAGE_SIZE),
        newest_first=True,
    )
    context.update(attempts=rows, total=total)
    return page(request, "attempts.html", context)


explore = signed_in(_explore)
