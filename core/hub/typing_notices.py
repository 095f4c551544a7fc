"""Typing notices: relayed, expired when not refreshed, ended when the typist goes."""

from __future__ import annotations

from sealchat.core.hub.config import HubConfig
from sealchat.core.hub.effects import Effect
from sealchat.core.hub.outgoing import reply
from sealchat.core.hub.ratelimit import Allowances
from sealchat.core.hub.roster import Roster
from sealchat.core.hub.session import Conversation, Session
from sealchat.core.records import TYPING_REF, Error, Typing


class TypingNotices:
    """Who is typing where, until when."""

    def __init__(self, roster: Roster, config: HubConfig, allowances: Allowances) -> None:
        self._roster = roster
        self._config = config
        self.slots: dict[tuple[str, Conversation], float] = {}
        """When each user's notice in a conversation expires; a message ends it early."""
        self._allowances = allowances
        """Each user's allowance of typing notices."""

    def notice(self, state: Session, record: Typing, now: float) -> list[Effect]:
        """A Typing record of ``state``."""
        if not self._allowances.of(state.key, now).take(now):
            return []  # typing notices are a courtesy: excess ones are dropped quietly
        where = self._roster.conversation(state, record.room, record.to, TYPING_REF)
        if isinstance(where, Error):
            return [reply(state, where)]
        slot = (state.key, where)
        if record.active:
            refresh = slot in self.slots
            self.slots[slot] = now + self._config.typing_expiry
            if refresh:
                return []
        elif self.slots.pop(slot, None) is None:
            return []
        notice = Typing(room=where.room, to=where.peer, user=state.name, active=record.active)
        return self._roster.to_conversation_except_user(state.key, where, notice)

    def end(self, key: str, where: Conversation) -> list[Effect]:
        """End user ``key``'s notice in ``where``, if it has one: the others there are told."""
        if self.slots.pop((key, where), None) is None:
            return []
        notice = Typing(room=where.room, to=where.peer, user=self._roster.names[key], active=False)
        return self._roster.to_conversation_except_user(key, where, notice)

    def stop_of(self, key: str) -> list[Effect]:
        """End every notice of user ``key`` (it went offline)."""
        effects: list[Effect] = []
        for where in [where for typist, where in self.slots if typist == key]:
            effects += self.end(key, where)
        return effects

    def expire(self, now: float) -> list[Effect]:
        """End the notices not refreshed in time."""
        effects: list[Effect] = []
        for key, where in [slot for slot, deadline in self.slots.items() if deadline <= now]:
            effects += self.end(key, where)
        return effects

    def next_deadline(self) -> float | None:
        """When the next notice expires."""
        return min(self.slots.values(), default=None)
