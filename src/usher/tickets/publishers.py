"""Publishers (stream users, SPEC §6): who may push a stream, and the pure
rule that decides one publish.

A stream user names an app, a stream (or ``*``, every stream of the app) and
either a user with a pass (kept only as a slow salted hash) or nobody: an
*open entry* that lets anyone publish that stream without credentials.
Nothing here touches storage or the network; the password check is passed
in, so the rule can be tested with cheap hashes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

#: The stream of an entry that covers every stream of its app.
EVERY_STREAM: Final = "*"


@dataclass(frozen=True, slots=True)
class StreamUserSettings:
    """ScaleEngine's recording/DVR settings: validated, stored and returned
    unchanged (``None`` when not given). Usher itself records nothing."""

    record: bool | None = None
    record_type: str | None = None
    segment_type: str | None = None
    segment_value: int | None = None
    save_folder: str | None = None
    playlist_count: int | None = None
    playlist_timeout: int | None = None
    enable_dvr: bool | None = None
    ga_key: str | None = None


@dataclass(frozen=True, slots=True)
class StreamUserName:
    """What names one stream user within an account: ``user`` is ``None``
    for the open entry."""

    app: str
    stream: str
    user: str | None


@dataclass(frozen=True, slots=True)
class StreamUser:
    """One stored stream user. ``user`` and ``pass_hash`` are both ``None``
    for an open entry, both set otherwise. ``id`` is 0 before it is stored."""

    id: int
    cdn: int
    app: str
    stream: str
    user: str | None
    pass_hash: str | None
    settings: StreamUserSettings
    created_at: int
    updated_at: int

    @property
    def name(self) -> StreamUserName:
        return StreamUserName(self.app, self.stream, self.user)


#: Why a publish was allowed or denied; ``blocked`` is decided before the
#: rule below, by the brute-force rule (:func:`blocked_until`).
PublishReason = Literal[
    "open", "credentials", "no_stream_user", "no_credentials", "bad_credentials", "blocked"
]


@dataclass(frozen=True, slots=True)
class PublishVerdict:
    """Whether a publish is allowed, and why (for the publish log)."""

    allowed: bool
    reason: PublishReason
    #: The stream user that allowed it.
    by: StreamUser | None = None


#: Hashes a denied publish with credentials computes, whatever the user.
HASHES_PER_DENIAL: Final = 2
#: ``verify(password, encoded_hash) -> bool``, constant-time
#: (:func:`usher.passwords.verify_password`).
Verify = Callable[[str, str], bool]


def decide_publish(
    candidates: Iterable[StreamUser],
    app: str,
    stream: str,
    user: str | None,
    password: str | None,
    verify: Verify,
    decoy: str | None = None,
) -> PublishVerdict:
    """Allow the publish when an entry of ``app`` covers ``stream`` (exactly
    or ``*``) and is open, or names ``user`` with a hash ``password`` matches.

    ``candidates`` may hold rows of other apps or streams (they are ignored),
    so a caller can pass what ``Storage.stream_users_for`` returned. Empty
    ``user``/``password`` count as absent. An exact entry is tried before
    ``*``, and an open entry before any hash, so a publish computes a hash
    only for entries naming its user: at most :data:`HASHES_PER_DENIAL`
    (an app belongs to one account, which has at most an exact and a ``*``
    entry per user). A denial with credentials always computes that many:
    the shortfall is checked against ``decoy`` (if given; see
    :func:`usher.passwords.dummy_hash`), so that a wrong user, or a user
    with one entry, takes as long as a wrong pass of a user with two.
    """
    covering = [c for c in candidates if c.app == app and c.stream in (stream, EVERY_STREAM)]
    if not covering:
        return PublishVerdict(False, "no_stream_user")
    # Exact before '*': the first match found is the one named in the log.
    covering.sort(key=lambda c: c.stream != stream)
    for entry in covering:
        if entry.user is None:
            return PublishVerdict(True, "open", entry)
    if not user or not password:
        return PublishVerdict(False, "no_credentials")
    named = [c for c in covering if c.user == user and c.pass_hash is not None]
    for entry in named[:HASHES_PER_DENIAL]:
        if verify(password, entry.pass_hash or ""):
            return PublishVerdict(True, "credentials", entry)
    if decoy is not None:
        for _ in range(HASHES_PER_DENIAL - len(named)):
            verify(password, decoy)
    return PublishVerdict(False, "bad_credentials")


# -- one publish: what the hook asked, what was decided, and the brute-force rule


#: Why a publish was allowed or denied, as the publish log keeps it; the
#: hooks answer with these sentences, and the panel and server log show them.
PUBLISH_REASON_TEXT: Final[dict[PublishReason, str]] = {
    "open": "allowed: an open entry lets anyone publish this stream",
    "credentials": "allowed: the user and pass match a stream user",
    "no_stream_user": "denied: no stream user covers this app and stream",
    "no_credentials": "denied: the publish URL has no user and pass",
    "bad_credentials": "denied: wrong user or pass",
    "blocked": "denied without checking: too many denied publishes from this address",
}


@dataclass(frozen=True, slots=True)
class PublishRequest:
    """A publish as a streaming server's hook describes it. ``user`` and
    ``password`` are ``None`` when the publish URL has none; the password
    never leaves this object (it is not stored, logged or shown)."""

    app: str
    stream: str
    user: str | None
    password: str | None = field(repr=False)
    #: The encoder's address, as the streaming server saw it.
    ip: str
    #: Which hook asked: ``nginx-rtmp``, ``srs``, ``mediamtx`` or ``ome``.
    server: str
    #: The streaming server's address.
    server_ip: str = ""


@dataclass(frozen=True, slots=True)
class PublishAttempt:
    """One row of the publish log. ``cdn`` is the account that owns the app
    (by its ``username-`` prefix), ``None`` when no account does; ``id`` is
    0 before it is stored."""

    id: int
    cdn: int | None
    at: int
    ip: str
    app: str
    stream: str
    #: The user the publish URL named, ``None`` when it named none.
    user: str | None
    allowed: bool
    reason: PublishReason
    server: str
    server_ip: str
    #: The stream user that allowed it.
    stream_user_id: int | None


@dataclass(frozen=True, slots=True)
class PublishFilter:
    """Which of an account's publish log rows to list; ``None`` is any."""

    allowed: bool | None = None
    ip: str | None = None
    app: str | None = None


