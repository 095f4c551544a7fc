"""Accounts changed while their users are online: removed, or given a new password (by
``sealchat user remove`` / ``passwd`` in another process, or through the store)."""

from __future__ import annotations

from collections.abc import Callable

from sealchat.core.hub.effects import Disconnect, Effect, SessionId
from sealchat.core.hub.roster import Roster
from sealchat.core.hub.store import Store
from sealchat.core.records import ACCOUNT_REMOVED, PASSWORD_CHANGED

Close = Callable[[SessionId, Callable[[str], set[str]]], list[Effect]]
"""Forget a session; if it was its user's last, tell ``audience(key)`` it went offline."""


class AccountChanges:
    """Logs out the sessions that an account's removal or password change ends."""

    def __init__(self, store: Store, roster: Roster, close: Close) -> None:
        self.store = store
        self._roster = roster
        self._close = close

    def log_out(self) -> list[Effect]:
        """Log out the sessions of accounts removed, and those logged in before a password
        change, while they were online; checked before anything else the hub does, so that
        nothing of theirs is handled after the change. Cheap while no account changes."""
        roster = self._roster
        generations = self.store.password_generations(roster.online.keys())
        if generations is None:
            return []
        effects: list[Effect] = []
        for key in list(roster.online):
            generation = generations.get(key)
            if generation is None:
                effects += self._account_removed(key)
                continue
            for session in list(roster.online[key]):
                if roster.sessions[session].password_generation != generation:
                    effects += self._close(session, roster.presence_audience)
                    effects.append(Disconnect(session, PASSWORD_CHANGED))
        return effects

    def _account_removed(self, key: str) -> list[Effect]:
        """Log out the sessions of removed account ``key`` and tell its room-mates that it
        left and went offline: who they are comes from the members cached in memory, as
        its memberships went with the account (an online user's rooms are all cached)."""
        roster = self._roster
        rooms = [room for room, members in roster.members.items() if key in members]
        audience = roster.presence_audience_in(rooms)
        effects: list[Effect] = []
        for room in rooms:
            roster.members[room].discard(key)  # first: the size that counts is without it
            effects += roster.membership_changed(room, key, joined=False)
        for session in list(roster.online[key]):
            effects += self._close(session, lambda _key: audience)
            effects.append(Disconnect(session, ACCOUNT_REMOVED))
        return effects
