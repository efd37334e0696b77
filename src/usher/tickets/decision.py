"""The playback decision: may this request play under this ticket state?

The checks run in the contract's order (README, "Tickets and playback
checks") and stop at the first failure, because the reason is reported to
publishers (``sevu.errorlog``) and streaming servers and must be the same one
every SEVU implementation gives.

:func:`decide` only decides. Applying the decision (counting the use, taking
the ``auto`` slot) is the storage's job, done atomically against the current
row, which is why the decision carries the slot value instead of a new ticket.

This runs on every playback start and every session re-check, so the stored
lists are compiled through caches and refusals are preallocated.
"""

from __future__ import annotations

import hmac

from usher.tickets.ipnet import compiled_ip_rules, parse_client_address
from usher.tickets.model import CheckRequest, Decision, Reason, Ticket
from usher.tickets.wildcard import compiled_patterns

_REFUSED = {reason: Decision(allowed=False, reason=reason) for reason in Reason}
_ALLOWED_COUNTED = Decision(allowed=True, count_use=True)
_ALLOWED_RECHECK = Decision(allowed=True, count_use=False)


def _same_password(given: str, stored: str) -> bool:
    # surrogatepass: a password decoded leniently from non-UTF-8 input may
    # hold lone surrogates, and an encoding error must not turn a wrong
    # password into a server error.
    return hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), stored.encode("utf-8", "surrogatepass")
    )


def decide(ticket: Ticket | None, request: CheckRequest, now: int) -> Decision:
    """Evaluate ``request`` against ``ticket`` (None when the key is unknown) at ``now``.

    A refused decision has ``count_use=False`` and no ``bind``: nothing is
    spent on a failed attempt. ``request.count_use=False`` marks a re-check of
    an open session, which neither takes an ``auto`` slot nor is limited by
    ``uses`` or ``max_viewers`` (its start already spent the use).
    """
    if ticket is None or not _same_password(request.password, ticket.password):
        return _REFUSED[Reason.INVALID_AUTH_TOKEN]
    if not ticket.active or ticket.account_disabled:
        return _REFUSED[Reason.TICKET_REVOKED]
    if now >= ticket.expire_at:
        return _REFUSED[Reason.EXPIRED]
    if not compiled_patterns(ticket.app).matches(request.app):
        return _REFUSED[Reason.INVALID_APPLICATION]
    if not compiled_patterns(ticket.video).matches(request.video):
        return _REFUSED[Reason.INVALID_VIDEO]
    addr = parse_client_address(request.ip)
    if addr is None:
        # Not even an empty ``ip`` list admits an address we cannot read: a
        # broken server integration should be visible, not silently open.
        return _REFUSED[Reason.INVALID_IP]
    ip_match = compiled_ip_rules(ticket.ip).match(
        addr, ticket.bound_ips, may_bind=request.count_use
    )
    if not ip_match.allowed:
        return _REFUSED[Reason.INVALID_IP]
    if not request.count_use:
        return _ALLOWED_RECHECK
    if ticket.uses > 0 and ticket.use_count >= ticket.uses:
        return _REFUSED[Reason.USES_EXHAUSTED]
    # ``viewers`` is filled in by the storage, which counts the ticket's open
    # sessions with the ticket locked (tickets.sessions.SessionBook).
    if ticket.max_viewers > 0 and ticket.viewers >= ticket.max_viewers:
        return _REFUSED[Reason.TOO_MANY_VIEWERS]
    if ip_match.bind is None:
        return _ALLOWED_COUNTED
    return Decision(allowed=True, bind=ip_match.bind, count_use=True)
