"""Received files on the client: safe names, resumable partial files, verified completion.

A name from the server is display text. The file lands in the downloads folder under a
cleaned, non-clobbering version of it, written first to ``.<file_id>.part`` (so an interrupted
download resumes from its size) and renamed only after its SHA-256 matches.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path

import platformdirs

from sealchat.transports.writeback import WriteBehind

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]")
_MAX_NAME = 200
_BLOCK = 1 << 20
_OPEN_FLAGS = (
    os.O_RDWR | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
)


def default_downloads_dir() -> Path:
    """The user's downloads folder / sealchat."""
    return Path(platformdirs.user_downloads_dir()) / "sealchat"


def safe_name(name: str) -> str:
    """A file name that stays inside its folder on every platform: no separators, control
    characters or leading dots, at most 200 characters, never empty."""
    name = unicodedata.normalize("NFC", name)
    name = name.replace("/", "_").replace("\\", "_")
    name = _UNSAFE.sub("_", name).strip(" .")
    if len(name) > _MAX_NAME:
        _, dot, ext = name.rpartition(".")
        keep = ext if dot and len(ext) <= 16 else ""
        name = name[: _MAX_NAME - len(keep) - 1].rstrip(" .") + ("." + keep if keep else "")
    return name or "download"


class PartialDownload:
    """The open ``.part`` file of one download: chunks are appended and hashed as they come
    (bytes left by an interrupted download are hashed once, on opening), then ``finish``
    checks the SHA-256 and moves the file into place. Use it as a context manager."""

    def __init__(self, folder: Path, file_id: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.path = _part_path(folder, file_id)
        self._fd = os.open(self.path, _OPEN_FLAGS, 0o600)
        self._digest = hashlib.sha256()
        self.size = 0
        """Bytes here (hashed): where a resumed download starts."""
        try:
            _lock(self._fd, self.path)
            while block := os.read(self._fd, _BLOCK):  # from the start; writes append
                self._digest.update(block)
                self.size += len(block)
        except BaseException:
            self.close()
            raise
        self._behind = WriteBehind(self.size)  # what was here before is on disk already

    def __repr__(self) -> str:
        return f"PartialDownload({str(self.path)!r}, size={self.size})"

    def __enter__(self) -> PartialDownload:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the file (it stays, so a later download resumes from it)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def write(self, offset: int, data: bytes) -> None:
        """Append ``data``, which must start where the file ends (ValueError otherwise)."""
        if offset != self.size:
            raise ValueError(f"a chunk at offset {offset}, but {self.size} bytes are here")
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        self._digest.update(data)
        self.size += len(data)
        self._behind.wrote(self._fd, self.size)

    def write_all(self, chunks: Iterable[tuple[int, bytes]]) -> None:
        """``write`` each (offset, data) in turn: one call for what arrived together."""
        for offset, data in chunks:
            self.write(offset, data)

    def finish(self, name: str, sha256: bytes) -> Path:
        """Check the SHA-256 the sender offered, then move the file to a free name derived
        from ``name`` (display text from the server); ValueError (and the partial file
        removed) if the bytes are not what was offered."""
        os.fsync(self._fd)
        on_disk = os.fstat(self._fd).st_size
        self.close()
        if on_disk != self.size or self._digest.digest() != sha256:
            self.path.unlink(missing_ok=True)
            raise ValueError(f"{name}: the SHA-256 does not match; the download was deleted")
        target = _free_path(self.folder, safe_name(name))
        os.replace(self.path, target)
        return target


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


def sha256_of(path: Path) -> bytes:
    """The SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        while block := source.read(_BLOCK):
            digest.update(block)
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
