"""The playback decision: the contract's order, first failure wins, and what a
decision may carry (binds and use counting)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.helpers import CLIENT, NOW, passing_request, passing_ticket

from usher.tickets.decision import decide
from usher.tickets.model import CheckRequest, Decision, Reason, Ticket

ORDER = [
    Reason.INVALID_AUTH_TOKEN,
    Reason.TICKET_REVOKED,
    Reason.EXPIRED,
    Reason.INVALID_APPLICATION,
    Reason.INVALID_VIDEO,
    Reason.INVALID_IP,
    Reason.USES_EXHAUSTED,
]


# For each step, ways to make exactly that step fail, as changes to the
# ticket and to the request. Every variant leaves the other steps passing.
FAILURES: dict[Reason, list[tuple[dict[str, Any], dict[str, Any]]]] = {
    Reason.INVALID_AUTH_TOKEN: [
        ({}, {"password": "wrong"}),
        ({}, {"password": ""}),
        ({}, {"password": "s3cret "}),
        ({"password": "\udcff"}, {}),
    ],
    Reason.TICKET_REVOKED: [({"active": False}, {}), ({"account_disabled": True}, {})],
    Reason.EXPIRED: [({"expire_at": NOW}, {}), ({"expire_at": NOW - 1}, {})],
    Reason.INVALID_APPLICATION: [({}, {"app": "demo-other"}), ({}, {"app": "DEMO-live"})],
    Reason.INVALID_VIDEO: [({}, {"video": "other"}), ({}, {"video": "vod/talk.mp3"})],
    Reason.INVALID_IP: [
        # The baseline's auto slot is free, so an outside address needs it taken.
        ({"bound_ips": ("192.0.2.1",)}, {"ip": "198.51.100.1"}),
        ({"ip": "192.0.2.0/24"}, {}),
        ({}, {"ip": "not-an-address"}),
        ({}, {"ip": ""}),
    ],
    Reason.USES_EXHAUSTED: [({"use_count": 3}, {}), ({"uses": 1, "use_count": 7}, {})],
}


def build(failing: dict[Reason, int], count_use: bool = True) -> tuple[Ticket | None, CheckRequest]:
    ticket_changes: dict[str, Any] = {}
    request_changes: dict[str, Any] = {"count_use": count_use}
    for reason, variant in failing.items():
        options = FAILURES[reason]
        t, r = options[variant % len(options)]
        ticket_changes.update(t)
        request_changes.update(r)
    return passing_ticket(**ticket_changes), passing_request(**request_changes)


def test_baseline_passes() -> None:
    ticket, request = build({})
    assert decide(ticket, request, NOW) == Decision(allowed=True, count_use=True)


@pytest.mark.parametrize("reason", ORDER)
def test_each_step_alone(reason: Reason) -> None:
    for variant in range(len(FAILURES[reason])):
        ticket, request = build({reason: variant})
        assert decide(ticket, request, NOW) == Decision(allowed=False, reason=reason)


@pytest.mark.parametrize("step", range(len(ORDER)))
def test_step_wins_over_every_later_step(step: int) -> None:
    failing = dict.fromkeys(ORDER[step:], 0)
    ticket, request = build(failing)
    assert decide(ticket, request, NOW).reason is ORDER[step]


def test_unknown_key_wins_over_everything() -> None:
    _, request = build(dict.fromkeys(ORDER[1:], 0))
    assert decide(None, request, NOW) == Decision(allowed=False, reason=Reason.INVALID_AUTH_TOKEN)


@given(
    st.dictionaries(st.sampled_from(ORDER), st.integers(0, 3)),
    st.booleans(),
)
def test_first_failing_step_wins(failing: dict[Reason, int], count_use: bool) -> None:
    ticket, request = build(failing, count_use)
    decision = decide(ticket, request, NOW)
    counted_steps = ORDER if count_use else ORDER[:-1]
    expected = next((reason for reason in counted_steps if reason in failing), None)
    assert decision.reason is expected
    assert decision.allowed == (expected is None)
    assert decision.count_use == (expected is None and count_use)
    if not decision.allowed or not count_use:
        assert decision.bind is None


def test_expiry_boundary() -> None:
    ticket = passing_ticket(expire_at=NOW + 1)
    assert decide(ticket, passing_request(), NOW).allowed
    assert decide(ticket, passing_request(), NOW + 1).reason is Reason.EXPIRED


def test_zero_uses_is_unlimited() -> None:
    ticket = passing_ticket(uses=0, use_count=10**9)
    assert decide(ticket, passing_request(), NOW).allowed


def test_free_auto_slot_is_offered_on_a_counted_play() -> None:
    ticket = passing_ticket(ip="auto/24")
    decision = decide(ticket, passing_request(), NOW)
    assert decision == Decision(allowed=True, bind="203.0.113.0/24", count_use=True)


def test_bound_slot_admits_its_network_without_binding_again() -> None:
    ticket = passing_ticket(ip="auto/24", bound_ips=("203.0.113.0/24",))
    assert decide(ticket, passing_request(ip="203.0.113.99"), NOW) == Decision(
        allowed=True, count_use=True
    )
    refused = decide(ticket, passing_request(ip="198.51.100.1"), NOW)
    assert refused == Decision(allowed=False, reason=Reason.INVALID_IP)


def test_recheck_never_binds_and_ignores_uses() -> None:
    ticket = passing_ticket(ip="auto", uses=1, use_count=1, bound_ips=(CLIENT,))
    recheck = passing_request(count_use=False)
    assert decide(ticket, recheck, NOW) == Decision(allowed=True, count_use=False)

    unbound = passing_ticket(ip="auto", uses=1, use_count=1)
    assert decide(unbound, recheck, NOW) == Decision(allowed=False, reason=Reason.INVALID_IP)


def test_refused_play_never_burns_a_slot() -> None:
    ticket = passing_ticket(ip="auto", uses=2, use_count=2)
    decision = decide(ticket, passing_request(), NOW)
    assert decision == Decision(allowed=False, reason=Reason.USES_EXHAUSTED)
    assert decision.bind is None


def test_ipv4_mapped_client_matches_ipv4_entries() -> None:
    ticket = passing_ticket(ip="203.0.113.7")
    assert decide(ticket, passing_request(ip="::ffff:203.0.113.7"), NOW).allowed


def test_empty_ip_list_allows_any_readable_address() -> None:
    ticket = passing_ticket(ip="")
    assert decide(ticket, passing_request(ip="2001:db8::1"), NOW).allowed
    assert decide(ticket, passing_request(ip="garbage"), NOW).reason is Reason.INVALID_IP


def test_password_with_surrogates_is_compared_not_crashed() -> None:
    ticket = passing_ticket(password="\udcff")
    assert decide(ticket, passing_request(password="\udcff"), NOW).allowed
