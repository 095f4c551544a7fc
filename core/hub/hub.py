"""The chat hub: the server's logic, free of I/O.

The driver (a trio or a threaded server) reports what happens — a session opened, a record
arrived, a password was checked, time passed — and carries out the effects returned. The hub
owns no socket, thread or clock; durable state goes through the injected ``Store``. Calls must
not overlap (one thread at a time).
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

import msgspec

from sealchat.core import limits
from sealchat.core.hub.config import HubConfig
from sealchat.core.hub.effects import (
    CancelStream,
    Deliver,
    Disconnect,
    Effect,
    HashPassword,
    SessionId,
    StreamFile,
    VerifyPassword,
)
from sealchat.core.hub.names import room_problem, user_key, username_problem
from sealchat.core.hub.ratelimit import Backoff, TokenBucket
from sealchat.core.hub.store import DuplicateMessage, Store, StoredFile, StoredMessage
from sealchat.core.records import (
    Authenticated,
    Bye,
    Delivered,
    Error,
    FileAccept,
    FileChunk,
    FileComplete,
    FileInfo,
    FileList,
    FileOffer,
    FileReject,
    FileRequest,
    HistoryEnd,
    HistoryRequest,
    JoinRoom,
    LeaveRoom,
    ListFiles,
    ListMembers,
    ListRooms,
    Login,
    LoginRejected,
    MemberInfo,
    Members,
    Membership,
    Message,
    MessageAck,
    OnlineUsers,
    Ping,
    Pong,
    Presence,
    Record,
    Register,
    RoomInfo,
    RoomJoined,
    RoomLeft,
    RoomList,
    Typing,
)

GENERIC_LOGIN_FAILURE = "invalid username or password"
PASSWORD_CHANGED = "your password was changed; log in again with the new one"  # noqa: S105
ACCOUNT_REMOVED = "your account was removed"
HISTORY_REF = ":history"
FILES_REF = ":files"
TYPING_REF = ":typing"
"""The ``ref`` of an Error about a HistoryRequest, ListFiles or Typing record: neither a valid
room name (it starts with a letter or digit) nor a client id of the reference clients (hex)
starts with ':', so no other refusal of theirs has such a ``ref``."""
KNOWN_ADDRESSES = 8
"""Addresses remembered per user as ones it logged in from (the latest)."""
_PAGE_BYTES = limits.MAX_RECORD - 1024  # leaves room for the record's other fields
_LOGINS = (Login, Register)
_CONNECTION_LEVEL = (Ping, Pong, Bye)
_encoder = msgspec.msgpack.Encoder()
T = TypeVar("T")


@dataclass(slots=True)
class Upload:
    """An upload in progress on one session."""

    file: StoredFile
    received: int


@dataclass(slots=True)
class Session:
    """One authenticated or authenticating connection."""

    id: SessionId
    address: str
    opened: float = 0.0
    key: str = ""
    name: str = ""
    login_pending: bool = False
    password_generation: int = 0
    """The account's password generation when its hash was read for this login: a session
    whose account has another one now logged in with a password that was changed since."""
    uploads: dict[int, Upload] = field(default_factory=dict)
    downloads: set[int] = field(default_factory=set)
    stopping: set[int] = field(default_factory=set)
    """Downloads the client cancelled whose stream the driver has not yet ended: their
    numbers stay in use (late chunks must not pass for a new transfer's) though their slots
    are free."""
    replay_from: int = 0
    """The replay after login has sent every missed message up to this id."""
    replay_until: int = 0
    """The replay covers ids up to this one (the newest at login: later ones arrive live);
    0 once the replay is over."""


@dataclass(frozen=True, slots=True)
class _Conversation:
    """Where a message, typing notice or file goes: a room, or the direct conversation
    between two users (``peer_key``/``peer`` is the other user)."""

    room: str = ""
    peer_key: str = ""
    peer: str = ""


class HandlingFailed(Exception):
    """Handling a record, or committing what it wrote, raised (the cause is chained).
    ``effects`` are those that stand: of the records handled before it in the same call
    (stored), or only the logouts of removed or changed accounts if the commit failed. The
    driver runs them, then ends the session."""

    def __init__(self, effects: list[Effect]) -> None:
        super().__init__("the hub failed to handle a record")
        self.effects = effects


class Hub:
    """Rooms, direct messages, presence, typing, history and files for every session."""

    def __init__(self, store: Store, config: HubConfig | None = None) -> None:
        self.store = store
        self.config = config or HubConfig()
        self._sessions: dict[SessionId, Session] = {}
        self._online: dict[str, set[SessionId]] = defaultdict(set)
        self._members: dict[str, set[str]] = {}
        self._names: dict[str, str] = {}
        self._message_buckets: dict[str, TokenBucket] = {}
        self._user_failures: dict[str, Backoff] = defaultdict(Backoff)
        self._address_failures: dict[str, Backoff] = defaultdict(Backoff)
        self._known_addresses: dict[str, OrderedDict[str, None]] = {}
        """Per user, the latest addresses it logged in from: the user's back-off does not
        apply there, so failures from elsewhere cannot lock the user out of them."""
        self._typing: dict[tuple[str, _Conversation], float] = {}
        self._typing_buckets: dict[str, TokenBucket] = {}
        self._uploading: set[str] = set()
        """Files that a transfer is writing right now: one writer per partial file."""
        self.store.ensure_room(self.config.default_room)

    # --- sessions ---------------------------------------------------------------------------

    def open_session(self, session: SessionId, address: str, now: float) -> None:
        """A connection completed its handshake; it may now log in, for ``login_timeout``."""
        self._sessions[session] = Session(id=session, address=address, opened=now)

    def close_session(self, session: SessionId, now: float) -> list[Effect]:
        """The connection is gone. Uploads stay resumable; presence may change."""
        effects = self._log_out_changed_accounts()  # room-mates are told while it is known
        return effects + self._close(session, self._presence_audience)

    def _close(self, session: SessionId, audience: Callable[[str], set[str]]) -> list[Effect]:
        """Forget ``session``; if it was its user's last, stop its typing and tell
        ``audience(key)`` that the user went offline."""
        state = self._sessions.pop(session, None)
        if state is None:
            return []
        for transfer in list(state.uploads):
            self._end_upload(state, transfer)
        if not state.key:
            return []
        sessions = self._online[state.key]
        sessions.discard(session)
        if sessions:
            return []
        del self._online[state.key]
        effects = self._stop_typing_of(state.key)
        offline = Presence(user=state.name, online=False)
        effects += self._to_keys(audience(state.key) - {state.key}, offline)
        return effects

    def is_online(self, username: str) -> bool:
        """Whether any session of ``username`` is logged in."""
        return user_key(username) in self._online

    # --- records ----------------------------------------------------------------------------

    def handle(self, session: SessionId, record: Record, now: float) -> list[Effect]:
        """React to a record received on ``session``.

        Its writes are committed before the effects are returned: anything that acknowledges
        them comes after they are stored. Raises ``HandlingFailed`` if handling it failed."""
        return self.handle_all(session, [record], now)

    def handle_all(self, session: SessionId, records: list[Record], now: float) -> list[Effect]:
        """``handle`` for records that arrived together, effects in order; the writes of all
        of them are committed as one, before the effects are returned.

        If a record fails, the ones after it are not handled, what was written is committed
        (the hub's state in memory has moved on with it) and ``HandlingFailed`` carries the
        effects of the records before it: stored, so they are to be run. If the commit itself
        fails, ``HandlingFailed`` carries only the logouts of accounts removed or whose
        password changed meanwhile (which write nothing): nothing else is to be
        acknowledged."""
        logouts = self._log_out_changed_accounts()  # before a record of theirs is handled
        effects = list(logouts)
        try:
            with self.store.batch():  # commits also when the block raises
                for record in records:
                    try:
                        effects += self._handle(session, record, now)
                    except Exception as exc:
                        raise HandlingFailed(effects) from exc
        except HandlingFailed:
            self._reload_members()
            raise
        except Exception as exc:  # the commit failed: none of the records' effects stand
            self._reload_members()
            raise HandlingFailed(logouts) from exc
        return effects

    def _reload_members(self) -> None:
        """After a failure, reread from the store who is in which room, at once for the rooms
        of the users online: a removal of one of them finds its rooms here, not in the store."""
        self._members.clear()
        for key in self._online:
            for room in self.store.rooms_of(key):
                self._member_set(room)

    def _handle(self, session: SessionId, record: Record, now: float) -> list[Effect]:
        state = self._sessions.get(session)
        if state is None:
            return []
        if isinstance(record, _LOGINS):
            return self._login(state, record, now)
        if isinstance(record, _CONNECTION_LEVEL):
            return []  # answered or handled by the connection itself
        if not state.key:
            return [Disconnect(session, "log in first")]
        match record:
            case Message():
                return self._message(state, record, now)
            case Typing():
                return self._typing_notice(state, record, now)
            case Delivered():
                return self._delivered(state, record)
            case HistoryRequest():
                return self._history(state, record)
            case JoinRoom():
                return self._join(state, record, now)
            case LeaveRoom():
                return self._leave(state, record, now)
            case ListRooms():
                return self._list_rooms(state)
            case ListMembers():
                return self._list_members(state, record)
            case FileOffer():
                return self._offer(state, record, now)
            case FileChunk():
                return self._chunk(state, record)
            case FileComplete():
                return self._complete(state, record, now)
            case FileReject():
                return self._refuse(state, record)
            case FileRequest():
                return self._download(state, record)
            case ListFiles():
                return self._list_files(state, record)
        return [Disconnect(session, f"a client may not send {type(record).__name__}")]

    # --- login ------------------------------------------------------------------------------

    def _login(self, state: Session, record: Login | Register, now: float) -> list[Effect]:
        if state.key or state.login_pending:
            return [self._reply(state, LoginRejected(reason="a login is already in progress"))]
        key = user_key(record.username)
        blocked = self._blocked(key, state.address, now)
        if blocked is not None:
            return [self._reply(state, blocked)]
        pending = sum(
            1 for s in self._sessions.values() if s.login_pending and s.address == state.address
        )
        if pending >= self.config.max_pending_logins:
            reason = "too many logins in progress from your address; try again in a moment"
            return [self._reply(state, LoginRejected(reason=reason, retry_after=1.0))]
        if isinstance(record, Register):
            problem = self._registration_problem(record)
            if problem:
                return [self._reply(state, LoginRejected(reason=problem))]
            state.login_pending = True
            return [HashPassword(state.id, record.username, record.password)]
        user = self.store.get_user(key)
        state.login_pending = True
        state.password_generation = 0 if user is None else user.password_generation
        return [
            VerifyPassword(
                state.id,
                record.username,
                record.password,
                None if user is None else user.password_hash,
            )
        ]

    def _blocked(self, key: str, address: str, now: float) -> LoginRejected | None:
        """The refusal to give while the user (except at an address it logged in from
        before) or the address is backing off, if it is."""
        known = address in self._known_addresses.get(key, ())
        user = None if known else self._user_failures.get(key)
        backoffs = (user, self._address_failures.get(address))
        wait = max((b.wait(now) for b in backoffs if b is not None), default=0.0)
        if wait <= 0:
            return None
        reason = f"too many failed attempts; try again in {wait:.0f} s"
        return LoginRejected(reason=reason, retry_after=wait)

    def _registration_problem(self, record: Register) -> str | None:
        if not self.config.open_registration:
            return "registration is closed on this server; ask its operator for an account"
        problem = username_problem(record.username)
        if problem:
            return problem
        key = user_key(record.username)
        if self.store.get_user(key) is not None or self.store.is_retired(key):
            return "that user name is taken"  # retired too: a removed account's DMs keep it
        if len(record.password) < self.config.min_password_chars:
            return f"a password needs at least {self.config.min_password_chars} characters"
        return None

    def password_hashed(
        self, session: SessionId, username: str, password_hash: str, now: float
    ) -> list[Effect]:
        """The outcome of a HashPassword effect: create the account and log in."""
        state = self._sessions.get(session)
        if state is None or not state.login_pending:
            return []
        state.login_pending = False
        if not self.store.add_user(username, user_key(username), password_hash):
            return [self._reply(state, LoginRejected(reason="that user name is taken"))]
        return self._log_in(state, username, now)

    def password_verified(
        self, session: SessionId, username: str, ok: bool, now: float
    ) -> list[Effect]:
        """The outcome of a VerifyPassword effect for ``username``."""
        state = self._sessions.get(session)
        if state is None or not state.login_pending:
            return []
        state.login_pending = False
        key = user_key(username)
        # Checks that ran side by side were all allowed to start: a block that one of them
        # caused applies to the others' results too.
        blocked = self._blocked(key, state.address, now)
        if blocked is not None:
            return [self._reply(state, blocked)]
        user = self.store.get_user(key) if ok else None
        if user is not None and user.password_generation != state.password_generation:
            reason = "the password was changed while it was checked; log in again"
            return [self._reply(state, LoginRejected(reason=reason))]
        if user is None:
            wait = 0.0
            for backoff in (self._user_failures[key], self._address_failures[state.address]):
                backoff.fail(
                    now,
                    free=self.config.free_login_failures,
                    base=self.config.login_backoff_base,
                    cap=self.config.login_backoff_max,
                )
                wait = max(wait, backoff.wait(now))
            rejected = LoginRejected(reason=GENERIC_LOGIN_FAILURE, retry_after=wait)
            return [self._reply(state, rejected)]
        return self._log_in(state, user.name, now)

    def _log_in(self, state: Session, name: str, now: float) -> list[Effect]:
        key = user_key(name)
        # The user's count goes, unless this login came through its block at a known address:
        # guesses elsewhere stay throttled. The address keeps its own count: one account of an
        # attacker's must not wipe the failures of its guesses.
        failures = self._user_failures.get(key)
        if failures is None or not failures.wait(now):
            self._user_failures.pop(key, None)
        state.key, state.name = key, name
        known = self._known_addresses.setdefault(key, OrderedDict())
        known[state.address] = None
        known.move_to_end(state.address)
        if len(known) > KNOWN_ADDRESSES:
            known.popitem(last=False)
        self._names[key] = name
        first_session = key not in self._online
        self._online[key].add(state.id)
        effects: list[Effect] = [self._reply(state, Authenticated(username=name))]
        default = self.config.default_room
        if self.store.add_member(default, key):
            self._member_set(default).add(key)
            effects += self._membership_changed(default, key, joined=True)
        if first_session:
            effects += self._to_presence_audience(key, Presence(user=name, online=True))
        effects += self._online_users(state)
        state.replay_from = self.store.get_cursor(key)
        state.replay_until = self.store.last_message_id()
        effects += self._replay(state)
        return effects

    def _online_users(self, state: Session) -> list[Effect]:
        users = sorted(
            self._names[k] for k in self._presence_audience(state.key) if k in self._online
        )
        return [
            self._reply(state, OnlineUsers(users=page, more=more)) for page, more in _pages(users)
        ]

    def _replay(self, state: Session) -> list[Effect]:
        """Send the next page of what the user missed while offline (messages newer than the
        replay's span arrive live, so none comes twice)."""
        limit = self.config.replay_page
        page = [
            m
            for m in self.store.missed(state.key, state.replay_from, limit)
            if m.id <= state.replay_until
        ]
        more = len(page) == limit and page[-1].id < state.replay_until
        if page:
            state.replay_from = page[-1].id
        if not more:
            state.replay_until = 0
        effects: list[Effect] = [self._reply(state, self._message_record(m)) for m in page]
        effects.append(self._reply(state, HistoryEnd(more=more)))
        return effects

    # --- rooms ------------------------------------------------------------------------------

    def _join(self, state: Session, record: JoinRoom, now: float) -> list[Effect]:
        room = record.room
        problem = room_problem(room)
        if problem:
            return [self._error(state, "bad_room", problem, room)]
        if state.key in self._member_set(room):
            return [self._to_user(state.key, RoomJoined(room=room)), *self._members_of(state, room)]
        if len(self.store.rooms_of(state.key)) >= self.config.max_rooms_per_user:
            return [
                self._error(
                    state,
                    "too_many_rooms",
                    f"you are in {self.config.max_rooms_per_user} rooms already; leave one first",
                    room,
                )
            ]
        if not self._bucket(state.key, now).take(now):  # each notifies every member
            return [self._error(state, "rate_limited", "slow down: too many joins", room)]
        self.store.ensure_room(room)
        effects: list[Effect] = []
        if self.store.add_member(room, state.key):
            self._member_set(room).add(state.key)
            effects += self._membership_changed(room, state.key, joined=True)
        effects.append(self._to_user(state.key, RoomJoined(room=room)))
        effects += self._members_of(state, room)
        return effects

    def _leave(self, state: Session, record: LeaveRoom, now: float) -> list[Effect]:
        room = record.room
        if room == self.config.default_room:
            return [self._error(state, "cannot_leave", f"everyone stays in {room}", room)]
        if state.key not in self._member_set(room):
            return [self._error(state, "not_member", f"you are not in {room}", room)]
        if not self._bucket(state.key, now).take(now):  # each notifies every member
            return [self._error(state, "rate_limited", "slow down: too many leaves", room)]
        self.store.remove_member(room, state.key)
        self._member_set(room).discard(state.key)
        self._drop_room_if_unused(room)
        effects: list[Effect] = [self._to_user(state.key, RoomLeft(room=room))]
        effects += self._membership_changed(room, state.key, joined=False)
        return effects

    def _list_rooms(self, state: Session) -> list[Effect]:
        mine = set(self.store.rooms_of(state.key))
        rooms = [
            RoomInfo(name=name, members=count, joined=name in mine)
            for name, count in self.store.rooms()
        ]
        return [self._reply(state, RoomList(rooms=page, more=more)) for page, more in _pages(rooms)]

    def _list_members(self, state: Session, record: ListMembers) -> list[Effect]:
        if state.key not in self._member_set(record.room):
            return [self._error(state, "not_member", f"you are not in {record.room}", record.room)]
        return self._members_of(state, record.room)

    def _members_of(self, state: Session, room: str) -> list[Effect]:
        members = sorted(self.store.members(room), key=str.lower)
        infos = [MemberInfo(name=n, online=user_key(n) in self._online) for n in members]
        return [
            self._reply(state, Members(room=room, members=page, more=more))
            for page, more in _pages(infos)
        ]

    def _membership_changed(self, room: str, key: str, *, joined: bool) -> list[Effect]:
        members = self._member_set(room)
        if len(members) > self.config.presence_room_limit:
            return []
        record = Membership(room=room, user=self._names.get(key, key), joined=joined)
        return self._to_keys(members - {key}, record)

    # --- messages ---------------------------------------------------------------------------

    def _message(self, state: Session, record: Message, now: float) -> list[Effect]:
        ref = record.client_id
        where = self._conversation(state, record.room, record.to, ref)
        if isinstance(where, Error):
            return [self._reply(state, where)]
        if not record.text.strip():
            return [self._error(state, "empty", "a message needs some text", ref)]
        if len(record.text) > self.config.max_message_chars:
            return [
                self._error(
                    state,
                    "too_long",
                    f"a message is at most {self.config.max_message_chars} characters",
                    ref,
                )
            ]
        # A resend (after a reconnect) of a message already stored is acknowledged, not
        # repeated, and costs no token. The store's unique index spots it as the message is
        # inserted, so a new message needs no lookup first.
        bucket = self._bucket(state.key, now)
        if not bucket.take(now):
            return [self._ack_earlier(state, ref) or self._rate_limited(state, ref)]
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
            ack = self._ack_earlier(state, ref)
            if ack is None:  # pragma: no cover  (the store broke its contract)
                raise
            return [ack]
        message = self._message_record(stored)
        # The sender's session gets the acknowledgement; without a client id to match it
        # against, it gets the message itself.
        mine = MessageAck(client_id=ref, id=stored.id, ts=stored.ts) if ref else message
        effects: list[Effect] = [self._reply(state, mine)]
        effects += self._to_conversation(state, where, message)
        self._typing.pop((state.key, where), None)
        return effects

    def _ack_earlier(self, state: Session, ref: str) -> Deliver | None:
        """The acknowledgement of the sender's message stored earlier under ``ref``, if any."""
        earlier = self.store.find_by_client_id(state.key, ref) if ref else None
        if earlier is None:
            return None
        return self._reply(state, MessageAck(client_id=ref, id=earlier.id, ts=earlier.ts))

    def _rate_limited(self, state: Session, ref: str) -> Deliver:
        detail = f"slow down: at most {self.config.messages_per_second:g} messages a second"
        return self._error(state, "rate_limited", detail, ref)

    def _bucket(self, key: str, now: float) -> TokenBucket:
        """The user's allowance of messages, joins, leaves and new uploads."""
        bucket = self._message_buckets.get(key)
        if bucket is None:
            bucket = self._message_buckets[key] = TokenBucket.full(
                self.config.messages_per_second, self.config.message_burst, now
            )
        return bucket

    def _conversation(self, state: Session, room: str, to: str, ref: str) -> _Conversation | Error:
        if bool(room) == bool(to):
            return Error(code="bad_target", detail="name exactly one of a room or a user", ref=ref)
        if room:
            if state.key not in self._member_set(room):
                return Error(code="not_member", detail=f"join {room} first", ref=ref)
            return _Conversation(room=room)
        user = self.store.get_user(user_key(to))
        if user is None:
            return Error(code="no_such_user", detail=f"there is no user {to}", ref=ref)
        return _Conversation(peer_key=user.key, peer=user.name)

    def _to_conversation(
        self, state: Session, where: _Conversation, record: Record
    ) -> list[Effect]:
        """``record`` to everyone in the conversation except the session that caused it."""
        keys = self._member_set(where.room) if where.room else {state.key, where.peer_key}
        online, me = self._online, state.id
        sessions = tuple([s for k in keys if k in online for s in online[k] if s != me])
        return [Deliver(sessions, record)] if sessions else []

    def _delivered(self, state: Session, record: Delivered) -> list[Effect]:
        # While a replay runs, nothing past its last page has surely arrived.
        ceiling = state.replay_from if state.replay_until else self.store.last_message_id()
        up_to = min(record.up_to, ceiling)
        if up_to > self.store.get_cursor(state.key):
            self.store.set_cursor(state.key, up_to)
        if state.replay_until and record.up_to >= state.replay_from:
            return self._replay(state)
        return []

    def _history(self, state: Session, record: HistoryRequest) -> list[Effect]:
        where = self._conversation(state, record.room, record.peer, HISTORY_REF)
        if isinstance(where, Error):
            return [self._reply(state, where)]
        limit = min(record.limit, self.config.history_page)
        if where.room:
            page = self.store.room_history(where.room, record.before, limit + 1)
        else:
            page = self.store.direct_history(state.key, where.peer_key, record.before, limit + 1)
        more = len(page) > limit
        page = page[-limit:] if more else page
        effects: list[Effect] = [self._reply(state, self._message_record(m)) for m in page]
        effects.append(
            self._reply(state, HistoryEnd(room=record.room, peer=record.peer, more=more))
        )
        return effects

    def _message_record(self, stored: StoredMessage) -> Message:
        info = None
        if stored.file_id:
            file = self.store.get_file(stored.file_id)
            if file is not None:
                info = _file_info(file)
        return Message(
            text=stored.text,
            room=stored.room,
            to=stored.to,
            client_id=stored.client_id,
            id=stored.id,
            sender=stored.sender,
            ts=stored.ts,
            file=info,
        )

    # --- typing -----------------------------------------------------------------------------

    def _typing_notice(self, state: Session, record: Typing, now: float) -> list[Effect]:
        bucket = self._typing_buckets.get(state.key)
        if bucket is None:
            bucket = self._typing_buckets[state.key] = TokenBucket.full(2.0, 10, now)
        if not bucket.take(now):
            return []  # typing notices are a courtesy: excess ones are dropped quietly
        where = self._conversation(state, record.room, record.to, TYPING_REF)
        if isinstance(where, Error):
            return [self._reply(state, where)]
        slot = (state.key, where)
        if record.active:
            refresh = slot in self._typing
            self._typing[slot] = now + self.config.typing_expiry
            if refresh:
                return []
        elif self._typing.pop(slot, None) is None:
            return []
        notice = Typing(room=where.room, to=where.peer, user=state.name, active=record.active)
        return self._to_conversation_except_user(state.key, where, notice)

    def _to_conversation_except_user(
        self, key: str, where: _Conversation, record: Record
    ) -> list[Effect]:
        keys = self._member_set(where.room) if where.room else {where.peer_key}
        return self._to_keys(keys - {key}, record)

    def tick(self, now: float) -> list[Effect]:
        """Expire typing notices not refreshed in time, close connections that never logged
        in, log out the sessions of accounts removed or whose password changed meanwhile,
        and forget old login failures."""
        horizon = now - 2 * self.config.login_backoff_max  # outlives the longest block
        for failures in (self._user_failures, self._address_failures):
            for stale in [k for k, b in failures.items() if b.last_failure < horizon]:
                del failures[stale]
        late = now - self.config.login_timeout
        idle = [
            s.id
            for s in self._sessions.values()
            if not s.key and not s.login_pending and s.opened < late
        ]
        effects: list[Effect] = []
        for session in idle:
            del self._sessions[session]  # forgotten now; the driver closes the connection
            reason = f"log in within {self.config.login_timeout:g} s of connecting"
            effects.append(Disconnect(session, reason))
        effects += self._log_out_changed_accounts()
        expired = [slot for slot, deadline in self._typing.items() if deadline <= now]
        for key, where in expired:
            del self._typing[key, where]
            notice = Typing(room=where.room, to=where.peer, user=self._names[key], active=False)
            effects += self._to_conversation_except_user(key, where, notice)
        return effects

    def _log_out_changed_accounts(self) -> list[Effect]:
        """Log out the sessions of accounts removed, and those logged in before a password
        change, by another process (``sealchat user remove`` or ``passwd``) or through the
        store, while they were online; checked before anything else the hub does, so that
        nothing of theirs is handled after the change. Cheap while no account changes."""
        generations = self.store.password_generations(self._online.keys())
        if generations is None:
            return []
        effects: list[Effect] = []
        for key in list(self._online):
            generation = generations.get(key)
            if generation is None:
                effects += self._account_removed(key)
                continue
            for session in list(self._online[key]):
                if self._sessions[session].password_generation != generation:
                    effects += self._close(session, self._presence_audience)
                    effects.append(Disconnect(session, PASSWORD_CHANGED))
        return effects

    def _account_removed(self, key: str) -> list[Effect]:
        """Log out the sessions of removed account ``key`` and tell its room-mates that it
        left and went offline: who they are comes from the members cached in memory, as
        its memberships went with the account (an online user's rooms are all cached)."""
        rooms = [room for room, members in self._members.items() if key in members]
        audience = self._presence_audience_in(rooms)
        effects: list[Effect] = []
        for room in rooms:
            self._members[room].discard(key)  # first: the size that counts is without it
            effects += self._membership_changed(room, key, joined=False)
        for session in list(self._online[key]):
            effects += self._close(session, lambda _key: audience)
            effects.append(Disconnect(session, ACCOUNT_REMOVED))
        return effects

    def next_deadline(self) -> float | None:
        """When ``tick`` next has work to do."""
        return min(self._typing.values(), default=None)

    def _stop_typing_of(self, key: str) -> list[Effect]:
        effects: list[Effect] = []
        for slot in [s for s in self._typing if s[0] == key]:
            del self._typing[slot]
            where = slot[1]
            notice = Typing(room=where.room, to=where.peer, user=self._names[key], active=False)
            effects += self._to_conversation_except_user(key, where, notice)
        return effects

    # --- files ------------------------------------------------------------------------------

    def _offer(self, state: Session, record: FileOffer, now: float) -> list[Effect]:
        transfer = record.transfer

        def reject(reason: str) -> list[Effect]:
            return [self._reply(state, FileReject(transfer=transfer, reason=reason))]

        where = self._conversation(state, record.room, record.to, str(transfer))
        if isinstance(where, Error):
            return reject(where.detail)
        if not record.name:
            return reject("a file needs a name")
        if _in_use(state, transfer):
            return reject(f"transfer {transfer} is already in use")
        if len(state.uploads) + len(state.downloads) >= self.config.max_transfers:
            return reject(f"at most {self.config.max_transfers} transfers at a time")
        if record.size > self.config.max_file_size:
            return reject(
                f"file too large: {record.size} bytes; the limit is "
                f"{self.config.max_file_size} bytes"
            )
        partial = self.store.find_partial_upload(
            state.key, record.sha256, record.size, where.room, where.peer_key
        )
        if partial is not None and partial.file_id in self._uploading:
            return reject("this file is already being sent in another transfer; wait for it")
        if partial is None:
            # A refused offer changes nothing: the checks first, then the token, then room.
            displaced = self._displaced_by_an_upload(state.key)
            used = self.store.usage(state.key)
            if used - sum(f.size for f in displaced) + record.size > self.config.user_quota:
                return reject(
                    f"over quota: you use {used} of {self.config.user_quota} bytes; "
                    f"this file needs {record.size}"
                )
            if not self._bucket(state.key, now).take(now):
                return reject("slow down: too many new files; try again in a moment")
            for file in displaced:
                self._discard_partial(file)
            partial = self.store.create_file(
                owner_key=state.key,
                name=record.name,
                size=record.size,
                sha256=record.sha256,
                room=where.room,
                to_key=where.peer_key,
                ts=now,
            )
        state.uploads[transfer] = Upload(file=partial, received=partial.received)
        self._uploading.add(partial.file_id)
        accept = FileAccept(transfer=transfer, file_id=partial.file_id, offset=partial.received)
        return [self._reply(state, accept)]

    def _displaced_by_an_upload(self, key: str) -> list[StoredFile]:
        """The unfinished uploads of the user that a new one displaces: the longest idle not
        in progress, down to one less than the limit (each keeps a row and a partial file
        for a resume that may never come)."""
        unfinished = self.store.unfinished_uploads(key)
        idle = [f for f in unfinished if f.file_id not in self._uploading]
        return idle[: max(0, len(unfinished) - self.config.max_unfinished_uploads + 1)]

    def _chunk(self, state: Session, record: FileChunk) -> list[Effect]:
        upload = state.uploads.get(record.transfer)
        if upload is None:
            reason = f"no upload {record.transfer} in progress"
            return [self._reply(state, FileReject(transfer=record.transfer, reason=reason))]
        if record.offset != upload.received:
            reason = f"chunk at {record.offset}, expected {upload.received}; resume to continue"
        elif upload.received + len(record.data) > upload.file.size:
            reason = f"more data than the {upload.file.size} bytes offered"
        else:
            try:
                upload.received = self.store.write_chunk(
                    upload.file.file_id, record.offset, record.data
                )
            except (OSError, ValueError):
                reason = "the server could not store the chunk; resume to continue"
            else:
                return []
        self._end_upload(state, record.transfer)  # the stored part stays: resume from there
        return [self._reply(state, FileReject(transfer=record.transfer, reason=reason))]

    def _end_upload(self, state: Session, transfer: int) -> Upload | None:
        upload = state.uploads.pop(transfer, None)
        if upload is not None:
            self._uploading.discard(upload.file.file_id)
            self.store.release_upload(upload.file.file_id)
        return upload

    def _discard_partial(self, file: StoredFile) -> None:
        """Delete an upload that will not be resumed (never a complete file)."""
        current = self.store.get_file(file.file_id)
        if current is not None and not current.complete:
            self.store.delete_file(file.file_id)
            if file.room:
                self._drop_room_if_unused(file.room)

    def _drop_room_if_unused(self, room: str) -> None:
        """Delete ``room`` if nobody is in it and nothing was posted or shared in it."""
        if not self._member_set(room) and self.store.drop_room_if_unused(room):
            self._members.pop(room, None)

    def _complete(self, state: Session, record: FileComplete, now: float) -> list[Effect]:
        upload = self._end_upload(state, record.transfer)
        if upload is None:
            reason = f"no upload {record.transfer} in progress"
            return [self._reply(state, FileReject(transfer=record.transfer, reason=reason))]
        file = upload.file
        if upload.received != file.size or record.sha256 != file.sha256:
            self._discard_partial(file)
            reason = "the file did not arrive intact (size or SHA-256 differs); send it again"
            return [self._reply(state, FileReject(transfer=record.transfer, reason=reason))]
        if file.room and state.key not in self._member_set(file.room):  # left meanwhile
            reason = (
                f"you left {file.room}; join it again and send the file again to share it "
                "there (it is kept: nothing is sent twice)"
            )
            return [self._reply(state, FileReject(transfer=record.transfer, reason=reason))]
        if not self.store.complete_file(file.file_id):
            reason = "the stored file's SHA-256 differs from the offer; send it again"
            return [self._reply(state, FileReject(transfer=record.transfer, reason=reason))]
        recipient = self.store.get_user(file.to_key) if file.to_key else None
        peer = recipient.name if recipient is not None else ""
        stored = self.store.append_message(
            ts=now,
            sender_key=state.key,
            sender=state.name,
            room=file.room,
            to_key=file.to_key,
            to=peer,
            text="",
            client_id="",
            file_id=file.file_id,
        )
        announcement = self._message_record(stored)
        where = _Conversation(room=file.room, peer_key=file.to_key, peer=peer)
        effects: list[Effect] = [self._reply(state, announcement)]
        effects += self._to_conversation(state, where, announcement)
        return effects

    def _refuse(self, state: Session, record: FileReject) -> list[Effect]:
        upload = self._end_upload(state, record.transfer)
        if upload is not None:  # the client cancelled its upload
            self._discard_partial(upload.file)
            return []
        if record.transfer in state.downloads:
            state.downloads.discard(record.transfer)
            state.stopping.add(record.transfer)
            return [CancelStream(state.id, record.transfer)]
        return []

    def _download(self, state: Session, record: FileRequest) -> list[Effect]:
        transfer = record.transfer

        def reject(reason: str) -> list[Effect]:
            return [self._reply(state, FileReject(transfer=transfer, reason=reason))]

        file = self.store.get_file(record.file_id)
        if file is None or not file.complete or not self._may_see(state.key, file):
            return reject(f"there is no file {record.file_id} that you can see")
        if _in_use(state, transfer):
            return reject(f"transfer {transfer} is already in use")
        if len(state.uploads) + len(state.downloads) >= self.config.max_transfers:
            return reject(f"at most {self.config.max_transfers} transfers at a time")
        if record.offset > file.size:
            return reject(f"offset {record.offset} is past the end ({file.size} bytes)")
        state.downloads.add(transfer)
        offer = FileOffer(
            transfer=transfer,
            name=file.name,
            size=file.size,
            sha256=file.sha256,
            room=file.room,
            file_id=file.file_id,
            offset=record.offset,
        )
        return [
            self._reply(state, offer),
            StreamFile(state.id, transfer, file.file_id, record.offset, file.size, file.sha256),
        ]

    def stream_finished(self, session: SessionId, transfer: int) -> None:
        """The driver finished (or abandoned) a StreamFile."""
        state = self._sessions.get(session)
        if state is not None:
            state.downloads.discard(transfer)
            state.stopping.discard(transfer)

    def _list_files(self, state: Session, record: ListFiles) -> list[Effect]:
        where = self._conversation(state, record.room, record.peer, FILES_REF)
        if isinstance(where, Error):
            return [self._reply(state, where)]
        if where.room:
            files = self.store.files_for_room(where.room)
        else:
            files = self.store.files_between(state.key, where.peer_key)
        infos = [_file_info(f) for f in files if f.complete]
        return [
            self._reply(state, FileList(room=record.room, peer=record.peer, files=page, more=more))
            for page, more in _pages(infos)
        ]

    def _may_see(self, key: str, file: StoredFile) -> bool:
        if file.room:
            return key in self._member_set(file.room)
        return key in (file.owner_key, file.to_key)

    # --- helpers ----------------------------------------------------------------------------

    def _member_set(self, room: str) -> set[str]:
        members = self._members.get(room)
        if members is None:
            if not room or not self.store.room_exists(room):
                return set()  # not cached: unknown names must not grow memory
            names = self.store.members(room)
            for name in names:
                self._names.setdefault(user_key(name), name)
            members = self._members[room] = {user_key(n) for n in names}
        return members

    def _presence_audience(self, key: str) -> set[str]:
        """Users who share a room small enough for presence with ``key`` (and itself)."""
        return {key} | self._presence_audience_in(self.store.rooms_of(key))

    def _presence_audience_in(self, rooms: Iterable[str]) -> set[str]:
        """The members of those of ``rooms`` small enough for presence."""
        audience: set[str] = set()
        for room in rooms:
            members = self._member_set(room)
            if len(members) <= self.config.presence_room_limit:
                audience |= members
        return audience

    def _to_presence_audience(self, key: str, record: Record) -> list[Effect]:
        return self._to_keys(self._presence_audience(key) - {key}, record)

    def _to_keys(self, keys: Iterable[str], record: Record) -> list[Effect]:
        sessions = tuple(s for k in keys for s in self._online.get(k, ()))
        return [Deliver(sessions, record)] if sessions else []

    def _to_user(self, key: str, record: Record) -> Deliver:
        return Deliver(tuple(self._online.get(key, ())), record)

    @staticmethod
    def _reply(state: Session, record: Record) -> Deliver:
        return Deliver((state.id,), record)

    @staticmethod
    def _error(state: Session, code: str, detail: str, ref: str) -> Deliver:
        return Deliver((state.id,), Error(code=code, detail=detail, ref=ref[: limits.MAX_ID]))


def _file_info(file: StoredFile) -> FileInfo:
    return FileInfo(file_id=file.file_id, name=file.name, size=file.size, sha256=file.sha256)


def _pages(items: list[T]) -> list[tuple[list[T], bool]]:
    """``items`` cut into pages that each fit one record (at most MAX_LIST items and, encoded,
    well under MAX_RECORD bytes), each with whether more follow; one empty page for none."""
    pages: list[list[T]] = []
    page: list[T] = []
    size = 0
    for item in items:
        item_size = len(_encoder.encode(item))
        if page and (len(page) == limits.MAX_LIST or size + item_size > _PAGE_BYTES):
            pages.append(page)
            page, size = [], 0
        page.append(item)
        size += item_size
    pages.append(page)
    return [(p, i < len(pages) - 1) for i, p in enumerate(pages)]


def _in_use(state: Session, transfer: int) -> bool:
    """Whether ``transfer`` names an upload or download of ``state`` that has not ended."""
    return transfer in state.uploads or transfer in state.downloads or transfer in state.stopping
