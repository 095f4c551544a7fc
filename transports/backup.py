"""An online backup of a server's data folder: a consistent copy, made while the server runs,
that is itself a data folder a server can start from.

What it holds: the database as of one moment (SQLite's backup API, which reads a snapshot in
WAL mode while the server goes on writing), the server's key (so clients keep trusting the
restored server), every complete file the snapshot lists (each checked against its SHA-256 as
it is copied), and the committed part of every upload in progress (a restored server lets it
resume, even one completed while the files are copied; one cancelled meanwhile is dropped by
the server's start-up repair).

The copy is made in a hidden folder beside the destination and renamed to it only once every
byte is written and synced, so a folder of that name is always a whole backup. It is private
like a data folder (0700, files 0600): it holds the server's private key and every message.
The database, then the files, are copied only if they fit, leaving the server's disk the room
its database keeps (a backup there must not fill it under the running server).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import shutil
import sqlite3
import stat
import tempfile
import urllib.parse
from pathlib import Path
from typing import Final

from sealchat.core.hub import HubConfig
from sealchat.core.sizes import shown_size
from sealchat.transports.keyfile import (
    KEY_FILE_MODE,
    SERVER_KEY_FILE,
    create_private_file,
    ensure_private_dir,
    fsync_dir,
    load_or_create_key,
    public_bytes,
)
from sealchat.transports.sqlite_store import DB_FILE, DOWNLOADS_DIR, PARTIAL_DIR
from sealchat.transports.sqlite_uploads import FILE_ID
from sealchat.transports.upload_checks import O_NOFOLLOW, sync_file

__all__ = ["BackupError", "BackupReport", "back_up"]

_COPY_BLOCK: Final = 1 << 20


class BackupError(Exception):
    """The backup cannot be made; the message says why and what to do. Nothing was left."""


@dataclasses.dataclass(frozen=True)
class BackupReport:
    """What a backup holds, and the files it could not copy whole (``damaged``: the data
    folder lacks their bytes, or they no longer match their SHA-256)."""

    path: Path
    public_key: bytes
    users: int
    messages: int
    files: int
    file_bytes: int
    uploads_in_progress: int
    damaged: tuple[str, ...]
    left_over: tuple[Path, ...] = ()
    """Hidden folders beside ``path`` of backups that never finished (killed midway): each
    holds a copy of the server's key and database."""


def back_up(data_dir: Path, dest: Path) -> BackupReport:
    """Copy the server data in ``data_dir`` to the new folder ``dest`` (its parent must
    exist; ``dest`` must not). Safe while a server uses ``data_dir``."""
    source_db = data_dir / DB_FILE
    key_path = data_dir / SERVER_KEY_FILE
    for needed in (source_db, key_path):
        if not needed.is_file():
            raise BackupError(f"no server data in {data_dir} (no {needed.name} there)")
    if os.path.lexists(dest):
        raise BackupError(f"{dest} already exists; give the name of a new folder")
    if not dest.parent.is_dir():
        raise BackupError(f"the folder {dest.parent} does not exist; create it first")
    if dest.resolve().is_relative_to(data_dir.resolve()):
        raise BackupError(
            f"{dest} is inside the data folder {data_dir}: a backup there is lost with it"
        )
    # A hidden name that fits beside the longest: a file name holds at most 255 bytes.
    stem = dest.name.encode()[:128].decode(errors="ignore")
    work = Path(tempfile.mkdtemp(prefix=f".{stem}.", suffix=".partial", dir=dest.parent))
    try:
        report = _fill(work, data_dir, key_path)
        os.rename(work, dest)  # fails on a folder with anything in it made there meanwhile
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    fsync_dir(dest.parent)
    return dataclasses.replace(report, path=dest, left_over=_left_over(dest.parent))


def _left_over(parent: Path) -> tuple[Path, ...]:
    """The work folders in ``parent`` of backups that did not finish (one killed cannot clean
    up after itself): hidden, named ``.NAME.XXXX.partial``, holding a server key."""
    return tuple(
        sorted(
            entry
            for entry in parent.iterdir()
            if entry.name.startswith(".")
            and entry.name.endswith(".partial")
            and entry.is_dir()
            and not entry.is_symlink()
            and (entry / SERVER_KEY_FILE).is_file()
        )
    )


