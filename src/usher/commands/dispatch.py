"""From a parsed, signed request to a command's result.

The order of the checks is part of the security design: nothing about an
account is revealed before the caller proves it holds the account's secret,
and a signature is spent (for replay protection) only once it has verified
and its timestamp is fresh. A command that changes something runs only after
its signature is spent; a safe one (:data:`~usher.commands.SAFE_COMMANDS`)
runs while the signature is being spent, which saves a replay-protection
write's commit on every read, and its answer waits for that commit.

The account that verifies a signature may be the node's copy
(:meth:`~usher.storage.base.Storage.cached_account`), which saves a read
before anything else can start. A copy only ever accepts: every refusal is
decided on the row the database holds, and the claim spends the signature
only if that row still authenticates as the copy did; if not, the request
is checked again against the row.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable
from dataclasses import dataclass

from usher.commands import COMMANDS, SAFE_COMMANDS, fields
from usher.commands.base import Context, Result, SessionsEnded
from usher.protocol.errors import (
    ApiError,
    AuthorizationFailed,
    BadSignature,
    InvalidField,
    Replayed,
    StorageBusy,
    TimestampOutOfRange,
    Unauthorized,
    UnrecognizedCommand,
)
from usher.protocol.signing import signature_digest, signature_matches
from usher.storage.base import Claim, Storage
from usher.tickets.model import Account

ENVELOPE_FIELDS = ("command", "cdn", "api_key", "timestamp")


@dataclass(frozen=True, slots=True)
class SignedCommand:
    """A request as parsed from JSON or PHP form, before authentication."""

    fields: dict[str, object]
    message: bytes
    signature: str


async def execute(
    signed: SignedCommand,
    storage: Storage,
    *,
    now: int,
    tolerance: int,
    sessions_ended: SessionsEnded | None = None,
) -> Result:
    """Authenticate, spend the signature and run the command.

    Raises an :class:`~usher.protocol.errors.ApiError` for every failure.
    """
    request = signed.fields
    fields.require(request, *ENVELOPE_FIELDS)
    command = fields.text(request, "command") or ""
    cdn = fields.integer(request, "cdn")
    api_key = fields.text(request, "api_key") or ""
    timestamp = fields.integer(request, "timestamp")
    if cdn is None or timestamp is None:  # present but "" — as good as missing
        raise InvalidField("cdn" if cdn is None else "timestamp", "expected an integer")

    late = abs(now - timestamp) > tolerance
    handler = COMMANDS.get(command)
    account = storage.cached_account(cdn)
    if account is None or late or handler is None or _refusal(account, api_key, signed) is not None:
        # A refusal is decided on the row as the database holds it now.
        account = await _authenticated(storage, cdn, api_key, signed)
    if late:
        raise TimestampOutOfRange()
    if handler is None:
        raise UnrecognizedCommand()
    digest = signature_digest(signed.signature)
    # The window is symmetric around the request's own timestamp: after
    # timestamp + tolerance the freshness check above refuses it anyway.
    expires_at = timestamp + tolerance
    for _ in range(CLAIM_TRIES):
        claim = storage.claim_signature(digest, now=now, expires_at=expires_at, account=account)
        ctx = Context(storage, account, now)
        if sessions_ended is not None:
            ctx = Context(storage, account, now, sessions_ended)
        try:
            if command in SAFE_COMMANDS:
                return await _while_claiming(claim, handler(ctx, request))
            await _spent(claim)
            return await handler(ctx, request)
        except _AccountChanged:
            # The copy that verified the signature is out of date, or the
            # account changed since it was read: the row as it is now
            # decides (it refuses, unless it changed back meanwhile).
            account = await _authenticated(storage, cdn, api_key, signed)
    raise StorageBusy("The account changed while this request was being checked; send it again.")


#: Claims of one request whose account keeps changing under it, at most.
CLAIM_TRIES = 3


class _AccountChanged(Exception):
    """The claim found that the account no longer authenticates as the copy
    the signature was verified with did."""


def _refusal(account: Account | None, api_key: str, signed: SignedCommand) -> ApiError | None:
    """Why ``account`` does not authenticate the request, or ``None``."""
    # Same answer for an unknown cdn and a wrong key, so nobody can probe
    # which api_keys exist under which cdn.
    if account is None or not hmac.compare_digest(
        api_key.encode("utf-8", "surrogatepass"), account.api_key.encode()
    ):
        return AuthorizationFailed()
    if account.disabled:
        return Unauthorized()
    if not signature_matches(signed.message, signed.signature, account.secret):
        return BadSignature()
    return None


async def _authenticated(
    storage: Storage, cdn: int, api_key: str, signed: SignedCommand
) -> Account:
    """The account as the database holds it now, if it authenticates the
    request; raises the refusal otherwise."""
    account = await storage.get_account(cdn)
    refusal = _refusal(account, api_key, signed)
    if refusal is not None:
        raise refusal
    assert account is not None  # _refusal refuses a missing account
    return account


async def _spent(claim: Awaitable[Claim]) -> None:
    """Wait for ``claim``; raise unless it spent the signature."""
    outcome = await claim
    if outcome is Claim.REPLAYED:
        raise Replayed()
    if outcome is Claim.ACCOUNT_CHANGED:
        raise _AccountChanged()


async def _while_claiming(claim: Awaitable[Claim], work: Awaitable[Result]) -> Result:
    """``work``'s result, run alongside ``claim``; raises as :func:`_spent`
    does (or the claim's own error) when the signature was not spent, in
    which case the result, whatever it was, is dropped."""
    task = asyncio.ensure_future(work)
    try:
        await _spent(claim)
    except BaseException:
        _drop(task)
        raise
    return await task


def _drop(task: asyncio.Future[Result]) -> None:
    task.cancel()
    # Its outcome is of no interest; retrieving it keeps asyncio from
    # logging "exception was never retrieved" for a failure nobody awaits.
    task.add_done_callback(lambda done: done.cancelled() or done.exception())
