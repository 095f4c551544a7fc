"""Two connections wired back to back in memory: the deterministic harness for protocol tests.

Bytes written by one side are delivered to the other in pieces whose sizes come from a seeded
random generator (anything from one byte to all that is in flight), so a test can replay the
exact same interleaving from its seed. Keys are derived from the same generator unless given.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from sealchat.core import (
    NEED_DATA,
    Connection,
    ConnectionClosed,
    Event,
    PeerKeyReceived,
    Role,
)


class Endpoint:
    """One side of the pair: its connection, the events it produced, bytes on their way in."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.events: list[Event] = []
        self.inbox = bytearray()
        self.sent = bytearray()
        """Every byte this side has written, in order: the transcript of its direction."""
        self.eof_pending = False
        self.closed = False

    def __repr__(self) -> str:
        return f"<Endpoint {self.conn!r} events={len(self.events)}>"

    def drain(self, on_peer_key: Callable[[Connection, PeerKeyReceived], None]) -> None:
        """Collect events until the connection needs data or has closed."""
        while not self.closed:
            event = self.conn.next_event()
            if event is NEED_DATA:
                return
            self.events.append(event)
            if isinstance(event, PeerKeyReceived):
                on_peer_key(self.conn, event)
            elif isinstance(event, ConnectionClosed):
                self.closed = True

    def take_events(self) -> list[Event]:
        """The events collected so far, clearing the list."""
        events, self.events = self.events, []
        return events


def accept_any(conn: Connection, _event: PeerKeyReceived) -> None:
    """The default peer-key policy of the pair: trust whatever key the server shows."""
    conn.accept_peer()


class MemoryPair:
    """A client and a server connection joined in memory, pumped by a seeded generator.

    ``max_piece`` caps the size of one delivery (1 gives byte-by-byte delivery); ``None`` lets
    the generator pick any size up to everything in flight. Ready-made ``client`` and
    ``server`` connections may be given; otherwise they are built with keys from the generator
    and the extra keywords.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        client_key: X25519PrivateKey | None = None,
        server_key: X25519PrivateKey | None = None,
        max_piece: int | None = None,
        on_peer_key: Callable[[Connection, PeerKeyReceived], None] = accept_any,
        client: Connection | None = None,
        server: Connection | None = None,
        **connection_options: Any,
    ) -> None:
        self.rng = random.Random(seed)  # noqa: S311  (reproducible test schedules, not secrets)
        self.max_piece = max_piece
        self.on_peer_key = on_peer_key
        self.client_key = client_key or self._derive_key()
        self.server_key = server_key or self._derive_key()
        self.client = Endpoint(
            client
            or Connection(
                Role.CLIENT,
                static_key=self.client_key,
                generate_keypair=self._derive_key,
                **connection_options,
            )
        )
        self.server = Endpoint(
            server
            or Connection(
                Role.SERVER,
                static_key=self.server_key,
                generate_keypair=self._derive_key,
                **connection_options,
            )
        )

    def _derive_key(self) -> X25519PrivateKey:
        return X25519PrivateKey.from_private_bytes(self.rng.randbytes(32))

    def handshake(self) -> None:
        """Run the handshake (and anything already queued) to completion."""
        self.client.conn.initiate()
        self.pump()

    def close(self, side: Endpoint) -> None:
        """Deliver EOF to ``side`` once everything in flight to it has arrived."""
        side.eof_pending = True

    def pump(self, *, max_steps: int = 1_000_000) -> int:
        """Move bytes both ways in random pieces until nothing is in flight; returns the number
        of deliveries. Raises ``RuntimeError`` if that takes more than ``max_steps``."""
        steps = 0
        while True:
            self._collect_output()
            ready = [side for side in (self.client, self.server) if self._has_input(side)]
            if not ready:
                return steps
            steps += 1
            if steps > max_steps:
                raise RuntimeError(f"pump did not settle within {max_steps} deliveries")
            self._deliver(self.rng.choice(ready))

    def _collect_output(self) -> None:
        for source, target in ((self.client, self.server), (self.server, self.client)):
            data = source.conn.data_to_send()
            source.sent += data
            target.inbox += data

    @staticmethod
    def _has_input(side: Endpoint) -> bool:
        return bool(side.inbox) or (side.eof_pending and not side.closed)

    def _deliver(self, side: Endpoint) -> None:
        if side.inbox:
            limit = len(side.inbox) if self.max_piece is None else self.max_piece
            size = self.rng.randint(1, min(limit, len(side.inbox)))
            piece = bytes(side.inbox[:size])
            del side.inbox[:size]
            side.conn.receive_data(piece)
        elif side.eof_pending:
            side.eof_pending = False
            side.conn.receive_data(b"")
        side.drain(self.on_peer_key)
        if side.closed:
            side.eof_pending = False
            side.inbox.clear()
