"""An independent sealchat client, written from docs/protocol.md alone, against a real server.

The client below imports nothing from sealchat: it speaks the wire protocol with the standard
library, the `noiseprotocol` package (Noise_XX_25519_AESGCM_SHA256) and `msgspec.msgpack` used
generically (records are plain lists). The server is the `sealchat` command, run as a black box
in a subprocess. Section numbers (§) refer to docs/protocol.md.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
from noise.connection import Keypair, NoiseConnection

# --- Constants of protocol version 1.0 (§1.3, §2.2, §3) ----------------------------------------

PREAMBLE = b"SLCH\x01\x00\x00\x00"
MAGIC = b"SLCH"
MAJOR = 1
PROTOCOL_NAME = b"Noise_XX_25519_AESGCM_SHA256"
MAX_FRAME = 65535
TAG_SIZE = 16
MAX_RECORD = MAX_FRAME - TAG_SIZE
REKEY_INTERVAL = 65536
MAX_CHUNK = 61440
HANDSHAKE_SIZES = (32, 96, 64)
FINGERPRINT_DOMAIN = b"sealchat static key v1\x00"

PASSWORD = "correct-horse-battery"
READ_TIMEOUT = 30.0  # seconds; generous, so that a loaded CI machine never fails a read

Record = list[Any]


class ClosedError(Exception):
    """The server closed the TCP connection (EOF)."""


class HandshakeError(Exception):
    """Handshake message 2 did not decrypt: the peer is not who it claims, or saw other bytes."""


def fingerprint(public_key: bytes) -> str:
    """The OpenSSH-style fingerprint of a static X25519 key (§3.4)."""
    digest = hashlib.sha256(FINGERPRINT_DOMAIN + public_key).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def encode(record: Record) -> bytes:
    """A record is a MessagePack array: the tag, then the fields in order (§6.1)."""
    return msgspec.msgpack.encode(record)


def decode(plaintext: bytes) -> Record:
    value = msgspec.msgpack.decode(plaintext)
    assert isinstance(value, list), value
    assert value, "an empty array is not a record"
    assert isinstance(value[0], str), value
    return value


# --- Record builders: every field, in the order of the tables in §6 ----------------------------


def login(username: str, password: str, announce: bool = True) -> Record:
    return ["login", username, password, announce]


def message(text: str, *, room: str = "", to: str = "", client_id: str = "") -> Record:
    return ["msg", text, room, to, client_id, 0, "", 0.0, None]


def file_offer(transfer: int, name: str, data: bytes, *, room: str = "", to: str = "") -> Record:
    return ["file", transfer, name, len(data), hashlib.sha256(data).digest(), room, to, "", 0]


@dataclass
class Handshake:
    """What the client saw of the handshake (§2, §3)."""

    server_preamble: bytes
    message_sizes: tuple[int, int, int]
    server_static: bytes
    handshake_hash: bytes


@dataclass
class SpecClient:
    """One sealchat session over a real socket: preamble, Noise XX, framing, records, rekeying."""

    sock: socket.socket
    noise: NoiseConnection = field(default_factory=lambda: NoiseConnection.from_name(PROTOCOL_NAME))
    buffer: bytearray = field(default_factory=bytearray)
    sent: int = 0  # transport messages encrypted so far (§5.2)
    received: int = 0  # transport messages decrypted so far
    skipped: list[Record] = field(default_factory=list)  # records `expect` passed over

    @classmethod
    def connect(cls, port: int) -> SpecClient:
        sock = socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT)
        sock.settimeout(READ_TIMEOUT)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(sock)

    # Bytes and frames (§4)

    def read_exact(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ClosedError(f"EOF with {len(self.buffer)} of {n} bytes")
            self.buffer += chunk
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data

    def read_frame(self) -> bytes:
        (length,) = struct.unpack(">I", self.read_exact(4))
        assert 1 <= length <= MAX_FRAME, f"bad frame length {length}"
        return self.read_exact(length)

    @staticmethod
    def frame(body: bytes) -> bytes:
        assert 1 <= len(body) <= MAX_FRAME
        return struct.pack(">I", len(body)) + body

    # The handshake (§2.3, §3)

    def handshake(
        self,
        trusted: Callable[[bytes], bool] = lambda _key: True,
        payload: bytes = b"",
        preamble: bytes = PREAMBLE,
        prologue: bytes | None = None,
    ) -> Handshake:
        """Run the client's side of Noise XX.

        `payload` goes in messages 1 and 3 (§3.2: empty). The prologue is the client's preamble,
        exactly as sent (§3.2); `prologue` makes it differ, to see that the server checks it.
        """
        self.noise.set_as_initiator()
        self.noise.set_prologue(preamble if prologue is None else prologue)
        self.noise.set_keypair_from_private_bytes(Keypair.STATIC, os.urandom(32))
        self.noise.start_handshake()
        message1 = bytes(self.noise.write_message(payload))
        self.sock.sendall(preamble + self.frame(message1))  # the client speaks first

        server_preamble = self.read_exact(8)
        assert server_preamble[:4] == MAGIC, server_preamble
        assert server_preamble[4] == MAJOR, server_preamble  # any minor version is accepted

        message2 = self.read_frame()
        try:
            payload2 = self.noise.read_message(message2)
        except Exception as error:  # noiseprotocol raises the AEAD's InvalidTag as it comes
            raise HandshakeError(str(error)) from error
        assert payload2 == b""
        # noiseprotocol keeps the responder's static key in its handshake state until Split().
        server_static = bytes(self.noise.noise_protocol.handshake_state.rs.public_bytes)
        if not trusted(server_static):  # pinning: decided before message 3 (§3.3)
            self.sock.close()
            raise ConnectionAbortedError("untrusted server key")
        message3 = bytes(self.noise.write_message(payload))
        self.sock.sendall(self.frame(message3))
        assert self.noise.handshake_finished
        return Handshake(
            server_preamble,
            (len(message1), len(message2), len(message3)),
            server_static,
            bytes(self.noise.get_handshake_hash()),
        )

    # Records (§5, §6)

    def send(self, record: Record) -> None:
        self.sock.sendall(self.seal(record))

    def send_plaintext(self, plaintext: bytes) -> None:
        """Send these bytes as a record's plaintext: for records no encoder would make."""
        self.sock.sendall(self.seal_plaintext(plaintext))

    def seal(self, record: Record) -> bytes:
        plaintext = encode(record)
        assert len(plaintext) <= MAX_RECORD
        return self.seal_plaintext(plaintext)

    def seal_plaintext(self, plaintext: bytes) -> bytes:
        """One frame, encrypted under the sending key, rekeying as §5.2 says."""
        body = self.noise.encrypt(plaintext)
        self.sent += 1
        if self.sent % REKEY_INTERVAL == 0:
            self.noise.rekey_outbound_cipher()
        return self.frame(body)

    def recv(self) -> Record:
        """The next record. A Ping is answered at once with a Pong (§8.4) and passed over."""
        while True:
            body = self.read_frame()
            assert len(body) >= TAG_SIZE
            plaintext = self.noise.decrypt(body)
            self.received += 1
            if self.received % REKEY_INTERVAL == 0:
                self.noise.rekey_inbound_cipher()
            record = decode(plaintext)
            if record[0] == "ping":
                self.send(["pong", record[1] if len(record) > 1 else 0])
                continue
            return record

    def expect(self, tag: str, where: Callable[[Record], bool] = lambda _r: True) -> Record:
        """Read until a record with `tag` for which `where` holds; keep the others in `skipped`."""
        while True:
            record = self.recv()
            if record[0] == tag and where(record):
                return record
            assert record[0] != "bye", f"the server ended the session: {record}"
            self.skipped.append(record)

    def expect_eof(self) -> None:
        """Nothing more arrives: the server closes the TCP connection (§8.1, §8.2)."""
        self.buffer.clear()
        while True:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return
            if not chunk:
                return
            self.buffer += chunk
            raise AssertionError(f"bytes after the end: {bytes(self.buffer)!r}")

    def bye(self, reason: str = "") -> None:
        self.send(["bye", reason])
        self.sock.close()

    def close(self) -> None:
        self.sock.close()

    # Sessions (§6.6, §9.3)

    def log_in(self, username: str, password: str = PASSWORD, announce: bool = True) -> Record:
        """Log in; return `Authenticated` (the following OnlineUsers and replay stay unread)."""
        self.send(login(username, password, announce))
        answer = self.recv()
        assert answer[0] == "auth", answer
        return answer


