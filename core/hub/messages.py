"""Messages: posting, acknowledging, the replay of missed ones after login and history."""

from __future__ import annotations

from collections.abc import Iterable

from sealchat.core.hub.config import HubConfig
from sealchat.core.hub.effects import Deliver, Effect
from sealchat.core.hub.outgoing import encoded_size, error, message_record, reply
from sealchat.core.hub.ratelimit import Allowances, TokenBucket
from sealchat.core.hub.roster import Roster
from sealchat.core.hub.session import Conversation, Session
from sealchat.core.hub.store import DuplicateMessage, Store, StoredMessage
from sealchat.core.records import (
    HISTORY_REF,
    Delivered,
    Error,
    HistoryEnd,
    HistoryRequest,
    Message,
    MessageAck,
)
from sealchat.core.sizes import shown_size, shown_wait


class Messages:
    """Messages of sessions stored and delivered; delivery cursors; replays and history."""

    def __init__(
        self,
        store: Store,
        config: HubConfig,
        roster: Roster,
        *,
        allowances: Allowances,
        text_allowances: Allowances,
        typing: dict[tuple[str, Conversation], float],
    ) -> None:
        self.store = store
        self.config = config
        self._roster = roster
        self._allowances = allowances
        self._text_allowances = text_allowances
        """Each user's bytes of message text a day (``message_text_per_day``)."""
        self._typing = typing
        """The typing notices in progress: a message ends its sender's there."""

    def message(self, state: Session, record: Message, now: float) -> list[Effect]:
        """A Message record of ``state``: stored, acknowledged and delivered."""
        ref = record.client_id
        where = self._roster.conversation(state, record.room, record.to, ref)
        if isinstance(where, Error):
            return [reply(state, where)]
        if not record.text.strip():
            return [error(state, "empty", "a message needs some text", ref)]
        if len(record.text) > self.config.max_message_chars:
            return [
                error(
                    state,
                    "too_long",
                    f"a message is at most {self.config.max_message_chars} characters",
                    ref,
                )
            ]
        # A resend (after a reconnect) of a message already stored is acknowledged, not
        # repeated, and costs no token. The store's unique index spots it as the message is
        # inserted, so a new message needs no lookup first.
        bucket = self._allowances.of(state.key, now)
        if not bucket.take(now):
            return [self._ack_earlier(state, ref) or self._rate_limited(state, ref)]
        size = len(record.text.encode())
        text = self._text_allowances.of(state.key, now)
        if not text.take(now, size):
            bucket.give_back()
            return [self._ack_earlier(state, ref) or self._over_quota(state, ref, text, size, now)]
        try:
            stored = self.store.append_message(
                ts=now,
                sender_key=state.key,
                sender=state.name,
                room=where.room,
                to_key=where.peer_key,
                to=where.peer,
                text=record.text,
                client_id=ref,
            )
        except DuplicateMessage:
            bucket.give_back()
            text.give_back(size)
            ack = self._ack_earlier(state, ref)
            if ack is None:  # pragma: no cover  (the store broke its contract)
                raise
            return [ack]
        message = message_record(self.store, stored)
        # The sender's session gets the acknowledgement; without a client id to match it
        # against, it gets the message itself.
        mine = MessageAck(client_id=ref, id=stored.id, ts=stored.ts) if ref else message
        effects: list[Effect] = [reply(state, mine)]
        effects += self._roster.to_conversation(state, where, message)
        self._typing.pop((state.key, where), None)
        return effects

    def _ack_earlier(self, state: Session, ref: str) -> Deliver | None:
        """The acknowledgement of the sender's message stored earlier under ``ref``, if any."""
        earlier = self.store.find_by_client_id(state.key, ref) if ref else None
        if earlier is None:
            return None
        return reply(state, MessageAck(client_id=ref, id=earlier.id, ts=earlier.ts))

    def _rate_limited(self, state: Session, ref: str) -> Deliver:
        detail = f"slow down: at most {self.config.messages_per_second:g} messages a second"
        return error(state, "rate_limited", detail, ref)

    def _over_quota(
        self, state: Session, ref: str, text: TokenBucket, size: int, now: float
    ) -> Deliver:
        """The refusal of a message over the user's text allowance (it is discarded)."""
        per_day = shown_size(self.config.message_text_per_day)
        wait = shown_wait(text.wait(now, size))
        detail = f"over the {per_day} of text a day kept from one user; try again in {wait}"
        return error(state, "over_quota", detail, ref)

    def delivered(self, state: Session, record: Delivered) -> list[Effect]:
        """A Delivered record: move the cursor of the user's device; the next page of a
        replay."""
        # While a replay runs, nothing past its last page has surely arrived.
        ceiling = state.replay_from if state.replay_until else self.store.last_message_id()
        up_to = min(record.up_to, ceiling)
        if up_to > state.acknowledged:
            state.acknowledged = up_to
            self.store.set_cursor(state.key, up_to, state.device)
        if state.replay_until and record.up_to >= state.replay_from:
            return self.replay(state)
        return []

    def replay(self, state: Session) -> list[Effect]:
        """Send the next page of what the user missed while offline (messages newer than the
        replay's span arrive live, so none comes twice)."""
        limit = self.config.replay_page
        found = [
            m
            for m in self.store.missed(state.key, state.replay_from, limit)
            if m.id <= state.replay_until
        ]
        page, cut = self._page(found)
        more = cut or (len(found) == limit and found[-1].id < state.replay_until)
        if page:
            state.replay_from = page[-1].id
        if not more:
            state.replay_until = 0
        effects: list[Effect] = [reply(state, m) for m in page]
        effects.append(reply(state, HistoryEnd(more=more)))
        return effects

    def _page(self, stored: Iterable[StoredMessage]) -> tuple[list[Message], bool]:
        """The Message records of ``stored``, in that order, up to the one whose encoding
        brings their total to ``page_bytes`` (at least one, so a page always moves on); and
        whether any of ``stored`` was left out. A page of long messages is then written
        quickly even to a slow reader."""
        page: list[Message] = []
        size = 0
        for m in stored:
            if size >= self.config.page_bytes:
                return page, True
            record = message_record(self.store, m)
            page.append(record)
            size += encoded_size(record)
        return page, False

    def history(self, state: Session, record: HistoryRequest) -> list[Effect]:
        """A page of a conversation's history, older than ``record.before``."""
        where = self._roster.conversation(state, record.room, record.peer, HISTORY_REF)
        if isinstance(where, Error):
            return [reply(state, where)]
        limit = min(record.limit, self.config.history_page)
        if where.room:
            page = self.store.room_history(where.room, record.before, limit + 1)
        else:
            page = self.store.direct_history(state.key, where.peer_key, record.before, limit + 1)
        more = len(page) > limit
        newest_first, cut = self._page(reversed(page[-limit:] if more else page))
        effects: list[Effect] = [reply(state, m) for m in reversed(newest_first)]
        more = more or cut
        effects.append(reply(state, HistoryEnd(room=record.room, peer=record.peer, more=more)))
        return effects
