"""Full sessions through the memory pair: every record arrives as sent, however bytes are cut."""

from __future__ import annotations

import gc
import weakref

import pytest

from sealchat.core import (
    NEED_DATA,
    Bye,
    ConnectionClosed,
    KeysEstablished,
    Message,
    PeerKeyReceived,
    Ping,
    Pong,
    RemoteProtocolError,
    Role,
    State,
    fingerprint,
)
from sealchat.transports.memory import MemoryPair
from tests.samples import session_records


def public(key: object) -> bytes:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    assert isinstance(key, X25519PrivateKey)
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def run_full_session(pair: MemoryPair) -> None:
    pair.handshake()
    client_login, client_ready = session_records(Role.CLIENT)
    server_login, server_ready = session_records(Role.SERVER)
    # One login attempt in flight at a time (protocol 6.6.1): the Login is refused (what the
    # server sends before Authenticated), then the Register (and what follows) accepted.
    for sender, records in [
        (pair.client, client_login[:1]),
        (pair.server, server_login[:-1]),
        (pair.client, client_login[1:]),
        (pair.server, server_login[-1:]),
    ]:
        for record in records:
            sender.conn.send(record)
        pair.pump()
    for record in client_ready:
        pair.client.conn.send(record)
    for record in server_ready:
        pair.server.conn.send(record)
    pair.pump()
    pair.client.conn.send(Ping(nonce=9))
    pair.pump()
    pair.client.conn.send(Bye(reason="done"))
    pair.pump()
    pair.client.drain(pair.on_peer_key)


@pytest.mark.parametrize("max_piece", [None, 1], ids=["random-pieces", "byte-by-byte"])
@pytest.mark.parametrize("seed", range(4))
def test_every_record_arrives_as_sent(seed: int, max_piece: int | None) -> None:
    pair = MemoryPair(seed=seed, max_piece=max_piece)
    run_full_session(pair)
    client_login, client_ready = session_records(Role.CLIENT)
    server_login, server_ready = session_records(Role.SERVER)
    server_key, client_key = public(pair.server_key), public(pair.client_key)

    client_events = pair.client.take_events()
    assert client_events[0] == PeerKeyReceived(
        public_key=server_key, fingerprint=fingerprint(server_key)
    )
    established = client_events[1]
    assert isinstance(established, KeysEstablished)
    assert established.peer_key == server_key
    assert client_events[2:] == [
        *server_login,
        *server_ready,
        Pong(nonce=9),
        ConnectionClosed(reason="done", clean=True),
    ]

    server_events = pair.server.take_events()
    server_established = server_events[0]
    assert isinstance(server_established, KeysEstablished)
    assert server_established.peer_key == client_key
    assert server_established.fingerprint == fingerprint(client_key)
    assert server_established.handshake_hash == established.handshake_hash
    assert server_events[1:] == [
        *client_login,
        *client_ready,
        Ping(nonce=9),
        Bye(reason="done"),
        ConnectionClosed(reason="done", clean=True),
    ]
    assert pair.client.conn.state is State.CLOSED
    assert pair.server.conn.state is State.CLOSED


def test_different_seeds_and_cuts_give_identical_events() -> None:
    def events(seed: int, max_piece: int | None) -> list[object]:
        pair = MemoryPair(seed=0, max_piece=max_piece)
        pair.rng.seed(seed)  # keys fixed by seed 0 above; only the cuts differ
        run_full_session(pair)
        return [e for e in pair.server.take_events() if not isinstance(e, KeysEstablished)]

    reference = events(0, None)
    for seed, piece in [(1, None), (2, 1), (3, 7), (4, 100)]:
        assert events(seed, piece) == reference


def test_handshake_hash_differs_between_sessions() -> None:
    hashes = set()
    for seed in range(3):
        pair = MemoryPair(seed=seed)
        pair.handshake()
        (established,) = [e for e in pair.server.events if isinstance(e, KeysEstablished)]
        hashes.add(established.handshake_hash)
    assert len(hashes) == 3


def test_nothing_of_the_handshake_is_kept_after_it_noise_5_3() -> None:
    """The HandshakeState (ephemeral key, chaining key) is dropped at Split; only the peer's
    public key is kept, for ``peer_public_key``."""
    pair = MemoryPair(seed=5, on_peer_key=lambda _conn, _event: None)
    client, server = pair.client.conn, pair.server.conn
    pair.handshake()  # up to the client's decision: message 2 read, message 3 not sent
    assert client.state is State.VERIFY_PEER
    assert client.peer_public_key == public(pair.server_key)
    assert server.peer_public_key is None  # message 3 carries the client's key
    assert client._handshake is not None
    assert server._handshake is not None
    states = [weakref.ref(client._handshake), weakref.ref(server._handshake)]
    client.accept_peer()
    pair.pump()
    assert client.state is server.state is State.LOGIN
    assert client._handshake is None
    assert server._handshake is None
    gc.collect()
    assert [state() for state in states] == [None, None]  # referred to from nowhere else
    assert client.peer_public_key == public(pair.server_key)
    assert server.peer_public_key == public(pair.client_key)


def test_a_handshake_rejected_or_failed_is_dropped_too() -> None:
    rejected = MemoryPair(seed=6, on_peer_key=lambda _conn, _event: None)
    rejected.handshake()
    rejected.client.conn.reject_peer("not trusted")
    assert rejected.client.conn._handshake is None
    assert rejected.client.conn.peer_public_key == public(rejected.server_key)

    client, server = MemoryPair(seed=7).client.conn, MemoryPair(seed=8).server.conn
    client.initiate()
    server.receive_data(client.data_to_send())
    assert server.next_event() is NEED_DATA  # message 1 read, message 2 queued
    message_2 = bytearray(server.data_to_send())
    message_2[-1] ^= 1  # its payload's tag
    client.receive_data(bytes(message_2))
    with pytest.raises(RemoteProtocolError, match="handshake failed"):
        client.next_event()
    assert client._handshake is None


def test_many_messages_each_way_with_frequent_rekeys() -> None:
    pair = MemoryPair(seed=5, rekey_interval=3)
    pair.handshake()
    server_login, _ = session_records(Role.SERVER)
    for record in server_login:
        pair.server.conn.send(record)
    pair.pump()
    pair.client.take_events()
    pair.server.take_events()
    sent_up = [Message(text=f"up {i}", room="general") for i in range(50)]
    sent_down = [Message(text=f"down {i}", room="general", id=i + 1) for i in range(50)]
    for up, down in zip(sent_up, sent_down, strict=True):
        pair.client.conn.send(up)
        pair.server.conn.send(down)
    pair.pump()
    assert pair.server.take_events() == sent_up
    assert pair.client.take_events() == sent_down


def test_rekey_interval_is_part_of_the_contract() -> None:
    """A receiver that does not mirror the sender's rekey cannot read past it: the rekey is
    real, not a no-op."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from sealchat.core import Connection

    server = Connection(Role.SERVER, static_key=X25519PrivateKey.generate())  # default interval
    pair = MemoryPair(seed=6, rekey_interval=2, server=server)
    pair.handshake()
    pair.client.conn.send(Ping(nonce=1))
    pair.client.conn.send(Ping(nonce=2))
    pair.pump()  # the first two use the handshake's key
    pair.client.conn.send(Ping(nonce=3))
    with pytest.raises(RemoteProtocolError, match="decryption failed"):
        pair.pump()
