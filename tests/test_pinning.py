"""The pin file: only well-formed pins are written, the user's own lines survive, writers
never lose each other's pins, and no temporary file is left or followed."""

from __future__ import annotations

import os
import secrets
import stat
import threading
from pathlib import Path

import pytest

from sealchat.core.fingerprint import fingerprint
from sealchat.transports.pinning import KnownServers, ServerKeyChanged, server_name

GOOD = fingerprint(bytes(32))
OTHER = fingerprint(bytes([1]) * 32)


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        ("", "does not start with SHA256:"),
        ("SHA256:", "0 characters after SHA256:, not 43"),
        (GOOD[:-1], "42 characters after SHA256:, not 43"),
        (GOOD + "A", "44 characters after SHA256:, not 43"),
        (GOOD[:20] + "\nevil:1 " + GOOD, "line breaks"),
        (GOOD[:20] + "\t" + GOOD[21:], "tabs"),
        (GOOD[:-1] + "=", "other than A-Z"),
        (GOOD.removeprefix("SHA256:"), "does not start with SHA256:"),
    ],
)
def test_a_malformed_fingerprint_is_refused_saying_why(
    tmp_path: Path, bad: str, problem: str
) -> None:
    known = KnownServers(tmp_path / "known")
    with pytest.raises(ValueError, match=problem) as info:
        known.pin("chat.example.org:7878", bad)
    assert "SHA256: followed by 43 characters" in str(info.value)  # what one looks like
    assert not known.path.exists()
    assert known.lookup("evil:1") is None


@pytest.mark.parametrize(
    ("server", "problem"),
    [
        ("chat.example.org", "HOST:PORT"),
        (":7878", "HOST:PORT"),
        ("chat example.org:7878", "host contains spaces"),
        ("chat.example.org\n:7878", "host contains spaces"),
        ("chat\x1b.example.org:7878", "control characters"),
        ("#chat.example.org:7878", "leading #"),
        ("chat.example.org:0", "port is not a number from 1 to 65535"),
        ("chat.example.org:65536", "port is not a number from 1 to 65535"),
        ("chat.example.org:-1", "port is not a number"),
        ("chat.example.org:", "port is not a number"),
        ("::1:7878", r"write it as \[::1\]:7878"),
    ],
)
def test_a_malformed_server_is_refused_saying_why(
    tmp_path: Path, server: str, problem: str
) -> None:
    known = KnownServers(tmp_path / "known")
    with pytest.raises(ValueError, match=problem):
        known.pin(server, GOOD)
    assert not known.path.exists()


def test_real_fingerprints_and_server_names_are_pinned(tmp_path: Path) -> None:
    known = KnownServers(tmp_path / "known")
    servers = [server_name(h, p) for h, p in [("::1", 1), ("chat.example.org", 65535)]]
    for name in servers:
        known.pin(name, GOOD)
    assert [known.lookup(name) for name in servers] == [GOOD, GOOD]
    assert stat.S_IMODE(known.path.stat().st_mode) == 0o600


def test_the_users_own_lines_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "known"
    mine = (
        f"# my servers\r\n"
        f"work.example.org:7878 {OTHER}   \r\n"
        f"\n"
        f"# home, checked with Ann on the phone\n"
        f"home.example.org:7878 {OTHER}\n"
        f"some note the user wrote"
    ).encode()
    path.write_bytes(mine)
    known = KnownServers(path)
    known.pin("home.example.org:7878", GOOD)  # re-pinned in place
    known.pin("new.example.org:1", GOOD)  # appended
    assert (
        path.read_bytes()
        == mine.replace(
            f"home.example.org:7878 {OTHER}".encode(), f"home.example.org:7878 {GOOD}".encode()
        )
        + f"\nnew.example.org:1 {GOOD}\n".encode()
    )
    assert known.lookup("work.example.org:7878") == OTHER
    assert known.lookup("home.example.org:7878") == GOOD


def test_a_host_name_is_the_same_server_in_any_case_and_with_a_trailing_dot(
    tmp_path: Path,
) -> None:
    assert server_name("Chat.Example.ORG.", 7878) == "chat.example.org:7878"
    assert server_name("FE80::1", 7878) == "[fe80::1]:7878"
    path = tmp_path / "known"
    path.write_text(f"Chat.Example.ORG:7878 {OTHER}\n")  # written by hand, or by an older client
    known = KnownServers(path)
    assert known.lookup("chat.example.org:7878") == known.lookup("CHAT.example.org.:7878") == OTHER
    with pytest.raises(ServerKeyChanged):  # not a new server
        known.require(server_name("CHAT.EXAMPLE.ORG", 7878), GOOD)
    known.pin("CHAT.example.org:7878", GOOD)  # in place of the old line
    assert path.read_text() == f"chat.example.org:7878 {GOOD}\n"


def test_a_repin_replaces_every_older_line_of_that_server(tmp_path: Path) -> None:
    path = tmp_path / "known"
    path.write_text(f"a.example:1 {OTHER}\nb.example:1 {OTHER}\na.example:1 {OTHER}\n")
    KnownServers(path).pin("a.example:1", GOOD)
    assert path.read_text() == f"a.example:1 {GOOD}\nb.example:1 {OTHER}\n"


def test_concurrent_first_contacts_keep_every_pin(tmp_path: Path) -> None:
    known = KnownServers(tmp_path / "known")
    names = [f"server{n}.example:7878" for n in range(16)]
    barrier = threading.Barrier(len(names))

    def first_contact(name: str) -> None:
        barrier.wait()
        KnownServers(known.path).pin(name, GOOD)

    threads = [threading.Thread(target=first_contact, args=(name,)) for name in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {name: known.lookup(name) for name in names} == dict.fromkeys(names, GOOD)


@pytest.mark.skipif(os.name != "posix", reason="POSIX symlinks and modes")
def test_the_temporary_file_is_private_never_followed_and_never_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    known = KnownServers(tmp_path / "known")
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    # Someone who guessed the temporary name planted a link there: it is not followed.
    monkeypatch.setattr(secrets, "token_hex", lambda _n: "guessed")
    (tmp_path / ".known.guessed.tmp").symlink_to(victim)
    with pytest.raises(FileExistsError):
        known.pin("a.example:1", GOOD)
    assert victim.read_text() == "untouched"
    monkeypatch.undo()
    old = os.umask(0)
    try:
        known.pin("a.example:1", GOOD)
    finally:
        os.umask(old)
    assert victim.read_text() == "untouched"
    assert stat.S_IMODE(known.path.stat().st_mode) == 0o600

    def broken(*_args: object) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="disk on fire"):
        known.pin("b.example:1", GOOD)
    left = {p.name for p in tmp_path.iterdir() if not p.is_symlink()}
    assert left <= {"known", "victim", ".known.lock"}
    assert known.lookup("b.example:1") is None


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_a_pin_file_others_can_change_is_not_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    known = KnownServers(tmp_path / "known")
    known.pin("example.org:7878", GOOD)
    known.path.chmod(0o620)
    with pytest.raises(PermissionError, match=r"can be changed by other users.*chmod 600"):
        known.lookup("example.org:7878")
    with pytest.raises(PermissionError):
        known.pin("example.org:7878", OTHER)  # nor is it written on top of
    known.path.chmod(0o644)  # readable by others is fine: fingerprints are public
    assert known.lookup("example.org:7878") == GOOD
    monkeypatch.setattr(os, "geteuid", lambda: os.getuid() + 1)
    with pytest.raises(PermissionError, match="belongs to another user"):
        known.lookup("example.org:7878")
