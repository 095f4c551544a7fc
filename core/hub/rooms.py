"""Rooms: joining, leaving and listing them and their members."""

from __future__ import annotations

from collections.abc import Callable
from math import ceil

from sealchat.core.hub.config import HubConfig
from sealchat.core.hub.effects import Effect
from sealchat.core.hub.names import room_problem, user_key
from sealchat.core.hub.outgoing import error, pages, reply
from sealchat.core.hub.ratelimit import Allowances
from sealchat.core.hub.roster import Roster
from sealchat.core.hub.session import Conversation, Session
from sealchat.core.hub.store import Store
from sealchat.core.records import (
    JoinRoom,
    LeaveRoom,
    ListMembers,
    MemberInfo,
    Members,
    RoomInfo,
    RoomJoined,
    RoomLeft,
    RoomList,
)


class Rooms:
    """The room records of sessions: JoinRoom, LeaveRoom, ListRooms and ListMembers."""

    def __init__(
        self,
        store: Store,
        config: HubConfig,
        roster: Roster,
        allowances: Allowances,
        end_typing: Callable[[str, Conversation], list[Effect]],
    ) -> None:
        self.store = store
        self.config = config
        self._roster = roster
        self._end_typing = end_typing
        """Ends a user's typing notice in a conversation (``TypingNotices.end``)."""
        self._allowances = allowances
        self._creations = Allowances(
            config.room_creations_per_hour / 3600, config.room_creation_burst
        )
        """Each user's allowance of new rooms (a room with history stays for good)."""
        self._created_by: dict[str, str] = {}
        """Who created each room made since the start (at most ``max_rooms`` at a time): a
        room that goes again unused, never having mattered, gives its creator the
        allowance back."""

    def join(self, state: Session, record: JoinRoom, now: float) -> list[Effect]:
        """Join (creating) a room; its members are listed either way."""
        room = record.room
        problem = room_problem(room)
        if problem:
            return [error(state, "bad_room", problem, room)]
        roster = self._roster
        if state.key in roster.member_set(room):
            return [
                roster.to_user(state.key, RoomJoined(room=room)),
                *self._members_of(state, room),
            ]
        if len(self.store.rooms_of(state.key)) >= self.config.max_rooms_per_user:
            return [
                error(
                    state,
                    "too_many_rooms",
                    f"you are in {self.config.max_rooms_per_user} rooms already; leave one first",
                    room,
                )
            ]
        joins = self._allowances.of(state.key, now)
        if not joins.take(now):  # each notifies every member
            return [error(state, "rate_limited", "slow down: too many joins", room)]
        new = not self.store.room_exists(room)
        refusal = self._creation_refused(state, room, now) if new else None
        if refusal is not None:
            joins.give_back()  # nothing happened
            return [refusal]
        if new:
            self._created_by[room] = state.key
        self.store.ensure_room(room)
        effects: list[Effect] = []
        if self.store.add_member(room, state.key):
            roster.member_set(room).add(state.key)
            effects += roster.membership_changed(room, state.key, joined=True)
        effects.append(roster.to_user(state.key, RoomJoined(room=room)))
        effects += self._members_of(state, room)
        return effects

    def _creation_refused(self, state: Session, room: str, now: float) -> Effect | None:
        """Why ``room``, which does not exist, cannot be created by this user now (the
        server has ``max_rooms``, or the user created too many lately), or None (its
        creation is counted)."""
        config = self.config
        count = self.store.room_count()
        if count >= config.max_rooms:
            return error(
                state,
                "rooms_full",
                f"the server has {count:,} rooms and holds at most {config.max_rooms:,}: join "
                "one that exists (the room list shows them), or ask the server's operator to "
                "make room",
                room,
            )
        creations = self._creations.of(state.key, now)
        if not creations.take(now):
            burst, per_hour = config.room_creation_burst, config.room_creations_per_hour
            pace = f"{burst} at once, then {per_hour:g} an hour"
            wait = ceil((1 - creations.tokens) / creations.rate / 60) if creations.rate else 0
            later = f"try again in {wait} min" if wait else "ask the server's operator"
            return error(
                state,
                "rate_limited",
                f"you are creating rooms faster than this server allows ({pace}): join one "
                f"that exists (the room list shows them), or, for a new one, {later}",
                room,
            )
        return None

    def leave(self, state: Session, record: LeaveRoom, now: float) -> list[Effect]:
        """Leave a room (not the default one); one left unused is gone."""
        room = record.room
        roster = self._roster
        if room == self.config.default_room:
            return [error(state, "cannot_leave", f"everyone stays in {room}", room)]
        if state.key not in roster.member_set(room):
            return [error(state, "not_member", f"you are not in {room}", room)]
        if not self._allowances.of(state.key, now).take(now):  # each notifies every member
            return [error(state, "rate_limited", "slow down: too many leaves", room)]
        typing = self._end_typing(state.key, Conversation(room=room))  # told while a member
        self.store.remove_member(room, state.key)
        roster.member_set(room).discard(state.key)
        if roster.drop_room_if_unused(room):
            creator = self._created_by.pop(room, None)
            if creator is not None:  # as if it had never been made: its creator may again
                self._creations.of(creator, now).give_back()
        effects: list[Effect] = [*typing, roster.to_user(state.key, RoomLeft(room=room))]
        effects += roster.membership_changed(room, state.key, joined=False)
        return effects

    def list_rooms(self, state: Session) -> list[Effect]:
        """Every room with its member count and whether the user is in it, in pages."""
        mine = set(self.store.rooms_of(state.key))
        rooms = [
            RoomInfo(name=name, members=count, joined=name in mine)
            for name, count in self.store.rooms()
        ]
        return [reply(state, RoomList(rooms=page, more=more)) for page, more in pages(rooms)]

    def list_members(self, state: Session, record: ListMembers) -> list[Effect]:
        """The members of a room the user is in."""
        if state.key not in self._roster.member_set(record.room):
            return [error(state, "not_member", f"you are not in {record.room}", record.room)]
        return self._members_of(state, record.room)

    def _members_of(self, state: Session, room: str) -> list[Effect]:
        members = sorted(self.store.members(room), key=str.lower)
        infos = [MemberInfo(name=n, online=user_key(n) in self._roster.announcing) for n in members]
        return [
            reply(state, Members(room=room, members=page, more=more)) for page, more in pages(infos)
        ]
