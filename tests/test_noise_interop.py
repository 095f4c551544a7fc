"""Interop of sealchat.core.noise with an independent implementation (the noiseprotocol package)."""

from __future__ import annotations

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from noise.connection import Keypair, NoiseConnection
from noise.exceptions import NoiseInvalidMessage

from sealchat.core.noise import CipherState, DecryptError, HandshakeState

NAME = "Noise_XX_25519_AESGCM_SHA256"
PROLOGUE = b"sealchat interop"


def _raw(key: X25519PrivateKey) -> bytes:
    return key.private_bytes_raw()


def _theirs(*, initiator: bool, static: X25519PrivateKey) -> NoiseConnection:
    conn = NoiseConnection.from_name(NAME.encode())
    conn.set_prologue(PROLOGUE)
    conn.set_keypair_from_private_bytes(Keypair.STATIC, _raw(static))
    if initiator:
        conn.set_as_initiator()
    else:
        conn.set_as_responder()
    conn.start_handshake()
    return conn


def _handshake(*, ours_initiates: bool) -> tuple[CipherState, CipherState, NoiseConnection]:
    """Run XX between us and them; returns our (send, receive) ciphers and their connection."""
    our_static, their_static = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    ours = HandshakeState(NAME, initiator=ours_initiates, prologue=PROLOGUE, s=our_static)
    theirs = _theirs(initiator=not ours_initiates, static=their_static)
    for i in range(3):
        payload = f"handshake {i}".encode()
        if ours.is_my_turn:
            assert bytes(theirs.read_message(ours.write_message(payload))) == payload
        else:
            assert ours.read_message(bytes(theirs.write_message(payload))) == payload
    assert ours.finished
    assert theirs.handshake_finished
    assert ours.handshake_hash == theirs.get_handshake_hash()
    assert ours.remote_static == their_static.public_key().public_bytes_raw()
    initiator_cipher, responder_cipher = ours.split()
    if ours_initiates:
        return initiator_cipher, responder_cipher, theirs
    return responder_cipher, initiator_cipher, theirs


def _exchange(send: CipherState, recv: CipherState, theirs: NoiseConnection, n: int) -> None:
    for i in range(n):
        message = bytes([i]) * (i * 37)
        assert theirs.decrypt(send.encrypt_with_ad(b"", message)) == message
        reply = b"reply %d" % i
        assert recv.decrypt_with_ad(b"", theirs.encrypt(reply)) == reply


@pytest.mark.parametrize("ours_initiates", [True, False], ids=["ours-initiator", "ours-responder"])
def test_transport_both_ways(ours_initiates: bool) -> None:
    send, recv, theirs = _handshake(ours_initiates=ours_initiates)
    _exchange(send, recv, theirs, 5)


@pytest.mark.parametrize("ours_initiates", [True, False], ids=["ours-initiator", "ours-responder"])
def test_rekey_mirrored(ours_initiates: bool) -> None:
    send, recv, theirs = _handshake(ours_initiates=ours_initiates)
    _exchange(send, recv, theirs, 2)
    for _ in range(3):
        send.rekey()
        theirs.rekey_inbound_cipher()
        recv.rekey()
        theirs.rekey_outbound_cipher()
        _exchange(send, recv, theirs, 2)


@pytest.mark.parametrize("ours_initiates", [True, False], ids=["ours-initiator", "ours-responder"])
def test_tampered_ciphertext_rejected_by_both(ours_initiates: bool) -> None:
    send, recv, theirs = _handshake(ours_initiates=ours_initiates)
    ciphertext = bytearray(send.encrypt_with_ad(b"", b"hello"))
    ciphertext[0] ^= 1
    with pytest.raises(NoiseInvalidMessage):
        theirs.decrypt(bytes(ciphertext))

    ciphertext = bytearray(theirs.encrypt(b"hello"))
    ciphertext[-1] ^= 0x80
    before = recv.nonce
    with pytest.raises(DecryptError):
        recv.decrypt_with_ad(b"", bytes(ciphertext))
    assert recv.nonce == before
    ciphertext[-1] ^= 0x80  # the genuine message still reads: the nonce did not move
    assert recv.decrypt_with_ad(b"", bytes(ciphertext)) == b"hello"


@pytest.mark.parametrize("ours_initiates", [True, False], ids=["ours-initiator", "ours-responder"])
def test_tampered_handshake_rejected(ours_initiates: bool) -> None:
    """A flipped bit in the encrypted static key of message 2 fails the initiator's read."""
    our_static, their_static = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    ours = HandshakeState(NAME, initiator=ours_initiates, prologue=PROLOGUE, s=our_static)
    theirs = _theirs(initiator=not ours_initiates, static=their_static)
    if ours_initiates:
        theirs.read_message(ours.write_message())
        message2 = bytearray(theirs.write_message())
        message2[40] ^= 1
        with pytest.raises(DecryptError):
            ours.read_message(bytes(message2))
    else:
        ours.read_message(bytes(theirs.write_message()))
        message2 = bytearray(ours.write_message())
        message2[40] ^= 1
        with pytest.raises(InvalidTag):  # noiseprotocol lets it through during the handshake
            theirs.read_message(bytes(message2))
