"""Edge cases of sealchat.core.noise: nonces, rekey, the bulk path, malformed handshakes."""

from __future__ import annotations

import contextlib
import hashlib

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from sealchat.core.noise import (
    MAX_MESSAGE_LEN,
    MAX_NONCE,
    PATTERNS,
    CipherState,
    DecryptError,
    HandshakeState,
    NoiseError,
    NonceExhausted,
    SymmetricState,
    hkdf,
    parse_protocol_name,
)

XX = "Noise_XX_25519_AESGCM_SHA256"
KEY = bytes(range(32))
LOW_ORDER = [bytes(32), b"\x01" + bytes(31)]  # u = 0 and u = 1: the shared secret is all zero


def _key(byte: int) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(bytes([byte]) * 32)


def _public(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


def _xx(initiator: bool, **options: object) -> HandshakeState:
    return HandshakeState(XX, initiator=initiator, s=_key(1 if initiator else 2), **options)  # type: ignore[arg-type]


# --- CipherState ---------------------------------------------------------------------------


def test_no_key_passes_data_through() -> None:
    cipher = CipherState()
    assert not cipher.has_key()
    assert cipher.encrypt_with_ad(b"ad", b"plain") == b"plain"
    assert cipher.decrypt_with_ad(b"ad", b"plain") == b"plain"
    assert cipher.nonce == 0
    with pytest.raises(NoiseError):
        cipher.rekey()


def test_key_must_be_32_bytes() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        CipherState(bytes(16))


def test_nonce_is_4_zero_bytes_and_a_big_endian_counter() -> None:
    cipher = CipherState(KEY)
    cipher.set_nonce(0x0102030405060708)
    expected = AESGCM(KEY).encrypt(bytes(4) + bytes(range(1, 9)), b"msg", b"ad")
    assert cipher.encrypt_with_ad(b"ad", b"msg") == expected
    assert cipher.nonce == 0x0102030405060709


def test_nonce_exhaustion() -> None:
    cipher = CipherState(KEY)
    cipher.set_nonce(MAX_NONCE - 1)
    ciphertext = cipher.encrypt_with_ad(b"", b"last")  # 2**64-2 is the last usable nonce
    assert cipher.nonce == MAX_NONCE
    with pytest.raises(NonceExhausted):
        cipher.encrypt_with_ad(b"", b"x")
    with pytest.raises(NonceExhausted):
        cipher.decrypt_with_ad(b"", ciphertext)
    assert cipher.nonce == MAX_NONCE


def test_set_nonce_range() -> None:
    cipher = CipherState(KEY)
    cipher.set_nonce(MAX_NONCE)
    with pytest.raises(NonceExhausted):
        cipher.encrypt_with_ad(b"", b"")
    for bad in (-1, MAX_NONCE + 1):
        with pytest.raises(ValueError, match="64-bit"):
            cipher.set_nonce(bad)


def test_failed_decrypt_keeps_the_nonce() -> None:
    sender, receiver = CipherState(KEY), CipherState(KEY)
    ciphertext = sender.encrypt_with_ad(b"ad", b"secret message")
    tampered = bytearray(ciphertext)
    tampered[3] ^= 4
    with pytest.raises(DecryptError):
        receiver.decrypt_with_ad(b"ad", bytes(tampered))
    with pytest.raises(DecryptError):
        receiver.decrypt_with_ad(b"other ad", ciphertext)
    assert receiver.nonce == 0
    assert receiver.decrypt_with_ad(b"ad", ciphertext) == b"secret message"
    assert receiver.nonce == 1


@pytest.mark.parametrize("size", [0, 1, 15])
def test_decrypt_shorter_than_a_tag(size: int) -> None:
    with pytest.raises(DecryptError):
        CipherState(KEY).decrypt_with_ad(b"", bytes(size))


@pytest.mark.parametrize("size", [0, 1, 100, 4096, MAX_MESSAGE_LEN - 16])
def test_buffers_of_any_kind_and_size(size: int) -> None:
    plaintext = bytes(i % 251 for i in range(size))
    sender, receiver = CipherState(KEY), CipherState(KEY)
    for view in (plaintext, bytearray(plaintext), memoryview(plaintext)):
        ciphertext = sender.encrypt_with_ad(b"", view)
        framed = memoryview(b"head" + ciphertext)[4:]
        assert receiver.decrypt_with_ad(b"", framed) == plaintext
    assert sender.nonce == receiver.nonce == 3


def test_rekey_changes_the_key_not_the_nonce() -> None:
    cipher, reference = CipherState(KEY), CipherState(KEY)
    cipher.set_nonce(7)
    reference.set_nonce(7)
    cipher.rekey()
    assert cipher.nonce == 7
    after, before = cipher.encrypt_with_ad(b"", b"m"), reference.encrypt_with_ad(b"", b"m")
    assert after != before
    new_key = AESGCM(KEY).encrypt(bytes(4) + b"\xff" * 8, bytes(32), b"")[:32]  # §4.2 REKEY
    expected = CipherState(new_key)
    expected.set_nonce(7)
    assert expected.encrypt_with_ad(b"", b"m") == after


# --- HKDF and SymmetricState ----------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 3])
def test_hkdf_is_rfc5869_with_the_chaining_key_as_salt(n: int) -> None:
    ck, ikm = bytes(range(32)), b"input key material"
    expected = HKDF(hashes.SHA256(), 32 * n, salt=ck, info=b"").derive(ikm)
    assert b"".join(hkdf(ck, ikm, n)) == expected


def test_hkdf_output_count() -> None:
    with pytest.raises(ValueError, match="2 or 3"):
        hkdf(KEY, b"", 4)


def test_symmetric_state_long_name_is_hashed_and_mix_key_and_hash() -> None:
    name = b"Noise_XXfallback+psk0_25519_AESGCM_SHA256"
    state = SymmetricState(name)
    assert state.get_handshake_hash() == _sha256(name)
    assert not state.has_key()
    state.mix_key_and_hash(b"psk")
    assert state.has_key()
    ck, temp_h, temp_k = hkdf(_sha256(name), b"psk", 3)
    h = _sha256(_sha256(name) + temp_h)
    assert state.get_handshake_hash() == h
    ciphertext = state.encrypt_and_hash(b"payload")
    assert ciphertext == CipherState(temp_k).encrypt_with_ad(h, b"payload")
    assert ck  # the chaining key moved on; split() uses it
    first, second = state.split()
    assert first.has_key()
    assert second.has_key()


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


# --- protocol names and keys ----------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "Noise_XX_25519_ChaChaPoly_SHA256",
        "Noise_XX_448_AESGCM_SHA256",
        "Noise_XX_25519_AESGCM_BLAKE2s",
        "Noise_XXpsk3_25519_AESGCM_SHA256",
        "Noise_XX1_25519_AESGCM_SHA256",
        "Noise_Q_25519_AESGCM_SHA256",
        "Noise_XX_25519_AESGCM_SHA256_extra",
        "NoiseXX_25519_AESGCM_SHA256",
        "",
    ],
)
def test_unsupported_protocol_names(name: str) -> None:
    with pytest.raises(NoiseError):
        parse_protocol_name(name)
    with pytest.raises(NoiseError):
        HandshakeState(name, initiator=True, s=_key(1))


