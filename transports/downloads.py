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
from pathlib import Path

import platformdirs

_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]")
_MAX_NAME = 200


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
    """The ``.part`` file of one download: append chunks, then verify and move into place."""

    def __init__(self, folder: Path, file_id: str, name: str, sha256: bytes) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.name = name
        self.sha256 = sha256
        self.path = _part_path(folder, file_id)

    def __repr__(self) -> str:
        return f"PartialDownload({str(self.path)!r})"

    @staticmethod
    def existing_size(folder: Path, file_id: str) -> int:
        """Bytes of ``file_id`` already downloaded into ``folder`` (0 if none)."""
        try:
            return _part_path(folder, file_id).stat().st_size
        except OSError:
            return 0

    @property
    def size(self) -> int:
        """Bytes already here: where a resumed download starts."""
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def write(self, offset: int, data: bytes) -> None:
        """Append ``data``, which must start where the file ends."""
        if offset != self.size:
            raise ValueError(f"chunk at {offset}, but {self.size} bytes are here")
        with open(self.path, "ab") as out:
            out.write(data)

    def finish(self) -> Path:
        """Check the SHA-256, then move the file to a free name; ValueError (and the partial
        file removed) if the bytes are not what the sender offered."""
        with open(self.path, "rb") as source:
            os.fsync(source.fileno())
        if sha256_of(self.path) != self.sha256:
            self.path.unlink()
            raise ValueError(f"{self.name}: the SHA-256 does not match; the download was deleted")
        target = _free_path(self.folder, safe_name(self.name))
        os.replace(self.path, target)
        return target


def sha256_of(path: Path) -> bytes:
    """The SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        while block := source.read(1 << 20):
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
