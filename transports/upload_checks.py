"""Checking an upload's bytes on disk: a SHA-256 kept as its chunks arrive, or one read back
from the file, and its size checked before the fsync that makes it durable."""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from pathlib import Path
from typing import Final

from sealchat.core.hub import ReadBackFailed

log = logging.getLogger("sealchat.server")

O_NOFOLLOW: Final[int] = getattr(os, "O_NOFOLLOW", 0)
"""Open flag that refuses a symbolic link (0 where the system has none)."""

_HASH_BLOCK = 1 << 20


class RunningHash:
    """The SHA-256 of the first ``received`` bytes of a partial upload."""

    __slots__ = ("digest", "received")

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.received = 0


def sync_file(path: Path, size: int) -> bool:
    """fsync a regular file; False if it does not hold exactly ``size`` bytes."""
    fd = os.open(path, os.O_RDONLY | O_NOFOLLOW)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FileNotFoundError(f"{path} is not a regular file")
        if info.st_size != size:
            return False
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


def hash_file(path: Path, *, sync: bool = False) -> tuple[int, bytes]:
    """(size, SHA-256) of a file read in 1 MiB blocks; fsync it too if ``sync``."""
    digest = hashlib.sha256()
    buf = bytearray(_HASH_BLOCK)
    view = memoryview(buf)
    total = 0
    fd = os.open(path, os.O_RDONLY | O_NOFOLLOW)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise FileNotFoundError(f"{path} is not a regular file")
        while n := os.readv(fd, [buf]):
            digest.update(view[:n])
            total += n
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    return total, digest.digest()


def read_back_failed(exc: OSError, file_id: str, uploader: object) -> ReadBackFailed:
    """What the ``exc`` met reading back (or looking at) upload ``file_id`` of ``uploader``
    means for it, logged in one warning (the file id, the uploader and the error: never the
    file's contents)."""
    failure = ReadBackFailed.of(exc)
    if failure is ReadBackFailed.GONE:
        line = "upload %s of %s is gone from the disk: it cannot be checked and is lost (%s)"
    else:
        line = (
            "cannot read back upload %s of %s to check it just now: it is kept, to be checked "
            "again when the uploader sends it again (%s)"
        )
    log.warning(line, file_id, uploader, exc)
    return failure
