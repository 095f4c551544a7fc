"""Room queries of the SQLite store: rooms and who is a member of each."""

from __future__ import annotations

import sqlite3
import time


def ensure_room(conn: sqlite3.Connection, room: str) -> None:
    """Create ``room`` if it does not exist."""
    if not room:
        raise ValueError("a room name cannot be empty")
    conn.execute(
        "INSERT INTO rooms (name, created) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
        (room, time.time()),
    )


def room_exists(conn: sqlite3.Connection, room: str) -> bool:
    """Whether ``room`` exists."""
    return conn.execute("SELECT 1 FROM rooms WHERE name = ?", (room,)).fetchone() is not None


def drop_room_if_unused(conn: sqlite3.Connection, room: str) -> bool:
    """Delete ``room`` if nobody is in it and nothing was ever posted or shared in it;
    whether it was deleted."""
    cur = conn.execute(
        "DELETE FROM rooms WHERE name = ?1 "
        "AND NOT EXISTS (SELECT 1 FROM memberships WHERE room = ?1) "
        "AND NOT EXISTS (SELECT 1 FROM messages WHERE room = ?1 AND room <> '') "
        "AND NOT EXISTS (SELECT 1 FROM files WHERE room = ?1 AND room <> '')",
        (room,),
    )
    return cur.rowcount == 1


def rooms(conn: sqlite3.Connection) -> list[tuple[str, int]]:
    """Every room with its member count, by name."""
    rows = conn.execute(
        "SELECT r.name, COUNT(m.user_key) FROM rooms AS r "
        "LEFT JOIN memberships AS m ON m.room = r.name GROUP BY r.name ORDER BY r.name"
    )
    return [(name, count) for name, count in rows]


def room_count(conn: sqlite3.Connection) -> int:
    """How many rooms there are."""
    count: int = conn.execute("SELECT COUNT(*) FROM rooms").fetchone()[0]
    return count


def rooms_of(conn: sqlite3.Connection, key: str) -> list[str]:
    """Names of the rooms user ``key`` is a member of, sorted."""
    rows = conn.execute("SELECT room FROM memberships WHERE user_key = ? ORDER BY room", (key,))
    return [r[0] for r in rows]


def members(conn: sqlite3.Connection, room: str) -> list[str]:
    """Display names of the room's members, ordered by key."""
    rows = conn.execute(
        "SELECT u.name FROM memberships AS m JOIN users AS u ON u.key = m.user_key "
        "WHERE m.room = ? ORDER BY u.key",
        (room,),
    )
    return [r[0] for r in rows]


def add_member(conn: sqlite3.Connection, room: str, key: str) -> bool:
    """Make ``key`` a member of ``room`` from the next message on; False if already one.

    Raises ValueError if the room or the user does not exist.
    """
    try:
        cur = conn.execute(
            "INSERT INTO memberships (room, user_key, joined_after_id) "
            "VALUES (?, ?, (SELECT COALESCE(MAX(id), 0) FROM messages)) "
            "ON CONFLICT (room, user_key) DO NOTHING",
            (room, key),
        )
    except sqlite3.IntegrityError:
        raise ValueError("no such room or user") from None
    return cur.rowcount == 1


def remove_member(conn: sqlite3.Connection, room: str, key: str) -> bool:
    """End a membership; False if there was none."""
    cur = conn.execute("DELETE FROM memberships WHERE room = ? AND user_key = ?", (room, key))
    return cur.rowcount == 1
