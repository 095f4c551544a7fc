"""Server conformance: what a user can rely on, checked on both servers over real sockets.

Every test runs against the trio server and the threaded server (``kind``), started in-process
on a free loopback port by ``tests.servers.running_server`` with the users alice, bob, carol and
dave. Limits are set small in each test so that the suite is fast; nothing here asserts on
timing. To show that something did *not* arrive, a test sends a later record through the same
path and checks that it is the next one to arrive ("barrier"): the servers deliver in order.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
import resource
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from sealchat.core import (
    NEED_DATA,
    Authenticated,
    Bye,
    Connection,
    ConnectionClosed,
    Delivered,
    Error,
    Event,
    FileAccept,
    FileChunk,
    FileComplete,
    FileList,
    FileOffer,
    FileReject,
    FileRequest,
    HistoryEnd,
    HistoryRequest,
    JoinRoom,
    KeysEstablished,
    LeaveRoom,
    ListFiles,
    ListReadMarkers,
    ListRooms,
    Login,
    LoginRejected,
    MemberInfo,
    Members,
    Membership,
    Message,
    MessageAck,
    OnlineUsers,
    PeerKeyReceived,
    Presence,
    ProtocolError,
    ReadMarker,
    ReadMarkers,
    ReadUpTo,
    Register,
    Role,
    RoomJoined,
    RoomLeft,
    RoomList,
    Typing,
)
from sealchat.core.hub import GENERIC_LOGIN_FAILURE, PASSWORD_CHANGED, HubConfig
from sealchat.core.hub.names import user_key
from sealchat.core.limits import MAX_CHUNK
from sealchat.core.preamble import encode_preamble
from sealchat.core.records import CHANGE_PASSWORD, READ_MARKERS, READ_REF
from sealchat.transports import blocking_client, hub_failures
from sealchat.transports.blocking_client import BlockingClient, ClientError
from sealchat.transports.folder_lock import LOCK_FILE
from sealchat.transports.passwords import CHEAP, hash_password
from sealchat.transports.requests import LoginFailed, PasswordNotChanged
from sealchat.transports.server_limits import OUTPUT_PILED_UP
from sealchat.transports.sqlite_store import SqliteStore
from tests.pairs import forge
from tests.servers import (
    FILES_OF_MEGABYTES,
    KINDS,
    PASSWORD,
    USERS,
    Running,
    free_port,
    long_name,
    running_server,
    share_empty_files,
)

TIMEOUT = 15.0
"""Upper bound for waiting on one event: only reached when something is broken."""
R = TypeVar("R")
FILE_ID = re.compile(r"[0-9a-f]{32}")
ELSEWHERE = ("127.0.0.2", 0)
"""A client's address other than 127.0.0.1 (all of 127/8 is this host)."""


# --- helpers ------------------------------------------------------------------------------


