"""Message queries of the SQLite store: storing messages, the history of a room or of a
direct conversation, whom a user has direct conversations with, what a user missed, and the
delivery cursors of each user and each of its devices."""

from __future__ import annotations

import heapq
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import islice
from typing import Any

from sealchat.core.hub.store import DuplicateMessage, StoredMessage
from sealchat.transports.sqlite_schema import one_target

_NO_UPPER_BOUND = (1 << 63) - 1

# Queries name their columns in the order of StoredMessage's fields (id, ts, sender, room,
# to_name, text, client_id, file_id).


_DIRECT_HISTORY = """
SELECT * FROM (
    SELECT id, ts, sender, room, to_name, text, client_id, file_id FROM messages
    WHERE sender_key = ? AND to_key = ? AND to_key <> '' AND id < ? ORDER BY id DESC LIMIT ?)
UNION
SELECT * FROM (
    SELECT id, ts, sender, room, to_name, text, client_id, file_id FROM messages
    WHERE sender_key = ? AND to_key = ? AND to_key <> '' AND id < ? ORDER BY id DESC LIMIT ?)
ORDER BY id DESC LIMIT ?
"""


_DIRECT_PEERS = """
WITH RECURSIVE
sent_to(peer) AS (
    SELECT (SELECT MIN(to_key) FROM messages WHERE sender_key = ?1 AND to_key <> '')
    UNION ALL
    SELECT (SELECT MIN(to_key) FROM messages
            WHERE sender_key = ?1 AND to_key <> '' AND to_key > peer)
    FROM sent_to WHERE peer IS NOT NULL
),
got_from(peer) AS (
    SELECT (SELECT MIN(sender_key) FROM messages WHERE to_key = ?1 AND to_key <> '')
    UNION ALL
    SELECT (SELECT MIN(sender_key) FROM messages
            WHERE to_key = ?1 AND to_key <> '' AND sender_key > peer)
    FROM got_from WHERE peer IS NOT NULL
),
latest(peer, last) AS (
    SELECT peer, (SELECT MAX(id) FROM messages
                  WHERE sender_key = ?1 AND to_key <> '' AND to_key = peer)
    FROM sent_to WHERE peer IS NOT NULL
    UNION ALL
    SELECT peer, (SELECT MAX(id) FROM messages
                  WHERE to_key = ?1 AND to_key <> '' AND sender_key = peer)
    FROM got_from WHERE peer IS NOT NULL
)
SELECT users.name FROM (SELECT peer, MAX(last) AS last FROM latest GROUP BY peer) AS l
JOIN users ON users.key = l.peer
ORDER BY l.last DESC LIMIT ?2
"""
"""The user's direct conversations, by a skip scan: each step seeks the next peer in an
index (``messages_direct_pair`` for the messages sent, ``messages_direct_from_to`` for those
received), and each peer's latest message is one more seek. Every step reads an index only,
and only as many entries as the user has peers: a bot with a million direct messages to
twenty users logs in as fast as anyone."""


_MISSED_IN_ROOM = """
SELECT id, ts, sender, room, to_name, text, client_id, file_id FROM messages
WHERE room = ? AND room <> '' AND id > ? ORDER BY id LIMIT ?
"""
_MISSED_TO = """
SELECT id, ts, sender, room, to_name, text, client_id, file_id FROM messages
WHERE to_key = ? AND to_key <> '' AND id > ? ORDER BY id LIMIT ?
"""
_MISSED_FROM = """
SELECT id, ts, sender, room, to_name, text, client_id, file_id FROM messages
WHERE sender_key = ? AND to_key <> '' AND to_key <> ? AND id > ? ORDER BY id LIMIT ?
"""
"""What ``missed`` reads: a room's messages, the direct messages to the user, and those it
sent (to itself, they were already counted as received)."""


def _message(row: Any) -> StoredMessage:
    return StoredMessage(*row)


