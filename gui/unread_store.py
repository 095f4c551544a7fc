"""What the desktop client remembers of the unread messages from one run to the next.

Per server and account, for each conversation: how far the user read it and the ids of the
messages of others still unread there (the newest :data:`MAX_UNREAD`), for the latest
:data:`MAX_CONVERSATIONS` conversations of the latest :data:`MAX_ACCOUNTS` accounts. Never a
password, never a message's text. Stored as JSON beside the settings, written atomically,
mode 0600; a damaged or foreign file counts as empty.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeGuard

from sealchat.core.hub.names import room_problem, username_problem
from sealchat.core.limits import MAX_UINT
from sealchat.gui.conversation import Remembered, direct_key, room_key
from sealchat.transports.keyfile import ensure_private_dir, replace_privately
from sealchat.transports.pinning import server_name

VERSION = 1
MAX_UNREAD = 1000
MAX_CONVERSATIONS = 200
MAX_ACCOUNTS = 20

Conversations = dict[str, Remembered]


def account_name(host: str, port: int, user: str) -> str:
    """How an account of a server is named in the file: ``alice@chat.example.org:7878``."""
    return f"{user.lower()}@{server_name(host, port)}"


@dataclass(frozen=True)
class UnreadStore:
    """The file of what is unread, for every account used on this computer."""

    path: Path

    @classmethod
    def beside(cls, settings: Path) -> UnreadStore:
        """The file in the folder of the settings file ``settings``."""
        return cls(settings.with_name("unread.json"))

    def load(self, account: str) -> Conversations:
        """What was remembered for ``account`` (nothing if the file is missing or damaged)."""
        return self._accounts().get(account, {})

    def save(self, account: str, conversations: Mapping[str, Remembered]) -> None:
        """Remember ``conversations`` for ``account`` (within the bounds), keeping the other
        accounts' (it becomes the latest account); raises OSError if it cannot be written."""
        accounts = self._accounts()
        accounts.pop(account, None)
        if conversations:
            accounts[account] = bounded(conversations)
        latest = list(accounts.items())[-MAX_ACCOUNTS:]
        data = {
            "version": VERSION,
            "accounts": {name: _as_json(kept) for name, kept in latest},
        }
        ensure_private_dir(self.path.parent)
        replace_privately(self.path, json.dumps(data, separators=(",", ":")).encode())

    def _accounts(self) -> dict[str, Conversations]:
        try:
            data = json.loads(self.path.read_bytes())
        except (OSError, ValueError, RecursionError):
            return {}
        if not isinstance(data, dict) or data.get("version") != VERSION:
            return {}
        accounts = data.get("accounts")
        if not isinstance(accounts, dict):
            return {}
        return {
            name: bounded(_from_json(kept))
            for name, kept in accounts.items()
            if isinstance(kept, dict)
        }


def bounded(conversations: Mapping[str, Remembered]) -> Conversations:
    """The latest :data:`MAX_CONVERSATIONS` conversations (by their newest id read or
    unread), each with its newest :data:`MAX_UNREAD` unread ids."""
    latest = heapq.nlargest(MAX_CONVERSATIONS, conversations.items(), key=lambda kv: _newest(kv[1]))
    return {
        key: Remembered(r.title, r.read_up_to, frozenset(heapq.nlargest(MAX_UNREAD, r.unread)))
        for key, r in latest
    }


def _newest(remembered: Remembered) -> int:
    return max(remembered.read_up_to, max(remembered.unread, default=0))


def _as_json(conversations: Conversations) -> dict[str, object]:
    return {
        key: {"title": r.title, "read_up_to": r.read_up_to, "unread": sorted(r.unread)}
        for key, r in conversations.items()
    }


def _from_json(data: dict[object, object]) -> Conversations:
    """The well-formed entries of ``data``; the others are left out."""
    kept = {}
    for key, entry in data.items():
        remembered = _entry(entry)
        if remembered is not None and _names(str(key), remembered.title):
            kept[str(key)] = remembered
    return kept


def _names(key: str, title: str) -> bool:
    """Whether ``key`` is the conversation with the room or user ``title``, a name the
    server accepts (a hand-edited file could give one that every request would fail on)."""
    if key == room_key(title):
        return room_problem(title) is None
    return key == direct_key(title) and username_problem(title) is None


def _entry(entry: object) -> Remembered | None:
    if not isinstance(entry, dict):
        return None
    title, read_up_to, unread = entry.get("title"), entry.get("read_up_to"), entry.get("unread")
    if not (
        isinstance(title, str) and title and _is_id(read_up_to, 0) and isinstance(unread, list)
    ):
        return None
    if not all(_is_id(i, 1) for i in unread):
        return None
    return Remembered(title, read_up_to, frozenset(unread))


def _is_id(value: object, least: int) -> TypeGuard[int]:
    """Whether ``value`` is a message id (or ``read_up_to``: 0 too) as JSON gives it."""
    return type(value) is int and least <= value <= MAX_UINT
