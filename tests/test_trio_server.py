"""The trio server's own machinery, on trio's mock clock (the conformance suite checks what
both servers do, over real sockets)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import TypeVar

import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from sealchat.core import Bye, Connection, ConnectionClosed, Message, Ping, State
from sealchat.core.hub import Hub
from sealchat.transports import trio_server
from sealchat.transports.server_config import WRITE_SLICE, ServerConfig
from sealchat.transports.server_limits import STOPPED_READING, WENT_AWAY
from sealchat.transports.sqlite_store import SqliteStore
from sealchat.transports.trio_server import TICK, TrioServer, _Peer
from tests.pairs import events_from, ready_pair

T = TypeVar("T")
LONG = "\U0001f600" * 4000
"""The longest message (by default): 16,000 bytes encoded."""
FLOOR = 64 * 1024 / 30.0
"""The slowest steady reader that is kept, as the protocol doc (9.12) states it: 64 KiB
every write_timeout (30 s), about 2.2 KB/s."""


class Link:
    """The server's end of a TCP connection to a peer that takes ``rate`` bytes a second (on
    trio's clock), and nothing more once it has taken ``stall_after`` bytes."""

    def __init__(self, rate: float, stall_after: int | None = None) -> None:
        self.rate = rate
        self.stall_after = stall_after
        self.taken = bytearray()
        self.stalled_at: float | None = None
        self.socket = SimpleNamespace(getpeername=lambda: ("192.0.2.7", 40000))

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.stall_after is not None and len(self.taken) + len(data) > self.stall_after:
            self.stalled_at = trio.current_time()
            await trio.sleep_forever()
        await trio.sleep(len(data) / self.rate)
        self.taken += data


class TalkingLink:
    """The server's end of a TCP connection to a peer that reads ``rate`` bytes a second (on
    trio's clock, a piece at a time) as a client connection (``peer``) does: it answers each
    Ping as soon as it has read it and sends nothing else, until ``silent`` is set. The
    socket holds up to ``buffer`` bytes written and not yet read (the peer's TCP acknowledges
    what the peer reads): a write returns once what it wrote fits. Once it has read
    ``stall_after`` bytes, the peer reads nothing more; once it has been written
    ``reset_after`` bytes, it resets the connection (the write fails). The Pings and Byes it
    reads are in ``read``, with the time it read them. ``read_all`` is the peer's reading."""

    PIECE = 4096

    def __init__(
        self,
        rate: float,
        peer: Connection,
        *,
        buffer: int = 0,
        stall_after: int | None = None,
        reset_after: int | None = None,
    ) -> None:
        self.rate = rate
        self.peer = peer
        self.buffer = buffer
        self.stall_after = stall_after
        self.reset_after = reset_after
        self.written = 0
        self.silent = False
        self.taken = bytearray()
        self.stalled_at: float | None = None
        self.read: list[tuple[float, object]] = []
        self._unread = bytearray()
        self._moved = trio.Event()
        self._replies, self._replies_in = trio.open_memory_channel[bytes](math.inf)
        self.socket = SimpleNamespace(
            getpeername=lambda: ("192.0.2.7", 40000), unacknowledged=lambda: len(self._unread)
        )

    def _move(self) -> None:
        self._moved.set()
        self._moved = trio.Event()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.reset_after is not None and self.written + len(data) > self.reset_after:
            raise trio.BrokenResourceError("[Errno 104] Connection reset by peer")
        self.written += len(data)
        self._unread += data
        self._move()
        while len(self._unread) > self.buffer:
            await self._moved.wait()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return await self._replies_in.receive()

    async def read_all(self) -> None:
        while True:
            while not self._unread:
                await self._moved.wait()
            piece = bytes(self._unread[: self.PIECE])
            if self.stall_after is not None and len(self.taken) + len(piece) > self.stall_after:
                self.stalled_at = trio.current_time()
                await trio.sleep_forever()
            await trio.sleep(len(piece) / self.rate)
            del self._unread[: len(piece)]
            self.taken += piece
            self._move()
            for event in events_from(self.peer, piece):
                if isinstance(event, Ping | Bye):
                    self.read.append((trio.current_time(), event))
            reply = self.peer.data_to_send()
            if reply and not self.silent:
                self._replies.send_nowait(reply)


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TrioServer]:
    # What the socket holds unacknowledged, for the keepalive: a TalkingLink says.
    monkeypatch.setattr(trio_server, "unacknowledged", lambda sock: sock.unacknowledged())
    with SqliteStore(tmp_path, database=":memory:") as store:
        yield TrioServer(Hub(store), X25519PrivateKey.generate(), ServerConfig())


