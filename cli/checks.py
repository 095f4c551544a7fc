"""Checks made on this computer before anything goes to the server: names longer than
the protocol allows, and files that cannot be shared."""

from __future__ import annotations

import os
from pathlib import Path

from sealchat.core.limits import MAX_ROOM, MAX_USERNAME


class CommandError(Exception):
    """A chat command that cannot run as typed; the message says why and what to do."""


def _check_length(what: str, name: str, limit: int) -> None:
    """CommandError if ``name`` is longer than the protocol allows ``what`` to be."""
    if len(name) > limit:
        raise CommandError(f"{what} is at most {limit} characters; this one has {len(name)}")


def check_names(room: str = "", user: str = "") -> None:
    """CommandError if a room or user name is too long to be one."""
    _check_length("a room name", room, MAX_ROOM)
    _check_length("a user name", user, MAX_USERNAME)


def file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be shared, or None."""
    if path.is_dir():
        return f"{path} is a folder; only files can be shared"
    if path.is_file():
        return None
    if os.path.lexists(path):
        return f"{path} is not a regular file (a pipe, a device…); only regular files can be shared"
    return f"no such file: {path}"
