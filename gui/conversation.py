"""One conversation of the desktop client, a room or a direct one, as plain data: its
messages, and its transcript's rows (the messages, a separator above the first of each day)."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from sealchat.core import Message
from sealchat.transports.shown_time import same_day


def room_key(room: str) -> str:
    return f"#{room}"


def direct_key(user: str) -> str:
    return f"@{user.lower()}"


@dataclass(frozen=True)
class DayBreak:
    """The separator above the first message of a local day, at ``ts``: that message's time.
    Its label ("Today", "Yesterday"...) depends on when it is drawn (see ``day_label``)."""

    ts: float


Row = Message | DayBreak
"""A row of a transcript: a message, or the separator of the day it starts."""


@dataclass(frozen=True)
class Remembered:
    """What the client keeps of a conversation from one run to the next: its name, how far
    the user read it, and the ids of the messages of others still unread there (never their
    text)."""

    title: str
    read_up_to: int = 0
    unread: frozenset[int] = frozenset()


@dataclass(frozen=True)
class TranscriptUpdate:
    """How a transcript changed: ``row`` went in at ``index`` (counted in rows from the top),
    or the row at ``index`` went (``removed``), or the conversation is to be drawn afresh
    (``redraw``)."""

    row: Row | None = None
    index: int = 0
    removed: bool = False
    redraw: bool = False


@dataclass
class Conversation:
    """A room or a direct conversation: its messages by id, the days they start, unread
    count, history state."""

    key: str
    title: str
    ids: list[int] = field(default_factory=list)
    messages: dict[int, Message] = field(default_factory=dict)
    unread_ids: set[int] = field(default_factory=set)
    """The ids of the messages of others above ``read_up_to`` (counted while it is not
    shown), also those remembered from the last run that have not arrived (again)."""
    read_up_to: int = 0
    """The newest message id the user has seen here: when it was shown (with the window
    focused), or in a page of its history. A replay interleaves older messages with live
    ones, so what is unread is told by id, not by where a message lands."""
    remembered_newest: int = 0
    """The newest id remembered unread from the last run (see :attr:`latest`)."""
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
    day_starts: list[int] = field(default_factory=list)
    """The ids, in order, of the messages that start a local day: the first one with a known
    time (see :meth:`_starts_day`), and each one whose day is not that of the one before it
    with a known time. A separator is shown above each."""

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

    @property
    def unread(self) -> int:
        return len(self.unread_ids)

    @property
    def latest(self) -> int:
        """The newest message id known here: shown, or remembered unread from the last run."""
        return max(self.newest, self.remembered_newest)

    def link_lost(self) -> None:
        """The link dropped: what comes after the newest message shown may be missing. Once
        marked, it stays so (with the older id) until its history has been fetched."""
        if self.missing_after is None and (self.ids or self.first_page_loaded):
            self.missing_after = self.newest

    def add(self, message: Message) -> list[TranscriptUpdate] | None:
        """Insert by id: how the transcript's rows changed, in order (the message, and the
        separators it brings or takes away), or None if it was already there."""
        if message.id in self.messages:
            return None
        self.messages[message.id] = message
        index = bisect.bisect(self.ids, message.id)
        self.ids.insert(index, message.id)
        # It goes below the rows of the messages before it (their separators too) and above
        # the separator of the one after it, if that has one; the separators it changes follow.
        updates = [TranscriptUpdate(message, index + bisect.bisect(self.day_starts, message.id))]
        if message.ts:  # one of unknown time starts no day and ends none
            updates += self._mark_day_start(index)
            after = next((n for n in range(index + 1, len(self.ids)) if self._ts(n)), None)
            if after is not None:
                updates += self._mark_day_start(after)
        return updates

    def rows(self) -> list[Row]:
        """The transcript: the messages, each day's separator above the first of the day."""
        starts = set(self.day_starts)
        rows: list[Row] = []
        for message_id in self.ids:
            message = self.messages[message_id]
            if message_id in starts:
                rows.append(DayBreak(message.ts))
            rows.append(message)
        return rows

    def _ts(self, index: int) -> float:
        return self.messages[self.ids[index]].ts

    def _starts_day(self, index: int) -> bool:
        """Whether message ``index`` starts a day: its time is known, and the day of the
        message before it with a known time (if any) is another."""
        ts = self._ts(index)
        before = next((self._ts(n) for n in range(index - 1, -1, -1) if self._ts(n)), None)
        return bool(ts) and (before is None or not same_day(before, ts))

    def _mark_day_start(self, index: int) -> list[TranscriptUpdate]:
        """Give message ``index`` a separator, or take its separator away, as its day and the
        day before it say: the change to the rows, if any."""
        message_id = self.ids[index]
        where = bisect.bisect_left(self.day_starts, message_id)
        marked = self.day_starts[where : where + 1] == [message_id]
        if self._starts_day(index) == marked:
            return []
        row = index + where  # the separator's row, just above its message's
        if marked:
            del self.day_starts[where]
            return [TranscriptUpdate(index=row, removed=True)]
        self.day_starts.insert(where, message_id)
        return [TranscriptUpdate(DayBreak(self._ts(index)), row)]

    def __repr__(self) -> str:
        return f"Conversation({self.key!r}, {len(self.ids)} messages, unread={self.unread})"
