"""Read marker queries of the SQLite store: how far each user has read each conversation."""

from __future__ import annotations

import sqlite3

from sealchat.transports.sqlite_schema import one_target

_RAISE = (
    "INSERT INTO read_markers (user_key, room, peer_key, up_to) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (user_key, room, peer_key) DO UPDATE SET up_to = excluded.up_to "
    "WHERE excluded.up_to > read_markers.up_to"
)
_OF_ROOMS = (
    "SELECT r.room, r.up_to FROM read_markers r JOIN memberships m "
    "ON m.room = r.room AND m.user_key = r.user_key "
    "WHERE r.user_key = ? AND r.room <> '' ORDER BY r.room"
)
_OF_DIRECTS = (
    "SELECT u.name, r.up_to FROM read_markers r JOIN users u ON u.key = r.peer_key "
    "WHERE r.user_key = ? AND r.peer_key <> '' ORDER BY r.up_to DESC, u.key LIMIT ?"
)


def raise_read_marker(
    conn: sqlite3.Connection, key: str, room: str, peer_key: str, up_to: int
) -> bool:
    """Set user ``key``'s marker in the room or the direct conversation with ``peer_key`` to
    ``up_to`` if that is higher; whether it rose. ValueError if no such user."""
    one_target(room, peer_key)
    if up_to <= 0:
        return False  # no marker reads as 0: nothing to store
    try:
        return conn.execute(_RAISE, (key, room, peer_key, up_to)).rowcount == 1
    except sqlite3.IntegrityError:
        raise ValueError("no such user") from None


def read_markers(conn: sqlite3.Connection, key: str, limit: int) -> list[tuple[str, str, int]]:
    """User ``key``'s markers in its rooms, and in up to ``limit`` direct conversations with
    existing users, the highest first: (room, peer's display name, up_to) each."""
    rooms = [(room, "", int(up_to)) for room, up_to in conn.execute(_OF_ROOMS, (key,))]
    directs = [("", name, int(up_to)) for name, up_to in conn.execute(_OF_DIRECTS, (key, limit))]
    return rooms + directs


def forget_room_marker(conn: sqlite3.Connection, room: str, key: str) -> None:
    """Delete user ``key``'s marker in ``room`` (it left the room)."""
    conn.execute("DELETE FROM read_markers WHERE user_key = ? AND room = ?", (key, room))


def forget_peer_markers(conn: sqlite3.Connection, peer_key: str) -> None:
    """Delete every user's marker in its direct conversation with ``peer_key`` (that account
    is removed: its name is retired, so no listing shows such a marker again)."""
    conn.execute("DELETE FROM read_markers WHERE peer_key = ?", (peer_key,))
