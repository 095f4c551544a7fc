"""The lock that gives one server a data folder to itself.

A server's store repairs partial uploads after a crash when it opens (``Uploads.recover``);
run while another server writes them, that repair would cut and delete live uploads. So the
serving store holds an exclusive lock on ``sealchat.lock`` in the folder for as long as it is
open, and a second server is refused with the first one's process id. The operator's account
commands open the store beside the server without the lock (and without the repair).
"""

from __future__ import annotations

import os
from pathlib import Path

from sealchat.transports.sqlite_uploads import FILE_MODE
from sealchat.transports.upload_checks import O_NOFOLLOW

LOCK_FILE = "sealchat.lock"

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]


class FolderInUse(Exception):
    """Another process serves this data folder; the message says which and what to do."""


class FolderLock:
    """An exclusive lock on a data folder, held until ``release``."""

    def __init__(self, folder: Path) -> None:
        path = folder / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT | O_NOFOLLOW, FILE_MODE)
        try:
            if not _lock(fd):
                holder = _holder(fd)
                who = f" (process {holder})" if holder.isdigit() else ""
                raise FolderInUse(
                    f"another sealchat server is using {folder}{who}: stop it first, or give "
                    "this one another --data-dir"
                )
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except BaseException:
            os.close(fd)
            raise
        self._fd: int | None = fd

    def release(self) -> None:
        """Let the folder go (closing the file releases the lock)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _holder(fd: int) -> str:
    """The process id the lock's holder wrote, if it can be read."""
    try:
        return os.read(fd, 32).decode("ascii", "replace").strip()
    except OSError:  # locked against reading (Windows)
        return ""


def _lock(fd: int) -> bool:
    """Take the lock on ``fd`` without waiting; False if another holds it."""
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:  # pragma: no cover - Windows
            import msvcrt

            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError:
        return False
    return True