def last_message_id(conn: sqlite3.Connection) -> int:
    """The highest message id so far (0 if none)."""
    row = conn.execute("SELECT COALESCE(MAX(id), 0) FROM messages").fetchone()
    return int(row[0])


def append_message(
    conn: sqlite3.Connection,
    *,
    ts: float,
    sender_key: str,
    sender: str,
    room: str,
    to_key: str,
    to: str,
    text: str,
    client_id: str,
    file_id: str = "",
) -> StoredMessage:
    """Store a message under the next id.

    Exactly one of ``room`` and ``to_key`` must be set. Raises ``DuplicateMessage`` (a
    ValueError) if the sender already has a message with this non-empty ``client_id``
    (see find_by_client_id): the unique index finds it, with no lookup beforehand.
    """
    one_target(room, to_key)
    try:
        cur = conn.execute(
            "INSERT INTO messages (ts, sender_key, sender, room, to_key, to_name, text, "
            "client_id, file_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (ts, sender_key, sender, room, to_key, to, text, client_id, file_id),
        )
    except sqlite3.IntegrityError:  # the only constraint a message can break
        raise DuplicateMessage("duplicate client_id for this sender") from None
    assert cur.lastrowid is not None
    return StoredMessage(
        id=cur.lastrowid,
        ts=ts,
        sender=sender,
        room=room,
        to=to,
        text=text,
        client_id=client_id,
        file_id=file_id,
    )


def find_by_client_id(
    conn: sqlite3.Connection, sender_key: str, client_id: str
) -> StoredMessage | None:
    """The sender's message with this ``client_id`` (never matches an empty one)."""
    if not client_id:
        return None
    row = conn.execute(
        "SELECT id, ts, sender, room, to_name, text, client_id, file_id FROM messages "
        "WHERE sender_key = ? AND client_id = ? AND client_id <> ''",
        (sender_key, client_id),
    ).fetchone()
    return None if row is None else _message(row)


def room_history(
    conn: sqlite3.Connection, room: str, before: int, limit: int
) -> list[StoredMessage]:
    """Up to ``limit`` messages of ``room`` with id < ``before`` (0: no bound), oldest
    first."""
    if limit <= 0 or not room:
        return []
    rows = conn.execute(
        "SELECT id, ts, sender, room, to_name, text, client_id, file_id FROM messages "
        "WHERE room = ? AND room <> '' AND id < ? "
        "ORDER BY id DESC LIMIT ?",
        (room, before or _NO_UPPER_BOUND, limit),
    ).fetchall()
    return [_message(r) for r in reversed(rows)]


def direct_history(
    conn: sqlite3.Connection, a_key: str, b_key: str, before: int, limit: int
) -> list[StoredMessage]:
    """Up to ``limit`` direct messages between ``a_key`` and ``b_key`` (either way) with
    id < ``before`` (0: no bound), oldest first."""
    if limit <= 0 or not a_key or not b_key:
        return []
    bound = before or _NO_UPPER_BOUND
    # Each direction walks its own index backwards; UNION also collapses a == b.
    rows = conn.execute(
        _DIRECT_HISTORY, (a_key, b_key, bound, limit, b_key, a_key, bound, limit, limit)
    ).fetchall()
    return [_message(r) for r in reversed(rows)]


def direct_peers(conn: sqlite3.Connection, key: str, limit: int) -> list[str]:
    """The display names of up to ``limit`` users that user ``key`` has direct messages with
    (sent or received), the one with the latest message first. Removed accounts are left
    out; the user itself is listed if it wrote to itself (``direct_history`` of the user with
    itself has those messages)."""
    if limit <= 0 or not key:
        return []
    return [name for (name,) in conn.execute(_DIRECT_PEERS, (key, limit))]


