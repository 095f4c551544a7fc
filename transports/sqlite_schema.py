"""The store's SQLite schema, its migrations and the settings each connection opens with.

``PRAGMA user_version`` is the schema version: ``MIGRATIONS`` takes a database from any older
version to the current one, one transaction per step, each reading the version again under
the write lock (two processes opening an old database at once apply each step once).
"""

from __future__ import annotations

import sqlite3

__all__ = [
    "LOOK_ALIKE_KEY",
    "MIGRATIONS",
    "SchemaVersionError",
    "configure",
    "migrate",
    "one_target",
]

_SCHEMA_V1 = """
CREATE TABLE users (
    key TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE rooms (
    name TEXT PRIMARY KEY,
    created REAL NOT NULL
);
CREATE TABLE memberships (
    room TEXT NOT NULL REFERENCES rooms(name) ON DELETE CASCADE,
    user_key TEXT NOT NULL REFERENCES users(key) ON DELETE CASCADE,
    joined_after_id INTEGER NOT NULL,
    PRIMARY KEY (room, user_key)
);
CREATE INDEX memberships_by_user ON memberships(user_key, room);
CREATE TABLE messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    sender_key TEXT NOT NULL,
    sender TEXT NOT NULL,
    room TEXT NOT NULL,
    to_key TEXT NOT NULL,
    to_name TEXT NOT NULL,
    text TEXT NOT NULL,
    client_id TEXT NOT NULL,
    file_id TEXT NOT NULL
);
CREATE UNIQUE INDEX messages_client_id ON messages(sender_key, client_id) WHERE client_id <> '';
CREATE INDEX messages_room ON messages(room, id) WHERE room <> '';
CREATE INDEX messages_direct_pair ON messages(sender_key, to_key, id) WHERE to_key <> '';
CREATE INDEX messages_direct_to ON messages(to_key, id) WHERE to_key <> '';
CREATE INDEX messages_direct_from ON messages(sender_key, id) WHERE to_key <> '';
CREATE TABLE cursors (
    user_key TEXT PRIMARY KEY REFERENCES users(key) ON DELETE CASCADE,
    last_delivered INTEGER NOT NULL
);
CREATE TABLE files (
    file_id TEXT PRIMARY KEY,
    owner_key TEXT NOT NULL,
    name TEXT NOT NULL,
    size INTEGER NOT NULL CHECK (size >= 0),
    sha256 BLOB NOT NULL CHECK (length(sha256) = 32),
    room TEXT NOT NULL,
    to_key TEXT NOT NULL,
    received INTEGER NOT NULL DEFAULT 0 CHECK (received BETWEEN 0 AND size),
    complete INTEGER NOT NULL DEFAULT 0 CHECK (complete IN (0, 1)),
    ts REAL NOT NULL
);
CREATE INDEX files_by_owner ON files(owner_key, complete);
CREATE INDEX files_by_room ON files(room) WHERE room <> '';
CREATE INDEX files_direct ON files(owner_key, to_key) WHERE to_key <> '';
"""

_SCHEMA_V2 = """
CREATE TABLE retired_names (
    key TEXT PRIMARY KEY,
    retired REAL NOT NULL
);
INSERT INTO retired_names (key, retired)
SELECT key, (julianday('now') - 2440587.5) * 86400.0 FROM (
    SELECT sender_key AS key FROM messages
    UNION SELECT to_key FROM messages
    UNION SELECT owner_key FROM files
    UNION SELECT to_key FROM files
) WHERE key <> '' AND key NOT IN (SELECT key FROM users);
"""
"""Names of removed accounts, never given to anyone again: their direct messages and files
stay filed under the name. Accounts removed before this version are found by the messages and
files whose user no longer exists."""

_SCHEMA_V3 = """
ALTER TABLE users ADD COLUMN password_generation INTEGER NOT NULL DEFAULT 0;
"""
"""Each password change counts up the account's ``password_generation``: the server compares
it with the one its sessions logged in under and logs out those whose password changed."""

_SCHEMA_V4 = """
CREATE INDEX messages_room_files ON messages(room, id) WHERE file_id <> '';
CREATE INDEX messages_direct_files ON messages(sender_key, to_key, id) WHERE file_id <> '';
"""
"""File listings go page by page in the order files were shared, the id of the message that
announced each: these find a conversation's announcements in that order from any id without
reading its other messages."""

_SCHEMA_V5 = """
CREATE INDEX messages_direct_from_to ON messages(to_key, sender_key, id) WHERE to_key <> '';
"""
"""Whom a user received direct messages from, each sender's latest message found at once: with
``messages_direct_pair`` for those it sent, the conversations listed at every login cost what
the user's conversations cost, not what all of its direct messages do."""

