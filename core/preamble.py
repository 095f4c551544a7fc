"""The 8-byte plaintext preamble each side sends before the Noise handshake."""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

from sealchat.core.errors import RemoteProtocolError

MAGIC: Final = b"SLCH"
_FORMAT: Final = struct.Struct(">4sBBH")


class Version(NamedTuple):
    """A protocol version: peers interoperate when their majors are equal."""

    major: int
    minor: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"


PROTOCOL_VERSION: Final = Version(1, 0)


def encode_preamble(version: Version = PROTOCOL_VERSION) -> bytes:
    """``b"SLCH"``, major (u8), minor (u8), two zero bytes."""
    return _FORMAT.pack(MAGIC, version.major, version.minor, 0)


def parse_preamble(data: bytes, *, peer: str) -> Version:
    """Check a peer's preamble and return its version.

    ``peer`` ("client" or "server") names the other side in error messages. A wrong magic or a
    different major version is a ``RemoteProtocolError`` that says what was received.
    """
    magic, major, minor, _reserved = _FORMAT.unpack(data)
    if magic != MAGIC:
        raise RemoteProtocolError(
            f"the {peer} does not speak the sealchat protocol (its first bytes were {data!r})"
        )
    theirs = Version(major, minor)
    if major != PROTOCOL_VERSION.major:
        raise RemoteProtocolError(
            f"protocol version mismatch: the {peer} speaks sealchat {theirs}, "
            f"this side speaks sealchat {PROTOCOL_VERSION}; "
            f"both must share the major version"
        )
    return theirs