@dataclass(frozen=True, slots=True)
class BruteForceLimit:
    """SPEC §6: after ``denials`` denied publishes from one address within
    ``window`` seconds, that address is denied for ``block`` seconds
    without checking (``USHER_PUBLISH_*`` settings)."""

    denials: int = 10
    window: int = 60
    block: int = 300

    @property
    def lookback(self) -> int:
        """How far back denials can still matter: a block that began
        ``block`` seconds ago was started by denials up to ``window``
        seconds before that."""
        return self.window + self.block


def blocked_until(denied_at: Sequence[int], limit: BruteForceLimit) -> int | None:
    """When the latest block of an address ends, given the times (ascending,
    in seconds) of its checked denials in the last ``limit.lookback``
    seconds; ``None`` when they never reached the limit.

    A block starts at the denial that makes ``limit.denials`` of them within
    less than ``limit.window`` seconds. Publishes refused *because* of a
    block are not denials here, so a blocked address that keeps trying is
    let back in when its block ends.
    """
    n = limit.denials
    until: int | None = None
    for i in range(len(denied_at) - n + 1):
        if denied_at[i + n - 1] - denied_at[i] < limit.window:
            until = denied_at[i + n - 1] + limit.block
    return until


def app_owner(app: str) -> str:
    """The username an app belongs to by the ``username-`` rule (``''``
    when the app has no ``-``, so no account can own it)."""
    owner, dash, _ = app.partition("-")
    return owner if dash else ""