_SCHEMA_V6 = """
CREATE TABLE read_markers (
    user_key TEXT NOT NULL REFERENCES users(key) ON DELETE CASCADE,
    room TEXT NOT NULL,
    peer_key TEXT NOT NULL,
    up_to INTEGER NOT NULL CHECK (up_to > 0),
    PRIMARY KEY (user_key, room, peer_key),
    CHECK ((room = '') <> (peer_key = ''))
);
"""
"""Each user's read marker in each of its conversations (a room, or the direct one with
``peer_key``): the highest message id it has read there, on any of its devices. A marker
goes with its user's account, and a room's with the user's membership."""

LOOK_ALIKE_KEY = (
    "replace(replace(replace(replace(replace(key, '0', 'o'), '1', 'l'), 'i', 'l'), 'rn', 'm'), "
    "'w', 'vv')"
)
"""``names.look_alike_key`` of the column ``key``, in SQL: the expression the look-alike
indexes are built on, which a query must repeat exactly to use them."""

_SCHEMA_V7 = f"""
CREATE INDEX users_by_look_alike ON users({LOOK_ALIKE_KEY});
CREATE INDEX retired_names_by_look_alike ON retired_names({LOOK_ALIKE_KEY});
"""
"""Whether a new name looks like a user's or a removed account's (``names.LOOK_ALIKES``),
found at once. Names that look alike and were registered before this version stay."""

_SCHEMA_V8 = """
CREATE TABLE device_cursors (
    user_key TEXT NOT NULL REFERENCES users(key) ON DELETE CASCADE,
    device TEXT NOT NULL,
    last_delivered INTEGER NOT NULL,
    used REAL NOT NULL,
    PRIMARY KEY (user_key, device)
);
CREATE INDEX device_cursors_by_use ON device_cursors(user_key, used);
"""
"""Each device's delivery cursor (a device: the fingerprint of a client install's key), so
that a device offline while another of the user's was online still gets what it missed. The
user's own cursor (``cursors``) becomes the highest of them: where a new device starts."""

MIGRATIONS: tuple[str, ...] = (
    _SCHEMA_V1,
    _SCHEMA_V2,
    _SCHEMA_V3,
    _SCHEMA_V4,
    _SCHEMA_V5,
    _SCHEMA_V6,
    _SCHEMA_V7,
    _SCHEMA_V8,
)
"""Schema scripts; applying ``MIGRATIONS[i]`` takes ``PRAGMA user_version`` from i to i + 1.
Append new ones, never edit old ones."""


class SchemaVersionError(RuntimeError):
    """The database was written by a newer sealchat than this one."""


def configure(conn: sqlite3.Connection, path: str) -> None:
    """Set WAL mode, durability, foreign keys and the busy timeout on a new connection."""
    (mode,) = conn.execute("PRAGMA journal_mode=WAL").fetchone()
    if mode not in ("wal", "memory"):  # "memory" for :memory: databases
        raise RuntimeError(
            f"cannot use WAL mode for {path} (got {mode!r}); put the data "
            "directory on a local file system"
        )
    # NORMAL: see sqlite_store's docstring (survives process kills; not power loss).
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=5000")  # an admin tool may hold the lock briefly


def migrate(conn: sqlite3.Connection, path: str) -> None:
    """Bring the database to the current schema version (SchemaVersionError if it is newer)."""
    version = _version(conn, path)
    while version < len(MIGRATIONS):
        # One transaction per step: a failed migration leaves the previous version intact.
        # The version is read again under the write lock, as another process opening the
        # database at the same time may have applied this step meanwhile.
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = _version(conn, path)
            if version < len(MIGRATIONS):
                for statement in _statements(MIGRATIONS[version]):
                    conn.execute(statement)
                version += 1
                conn.execute(f"PRAGMA user_version = {version}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # SQLite may have rolled it back by itself (I/O error)
                conn.execute("ROLLBACK")
            raise


def behind(conn: sqlite3.Connection, path: str) -> bool:
    """Whether ``migrate`` has steps to apply (SchemaVersionError if the schema is newer)."""
    return _version(conn, path) < len(MIGRATIONS)


def _version(conn: sqlite3.Connection, path: str) -> int:
    """The database's schema version (SchemaVersionError if it is newer than this sealchat)."""
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version > len(MIGRATIONS):
        raise SchemaVersionError(
            f"database {path} has schema version {version}, but this sealchat "
            f"understands versions up to {len(MIGRATIONS)}: upgrade sealchat to open it"
        )
    return int(version)


def _statements(script: str) -> list[str]:
    """The statements of ``script`` one by one (executescript would commit the transaction
    first)."""
    statements: list[str] = []
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):  # else the ";" was inside a string or trigger
            if pending.strip().strip(";"):  # not the nothing after the last ";"
                statements.append(pending.strip())
            pending = ""
    if pending:
        raise ValueError(f"an incomplete statement ends the migration: {pending!r}")
    return statements


def one_target(room: str, to_key: str) -> None:
    """A message or file goes to a room or to a user: exactly one of the two is set."""
    if (room == "") == (to_key == ""):
        raise ValueError("exactly one of room and to_key must be set")
