"""The pure session rules: what a start means, and SessionBook's invariants."""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from tests.helpers import NOW, session_ticket, viewer

from usher.tickets.decision import decide
from usher.tickets.model import EndReason, PlaybackSession, Reason, SessionStart
from usher.tickets.sessions import Plan, SessionBook, ended, opened, plan

TTL = 120


def open_session(**changes: Any) -> PlaybackSession:
    session = PlaybackSession(
        "s", "h", 1, "hls.0001", "ip", "demo-vod", "movie", "hls", NOW, NOW, NOW + TTL
    )
    return dataclasses.replace(session, **changes)


def start(*, resume: bool, session_id: str = "new") -> SessionStart:
    return SessionStart(session_id, "h", "hls", TTL, resume)


def test_plan_covers_every_case() -> None:
    assert plan(None, start(resume=True), NOW) is Plan.START
    assert plan(open_session(), start(resume=True), NOW + 1) is Plan.RESUME
    assert plan(open_session(), start(resume=False), NOW + 1) is Plan.REPLACE
    # Past its expiry a session is over, whatever the row says.
    assert plan(open_session(), start(resume=True), NOW + TTL) is Plan.START
    done = open_session(ended_at=NOW + 5, end_reason="done")
    assert plan(done, start(resume=True), NOW + 6) is Plan.START
    assert plan(done, start(resume=True, session_id="s"), NOW + 6) is Plan.ENDED
    kicked = open_session(ended_at=NOW + 5, end_reason="kicked")
    assert plan(kicked, start(resume=True), NOW + 6) is Plan.ENDED
    assert plan(kicked, start(resume=False), NOW + 6) is Plan.START
    assert plan(kicked, start(resume=True), NOW + TTL) is Plan.START


def test_ending_keeps_an_earlier_end() -> None:
    session = open_session()
    assert ended(session, NOW + 1, EndReason.KICKED).end_reason == "kicked"
    assert ended(session, NOW + TTL + 5, EndReason.KICKED).ending(NOW) == (NOW + TTL, "idle")
    done = ended(session, NOW + 1, EndReason.DONE)
    assert ended(done, NOW + 2, EndReason.KICKED) == done


def test_an_opened_session_holds_its_tickets_strings_where_they_are_equal() -> None:
    # Equal text, other string objects: as a request parsed from the wire.
    ticket = session_ticket(app="demo-vod*")
    request = dataclasses.replace(
        viewer(ticket), key="".join(["hls.", "0001"]), app="".join(["demo-", "vod-2"]),
        video="".join(["mo", "vie"]),
    )  # fmt: skip
    session = opened(start(resume=True), request, ticket, NOW)
    assert (session.key, session.app, session.video) == (request.key, request.app, request.video)
    assert session.key is ticket.key and session.video is ticket.video
    # A pattern matched: the session keeps the name the viewer asked for.
    assert session.app is request.app
    assert opened(start(resume=True), request, None, NOW).key is request.key


def test_rule_eight_applies_to_starts_only() -> None:
    ticket = session_ticket(max_viewers=2, viewers=2)
    assert decide(ticket, viewer(ticket), NOW).reason is Reason.TOO_MANY_VIEWERS
    assert decide(ticket, viewer(ticket, count_use=False), NOW).allowed
    assert decide(dataclasses.replace(ticket, viewers=1), viewer(ticket), NOW).allowed
    # Uses come first (rule 7 before rule 8).
    spent = dataclasses.replace(ticket, uses=1, use_count=1)
    assert decide(spent, viewer(ticket), NOW).reason is Reason.USES_EXHAUSTED


STEPS = st.lists(
    st.tuples(st.sampled_from(["start", "end"]), st.integers(0, 5), st.integers(0, 30)),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(limit=st.integers(1, 4), steps=STEPS)
def test_a_book_never_opens_more_than_max_viewers(
    limit: int, steps: list[tuple[str, int, int]]
) -> None:
    ticket = session_ticket(max_viewers=limit)
    book = SessionBook([], {})
    now = NOW
    for action, handle, gap in steps:
        now += gap
        if action == "start":
            sid = f"{now}-{handle}-{len(book.written)}"
            book.check(
                ticket,
                viewer(ticket),
                decide,
                now,
                SessionStart(sid, f"h{handle}", "hls", TTL, True),
            )
        else:
            latest = [s for s in book.written.values() if s.handle == f"h{handle}"]
            for session in latest:
                book.end(session, now, EndReason.DONE)  # what an end notice does
        open_now = [s for s in book.written.values() if s.is_open(now)]
        assert len(open_now) <= limit
        assert len({s.handle for s in open_now}) == len(open_now)  # one open session per handle
