"""Argon2id password hashing with PHC strings, on ``cryptography``.

Hashes look like ``$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`` (unpadded standard base64).
Verification reads the parameters from the string, so hashes made with older parameters keep
working; :func:`needs_rehash` says when to replace one after a successful login.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidKey
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

__all__ = [
    "CHEAP",
    "DEFAULT",
    "Argon2Params",
    "hash_password",
    "needs_rehash",
    "verify_password",
]

SALT_SIZE = 16
HASH_SIZE = 32

# Bounds for parameters read back from a stored hash: a corrupted or hostile row must not make
# a login allocate gigabytes or spin for minutes.
_MAX_MEMORY_KIB = 1 << 21  # 2 GiB
_MAX_ITERATIONS = 64
_MAX_LANES = 64


@dataclass(frozen=True, slots=True)
class Argon2Params:
    """Argon2id cost parameters: memory in KiB, passes over it, and parallel lanes."""

    memory_kib: int
    iterations: int
    lanes: int

    def __post_init__(self) -> None:
        if not 1 <= self.lanes <= _MAX_LANES:
            raise ValueError(f"lanes must be 1..{_MAX_LANES}")
        if not 1 <= self.iterations <= _MAX_ITERATIONS:
            raise ValueError(f"iterations must be 1..{_MAX_ITERATIONS}")
        if not 8 * self.lanes <= self.memory_kib <= _MAX_MEMORY_KIB:
            raise ValueError(f"memory_kib must be 8 * lanes .. {_MAX_MEMORY_KIB}")


DEFAULT = Argon2Params(memory_kib=19456, iterations=2, lanes=1)
"""OWASP's recommended Argon2id setting: 19 MiB, 2 passes, 1 lane."""

CHEAP = Argon2Params(memory_kib=8, iterations=1, lanes=1)
"""The smallest valid parameters. For benchmarks and tests only: never for real passwords."""

# A hash (default parameters) of 32 random bytes that were thrown away: no password matches it.
# Verifying against it for unknown users makes their logins cost the same as real ones.
_DUMMY_HASH = (
    "$argon2id$v=19$m=19456,t=2,p=1$c2VhbGNoYXQtZHVtbXkhIQ"
    "$o4pv/VHAQIRaLY97mkOSqZsXD6SQNXdMyXhrykAHfOY"
)

_B64 = r"[A-Za-z0-9+/]+"
_PHC = re.compile(
    rf"\$argon2id\$v=19\$m=([0-9]{{1,10}}),t=([0-9]{{1,10}}),p=([0-9]{{1,10}})\$({_B64})\$({_B64})"
)


def hash_password(password: str, *, params: Argon2Params = DEFAULT) -> str:
    """Hash ``password`` with a fresh random salt; returns a PHC string."""
    kdf = Argon2id(
        salt=os.urandom(SALT_SIZE),
        length=HASH_SIZE,
        iterations=params.iterations,
        lanes=params.lanes,
        memory_cost=params.memory_kib,
    )
    return kdf.derive_phc_encoded(_encode(password))


def verify_password(password: str, phc: str | None, *, params: Argon2Params = DEFAULT) -> bool:
    """True if ``password`` matches ``phc``. Never raises.

    ``phc=None`` (no such user) and malformed hashes cost one verification with ``params``
    (give those that new passwords are hashed with) and return False, so the time taken
    does not tell whether an account exists. The final comparison is constant-time (OpenSSL
    ``CRYPTO_memcmp`` inside ``cryptography``).
    """
    if phc is None or _parse(phc) is None:
        _dummy_verify(password, params)
        return False
    try:
        Argon2id.verify_phc_encoded(_encode(password), phc)
    except (InvalidKey, ValueError, TypeError, OverflowError, MemoryError):
        return False
    return True


def needs_rehash(phc: str) -> bool:
    """True if ``phc`` was not made with the current default parameters (or is malformed)."""
    return _parse(phc) != DEFAULT


def _encode(password: str) -> bytes:
    # Lone surrogates cannot come off the wire (records are valid UTF-8); keep them hashable
    # rather than raising, so verify_password stays total.
    return password.encode("utf-8", "surrogatepass")


def _dummy_verify(password: str, params: Argon2Params) -> None:
    with contextlib.suppress(InvalidKey):
        Argon2id.verify_phc_encoded(_encode(password), _dummy_hash(params))


@functools.cache
def _dummy_hash(params: Argon2Params) -> str:
    """A hash made with ``params`` of random bytes thrown away: no password matches it."""
    if params == DEFAULT:
        return _DUMMY_HASH
    return hash_password(os.urandom(HASH_SIZE).hex(), params=params)


def _parse(phc: str) -> Argon2Params | None:
    """The parameters of a well-formed Argon2id PHC string within our bounds, else None."""
    if not isinstance(phc, str):
        return None
    match = _PHC.fullmatch(phc)
    if match is None:
        return None
    memory, iterations, lanes, salt, digest = match.groups()
    # Unpadded base64 never has a length of 1 mod 4; salt and hash must be at least 8 and 4
    # bytes (the Argon2 minimums), i.e. 11 and 6 characters.
    if len(salt) % 4 == 1 or len(digest) % 4 == 1 or len(salt) < 11 or len(digest) < 6:
        return None
    try:
        return Argon2Params(memory_kib=int(memory), iterations=int(iterations), lanes=int(lanes))
    except ValueError:
        return None
