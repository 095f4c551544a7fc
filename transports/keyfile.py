"""Static X25519 keys on disk: 32 raw private bytes in a file of mode 0600, created atomically.

A key file is never overwritten. Two processes racing to create the same key both end up with
the one that was linked into place first. On a filesystem without hard links (FAT, exFAT, some
network mounts) the key file is created exclusively in place instead: still never overwritten,
but a process racing its creator may find it not yet written and refuse it. On Windows, POSIX
modes do not exist and are not checked (the file is still created exclusively).
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

__all__ = [
    "KEY_FILE_MODE",
    "PRIVATE_DIR_MODE",
    "SERVER_KEY_FILE",
    "KeyFileError",
    "create_private_file",
    "ensure_private_dir",
    "fsync_dir",
    "load_or_create_key",
    "public_bytes",
]

KEY_FILE_MODE = 0o600
SERVER_KEY_FILE = "server_key"
"""The server's key in its data folder."""
PRIVATE_DIR_MODE = 0o700
_KEY_SIZE = 32
_POSIX = os.name == "posix"
_O_NOFOLLOW: int = getattr(os, "O_NOFOLLOW", 0)
_O_NONBLOCK: int = getattr(os, "O_NONBLOCK", 0)
_GROUP_OTHER_BITS = 0o077
_NO_HARD_LINKS = frozenset(
    {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.ENOSYS, errno.EINVAL}
)
"""What ``os.link`` raises where the filesystem has no hard links (EINVAL: FAT on Windows)."""


class KeyFileError(ValueError):
    """A key file exists but cannot be used as it is; the message says how to fix it."""


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` and any missing parents with mode 0700 (existing ones are left alone)."""
    missing: list[Path] = []
    current = path
    while not os.path.lexists(current):
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, PRIVATE_DIR_MODE)
        except FileExistsError:
            continue  # created concurrently: not ours to chmod
        if _POSIX:
            os.chmod(directory, PRIVATE_DIR_MODE)  # the umask may have removed bits; never adds
    if not path.is_dir():
        raise NotADirectoryError(f"{path} exists and is not a directory")


def create_private_file(path: Path, data: bytes) -> None:
    """Create ``path`` (never an existing file or symlink: FileExistsError) with mode 0600
    whatever the umask, write ``data`` and fsync it; removed again if that fails."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW, KEY_FILE_MODE)
    try:
        try:
            if _POSIX:
                os.fchmod(fd, KEY_FILE_MODE)  # exact mode whatever the umask
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        os.unlink(path)
        raise


def replace_privately(path: Path, data: bytes) -> None:
    """Put ``data`` in place of ``path`` atomically and durably, through a new private file of
    a random name beside it: never through a file or a link someone placed there."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    create_private_file(temporary, data)
    try:
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (a new or renamed file) durable. No-op where unsupported."""
    if not _POSIX:
        return
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_or_create_key(path: Path) -> X25519PrivateKey:
    """Load the X25519 private key at ``path``, or create it (mode 0600) if there is none.

    Raises :class:`KeyFileError` if the file is not a regular file, gives its group or others
    any access (0600 and 0400 are fine), or is not exactly 32 bytes.
    """
    ensure_private_dir(path.parent)
    try:
        return _load(path)
    except FileNotFoundError:
        pass
    return _create(path)


def public_bytes(key: X25519PrivateKey) -> bytes:
    """The raw 32-byte public key."""
    return key.public_key().public_bytes_raw()


def _load(path: Path) -> X25519PrivateKey:
    # O_NOFOLLOW: a symlink is refused rather than followed somewhere unexpected.
    # O_NONBLOCK: opening a FIFO planted at the path must not hang; it is refused below.
    try:
        fd = os.open(path, os.O_RDONLY | _O_NOFOLLOW | _O_NONBLOCK)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        if os.path.islink(path):
            raise KeyFileError(
                f"key file {path} is a symbolic link; replace it with the key file itself"
            ) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"key file {path} is not a regular file")
        if _POSIX and st.st_uid != os.geteuid():  # who may have read it, or chosen it
            raise KeyFileError(
                f"key file {path} belongs to another user (uid {st.st_uid}); a private key "
                "must be this user's alone: move it away to have a new key created"
            )
        mode = stat.S_IMODE(st.st_mode)
        if _POSIX and mode & _GROUP_OTHER_BITS:
            raise KeyFileError(
                f"key file {path} has mode {mode:04o}, but a private key must give its group "
                f"and others no access; fix it with: chmod 600 {path}"
            )
        if st.st_size != _KEY_SIZE:
            raise KeyFileError(
                f"key file {path} is {st.st_size} bytes, but an X25519 private key file holds "
                f"exactly {_KEY_SIZE} raw bytes; move it away to have a new key created"
            )
        raw = _read_exact(fd, _KEY_SIZE)
    finally:
        os.close(fd)
    if len(raw) != _KEY_SIZE:  # the file shrank while we read it
        raise KeyFileError(f"key file {path} changed while it was being read")
    return X25519PrivateKey.from_private_bytes(raw)


def _create(path: Path) -> X25519PrivateKey:
    key = X25519PrivateKey.generate()
    raw = key.private_bytes_raw()
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    create_private_file(tmp, raw)
    try:
        try:
            # link() fails if the name exists: a key created concurrently is never replaced.
            os.link(tmp, path)
        except FileExistsError:
            return _load(path)
        except OSError as exc:
            if exc.errno not in _NO_HARD_LINKS:
                raise
            try:
                create_private_file(path, raw)  # no hard links here: exclusively, in place
            except FileExistsError:
                return _load(path)
    finally:
        os.unlink(tmp)
    fsync_dir(path.parent)
    return key


def _read_exact(fd: int, size: int) -> bytes:
    chunks: list[bytes] = []
    remaining = size
    while remaining:
        chunk = os.read(fd, remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