# --- The server, as a black box ------------------------------------------------------------------

USERS = (
    "alice",
    "bob",
    "Carol",
    "dave",
    "erin",
    "frank",
    "grace",
    "heidi",
    "ivan",
    "judy",
    "quinn",
)


def sealchat(*args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "sealchat", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Server:
    port: int
    fingerprint: str
    data_dir: Path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("spec-server") / "data"
    where = ("--data-dir", str(data_dir))
    for user in USERS:
        sealchat("user", "add", user, *where, "--password-stdin", stdin=PASSWORD)
    port = free_port()
    log = (data_dir.parent / "server.log").open("w")
    command = [sys.executable, "-m", "sealchat", "server", *where, "--host", "127.0.0.1"]
    process = subprocess.Popen(
        [*command, "--port", str(port)], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (data_dir.parent / "server.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the server did not start listening"
                time.sleep(0.1)
        printed = sealchat("server-key", *where).strip()
        yield Server(port, printed, data_dir)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


class Net:
    """Opens the test's connections to the server, and closes them all at the end."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.clients: list[SpecClient] = []

    def connect(self) -> SpecClient:
        client = SpecClient.connect(self.server.port)
        self.clients.append(client)
        return client

    def session(self, username: str, announce: bool = True) -> tuple[SpecClient, Record]:
        """A logged-in session whose OnlineUsers pages and first replay page have been read."""
        client = self.connect()
        client.handshake()
        auth = client.log_in(username, announce=announce)
        online = client.expect("online")
        while online[2]:
            online = client.expect("online")
        client.expect("history", lambda r: r[1] == "" and r[2] == "")
        return client, auth


@pytest.fixture
def net(server: Server) -> Iterator[Net]:
    opened = Net(server)
    yield opened
    for client in opened.clients:
        client.close()


# --- 1. Preamble, handshake, fingerprint --------------------------------------------------------


def test_fingerprint_matches_the_worked_example() -> None:
    assert len(FINGERPRINT_DOMAIN) == 23
    assert fingerprint(bytes(32)) == "SHA256:TIe18gLyqGpqCM7ZLyDowy69SMbsH7tHoU0uSzy0O7M"


def test_encoding_matches_the_documented_examples() -> None:
    assert encode(login("esha", "s3cret-pass")).hex(" ") == (
        "94 a5 6c 6f 67 69 6e a4 65 73 68 61 ab 73 33 63 72 65 74 2d 70 61 73 73 c3"
    )
    assert encode(["ping", 7]).hex(" ") == "92 a4 70 69 6e 67 07"
    assert len(encode(["ping", 0])) + TAG_SIZE == 0x17
    assert encode(message("top secret plaintext ☃", room="general", client_id="c-1")).hex(" ") == (
        "99 a3 6d 73 67 b8 74 6f 70 20 73 65 63 72 65 74 20 70 6c 61 69 6e 74 65 78 74 20 e2 98"
        " 83 a7 67 65 6e 65 72 61 6c a0 a3 63 2d 31 00 a0 cb 00 00 00 00 00 00 00 00 c0"
    )


def test_handshake_and_server_fingerprint(net: Net) -> None:
    client = net.connect()
    seen = client.handshake()
    assert seen.server_preamble[:5] == PREAMBLE[:5]
    assert seen.message_sizes == HANDSHAKE_SIZES
    assert len(seen.server_static) == 32
    assert len(seen.handshake_hash) == 32
    assert fingerprint(seen.server_static) == net.server.fingerprint
    # The channel works: a Ping is allowed before login and answered with the same nonce.
    client.send(["ping", 12345])
    assert client.recv() == ["pong", 12345]
    client.bye()


def test_rejecting_the_key_sends_nothing_more(net: Net) -> None:
    client = net.connect()
    with pytest.raises(ConnectionAbortedError):
        client.handshake(trusted=lambda key: False)
    # A new connection works as before: the server took the abandoned one in its stride.
    again = net.connect()
    again.handshake()
    again.bye()


@pytest.mark.parametrize("preamble", [b"SLCH\x02\x00\x00\x00", b"HTTP/1.1"])
def test_a_wrong_preamble_gets_the_server_preamble_then_eof(net: Net, preamble: bytes) -> None:
    client = net.connect()
    client.sock.sendall(preamble)
    # The server answers with its own preamble even so (§2.3), then closes, sending nothing more.
    assert client.read_exact(8)[:5] == PREAMBLE[:5]
    client.expect_eof()


@pytest.mark.parametrize(
    "preamble",
    [
        b"SLCH\x01\x07\x00\x00",  # another minor version interoperates (§2.4)
        b"SLCH\x01\x00\xff\x01",  # reserved bytes are ignored by the receiver (§2.2)
    ],
)
def test_the_client_preamble_is_the_prologue(net: Net, preamble: bytes) -> None:
    client = net.connect()
    client.handshake(preamble=preamble)
    client.send(["ping", 3])
    assert client.recv() == ["pong", 3]
    client.bye()
    # A preamble changed in transit (here: a prologue other than what was sent) makes the
    # client's check of handshake message 2 fail (§2.5).
    changed = net.connect()
    with pytest.raises(HandshakeError):
        changed.handshake(preamble=preamble, prologue=PREAMBLE[:7] + b"\x02")


def test_non_empty_handshake_payloads_are_ignored(net: Net) -> None:
    client = net.connect()
    seen = client.handshake(payload=b"a payload v1 does not use")
    assert seen.message_sizes[1] == 96
    client.send(["ping", 1])
    assert client.recv() == ["pong", 1]
    client.bye()


def test_any_split_of_the_byte_stream_is_handled(net: Net) -> None:
    client = net.connect()
    client.handshake()
    for byte in client.seal(login("judy", PASSWORD)):
        client.sock.sendall(bytes([byte]))
    assert client.recv()[:2] == ["auth", "judy"]
    client.bye()


# --- 2. Login -----------------------------------------------------------------------------------


def test_login_refused_then_accepted(net: Net) -> None:
    client = net.connect()
    client.handshake()
    client.send(login("carol", "not the password"))
    refused = client.recv()
    assert refused[0] == "rejected"
    assert refused[1] == "invalid username or password"
    assert refused[2] == 0.0  # the first failure does not block (§9.3)
    client.send(login("nobody-here", PASSWORD))  # an unknown user gets the same answer
    assert client.recv()[:2] == ["rejected", "invalid username or password"]
    # Limits count code points: 32 four-byte characters are a valid (unknown) user name.
    client.send(login("\N{GRINNING FACE}" * 32, PASSWORD))
    assert client.recv()[:2] == ["rejected", "invalid username or password"]
    # Keep failed logins in this module below free_login_failures (5): the failures of an
    # address are counted together, and the 5th would hold up every login from it (§9.3).
    client.send(["register", "newbie", PASSWORD, True])  # the server runs without registration
    assert client.recv() == [
        "rejected",
        "registration is closed on this server; ask its operator for an account",
        0.0,
    ]

    # Still in LOGIN: a good login, with the name in another case.
    client.send(login("CAROL", PASSWORD))
    auth = client.recv()
    assert auth[0] == "auth"
    assert auth[1] == "Carol"  # the canonical spelling (§9.2)
    assert auth[2] == []  # no direct conversations yet
    assert isinstance(auth[3], int)
    assert auth[3] > 0  # max_file_size
    online = client.recv()
    assert online[0] == "online"
    assert "Carol" in online[1]
    assert online[2] is False
    replay_end = client.recv()
    assert replay_end == ["history", "", "", False]  # nothing missed: an empty replay page
    client.bye()


# --- 3. Rooms, messages, acknowledgements, history, presence -------------------------------------


def test_two_users_rooms_messages_history_presence(net: Net) -> None:
    alice, _ = net.session("alice")
    bob, bob_auth = net.session("bob")
    assert bob_auth[1] == "bob"
    # bob's login announced him to alice, who shares the default room with him (§9.4).
    assert alice.expect("presence", lambda r: r[1] == "bob") == ["presence", "bob", True]

    # Rooms: alice creates "lab", bob joins it, alice hears of it.
    alice.send(["join", "lab"])
    assert alice.expect("joined") == ["joined", "lab"]
    members = alice.expect("members", lambda r: r[1] == "lab")
    assert members[2] == [["alice", True]]
    assert members[3] is False
    bob.send(["join", "lab"])
    assert bob.expect("joined") == ["joined", "lab"]
    members = bob.expect("members", lambda r: r[1] == "lab")
    assert members[2] == [["alice", True], ["bob", True]]
    assert alice.expect("member", lambda r: r[1] == "lab") == ["member", "lab", "bob", True]

    bob.send(["rooms?"])
    rooms = bob.expect("rooms")
    assert rooms[2] is False  # one page
    names = [room[0] for room in rooms[1]]
    assert names == sorted(names)
    listed = {room[0]: room[1:] for room in rooms[1]}
    assert listed["lab"] == [2, True]
    assert listed["general"][0] >= 2  # every user who has logged in is in the default room
    assert listed["general"][1] is True

    # A room message: the sender gets MessageAck, the other member the Message (§9.5).
    bob.send(message("hello lab", room="lab", client_id="bob-1"))
    ack = bob.expect("ack")
    assert ack[1] == "bob-1"
    assert isinstance(ack[2], int)
    assert ack[2] > 0
    assert isinstance(ack[3], float)
    assert abs(ack[3] - time.time()) < 24 * 3600
    got = alice.expect("msg")
    assert got == ["msg", "hello lab", "lab", "", "bob-1", ack[2], "bob", ack[3], None]

    # The server fills in id, sender, ts and file itself, whatever the client wrote (§9.5).
    bob.send(["msg", "forged?", "lab", "", "bob-2", 99, "alice", 5.0, ["f", "x", 1, bytes(32)]])
    forged_ack = bob.expect("ack")
    forged = alice.expect("msg")
    assert forged == [
        "msg",
        "forged?",
        "lab",
        "",
        "bob-2",
        forged_ack[2],
        "bob",
        forged_ack[3],
        None,
    ]

    # A resend with the same client_id is acknowledged with the original id, not delivered.
    bob.send(message("hello lab", room="lab", client_id="bob-1"))
    assert bob.expect("ack") == ack

    # A direct message, to the recipient's name in another case.
    alice.send(message("psst", to="BOB", client_id="alice-1"))
    dm_ack = alice.expect("ack")
    assert dm_ack[1] == "alice-1"
    assert dm_ack[2] > ack[2]  # one increasing sequence for the whole server
    dm = bob.expect("msg")
    assert dm == ["msg", "psst", "", "bob", "alice-1", dm_ack[2], "alice", dm_ack[3], None]
    bob.send(["seen", dm[5]])  # Delivered: everything up to this id has reached bob

    # History paging: six messages in all, in pages of two: newest first, each oldest first.
    ids = [ack[2], forged_ack[2]]
    for n in range(4):
        alice.send(message(f"note {n}", room="lab", client_id=f"alice-h{n}"))
        ids.append(alice.expect("ack", lambda r, n=n: r[1] == f"alice-h{n}")[2])
    for n in range(4):
        assert bob.expect("msg")[1] == f"note {n}"
    bob.send(["seen", ids[-1]])
    pages: list[list[Record]] = []
    before = 0
    while True:
        bob.send(["history?", "lab", "", before, 2])
        page: list[Record] = []
        while True:
            record = bob.recv()
            if record[0] == "msg" and record[2] == "lab":
                page.append(record)
                continue
            if record[0] == "history" and record[1] == "lab":
                break
            page = []  # the page's messages come together, right before its HistoryEnd (§9.7)
        pages.append(page)
        assert record == ["history", "lab", "", bool(record[3])]
        if not record[3]:
            break
        before = min(m[5] for m in page)
    assert [[m[5] for m in page] for page in pages] == [ids[4:6], ids[2:4], ids[0:2]]
    assert pages[-1][0][1:7] == ["hello lab", "lab", "", "bob-1", ids[0], "bob"]

    # The direct conversation's history, from both sides.
    alice.send(["history?", "", "bob", 0, 50])
    assert alice.expect("msg", lambda r: r[3] == "bob")[5] == dm_ack[2]
    assert alice.expect("history", lambda r: r[2] == "bob") == ["history", "", "bob", False]

    # Presence: ListMembers shows both online; bob's goodbye makes alice see him go offline.
    alice.send(["members?", "lab"])
    assert alice.expect("members", lambda r: r[1] == "lab")[2] == [["alice", True], ["bob", True]]
    bob.bye()
    assert alice.expect("presence", lambda r: r[1] == "bob") == ["presence", "bob", False]
    alice.send(["members?", "lab"])
    assert alice.expect("members", lambda r: r[1] == "lab")[2] == [
        ["alice", True],
        ["bob", False],
    ]

    # Offline replay: a message while bob is away comes in his replay; Delivered moves his
    # cursor, so the next login replays nothing older.
    alice.send(message("while you were out", to="bob", client_id="alice-2"))
    missed_id = alice.expect("ack")[2]
    bob = net.connect()
    bob.handshake()
    auth = bob.log_in("bob")
    assert auth[2] == ["alice"]  # bob's direct conversations
    online = bob.expect("online")
    assert {"alice", "bob"} <= set(online[1])
    replayed = bob.expect("msg")
    assert replayed[1] == "while you were out"
    assert replayed[5] == missed_id
    assert bob.expect("history") == ["history", "", "", False]
    bob.send(["seen", missed_id])
    assert alice.expect("presence", lambda r: r[1] == "bob") == ["presence", "bob", True]
    bob.send(["rooms?"])  # the server handles a connection's records in order: a barrier
    bob.expect("rooms")
    bob.bye()
    bob = net.connect()
    bob.handshake()
    bob.log_in("bob")
    bob.expect("online")
    assert bob.recv() == ["history", "", "", False]  # nothing replayed again
    bob.bye()
    alice.bye()


def test_typing_is_relayed_with_the_typing_user(net: Net) -> None:
    heidi, _ = net.session("heidi")
    ivan, _ = net.session("ivan")
    heidi.send(["typing", "", "ivan", "", True])
    assert ivan.expect("typing") == ["typing", "", "ivan", "heidi", True]
    heidi.send(["typing", "", "ivan", "", False])
    assert ivan.expect("typing") == ["typing", "", "ivan", "heidi", False]
    heidi.send(["typing", "", "", "", True])
    assert heidi.expect("error")[1::2] == ["bad_target", ":typing"]
    heidi.bye()
    ivan.bye()


def test_a_quiet_session_does_not_count_as_online(net: Net) -> None:
    """A session with `announce = false` is not online (§9.4): OnlineUsers and Members say so.
    Nor is a user part of its own audience: its quiet session hears no Presence of it."""
    observer, _ = net.session("heidi")
    quiet = net.connect()
    quiet.handshake()
    assert quiet.log_in("quinn", announce=False)[1] == "quinn"
    online = quiet.expect("online")
    assert "quinn" not in online[1]
    quiet.expect("history")
    quiet.send(["members?", "general"])
    members = dict(quiet.expect("members", lambda r: r[1] == "general")[2])
    assert members["quinn"] is False

    # An announcing session makes the user online: the observer hears of it, the quiet one not.
    loud, _ = net.session("quinn")
    assert observer.expect("presence", lambda r: r[1] == "quinn") == ["presence", "quinn", True]
    quiet.send(["rooms?"])  # answered after anything the login queued for this session
    quiet.expect("rooms")
    loud.bye()
    assert observer.expect("presence", lambda r: r[1] == "quinn") == ["presence", "quinn", False]
    quiet.send(["rooms?"])
    quiet.expect("rooms")
    assert [r for r in quiet.skipped if r[0] == "presence"] == []
    quiet.bye()
    observer.bye()


# --- 4. A file, up and down ---------------------------------------------------------------------


def test_file_upload_and_download(net: Net) -> None:
    dave, _ = net.session("dave")
    erin, _ = net.session("erin")
    for client in (dave, erin):
        client.send(["join", "files-room"])
        client.expect("joined")
        client.expect("members", lambda r: r[1] == "files-room")
    data = os.urandom(200 * 1024)
    digest = hashlib.sha256(data).digest()

    # Upload (§6.8.6, §9.9): offer, accept, chunks in order, complete, announcement.
    dave.send(file_offer(1, "report.bin", data, room="files-room"))
    accept = dave.expect("file-ok")
    assert accept[1] == 1
    assert accept[3] == 0
    file_id = accept[2]
    offset = 0
    chunks = 0
    while offset < len(data):
        piece = data[offset : offset + MAX_CHUNK]
        dave.send(["chunk", 1, offset, piece])
        offset += len(piece)
        chunks += 1
    assert chunks == 4
    dave.send(["file-end", 1, digest])
    info = [file_id, "report.bin", len(data), digest]
    for client in (dave, erin):
        announcement = client.expect("msg", lambda r: r[8] is not None)
        assert announcement[1:5] == ["", "files-room", "", ""]
        assert announcement[6] == "dave"
        assert announcement[8] == info

    erin.send(["files?", "files-room", "", 0])
    listing = erin.expect("files")
    assert listing[1] == [info]
    assert listing[2:5] == ["files-room", "", False]
    assert listing[5] == announcement[5]  # a file's position is its announcement's id

    # Download: request, offer, chunks, complete; the digest is checked (§11).
    erin.send(["file?", 7, file_id, 0])
    offer = erin.expect("file")
    assert offer == [
        "file",
        7,
        "report.bin",
        len(data),
        digest,
        "files-room",
        "",
        file_id,
        0,
    ]
    received = bytearray()
    while True:
        record = erin.recv()
        if record[0] == "chunk" and record[1] == 7:
            assert record[2] == len(received)
            assert len(record[3]) <= MAX_CHUNK
            received += record[3]
        elif record[0] == "file-end" and record[1] == 7:
            assert record[2] == digest
            break
        else:
            erin.skipped.append(record)
    assert hashlib.sha256(received).digest() == digest
    assert bytes(received) == data

    # A resumed download from an offset gets the rest only.
    erin.send(["file?", 8, file_id, 150000])
    assert erin.expect("file", lambda r: r[1] == 8)[8] == 150000
    tail = bytearray()
    while (record := erin.recv())[0] != "file-end":
        assert record[0] == "chunk"
        tail += record[3]
    assert bytes(tail) == data[150000:]

    # Refused downloads get FileReject with the transfer's number (§9.9), never Error.
    erin.send(["file?", 9, file_id, len(data) + 1])
    assert erin.expect("file-no")[1] == 9
    erin.send(["file?", 10, "no-such-file", 0])
    assert erin.expect("file-no") == [
        "file-no",
        10,
        "there is no file no-such-file that you can see",
    ]
    dave.bye()
    erin.bye()


def test_an_interrupted_upload_is_resumed(net: Net) -> None:
    """A chunk at the wrong offset ends the transfer but keeps the bytes; the same offer
    resumes at the end of what was stored (§9.9, step 6)."""
    client, _ = net.session("dave")
    data = os.urandom(3 * MAX_CHUNK + 100)
    digest = hashlib.sha256(data).digest()
    client.send(file_offer(1, "resume.bin", data, to="erin"))
    accept = client.expect("file-ok")
    assert accept[1::2] == [1, 0]
    client.send(["chunk", 1, 0, data[:MAX_CHUNK]])
    client.send(["chunk", 1, 2 * MAX_CHUNK, data[2 * MAX_CHUNK : 3 * MAX_CHUNK]])  # a gap
    assert client.expect("file-no")[1] == 1
    client.send(file_offer(2, "another name", data, to="erin"))
    resumed = client.expect("file-ok")
    assert resumed == ["file-ok", 2, accept[2], MAX_CHUNK]
    for offset in range(MAX_CHUNK, len(data), MAX_CHUNK):
        client.send(["chunk", 2, offset, data[offset : offset + MAX_CHUNK]])
    client.send(["file-end", 2, digest])
    announcement = client.expect("msg", lambda r: r[8] is not None)
    assert announcement[1:5] == ["", "", "erin", ""]
    assert announcement[8] == [accept[2], "resume.bin", len(data), digest]  # the first name
    client.bye()


# --- 5. Violations ------------------------------------------------------------------------------


def expect_bye_then_eof(client: SpecClient) -> str:
    record = client.recv()
    assert record[0] == "bye", record
    reason: str = record[1]
    assert reason  # a Bye that describes the violation (§8.1)
    client.expect_eof()
    client.close()
    return reason


@pytest.mark.parametrize("length", [0, MAX_FRAME + 1])
def test_a_bad_frame_length_ends_the_session(net: Net, length: int) -> None:
    client = net.connect()
    client.handshake()
    client.sock.sendall(struct.pack(">I", length))  # only the length: no body follows
    expect_bye_then_eof(client)


def test_a_bad_frame_length_after_login_ends_the_session(net: Net) -> None:
    client, _ = net.session("frank")
    client.sock.sendall(struct.pack(">I", 0))
    expect_bye_then_eof(client)


def test_a_short_handshake_message_gets_the_preamble_then_eof(net: Net) -> None:
    client = net.connect()
    client.sock.sendall(PREAMBLE + client.frame(bytes(31)))  # message 1 is 32 bytes
    assert client.read_exact(8) == PREAMBLE
    client.expect_eof()  # no channel yet, so no Bye (§8.1)


def test_an_unfinished_handshake_is_closed_without_a_word(net: Net) -> None:
    """The server gives the handshake 10 s (§8.6), then closes, sending nothing more."""
    client = net.connect()
    client.noise.set_as_initiator()
    client.noise.set_prologue(PREAMBLE)
    client.noise.set_keypair_from_private_bytes(Keypair.STATIC, os.urandom(32))
    client.noise.start_handshake()
    client.sock.sendall(PREAMBLE + client.frame(bytes(client.noise.write_message(b""))))
    assert client.read_exact(8) == PREAMBLE
    assert len(client.read_frame()) == 96
    client.expect_eof()  # message 3 never comes: no channel, so no Bye


def test_eof_in_the_middle_of_a_frame_gets_a_bye(net: Net) -> None:
    client = net.connect()
    client.handshake()
    client.sock.sendall(client.seal(["ping", 1])[:10])
    client.sock.shutdown(socket.SHUT_WR)
    assert expect_bye_then_eof(client) == "the peer closed the connection in the middle of a frame"


def test_nothing_after_a_bye_is_read(net: Net) -> None:
    client = net.connect()
    client.handshake()
    client.sock.sendall(client.seal(["bye", ""]) + struct.pack(">I", 0))
    client.expect_eof()  # the bad frame after the Bye is not even looked at: no Bye back


def test_a_name_over_its_limit_ends_the_session(net: Net) -> None:
    client = net.connect()
    client.handshake()
    client.send(login("\N{GRINNING FACE}" * 33, PASSWORD))  # 33 code points > MAX_USERNAME
    expect_bye_then_eof(client)


def test_a_record_not_allowed_before_login_ends_the_session(net: Net) -> None:
    client = net.connect()
    client.handshake()
    client.send(["join", "lab"])
    expect_bye_then_eof(client)


def test_a_server_record_from_the_client_ends_the_session(net: Net) -> None:
    client, _ = net.session("frank")
    client.send(["auth", "frank"])
    expect_bye_then_eof(client)


def test_a_login_after_login_ends_the_session(net: Net) -> None:
    client, _ = net.session("frank")
    client.send(login("frank", PASSWORD))
    expect_bye_then_eof(client)


def test_an_unknown_tag_ends_the_session(net: Net) -> None:
    client, _ = net.session("frank")
    client.send(["no-such-record", 1])
    expect_bye_then_eof(client)


@pytest.mark.parametrize(
    "plaintext",
    [
        msgspec.msgpack.encode(["ping", "seven"]),  # a string where an int is expected
        msgspec.msgpack.encode(["ping", 2**63]),  # above MAX_UINT
        msgspec.msgpack.encode(["ping", -1]),  # ints are never negative
        msgspec.msgpack.encode({"ping": 7}),  # a map, not an array
        msgspec.msgpack.encode([]),  # an empty array
        msgspec.msgpack.encode(["ping", 7]) + b"\xc0",  # bytes after the record
        msgspec.msgpack.encode(["msg", "x" * 8001, "general"]),  # above MAX_TEXT
        msgspec.msgpack.encode(["msg", "ok", "general", "", "", 0, "", float("nan")]),
        b"\xa4ping",  # a string, not an array
        msgspec.msgpack.encode(["PING", 7]),  # tags are case-sensitive
        msgspec.msgpack.encode(["ping", True]),  # a boolean where an int is expected
        msgspec.msgpack.encode(["ping", 7.0]),  # a float where an int is expected
        b"\x92\xa5leave\xa1\xff",  # a known string field that is not UTF-8
        b"\x92\xa4ping\xd4\x01\x00",  # an extension type in a known field
        msgspec.msgpack.encode(["leave", None]),  # nil where the type does not allow it
    ],
)
def test_a_record_that_does_not_decode_ends_the_session(net: Net, plaintext: bytes) -> None:
    client, _ = net.session("frank")
    client.send_plaintext(plaintext)
    expect_bye_then_eof(client)


def test_a_short_or_forged_transport_message_ends_the_session(net: Net) -> None:
    short = net.connect()
    short.handshake()
    short.sock.sendall(short.frame(bytes(TAG_SIZE - 1)))
    expect_bye_then_eof(short)
    forged = net.connect()
    forged.handshake()
    frame = bytearray(forged.seal(["ping", 1]))
    frame[-1] ^= 1  # one bit of the tag
    forged.sock.sendall(bytes(frame))
    expect_bye_then_eof(forged)


def test_errors_leave_the_session_open(net: Net) -> None:
    """Refused requests get an Error with the documented code and ref (§9.11); the session goes
    on. A server limit below the wire's (4000 code points of text) is such an Error."""
    client, _ = net.session("judy")
    client.send(message("x" * 4001, room="general", client_id="judy-long"))
    error = client.expect("error")
    assert error[1] == "too_long"
    assert error[3] == "judy-long"
    client.send(["join", "Not A Room"])
    assert client.expect("error")[1::2] == ["bad_room", "Not A Room"]
    client.send(["history?", "general", "judy", 0, 10])
    assert client.expect("error")[1::2] == ["bad_target", ":history"]
    client.send(["leave", "general"])
    assert client.expect("error")[1::2] == ["cannot_leave", "general"]
    client.send(message("to nobody", to="no-such-user", client_id="judy-nobody"))
    assert client.expect("error")[1::2] == ["no_such_user", "judy-nobody"]
    client.send(["ping", 2**63 - 1])
    assert client.recv() == ["pong", 2**63 - 1]
    client.bye()


def test_extra_trailing_elements_and_missing_defaults_are_accepted(net: Net) -> None:
    client, _ = net.session("judy")
    client.send(["ping", 5, "extra", b"\x00", [1, 2]])
    assert client.recv() == ["pong", 5]
    client.send(["ping"])  # nonce defaults to 0
    assert client.recv() == ["pong", 0]
    client.send(["msg", "short form", "general", "", "judy-1"])
    assert client.expect("ack")[1] == "judy-1"
    client.send(["msg", "int ts", "general", "", "judy-2", 0, "", 0, None])  # int as float
    assert client.expect("ack")[1] == "judy-2"
    float32 = b"\x99\xa3msg\xa1x\xa7general\xa0\xa6judy-3\x00\xa0\xca\x00\x00\x00\x00\xc0"
    client.send_plaintext(float32)
    assert client.expect("ack")[1] == "judy-3"
    client.bye()


@pytest.mark.parametrize(
    "plaintext",
    [
        b"\x92\xa4ping\xcf\x00\x00\x00\x00\x00\x00\x00\x07",  # nonce as uint64
        b"\x92\xa4ping\xd3\x00\x00\x00\x00\x00\x00\x00\x07",  # nonce as int64
        b"\x92\xd9\x04ping\x07",  # the tag as str8
        b"\xdd\x00\x00\x00\x02\xa4ping\x07",  # the array as array32
        b"\x93\xa4ping\x07\xd4\x01\x00",  # an extension type in an extra element
        b"\x93\xa4ping\x07\xa1\xff",  # invalid UTF-8 in an extra element
    ],
)
def test_any_valid_msgpack_form_is_accepted(net: Net, plaintext: bytes) -> None:
    """§6.1: receivers accept every valid form, and skip extra elements without validation."""
    client = net.connect()
    client.handshake()
    client.send_plaintext(plaintext)
    assert client.recv() == ["pong", 7]
    client.bye()


# --- 6. Rekeying --------------------------------------------------------------------------------


def test_rekeying_in_both_directions(net: Net) -> None:
    """Cross REKEY_INTERVAL both ways with Pings: each is answered with a Pong (§5.2, §8.4)."""
    client, _ = net.session("grace")
    batch = 4096
    target = REKEY_INTERVAL + 64 - client.sent
    nonce = 0
    while nonce < target:
        count = min(batch, target - nonce)
        client.sock.sendall(b"".join(client.seal(["ping", nonce + i]) for i in range(count)))
        for i in range(count):
            assert client.expect("pong") == ["pong", nonce + i]
        nonce += count
    assert client.sent > REKEY_INTERVAL
    assert client.received > REKEY_INTERVAL
    # Both directions are under their second key now, and the session goes on.
    client.send(message("still here", room="general", client_id="grace-after-rekey"))
    assert client.expect("ack")[1] == "grace-after-rekey"
    client.send(["rooms?"])
    assert any(room[0] == "general" for room in client.expect("rooms")[1])
    client.bye()
