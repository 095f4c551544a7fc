"""The Noise Protocol Framework (revision 34), for ``Noise_*_25519_AESGCM_SHA256`` only.

Section numbers refer to the specification (https://noiseprotocol.org/noise.html). The module is
pure: no I/O, and randomness only through ``HandshakeState``'s ``generate_keypair``.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TypeAlias

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "PATTERNS",
    "CipherState",
    "DecryptError",
    "HandshakePattern",
    "HandshakeState",
    "NoiseError",
    "NonceExhausted",
    "SymmetricState",
    "hkdf",
    "parse_protocol_name",
]

Buffer: TypeAlias = bytes | bytearray | memoryview

DHLEN: Final = 32
HASHLEN: Final = 32
TAGLEN: Final = 16
MAX_MESSAGE_LEN: Final = 65535
MAX_NONCE: Final = 2**64 - 1  # reserved: never used to encrypt a message (§5.1)

_nonce = struct.Struct(">4xQ").pack  # AESGCM nonce: 4 zero bytes, 64-bit big-endian counter
_SHA256: Final = hashes.SHA256()
_ZEROS: Final = bytes(32)


class NoiseError(Exception):
    """A Noise handshake or transport failure."""


class DecryptError(NoiseError):
    """A ciphertext failed authentication."""


class NonceExhausted(NoiseError):
    """The nonce counter reached its reserved maximum: no more messages under this key."""


# --- crypto functions (§4) -----------------------------------------------------------------


def _hmac(key: bytes, data: bytes) -> bytes:
    mac = hmac.HMAC(key, _SHA256)  # measured faster than stdlib hmac.digest here
    mac.update(data)
    return mac.finalize()


def hkdf(chaining_key: bytes, ikm: bytes, n_outputs: int) -> tuple[bytes, ...]:
    """HKDF (§4.3): two or three HASHLEN-byte outputs."""
    if n_outputs not in (2, 3):
        raise ValueError("hkdf gives 2 or 3 outputs")
    temp_key = _hmac(chaining_key, ikm)
    out1 = _hmac(temp_key, b"\x01")
    out2 = _hmac(temp_key, out1 + b"\x02")
    if n_outputs == 2:
        return out1, out2
    return out1, out2, _hmac(temp_key, out2 + b"\x03")


def _dh(private: X25519PrivateKey, public: X25519PublicKey) -> bytes:
    try:
        return private.exchange(public)
    except ValueError as exc:  # an all-zero shared secret: a low-order public key
        raise NoiseError("the peer's public key is a low-order point") from exc


def _public_bytes(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


# --- CipherState (§5.1) --------------------------------------------------------------------


class CipherState:
    """A key and a nonce counter. Without a key, encryption and decryption pass data through."""

    __slots__ = ("_aead", "_n")

    def __init__(self, key: bytes | None = None) -> None:
        if key is not None and len(key) != 32:
            raise ValueError("a cipher key is 32 bytes")
        self._aead = None if key is None else AESGCM(key)
        self._n = 0

    def has_key(self) -> bool:
        """Whether a key is set."""
        return self._aead is not None

    @property
    def nonce(self) -> int:
        """The nonce the next message will use."""
        return self._n

    def set_nonce(self, n: int) -> None:
        """Set the nonce counter (0 to 2**64-1)."""
        if not 0 <= n <= MAX_NONCE:
            raise ValueError("the nonce is a 64-bit unsigned integer")
        self._n = n

    def encrypt_with_ad(self, ad: bytes | None, plaintext: Buffer) -> bytes:
        """ENCRYPT(k, n++, ad, plaintext), or ``plaintext`` if there is no key; ``ad`` None is
        the empty string (the cheaper spelling for AESGCM)."""
        aead, n = self._aead, self._n
        if aead is None:
            return bytes(plaintext)
        if n == MAX_NONCE:
            raise NonceExhausted("nonce exhausted: no more messages under this key")
        ciphertext = aead.encrypt(_nonce(n), plaintext, ad)
        self._n = n + 1
        return ciphertext

    def decrypt_with_ad(self, ad: bytes | None, ciphertext: Buffer) -> bytes:
        """DECRYPT(k, n++, ad, ciphertext), or ``ciphertext`` if there is no key.

        Raises ``DecryptError`` (the nonce is then unchanged)."""
        aead, n = self._aead, self._n
        if aead is None:
            return bytes(ciphertext)
        if n == MAX_NONCE:
            raise NonceExhausted("nonce exhausted: no more messages under this key")
        try:
            plaintext = aead.decrypt(_nonce(n), ciphertext, ad)
        except InvalidTag:
            raise DecryptError("authentication failed") from None
        self._n = n + 1
        return plaintext

    def rekey(self) -> None:
        """k = REKEY(k) (§4.2, §11.3); the nonce counter is kept."""
        if self._aead is None:
            raise NoiseError("rekey() needs a key")
        self._aead = AESGCM(self._aead.encrypt(_nonce(MAX_NONCE), _ZEROS, None)[:32])


# --- SymmetricState (§5.2) -----------------------------------------------------------------


class SymmetricState:
    """The chaining key, the handshake hash and the handshake's CipherState."""

    __slots__ = ("_cipher", "_ck", "_h")

    def __init__(self, protocol_name: bytes) -> None:
        """InitializeSymmetric(protocol_name)."""
        if len(protocol_name) <= HASHLEN:
            self._h = protocol_name.ljust(HASHLEN, b"\0")
        else:
            self._h = hashlib.sha256(protocol_name).digest()
        self._ck = self._h
        self._cipher = CipherState()

    def has_key(self) -> bool:
        """Whether a key has been mixed in yet."""
        return self._cipher.has_key()

    def mix_key(self, ikm: bytes) -> None:
        """MixKey: a new chaining key and cipher key from ``ikm``."""
        self._ck, temp_k = hkdf(self._ck, ikm, 2)
        self._cipher = CipherState(temp_k)

    def mix_hash(self, data: bytes) -> None:
        """MixHash: h = HASH(h || data)."""
        digest = hashlib.sha256(self._h)
        digest.update(data)
        self._h = digest.digest()

    def mix_key_and_hash(self, ikm: bytes) -> None:
        """MixKeyAndHash (used by psk modifiers)."""
        self._ck, temp_h, temp_k = hkdf(self._ck, ikm, 3)
        self.mix_hash(temp_h)
        self._cipher = CipherState(temp_k)

    def get_handshake_hash(self) -> bytes:
        """The handshake hash h."""
        return self._h

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        """EncryptAndHash: encrypt with h as ad, then mix the ciphertext into h."""
        ciphertext = self._cipher.encrypt_with_ad(self._h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        """DecryptAndHash: decrypt with h as ad, then mix the ciphertext into h."""
        plaintext = self._cipher.decrypt_with_ad(self._h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState]:
        """Split: the initiator's and the responder's sending CipherStates."""
        k1, k2 = hkdf(self._ck, b"", 2)
        return CipherState(k1), CipherState(k2)


# --- handshake patterns (§7) ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HandshakePattern:
    """Pre-messages and message token lists; messages alternate, the initiator first."""

    name: str
    initiator_pre: tuple[str, ...]
    responder_pre: tuple[str, ...]
    messages: tuple[tuple[str, ...], ...]

    @property
    def one_way(self) -> bool:
        """A one-way pattern (§7.4): only the initiator ever sends."""
        return len(self.messages) == 1

    def overhead(self, index: int) -> int:
        """Bytes message ``index`` adds to its payload (keys, tags)."""
        keyed = any(t not in ("e", "s") for m in self.messages[:index] for t in m)
        size = 0
        for tok in self.messages[index]:
            if tok == "e":
                size += DHLEN
            elif tok == "s":
                size += DHLEN + TAGLEN * keyed
            else:
                keyed = True
        return size + TAGLEN * keyed


def _pattern(name: str, initiator_pre: str, responder_pre: str, *messages: str) -> HandshakePattern:
    return HandshakePattern(
        name, tuple(initiator_pre.split()), tuple(responder_pre.split()),
        tuple(tuple(m.split()) for m in messages),
    )  # fmt: skip


# name, initiator's pre-message, responder's pre-message, then messages ->, <-, -> ...
PATTERNS: Final[dict[str, HandshakePattern]] = {
    p.name: p
    for p in (
        _pattern("N", "", "s", "e es"),
        _pattern("K", "s", "s", "e es ss"),
        _pattern("X", "", "s", "e es s ss"),
        _pattern("NN", "", "", "e", "e ee"),
        _pattern("NK", "", "s", "e es", "e ee"),
        _pattern("NX", "", "", "e", "e ee s es"),
        _pattern("XN", "", "", "e", "e ee", "s se"),
        _pattern("XK", "", "s", "e es", "e ee", "s se"),
        _pattern("XX", "", "", "e", "e ee s es", "s se"),
        _pattern("KN", "s", "", "e", "e ee se"),
        _pattern("KK", "s", "s", "e es ss", "e ee se"),
        _pattern("KX", "s", "", "e", "e ee se s es"),
        _pattern("IN", "", "", "e s", "e ee se"),
        _pattern("IK", "", "s", "e es s ss", "e ee se"),
        _pattern("IX", "", "", "e s", "e ee se s es"),
    )
}


def parse_protocol_name(name: str) -> HandshakePattern:
    """The pattern of ``Noise_<pattern>_25519_AESGCM_SHA256``; anything else is a NoiseError."""
    parts = name.split("_")
    if len(parts) != 5 or parts[0] != "Noise" or parts[1] not in PATTERNS:
        raise NoiseError(f"unsupported Noise protocol {name!r}")
    if parts[2:] != ["25519", "AESGCM", "SHA256"]:
        raise NoiseError(f"{name!r}: only 25519, AESGCM and SHA256 are supported")
    return PATTERNS[parts[1]]


# --- HandshakeState (§5.3) -----------------------------------------------------------------


def _remote_key(data: bytes | None, what: str) -> X25519PublicKey | None:
    if data is None:
        return None
    if len(data) != DHLEN:
        raise NoiseError(f"{what} must be {DHLEN} bytes")
    return X25519PublicKey.from_public_bytes(data)


class HandshakeState:
    """One side of a Noise handshake. ``e`` fixes the ephemeral key (for test vectors only);
    ``generate_keypair`` is the source of ephemeral keys otherwise."""

    def __init__(
        self,
        protocol_name: str,
        *,
        initiator: bool,
        prologue: bytes = b"",
        s: X25519PrivateKey | None = None,
        e: X25519PrivateKey | None = None,
        rs: bytes | None = None,
        re: bytes | None = None,
        generate_keypair: Callable[[], X25519PrivateKey] = X25519PrivateKey.generate,
    ) -> None:
        pattern = parse_protocol_name(protocol_name)
        own_pre, peer_pre = (
            (pattern.initiator_pre, pattern.responder_pre)
            if initiator
            else (pattern.responder_pre, pattern.initiator_pre)
        )
        sent = {t for m in pattern.messages[0 if initiator else 1 :: 2] for t in m}
        role = f"{protocol_name} {'initiator' if initiator else 'responder'}"
        for key, needed, usable, what in (
            (s, "s" in own_pre or "s" in sent, "s" in own_pre or "s" in sent, "a static key s"),
            (e, "e" in own_pre, "e" in own_pre or "e" in sent, "an ephemeral key e"),
            (rs, "s" in peer_pre, "s" in peer_pre, "the peer's static key rs"),
            (re, "e" in peer_pre, "e" in peer_pre, "the peer's ephemeral key re"),
        ):
            if key is None and needed:
                raise NoiseError(f"{role} needs {what}")
            if key is not None and not usable:
                raise NoiseError(f"{role} does not use {what}")

        self._pattern = pattern
        self._initiator = initiator
        self._generate_keypair = generate_keypair
        self._s = s
        self._s_public = None if s is None else _public_bytes(s)
        self._e = e
        self._rs = rs
        self._rs_key = _remote_key(rs, "rs")
        self._re_key = _remote_key(re, "re")
        self._index = 0  # the next message
        self._failed = False
        self._split_done = False

        self._symmetric = sym = SymmetricState(protocol_name.encode("ascii"))
        sym.mix_hash(prologue)
        mine = {"s": self._s_public, "e": None if e is None else _public_bytes(e)}
        theirs = {"s": rs, "e": re}
        for pre, keys in (
            (pattern.initiator_pre, mine if initiator else theirs),
            (pattern.responder_pre, theirs if initiator else mine),
        ):
            for tok in pre:
                public = keys[tok]
                assert public is not None  # checked above
                sym.mix_hash(public)

    # --- inspection ---

    @property
    def finished(self) -> bool:
        """Whether every handshake message has been written or read."""
        return self._index == len(self._pattern.messages)

    @property
    def is_my_turn(self) -> bool:
        """Whether the next handshake message is ours to write."""
        return not self.finished and (self._index % 2 == 0) == self._initiator

    @property
    def handshake_hash(self) -> bytes:
        """The handshake hash h; it binds the session once the handshake is finished."""
        return self._symmetric.get_handshake_hash()

    @property
    def remote_static(self) -> bytes | None:
        """The peer's static public key (32 raw bytes), once known."""
        return self._rs

    @property
    def pattern(self) -> HandshakePattern:
        """The handshake pattern."""
        return self._pattern

    # --- messages ---

    def _next_tokens(self, *, writing: bool) -> tuple[str, ...]:
        if self._failed:
            raise NoiseError("the handshake has already failed")
        if self.finished:
            raise NoiseError("the handshake is finished")
        if self.is_my_turn != writing:
            raise NoiseError("it is the peer's turn to write" if writing else "it is our turn")
        return self._pattern.messages[self._index]

    def _mix_dh(self, tok: str) -> None:
        if tok == "ee":
            private, public = self._e, self._re_key
        elif tok == "ss":
            private, public = self._s, self._rs_key
        elif (tok == "es") == self._initiator:  # es as the initiator, se as the responder
            private, public = self._e, self._rs_key
        else:
            private, public = self._s, self._re_key
        if private is None or public is None:
            raise NoiseError(f"a key for {tok!r} is missing")
        self._symmetric.mix_key(_dh(private, public))

    def write_message(self, payload: bytes = b"") -> bytes:
        """The next handshake message, carrying ``payload``."""
        tokens = self._next_tokens(writing=True)
        if self._pattern.overhead(self._index) + len(payload) > MAX_MESSAGE_LEN:
            raise NoiseError(f"a handshake message is at most {MAX_MESSAGE_LEN} bytes")
        sym = self._symmetric
        parts: list[bytes] = []
        try:
            for tok in tokens:
                if tok == "e":
                    if self._e is None:
                        self._e = self._generate_keypair()
                    public = _public_bytes(self._e)
                    parts.append(public)
                    sym.mix_hash(public)
                elif tok == "s":
                    assert self._s_public is not None
                    parts.append(sym.encrypt_and_hash(self._s_public))
                else:
                    self._mix_dh(tok)
            parts.append(sym.encrypt_and_hash(payload))
        except NoiseError:
            self._failed = True
            raise
        self._index += 1
        return b"".join(parts)

    def read_message(self, message: bytes) -> bytes:
        """Read the peer's next handshake message; returns its payload.

        Raises ``NoiseError`` (``DecryptError`` if authentication fails); the handshake is
        then unusable unless the message was rejected for its size."""
        tokens = self._next_tokens(writing=False)
        if not self._pattern.overhead(self._index) <= len(message) <= MAX_MESSAGE_LEN:
            raise NoiseError(f"a handshake message of {len(message)} bytes is malformed")
        sym = self._symmetric
        pos = 0
        try:
            for tok in tokens:
                if tok == "e":
                    re = message[pos : pos + DHLEN]
                    pos += DHLEN
                    self._re_key = X25519PublicKey.from_public_bytes(re)
                    sym.mix_hash(re)
                elif tok == "s":
                    end = pos + DHLEN + (TAGLEN if sym.has_key() else 0)
                    rs = sym.decrypt_and_hash(message[pos:end])
                    pos = end
                    self._rs, self._rs_key = rs, X25519PublicKey.from_public_bytes(rs)
                else:
                    self._mix_dh(tok)
            payload = sym.decrypt_and_hash(message[pos:])
        except NoiseError:
            self._failed = True
            raise
        self._index += 1
        return payload

    def split(self) -> tuple[CipherState, CipherState]:
        """The (initiator-sending, responder-sending) CipherStates; once, when finished."""
        if not self.finished:
            raise NoiseError("split() before the handshake is finished")
        if self._split_done:
            raise NoiseError("split() may be called only once")
        self._split_done = True
        return self._symmetric.split()