def test_all_15_patterns_parse() -> None:
    assert len(PATTERNS) == 15
    for name, pattern in PATTERNS.items():
        assert parse_protocol_name(f"Noise_{name}_25519_AESGCM_SHA256") is pattern
        assert pattern.one_way == (len(name) == 1)


@pytest.mark.parametrize(
    ("name", "initiator", "keys", "message"),
    [
        ("XX", True, {}, "needs a static key s"),
        ("XX", False, {}, "needs a static key s"),
        ("NK", True, {}, "needs the peer's static key rs"),
        ("NK", False, {}, "needs a static key s"),
        ("KK", False, {"s": _key(2)}, "needs the peer's static key rs"),
        ("XX", True, {"s": _key(1), "rs": bytes(32)}, "does not use the peer's static key rs"),
        ("NN", True, {"s": _key(1)}, "does not use a static key s"),
        ("N", False, {"s": _key(2), "e": _key(3)}, "does not use an ephemeral key e"),
        ("NN", True, {"re": bytes(32)}, "does not use the peer's ephemeral key re"),
        ("NK", True, {"rs": bytes(31)}, "rs must be 32 bytes"),
    ],
)
def test_key_checks_at_construction(
    name: str, initiator: bool, keys: dict[str, object], message: str
) -> None:
    with pytest.raises(NoiseError, match=message):
        HandshakeState(f"Noise_{name}_25519_AESGCM_SHA256", initiator=initiator, **keys)  # type: ignore[arg-type]


