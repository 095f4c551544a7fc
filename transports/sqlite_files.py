"""File queries of the SQLite store: the rows that describe uploaded files (their bytes on
disk are ``sqlite_uploads``' job)."""

from __future__ import annotations

import sqlite3
from typing import Any

from sealchat.core.hub.store import StoredFile

_SELECT = (
    "SELECT file_id, owner_key, name, size, sha256, room, to_key, received, complete, ts "
    "FROM files "
)
"""The start of every query for whole rows: the columns in the order stored_file() unpacks."""
_SELECT_SHARED = (
    "SELECT m.id, f.file_id, f.owner_key, f.name, f.size, f.sha256, f.room, f.to_key, "
    "f.received, f.complete, f.ts "
    "FROM messages AS m JOIN files AS f ON f.file_id = m.file_id "
    "WHERE m.file_id <> '' AND f.complete = 1 AND m.id > ? "
)
"""The start of the listings: shared files, each after the id of the message announcing it
(``m.file_id <> ''`` lets SQLite read only announcements, by the indexes of schema v4)."""


def stored_file(row: Any) -> StoredFile:
    """A row of ``files`` (its columns in table order) as a StoredFile."""
    file_id, owner_key, name, size, sha256, room, to_key, received, complete, ts = row
    return StoredFile(
        file_id=file_id,
        owner_key=owner_key,
        name=name,
        size=size,
        sha256=bytes(sha256),
        room=room,
        to_key=to_key,
        received=received,
        complete=bool(complete),
        ts=ts,
    )


def find_partial_upload(
    conn: sqlite3.Connection, owner_key: str, *, sha256: bytes, size: int, room: str, to_key: str
) -> StoredFile | None:
    """An incomplete upload by ``owner_key`` of the same content to the same target (the
    one with most bytes received), to resume."""
    row = conn.execute(
        _SELECT + "WHERE owner_key = ? AND complete = 0 AND sha256 = ? "
        "AND size = ? AND room = ? AND to_key = ? ORDER BY received DESC, ts DESC LIMIT 1",
        (owner_key, bytes(sha256), size, room, to_key),
    ).fetchone()
    return None if row is None else stored_file(row)


def get_file(conn: sqlite3.Connection, file_id: str) -> StoredFile | None:
    """A file's metadata, or None."""
    row = conn.execute(
        _SELECT + "WHERE file_id = ?",
        (file_id,),
    ).fetchone()
    return None if row is None else stored_file(row)


def usage(conn: sqlite3.Connection, owner_key: str) -> int:
    """Bytes the user's files take, counting partial uploads at their full offered size."""
    row = conn.execute(
        "SELECT COALESCE(SUM(size), 0) FROM files WHERE owner_key = ?", (owner_key,)
    ).fetchone()
    return int(row[0])


def files_for_room(
    conn: sqlite3.Connection, room: str, after: int, limit: int
) -> list[tuple[int, StoredFile]]:
    """Up to ``limit`` complete files shared in ``room`` after the message ``after``, in the
    order they were announced, each with its announcement's id."""
    rows = conn.execute(
        _SELECT_SHARED + "AND m.room = ? ORDER BY m.id LIMIT ?", (after, room, limit)
    )
    return [(r[0], stored_file(r[1:])) for r in rows]


_ONE_WAY = _SELECT_SHARED + "AND m.sender_key = ? AND m.to_key = ? ORDER BY m.id LIMIT ?"
"""Files one user sent another directly, as files_for_room lists a room's."""


def files_between(
    conn: sqlite3.Connection, a_key: str, b_key: str, after: int, limit: int
) -> list[tuple[int, StoredFile]]:
    """Like files_for_room, for the files sent directly between the two users (either way):
    each direction in announcement order, merged (UNION: the two are one for files to
    oneself)."""
    rows = conn.execute(
        f"SELECT * FROM ({_ONE_WAY}) UNION SELECT * FROM ({_ONE_WAY}) ORDER BY 1 LIMIT ?",  # noqa: S608
        (after, a_key, b_key, limit, after, b_key, a_key, limit, limit),
    )
    return [(r[0], stored_file(r[1:])) for r in rows]


def unfinished_uploads(conn: sqlite3.Connection, owner_key: str) -> list[StoredFile]:
    """The user's incomplete uploads, oldest offered first."""
    rows = conn.execute(
        _SELECT + "WHERE owner_key = ? AND complete = 0 ORDER BY ts, file_id", (owner_key,)
    )
    return [stored_file(r) for r in rows]
