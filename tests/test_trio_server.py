"""The trio server's own machinery, on trio's mock clock (the conformance suite checks what
both servers do, over real sockets)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from sealchat.core import Message, State
from sealchat.core.hub import Hub
from sealchat.transports.server_config import ServerConfig
from sealchat.transports.sqlite_store import SqliteStore
from sealchat.transports.trio_server import TICK, TrioServer, _Peer
from tests.pairs import ready_pair

LONG = "\U0001f600" * 4000
"""The longest message (by default): 16,000 bytes encoded."""


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


@pytest.fixture
def server(tmp_path: Path) -> Iterator[TrioServer]:
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
