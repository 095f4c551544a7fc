"""Received files on the client: safe names, resumable partial files, verified completion.

A name from the server is display text. The file lands in the downloads folder (created
private) under a cleaned, non-clobbering version of it, written first to ``.<file_id>.part``
(so an interrupted download resumes from its size) and renamed only after its SHA-256 matches.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import stat
import threading
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from typing import TypeAlias

import platformdirs

from sealchat.core.sizes import shown_size
from sealchat.transports.keyfile import ensure_private_dir
from sealchat.transports.requests import TransferFailed
from sealchat.transports.shown_text import hidden
from sealchat.transports.writeback import WriteBehind

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

AnyPath: TypeAlias = str | os.PathLike[str]
"""A path as the client libraries take one: a ``str`` or a ``pathlib.Path``."""

_UNSAFE_CHARS = frozenset('/\\:*?"<>|')
_RESERVED = re.compile(r"(CON|PRN|AUX|NUL|CONIN\$|CONOUT\$|(COM|LPT)[1-9¹²³]) *", re.IGNORECASE)
"""Windows device names, reserved whatever follows the first dot."""
_MAX_NAME_BYTES = 255 - len(" (9999)") - 8
"""UTF-8 bytes of a name, leaving room for a non-clobbering suffix (and some to spare)."""
_MAX_EXT_BYTES = 16
_NAME_ERRORS = frozenset({errno.ENAMETOOLONG, errno.EILSEQ, errno.EINVAL})
"""How a filesystem refuses a name it cannot store."""
_BLOCK = 1 << 20
_O_NONBLOCK: int = getattr(os, "O_NONBLOCK", 0)
_OPEN_FLAGS = (
    os.O_RDWR
    | os.O_CREAT
    | os.O_APPEND
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_BINARY", 0)
    | _O_NONBLOCK  # a FIFO planted as the .part file must not block the open; refused below
)


def default_downloads_dir() -> Path:
    """The user's downloads folder / sealchat."""
    return Path(platformdirs.user_downloads_dir()) / "sealchat"


def safe_name(name: str) -> str:
    """A file name that stays inside its folder on every platform and shows what it is: no
    separators, control, format (bidi) or line-break characters, leading dots or Windows
    device names; at most 240 UTF-8 bytes (keeping a short extension), never empty."""
    name = unicodedata.normalize("NFC", name)
    name = "".join("_" if _unsafe(c) else c for c in name).strip(" .")
    if len(name.encode()) > _MAX_NAME_BYTES:
        stem, dot, ext = name.rpartition(".")
        if not dot or not stem or len(ext.encode()) > _MAX_EXT_BYTES:
            stem, ext = name, ""
        suffix = "." + ext if ext else ""
        room = _MAX_NAME_BYTES - len(suffix.encode())
        # errors="ignore" drops a character the cut went through
        stem = stem.encode()[:room].decode(errors="ignore").rstrip(" .")
        name = stem + suffix
    if _RESERVED.fullmatch(name.split(".", 1)[0]):
        name = "_" + name
    return name or "download"


def _unsafe(char: str) -> bool:
    """Whether ``char`` must not appear in a saved file's name."""
    return char in _UNSAFE_CHARS or hidden(char)


