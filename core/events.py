"""Connection-level events: what the connection reports that never travels as a record."""

from __future__ import annotations

import enum
from typing import Final, Literal

import msgspec

from sealchat.core.records import Record


class _Sentinel(enum.Enum):
    NEED_DATA = "NEED_DATA"


NEED_DATA: Final = _Sentinel.NEED_DATA
"""Returned by ``next_event()`` when it needs more bytes from the peer."""

NeedData = Literal[_Sentinel.NEED_DATA]


class ConnectionEvent(msgspec.Struct, frozen=True, kw_only=True):
    """Base of the events produced by the connection itself."""


class PeerKeyReceived(ConnectionEvent, frozen=True, kw_only=True):
    """Client only, after handshake message 2: the server's static key, for the application to
    check against its pins. Call ``accept_peer()`` or ``reject_peer(reason)`` next."""

    public_key: bytes
    fingerprint: str

    def __repr__(self) -> str:
        return f"PeerKeyReceived(fingerprint={self.fingerprint!r})"

    def __rich_repr__(self) -> list[tuple[str, object]]:
        return [("fingerprint", self.fingerprint)]


class KeysEstablished(ConnectionEvent, frozen=True, kw_only=True):
    """The handshake is complete: records may flow. ``handshake_hash`` binds the channel."""

    peer_key: bytes
    fingerprint: str
    handshake_hash: bytes

    def __repr__(self) -> str:
        return f"KeysEstablished(fingerprint={self.fingerprint!r})"

    def __rich_repr__(self) -> list[tuple[str, object]]:
        return [("fingerprint", self.fingerprint)]


class ConnectionClosed(ConnectionEvent, frozen=True, kw_only=True):
    """The connection is over. ``clean`` is true when it ended with a Bye (ours or the peer's),
    false when it was cut short (lost, timed out, or the peer key was rejected)."""

    reason: str
    clean: bool = False


Event = Record | ConnectionEvent
"""Anything ``next_event()`` returns besides NEED_DATA."""
