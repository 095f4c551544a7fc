"""Issue 2 benchmarks: the protocol core against bare cryptography in the same run.

(a) full handshakes through two Connections vs the same X25519/HKDF/AES-GCM/SHA-256 calls made
    directly; (b) 100-byte chat messages client→server through the pair vs bare AES-GCM
    encrypt+decrypt of the same payloads; (c) 60 KiB file chunks likewise, in MB/s, and once
    more with the records encoded beforehand, which shows what the encoding's copy costs.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable, Sequence

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bench.harness import Row, interleaved
from sealchat.core import (
    NEED_DATA,
    Authenticated,
    Connection,
    FileChunk,
    Message,
    Record,
    Role,
)
from sealchat.core.codec import encode_record
from sealchat.transports.memory import MemoryPair

CLIENT_KEY = X25519PrivateKey.generate()
SERVER_KEY = X25519PrivateKey.generate()


def _handshake_once() -> None:
    client = Connection(Role.CLIENT, static_key=CLIENT_KEY)
    server = Connection(Role.SERVER, static_key=SERVER_KEY)
    client.initiate()
    server.receive_data(client.data_to_send())
    assert server.next_event() is NEED_DATA
    client.receive_data(server.data_to_send())
    client.next_event()  # PeerKeyReceived
    client.accept_peer()
    client.next_event()  # KeysEstablished
    server.receive_data(client.data_to_send())
    server.next_event()  # KeysEstablished


def _hkdf2(chaining_key: bytes, ikm: bytes) -> tuple[bytes, bytes]:
    temp = hmac.digest(chaining_key, ikm, "sha256")
    out1 = hmac.digest(temp, b"\x01", "sha256")
    return out1, hmac.digest(temp, out1 + b"\x02", "sha256")


def _bare_handshake_once() -> None:
    """The primitive operations of one XX handshake (both sides), with nothing around them."""
    raw = X25519PublicKey.from_public_bytes
    ie, re = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    ie_pub, re_pub = ie.public_key().public_bytes_raw(), re.public_key().public_bytes_raw()
    is_pub = CLIENT_KEY.public_key().public_bytes_raw()
    rs_pub = SERVER_KEY.public_key().public_bytes_raw()
    # 6 DH: ee, es, se on each side, with the received keys parsed.
    secrets = [
        re.exchange(raw(ie_pub)),
        SERVER_KEY.exchange(raw(ie_pub)),
        re.exchange(raw(is_pub)),
        ie.exchange(raw(re_pub)),
        ie.exchange(raw(rs_pub)),
        CLIENT_KEY.exchange(raw(re_pub)),
    ]
    # 8 HKDF: three MixKey and one Split per side.
    ck = bytes(32)
    for secret in [*secrets, b"", b""]:
        ck, _ = _hkdf2(ck, secret)
    # 16 MixHash.
    h = bytes(32)
    for _ in range(16):
        h = hashlib.sha256(h + ie_pub).digest()
    # 6 handshake keys and 4 transport keys, 8 AEAD operations (s twice, two payloads, each
    # encrypted on one side and decrypted on the other).
    keys = [AESGCM(ck) for _ in range(10)]
    nonce = bytes(12)
    for key, plaintext in zip(keys[:4], [is_pub, b"", rs_pub, b""], strict=True):
        key.decrypt(nonce, key.encrypt(nonce, plaintext, h), h)


def handshakes(count: int = 200) -> Row:
    def ours() -> int:
        for _ in range(count):
            _handshake_once()
        return count

    def bare() -> int:
        for _ in range(count):
            _bare_handshake_once()
        return count

    mine, ceiling = interleaved(ours, bare)
    return Row("(a) full XX handshakes", "/s", mine, ceiling, "bare primitives", 0.75)


def _ready_pair() -> MemoryPair:
    pair = MemoryPair(seed=1)
    pair.handshake()
    pair.server.conn.send(Authenticated(username="bench"))
    pair.pump()
    return pair


def _through_pair(
    records: Sequence[Record], batch: int, encoded: bytes | None = None
) -> Callable[[], int]:
    """Sending ``records`` client→server, ``batch`` at a time per write (as a transport that
    writes every pending frame in one call), as a repeatable unit of work; with ``encoded``,
    each is sent as that encoding (as a broadcast sends the one encoding of its record)."""
    pair = _ready_pair()
    client, server = pair.client.conn, pair.server.conn
    batches = [records[i : i + batch] for i in range(0, len(records), batch)]

    def run() -> int:
        received = 0
        send, next_event = client.send, server.next_event
        for group in batches:
            for record in group:
                send(record, encoded=encoded)
            server.receive_data(client.data_to_send())
            while next_event() is not NEED_DATA:
                received += 1
        assert received == len(records)
        return received

    return run


def _bare_aead(payloads: Sequence[bytes]) -> Callable[[], int]:
    """AES-256-GCM encrypt and decrypt of each payload with a counter nonce: the ceiling."""
    key = AESGCM(os.urandom(32))

    def run() -> int:
        for n, payload in enumerate(payloads):
            nonce = bytes(4) + n.to_bytes(8, "big")
            key.decrypt(nonce, key.encrypt(nonce, payload, None), None)
        return len(payloads)

    return run


def messages(count: int = 5000) -> Row:
    text = "m" * 100
    records = [Message(text=text, room="general", client_id=f"c{i}") for i in range(count)]
    payloads = [text.encode()] * count
    mine, ceiling = interleaved(_through_pair(records, 100), _bare_aead(payloads))
    return Row(
        "(b) 100-byte messages client→server", "msg/s", mine, ceiling, "bare AES-GCM enc+dec", 0.35
    )


def chunks(count: int = 400) -> list[Row]:
    size = 60 * 1024
    data = os.urandom(size)
    records = [FileChunk(transfer=1, offset=i * size, data=data) for i in range(count)]
    # The second measures the same without the copy the encoding makes (one encoding, made
    # beforehand, stands for all: only the offsets differ), to show what that copy costs.
    mine, encoded, ceiling = interleaved(
        _through_pair(records, 8),
        _through_pair(records, 8, encode_record(records[0])),
        _bare_aead([data] * count),
    )
    mb = size / 1e6
    bare = "bare AES-GCM enc+dec"
    return [
        Row("(c) 60 KiB file chunks", "MB/s", mine * mb, ceiling * mb, bare, 0.75),
        Row("(c) the same, encoded beforehand", "MB/s", encoded * mb, ceiling * mb, bare),
    ]


def run() -> list[Row]:
    return [handshakes(), messages(), *chunks()]
