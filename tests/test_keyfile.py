"""Static key files: created 0600 and atomically, refused when unsafe or malformed."""

from __future__ import annotations

import errno
import os
import stat
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from sealchat.transports.keyfile import KeyFileError, load_or_create_key, public_bytes

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_created_0600_and_reloaded_equal(tmp_path: Path) -> None:
    path = tmp_path / "server.key"
    key = load_or_create_key(path)
    assert mode(path) == 0o600
    assert path.read_bytes() == key.private_bytes_raw()
    again = load_or_create_key(path)
    assert again.private_bytes_raw() == key.private_bytes_raw()
    assert public_bytes(again) == public_bytes(key)
    assert len(public_bytes(key)) == 32
    assert public_bytes(key) == key.public_key().public_bytes_raw()
    assert [p.name for p in tmp_path.iterdir()] == ["server.key"]  # no temporary left behind


def test_mode_is_exact_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o277)
    try:
        path = tmp_path / "k"
        load_or_create_key(path)
    finally:
        os.umask(old)
    assert mode(path) == 0o600
    load_or_create_key(path)


def test_directories_created_0700(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "server.key"
    load_or_create_key(path)
    assert mode(tmp_path / "a") == 0o700
    assert mode(tmp_path / "a" / "b") == 0o700


@pytest.mark.parametrize("bad_mode", [0o644, 0o640, 0o604, 0o610, 0o601, 0o666])
def test_mode_open_to_group_or_others_refused_with_chmod_hint(
    tmp_path: Path, bad_mode: int
) -> None:
    path = tmp_path / "server.key"
    load_or_create_key(path)
    path.chmod(bad_mode)
    with pytest.raises(KeyFileError, match=rf"mode {bad_mode:04o}.*group and others no access"):
        load_or_create_key(path)
    with pytest.raises(KeyFileError, match=rf"chmod 600 {path}"):
        load_or_create_key(path)


def test_a_key_file_of_another_user_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Root reads a file of any user: one another user made (0600, theirs) is no secret.
    path = tmp_path / "server.key"
    load_or_create_key(path)
    someone_else = os.geteuid() + 1
    monkeypatch.setattr(os, "geteuid", lambda: someone_else)
    with pytest.raises(KeyFileError, match=rf"key file {path} belongs to another user \(uid"):
        load_or_create_key(path)


@pytest.mark.parametrize("owner_only", [0o400, 0o600, 0o700])
def test_any_owner_only_mode_is_accepted(tmp_path: Path, owner_only: int) -> None:
    path = tmp_path / "server.key"
    key = load_or_create_key(path)
    path.chmod(owner_only)
    assert load_or_create_key(path).private_bytes_raw() == key.private_bytes_raw()
    assert mode(path) == owner_only  # left as the user set it


@pytest.mark.parametrize("no_links", [errno.EPERM, errno.ENOTSUP, errno.EXDEV])
def test_created_where_the_filesystem_has_no_hard_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_links: int
) -> None:
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise OSError(no_links, os.strerror(no_links))

    monkeypatch.setattr(os, "link", refuse)
    old = os.umask(0o022)
    try:
        path = tmp_path / "server.key"
        key = load_or_create_key(path)
    finally:
        os.umask(old)
    assert mode(path) == 0o600
    assert path.read_bytes() == key.private_bytes_raw()
    assert load_or_create_key(path).private_bytes_raw() == key.private_bytes_raw()
    assert [p.name for p in tmp_path.iterdir()] == ["server.key"]  # no temporary left behind


def test_other_link_failures_are_not_hidden(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(*_args: object, **_kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "link", full)
    with pytest.raises(OSError, match=os.strerror(errno.ENOSPC)):
        load_or_create_key(tmp_path / "server.key")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_wrong_size_refused(tmp_path: Path, size: int) -> None:
    path = tmp_path / "server.key"
    path.write_bytes(b"k" * size)
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match=rf"{size} bytes.*exactly 32"):
        load_or_create_key(path)
    assert path.read_bytes() == b"k" * size  # never overwritten


def test_not_a_regular_file_refused(tmp_path: Path) -> None:
    directory = tmp_path / "server.key"
    directory.mkdir(mode=0o600)
    with pytest.raises(KeyFileError, match="not a regular file"):
        load_or_create_key(directory)
    fifo = tmp_path / "fifo.key"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(KeyFileError, match="not a regular file"):
        load_or_create_key(fifo)


def test_symlink_refused(tmp_path: Path) -> None:
    real = tmp_path / "real.key"
    load_or_create_key(real)
    link = tmp_path / "link.key"
    link.symlink_to(real)
    with pytest.raises(KeyFileError, match="symbolic link"):
        load_or_create_key(link)


def test_existing_key_loaded_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / "server.key"
    key = X25519PrivateKey.generate()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, key.private_bytes_raw())
    os.close(fd)
    assert load_or_create_key(path).private_bytes_raw() == key.private_bytes_raw()


def test_concurrent_creation_agrees_on_one_key(tmp_path: Path) -> None:
    path = tmp_path / "server.key"
    results: list[bytes] = []
    barrier = threading.Barrier(8)

    def create() -> None:
        barrier.wait()
        results.append(load_or_create_key(path).private_bytes_raw())

    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8
    assert set(results) == {path.read_bytes()}
    assert [p.name for p in tmp_path.iterdir()] == ["server.key"]
