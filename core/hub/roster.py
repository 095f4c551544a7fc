"""Who is connected, who is online and who is in which room: the tables every part of the hub
shares, and the deliveries addressed through them."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable

from sealchat.core.hub.config import HubConfig
from sealchat.core.hub.effects import Deliver, Effect, SessionId
from sealchat.core.hub.names import user_key
from sealchat.core.hub.session import Conversation, Session
from sealchat.core.hub.store import Store
from sealchat.core.records import Error, Membership, Record


class Roster:
    """The sessions, the users logged in, the users online, the members of rooms (cached from
    the store) and the display names of users seen.

    ``online`` holds every logged-in session of each user (what is delivered to the user goes
    to all of them); ``announcing`` only those that logged in with ``announce`` (the default):
    a user is online, for presence, while it has one of those."""

    def __init__(self, store: Store, config: HubConfig) -> None:
        self.store = store
        self.config = config
        self.sessions: dict[SessionId, Session] = {}
        self._by_address: dict[str, dict[SessionId, Session]] = {}
        """The sessions from each address: what the limits per address look at, so that a
        login never scans every session of the server."""
        self.online: dict[str, set[SessionId]] = defaultdict(set)
        self.announcing: dict[str, set[SessionId]] = defaultdict(set)
        self.members: dict[str, set[str]] = {}
        self.names: dict[str, str] = {}

    def add_session(self, state: Session) -> None:
        """Start counting ``state`` among the sessions (replacing one of the same id)."""
        self.remove_session(state.id)
        self.sessions[state.id] = state
        self._by_address.setdefault(state.address, {})[state.id] = state

    def remove_session(self, session: SessionId) -> Session | None:
        """Forget ``session``; what it was, or None if it was not there."""
        state = self.sessions.pop(session, None)
        if state is not None:
            same = self._by_address[state.address]
            del same[session]
            if not same:
                del self._by_address[state.address]
        return state

    def at_address(self, address: str) -> Collection[Session]:
        """The sessions from ``address`` (a view: not to be kept across changes)."""
        same = self._by_address.get(address)
        return () if same is None else same.values()

    def member_set(self, room: str) -> set[str]:
        """The keys of the room's members (empty for a room that does not exist)."""
        members = self.members.get(room)
        if members is None:
            if not room or not self.store.room_exists(room):
                return set()  # not cached: unknown names must not grow memory
            names = self.store.members(room)
            for name in names:
                self.names.setdefault(user_key(name), name)
            members = self.members[room] = {user_key(n) for n in names}
        return members

    def reload_members(self) -> None:
        """After a failure, reread from the store who is in which room, at once for the rooms
        of the users online: a removal of one of them finds its rooms here, not in the store."""
        self.members.clear()
        try:
            for key in self.online:
                for room in self.store.rooms_of(key):
                    self.member_set(room)
        except Exception:  # the store is failing (that is why this runs): reread as needed
            self.members.clear()

    def drop_room_if_unused(self, room: str) -> bool:
        """Delete ``room`` if nobody is in it and nothing was posted or shared in it; whether
        it was deleted."""
        if not self.member_set(room) and self.store.drop_room_if_unused(room):
            self.members.pop(room, None)
            return True
        return False

    def presence_audience(self, key: str) -> set[str]:
        """Users who share a room small enough for presence with ``key`` (and itself)."""
        return {key} | self.presence_audience_in(self.store.rooms_of(key))

    def presence_audience_in(self, rooms: Iterable[str]) -> set[str]:
        """The members of those of ``rooms`` small enough for presence."""
        audience: set[str] = set()
        for room in rooms:
            members = self.member_set(room)
            if len(members) <= self.config.presence_room_limit:
                audience |= members
        return audience

    def to_presence_audience(self, key: str, record: Record) -> list[Effect]:
        return self.to_keys(self.presence_audience(key) - {key}, record)

    def membership_changed(self, room: str, key: str, *, joined: bool) -> list[Effect]:
        """Tell the other members of ``room``, unless it is too large, that ``key`` joined
        or left it."""
        members = self.member_set(room)
        if len(members) > self.config.presence_room_limit:
            return []
        record = Membership(room=room, user=self.names.get(key, key), joined=joined)
        return self.to_keys(members - {key}, record)

    def to_keys(self, keys: Iterable[str], record: Record) -> list[Effect]:
        sessions = tuple(s for k in keys for s in self.online.get(k, ()))
        return [Deliver(sessions, record)] if sessions else []

    def to_user(self, key: str, record: Record) -> Deliver:
        return Deliver(tuple(self.online.get(key, ())), record)

    def conversation(self, state: Session, room: str, to: str, ref: str) -> Conversation | Error:
        """The conversation a record of ``state`` names, or the Error refusing it."""
        if bool(room) == bool(to):
            return Error(code="bad_target", detail="name exactly one of a room or a user", ref=ref)
        if room:
            if state.key not in self.member_set(room):
                return Error(code="not_member", detail=f"join {room} first", ref=ref)
            return Conversation(room=room)
        user = self.store.get_user(user_key(to))
        if user is None:
            return Error(code="no_such_user", detail=f"there is no user {to}", ref=ref)
        return Conversation(peer_key=user.key, peer=user.name)

    def to_conversation(self, state: Session, where: Conversation, record: Record) -> list[Effect]:
        """``record`` to everyone in the conversation except the session that caused it."""
        keys = self.member_set(where.room) if where.room else {state.key, where.peer_key}
        online, me = self.online, state.id
        sessions = tuple([s for k in keys if k in online for s in online[k] if s != me])
        return [Deliver(sessions, record)] if sessions else []

    def to_conversation_except_user(
        self, key: str, where: Conversation, record: Record
    ) -> list[Effect]:
        """``record`` to everyone in the conversation except user ``key``."""
        keys = self.member_set(where.room) if where.room else {where.peer_key}
        return self.to_keys(keys - {key}, record)
