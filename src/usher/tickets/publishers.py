"""Publishers (stream users, SPEC §6): who may push a stream, and the pure
rule that decides one publish.

A stream user names an app, a stream (or ``*``, every stream of the app) and
either a user with a pass (kept only as a slow salted hash) or nobody: an
*open entry* that lets anyone publish that stream without credentials.
Nothing here touches storage or the network; the password check is passed
in, so the rule can be tested with cheap hashes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
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


PublishReason = Literal[
    "open", "credentials", "no_stream_user", "no_credentials", "bad_credentials"
]


@dataclass(frozen=True, slots=True)
class PublishVerdict:
    """Whether a publish is allowed, and why (for the publish log)."""

    allowed: bool
    reason: PublishReason
    #: The stream user that allowed it.
    by: StreamUser | None = None


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
    only for entries naming its user: at most two. When none names it,
    ``password`` is checked against ``decoy`` (if given; see
    :func:`usher.passwords.dummy_hash`) so that a wrong user takes as long
    as a wrong pass.
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
    for entry in named:
        if verify(password, entry.pass_hash or ""):
            return PublishVerdict(True, "credentials", entry)
    if not named and decoy is not None:
        verify(password, decoy)
    return PublishVerdict(False, "bad_credentials")
