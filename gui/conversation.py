"""One conversation of the desktop client, a room or a direct one, as plain data."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from sealchat.core import Message


def room_key(room: str) -> str:
    return f"#{room}"


def direct_key(user: str) -> str:
    return f"@{user.lower()}"


@dataclass
class Conversation:
    """A room or a direct conversation: its messages by id, unread count, history state."""

    key: str
    title: str
    ids: list[int] = field(default_factory=list)
    messages: dict[int, Message] = field(default_factory=dict)
    unread: int = 0
    """Messages of others above ``read_up_to`` (counted while it is not shown)."""
    read_up_to: int = 0
    """The newest message id the user has seen here: when it was shown (with the window
    focused), or in a page of its history. A replay interleaves older messages with live
    ones, so what is unread is told by id, not by where a message lands."""
    more_history: bool = True
    first_page_loaded: bool = False
    """Whether a page of its history reaching its oldest message shown came in this session.
    Until one has, showing it asks for the page before, even if messages arrived live
    meanwhile (they are not all there is)."""
    missing_after: int | None = None
    """Set when the link dropped: the newest id shown then. What came after it may never
    arrive as events (the replay after the reconnect starts after the user's read position,
    which their other devices move too), so showing it fetches its history from the newest
    page back to this id."""

    @property
    def is_room(self) -> bool:
        return self.key.startswith("#")

    @property
    def target(self) -> tuple[str, str]:
        """(room, user) to send to."""
        return (self.title, "") if self.is_room else ("", self.title)

    @property
    def oldest(self) -> int:
        return self.ids[0] if self.ids else 0

    @property
    def newest(self) -> int:
        return self.ids[-1] if self.ids else 0

    def link_lost(self) -> None:
        """The link dropped: what comes after the newest message shown may be missing. Once
        marked, it stays so (with the older id) until its history has been fetched."""
        if self.missing_after is None and (self.ids or self.first_page_loaded):
            self.missing_after = self.newest

    def add(self, message: Message) -> int | None:
        """Insert by id; the index it went to, or None if it was already there."""
        if message.id in self.messages:
            return None
        self.messages[message.id] = message
        index = bisect.bisect(self.ids, message.id)
        self.ids.insert(index, message.id)
        return index

    def __repr__(self) -> str:
        return f"Conversation({self.key!r}, {len(self.ids)} messages, unread={self.unread})"