def missed(conn: sqlite3.Connection, key: str, after: int, limit: int) -> list[StoredMessage]:
    """Up to ``limit`` messages visible to user ``key`` with id > ``after``, oldest first:
    messages of its rooms posted after it joined, and its direct messages both ways."""
    if limit <= 0:
        return []
    # One short index range per source (each room, DMs in, DMs out), merged by id: the
    # cost follows what the user can see, not how busy other rooms are. The sources are read
    # as the merge takes from them, so a page reads about ``limit`` rows in all, not
    # ``limit`` from each of the user's rooms.
    with _snapshot(conn):  # one consistent state for all the queries
        sources = [
            conn.execute(_MISSED_IN_ROOM, (room, max(after, joined_after), limit))
            for room, joined_after in conn.execute(
                "SELECT room, joined_after_id FROM memberships WHERE user_key = ?", (key,)
            ).fetchall()
        ]
        sources.append(conn.execute(_MISSED_TO, (key, after, limit)))
        sources.append(conn.execute(_MISSED_FROM, (key, key, after, limit)))
        try:
            merged = heapq.merge(*(map(_message, rows) for rows in sources), key=lambda m: m.id)
            return list(islice(merged, limit))
        finally:
            for rows in sources:
                rows.close()


DEVICE_CURSORS = 64
"""Devices whose cursors are kept per user; beyond, the cursor of the device not seen for
longest is forgotten (that device, if it comes back, starts from the user's cursor)."""
DEVICE_KEPT_FOR = 30 * 24 * 3600.0
"""Seconds a device's cursor is kept at least since it was last seen: a script that makes a
new key each run cannot push out the cursors of the user's devices in use (a new device
then has no cursor of its own until one is that old, and starts from the user's)."""


def get_cursor(conn: sqlite3.Connection, key: str, device: str = "") -> int:
    """The id of the last message user ``key`` acknowledged on ``device``; for a device not
    known (or ``""``), the highest on any of its devices (0 if none)."""
    if device:
        row = conn.execute(
            "SELECT last_delivered FROM device_cursors WHERE user_key = ? AND device = ?",
            (key, device),
        ).fetchone()
        if row is not None:
            return int(row[0])
    row = conn.execute("SELECT last_delivered FROM cursors WHERE user_key = ?", (key,)).fetchone()
    return 0 if row is None else int(row[0])


def set_cursor(conn: sqlite3.Connection, key: str, message_id: int, device: str = "") -> None:
    """Record that user ``key`` has had every message up to ``message_id`` on ``device``:
    its cursor there, and the user's, go up to it (never down). ValueError if no such user."""
    try:
        conn.execute(
            "INSERT INTO cursors (user_key, last_delivered) VALUES (?, ?) "
            "ON CONFLICT (user_key) DO UPDATE "
            "SET last_delivered = max(last_delivered, excluded.last_delivered)",
            (key, message_id),
        )
    except sqlite3.IntegrityError:
        raise ValueError("no such user") from None
    if not device:
        return
    now = time.time()
    known = conn.execute(
        "UPDATE device_cursors SET last_delivered = max(last_delivered, ?), used = ? "
        "WHERE user_key = ? AND device = ?",
        (message_id, now, key, device),
    )
    if known.rowcount:
        return
    kept = conn.execute(
        "SELECT device, used FROM device_cursors WHERE user_key = ? ORDER BY used",
        (key,),
    ).fetchall()
    if len(kept) >= DEVICE_CURSORS:
        device_seen_least, seen = kept[0]
        if seen > now - DEVICE_KEPT_FOR:
            return  # every one in use: this device goes on the user's cursor
        conn.execute(
            "DELETE FROM device_cursors WHERE user_key = ? AND device = ?",
            (key, device_seen_least),
        )
    conn.execute(
        "INSERT INTO device_cursors (user_key, device, last_delivered, used) VALUES (?, ?, ?, ?)",
        (key, device, message_id, now),
    )


@contextmanager
def _snapshot(conn: sqlite3.Connection) -> Iterator[None]:
    """Reads that must see one consistent state (a transaction already open is one)."""
    if conn.in_transaction:
        yield
        return
    conn.execute("BEGIN")
    try:
        yield
    finally:
        conn.execute("COMMIT")