# --- handshakes -----------------------------------------------------------------------------


def _statics(name: str) -> tuple[dict[str, object], dict[str, object]]:
    pattern = PATTERNS[name]
    init_s, resp_s = _key(1), _key(2)
    init: dict[str, object] = {}
    resp: dict[str, object] = {}
    if "s" in pattern.initiator_pre or any("s" in m for m in pattern.messages[0::2]):
        init["s"] = init_s
        if "s" in pattern.initiator_pre:
            resp["rs"] = _public(init_s)
    if "s" in pattern.responder_pre or any("s" in m for m in pattern.messages[1::2]):
        resp["s"] = resp_s
        if "s" in pattern.responder_pre:
            init["rs"] = _public(resp_s)
    return init, resp


@pytest.mark.parametrize("name", list(PATTERNS))
def test_every_pattern_with_generated_keys(name: str) -> None:
    protocol = f"Noise_{name}_25519_AESGCM_SHA256"
    init_keys, resp_keys = _statics(name)
    generated: list[X25519PrivateKey] = []

    def generate() -> X25519PrivateKey:
        generated.append(X25519PrivateKey.generate())
        return generated[-1]

    init = HandshakeState(protocol, initiator=True, generate_keypair=generate, **init_keys)  # type: ignore[arg-type]
    resp = HandshakeState(protocol, initiator=False, generate_keypair=generate, **resp_keys)  # type: ignore[arg-type]
    pattern = init.pattern
    assert pattern is PATTERNS[name]
    for i in range(len(pattern.messages)):
        sender, receiver = (init, resp) if i % 2 == 0 else (resp, init)
        assert sender.is_my_turn
        assert not receiver.is_my_turn
        payload = b"payload %d" % i
        message = sender.write_message(payload)
        assert len(message) == pattern.overhead(i) + len(payload)
        assert receiver.read_message(message) == payload
    assert init.finished
    assert resp.finished
    assert not init.is_my_turn
    assert not resp.is_my_turn
    assert len(generated) == (1 if pattern.one_way else 2)
    assert init.handshake_hash == resp.handshake_hash
    init_send, init_recv = init.split()
    resp_recv, resp_send = resp.split()
    assert resp_recv.decrypt_with_ad(b"", init_send.encrypt_with_ad(b"", b"up")) == b"up"
    assert init_recv.decrypt_with_ad(b"", resp_send.encrypt_with_ad(b"", b"down")) == b"down"


def test_wrong_turn_and_finished() -> None:
    init, resp = _xx(True), _xx(False)
    with pytest.raises(NoiseError, match="peer's turn"):
        resp.write_message()
    with pytest.raises(NoiseError, match="our turn"):
        init.read_message(bytes(32))
    resp.read_message(init.write_message())
    with pytest.raises(NoiseError, match="peer's turn"):
        init.write_message()
    init.read_message(resp.write_message())
    resp.read_message(init.write_message())
    for side in (init, resp):
        assert side.finished
        with pytest.raises(NoiseError, match="finished"):
            side.write_message()
        with pytest.raises(NoiseError, match="finished"):
            side.read_message(bytes(100))


def test_split_only_once_and_only_when_finished() -> None:
    init, resp = _xx(True), _xx(False)
    with pytest.raises(NoiseError, match="before"):
        init.split()
    resp.read_message(init.write_message())
    init.read_message(resp.write_message())
    resp.read_message(init.write_message())
    init.split()
    with pytest.raises(NoiseError, match="once"):
        init.split()


