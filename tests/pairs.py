"""Helpers that bring a memory pair to a given state."""

from __future__ import annotations

from typing import Any

from sealchat.core import NEED_DATA, Authenticated, Connection, Event
from sealchat.transports.memory import MemoryPair


def open_pair(seed: int = 0, **options: Any) -> MemoryPair:
    """A pair whose handshake is complete (both in LOGIN), events cleared."""
    pair = MemoryPair(seed=seed, **options)
    pair.handshake()
    pair.client.take_events()
    pair.server.take_events()
    return pair


def ready_pair(seed: int = 0, **options: Any) -> MemoryPair:
    """A pair whose session is authenticated (both in READY), events cleared."""
    pair = open_pair(seed, **options)
    pair.server.conn.send(Authenticated(username="esha"))
    pair.pump()
    pair.client.take_events()
    return pair


def events_from(conn: Connection, data: bytes, limit: int = 1000) -> list[Event]:
    """Feed ``data`` to ``conn`` and collect events until it needs more."""
    conn.receive_data(data)
    events: list[Event] = []
    for _ in range(limit):
        event = conn.next_event()
        if event is NEED_DATA:
            return events
        events.append(event)
        if type(event).__name__ == "ConnectionClosed":
            return events
    raise AssertionError("next_event() did not settle")


def forge(conn: Connection, payload: bytes) -> None:
    """Queue ``payload`` as one encrypted record whatever the rules say, as a hostile peer
    would (``send`` refuses such records). For a last record or a few: the rekey count is not
    kept."""
    cipher = conn._send_cipher
    assert cipher is not None
    ciphertext = cipher.encrypt_with_ad(None, payload)
    conn._out += [len(ciphertext).to_bytes(4, "big"), ciphertext]
