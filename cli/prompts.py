"""Passwords typed at the terminal, for the commands that make accounts (``sealchat user``
on the server, ``sealchat chat --register`` on a client)."""

from __future__ import annotations

import getpass


def typed_twice(prompt: str) -> str | None:
    """A new password typed twice without echo (``prompt``, then "again: "), or None if the
    two differ. EOFError at the end of input."""
    password = getpass.getpass(prompt)
    return password if getpass.getpass("again: ") == password else None