def _message2() -> tuple[HandshakeState, bytes]:
    """An initiator awaiting message 2, and that message."""
    init, resp = _xx(True), _xx(False)
    resp.read_message(init.write_message())
    return init, resp.write_message(b"payload")


def test_truncated_and_oversized_handshake_messages() -> None:
    """Every truncation raises NoiseError (``pytest.raises`` lets any other type through)."""
    for message in (b"", bytes(31), bytes(MAX_MESSAGE_LEN + 1)):
        with pytest.raises(NoiseError):
            _xx(False).read_message(message)
    _, message2 = _message2()
    for cut in range(len(message2)):
        init, _ = _message2()
        with pytest.raises(NoiseError):
            init.read_message(message2[:cut])
    init, message2 = _message2()
    with pytest.raises(NoiseError, match="malformed"):
        init.read_message(message2 + bytes(MAX_MESSAGE_LEN))
    init.read_message(message2)  # a message rejected for its size leaves the state usable


def test_largest_handshake_message() -> None:
    init, resp = _xx(True), _xx(False)
    with pytest.raises(NoiseError, match="at most 65535"):
        init.write_message(bytes(MAX_MESSAGE_LEN - 31))
    message = init.write_message(bytes(MAX_MESSAGE_LEN - 32))  # -> e carries no tag
    assert len(message) == MAX_MESSAGE_LEN
    assert resp.read_message(message) == bytes(MAX_MESSAGE_LEN - 32)
    with pytest.raises(NoiseError, match="at most 65535"):
        resp.write_message(bytes(MAX_MESSAGE_LEN - 32 - 48 - 16 + 1))
    message = resp.write_message(bytes(MAX_MESSAGE_LEN - 32 - 48 - 16))
    assert len(message) == MAX_MESSAGE_LEN
    init.read_message(message)


def test_failed_handshake_stays_failed() -> None:
    init, message2 = _message2()
    tampered = bytearray(message2)
    tampered[-1] ^= 1
    with pytest.raises(DecryptError):
        init.read_message(bytes(tampered))
    with pytest.raises(NoiseError, match="already failed"):
        init.read_message(message2)


@pytest.mark.parametrize("point", LOW_ORDER, ids=["zero", "one"])
def test_low_order_public_keys(point: bytes) -> None:
    resp = _xx(False)
    resp.read_message(point)  # -> e has no DH: the point is only hashed
    with pytest.raises(NoiseError, match="low-order"):
        resp.write_message()  # <- e, ee

    init, message2 = _message2()
    with pytest.raises(NoiseError, match="low-order"):
        init.read_message(point + message2[32:])

    nk = HandshakeState("Noise_NK_25519_AESGCM_SHA256", initiator=True, rs=point)
    with pytest.raises(NoiseError, match="low-order"):
        nk.write_message()  # -> e, es


def test_remote_static_and_prologue() -> None:
    init = _xx(True, prologue=b"one")
    resp = _xx(False, prologue=b"two")
    resp.read_message(init.write_message())
    with pytest.raises(DecryptError):  # the prologues differ: message 2 does not authenticate
        init.read_message(resp.write_message())
    init, resp = _xx(True), _xx(False)
    assert init.remote_static is None
    assert resp.remote_static is None
    resp.read_message(init.write_message())
    init.read_message(resp.write_message())
    assert init.remote_static == _public(_key(2))
    resp.read_message(init.write_message())
    assert resp.remote_static == _public(_key(1))


# --- fuzzing --------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200) | st.binary(min_size=32, max_size=32))
def test_random_bytes_to_a_fresh_responder(data: bytes) -> None:
    resp = _xx(False)
    try:
        resp.read_message(data)
    except NoiseError:
        return
    with contextlib.suppress(NoiseError):  # a low-order e shows itself at the responder's ee
        resp.write_message()


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200) | st.binary(min_size=96, max_size=140))
def test_random_bytes_to_an_initiator_awaiting_message_2(data: bytes) -> None:
    init, _ = _message2()
    with contextlib.suppress(NoiseError):
        init.read_message(data)
