"""Which user and room names the server accepts, and how they compare."""

from __future__ import annotations

import re
from typing import Final

LOOK_ALIKES: Final = (("0", "o"), ("1", "l"), ("i", "l"), ("rn", "m"), ("w", "vv"))
"""What a user key (ASCII lowercase) is folded by, in this order, to its look-alike key:
characters or pairs that many fonts draw (nearly) alike, so that ``AIice`` (capital i) and
``alice``, or ``rnallory`` and ``mallory``, get the same key. ``w`` becomes ``vv``, not the
other way round: "vv" overlaps itself, so ``vvv`` and ``vw`` would get different keys. The
store's index repeats this rule in SQL (``sqlite_schema.LOOK_ALIKE_KEY``); a test holds the
two together."""

_USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
_ROOM = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")


def user_key(name: str) -> str:
    """The comparison key of a user name: names are unique regardless of ASCII case. A name
    outside ASCII (never a valid one) is its own key: Unicode case folding would turn some
    into valid names (the KELVIN SIGN lowercases to 'k')."""
    return name.lower() if name.isascii() else name


def look_alike_key(key: str) -> str:
    """The look-alike key of a user key: two names with the same one look alike, and only
    one of them may be registered (see LOOK_ALIKES)."""
    for drawn, like in LOOK_ALIKES:
        key = key.replace(drawn, like)
    return key


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
