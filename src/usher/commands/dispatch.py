"""From a parsed, signed request to a command's result.

The order of the checks is part of the security design: nothing about an
account is revealed before the caller proves it holds the account's secret,
and a signature is spent (for replay protection) only once it has verified
and its timestamp is fresh. A command that changes something runs only after
its signature is spent; a safe one (:data:`~usher.commands.SAFE_COMMANDS`)
runs while the signature is being spent, which saves a replay-protection
write's commit on every read, and its answer waits for that commit.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable
from dataclasses import dataclass

from usher.commands import COMMANDS, SAFE_COMMANDS, fields
from usher.commands.base import Context, Result, SessionsEnded
from usher.protocol.errors import (
    AuthorizationFailed,
    BadSignature,
    InvalidField,
    Replayed,
    TimestampOutOfRange,
    Unauthorized,
    UnrecognizedCommand,
)
from usher.protocol.signing import signature_digest, signature_matches
from usher.storage.base import Storage

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

    account = await storage.get_account(cdn)
    # Same answer for an unknown cdn and a wrong key, so nobody can probe
    # which api_keys exist under which cdn.
    if account is None or not hmac.compare_digest(
        api_key.encode("utf-8", "surrogatepass"), account.api_key.encode()
    ):
        raise AuthorizationFailed()
    if account.disabled:
        raise Unauthorized()
    if not signature_matches(signed.message, signed.signature, account.secret):
        raise BadSignature()
    if abs(now - timestamp) > tolerance:
        raise TimestampOutOfRange()
    handler = COMMANDS.get(command)
    if handler is None:
        raise UnrecognizedCommand()
    # The window is symmetric around the request's own timestamp: after
    # timestamp + tolerance the freshness check above refuses it anyway.
    claim = storage.claim_signature(
        signature_digest(signed.signature), now=now, expires_at=timestamp + tolerance
    )
    ctx = Context(storage, account, now)
    if sessions_ended is not None:
        ctx = Context(storage, account, now, sessions_ended)
    if command in SAFE_COMMANDS:
        return await _while_claiming(claim, handler(ctx, request))
    if not await claim:
        raise Replayed()
    return await handler(ctx, request)


async def _while_claiming(claim: Awaitable[bool], work: Awaitable[Result]) -> Result:
    """``work``'s result, run alongside ``claim``; raises :class:`Replayed`
    (or the claim's own error) when the signature could not be spent, in
    which case the result, whatever it was, is dropped."""
    task = asyncio.ensure_future(work)
    try:
        claimed = await claim
    except BaseException:
        _drop(task)
        raise
    if not claimed:
        _drop(task)
        raise Replayed()
    return await task


def _drop(task: asyncio.Future[Result]) -> None:
    task.cancel()
    # Its outcome is of no interest; retrieving it keeps asyncio from
    # logging "exception was never retrieved" for a failure nobody awaits.
    task.add_done_callback(lambda done: done.cancelled() or done.exception())
