"""Settings shared by the trio and the threaded servers."""

from __future__ import annotations

from dataclasses import dataclass, field

from sealchat.core.hub import HubConfig
from sealchat.core.limits import MAX_CHUNK
from sealchat.transports.passwords import DEFAULT, Argon2Params

MiB = 1 << 20
STREAM_READ_CHUNKS = 16
"""Most FileChunks' worth of a download read from disk in one call (about 1 MiB)."""
UPLOAD_CHECKS = 2
"""Completed uploads read back and hashed at once, off the hub's thread (``VerifyUpload``:
the store kept no SHA-256 of them, after a restart say). Each reads a whole file, about a
second per GiB; more at once would only share the disk's speed among them."""
WRITE_SLICE = 64 * 1024
"""Most bytes handed to the socket in one call. Each slice must be taken within
``write_timeout``, which runs from the last slice written: so a peer must take at least this
much every ``write_timeout`` while output waits for it (about 2.2 KB/s with the defaults),
however much output was queued at once. Smaller slices would lower that floor further, at a
call each: 64 KiB slices cost the server about 4 ms more CPU per 64 MiB downloaded than
256 KiB ones did (some 4% of its work, below the benchmark's noise); 32 KiB ones, 17 ms."""


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """How a server listens and how it protects itself from slow or hostile peers."""

    host: str = "127.0.0.1"
    port: int = 7878
    max_connections: int = 10_000
    max_connections_per_address: int = 128
    """Connections open at once from one address (an IPv4 address, or an IPv6 /64 network:
    ``server_limits.address_key``); the next one is closed at once. So that one address
    cannot take every connection: it would take 79 addresses to fill ``max_connections``.
    128 fits an office of 50 people behind one NAT with two or three clients each (desktop,
    phone, a terminal), with room to spare."""
    max_unauthenticated_per_address: int = 32
    """Of those, connections that have not logged in yet (in the handshake, or with a login
    being checked); the next one is closed at once. These cost an attacker no account, so
    they get a smaller share: 313 addresses to fill ``max_connections``. A connection is in
    this state for a handshake and a password check, well under a second, so an office
    logging in at 9:00 rarely has more than a few at once; after a server restart, all its
    clients come back within a second or two, and those turned away try again a moment
    later (as ``max_pending_logins``, 16, turns away the 17th login checked at once)."""
    address_connections_per_second: float = 20.0
    """New connections one address may open a second, on average (a token bucket of
    ``address_connection_burst``); past it, the next one is closed at once. Each costs the
    server a handshake (two Diffie-Hellman operations and a key pair, some 0.2 ms of its one
    event loop) while its peer spends nothing but a few random bytes: without this, one host
    opening and closing connections as fast as it can, never more than the caps above at
    once, keeps the server busy for everyone. 20 a second is 0.4% of a core per address."""
    address_connection_burst: int = 200
    """New connections one address may open at once before ``address_connections_per_second``
    applies: an office behind one NAT reconnecting all its clients after a server restart."""
    handshake_timeout: float = 10.0
    keepalive_interval: float = 30.0
    write_timeout: float = 30.0
    """A peer that does not take a slice of its output (``WRITE_SLICE``, at most 64 KiB)
    within this is dropped: a peer must take at least 64 KiB every ``write_timeout`` while
    output waits for it. The keepalive leaves a peer alone while output waits for it (this
    governs it then), so a peer that reads at least that fast is never cut off."""
    max_outgoing_bytes: int = 8 * MiB
    """Bytes queued for one peer before it counts as not reading and is dropped."""
    max_outgoing_total: int = 256 * MiB
    """Bytes of output held for all peers together (queued, or taken by a writer and not yet
    written). When more would be held, the peers holding the most are dropped until it is
    under seven eighths of this (``output_budget``): without it, 10,000 peers that do not
    read could make the server hold 80 GiB. 256 MiB is what 32 peers at
    ``max_outgoing_bytes`` hold, or 10,000 peers 26 KiB each; peers that keep up hold next
    to nothing, and a download holds at most ``stream_window``."""
    reply_window: int = 2 * MiB
    """A peer's next records are handled only while less than this waits for it to read:
    one that asks without reading its answers gets no more work done (see
    ``sealchat.core.hub.batching``)."""
    stream_window: int = 1 * MiB
    """A download streams while less than this is queued for its connection; each read
    fills what is left of it (see ``stream_read_size``)."""
    password_threads: int = 2
    """Argon2id checks that may run at once (each takes 19 MiB and tens of milliseconds)."""
    argon2: Argon2Params = DEFAULT
    hub: HubConfig = field(default_factory=HubConfig)


def stream_read_size(config: ServerConfig, queued: int, remaining: int) -> int:
    """Bytes of a download to read in one go while ``queued`` bytes wait for the peer and
    ``remaining`` are left of the file: whole chunks filling what the stream window has left,
    at least one and at most STREAM_READ_CHUNKS, never past the end."""
    room = (config.stream_window - queued) // MAX_CHUNK
    return min(max(1, min(STREAM_READ_CHUNKS, room)) * MAX_CHUNK, remaining)
