"""The tables every backend holds, described once.

The column lists the backends' SQL is built from, the tables ``usher db copy``
moves, and the column order :mod:`usher.storage.rows` maps rows from all come
from here. Each backend's dialect SQL (placeholders, upserts, locking) stays
in its own package; only the names and their order are shared.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Final

from usher.tickets.model import Attempt, PlaybackSession, Ticket
from usher.tickets.publishers import PublishAttempt, StreamUserSettings


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    #: The column rows are ordered and resumed by (``usher db copy``).
    key: str
    columns: tuple[str, ...]
    #: Columns SQLite keeps as 0/1 and PostgreSQL as booleans.
    booleans: frozenset[str] = frozenset()
    #: Columns that never change once a row exists: a resumed copy checks
    #: that the destination's last row is the source's row with that key.
    identity: tuple[str, ...] = ()

    def listed(self, *, alias: str = "", without: tuple[str, ...] = ()) -> str:
        """The columns as a SQL list, optionally qualified by ``alias``."""
        prefix = f"{alias}." if alias else ""
        return ", ".join(prefix + column for column in self.columns if column not in without)


ACCOUNTS: Final = Table(
    "accounts",
    "cdn",
    ("cdn", "username", "api_key", "secret", "disabled", "created_at"),
    frozenset({"disabled"}),
    ("cdn", "username"),
)
PANEL_PASSWORDS: Final = Table(
    "panel_passwords", "cdn", ("cdn", "hash", "updated_at"), identity=("cdn",)
)
TICKETS: Final = Table(
    "tickets",
    "id",
    # After ``id``, in the order of :class:`~usher.tickets.model.Ticket`'s
    # fields, which ``rows.ticket_from_row`` reads.
    ("id", "key", "cdn", "pass", "ip", "video", "app", "uses", "use_count", "active",
     "created_at", "expire_at", "used_at", "bound_ips", "max_viewers"),
    frozenset({"active"}),
    ("id", "key", "created_at"),
)  # fmt: skip
ATTEMPTS: Final = Table(
    "attempts",
    "id",
    # The order of :class:`~usher.tickets.model.Attempt`'s fields.
    ("id", "cdn", "at", "key", "pass", "ip", "video", "app", "appinst", "pageurl", "refurl",
     "success", "reason", "server_ip"),
    frozenset({"success"}),
    ("id", "at", "key"),
)  # fmt: skip
SESSIONS: Final = Table(
    "sessions",
    "id",
    # The order of :class:`~usher.tickets.model.PlaybackSession`'s fields.
    ("id", "handle", "cdn", "key", "ip", "app", "video", "protocol", "started_at",
     "last_seen_at", "expires_at", "ended_at", "end_reason", "alias"),
)  # fmt: skip
STREAM_USERS: Final = Table(
    "stream_users",
    "id",
    # ``login`` is the user ('' for an open entry); the settings follow the
    # order of :class:`~usher.tickets.publishers.StreamUserSettings`' fields.
    ("id", "cdn", "app", "stream", "login", "pass_hash", "record", "record_type",
     "segment_type", "segment_value", "save_folder", "playlist_count", "playlist_timeout",
     "enable_dvr", "ga_key", "created_at", "updated_at"),
    frozenset({"record", "enable_dvr"}),
    ("id", "cdn", "app", "stream", "login", "created_at"),
)  # fmt: skip
PUBLISH_LOG: Final = Table(
    "publish_log",
    "id",
    # The order of :class:`~usher.tickets.publishers.PublishAttempt`'s
    # fields, ``login`` for ``user`` ('' when the publish named none).
    ("id", "cdn", "at", "ip", "app", "stream", "login", "allowed", "reason", "server",
     "server_ip", "stream_user_id"),
    frozenset({"allowed"}),
    ("id", "at", "ip"),
)  # fmt: skip
SIGNATURES: Final = Table(
    "used_signatures", "digest", ("digest", "expires_at"), identity=("digest",)
)
#: Rollups of the attempts (migrations 0004 and 0006), each row a count
#: ``n``. Pruning leaves rows at ``n = 0``; a pass that finds nothing more
#: to prune deletes them.
ROLLUP_TABLES: Final = ("attempt_counts", "attempt_minutes", "filter_counts")
#: What ``usher db copy`` moves, in an order that keeps foreign keys whole
#: (used signatures only on request).
TABLES: Final = (ACCOUNTS, PANEL_PASSWORDS, TICKETS, ATTEMPTS, STREAM_USERS, PUBLISH_LOG)

#: A ticket as read: its columns (``key`` first, as ``Ticket`` has them) and
#: whether its account is disabled.
TICKET_COLUMNS: Final = TICKETS.listed(alias="t", without=("id",)) + ", a.disabled"
TICKET_FROM: Final = "FROM tickets t JOIN accounts a ON a.cdn = t.cdn"
#: A new row's columns: the database numbers ``id``.
TICKET_INSERT_COLUMNS: Final = TICKETS.columns[1:]
TICKET_INSERT: Final = ", ".join(TICKET_INSERT_COLUMNS)
ATTEMPT_COLUMNS: Final = ATTEMPTS.listed()
ATTEMPT_INSERT_COLUMNS: Final = ATTEMPTS.columns[1:]
ATTEMPT_INSERT: Final = ", ".join(ATTEMPT_INSERT_COLUMNS)
ACCOUNT_COLUMNS: Final = ACCOUNTS.listed()
SESSION_INSERT: Final = SESSIONS.listed()
SESSION_COLUMNS: Final = SESSIONS.listed(alias="s")
SESSION_WIDTH: Final = len(SESSIONS.columns)

#: The attempt columns ``Storage.top_attempt_values`` may group by, mapped
#: to SQL through this fixed table (never caller text).
GROUPABLE: Final[dict[str, str]] = {name: name for name in ("reason", "ip", "key", "app", "video")}


def _attributes(columns: tuple[str, ...]) -> list[str]:
    return ["password" if column == "pass" else column for column in columns]


# The row mappers read columns by position; these fail at import, not at the
# first mis-mapped row, if the description and the models ever drift apart.
assert [f.name for f in fields(Ticket)] == [
    *_attributes(TICKETS.columns[1:]),
    "account_disabled",
    "viewers",
], "TICKETS.columns must follow Ticket's fields"
assert [f.name for f in fields(Attempt)] == _attributes(ATTEMPTS.columns)
assert [f.name for f in fields(PlaybackSession)] == list(SESSIONS.columns)
assert [f.name for f in fields(StreamUserSettings)] == list(STREAM_USERS.columns[6:15])
assert [f.name for f in fields(PublishAttempt)] == [
    "user" if column == "login" else column for column in PUBLISH_LOG.columns
], "PUBLISH_LOG.columns must follow PublishAttempt's fields"