class Server:
    """A running server plus the clients a test opened on it (all closed afterwards)."""

    def __init__(self, running: Running, stack: ExitStack, data_dir: Path) -> None:
        self.running = running
        self.stack = stack
        self.lock = threading.Lock()
        self.data_dir = data_dir
        self.port = running.port
        self.hub = running.hub

    def connect(self, **options: Any) -> BlockingClient:
        """A client past the handshake, not logged in (may be called from several threads)."""
        client = self.running.client(**options)
        with self.lock:
            return self.stack.enter_context(client)

    def login(self, name: str, password: str = PASSWORD, **options: Any) -> BlockingClient:
        """A client logged in as ``name``."""
        client = self.connect(**options)
        client.login(name, password)
        return client

    def sessions(self) -> int:
        """Sessions the hub knows (handshake done, connection not yet closed)."""
        return len(self.hub._sessions)


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def serve(kind: str, tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """``serve(hub=HubConfig(...), users=..., **server_options)`` starts the server."""
    with ExitStack() as stack:

        def start(*, hub: HubConfig | None = None, **options: Any) -> Server:
            data_dir = tmp_path / "data"
            running = stack.enter_context(running_server(kind, data_dir, hub=hub, **options))
            return Server(running, stack, data_dir)

        yield start


def matching(kind: type | tuple[type, ...], **fields: Any) -> Callable[[Event], bool]:
    """A predicate: an event of ``kind`` whose ``fields`` have these values."""

    def match(event: Event) -> bool:
        return isinstance(event, kind) and all(getattr(event, k) == v for k, v in fields.items())

    return match


def until(client: BlockingClient, match: Callable[[Event], bool]) -> list[Event]:
    """The events ``client`` receives up to and including the first that ``match`` accepts."""
    deadline = time.monotonic() + TIMEOUT
    seen: list[Event] = []
    while True:
        event = client.next_event(max(0.0, deadline - time.monotonic()))
        seen.append(event)
        if match(event):
            return seen
        if isinstance(event, ConnectionClosed):
            raise AssertionError(f"the connection closed first; events: {seen}")


def last(client: BlockingClient, match: Callable[[Event], bool]) -> Any:
    """The first event that ``match`` accepts (the ones before it are dropped)."""
    return until(client, match)[-1]


def of_type(events: list[Event], kind: type[R]) -> list[R]:
    return [e for e in events if isinstance(e, kind)]


def settle(client: BlockingClient) -> list[Event]:
    """Wait until the server has handled everything ``client`` sent so far (a request's reply
    comes after the replies to everything before it); returns the events seen meanwhile."""
    client.send(ListRooms())
    return until(client, matching(RoomList))[:-1]


def next_message(client: BlockingClient) -> Message:
    return last(client, matching(Message))


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` (server state that no event reports) until it holds."""
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.01)


def say(sender: BlockingClient, receiver: BlockingClient, text: str, room: str = "general") -> None:
    """``sender`` posts ``text`` in ``room`` and ``receiver`` gets it: the chat works."""
    sender.send(Message(text=text, room=room))
    got = last(receiver, matching(Message, text=text))
    assert got.room == room


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def offer(
    client: BlockingClient, data: bytes, *, transfer: int = 1, name: str = "notes.txt", **where: Any
) -> FileAccept | FileReject:
    """Offer ``data`` for upload (to ``room=...`` or ``to=...``, default general)."""
    where = where or {"room": "general"}
    client.send(FileOffer(transfer=transfer, name=name, size=len(data), sha256=sha(data), **where))
    return last(client, matching((FileAccept, FileReject), transfer=transfer))


def send_chunks(client: BlockingClient, transfer: int, data: bytes, start: int = 0) -> None:
    for offset in range(start, len(data), MAX_CHUNK):
        client.send(
            FileChunk(transfer=transfer, offset=offset, data=data[offset : offset + MAX_CHUNK])
        )


def finish(client: BlockingClient, transfer: int, digest: bytes) -> Message | FileReject:
    """Send FileComplete; the answer is the file announcement or a FileReject."""
    client.send(FileComplete(transfer=transfer, sha256=digest))
    return last(client, lambda e: matching(FileReject, transfer=transfer)(e) or _announces(e))


def _announces(event: Event) -> bool:
    return isinstance(event, Message) and event.file is not None


def upload(client: BlockingClient, data: bytes, *, transfer: int = 1, **options: Any) -> Message:
    """Upload ``data`` whole; returns the announcement the uploader gets."""
    accept = offer(client, data, transfer=transfer, **options)
    assert isinstance(accept, FileAccept), accept
    assert accept.offset == 0
    send_chunks(client, transfer, data)
    announced = finish(client, transfer, sha(data))
    assert isinstance(announced, Message), announced
    return announced


def download(
    client: BlockingClient,
    file_id: str,
    *,
    transfer: int = 9,
    offset: int = 0,
    sizes: list[int] | None = None,
) -> tuple[FileOffer, bytes, FileComplete]:
    """Request a stored file; returns the server's FileOffer, the bytes and its FileComplete
    (and the size of each chunk in ``sizes``, if given)."""
    client.send(FileRequest(transfer=transfer, file_id=file_id, offset=offset))
    head = last(client, matching((FileOffer, FileReject), transfer=transfer))
    assert isinstance(head, FileOffer), head
    data = bytearray()
    while True:
        event = last(client, matching((FileChunk, FileComplete, FileReject), transfer=transfer))
        if isinstance(event, FileChunk):
            assert event.offset == offset + len(data)
            assert 0 < len(event.data) <= MAX_CHUNK
            data += event.data
            if sizes is not None:
                sizes.append(len(event.data))
            continue
        assert isinstance(event, FileComplete), event
        return head, bytes(data), event


def raw_handshake(port: int, sock: socket.socket | None = None) -> tuple[socket.socket, Connection]:
    """A socket and a hand-driven client Connection past the handshake (state LOGIN)."""
    if sock is None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT)
    sock.connect(("127.0.0.1", port))
    conn = Connection(Role.CLIENT, static_key=X25519PrivateKey.generate())
    conn.initiate()
    sock.sendall(conn.data_to_send())
    while True:
        event = conn.next_event()
        if event is NEED_DATA:
            conn.receive_data(sock.recv(65536))
        elif isinstance(event, PeerKeyReceived):
            conn.accept_peer()
            sock.sendall(conn.data_to_send())
        elif isinstance(event, KeysEstablished):
            return sock, conn
        else:
            raise AssertionError(f"unexpected {event!r}")


def raw_next(sock: socket.socket, conn: Connection) -> Event:
    """The next event on a hand-driven connection, reading as needed."""
    while True:
        event = conn.next_event()
        if event is not NEED_DATA:
            return event
        conn.receive_data(sock.recv(65536))


def raw_events(sock: socket.socket, conn: Connection) -> list[Event]:
    """Everything the server sends on a hand-driven connection until it ends."""
    events: list[Event] = []
    while True:
        try:
            event = conn.next_event()
        except ProtocolError:
            return events
        if event is NEED_DATA:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                data = b""
            conn.receive_data(data)
            continue
        events.append(event)
        if isinstance(event, ConnectionClosed):
            return events


def read_to_eof(sock: socket.socket) -> bytes:
    """All bytes until the server closes the connection."""
    data = bytearray()
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return bytes(data)
        if not chunk:
            return bytes(data)
        data += chunk


def logged(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return any(text in r.getMessage() for r in caplog.records)


# --- 1. login -----------------------------------------------------------------------------


def test_the_right_password_logs_in_with_the_canonical_name(serve: Callable[..., Server]) -> None:
    server = serve()
    assert server.connect().login("ALICE", PASSWORD) == "alice"


def test_wrong_password_and_unknown_user_get_the_same_rejection(
    serve: Callable[..., Server],
) -> None:
    server = serve()
    client = server.connect()
    client.send(Login(username="alice", password="not the password"))
    wrong_password = client.next(LoginRejected)
    client.send(Login(username="nobody", password=PASSWORD))
    unknown_user = client.next(LoginRejected)
    assert wrong_password == unknown_user == LoginRejected(reason=GENERIC_LOGIN_FAILURE)
    assert client.login("alice", PASSWORD) == "alice"  # the connection stays usable


def test_a_login_sent_behind_another_finds_it_in_progress(serve: Callable[..., Server]) -> None:
    """A client that sends Logins without waiting for the answers, as 6.6.1 forbids (ours
    refuses to: they are forged here)."""
    server = serve()
    sock, conn = raw_handshake(server.port)
    with sock:
        guesses = [Login(username="alice", password=f"guess {n}") for n in range(5)]
        for login in [*guesses, Login(username="alice", password=PASSWORD)]:
            forge(conn, msgspec.msgpack.encode(login))
        sock.sendall(conn.data_to_send())  # one write
        answers = [raw_next(sock, conn) for _ in range(6)]
        # One password check, as if each came alone after the one before: not six in a row.
        assert all(isinstance(answer, LoginRejected) for answer in answers)
        reasons = [answer.reason for answer in answers if isinstance(answer, LoginRejected)]
        assert reasons == ["a login is already in progress"] * 5 + [GENERIC_LOGIN_FAILURE]
        conn.send(Login(username="alice", password=PASSWORD))
        sock.sendall(conn.data_to_send())
        authenticated = raw_next(sock, conn)
        assert isinstance(authenticated, Authenticated)
        assert authenticated.username == "alice"


BACKOFF = HubConfig(free_login_failures=3, login_backoff_base=60.0)


def _refused_for_too_many_failures(client: BlockingClient, name: str) -> LoginRejected:
    client.send(Login(username=name, password=PASSWORD))
    rejected = client.next(LoginRejected)
    assert "too many failed attempts" in rejected.reason
    assert rejected.retry_after > 0
    return rejected


def test_failed_logins_for_one_user_block_that_user(serve: Callable[..., Server]) -> None:
    server = serve(hub=BACKOFF)
    for n in range(BACKOFF.free_login_failures):  # each from its own address
        client = server.connect(source_address=(f"127.0.0.{n + 2}", 0))
        client.send(Login(username="alice", password="wrong"))
        assert client.next(LoginRejected).reason == GENERIC_LOGIN_FAILURE
    _refused_for_too_many_failures(server.connect(), "alice")
    assert server.connect().login("bob", PASSWORD) == "bob"  # the address is not blocked


def test_failed_logins_from_one_address_block_that_address(serve: Callable[..., Server]) -> None:
    server = serve(hub=BACKOFF)
    hostile = server.connect(source_address=("127.0.0.9", 0))
    for n in range(BACKOFF.free_login_failures):  # each for another (unknown) user
        hostile.send(Login(username=f"guess{n}", password="wrong"))
        assert hostile.next(LoginRejected).reason == GENERIC_LOGIN_FAILURE
    _refused_for_too_many_failures(hostile, "bob")
    elsewhere = server.connect(source_address=("127.0.0.9", 0))
    _refused_for_too_many_failures(elsewhere, "bob")
    assert server.connect().login("bob", PASSWORD) == "bob"  # other addresses are not blocked


def test_the_failure_that_starts_a_block_says_when_to_retry(serve: Callable[..., Server]) -> None:
    server = serve(hub=BACKOFF)
    client = server.connect()
    for _ in range(BACKOFF.free_login_failures - 1):
        client.send(Login(username="alice", password="wrong"))
        assert client.next(LoginRejected).retry_after == 0
    client.send(Login(username="alice", password="wrong"))
    rejected = client.next(LoginRejected)
    assert rejected.reason == GENERIC_LOGIN_FAILURE
    assert rejected.retry_after > 0


def test_logins_from_one_address_are_throttled_even_when_they_succeed(
    serve: Callable[..., Server],
) -> None:
    server = serve(hub=HubConfig(address_login_burst=2, address_logins_per_minute=1))
    server.login("alice")
    server.login("bob")
    client = server.connect()
    client.send(Login(username="carol", password=PASSWORD))
    refused = client.next(LoginRejected)
    assert re.fullmatch(r"too many logins from your address; try again in \d+ s", refused.reason)
    assert 0 < refused.retry_after <= 60
    assert server.login("carol", source_address=ELSEWHERE)  # elsewhere: no wait


def test_registrations_from_one_address_are_throttled(serve: Callable[..., Server]) -> None:
    server = serve(hub=HubConfig(open_registration=True, registration_burst=1))
    assert server.connect().login("erin", "a long password", register=True) == "erin"
    client = server.connect()
    client.send(Register(username="frank", password="a long password"))
    refused = client.next(LoginRejected)
    assert refused.reason.startswith("too many new accounts from your address; try again in")
    assert refused.retry_after > 0
    assert client.login("erin", "a long password") == "erin"  # logging in is not registering


def test_registration_is_refused_when_closed(serve: Callable[..., Server]) -> None:
    server = serve()
    client = server.connect()
    client.send(Register(username="erin", password="a long password"))
    assert "registration is closed" in client.next(LoginRejected).reason
    client.send(Login(username="erin", password="a long password"))
    assert client.next(LoginRejected).reason == GENERIC_LOGIN_FAILURE


def test_open_registration_creates_an_account(serve: Callable[..., Server]) -> None:
    server = serve(hub=HubConfig(open_registration=True))
    assert server.connect().login("Erin", "a long password", register=True) == "Erin"
    assert server.connect().login("erin", "a long password") == "Erin"


def test_registration_of_a_taken_name_is_refused(serve: Callable[..., Server]) -> None:
    server = serve(hub=HubConfig(open_registration=True))
    client = server.connect()
    client.send(Register(username="ALICE", password="a long password"))
    assert "taken" in client.next(LoginRejected).reason
    assert client.login("alice", PASSWORD) == "alice"  # the account is untouched


# --- 1b. password changes -----------------------------------------------------------------

NEW_PASSWORD = "a brand new password"


def test_a_user_changes_its_password_and_its_other_sessions_end(
    serve: Callable[..., Server],
) -> None:
    server = serve()
    alice, carol, other = server.login("alice"), server.login("carol"), server.login("carol")
    assert CHANGE_PASSWORD in carol.features
    carol.change_password(PASSWORD, NEW_PASSWORD)
    (*_, closed) = until(other, matching(ConnectionClosed))
    assert isinstance(closed, ConnectionClosed)
    assert closed.reason == PASSWORD_CHANGED
    say(carol, alice, "still logged in")  # the session that changed it stays
    with pytest.raises(LoginFailed):
        server.login("carol")
    assert server.connect().login("carol", NEW_PASSWORD) == "carol"


def test_a_wrong_old_password_is_refused_and_counts_as_a_failed_login(
    serve: Callable[..., Server],
) -> None:
    server = serve(hub=BACKOFF)
    carol = server.login("carol")
    for _ in range(BACKOFF.free_login_failures):
        with pytest.raises(PasswordNotChanged) as refused:
            carol.change_password("not the password", NEW_PASSWORD)
        assert refused.value.code == "wrong_password"
    with pytest.raises(PasswordNotChanged) as refused:
        carol.change_password(PASSWORD, NEW_PASSWORD)  # the right one, but blocked now
    assert refused.value.code == "rate_limited"
    assert "too many failed attempts" in str(refused.value)
    _refused_for_too_many_failures(server.connect(), "carol")  # logins from there too


def test_a_new_password_too_short_is_refused(serve: Callable[..., Server]) -> None:
    server = serve()
    carol, other = server.login("carol"), server.login("carol")
    with pytest.raises(PasswordNotChanged, match="at least 8 characters") as refused:
        carol.change_password(PASSWORD, "short")
    assert refused.value.code == "bad_password"
    say(other, carol, "nobody was logged out")
    assert server.connect().login("carol", PASSWORD) == "carol"


# --- 2. rooms -----------------------------------------------------------------------------


def test_joining_a_room_creates_it(serve: Callable[..., Server]) -> None:
    server = serve()
    alice = server.login("alice")
    alice.send(JoinRoom(room="lounge"))
    assert alice.next(RoomJoined) == RoomJoined(room="lounge")
    assert alice.next(Members) == Members(
        room="lounge", members=[MemberInfo(name="alice", online=True)]
    )
    alice.send(ListRooms())
    rooms = {r.name: r for r in alice.next(RoomList).rooms}
    assert rooms["lounge"].members == 1
    assert rooms["lounge"].joined


def test_members_are_listed_with_their_presence(serve: Callable[..., Server]) -> None:
    server = serve()
    carol = server.login("carol")
    carol.send(JoinRoom(room="lounge"))
    carol.next(Members)
    carol.close()
    wait_until(lambda: not server.hub.is_online("carol"), "carol is offline")
    alice = server.login("alice")
    alice.send(JoinRoom(room="lounge"))
    assert alice.next(Members).members == [
        MemberInfo(name="alice", online=True),
        MemberInfo(name="carol", online=False),
    ]
    bob = server.login("bob")
    bob.send(JoinRoom(room="lounge"))
    joined = last(alice, matching(Membership, room="lounge"))
    assert (joined.user, joined.joined) == ("bob", True)
    assert bob.next(Members).members == [
        MemberInfo(name="alice", online=True),
        MemberInfo(name="bob", online=True),
        MemberInfo(name="carol", online=False),
    ]


def test_a_room_message_reaches_every_member_and_only_them(serve: Callable[..., Server]) -> None:
    server = serve()
    alice, alice_again, bob, carol = (server.login(n) for n in ("alice", "alice", "bob", "carol"))
    for member in (alice, bob):
        member.send(JoinRoom(room="lounge"))
        member.next(Members)
    alice.send(Message(text="hello lounge", room="lounge", client_id="m1"))
    ack = alice.next(MessageAck)
    for member in (alice_again, bob):
        got = next_message(member)
        assert (got.text, got.room, got.sender, got.id) == (
            "hello lounge",
            "lounge",
            "alice",
            ack.id,
        )
    alice.send(Message(text="barrier", to="carol", client_id="b1"))
    assert next_message(carol).text == "barrier"  # the lounge message never came
    alice.send(Message(text="barrier", room="general", client_id="b2"))
    assert next_message(alice_again).text == "barrier"
    assert not of_type(settle(alice), Message)  # the sender's own session gets only the ack
    alice.send(Message(text="no id", room="general"))
    assert next_message(alice).text == "no id"  # nothing to acknowledge: the message itself


def test_leaving_a_room_stops_its_messages(serve: Callable[..., Server]) -> None:
    server = serve()
    alice, bob = server.login("alice"), server.login("bob")
    for member in (alice, bob):
        member.send(JoinRoom(room="lounge"))
        member.next(Members)
    bob.send(LeaveRoom(room="lounge"))
    assert bob.next(RoomLeft) == RoomLeft(room="lounge")
    left = last(alice, matching(Membership, room="lounge", joined=False))
    assert left.user == "bob"
    alice.send(Message(text="still here?", room="lounge"))
    alice.send(Message(text="barrier", to="bob"))
    assert next_message(bob).text == "barrier"
    bob.send(Message(text="let me in", room="lounge", client_id="b1"))
    assert bob.next(Error) == Error(code="not_member", detail="join lounge first", ref="b1")


def test_the_default_room_cannot_be_left(serve: Callable[..., Server]) -> None:
    server = serve()
    alice = server.login("alice")
    alice.send(LeaveRoom(room="general"))
    error = alice.next(Error)
    assert (error.code, error.ref) == ("cannot_leave", "general")
    alice.send(Message(text="still in general", room="general", client_id="g"))
    assert alice.next(MessageAck).client_id == "g"


def test_bad_room_names_are_refused(serve: Callable[..., Server]) -> None:
    server = serve()
    alice = server.login("alice")
    for room in ("", "Lounge", "../etc", "a b", "-dash", "caf\u00e9", "x" * 63 + "/"):
        alice.send(JoinRoom(room=room))
        assert alice.next(Error).code == "bad_room", room
    alice.send(ListRooms())
    assert [r.name for r in alice.next(RoomList).rooms] == ["general"]


def test_a_user_can_be_in_at_most_max_rooms_per_user(serve: Callable[..., Server]) -> None:
    server = serve(hub=HubConfig(max_rooms_per_user=3))
    alice = server.login("alice")
    for room in ("one", "two"):  # with general, three
        alice.send(JoinRoom(room=room))
        alice.next(RoomJoined)
    alice.send(JoinRoom(room="three"))
    error = alice.next(Error)
    assert (error.code, error.ref) == ("too_many_rooms", "three")
    alice.send(LeaveRoom(room="one"))
    alice.next(RoomLeft)
    alice.send(JoinRoom(room="three"))
    assert alice.next(RoomJoined) == RoomJoined(room="three")


# --- 3. direct messages -------------------------------------------------------------------


def test_a_direct_message_reaches_the_recipient_and_the_senders_other_sessions(
    serve: Callable[..., Server],
) -> None:
    server = serve()
    alice, alice_again, bob, carol = (server.login(n) for n in ("alice", "alice", "bob", "carol"))
    alice.send(Message(text="psst", to="BOB", client_id="d1"))
    ack = alice.next(MessageAck)
    for receiver in (bob, alice_again):
        got = next_message(receiver)
        assert (got.text, got.to, got.room, got.sender, got.id) == (
            "psst",
            "bob",
            "",
            "alice",
            ack.id,
        )
    alice.send(Message(text="barrier", room="general"))
    assert next_message(carol).text == "barrier"


def test_a_direct_message_to_an_unknown_user_is_an_error(serve: Callable[..., Server]) -> None:
    server = serve()
    alice = server.login("alice")
    alice.send(Message(text="hello?", to="nobody", client_id="d2"))
    error = alice.next(Error)
    assert (error.code, error.ref) == ("no_such_user", "d2")


# --- 4. presence --------------------------------------------------------------------------


def test_coming_online_and_going_offline_is_announced(serve: Callable[..., Server]) -> None:
    server = serve()
    alice = server.login("alice")
    carol = server.login("carol")
    assert alice.next(Presence) == Presence(user="carol", online=True)
    carol.close()
    assert alice.next(Presence) == Presence(user="carol", online=False)


def test_a_user_with_two_sessions_is_online_once(serve: Callable[..., Server]) -> None:
    server = serve()
    alice = server.login("alice")
    carol = server.login("carol")
    assert alice.next(Presence) == Presence(user="carol", online=True)
    carol_again = server.login("carol")
    carol_again.send(Message(text="second session", room="general"))
    assert not of_type(until(alice, matching(Message, text="second session")), Presence)
    carol.close()
    wait_until(lambda: server.sessions() == 2, "the first session is closed")
    carol_again.send(Message(text="still here", room="general"))
    before = until(alice, matching(Message, text="still here"))
    assert not of_type(before, Presence)  # neither a second "online" nor an early "offline"
    carol_again.close()
    assert alice.next(Presence) == Presence(user="carol", online=False)


def test_online_users_are_listed_after_login(serve: Callable[..., Server]) -> None:
    server = serve()
    server.login("alice")
    server.login("bob")
    carol = server.login("carol")
    assert carol.next(OnlineUsers) == OnlineUsers(users=["alice", "bob", "carol"])


# --- 5. typing ----------------------------------------------------------------------------


def test_typing_is_relayed_to_others_with_the_user_set(serve: Callable[..., Server]) -> None:
    server = serve()
    alice, bob = server.login("alice"), server.login("bob")
    alice.send(Typing(room="general", active=True))
    assert bob.next(Typing) == Typing(room="general", user="alice", active=True)
    alice.send(Typing(room="general", active=False))
    assert bob.next(Typing) == Typing(room="general", user="alice", active=False)
    alice.send(Typing(to="bob", active=True))
    assert bob.next(Typing) == Typing(to="bob", user="alice", active=True)
    assert not of_type(settle(alice), Typing)  # never echoed to the typist


def test_typing_expires_without_a_refresh(serve: Callable[..., Server]) -> None:
    server = serve(hub=HubConfig(typing_expiry=0.3))
    alice, bob = server.login("alice"), server.login("bob")
    alice.send(Typing(room="general", active=True))
    assert bob.next(Typing).active
    assert bob.next(Typing) == Typing(room="general", user="alice", active=False)


def test_typing_stops_when_the_typist_goes_offline(serve: Callable[..., Server]) -> None:
    server = serve()
    alice, bob = server.login("alice"), server.login("bob")
    alice.send(Typing(room="general", active=True))
    assert bob.next(Typing).active
    alice.close()
    assert bob.next(Typing) == Typing(room="general", user="alice", active=False)


# --- 5b. read markers ---------------------------------------------------------------------


def test_a_users_read_marker_reaches_its_other_devices_and_its_next_login(
    serve: Callable[..., Server],
) -> None:
    server = serve()
    laptop, desktop, bob = server.login("alice"), server.login("alice"), server.login("bob")
    assert READ_MARKERS in laptop.features
    # Each client's login sent ListReadMarkers: the listing comes, and later ReadUpTo.
    assert desktop.next(ReadMarkers) == ReadMarkers(markers=[])
    assert bob.next(ReadMarkers) == ReadMarkers(markers=[])
    ack = bob.send_message("hi alice", to="alice")
    laptop.send(ReadUpTo(up_to=ack.id, peer="bob"))
    assert desktop.next(ReadUpTo) == ReadUpTo(up_to=ack.id, peer="bob")
    laptop.send(ReadUpTo(up_to=ack.id - 1, peer="bob"))  # lower: kept as it is, told nobody
    laptop.send(ReadUpTo(up_to=ack.id, room="random"))  # not a room of hers
    refusal = last(laptop, matching(Error))
    assert (refusal.code, refusal.ref) == ("not_member", READ_REF)
    assert not of_type(settle(desktop), ReadUpTo)
    assert not of_type(settle(bob), (ReadUpTo, ReadMarkers))  # her markers are hers
    phone = server.login("alice")
    assert phone.next(ReadMarkers) == ReadMarkers(markers=[ReadMarker(up_to=ack.id, peer="bob")])
    phone.send(ListReadMarkers())  # asked again: the same listing
    assert phone.next(ReadMarkers) == ReadMarkers(markers=[ReadMarker(up_to=ack.id, peer="bob")])


# --- 6. history and offline delivery ------------------------------------------------------


def _go_offline(server: Server, client: BlockingClient, name: str) -> None:
    client.close()
    wait_until(lambda: not server.hub.is_online(name), f"{name} is offline")


def _post(client: BlockingClient, texts: list[str], room: str = "general") -> list[int]:
    """Post ``texts``; returns their ids from the acknowledgements."""
    ids = []
    for n, text in enumerate(texts):
        client.send(Message(text=text, room=room, client_id=f"{room}-{n}-{text}"))
        ids.append(client.next(MessageAck).id)
    return ids


def _while_bob_is_away(server: Server, texts: list[str]) -> tuple[BlockingClient, list[int]]:
    """alice (returned, logged in) posts ``texts`` to general while bob, a member, is
    offline; returns her client and the messages' ids."""
    alice = server.login("alice")
    _go_offline(server, server.login("bob"), "bob")
    return alice, _post(alice, texts)


def _replay(client: BlockingClient) -> tuple[list[Message], HistoryEnd]:
    events = until(client, matching(HistoryEnd, room="", peer=""))
    return of_type(events, Message), events[-1]


def test_messages_missed_while_offline_are_replayed_after_login(
    serve: Callable[..., Server],
) -> None:
    server = serve()
    alice, ids = _while_bob_is_away(server, ["one", "two"])
    alice.send(Message(text="three", to="bob", client_id="dm"))
    ids.append(alice.next(MessageAck).id)
    bob = server.login("bob")
    missed, end = _replay(bob)
    assert [(m.id, m.text, m.sender, m.room, m.to) for m in missed] == [
        (ids[0], "one", "alice", "general", ""),
        (ids[1], "two", "alice", "general", ""),
        (ids[2], "three", "alice", "", "bob"),
    ]
    assert not end.more


def test_delivered_messages_are_not_replayed_again(serve: Callable[..., Server]) -> None:
    server = serve()
    alice, ids = _while_bob_is_away(server, ["one", "two"])
    bob = server.login("bob")
    assert [m.id for m in _replay(bob)[0]] == ids
    bob.send(Delivered(up_to=ids[-1]))
    settle(bob)
    _go_offline(server, bob, "bob")
    later = _post(alice, ["three"])
    bob = server.login("bob")
    assert [m.id for m in _replay(bob)[0]] == later


def test_a_client_that_does_not_acknowledge_leaves_messages_unread(
    serve: Callable[..., Server],
) -> None:
    # A script that only sends shows nothing: what reaches it stays unread for bob.
    server = serve()
    alice, ids = _while_bob_is_away(server, ["one", "two"])
    script = server.login("bob", acknowledge=False)
    assert [m.id for m in _replay(script)[0]] == ids
    ids += _post(alice, ["three"])
    until(script, matching(Message, text="three"))
    _go_offline(server, script, "bob")
    bob = server.login("bob")
    assert [m.id for m in _replay(bob)[0]] == ids


def test_history_requests_page_back(serve: Callable[..., Server]) -> None:
    server = serve()
    alice = server.login("alice")
    alice.send(JoinRoom(room="lounge"))
    alice.next(Members)
    ids = _post(alice, ["m1", "m2", "m3", "m4", "m5"], room="lounge")
    pages = []
    before = 0
    while True:
        alice.send(HistoryRequest(room="lounge", before=before, limit=2))
        events = until(alice, matching(HistoryEnd, room="lounge"))
        page = of_type(events, Message)
        pages.append(([m.text for m in page], events[-1].more))
        if not events[-1].more:
            break
        before = page[0].id
    assert pages == [(["m4", "m5"], True), (["m2", "m3"], True), (["m1"], False)]
    alice.send(HistoryRequest(room="lounge", before=ids[2], limit=50))
    events = until(alice, matching(HistoryEnd, room="lounge"))
    assert [m.id for m in of_type(events, Message)] == ids[:2]


def test_a_resend_with_the_same_client_id_is_acknowledged_once_and_not_repeated(
    serve: Callable[..., Server],
) -> None:
    server = serve()
    alice, bob = server.login("alice"), server.login("bob")
    alice.send(Message(text="once", room="general", client_id="same"))
    first = alice.next(MessageAck)
    assert next_message(bob).text == "once"
    alice.close()  # a reconnect, then the resend
    alice = server.login("alice")
    alice.send(Message(text="once", room="general", client_id="same"))
    again = alice.next(MessageAck)
    assert (again.client_id, again.id, again.ts) == ("same", first.id, first.ts)
    alice.send(Message(text="barrier", room="general"))
    assert next_message(bob).text == "barrier"


def test_missed_messages_come_in_pages_released_by_delivered(
    serve: Callable[..., Server],
) -> None:
    server = serve(hub=HubConfig(replay_page=3))
    alice = server.login("alice")
    _go_offline(server, server.login("bob"), "bob")
    ids = _post(alice, [f"m{n}" for n in range(7)])
    bob = server.login("bob")
    pages = []
    while True:
        missed, end = _replay(bob)
        pages.append(([m.id for m in missed], end.more))
        if not end.more:
            break
        bob.send(Delivered(up_to=missed[-1].id))
    assert pages == [(ids[0:3], True), (ids[3:6], True), (ids[6:], False)]


@pytest.fixture
def eager_thread_switching() -> Iterator[None]:
    """Switch threads far more often than usual, so that races show up."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(before)


@contextmanager
def posting_continuously(client: BlockingClient) -> Iterator[None]:
    """``client`` posts to general from another thread for the duration of the block."""
    stop = threading.Event()

    def post() -> None:
        n = 0
        while not stop.is_set():
            client.send(Message(text=f"m{n}", room="general", client_id=f"m{n}"))
            n += 1
            if n % 10 == 0:  # keep the pace the server sets
                last(client, matching(MessageAck, client_id=f"m{n - 1}"))

    poster = threading.Thread(target=post)
    poster.start()
    try:
        yield
    finally:
        stop.set()
        poster.join()


@pytest.mark.usefixtures("eager_thread_switching")
def test_messages_posted_during_a_login_arrive_once_each_and_in_order(
    serve: Callable[..., Server],
) -> None:
    """The replay after login and the live messages meet with no gap, repeat or reordering."""
    server = serve(
        hub=HubConfig(
            messages_per_second=1e6,
            message_burst=1_000_000,
            replay_page=100_000,
            user_login_burst=21,  # bob logs in 21 times
        )
    )
    alice = server.login("alice")
    _go_offline(server, server.login("bob"), "bob")
    with posting_continuously(alice):
        for _ in range(20):
            bob = server.login("bob")
            ids = [m.id for m in _replay(bob)[0]] + [next_message(bob).id for _ in range(20)]
            assert ids == list(range(ids[0], ids[0] + len(ids)))
            bob.send(Delivered(up_to=ids[-1]))
            settle(bob)
            _go_offline(server, bob, "bob")


def test_a_failing_timer_tick_loses_that_tick_only(
    serve: Callable[..., Server],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The store fails once under the timers (another process held the database too long):
    # that tick is lost, not the server (trio) or its timers (threads). The next ticks still
    # log out an idle session whose password is changed meanwhile.
    caplog.set_level(logging.ERROR, logger="sealchat.server")
    server = serve()
    store = server.hub.store
    real = store.password_generations
    failed = threading.Event()

    def locked_once(keys: Any) -> Any:
        if not failed.is_set():
            failed.set()
            raise sqlite3.OperationalError("database is locked")
        return real(keys)

    monkeypatch.setattr(store, "password_generations", locked_once)
    assert failed.wait(TIMEOUT)  # no client yet: only the timers ask the hub
    wait_until(lambda: logged(caplog, "the hub's timers failed"), "the failure is logged")
    carol = server.login("carol")
    with SqliteStore(server.data_dir, beside_server=True) as admin:
        new_hash = hash_password("a brand new password", params=CHEAP)
        assert admin.set_password(user_key("carol"), new_hash)
    (*_, closed) = until(carol, matching(ConnectionClosed))
    assert isinstance(closed, ConnectionClosed)
    assert closed.reason == PASSWORD_CHANGED


def _locked(*_args: object) -> Any:
    raise sqlite3.OperationalError("database is locked")


def _logged_with_traceback(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return any(text in r.getMessage() and r.exc_info for r in caplog.records)


def _disk_full(*_args: object, **_kwargs: object) -> Any:
    """What SQLite raises when the disk is full (SQLITE_FULL), as a store's write would."""
    db = sqlite3.connect(":memory:")
    try:
        db.execute("PRAGMA max_page_count = 1")
        db.execute("CREATE TABLE t (x)")  # needs a second page
    finally:
        db.close()
    raise AssertionError("SQLite found room")


def test_a_full_disk_is_named_to_the_users_it_fails_and_logged_once(
    serve: Callable[..., Server],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The data folder's disk is full: every write fails until the operator frees space. Each
    # user whose message was not stored is told so and what to do (not "please reconnect",
    # which their client does at once, to fail again); the log says it in one line, not a
    # traceback per message that fills the disk further; once space is freed, all is well.
    caplog.set_level(logging.ERROR, logger="sealchat.server")
    server = serve()
    alice, bob = server.login("alice"), server.login("bob")
    monkeypatch.setattr(server.hub.store, "append_message", _disk_full)
    for name in ("carol", "dave"):
        client = server.login(name)
        client.send(Message(text="not stored", room="general"))
        assert last(client, matching(Bye)).reason == hub_failures.DISK_FULL
    assert "freed some space" in hub_failures.DISK_FULL
    full = [r for r in caplog.records if "disk of the data folder is full" in r.getMessage()]
    assert len(full) == 1
    assert not any(r.exc_info for r in caplog.records)
    monkeypatch.undo()
    say(alice, bob, "space again")


@pytest.mark.parametrize("register", [False, True], ids=["login", "registration"])
def test_a_store_failing_after_a_password_check_costs_that_connection_only(
    serve: Callable[..., Server],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    register: bool,
) -> None:
    # The store fails ("database is locked" past its busy timeout, a full disk) as a checked
    # password is acted on: that connection is told to reconnect, the failure is logged with
    # its traceback, and the server and everyone on it carry on; the next try goes through.
    caplog.set_level(logging.ERROR, logger="sealchat.server")
    server = serve(hub=HubConfig(open_registration=True))
    alice, bob = server.login("alice"), server.login("bob")
    store = server.hub.store
    name, method = ("erin", "add_user") if register else ("carol", "get_cursor")
    real = getattr(store, method)
    failed = threading.Event()

    def locked_once(*args: Any) -> Any:
        if user_key(name) in args and not failed.is_set():
            failed.set()
            _locked()
        return real(*args)

    monkeypatch.setattr(store, method, locked_once)
    sock, conn = raw_handshake(server.port)
    with sock:
        conn.send((Register if register else Login)(username=name, password=PASSWORD))
        sock.sendall(conn.data_to_send())
        events = raw_events(sock, conn)
    assert failed.is_set()
    assert not of_type(events, Authenticated)
    assert [bye.reason for bye in of_type(events, Bye)] == [
        "the server failed on your request; please reconnect"
    ]
    assert _logged_with_traceback(caplog, "the hub failed on")
    say(alice, bob, "still here")
    assert server.connect().login(name, PASSWORD, register=register) == name


def test_a_store_failing_as_a_session_closes_still_tells_its_room_mates(
    serve: Callable[..., Server],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # alice leaves in the middle of an upload and the store fails to let go of it: her
    # room-mates still see her go offline, the server carries on, her upload resumes later.
    caplog.set_level(logging.ERROR, logger="sealchat.server")
    server = serve()
    alice, bob = server.login("alice"), server.login("bob")
    data = payload(100_000, seed=5)
    assert isinstance(offer(alice, data), FileAccept)
    send_chunks(alice, 1, data[:MAX_CHUNK])
    settle(alice)
    monkeypatch.setattr(server.hub.store, "release_upload", _locked)
    alice.close()
    last(bob, matching(Presence, user="alice", online=False))
    wait_until(
        lambda: _logged_with_traceback(caplog, "the hub failed on closing the session of"),
        "the failure is logged",
    )
    monkeypatch.undo()
    again = server.login("alice")
    resumed = offer(again, data)
    assert isinstance(resumed, FileAccept)
    assert resumed.offset == MAX_CHUNK
    say(again, bob, "back")


def test_a_store_failing_a_download_rejects_that_download_only(
    serve: Callable[..., Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = serve()
    alice, bob = server.login("alice"), server.login("bob")
    data = payload(100_000, seed=6)
    file = upload(alice, data).file
    assert file is not None
    monkeypatch.setattr(server.hub.store, "read_chunk", _locked)
    bob.send(FileRequest(transfer=9, file_id=file.file_id))
    rejected = last(bob, matching(FileReject, transfer=9))
    assert rejected.reason == "the server could not read the file"
    monkeypatch.undo()
    say(bob, alice, "still here")
    assert download(bob, file.file_id, transfer=10)[1] == data


def test_a_bug_in_one_connection_closes_that_connection_only(
    serve: Callable[..., Server],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The last line of defence: whatever one connection's tasks (trio) or threads raise is
    # logged with its traceback and closes that connection; the server never stops for it.
    caplog.set_level(logging.ERROR, logger="sealchat.server")
    server = serve()
    alice, bob = server.login("alice"), server.login("bob")
    real = server.hub.open_session
    failed = threading.Event()

    def buggy(*args: Any) -> None:
        if not failed.is_set():
            failed.set()
            raise RuntimeError("a bug")
        real(*args)

    monkeypatch.setattr(server.hub, "open_session", buggy)
    sock, conn = raw_handshake(server.port)
    with sock:
        (closed,) = raw_events(sock, conn)
    assert isinstance(closed, ConnectionClosed)
    assert _logged_with_traceback(caplog, "failed; closing it")
    say(alice, bob, "still here")
    assert server.login("carol")


# --- 7. persistence across a crash --------------------------------------------------------


class CliServer:
    """``python -m sealchat server --demo`` in a subprocess, its log in a file."""

    def __init__(self, data_dir: Path, port: int, log: Path, *, threads: bool) -> None:
        self.port = port
        self.log = log
        args = [sys.executable, "-m", "sealchat", "server", "--port", str(port)]
        args += ["--data-dir", str(data_dir), "--demo"] + (["--threads"] if threads else [])
        with log.open("wb") as out:
            self.process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        self.fingerprint = self._wait_until_serving()

    def _wait_until_serving(self) -> str:
        deadline = time.monotonic() + 30
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"the server exited:\n{self.log.read_text()}")
            found = re.search(r"server key fingerprint (SHA256:\S+)", self.log.read_text())
            if found:
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                except OSError:
                    pass
                else:
                    return found.group(1)
            if time.monotonic() > deadline:
                raise AssertionError(f"the server did not start:\n{self.log.read_text()}")
            time.sleep(0.05)

    def login(self, stack: ExitStack) -> BlockingClient:
        expected = self.fingerprint
        client = stack.enter_context(
            BlockingClient("127.0.0.1", self.port, trust=lambda e: e.fingerprint == expected)
        )
        assert client.login("esha", "esha123") == "esha"
        return client

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)


@pytest.mark.parametrize("threads", [False, True], ids=["trio", "threads"])
def test_acknowledged_messages_survive_a_sigkill(tmp_path: Path, threads: bool) -> None:
    data_dir = tmp_path / "data"
    port = free_port()
    texts = [f"persist {n}" for n in range(5)]
    with ExitStack() as stack:
        first = CliServer(data_dir, port, tmp_path / "first.log", threads=threads)
        stack.callback(first.kill)
        esha = first.login(stack)
        acked = _post(esha, texts)
        first.kill()
        second = CliServer(data_dir, port, tmp_path / "second.log", threads=threads)
        stack.callback(second.kill)
        assert second.fingerprint == first.fingerprint
        esha = second.login(stack)
        expected = list(zip(acked, texts, ["esha"] * len(texts), strict=True))
        missed, _ = _replay(esha)  # never marked delivered: replayed after login
        assert [(m.id, m.text, m.sender) for m in missed] == expected
        esha.send(HistoryRequest(room="general", limit=50))
        history = of_type(until(esha, matching(HistoryEnd, room="general")), Message)
        assert [(m.id, m.text, m.sender) for m in history] == expected
    key_mode = stat.S_IMODE((data_dir / "server_key").stat().st_mode)
    assert key_mode == 0o600


# --- 8. files -----------------------------------------------------------------------------


def test_an_uploaded_file_is_announced_to_room_members(serve: Callable[..., Server]) -> None:
    server = serve()
    alice, bob = server.login("alice"), server.login("bob")
    data = payload(150_000)
    mine = upload(alice, data, name="photo.jpg")
    theirs = last(bob, _announces)
    for announcement in (mine, theirs):
        assert (announcement.sender, announcement.room) == ("alice", "general")
        assert announcement.file is not None
        assert (announcement.file.name, announcement.file.size) == ("photo.jpg", len(data))
        assert announcement.file.sha256 == sha(data)
    assert mine.id == theirs.id
    assert mine.file == theirs.file


def test_a_stored_file_downloads_intact(serve: Callable[..., Server]) -> None:
    server = serve()
    alice, bob = server.login("alice"), server.login("bob")
    data = payload(200_000, seed=1)
    file = upload(alice, data).file
    assert file is not None
    head, got, end = download(bob, file.file_id)
    assert (head.name, head.size, head.sha256, head.file_id, head.offset) == (
        "notes.txt",
        len(data),
        sha(data),
        file.file_id,
        0,
    )
    assert sha(got) == end.sha256 == sha(data)
    assert got == data


def test_a_download_can_start_at_an_offset(serve: Callable[..., Server]) -> None:
    server = serve()
    alice, bob = server.login("alice"), server.login("bob")
    data = payload(200_000, seed=2)
    file = upload(alice, data).file
    assert file is not None
    head, got, end = download(bob, file.file_id, offset=123_457)
    assert head.offset == 123_457
    assert got == data[123_457:]
    assert end.sha256 == sha(data)


@pytest.mark.parametrize("window", [None, 100_000], ids=["default-window", "small-window"])
@pytest.mark.parametrize("offset", [0, 5 * MAX_CHUNK + 777])
def test_a_file_larger_than_one_disk_read_downloads_in_whole_chunks(
    serve: Callable[..., Server],
    monkeypatch: pytest.MonkeyPatch,
    window: int | None,
    offset: int,
) -> None:
    # The server reads up to 16 whole chunks per turn with the hub (as many as the window has
    # room for; one with a window that small) and sends them as chunks of MAX_CHUNK: only
    # the last may be shorter.
    server = serve(**({} if window is None else {"stream_window": window}))
    alice, bob = server.login("alice"), server.login("bob")
    data = payload(2 * 16 * MAX_CHUNK + 12_345, seed=4)
    file = upload(alice, data).file
    assert file is not None
    store = server.hub.store
    reads: list[int] = []
    real_read = store.read_chunk

    def counted(file_id: str, at: int, size: int) -> bytes:
        reads.append(size)
        return real_read(file_id, at, size)

    monkeypatch.setattr(store, "read_chunk", counted)
    sizes: list[int] = []
    head, got, end = download(bob, file.file_id, offset=offset, sizes=sizes)
    assert head.offset == offset
    assert got == data[offset:]
    assert end.sha256 == sha(data)
    whole, rest = divmod(len(data) - offset, MAX_CHUNK)
    assert sizes == [MAX_CHUNK] * whole + ([rest] if rest else [])
    per_read = MAX_CHUNK * (1 if window else 16)  # a read fills what the window has left
    assert sum(reads) == len(data) - offset
    assert max(reads) == per_read
    assert all(size % MAX_CHUNK == 0 for size in reads[:-1])


def test_an_upload_resumes_after_a_disconnect(serve: Callable[..., Server]) -> None:
    server = serve()
    bob = server.login("bob")
    data = payload(300_000, seed=3)
    alice = server.login("alice")
    accept = offer(alice, data, transfer=5, name="big.bin")
    assert isinstance(accept, FileAccept)
    sent = 2 * MAX_CHUNK
    send_chunks(alice, 5, data[:sent])
    settle(alice)
    alice.close()  # the connection drops mid-upload
    alice = server.login("alice")
    resumed = offer(alice, data, transfer=6, name="big.bin")
    assert isinstance(resumed, FileAccept)
    assert (resumed.file_id, resumed.offset) == (accept.file_id, sent)
    send_chunks(alice, 6, data, start=sent)
    announced = finish(alice, 6, sha(data))
    assert isinstance(announced, Message)
    assert announced.file is not None
    assert last(bob, _announces).file == announced.file
    assert download(bob, announced.file.file_id)[1] == data


def test_a_resume_takes_over_an_upload_whose_connection_went_quiet(
    serve: Callable[..., Server], tmp_path: Path
) -> None:
    # Alice's link died mid-upload on her side only (a network change): the server's side of
    # the connection stays open, silent, holding the upload. Her new connection's send_file
    # takes it over once it has been quiet upload_takeover_after (refused until then, saying
    # when to try again, which the client does) and goes on from the server's copy.
    server = serve(hub=HubConfig(upload_takeover_after=1.0))
    bob = server.login("bob")
    data = payload(300_000, seed=4)
    old = server.login("alice")
    accept = offer(old, data, transfer=5, name="big.bin")
    assert isinstance(accept, FileAccept)
    sent = 2 * MAX_CHUNK
    send_chunks(old, 5, data[:sent])
    settle(old)  # then nothing more, and the connection stays open
    source = tmp_path / "big.bin"
    source.write_bytes(data)
    new = server.login("alice")
    info = new.send_file(source, room="general")
    assert (info.file_id, info.size, info.sha256) == (accept.file_id, len(data), sha(data))
    assert last(bob, _announces).file == info
    # The old connection is told, and what it sends late writes nothing.
    taken = last(old, matching(FileReject, transfer=5))
    assert taken.reason == "this upload was continued on another connection"
    send_chunks(old, 5, bytes(len(data) - sent), start=sent)
    refused = last(old, matching(FileReject, transfer=5))
    assert refused.reason == "no upload 5 in progress"
    assert download(bob, info.file_id)[1] == data


def test_an_upload_over_the_quota_is_rejected(serve: Callable[..., Server]) -> None:
    server = serve(hub=HubConfig(user_quota=100_000))
    alice = server.login("alice")
    upload(alice, payload(60_000))
    rejected = offer(alice, payload(50_000, seed=1), transfer=2)
    assert isinstance(rejected, FileReject)
    assert "over quota" in rejected.reason
    assert isinstance(offer(alice, payload(40_000, seed=2), transfer=3), FileAccept)


def test_an_oversize_upload_is_rejected(serve: Callable[..., Server]) -> None:
    server = serve(hub=HubConfig(max_file_size=50_000))
    alice = server.login("alice")
    rejected = offer(alice, payload(50_001))
    assert isinstance(rejected, FileReject)
    assert "too large" in rejected.reason
    assert isinstance(offer(alice, payload(50_000), transfer=2), FileAccept)


@pytest.mark.parametrize("lie", ["complete", "offer"])
def test_an_upload_with_a_wrong_sha256_is_rejected_and_not_announced(
    serve: Callable[..., Server], lie: str
) -> None:
    server = serve()
    alice, bob = server.login("alice"), server.login("bob")
    data = payload(100_000)
    wrong = sha(b"something else")
    claimed = wrong if lie == "offer" else sha(data)
    alice.send(FileOffer(transfer=1, name="x.bin", size=len(data), sha256=claimed, room="general"))
    assert isinstance(alice.next(FileAccept), FileAccept)
    send_chunks(alice, 1, data)
    rejected = finish(alice, 1, wrong if lie == "complete" else claimed)
    assert isinstance(rejected, FileReject)
    assert "SHA-256" in rejected.reason
    alice.send(Message(text="barrier", room="general"))
    assert next_message(bob).text == "barrier"
    alice.send(ListFiles(room="general"))
    assert alice.next(FileList).files == []
    assert list((server.data_dir / "downloads").iterdir()) == [
        server.data_dir / "downloads" / ".partial"
    ]
    assert list((server.data_dir / "downloads" / ".partial").iterdir()) == []


HOSTILE_NAMES = [
    "../../etc/passwd",
    "/etc/passwd",
    "nul\x00byte.txt",
    "n" * 3996 + ".txt",
    "r\u00e9sum\u00e9 \u2603.txt",
]


def test_file_names_are_shown_as_sent_and_never_used_as_paths(
    serve: Callable[..., Server], tmp_path: Path
) -> None:
    passwd = Path("/etc/passwd").read_bytes()
    server = serve()
    alice, bob = server.login("alice"), server.login("bob")
    stored: dict[str, bytes] = {}
    for n, name in enumerate(HOSTILE_NAMES):
        data = payload(1000 + n, seed=n)
        mine = upload(alice, data, transfer=n, name=name)
        theirs = last(bob, _announces)
        assert mine.file is not None
        assert theirs.file is not None
        assert mine.file.name == theirs.file.name == name
        head, got, _ = download(bob, theirs.file.file_id, transfer=100 + n)
        assert (head.name, got) == (name, data)
        stored[mine.file.file_id] = data
    alice.send(ListFiles(room="general"))
    assert sorted(f.name for f in alice.next(FileList).files) == sorted(HOSTILE_NAMES)
    assert [p.name for p in tmp_path.iterdir()] == ["data"]  # nothing beside the data dir
    assert Path("/etc/passwd").read_bytes() == passwd
    downloads = server.data_dir / "downloads"
    files = {p for p in server.data_dir.rglob("*") if not p.is_dir()}
    assert {p for p in files if p.parent == downloads} == {downloads / i for i in stored}
    for file_id, data in stored.items():
        assert FILE_ID.fullmatch(file_id)
        assert (downloads / file_id).read_bytes() == data
    others = {p.relative_to(server.data_dir).as_posix() for p in files if p.parent != downloads}
    assert others <= {"sealchat.db", "sealchat.db-wal", "sealchat.db-shm", LOCK_FILE}


def test_megabytes_of_file_names_are_listed_a_page_per_request_to_a_member_who_reads(
    serve: Callable[..., Server],
) -> None:
    """A room whose file names take more than the server queues for a client at once: each
    ListFiles gets one page, and the listing (a request per page) comes back whole, to a
    member who stays connected."""
    server = serve(hub=HubConfig(message_burst=1000))
    alice, bob = server.login("alice"), server.login("bob")
    names = [long_name(n) for n in range(FILES_OF_MEGABYTES)]
    shared = share_empty_files(alice, names)
    bob.send(ListFiles(room="general"))  # as an older client asks: no position
    first = bob.next(FileList)
    assert (len(first.files), first.more) == (3, True)
    assert not of_type(settle(bob), FileList)  # one page, and nothing more
    listed = bob.files(room="general")
    assert [(f.file_id, f.name) for f in listed] == list(zip(shared, names, strict=True))
    assert [f.file_id for f in first.files] == shared[:3]
    say(alice, bob, "still connected")
    bob.send(ListFiles(room="general", after=first.last))
    assert [f.file_id for f in bob.next(FileList).files] == shared[3:6]


# --- 9. hostile peers ---------------------------------------------------------------------


Chatting = Callable[..., tuple[Server, BlockingClient, BlockingClient]]


@pytest.fixture
def chatting(serve: Callable[..., Server]) -> Chatting:
    """``chatting(**server_options)``: a server with alice and bob logged in and talking."""

    def start(**options: Any) -> tuple[Server, BlockingClient, BlockingClient]:
        server = serve(**options)
        alice, bob = server.login("alice"), server.login("bob")
        say(alice, bob, "before")
        return server, alice, bob

    return start


def test_garbage_before_the_handshake_closes_only_that_connection(
    chatting: Chatting, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sealchat.server")
    server, alice, bob = chatting()
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: sealchat\r\n\r\n")
        # The server's preamble (it is sent even to a wrong peer, to show its version), then EOF.
        assert read_to_eof(sock) == encode_preamble()
    assert logged(caplog, "does not speak the sealchat protocol")
    say(bob, alice, "after")


def test_a_goodbye_reason_cannot_forge_log_lines(
    serve: Callable[..., Server], caplog: pytest.LogCaptureFixture
) -> None:
    # The reason is the peer's text: logged escaped, it can neither start a line of its own nor
    # drive the terminal of whoever reads the log.
    caplog.set_level(logging.INFO, logger="sealchat.server")
    server = serve()
    client = server.login("alice")
    client.close("bye\n2026-11-27 ERROR sealchat.server: forged\x1b[2J")
    wait_until(lambda: logged(caplog, "forged"), "the goodbye is logged")
    (line,) = [r.getMessage() for r in caplog.records if "forged" in r.getMessage()]
    assert "\n" not in line
    assert "\x1b" not in line
    assert "bye\\n2026-11-27 ERROR sealchat.server: forged\\x1b[2J" in line


def test_a_protocol_error_quoting_the_peer_cannot_forge_log_lines(
    serve: Callable[..., Server], caplog: pytest.LogCaptureFixture
) -> None:
    # An unknown record tag is quoted in the error (msgspec names the value it refused).
    caplog.set_level(logging.INFO, logger="sealchat.server")
    server = serve()
    sock, conn = raw_handshake(server.port)
    with sock:
        forge(conn, msgspec.msgpack.encode(["nope\nERROR forged\x1b[2J", 1]))
        sock.sendall(conn.data_to_send())
        raw_events(sock, conn)
    wait_until(lambda: logged(caplog, "broke the protocol"), "the violation is logged")
    (line,) = [r.getMessage() for r in caplog.records if "broke the protocol" in r.getMessage()]
    assert "nope\\nERROR forged\\x1b[2J" in line
    assert "\n" not in line
    assert "\x1b" not in line


def test_an_oversize_frame_closes_only_that_connection_with_a_reason(chatting: Chatting) -> None:
    server, alice, bob = chatting()
    sock, conn = raw_handshake(server.port)
    with sock:
        sock.sendall(b"\xff\xff\xff\xff")  # a frame of 4 GiB - 1 announced
        events = raw_events(sock, conn)
    byes = of_type(events, Bye)
    assert len(byes) == 1
    assert "frame length 4294967295" in byes[0].reason
    say(bob, alice, "after")


def test_a_client_stalling_in_the_handshake_is_dropped(
    chatting: Chatting, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sealchat.server")
    server, alice, bob = chatting(handshake_timeout=0.5)
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
        sock.sendall(encode_preamble())  # and then nothing
        assert read_to_eof(sock) == encode_preamble()
    assert logged(caplog, "the handshake timed out")
    say(bob, alice, "after")


TRY_LATER = "the server closed the connection at once: .*; try again later"
"""What a client turned away at once is told (not "the handshake failed")."""


def test_max_connections_is_enforced(chatting: Chatting) -> None:
    server, alice, bob = chatting(max_connections=3)
    carol = server.login("carol")
    with pytest.raises(ClientError, match=TRY_LATER):
        server.connect()
    say(alice, bob, "the others still talk")
    carol.close()
    wait_until(lambda: server.sessions() == 2, "carol's connection is closed")
    assert server.connect().login("dave", PASSWORD) == "dave"


def test_one_address_cannot_take_every_connection(
    chatting: Chatting, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sealchat.server")
    server, alice, bob = chatting(max_connections_per_address=3)
    carol = server.login("carol")  # the third connection from 127.0.0.1
    with pytest.raises(ClientError, match=TRY_LATER):
        server.connect()  # closed at once
    assert logged(caplog, "the most max_connections_per_address allows")
    dave = server.login("dave", source_address=ELSEWHERE)  # other addresses are served
    say(dave, alice, "the others still talk")
    say(bob, dave, "and hear them")
    carol.close()
    wait_until(lambda: server.sessions() == 3, "carol's connection is closed")
    assert server.connect().login("carol", PASSWORD) == "carol"  # her share is free again


def test_an_address_opening_connections_too_fast_is_turned_away(
    serve: Callable[..., Server], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sealchat.server")
    server = serve(address_connection_burst=2, address_connections_per_second=0.01)
    server.connect().close()
    server.connect().close()  # never two open at once
    with pytest.raises(ClientError, match=TRY_LATER):
        server.connect()  # closed at once: no handshake
    assert logged(caplog, "faster than address_connections_per_second allows")
    server.login("dave", source_address=ELSEWHERE)  # other addresses are served


def test_connections_not_logged_in_get_a_smaller_share_of_an_address(
    serve: Callable[..., Server], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sealchat.server")
    server = serve(max_unauthenticated_per_address=2)
    first, second = server.connect(), server.connect()  # handshake done, not logged in
    with pytest.raises(ClientError, match=TRY_LATER):
        server.connect()  # closed at once
    assert logged(caplog, "the most max_unauthenticated_per_address allows")
    dave = server.login("dave", source_address=ELSEWHERE)  # other addresses are served
    assert first.login("alice", PASSWORD) == "alice"  # logged in: no longer counted
    bob = server.login("bob")
    second.close()  # closed before logging in: no longer counted
    wait_until(lambda: server.sessions() == 3, "the second connection is closed")
    third, fourth = server.connect(), server.connect()  # the full share again
    assert third.login("carol", PASSWORD) == "carol"
    assert fourth.login("carol", PASSWORD) == "carol"
    say(bob, dave, "everyone in")


FLOOD_USERS = (*USERS, *(f"user{n:02}" for n in range(50)))


def _login_raw(sock: socket.socket, conn: Connection, name: str) -> None:
    conn.send(Login(username=name, password=PASSWORD))
    sock.sendall(conn.data_to_send())
    while True:
        event = conn.next_event()
        if event is NEED_DATA:
            conn.receive_data(sock.recv(65536))
        elif isinstance(event, Authenticated):
            return


def _flood_server(serve: Callable[..., Server], **options: Any) -> Server:
    """A server with FLOOD_USERS, on which one user may post as fast as it can."""
    flood = HubConfig(messages_per_second=1e6, message_burst=1_000_000)
    return serve(hub=flood, users=FLOOD_USERS, **options)


def _sleeper(server: Server, name: str) -> socket.socket:
    """A connection logged in as ``name`` that reads nothing from now on (with a tiny
    receive buffer, so the server soon holds what it is sent)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock, conn = raw_handshake(server.port, sock)
    _login_raw(sock, conn, name)
    return sock


def _flood_while(
    going_on: Callable[[], bool], flooder: BlockingClient, readers: list[BlockingClient]
) -> int:
    """Post 4 KB messages from ``flooder`` in bursts of 20 while ``going_on()``, each burst
    read by every reader (they keep up, and lose nothing); how many were posted."""
    sent = 0
    while going_on():
        assert sent < 5000, "the server held ever more output for peers that do not read"
        for _ in range(20):
            flooder.send(Message(text="x" * 4000, room="general", client_id=f"f{sent}"))
            sent += 1
        last_id = last(flooder, matching(MessageAck, client_id=f"f{sent - 1}")).id
        for reader in readers:
            last(reader, matching(Message, id=last_id))
    return sent


def test_a_client_that_never_reads_is_disconnected_while_others_chat(
    serve: Callable[..., Server], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sealchat.server")
    server = _flood_server(serve, max_outgoing_bytes=256 * 1024)
    with _sleeper(server, "dave") as dave:
        host, port = dave.getsockname()[:2]
        crowd = [server.login(name) for name in FLOOD_USERS[4:]]
        flooder = server.login("alice")
        _flood_while(lambda: server.hub.is_online("dave"), flooder, crowd)
    # One line, naming the peer and what happened: no protocol violation, no traceback.
    about_dave = [r for r in caplog.records if f"{host}:{port}" in r.getMessage()]
    assert [(r.levelno, r.getMessage()) for r in about_dave] == [
        (logging.INFO, f"peer {host}:{port} (user dave) {OUTPUT_PILED_UP}; connection dropped")
    ]
    assert not logged(caplog, "broke the protocol")
    say(crowd[0], crowd[-1], "after the flood")
    say(crowd[-1], flooder, "and again")


# --- 10. many clients ---------------------------------------------------------------------

CROWD = tuple(f"member{n:03}" for n in range(200))


def test_200_concurrent_clients_each_receive_every_message(serve: Callable[..., Server]) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    logging_in = 20  # at once, all from 127.0.0.1: within the caps on logins in progress
    server = serve(
        hub=HubConfig(address_login_burst=len(CROWD), max_pending_logins=logging_in),
        users=CROWD,
        max_connections_per_address=len(CROWD),
    )
    with ThreadPoolExecutor(max_workers=logging_in) as pool:
        clients = list(pool.map(server.login, CROWD))
    for n, client in enumerate(clients):
        client.send(Message(text=f"hello from {n}", room="general", client_id=f"c{n}"))
    everything = {f"hello from {n}" for n in range(len(clients))}
    for n, client in enumerate(clients):
        texts = {f"hello from {n}"}  # its own message is acknowledged, not echoed
        acked = False
        while len(texts) < len(clients) or not acked:
            event = last(client, matching((Message, MessageAck)))
            if isinstance(event, MessageAck):
                assert event.client_id == f"c{n}"
                acked = True
            else:
                texts.add(event.text)
        assert texts == everything


@pytest.mark.parametrize("kind", KINDS)
def test_a_connection_that_never_logs_in_is_closed(kind: str, tmp_path: Path) -> None:
    with running_server(kind, tmp_path, hub=HubConfig(login_timeout=0.5)) as server:
        idle = server.client()
        try:
            closed = idle.next(ConnectionClosed, timeout=10)
        finally:
            idle.close()
        assert "log in within 0.5 s" in closed.reason
        with server.login("alice"):  # the server itself carries on
            pass


def test_the_server_holds_a_bounded_sum_of_output_and_sheds_the_peers_furthest_behind(
    serve: Callable[..., Server], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sealchat.server")
    server = _flood_server(serve, max_outgoing_total=1024 * 1024)  # 8 MiB for each alone
    sleepers = [f"user{n:02}" for n in range(4)]
    with ExitStack() as stack:
        for name in sleepers:
            stack.enter_context(_sleeper(server, name))
        readers = [server.login(name) for name in ("bob", "carol")]
        flooder = server.login("alice")
        sent = _flood_while(
            lambda: any(server.hub.is_online(name) for name in sleepers), flooder, readers
        )
    assert logged(caplog, "holds the most output while the server holds more than")
    assert not logged(caplog, OUTPUT_PILED_UP)  # dropped long before 8 MiB each
    assert sent * 4000 < 4 * 8 * 1024 * 1024
    say(readers[0], readers[1], "after the flood")
    say(readers[1], flooder, "and again")


def _settled_count(count: Callable[[], int]) -> int:
    """``count()`` once it has stopped changing for a second (the server has done what it
    will do)."""
    deadline = time.monotonic() + 4 * TIMEOUT
    last = -1
    while (now := count()) != last and time.monotonic() < deadline:
        last = now
        time.sleep(1.0)
    return now


def test_requests_sent_without_reading_the_answers_get_no_more_work_done(
    serve: Callable[..., Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = serve(hub=HubConfig(messages_per_second=1000, message_burst=1000))
    bob = server.login("bob")
    for n in range(50):  # a page of history of about 200 KB
        bob.send_message(f"{n:02} " + "x" * 3990, room="general")
    handled: list[list[type]] = []
    real_handle_all = server.hub.handle_all

    def counted(session: int, records: list[Any], now: float) -> Any:
        handled.append([type(r) for r in records])
        return real_handle_all(session, records, now)

    monkeypatch.setattr(server.hub, "handle_all", counted)
    monkeypatch.setattr(blocking_client, "EVENT_BUFFER", 1)
    mallory = server.login("alice")  # her reader stops at her first unread event
    mallory.send_all([HistoryRequest(room="general", limit=50)] * 400)  # 8 KB asking 80 MB
    asked = _settled_count(lambda: sum(kinds.count(HistoryRequest) for kinds in handled))
    assert asked < 100  # about the reply window and the sockets' buffers, not 400 pages
    assert all(kinds.count(HistoryRequest) <= 1 for kinds in handled)  # one page per call
    assert bob.send_message("still served", room="general").id  # the others are not held up


def test_requests_beyond_the_allowance_are_refused_and_the_session_goes_on(
    serve: Callable[..., Server],
) -> None:
    server = serve(hub=HubConfig(request_burst=3, requests_per_second=0.001))
    alice = server.login("alice", events=False)  # its login asks for no read markers
    for _ in range(3):
        assert [r.name for r in alice.rooms()] == ["general"]
    with pytest.raises(ClientError, match=r"^slow down: at most 0\.001 requests a second$"):
        alice.rooms()
    with pytest.raises(ClientError, match="slow down"):
        alice.history(room="general")
    assert alice.send_message("still here", room="general").id > 0