def _fill(work: Path, data_dir: Path, key_path: Path) -> BackupReport:
    """Copy the key, the database and the files into the empty private folder ``work``."""
    key = load_or_create_key(key_path)  # checks the key file (a regular 0600 file of 32 bytes)
    raw_key = key.private_bytes_raw()
    database, source = work / DB_FILE, data_dir / DB_FILE
    wal = source.with_name(f"{DB_FILE}-wal")  # its pages may be newer than the file's
    at_most = source.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
    _check_room(work, data_dir, "the key and the database need", len(raw_key) + at_most)
    create_private_file(work / SERVER_KEY_FILE, raw_key)  # not read again
    _snapshot(source, database)
    downloads, target = data_dir / DOWNLOADS_DIR, work / DOWNLOADS_DIR
    ensure_private_dir(target / PARTIAL_DIR)
    conn = sqlite3.connect(database)
    try:
        users, messages = (
            conn.execute("SELECT count(*) FROM users").fetchone()[0],
            conn.execute("SELECT count(*) FROM messages").fetchone()[0],
        )
        rows = conn.execute(
            "SELECT file_id, name, size, sha256, received, complete FROM files ORDER BY rowid"
        ).fetchall()
    finally:
        conn.close()
    needed = sum(size if done else got for _, _, size, _, got, done in rows)
    _check_room(work, data_dir, "the files need", needed)
    damaged: list[str] = []
    files = file_bytes = uploads = 0
    for file_id, name, size, sha256, received, complete in rows:
        if not FILE_ID.fullmatch(file_id):  # never a path made of other text
            continue
        if complete:
            copied = _copy(downloads / file_id, target / file_id, size)
            if copied is None or copied != bytes(sha256):
                damaged.append(f"{name!r} ({size:,} bytes, id {file_id})")
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(target / file_id)
                continue
            files += 1
            file_bytes += size
        elif any(  # in downloads/ if completed since the snapshot: its first bytes are the same
            _copy(folder / file_id, target / PARTIAL_DIR / file_id, received)
            for folder in (downloads / PARTIAL_DIR, downloads)
        ):
            uploads += 1
    for folder in (target / PARTIAL_DIR, target, work):
        fsync_dir(folder)
    return BackupReport(
        path=work,
        public_key=public_bytes(key),
        users=users,
        messages=messages,
        files=files,
        file_bytes=file_bytes,
        uploads_in_progress=uploads,
        damaged=tuple(damaged),
    )


def _check_room(work: Path, data_dir: Path, what_needs: str, needed: int) -> None:
    """BackupError unless the disk of ``work`` has room for ``needed`` more bytes, and on the
    server's own disk still the room its database keeps (``HubConfig.min_free_space``):
    copying up to a full disk would leave the running server unable to store messages.
    ``what_needs`` says what they are for ("the files need")."""
    free = shutil.disk_usage(work).free
    keep = HubConfig().min_free_space if os.stat(work).st_dev == os.stat(data_dir).st_dev else 0
    if needed > free - keep:
        also = f", and {shown_size(keep)} must stay free there for the server" if keep else ""
        raise BackupError(
            f"not enough room: {what_needs} {shown_size(needed)} and {work.parent} has "
            f"{shown_size(free)} free{also}; make room, or back up to another disk"
        )


def _snapshot(source: Path, copy: Path) -> None:
    """Copy the database ``source`` as of one moment into the new file ``copy`` (0600),
    checked for damage."""
    os.close(os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL | O_NOFOLLOW, KEY_FILE_MODE))
    # Read-write, never created: as the last connection (a stopped server) it removes the
    # -wal and -shm files on closing, as the server would; read-only, it left them, owned by
    # whoever ran the backup.
    src = sqlite3.connect(f"file:{urllib.parse.quote(str(source))}?mode=rw", uri=True)
    dst = sqlite3.connect(copy)
    try:
        src.execute("PRAGMA busy_timeout=5000")
        src.backup(dst)  # in one step: one read transaction, a consistent snapshot
        dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
        (verdict,) = dst.execute("PRAGMA quick_check").fetchone()
        if verdict != "ok":
            raise BackupError(f"the database {source} is damaged ({verdict}); nothing was copied")
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"cannot copy the database {source}: {exc}") from None
    finally:
        src.close()
        dst.close()
    sync_file(copy, copy.stat().st_size)


def _copy(source: Path, copy: Path, size: int) -> bytes | None:
    """Copy the first ``size`` bytes of the regular file ``source`` into the new private file
    ``copy``, synced; their SHA-256, or None (and no copy) if ``source`` is missing, not a
    regular file or shorter."""
    try:
        fd = os.open(source, os.O_RDONLY | O_NOFOLLOW)
    except OSError:  # gone (an upload cancelled meanwhile), or a link: not ours to follow
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        out = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL | O_NOFOLLOW, KEY_FILE_MODE)
        try:
            digest = _copy_bytes(fd, out, size)
            if digest is not None:
                os.fsync(out)
        finally:
            os.close(out)
    finally:
        os.close(fd)
    if digest is None:
        os.unlink(copy)
    return digest


def _copy_bytes(source: int, out: int, size: int) -> bytes | None:
    """Copy ``size`` bytes from the start of ``source`` to ``out``, hashing them; None if
    ``source`` holds fewer."""
    digest = hashlib.sha256()
    buffer = bytearray(_COPY_BLOCK)
    view = memoryview(buffer)
    offset = 0
    while offset < size:
        n = os.preadv(source, [view[: min(_COPY_BLOCK, size - offset)]], offset)
        if not n:
            return None
        digest.update(view[:n])
        written = 0
        while written < n:
            written += os.write(out, view[written:n])
        offset += n
    return digest.digest()