async def _write_out(server: TrioServer, link: Link, messages: int) -> _Peer:
    """Queue ``messages`` LONG messages at once for a peer on ``link`` (as a replay page did)
    and run the peer's writer with the server's watchdog, until the peer has taken them
    all or is cut off; returns the peer."""
    peer = _Peer(server, 1, link, "192.0.2.7", "192.0.2.7")  # type: ignore[arg-type]
    peer.conn = ready_pair().server.conn
    server._peers[peer.session] = peer
    for n in range(messages):
        peer.conn.send(Message(text=LONG, to="bob", id=n + 1, sender="alice", ts=1.0))
    queued = peer.conn.bytes_to_send
    peer.output_ready.set()

    async def watchdog() -> None:
        while True:
            await trio.sleep(TICK)
            server._drop_stuck_writers()

    with peer.cancel:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watchdog)
            nursery.start_soon(server._write, peer)
            while len(link.taken) < queued:
                await trio.sleep(TICK)
            nursery.cancel_scope.cancel()
    return peer


async def test_a_slow_reader_that_keeps_taking_bytes_is_never_cut_off(
    server: TrioServer, autojump_clock: trio.testing.MockClock
) -> None:
    # 200 long messages (3.2 MB) over an 80 KB/s link take 40 s, more than write_timeout
    # (30 s): the peer is reading all along, so it gets them all. (Written in one call that
    # the watchdog timed as a whole, the peer was dropped at every login.)
    link = Link(rate=80_000)
    peer = await _write_out(server, link, 200)
    assert len(link.taken) > server.config.write_timeout * link.rate
    assert peer.conn.state is State.READY


async def test_a_reader_that_stops_taking_bytes_is_cut_off_after_write_timeout(
    server: TrioServer, autojump_clock: trio.testing.MockClock
) -> None:
    link = Link(rate=80_000, stall_after=1_000_000)
    peer = await _write_out(server, link, 200)
    assert link.stalled_at is not None
    assert len(link.taken) <= 1_000_000
    assert peer.conn.state is State.ERROR
    assert trio.current_time() >= link.stalled_at + server.config.write_timeout


async def _serve(server: TrioServer, peer: _Peer, until: Callable[[], bool]) -> None:
    """Run ``peer``'s reader and writer, the server's watchdog and the peer's reading, as
    ``_handle`` does (the hub called in this thread), until ``until()`` or the connection is
    over; again and again, for a test to look in between."""
    link = peer.stream
    assert isinstance(link, TalkingLink)
    peer.cancel, peer.writer_done = trio.CancelScope(), trio.Event()

    async def in_hub(fn: Callable[..., T], *args: object) -> T:
        return fn(*args)

    server._in_hub = in_hub  # type: ignore[method-assign]

    async def watchdog() -> None:
        while True:
            await trio.sleep(TICK)
            server._drop_stuck_writers()

    async def read(cancel: trio.CancelScope) -> None:
        await server._read(peer)
        peer.output_ready.set()  # the last words go out
        await peer.writer_done.wait()
        cancel.cancel()

    with peer.cancel:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watchdog)
            nursery.start_soon(link.read_all)
            nursery.start_soon(server._write, peer)
            nursery.start_soon(read, nursery.cancel_scope)
            while not until():
                await trio.sleep(TICK)
            nursery.cancel_scope.cancel()


def _talking_peer(
    server: TrioServer,
    rate: float,
    *,
    buffer: int = 0,
    stall_after: int | None = None,
    reset_after: int | None = None,
) -> tuple[_Peer, TalkingLink]:
    """A logged-in peer on a TalkingLink, with 200 LONG messages (3.2 MB) queued for it as a
    replay page did, through ``_Peer.send`` (as the hub's deliveries go)."""
    pair = ready_pair()
    link = TalkingLink(
        rate, pair.client.conn, buffer=buffer, stall_after=stall_after, reset_after=reset_after
    )
    peer = _Peer(server, 1, link, "192.0.2.7", "192.0.2.7")  # type: ignore[arg-type]
    peer.conn = pair.server.conn
    server._peers[peer.session] = peer
    for n in range(200):
        peer.send(Message(text=LONG, to="bob", id=n + 1, sender="alice", ts=1.0))
    return peer, link


SOCKET_BUFFER = 4 * 1024 * 1024
"""What a socket's send buffer grows to (Linux takes 2.8 MB on its loopback at once)."""


@pytest.mark.parametrize("buffer", [0, SOCKET_BUFFER])
async def test_a_slow_reader_is_not_dropped_by_the_keepalive_while_its_output_is_on_its_way(
    server: TrioServer, autojump_clock: trio.testing.MockClock, buffer: int
) -> None:
    # 3.2 MB at 10 KB/s take 320 s, ten keepalive intervals; the peer answers every Ping as
    # soon as it reads it, and sends nothing else. A Ping queued behind that output cannot be
    # read before it, so the keepalive leaves alone a peer that is taking it: written by the
    # server (buffer 0) or held by its socket (which takes it all at once). (It was pinged at
    # 70 s and dropped at 100 s as 'the peer stopped responding'.)
    peer, link = _talking_peer(server, rate=10_000, buffer=buffer)
    queued = peer.conn.bytes_to_send
    await _serve(server, peer, lambda: len(link.taken) >= queued)
    assert trio.current_time() > 10 * server.config.keepalive_interval
    assert peer.conn.state is State.READY
    assert len(link.taken) == queued
    assert link.read == []  # no Ping was queued behind the output


