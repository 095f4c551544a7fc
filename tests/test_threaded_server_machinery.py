"""The threaded server's own machinery (the conformance suite checks what both servers do)."""

from __future__ import annotations

import errno
import socket
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from sealchat.core import Bye, Connection, Message, MessageAck, Ping, State
from sealchat.core.hub import Hub
from sealchat.core.preamble import encode_preamble
from sealchat.transports import blocking_server
from sealchat.transports.blocking_server import ThreadedServer, _Client
from sealchat.transports.server_config import ServerConfig
from sealchat.transports.sqlite_store import SqliteStore
from tests.pairs import events_from, ready_pair
from tests.servers import running_server

LONG = "\U0001f600" * 4000
"""The longest message (by default): 16,000 bytes encoded."""
FLOOR = 64 * 1024 / 30.0
"""The slowest steady reader that is kept, as the protocol doc (9.12) states it: 64 KiB
every write_timeout (30 s), about 2.2 KB/s."""


def test_a_keepalive_tick_passed_while_a_password_was_checked_keeps_the_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The connection's reader thread checks the password (or waits for the hub, or for the
    # peer to read its replies) past the moment its keepalive tick was due: the tick is run
    # late, and the connection goes on. (A wait of 0 had made its socket non-blocking: the
    # next read raised BlockingIOError and the user was dropped without a word.) The
    # server's clock jumps ahead during the check instead of the test waiting for the tick.
    ahead = 0.0

    def monotonic() -> float:
        return time.monotonic() + ahead

    clock = SimpleNamespace(monotonic=monotonic, time=time.time, sleep=time.sleep)
    monkeypatch.setattr(blocking_server, "time", clock)
    real_verify = blocking_server.verify_password

    def slow_verify(password: str, phc: str | None) -> bool:
        nonlocal ahead
        ok = real_verify(password, phc)
        ahead += 3 * 60.0  # past the first tick (handshake timeout + keepalive interval)
        return ok

    monkeypatch.setattr(blocking_server, "verify_password", slow_verify)
    with running_server("threads", tmp_path) as server, server.login("alice") as alice:
        assert ahead
        for n in range(3):
            alice.send(Message(text=f"still here {n}", room="general", client_id=f"c{n}"))
            assert alice.next(MessageAck).client_id == f"c{n}"


class SlowSocket:
    """A connected socket to a peer that takes ``rate`` bytes a second: a ``sendall`` that
    would outlast the socket's timeout raises, as the real one does (its timeout bounds the
    whole call, not each send within it)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.timeout: float | None = None
        self.taken = bytearray()

    def getpeername(self) -> tuple[str, int]:
        return ("192.0.2.7", 40000)

    def dup(self) -> SlowSocket:
        return self

    def settimeout(self, timeout: float | None) -> None:
        self.timeout = timeout

    def sendall(self, data: bytes | memoryview) -> None:
        if self.timeout is not None and len(data) / self.rate > self.timeout:
            raise TimeoutError("timed out")
        self.taken += data

    def shutdown(self, _how: int) -> None:
        pass

    def close(self) -> None:
        pass


def test_a_slow_reader_that_keeps_taking_bytes_gets_a_large_batch_whole(tmp_path: Path) -> None:
    # 200 long messages (3.2 MB) queued at once for an 80 KB/s link take 40 s to write,
    # more than write_timeout (30 s): the peer is reading all along, so it gets them all.
    with SqliteStore(tmp_path, database=":memory:") as store:
        server = ThreadedServer(Hub(store), X25519PrivateKey.generate(), ServerConfig())
        link = SlowSocket(rate=80_000)
        client = _Client(server, 1, link, "192.0.2.7", "192.0.2.7")  # type: ignore[arg-type]
        client.conn = ready_pair().server.conn
        for n in range(200):
            client.conn.send(Message(text=LONG, to="bob", id=n + 1, sender="alice", ts=1.0))
        queued = client.conn.bytes_to_send
        client.finished = True  # the writer writes everything out, then ends
        client._write()
    assert queued > server.config.write_timeout * link.rate
    assert len(link.taken) == queued
    assert client.conn.state is State.READY


class _ResetOnce:
    """A listening socket whose first accept() fails as a connection reset before it was
    taken does (a client gave up while in the backlog)."""

    def __init__(self, listener: socket.socket) -> None:
        self._listener = listener
        self.failed = False

    def accept(self) -> tuple[socket.socket, object]:
        if not self.failed:
            self.failed = True
            raise ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")
        return self._listener.accept()

    def __getattr__(self, name: str) -> object:
        return getattr(self._listener, name)


def test_a_connection_reset_in_the_backlog_costs_that_connection_only(tmp_path: Path) -> None:
    with SqliteStore(tmp_path, database=":memory:") as store:
        server = ThreadedServer(Hub(store), X25519PrivateKey.generate(), ServerConfig(port=0))
        _, port = server.bind()
        flaky = _ResetOnce(server._listener)  # type: ignore[arg-type]
        server._listener = flaky  # type: ignore[assignment]
        serving = threading.Thread(target=server.serve_forever, daemon=True)
        serving.start()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
                client.sendall(encode_preamble())
                assert client.recv(8, socket.MSG_WAITALL) == encode_preamble()
            assert flaky.failed
            assert serving.is_alive()
        finally:
            server.stop()
            serving.join(10)


class TalkingSocket(SlowSocket):
    """A SlowSocket on a clock of its own (``now``), whose peer reads what it takes as a client
    connection (``peer``) does and answers each Ping as soon as it has read it, sending
    nothing else. The server's reader thread is played where it would run while the writer
    waits in ``sendall``: each keepalive tick that falls within a write runs at its time, and
    each answer is fed to the connection as it arrives."""

    def __init__(self, rate: float, peer: Connection) -> None:
        super().__init__(rate)
        self.peer = peer
        self.client: _Client | None = None
        self.now = 0.0
        self.read: list[tuple[float, object]] = []

    def sendall(self, data: bytes | memoryview) -> None:
        assert self.client is not None
        super().sendall(data)
        end = self.now + len(data) / self.rate
        while (timer := self.client.conn.get_timer()) is not None and timer <= end:
            self.now = timer
            self.tick()
        self.now = end
        for event in events_from(self.peer, bytes(data)):
            if isinstance(event, Ping | Bye):
                self.read.append((self.now, event))
        reply = self.peer.data_to_send()
        if reply:
            with self.client.lock:  # what the reader thread does with bytes that arrive
                self.client.conn.receive_data(reply)
                self.client._take_events([])

    def tick(self) -> None:
        """What the reader thread does when the connection's timer is due."""
        assert self.client is not None
        with self.client.lock:
            self.client.conn.handle_timer(self.now)
            self.client._take_events([])


