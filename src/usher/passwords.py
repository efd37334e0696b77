"""Control-panel passwords: scrypt hashes, never the passwords themselves.

An encoded hash reads ``scrypt$<log2 N>$<r>$<p>$<salt>$<hash>`` (salt and
hash in unpadded URL-safe base64), so the cost can be raised later without
invalidating stored hashes: each one carries the parameters it was made with.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets

from usher.protocol.errors import ConfigError

#: N = 2**15, r = 8: 32 MiB and some tens of milliseconds per hash, a cost
#: that makes guessing slow without letting a burst of sign-ins exhaust a
#: small server.
LOG2_N = 15
BLOCK_SIZE = 8
PARALLELISM = 1
_SALT_BYTES = 16
_HASH_BYTES = 32
# Enough for the largest parameters verify() accepts (128 * r * N bytes).
_MAXMEM = 128 * 16 * 2**17 + 2**20
MIN_LENGTH = 10
MAX_LENGTH = 1024


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _scrypt(password: str, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8", "surrogatepass"),
        salt=salt,
        n=2**log2_n,
        r=r,
        p=p,
        maxmem=_MAXMEM,
        dklen=_HASH_BYTES,
    )


def check_new_password(password: str) -> str:
    """The password if it is acceptable as a new panel password."""
    if len(password) < MIN_LENGTH:
        raise ConfigError(
            f"The panel password is {len(password)} characters long; "
            f"use at least {MIN_LENGTH} (a passphrase of a few words works well)."
        )
    if len(password) > MAX_LENGTH:
        raise ConfigError(f"The panel password is longer than {MAX_LENGTH} characters.")
    return password


#: The cheapest cost :func:`verify_password` accepts; tests hash with it.
MIN_LOG2_N = 10


def hash_password(password: str, *, log2_n: int = LOG2_N) -> str:
    """A new encoded hash of ``password`` with a fresh random salt.

    ``log2_n`` below the default is for tests only: it keeps a suite that
    hashes many passwords fast, and the hash still verifies as any other.
    """
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = _scrypt(password, salt, log2_n, BLOCK_SIZE, PARALLELISM)
    return f"scrypt${log2_n}${BLOCK_SIZE}${PARALLELISM}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, encoded: str) -> bool:
    """Whether ``password`` matches ``encoded``; ``False`` for any hash this
    code cannot read (never an exception: a damaged row must not become a
    sign-in error page that differs from a wrong password)."""
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != "scrypt" or len(password) > MAX_LENGTH:
        return False
    try:
        log2_n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, expected = _unb64(parts[4]), _unb64(parts[5])
    except ValueError:
        return False
    # Bounded so that a tampered row cannot make one sign-in take minutes.
    if not (MIN_LOG2_N <= log2_n <= 17 and 1 <= r <= 16 and 1 <= p <= 4 and expected):
        return False
    actual = _scrypt(password, salt, log2_n, r, p)
    return hmac.compare_digest(actual, expected)


@functools.cache
def dummy_hash() -> str:
    """Checked against when an account has no panel password, so that a
    sign-in attempt takes as long whether or not the account has one."""
    return hash_password(secrets.token_urlsafe(16))
