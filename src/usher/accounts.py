"""Creating and changing accounts (tenants): credential generation and rules."""

from __future__ import annotations

import re
import secrets
import string
import time

from usher.commands.fields import INTEGER_BOUNDS
from usher.protocol.errors import ConfigError
from usher.storage.base import Storage
from usher.tickets.model import Account

#: No ``-``: the first ``-`` of an app name ends the username that owns it.
USERNAME = re.compile(r"^[A-Za-z0-9_]{1,64}$")
_API_KEY_ALPHABET = string.ascii_uppercase + string.digits


def new_api_key() -> str:
    """32 upper-case letters and digits, like ScaleEngine's keys."""
    return "".join(secrets.choice(_API_KEY_ALPHABET) for _ in range(32))


def new_secret() -> str:
    """64 lower-case hex digits (256 bits)."""
    return secrets.token_hex(32)


def check_username(username: str) -> str:
    if not USERNAME.match(username):
        raise ConfigError(
            f"The username {username!r} is not valid: use 1 to 64 letters, digits or "
            "underscores (no '-', which separates the username from the app name)."
        )
    return username


async def create(
    storage: Storage,
    username: str,
    *,
    cdn: int | None = None,
    api_key: str | None = None,
    secret: str | None = None,
) -> Account:
    low, high = INTEGER_BOUNDS["cdn"]
    if cdn is not None and not low <= cdn <= high:
        raise ConfigError(f"--cdn must be between {low} and {high}, got {cdn}.")
    if api_key is not None and not api_key:
        raise ConfigError("--api-key must not be empty.")
    if secret is not None and len(secret) < 16:
        raise ConfigError("--secret must be at least 16 characters; omit it to generate one.")
    return await storage.create_account(
        username=check_username(username),
        api_key=api_key or new_api_key(),
        secret=secret or new_secret(),
        cdn=cdn,
        now=int(time.time()),
    )


async def find(storage: Storage, *, cdn: int | None, username: str | None) -> Account:
    """The account named by cdn or username, or a ConfigError saying so."""
    account = None
    if cdn is not None:
        account = await storage.get_account(cdn)
    elif username is not None:
        account = await storage.get_account_by_username(username)
    else:
        raise ConfigError("Name the account with --cdn N or --username NAME.")
    if account is None:
        named = f"cdn {cdn}" if cdn is not None else f"username {username!r}"
        raise ConfigError(f"No account with {named}; see `usher account list`.")
    return account


def public_fields(account: Account) -> dict[str, object]:
    """What may be shown in listings: everything but the secret."""
    return {**_names(account), "disabled": account.disabled}


def credentials(account: Account) -> dict[str, object]:
    """The four values a publisher needs (shown once, on create or rotate)."""
    return {**_names(account), "secret": account.secret}


def _names(account: Account) -> dict[str, object]:
    return {"cdn": account.cdn, "username": account.username, "api_key": account.api_key}
