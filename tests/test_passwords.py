"""Argon2id password hashing: PHC strings, verification, rehash decisions."""

from __future__ import annotations

import base64
import logging
import re

import pytest
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from sealchat.transports import passwords
from sealchat.transports.passwords import (
    CHEAP,
    DEFAULT,
    Argon2Params,
    hash_password,
    needs_rehash,
    verify_password,
)

SECRET = "correct horse battery staple"


def test_default_params_round_trip() -> None:
    phc = hash_password(SECRET)
    assert phc.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert verify_password(SECRET, phc)
    assert not verify_password(SECRET + "!", phc)
    assert not needs_rehash(phc)


def test_phc_format() -> None:
    phc = hash_password(SECRET, params=CHEAP)
    match = re.fullmatch(r"\$argon2id\$v=19\$m=8,t=1,p=1\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)", phc)
    assert match is not None
    salt, digest = match.groups()
    assert len(base64.b64decode(salt + "=" * (-len(salt) % 4))) == 16
    assert len(base64.b64decode(digest + "=" * (-len(digest) % 4))) == 32


def test_round_trip_and_wrong_password() -> None:
    phc = hash_password(SECRET, params=CHEAP)
    assert verify_password(SECRET, phc)
    assert not verify_password("Correct horse battery staple", phc)
    assert not verify_password("", phc)


def test_salts_differ() -> None:
    assert hash_password(SECRET, params=CHEAP) != hash_password(SECRET, params=CHEAP)


@pytest.mark.parametrize("password", ["", "é☃📄", "x" * 10_000, "a\x00b", "\ud800"])
def test_unusual_passwords(password: str) -> None:
    phc = hash_password(password, params=CHEAP)
    assert verify_password(password, phc)
    assert not verify_password(password + "x", phc)


@pytest.fixture
def verified(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The PHC strings Argon2id verifies passwords against, in order (it still verifies)."""
    calls: list[str] = []
    real = Argon2id.verify_phc_encoded

    def spy(key_material: bytes, phc: str, secret: bytes | None = None) -> None:
        calls.append(phc)
        real(key_material, phc)

    monkeypatch.setattr(Argon2id, "verify_phc_encoded", spy)
    return calls


def test_unknown_user_runs_a_dummy_verification(verified: list[str]) -> None:
    assert not verify_password(SECRET, None)
    assert verified == [passwords._DUMMY_HASH]


def test_unknown_user_costs_what_new_passwords_are_hashed_with(verified: list[str]) -> None:
    # A server hashing with other parameters than the dummy hash's: an unknown user's check
    # took the default's time, a known one's its own, which told which names exist.
    assert not verify_password(SECRET, None, params=CHEAP)
    assert not verify_password(SECRET, "malformed", params=CHEAP)
    assert [passwords._parse(phc) for phc in verified] == [CHEAP, CHEAP]


def test_dummy_hash_uses_the_default_params() -> None:
    assert passwords._parse(passwords._DUMMY_HASH) == DEFAULT


@pytest.mark.parametrize(
    "phc",
    [
        "",
        "plaintext",
        "$argon2i$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2g",
        "$argon2id$v=16$m=8,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA",
        "$argon2id$v=19$m=8,t=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA",
        "$argon2id$v=19$m=4,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA",
        "$argon2id$v=19$m=99999999999,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA",
        "$argon2id$v=19$m=8,t=0,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA",
        "$argon2id$v=19$m=8,t=1,p=1$c2Fs$aGFzaGhhc2hoYXNoaGFzaA",
        "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA=",
        "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHRzYWx0!$aGFzaGhhc2hoYXNoaGFzaA",
        "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA$extra",
        "$argon2id$v=19$m=\uff18,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA",
    ],
)
def test_malformed_phc_is_false_never_raises(phc: str) -> None:
    assert verify_password(SECRET, phc) is False
    assert needs_rehash(phc)


def test_hashes_made_with_other_params_still_verify() -> None:
    other = Argon2Params(memory_kib=64, iterations=3, lanes=2)
    phc = hash_password(SECRET, params=other)
    assert "$m=64,t=3,p=2$" in phc
    assert verify_password(SECRET, phc)
    assert not verify_password("nope", phc)
    assert needs_rehash(phc)
    assert needs_rehash(hash_password(SECRET, params=CHEAP))


def test_params_are_validated() -> None:
    with pytest.raises(ValueError, match="memory_kib"):
        Argon2Params(memory_kib=8, iterations=1, lanes=2)
    with pytest.raises(ValueError, match="iterations"):
        Argon2Params(memory_kib=8, iterations=0, lanes=1)
    with pytest.raises(ValueError, match="lanes"):
        Argon2Params(memory_kib=8, iterations=1, lanes=0)
    with pytest.raises(AttributeError):
        CHEAP.memory_kib = 1  # type: ignore[misc]


def test_nothing_leaks_the_password(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    phc = hash_password(SECRET, params=CHEAP)
    verify_password(SECRET, phc)
    verify_password(SECRET, None)
    verify_password(SECRET, "garbage")
    needs_rehash(phc)
    shown = " ".join([phc, repr(phc), str(CHEAP), repr(DEFAULT), caplog.text])
    assert SECRET not in shown
    assert SECRET.encode().hex() not in shown
    for part in SECRET.split():
        assert part not in shown
