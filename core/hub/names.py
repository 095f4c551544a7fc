"""Which user and room names the server accepts, and how they compare."""

from __future__ import annotations

import re

_USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
_ROOM = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")


def user_key(name: str) -> str:
    """The comparison key of a user name: names are unique regardless of ASCII case. A name
    outside ASCII (never a valid one) is its own key: Unicode case folding would turn some
    into valid names (the KELVIN SIGN lowercases to 'k')."""
    return name.lower() if name.isascii() else name


def username_problem(name: str) -> str | None:
    """Why ``name`` cannot be a user name, or None if it can."""
    if _USERNAME.fullmatch(name):
        return None
    return (
        "a user name is 1 to 32 letters, digits, '.', '_' or '-', starting with a letter or digit"
    )


def room_problem(room: str) -> str | None:
    """Why ``room`` cannot be a room name, or None if it can."""
    if _ROOM.fullmatch(room):
        return None
    return (
        "a room name is 1 to 64 lowercase letters, digits, '.', '_' or '-', "
        "starting with a letter or digit"
    )
