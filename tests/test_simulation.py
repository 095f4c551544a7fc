"""Deterministic simulation: many clients against the hub over in-memory connections.

Each seed drives a random schedule of logins, joins, leaves, room messages, direct messages,
typing, uploads, resends, disconnects and reconnects. After every step the world is settled
(every byte delivered, every effect run) and the invariants are checked:

- no acknowledged message is lost: each user eventually holds every message it should see;
- none is duplicated: no session receives a message id twice, and a resend is stored once;
- every member of a room sees the room's messages in the same order (increasing ids);
- a user coming back gets exactly what it missed: nothing from rooms it was not in.

A failing seed names itself in the test id; rerun it with ``-k "seed-N"``.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sealchat.core import (
    Authenticated,
    ConnectionClosed,
    Delivered,
    FileChunk,
    FileComplete,
    FileOffer,
    HistoryEnd,
    JoinRoom,
    KeysEstablished,
    LeaveRoom,
    Login,
    Message,
    MessageAck,
    Record,
    Typing,
)
from sealchat.core.hub import (
    Deliver,
    Disconnect,
    Effect,
    HashPassword,
    Hub,
    HubConfig,
    StreamFile,
    VerifyPassword,
    VerifyUpload,
)
from sealchat.core.hub.names import user_key
from sealchat.transports.memory import MemoryPair
from sealchat.transports.passwords import CHEAP, hash_password, verify_password
from sealchat.transports.sqlite_store import SqliteStore

PASSWORD = "simulated password"
USERS = [f"user{i}" for i in range(6)]
ROOMS = ["general", "red", "blue"]


@dataclass
class SimSession:
    """One client connection and what its user has seen through it."""

    id: int
    user: str
    pair: MemoryPair
    ready: bool = False
    replayed: bool = False
    received: list[int] = field(default_factory=list)
    room_order: dict[str, list[int]] = field(default_factory=dict)


class World:
    """The hub, its store, the sessions and a model of what each user must see."""

    def __init__(self, seed: int, data_dir: Path) -> None:
        self.rng = random.Random(seed)
        self.now = 1_000_000.0
        self.store = SqliteStore(data_dir, database=":memory:")
        phc = hash_password(PASSWORD, params=CHEAP)
        for name in USERS:
            self.store.add_user(name, user_key(name), phc)
        self.hub = Hub(
            self.store,
            HubConfig(messages_per_second=1e6, message_burst=10**6, replay_page=4),
        )
        self.sessions: dict[int, SimSession] = {}
        self.next_id = 1
        self.members: dict[str, set[str]] = {room: set() for room in ROOMS}
        self.expected: dict[str, set[int]] = {u: set() for u in USERS}
        self.allowed: dict[str, set[int]] = {u: set() for u in USERS}
        self.seen: dict[str, set[int]] = {u: set() for u in USERS}
        self.acked: dict[tuple[str, str], int] = {}
        self.client_ids = 0
        self.uploading: tuple[str, str] | None = None
        self.pending: dict[tuple[str, str], tuple[str, str]] = {}
        self.announced: set[int] = set()

    # --- plumbing -------------------------------------------------------------------------

    def connect(self, user: str) -> SimSession:
        pair = MemoryPair(seed=self.rng.randrange(2**32))
        session = SimSession(self.next_id, user, pair)
        self.next_id += 1
        self.sessions[session.id] = session
        pair.client.conn.initiate()
        self.settle()
        pair.client.conn.send(Login(username=user.upper(), password=PASSWORD))
        self.settle()
        assert session.ready, f"{user} could not log in"
        assert session.replayed, f"the replay of what {user} missed did not finish"
        self.members["general"].add(user)
        return session

    def disconnect(self, session: SimSession) -> None:
        del self.sessions[session.id]
        self.run(self.hub.close_session(session.id, self.now))
        self.settle()

    def settle(self) -> None:
        """Deliver everything in flight and run every effect, until nothing moves."""
        for _ in range(10_000):
            moved = False
            for session in list(self.sessions.values()):
                pair = session.pair
                if pair.pump():
                    moved = True
                for event in pair.server.take_events():
                    moved = True
                    self.server_event(session, event)
                for event in pair.client.take_events():
                    moved = True
                    self.client_event(session, event)
            if not moved:
                return
        raise AssertionError("the world did not settle")

    def server_event(self, session: SimSession, event: object) -> None:
        if isinstance(event, KeysEstablished):
            self.hub.open_session(session.id, "10.0.0.1", self.now)
        elif isinstance(event, Record):
            self.run(self.hub.handle(session.id, event, self.now))

    def run(self, effects: list[Effect]) -> None:
        for effect in effects:
            match effect:
                case Deliver(sessions=targets, record=record):
                    for target in targets:
                        self.sessions[target].pair.server.conn.send(record)
                case VerifyPassword():
                    ok = verify_password(effect.password, effect.password_hash)
                    self.run(
                        self.hub.password_verified(effect.session, effect.username, ok, self.now)
                    )
                case VerifyUpload():  # read back at once (the drivers do it off the hub)
                    digest = effect.hasher()
                    self.run(
                        self.hub.upload_verified(effect.session, effect.transfer, digest, self.now)
                    )
                case Disconnect() | HashPassword() | StreamFile():
                    raise AssertionError(f"unexpected effect {effect!r}")

    def client_event(self, session: SimSession, event: object) -> None:
        conn = session.pair.client.conn
        if isinstance(event, Authenticated):
            session.ready = True
        elif isinstance(event, Message):
            if event.file is not None and self.uploading == (event.sender, event.room):
                self.announced.add(event.id)
                for user in self.members[event.room]:
                    self.expected[user].add(event.id)
                    self.allowed[user].add(event.id)
            if event.client_id:
                self.register(event.sender, event.client_id, event.id)
            assert event.id not in session.received, f"session {session.id} got {event.id} twice"
            session.received.append(event.id)
            self.seen[session.user].add(event.id)
            assert event.id in self.allowed[session.user] or event.sender == session.user, (
                f"{session.user} got message {event.id} it should not see"
            )
            if event.room and session.replayed:
                order = session.room_order.setdefault(event.room, [])
                assert not order or order[-1] < event.id, "room order differs"
                order.append(event.id)
        elif isinstance(event, HistoryEnd) and not event.room and not event.peer:
            up_to = max(session.received, default=0)
            if event.more:
                conn.send(Delivered(up_to=up_to))
            else:
                session.replayed = True
                conn.send(Delivered(up_to=up_to))
        elif isinstance(event, MessageAck):
            self.acked[session.user, event.client_id] = event.id
            self.register(session.user, event.client_id, event.id)
            self.seen[session.user].add(event.id)
        elif isinstance(event, ConnectionClosed):
            raise AssertionError(f"session {session.id} closed: {event.reason}")

    def register(self, sender: str, client_id: str, message_id: int) -> None:
        """Message ``client_id`` of ``sender`` is stored as ``message_id``: its audience,
        fixed when it was sent, must get it (the first of its ack or a delivery tells us)."""
        target = self.pending.pop((sender, client_id), None)
        if target is None:
            return  # already registered, or a resend
        kind, name = target
        audience = self.members[name] if kind == "room" else {sender, name}
        for user in audience:
            self.expected[user].add(message_id)
            self.allowed[user].add(message_id)

    # --- actions --------------------------------------------------------------------------

    def ready_sessions(self) -> list[SimSession]:
        return [s for s in self.sessions.values() if s.ready and s.replayed]

    def step(self) -> None:
        self.now += self.rng.uniform(0.01, 2.0)
        online = self.ready_sessions()
        action = self.rng.choice(
            [
                "connect",
                "disconnect",
                "room",
                "room",
                "dm",
                "join",
                "leave",
                "typing",
                "resend",
                "upload",
                "tick",
            ]
        )
        per_user = [s.user for s in self.sessions.values()]
        candidates = [u for u in USERS if per_user.count(u) < 2]
        if (action == "connect" or not online) and candidates:
            self.connect(self.rng.choice(candidates))
            return
        session = self.rng.choice(online)
        conn = session.pair.client.conn
        rooms_in = [r for r in ROOMS if session.user in self.members[r]]
        if action == "disconnect":
            self.disconnect(session)
        elif action == "room":
            room = self.rng.choice(rooms_in)
            self.send_message(session, ("room", room), Message(text="hi", room=room))
        elif action == "dm":
            peer = self.rng.choice([u for u in USERS if u != session.user])
            self.send_message(session, ("user", peer), Message(text="psst", to=peer))
        elif action == "join":
            room = self.rng.choice(ROOMS)
            conn.send(JoinRoom(room=room))
            self.members[room].add(session.user)
        elif action == "leave":
            left = [r for r in rooms_in if r != "general"]
            if left:
                room = self.rng.choice(left)
                conn.send(LeaveRoom(room=room))
                self.members[room].discard(session.user)
                self.drop_unseen(session.user, room)
        elif action == "typing":
            conn.send(Typing(room=self.rng.choice(rooms_in)))
        elif action == "resend" and self.acked:
            (user, client_id) = self.rng.choice(sorted(self.acked))
            mine = [s for s in online if s.user == user]
            if mine:
                mine[0].pair.client.conn.send(
                    Message(text="again", room="general", client_id=client_id)
                )
        elif action == "upload":
            self.upload(session, rooms_in)
        else:
            self.run(self.hub.tick(self.now))
        self.settle()

    def send_message(self, session: SimSession, target: tuple[str, str], message: Message) -> None:
        self.client_ids += 1
        client_id = f"c{self.client_ids}"
        self.pending[session.user, client_id] = target
        session.pair.client.conn.send(
            Message(text=message.text, room=message.room, to=message.to, client_id=client_id)
        )

    def upload(self, session: SimSession, rooms_in: list[str]) -> None:
        data = self.rng.randbytes(self.rng.randrange(0, 3000))
        digest = hashlib.sha256(data).digest()
        room = self.rng.choice(rooms_in)
        conn = session.pair.client.conn
        conn.send(FileOffer(transfer=1, name="n.bin", size=len(data), sha256=digest, room=room))
        self.settle()  # FileAccept(offset=0) arrives: a new file starts at 0
        for offset in range(0, len(data), 1000):
            conn.send(FileChunk(transfer=1, offset=offset, data=data[offset : offset + 1000]))
        if self.rng.random() < 0.5:  # as after a restart: the store reads the file back
            self.settle()
            self.store._uploads._hashes.clear()
        conn.send(FileComplete(transfer=1, sha256=digest))
        self.uploading, before = (session.user, room), len(self.announced)
        self.settle()
        self.uploading = None
        assert len(self.announced) == before + 1, "the upload was not announced exactly once"

    def drop_unseen(self, user: str, room: str) -> None:
        """After leaving ``room`` a user no longer gets its messages it had not seen."""
        room_ids = {m.id for m in self.store.room_history(room, 0, 10_000)}
        self.expected[user] -= room_ids - self.seen[user]

    # --- invariants -----------------------------------------------------------------------

    def check(self) -> None:
        for user in USERS:
            if any(s.user == user and s.replayed for s in self.sessions.values()):
                missing = self.expected[user] - self.seen[user]
                assert not missing, f"{user} never received {sorted(missing)}"
        for (user, client_id), message_id in self.acked.items():
            stored = self.store.find_by_client_id(user_key(user), client_id)
            assert stored is not None, "an acked message was lost"
            assert stored.id == message_id, "an acked message changed its id"


@pytest.mark.parametrize("seed", range(12), ids=lambda s: f"seed-{s}")
def test_random_schedules_keep_every_invariant(seed: int, tmp_path: Path) -> None:
    world = World(seed, tmp_path)
    for _ in range(150):
        world.step()
        world.check()
    # Everyone comes back at the end: each gets exactly what it should have.
    for user in USERS:
        world.connect(user)
        world.check()
        assert world.expected[user] <= world.seen[user]
