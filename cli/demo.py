"""``sealchat demo``: a real handshake and session between two in-memory peers, narrated."""

from __future__ import annotations

import secrets
import time

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from sealchat.core import (
    Authenticated,
    Bye,
    Connection,
    KeysEstablished,
    Login,
    Message,
    PeerKeyReceived,
)
from sealchat.transports.memory import MemoryPair


def run_demo() -> int:
    """Handshake, log in, exchange a message and say goodbye; print what each side saw."""
    shown: list[str] = []

    def trust_on_first_use(conn: Connection, event: PeerKeyReceived) -> None:
        shown.append(event.fingerprint)
        conn.accept_peer()

    pair = MemoryPair(
        seed=int(time.time()),
        client_key=X25519PrivateKey.generate(),
        server_key=X25519PrivateKey.generate(),
        on_peer_key=trust_on_first_use,
    )
    started = time.perf_counter()
    pair.handshake()
    elapsed = time.perf_counter() - started
    established = next(e for e in pair.server.events if isinstance(e, KeysEstablished))
    print("sealchat demo: Noise_XX_25519_AESGCM_SHA256 between two in-memory peers")
    print(f"  client saw server key {shown[0]}")
    print(f"  server saw client key {established.fingerprint}")
    print(f"  handshake hash        {established.handshake_hash.hex()[:32]}…")
    print(f"  handshake took        {elapsed * 1e3:.2f} ms")
    pair.client.conn.send(Login(username="demo", password=secrets.token_urlsafe(16)))
    pair.pump()
    pair.server.conn.send(Authenticated(username="demo"))
    pair.pump()
    pair.client.conn.send(Message(text="hello over Noise", room="general", client_id="1"))
    pair.pump()
    pair.client.conn.send(Bye(reason="demo over"))
    pair.pump()
    print("  server received:")
    for event in pair.server.events:
        print(f"    {event!r}")
    print(f"  bytes on the wire: {len(pair.client.sent)} up, {len(pair.server.sent)} down")
    return 0
