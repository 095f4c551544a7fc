"""Account queries of the SQLite store: users, their password hashes and generations, and
the names of removed accounts, which are never given to anyone again."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Collection

from sealchat.core.hub.names import look_alike_key
from sealchat.core.hub.store import UserRow
from sealchat.transports.sqlite_schema import LOOK_ALIKE_KEY

_KEYS_PER_QUERY = 500  # well under SQLite's limit on bound parameters
# A constant, the look-alike indexes' own expression (which a query must repeat to use them).
_LOOKS_TAKEN = (
    f"SELECT EXISTS (SELECT 1 FROM users WHERE {LOOK_ALIKE_KEY} = ?1) "  # noqa: S608
    f"OR EXISTS (SELECT 1 FROM retired_names WHERE {LOOK_ALIKE_KEY} = ?1)"
)
_BY_LOOK = f"SELECT {LOOK_ALIKE_KEY}, name FROM users ORDER BY 1, key"  # noqa: S608


def get_user(conn: sqlite3.Connection, key: str) -> UserRow | None:
    """The user with case-folded ``key``, or None."""
    row = conn.execute(
        "SELECT name, key, password_hash, password_generation FROM users WHERE key = ?",
        (key,),
    ).fetchone()
    return None if row is None else UserRow(*row)


def add_user(conn: sqlite3.Connection, name: str, key: str, password_hash: str) -> bool:
    """Register a user; False if ``key`` is taken or retired."""
    cur = conn.execute(
        "INSERT INTO users (key, name, password_hash, created) SELECT ?1, ?2, ?3, ?4 "
        "WHERE NOT EXISTS (SELECT 1 FROM retired_names WHERE key = ?1) "
        "ON CONFLICT (key) DO NOTHING",
        (key, name, password_hash, time.time()),
    )
    return cur.rowcount == 1


def is_retired(conn: sqlite3.Connection, key: str) -> bool:
    """Whether ``key`` belonged to a removed account (and so can never be registered)."""
    found = conn.execute("SELECT 1 FROM retired_names WHERE key = ?", (key,))
    return found.fetchone() is not None


def looks_taken(conn: sqlite3.Connection, key: str) -> bool:
    """Whether a user's or a removed account's name looks like ``key`` (their look-alike
    keys are the same), ``key`` itself included."""
    found = conn.execute(_LOOKS_TAKEN, (look_alike_key(key),))
    return bool(found.fetchone()[0])


def set_password(conn: sqlite3.Connection, key: str, password_hash: str) -> bool:
    """Replace a user's hash and count up its password generation; False if there is no
    such user."""
    cur = conn.execute(
        "UPDATE users SET password_hash = ?, password_generation = password_generation + 1 "
        "WHERE key = ?",
        (password_hash, key),
    )
    return cur.rowcount == 1


def delete_user(conn: sqlite3.Connection, key: str) -> bool:
    """Delete a user's row (their memberships and cursor go with it); False if there is no
    such user."""
    cur = conn.execute("DELETE FROM users WHERE key = ?", (key,))
    return cur.rowcount == 1


def retire(conn: sqlite3.Connection, key: str) -> None:
    """Record ``key`` as a removed account's name, never to be registered again."""
    conn.execute(
        "INSERT INTO retired_names (key, retired) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
        (key, time.time()),
    )


def list_users(conn: sqlite3.Connection) -> list[str]:
    """Display names of all users, ordered by key."""
    return [r[0] for r in conn.execute("SELECT name FROM users ORDER BY key")]


def look_alike_users(conn: sqlite3.Connection) -> list[list[str]]:
    """The display names of users that look alike (the same look-alike key), in groups of
    two or more, each ordered by key: accounts made before registration checked this, or
    added by hand with the check waived."""
    groups: dict[str, list[str]] = {}
    for look, name in conn.execute(_BY_LOOK):
        groups.setdefault(look, []).append(name)
    return [names for names in groups.values() if len(names) > 1]


def password_generations(conn: sqlite3.Connection, keys: Collection[str]) -> dict[str, int]:
    """The password generation of each of ``keys`` that still has an account (a removed
    one is left out), looked up a few hundred keys per query."""
    wanted = list(keys)
    found: dict[str, int] = {}
    for start in range(0, len(wanted), _KEYS_PER_QUERY):
        some = wanted[start : start + _KEYS_PER_QUERY]
        marks = ",".join("?" * len(some))
        rows = conn.execute(
            f"SELECT key, password_generation FROM users WHERE key IN ({marks})",  # noqa: S608
            some,
        )
        found.update(rows)
    return found