class NoRoom(OSError):
    """The disk of the downloads folder has no room for the rest of a download."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.ENOSPC, message)

    def __str__(self) -> str:
        return str(self.strerror)


class PartialDownload:
    """The open ``.part`` file of one download: chunks are appended and hashed as they come
    (bytes left by an interrupted download are hashed once, on opening), then ``finish``
    checks the SHA-256 and moves the file into place. Use it as a context manager.

    Once ``expect`` gives the size the server announced, bytes beyond it are refused and the
    partial file is discarded."""

    def __init__(self, folder: Path, file_id: str) -> None:
        self.path = _part_path(folder, file_id)
        ensure_private_dir(folder)
        self.folder = folder
        self.file_id = file_id
        self.expected: int | None = None
        """The announced size, if known."""
        self._fd = _open_locked(self.path)
        self._digest = hashlib.sha256()
        self.size = 0
        """Bytes here (hashed): where a resumed download starts."""
        try:
            while block := os.read(self._fd, _BLOCK):  # from the start; writes append
                self._digest.update(block)
                self.size += len(block)
        except BaseException:
            self._close_fd()  # kept: what is in it may still be resumed
            raise
        self._behind = WriteBehind(self.size)  # what was here before is on disk already

    def __repr__(self) -> str:
        return f"PartialDownload({str(self.path)!r}, size={self.size})"

    def __enter__(self) -> PartialDownload:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the file. It stays, so that a later download resumes from it, unless it is
        still empty: a refused download (a mistyped id) leaves nothing behind."""
        if self.size == 0:
            self._discard()
        self._close_fd()

    def _discard(self) -> None:
        """Remove the file, if it is still open here, while it is locked (nobody else writes
        it), then close it."""
        if self._fd >= 0:
            self._unlocked_on_windows()
            self.path.unlink(missing_ok=True)
        self._close_fd()

    def _unlocked_on_windows(self) -> None:
        """Close the file before it is removed or moved where there is no ``flock`` (Windows):
        nothing is locked there, and an open file cannot be removed or renamed."""
        if fcntl is None:
            self._close_fd()

    def _close_fd(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def expect(self, size: int) -> None:
        """The server announced ``size`` bytes: refuse any beyond it (ValueError, and the
        partial file discarded, if more are here already), and a download whose rest the
        folder's disk has no room for (NoRoom: the part here stays, to resume)."""
        self.expected = size
        self._check_size(self.size)
        missing, free = size - self.size, shutil.disk_usage(self.folder).free
        if missing > free:
            raise NoRoom(
                f"{shown_size(missing)} more is needed in {self.folder}, which has "
                f"{shown_size(free)} free: free some space (then get it again to resume), "
                "or download to another folder"
            )

    def write(self, offset: int, data: bytes | memoryview) -> None:
        """Append ``data``, which must start where the file ends and stay within the expected
        size (ValueError otherwise; in the latter case the partial file is discarded)."""
        if offset != self.size:
            raise ValueError(f"a chunk at offset {offset}, but {self.size} bytes are here")
        self._check_size(self.size + len(data))
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        self._digest.update(data)
        self.size += len(data)
        self._behind.wrote(self._fd, self.size)

    def write_all(self, chunks: Iterable[tuple[int, bytes | memoryview]]) -> None:
        """``write`` each (offset, data) in turn: one call for what arrived together."""
        for offset, data in chunks:
            self.write(offset, data)

    def finish(self, name: str, sha256: bytes) -> Path:
        """Check the SHA-256 the sender offered, then move the file to a free name derived
        from ``name`` (display text from the server), or ``download-<file id>`` if the
        filesystem cannot store that; ValueError (and the partial file removed) if the bytes
        are not what was offered."""
        # The file is removed or moved while it is still open, and so locked: a download of
        # the same file starting meanwhile never takes it over (see _open_locked).
        try:
            os.fsync(self._fd)
            on_disk = os.fstat(self._fd).st_size
            if on_disk != self.size or self._digest.digest() != sha256:
                self._discard()
                raise ValueError(f"{name}: the SHA-256 does not match; the download was deleted")
            try:
                target = _free_path(self.folder, safe_name(name))
            except OSError as exc:  # a name this filesystem cannot store after all
                if exc.errno not in _NAME_ERRORS:
                    raise
                target = _free_path(self.folder, f"download-{self.file_id}")
            self._unlocked_on_windows()
            os.replace(self.path, target)  # an empty file is a file too: it is moved
        finally:
            self._close_fd()
        return target

    def _check_size(self, size: int) -> None:
        """ValueError, discarding the partial file, if ``size`` bytes exceed the expected."""
        if self.expected is None or size <= self.expected:
            return
        self._discard()
        raise ValueError(
            f"the server sent more than the {self.expected} bytes it announced for "
            f"{self.file_id}; the download was deleted"
        )


def _open_own_file(path: Path) -> int:
    """Open (or create) the ``.part`` file, refusing anything but a regular file of ours with
    a single link: a symlink, FIFO or file planted by someone else is never written to."""
    refused = ValueError(
        f"{path} is not a file this user created (a link, a special file or another user's); "
        f"remove it and download again"
    )
    try:
        fd = os.open(path, _OPEN_FLAGS, 0o600)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK):  # O_NOFOLLOW met a symlink (Linux, BSD)
            raise refused from None
        raise
    try:
        st = os.fstat(fd)
        owner = getattr(os, "geteuid", None)
        if (
            not stat.S_ISREG(st.st_mode)
            or st.st_nlink != 1
            or (owner is not None and st.st_uid != owner())
        ):
            raise refused
        if _O_NONBLOCK:
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_locked(path: Path) -> int:
    """``_open_own_file`` and ``_lock``, again if the file named ``path`` changed between the
    open and the lock: the download that held it removed or moved it meanwhile (then this one
    would have locked a file nobody can find, and saved another download's as its own)."""
    for _ in range(10):
        fd = _open_own_file(path)
        try:
            _lock(fd, path)
            held, named = os.fstat(fd), os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            os.close(fd)
            continue
        except BaseException:
            os.close(fd)
            raise
        if (held.st_dev, held.st_ino) == (named.st_dev, named.st_ino):
            return fd
        os.close(fd)
    raise ValueError(f"{path.name} keeps changing: is another download of it running?")


def _lock(fd: int, path: Path) -> None:
    """Hold the ``.part`` file for this download alone (until it is closed): a second
    download of the same file, from this process or another one, would interleave its
    chunks with ours. ValueError if it is taken."""
    if fcntl is None:  # Windows: the client's own check (one download per file id) remains
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise ValueError(f"{path.name} is already being downloaded") from None


def sha256_of(path: Path, stop: threading.Event | None = None, *, size: int | None = None) -> bytes:
    """The SHA-256 of a file, read in 1 MiB blocks; InterruptedError as soon as ``stop`` is
    set (checked before each block). Given its ``size``, TransferFailed if the file holds
    another number of bytes: it changed after it was measured, or it is one whose size says
    nothing (as in /proc), and the server would refuse what it was offered."""
    digest = hashlib.sha256()
    read = 0
    with open(path, "rb") as source:
        while block := source.read(_BLOCK):
            if stop is not None and stop.is_set():
                raise InterruptedError(f"stopped hashing {path}")
            digest.update(block)
            read += len(block)
            if size is not None and read > size:
                break  # a file that grows need not be read to its end
    if size is not None and read != size:
        held = "more" if read > size else shown_size(read)
        raise TransferFailed(
            f"{path.name} changed while it was read: its size said {shown_size(size)}, but "
            f"it held {held}; send it once it no longer changes (or send a copy of it)"
        )
    return digest.digest()


def _part_path(folder: Path, file_id: str) -> Path:
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", file_id):
        raise ValueError(f"not a file id: {file_id!r}")
    return folder / f".{file_id}.part"


def _free_path(folder: Path, name: str) -> Path:
    """``folder/name``, or ``name (1)``, ``name (2)``… if taken; reserved by creating it."""
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        stem, ext = name, ""
    for n in range(10_000):
        candidate = folder / (name if n == 0 else f"{stem} ({n}){'.' + ext if ext else ''}")
        try:
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue
        os.close(fd)
        return candidate
    raise FileExistsError(f"no free name for {name} in {folder}")