@pytest.mark.parametrize("buffer", [0, SOCKET_BUFFER])
async def test_once_its_output_is_read_a_silent_peer_is_pinged_and_dropped(
    server: TrioServer, autojump_clock: trio.testing.MockClock, buffer: int
) -> None:
    # Nothing is on its way any more: the keepalive pings as before, and drops a peer that
    # stops answering within two intervals.
    peer, link = _talking_peer(server, rate=10_000, buffer=buffer)
    queued = peer.conn.bytes_to_send
    await _serve(server, peer, lambda: len(link.taken) >= queued)
    done = trio.current_time()
    interval = server.config.keepalive_interval
    await _serve(server, peer, lambda: trio.current_time() > done + 4 * interval)
    assert peer.conn.state is State.READY
    pings = [at for at, event in link.read if isinstance(event, Ping)]
    assert pings  # idle: pinged, and it answered
    assert pings[0] <= done + 2 * interval
    link.silent = True
    silent = trio.current_time()
    await _serve(server, peer, lambda: trio.current_time() > silent + 10 * interval)
    assert peer.conn.state is State.CLOSED
    assert peer.conn.next_event() == ConnectionClosed(reason="the peer stopped responding")
    assert trio.current_time() <= silent + 3 * interval


async def test_a_talking_reader_that_stops_taking_bytes_is_cut_off_after_write_timeout(
    server: TrioServer, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    # While its output is written the keepalive leaves a peer alone; one that stops taking it
    # is dropped by the watchdog, write_timeout after it stopped, and the log says so in one
    # line.
    caplog.set_level(logging.INFO, logger="sealchat.server")
    peer, link = _talking_peer(server, rate=10_000, stall_after=1_000_000)
    peer.user = "esha"
    await _serve(server, peer, lambda: trio.current_time() > 3600)
    assert link.stalled_at is not None
    assert peer.conn.state is State.ERROR
    assert link.stalled_at < trio.current_time()
    assert trio.current_time() <= link.stalled_at + server.config.write_timeout + 2 * TICK
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.INFO, f"peer 192.0.2.7:40000 (user esha) {STOPPED_READING}; connection dropped")
    ]


async def test_a_peer_that_resets_the_connection_mid_write_is_dropped_in_one_info_line(
    server: TrioServer, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    # Not "broke the protocol" (the connection's failure after the write's), no traceback.
    caplog.set_level(logging.INFO, logger="sealchat.server")
    peer, _link = _talking_peer(server, rate=10_000, reset_after=3 * WRITE_SLICE)
    await _serve(server, peer, lambda: trio.current_time() > 3600)
    assert peer.conn.state is State.ERROR
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.INFO, f"peer 192.0.2.7:40000 {WENT_AWAY}; connection dropped")
    ]


async def test_a_reader_that_stops_while_its_socket_holds_output_is_dropped_by_the_keepalive(
    server: TrioServer, autojump_clock: trio.testing.MockClock
) -> None:
    # The socket took everything at once, so no write waits on the peer: the keepalive
    # leaves it alone only while it keeps taking what the socket holds. Once it stops, it is
    # pinged at the next tick and dropped at the one after.
    peer, link = _talking_peer(server, rate=10_000, buffer=SOCKET_BUFFER, stall_after=1_000_000)
    await _serve(server, peer, lambda: trio.current_time() > 3600)
    assert link.stalled_at is not None
    assert peer.conn.state is State.CLOSED
    reason = "the peer stopped responding"
    assert peer.conn.next_event() == ConnectionClosed(reason=reason)
    interval = server.config.keepalive_interval
    assert trio.current_time() <= link.stalled_at + 3 * interval


@pytest.mark.parametrize(("share", "kept"), [(1.1, True), (0.9, False)])
async def test_a_peer_must_take_64_kib_every_write_timeout(
    server: TrioServer, autojump_clock: trio.testing.MockClock, share: float, kept: bool
) -> None:
    # A peer reading steadily a little faster than the floor gets all of its 3.2 MB (in
    # over 20 minutes); one a little slower is cut off at its first slice. (Slices of
    # 256 KiB made the floor 8.7 KB/s: a steady 2.4 KB/s reader was cut off at 30 s.)
    peer, link = _talking_peer(server, rate=share * FLOOR)
    queued = peer.conn.bytes_to_send
    await _serve(server, peer, lambda: len(link.taken) >= queued)
    if kept:
        assert peer.conn.state is State.READY
        assert len(link.taken) == queued
        assert trio.current_time() > 20 * 60
    else:
        assert peer.conn.state is State.ERROR
        assert len(link.taken) < WRITE_SLICE
        assert trio.current_time() <= server.config.write_timeout + 2 * TICK
