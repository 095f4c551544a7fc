"""Test vectors for sealchat.core.noise.

Source: cacophony-25519-aesgcm-sha256.json holds the ``Noise_*_25519_AESGCM_SHA256`` vectors of
the cacophony project's ``vectors/cacophony.txt`` (public domain; also shipped with the snow Noise
library); see /work/shared/noise-vectors/README.md. Psk and deferred patterns are not run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from sealchat.core.noise import PATTERNS, HandshakeState

VECTORS_FILE = Path(__file__).with_name("cacophony-25519-aesgcm-sha256.json")
SUPPORTED = ("N", "K", "X", "NN", "NK", "NX", "XN", "XK", "XX", "KN", "KK", "KX", "IN", "IK", "IX")
EXPECTED_COUNT = 15  # one vector per supported pattern in the file


def _pattern_name(vector: dict[str, Any]) -> str:
    return str(vector["protocol_name"]).split("_")[1]


def _load() -> list[dict[str, Any]]:
    vectors: list[dict[str, Any]] = json.loads(VECTORS_FILE.read_text())["vectors"]
    return [v for v in vectors if _pattern_name(v) in SUPPORTED]


VECTORS = _load()


def _private(hex_key: str | None) -> X25519PrivateKey | None:
    return None if hex_key is None else X25519PrivateKey.from_private_bytes(bytes.fromhex(hex_key))


def _public(hex_key: str | None) -> bytes | None:
    return None if hex_key is None else bytes.fromhex(hex_key)


def _side(vector: dict[str, Any], prefix: str, *, initiator: bool) -> HandshakeState:
    return HandshakeState(
        vector["protocol_name"],
        initiator=initiator,
        prologue=bytes.fromhex(vector[f"{prefix}_prologue"]),
        s=_private(vector.get(f"{prefix}_static")),
        e=_private(vector.get(f"{prefix}_ephemeral")),
        rs=_public(vector.get(f"{prefix}_remote_static")),
        generate_keypair=lambda: pytest.fail("a vector must not generate keys"),
    )


def test_all_supported_vectors_are_collected() -> None:
    assert len(VECTORS) == EXPECTED_COUNT
    assert sorted(_pattern_name(v) for v in VECTORS) == sorted(SUPPORTED)
    assert set(SUPPORTED) <= set(PATTERNS)


@pytest.mark.parametrize("vector", VECTORS, ids=[v["protocol_name"] for v in VECTORS])
def test_vector(vector: dict[str, Any]) -> None:
    init = _side(vector, "init", initiator=True)
    resp = _side(vector, "resp", initiator=False)
    messages = vector["messages"]
    handshake_len = len(PATTERNS[_pattern_name(vector)].messages)
    one_way = handshake_len == 1

    for i, message in enumerate(messages[:handshake_len]):
        sender, receiver = (init, resp) if i % 2 == 0 else (resp, init)
        assert sender.is_my_turn
        assert not receiver.is_my_turn
        payload = bytes.fromhex(message["payload"])
        ciphertext = sender.write_message(payload)
        assert ciphertext.hex() == message["ciphertext"], f"handshake message {i}"
        assert receiver.read_message(ciphertext) == payload
    assert init.finished
    assert resp.finished
    expected_hash = bytes.fromhex(vector["handshake_hash"])
    assert init.handshake_hash == expected_hash
    assert resp.handshake_hash == expected_hash
    for side, peer in ((init, "resp"), (resp, "init")):
        peer_static = _private(vector.get(f"{peer}_static"))
        expected = None if peer_static is None else peer_static.public_key().public_bytes_raw()
        assert side.remote_static == expected

    init_send, init_recv = init.split()
    resp_recv, resp_send = resp.split()
    transport = messages[handshake_len:]
    assert transport
    for i, message in enumerate(transport, start=handshake_len):
        from_initiator = one_way or i % 2 == 0
        send, recv = (init_send, resp_recv) if from_initiator else (resp_send, init_recv)
        payload = bytes.fromhex(message["payload"])
        ciphertext = send.encrypt_with_ad(b"", payload)
        assert ciphertext.hex() == message["ciphertext"], f"transport message {i}"
        assert recv.decrypt_with_ad(b"", ciphertext) == payload