def _talking_client(server: ThreadedServer, rate: float) -> tuple[_Client, TalkingSocket]:
    """A logged-in client on a TalkingSocket, with 200 LONG messages (3.2 MB) queued for it
    as a replay page did, through ``_Client.send`` (as the hub's deliveries go)."""
    pair = ready_pair()
    link = TalkingSocket(rate=rate, peer=pair.client.conn)
    client = _Client(server, 1, link, "192.0.2.7", "192.0.2.7")  # type: ignore[arg-type]
    client.conn = pair.server.conn
    link.client = client
    for n in range(200):
        client.send(Message(text=LONG, to="bob", id=n + 1, sender="alice", ts=1.0))
    return client, link


def test_a_slow_reader_is_not_dropped_by_the_keepalive_while_its_output_is_written(
    tmp_path: Path,
) -> None:
    # 3.2 MB at 10 KB/s take 320 s, ten keepalive intervals; the peer answers every Ping as
    # soon as it reads it, and sends nothing else. A Ping queued behind that output cannot be
    # read before it, so the keepalive leaves the peer to write_timeout while it is written.
    # (It was pinged at 70 s and dropped at 100 s as 'the peer stopped responding'.) Once
    # all is written, a silent peer is pinged and dropped as before.
    with SqliteStore(tmp_path, database=":memory:") as store:
        server = ThreadedServer(Hub(store), X25519PrivateKey.generate(), ServerConfig())
        client, link = _talking_client(server, rate=10_000)
        queued = client.conn.bytes_to_send
        client.finished = True  # the writer writes everything out, then ends
        client._write()
        interval = server.config.keepalive_interval
        assert link.now > 10 * interval
        assert len(link.taken) == queued
        assert client.conn.state is State.READY
        assert link.read == []  # no Ping was queued behind the output
        for _ in range(2):  # the peer reads nothing more: the writer has ended
            timer = client.conn.get_timer()
            assert timer is not None
            assert timer < link.now + interval + 1
            link.now = timer
            link.tick()
        assert client.conn.state is State.CLOSED
        assert client.conn.data_to_send()  # the Ping and the Bye


@pytest.mark.parametrize(("share", "kept"), [(1.1, True), (0.9, False)])
def test_a_peer_must_take_64_kib_every_write_timeout(
    tmp_path: Path, share: float, kept: bool
) -> None:
    # A peer reading steadily a little faster than the floor gets all of its 3.2 MB (in
    # over 20 minutes); one a little slower is cut off at its first slice. (Slices of
    # 256 KiB made the floor 8.7 KB/s: a steady 2.4 KB/s reader was cut off at 30 s.)
    with SqliteStore(tmp_path, database=":memory:") as store:
        server = ThreadedServer(Hub(store), X25519PrivateKey.generate(), ServerConfig())
        client, link = _talking_client(server, rate=share * FLOOR)
        queued = client.conn.bytes_to_send
        client.finished = True  # the writer writes everything out, then ends
        client._write()
    if kept:
        assert client.conn.state is State.READY
        assert len(link.taken) == queued
        assert link.now > 20 * 60
    else:
        assert client.conn.state is State.ERROR
        assert link.taken == b""
