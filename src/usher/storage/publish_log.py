"""The publish log's SQL and row mapping, shared by both backends.

The statements differ between SQLite and PostgreSQL only in the parameter
placeholder, so each is built once from it; the backends only run them. A
publish that named no user is stored with ``login = ''`` (migration 0009)
and read back as ``None``. Caller text is stored, and filters are matched,
as :func:`~usher.storage.rows.clip` makes it, the attempts' rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from usher.storage.base import MAX_PUBLISH_BATCH, MAX_PUBLISH_DENIALS
from usher.storage.rows import clip
from usher.storage.schema import PUBLISH_LOG
from usher.tickets.model import MAX_PAGE_ROWS
from usher.tickets.publishers import PublishAttempt, PublishFilter

COLUMNS: Final = PUBLISH_LOG.listed()
_INSERT: Final = PUBLISH_LOG.columns[1:]
#: The rows the brute-force rule counts; the same words as the partial
#: index ``publish_log_denials``, which SQLite only uses when they match.
_CHECKED_DENIAL: Final = "NOT allowed AND reason <> 'blocked'"


def publish_from_row(row: tuple[Any, ...]) -> PublishAttempt:
    """A publish log row from :data:`COLUMNS`."""
    return PublishAttempt(
        id=int(row[0]),
        cdn=None if row[1] is None else int(row[1]),
        at=int(row[2]),
        ip=row[3],
        app=row[4],
        stream=row[5],
        user=row[6] or None,
        # SQLite keeps 0/1, PostgreSQL booleans.
        allowed=bool(row[7]),
        reason=row[8],
        server=row[9],
        server_ip=row[10],
        stream_user_id=None if row[11] is None else int(row[11]),
    )


def records_params(attempts: Sequence[PublishAttempt]) -> list[tuple[object, ...]]:
    """:attr:`PublishLogSQL.record`'s parameters, one tuple per attempt;
    ``ValueError`` for more than ``MAX_PUBLISH_BATCH``."""
    if len(attempts) > MAX_PUBLISH_BATCH:
        raise ValueError(
            f"record_publishes takes at most {MAX_PUBLISH_BATCH} attempts, not {len(attempts)}."
        )
    return [record_params(attempt) for attempt in attempts]


def record_params(attempt: PublishAttempt) -> tuple[object, ...]:
    """:attr:`PublishLogSQL.record`'s parameters (the ``id`` is the database's)."""
    return (
        attempt.cdn,
        attempt.at,
        clip(attempt.ip),
        clip(attempt.app),
        clip(attempt.stream),
        clip(attempt.user or ""),
        attempt.allowed,
        attempt.reason,
        clip(attempt.server),
        clip(attempt.server_ip),
        attempt.stream_user_id,
    )


def denials_params(ip: str, since: int, limit: int) -> tuple[object, ...]:
    """:attr:`PublishLogSQL.denials`' parameters; ``ValueError`` for a
    ``limit`` outside ``1..MAX_PUBLISH_DENIALS``."""
    if not 1 <= limit <= MAX_PUBLISH_DENIALS:
        raise ValueError(
            f"The number of publish denials to read must be from 1 to"
            f" {MAX_PUBLISH_DENIALS}, got {limit}."
        )
    return clip(ip), since, limit


def prune_params(before: int, batch: int) -> tuple[object, ...]:
    """:attr:`PublishLogSQL.prune`'s parameters; ``ValueError`` for a
    ``batch`` under 1."""
    if batch < 1:
        raise ValueError(f"The batch must be at least 1 publish log row, got {batch}.")
    return before, batch


def filter_index(where: PublishFilter) -> str:
    """The index an account's listing filtered by ``where`` reads: the
    address's, the app's, the allowed-or-denied rows' or all of them, in
    that order when several filters are given (the narrowest range first;
    the other filters are checked on the rows it yields)."""
    if where.ip is not None:
        return "publish_log_cdn_ip"
    if where.app is not None:
        return "publish_log_cdn_app"
    if where.allowed is not None:
        return "publish_log_cdn_allowed"
    return "publish_log_cdn"


@dataclass(frozen=True, slots=True)
class PublishLogSQL:
    """The publish log statements of one backend, built from its placeholder."""

    mark: str
    #: Insert one row, returning its id.
    record: str
    #: The latest checked denials' times of one address since a time, at
    #: most a limit of them, oldest first: ``ip, since, limit``.
    denials: str
    #: Delete up to ``batch`` rows logged before ``before``, oldest first:
    #: ``before, batch``.
    prune: str
    #: Whether a listing names its index (SQLite's ``INDEXED BY``: without
    #: statistics it may take any of the equally good looking ones when
    #: several filters are given); PostgreSQL's planner chooses by its own.
    hinted: bool

    @classmethod
    def build(cls, mark: str, *, hinted: bool = False, arrays: bool = False) -> PublishLogSQL:
        """``arrays``: name the pruned ids as ``= ANY(ARRAY(…))`` (PostgreSQL),
        which is always read through the primary key, where its planner may
        answer ``IN (…)`` by hashing a scan of the whole log."""
        values = ", ".join(mark for _ in _INSERT)
        ids = ("= ANY(ARRAY(", "))") if arrays else ("IN (", ")")
        return cls(
            mark=mark,
            record=(
                f"INSERT INTO publish_log ({', '.join(_INSERT)}) VALUES ({values}) RETURNING id"
            ),
            # Newest first through the (ip, at) partial index, then turned
            # round: the rule wants them oldest first.
            denials=(
                "SELECT at FROM (SELECT at FROM publish_log"
                f" WHERE ip = {mark} AND {_CHECKED_DENIAL} AND at >= {mark}"
                f" ORDER BY at DESC LIMIT {mark}) AS latest ORDER BY at"
            ),
            prune=(
                f"DELETE FROM publish_log WHERE id {ids[0]}SELECT id FROM publish_log"
                f" WHERE at < {mark} ORDER BY at LIMIT {mark}{ids[1]}"
            ),
            hinted=hinted,
        )

    def listing(
        self, cdn: int, where: PublishFilter, rows: int, before: int | None
    ) -> tuple[str, list[object]]:
        """An account's rows matching ``where``, newest first by id, below
        ``before`` when given; ``ValueError`` for ``rows`` outside
        ``1..MAX_PAGE_ROWS``."""
        if not 1 <= rows <= MAX_PAGE_ROWS:
            raise ValueError(
                f"The number of publish log rows to list must be from 1 to {MAX_PAGE_ROWS},"
                f" got {rows}."
            )
        mark = self.mark
        sql = [f"cdn = {mark}"]
        params: list[object] = [cdn]
        for column, value in (("ip", where.ip), ("app", where.app)):
            if value is not None:
                sql.append(f"{column} = {mark}")
                params.append(clip(value))
        if where.allowed is not None:
            sql.append(f"allowed = {mark}")
            params.append(where.allowed)
        if before is not None:
            sql.append(f"id < {mark}")
            params.append(before)
        hint = f" INDEXED BY {filter_index(where)}" if self.hinted else ""
        # ``rows`` is a validated int: inlined, the statement cache is keyed
        # on the shape only.
        return (
            f"SELECT {COLUMNS} FROM publish_log{hint} WHERE {' AND '.join(sql)}"
            f" ORDER BY id DESC LIMIT {int(rows)}",
            params,
        )
