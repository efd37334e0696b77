"""Stream users' SQL and row mapping, shared by both backends.

The statements differ between SQLite and PostgreSQL only in the parameter
placeholder, so each is built once from it. The open entry's user is
stored as ``''`` (see migration 0008) and read back as ``None``. Text is
stored, and names and filters are matched, as :func:`storable` makes it.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass, replace
from typing import Any

from usher.storage.base import one_stream_user
from usher.storage.schema import STREAM_USERS
from usher.tickets.publishers import StreamUser, StreamUserName, StreamUserSettings
from usher.tickets.text import storable

COLUMNS = STREAM_USERS.listed()
_INSERT = STREAM_USERS.columns[1:]
#: Replaced when the same app + stream + user is saved again.
_REPLACED = (*STREAM_USERS.columns[5:15], "updated_at")


def _flag(value: object) -> bool | None:
    # SQLite keeps 0/1, PostgreSQL booleans; NULL is "not given".
    return None if value is None else bool(value)


def stream_user_from_row(row: tuple[Any, ...]) -> StreamUser:
    """A stream user from :data:`COLUMNS`."""
    return StreamUser(
        id=int(row[0]),
        cdn=int(row[1]),
        app=row[2],
        stream=row[3],
        user=row[4] or None,
        pass_hash=row[5],
        settings=StreamUserSettings(
            record=_flag(row[6]),
            record_type=row[7],
            segment_type=row[8],
            segment_value=row[9],
            save_folder=row[10],
            playlist_count=row[11],
            playlist_timeout=row[12],
            enable_dvr=_flag(row[13]),
            ga_key=row[14],
        ),
        created_at=int(row[15]),
        updated_at=int(row[16]),
    )


@dataclass(frozen=True, slots=True)
class StreamUserSQL:
    """The statements of one backend, built from its placeholder."""

    #: Insert, or replace the pass and settings of the same name (keeping
    #: its id and ``created_at``); returns the row as it is now.
    save: str
    #: ``WHERE`` of one stream user by ``cdn`` and id / by ``cdn`` and name.
    by_id: str
    by_name: str
    #: The candidates of a publish check.
    for_publish: str

    def which(
        self, cdn: int, id: int | None, name: StreamUserName | None
    ) -> tuple[str, tuple[object, ...]]:
        """The ``WHERE`` body and parameters naming one of the account's
        stream users, by id or by name (exactly one, else ``ValueError``)."""
        one_stream_user(id, name)
        if name is None:
            return self.by_id, (cdn, id)
        return self.by_name, name_params(cdn, name)

    @classmethod
    def build(cls, mark: str) -> StreamUserSQL:
        values = ", ".join(mark for _ in _INSERT)
        replaced = ", ".join(f"{c} = excluded.{c}" for c in _REPLACED)
        return cls(
            save=(
                f"INSERT INTO stream_users ({', '.join(_INSERT)}) VALUES ({values})"
                f" ON CONFLICT (cdn, app, stream, login) DO UPDATE SET {replaced}"
                f" RETURNING {COLUMNS}"
            ),
            by_id=f"cdn = {mark} AND id = {mark}",
            by_name=f"cdn = {mark} AND app = {mark} AND stream = {mark} AND login = {mark}",
            # A disabled account's stream users allow nothing, as its tickets.
            for_publish=(
                f"SELECT {STREAM_USERS.listed(alias='u')} FROM stream_users u"
                " JOIN accounts a ON a.cdn = u.cdn"
                f" WHERE u.app = {mark} AND u.stream IN ({mark}, '*') AND NOT a.disabled"
                " ORDER BY u.id"
            ),
        )


def _opt(value: str | None) -> str | None:
    return None if value is None else storable(value)


def publish_params(app: str, stream: str) -> tuple[str, str]:
    """:attr:`StreamUserSQL.for_publish`'s parameters."""
    return storable(app), storable(stream)


def save_params(user: StreamUser) -> tuple[object, ...]:
    """:attr:`StreamUserSQL.save`'s parameters."""
    s = user.settings
    settings = replace(
        s,
        record_type=_opt(s.record_type),
        segment_type=_opt(s.segment_type),
        save_folder=_opt(s.save_folder),
        ga_key=_opt(s.ga_key),
    )
    return (
        user.cdn,
        storable(user.app),
        storable(user.stream),
        storable(user.user or ""),
        user.pass_hash,
        *astuple(settings),
        user.created_at,
        user.updated_at,
    )


def name_params(cdn: int, name: StreamUserName) -> tuple[object, ...]:
    """:attr:`StreamUserSQL.by_name`'s parameters."""
    return (cdn, storable(name.app), storable(name.stream), storable(name.user or ""))


def list_where(
    cdn: int, app: str | None, stream: str | None, mark: str
) -> tuple[str, list[object]]:
    """``WHERE`` and parameters of an account's listing, filtered."""
    sql = [f"cdn = {mark}"]
    params: list[object] = [cdn]
    for column, value in (("app", app), ("stream", stream)):
        if value is not None:
            sql.append(f"{column} = {mark}")
            params.append(storable(value))
    return " AND ".join(sql), params
