"""The uploaded files of the SQLite store: their bytes on disk and the rows that track them.

File ids are chosen here (``secrets.token_hex(16)``); a name a client sent is only ever stored
as text in the database, never used in a path. Files are deleted from disk only after the
deletion of their row is committed (the store calls ``committed`` or ``rolled_back`` as each
transaction ends).

Upload hashing: while an upload is written in order through one store, a SHA-256 of the bytes
received so far is kept in memory, so completing it needs no second read of the file (only its
fsync). After a restart, when that hash no longer matches the committed count, or when it was
forgotten (more than ``_MAX_HASHERS`` uploads in progress), the file must be read and hashed
instead: ``upload_hasher`` gives a function that does it (and the fsync) touching only that
file, for the server to run off the hub's thread, and ``complete_file`` is then given the
digest it returned (a second of reading per GiB never holds up the hub). The file cannot change
meanwhile: all its bytes are received, so no chunk is written to it, and the hub lets no
transfer resume or discard it while it is checked. Without a digest, ``complete_file`` reads
the file itself (the hub never lets it; ``recover`` at startup does the same).

Uploads in progress: the partial file being written stays open between chunks, with the size
and count its row had when it was opened. Each chunk is checked against that count and the
UPDATE recording the new count matches only a row that still holds it (so a chunk is never
written on a count the database does not have); any rollback closes every open upload, and
the next chunk opens the file and reads its row again (cutting off bytes whose count was
never committed). ``release_upload`` closes one when its transfer ends.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import sqlite3
import stat
from collections import OrderedDict
from collections.abc import Callable
from functools import partial as bind
from pathlib import Path
from typing import Final

from sealchat.core.hub.store import Digest, ReadBackFailed, StoredFile
from sealchat.transports import sqlite_files
from sealchat.transports.keyfile import fsync_dir
from sealchat.transports.sqlite_schema import one_target
from sealchat.transports.upload_checks import (
    O_NOFOLLOW,
    RunningHash,
    hash_file,
    read_back_failed,
    sync_file,
)
from sealchat.transports.writeback import WriteBehind

FILE_MODE: Final = 0o600

_MAX_HASHERS = 4096
"""Partial uploads with a running SHA-256 in memory (about 200 bytes each); beyond this the
least recently written one is forgotten and hashed from disk when it completes."""
_MAX_OPEN_UPLOADS = 64
"""Partial uploads kept open between chunks (a file descriptor each); beyond this the least
recently written one is closed, and opened and checked again at its next chunk."""
FILE_ID: Final = re.compile(r"[0-9a-f]{32}")
"""What every file id is (the store makes them): only text of this form names a file on disk."""


class _OpenUpload:
    """A partial upload open for appending: its offered ``size`` and the ``received`` count
    committed (or about to be, in the current transaction) for it."""

    __slots__ = ("behind", "fd", "received", "size")

    def __init__(self, fd: int, received: int, size: int) -> None:
        self.fd = fd
        self.received = received
        self.size = size
        self.behind = WriteBehind(received)


class Uploads:
    """The files under ``downloads`` and ``downloads/.partial`` (None: no data directory, and
    the file methods raise ``RuntimeError``), over the store's connection."""

    def __init__(
        self, conn: sqlite3.Connection, downloads: Path | None, partials: Path | None
    ) -> None:
        self._conn = conn
        self._downloads = downloads
        self._partials = partials
        self._hashes: OrderedDict[str, RunningHash] = OrderedDict()
        self._open_uploads: OrderedDict[str, _OpenUpload] = OrderedDict()
        self._unlink_after_commit: list[Path] = []
        self._completed_in_transaction: list[tuple[Path, Path]] = []
        """(partial, final) of the files moved into place by the open transaction: moved
        back if it rolls back, so that their uploads can still be completed (and announced)."""

    def recover(self) -> None:
        """Make partial uploads agree with the database after a crash.

        Bytes written after the last committed count are cut off (or the count lowered if the
        OS lost some); a file moved into place whose completion was not committed (nor the
        message announcing it, in the same transaction) goes back to being a partial upload
        with every byte received, which an offer of the same file completes and announces;
        rows without bytes are dropped, and stray partial files are removed.
        """
        if self._partials is None:
            return
        rows = self._conn.execute(
            "SELECT file_id, size, sha256, received FROM files WHERE complete = 0"
        ).fetchall()
        live: set[str] = set()
        for file_id, size, sha256, received in rows:
            if not FILE_ID.fullmatch(file_id):
                continue
            partial = self._partials / file_id
            final = self._final_path(file_id)
            if partial.is_file() and not partial.is_symlink():
                live.add(file_id)
                actual = partial.stat().st_size
                if actual > received:
                    os.truncate(partial, received)
                elif actual < received:
                    self._conn.execute(
                        "UPDATE files SET received = ? WHERE file_id = ?", (actual, file_id)
                    )
            elif final.is_file() and hash_file(final) == (size, bytes(sha256)):
                os.replace(final, partial)
                fsync_dir(partial.parent)
                live.add(file_id)
                self._conn.execute("UPDATE files SET received = size WHERE file_id = ?", (file_id,))
            else:
                self._conn.execute("DELETE FROM files WHERE file_id = ?", (file_id,))
                final.unlink(missing_ok=True)
        for entry in os.scandir(self._partials):
            if entry.name not in live and entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)

    def committed(self) -> None:
        """The transaction is committed: delete the files whose rows it removed."""
        paths, self._unlink_after_commit = self._unlink_after_commit, []
        self._completed_in_transaction.clear()
        for path in paths:
            path.unlink(missing_ok=True)

    def rolled_back(self) -> None:
        """The transaction is rolled back: keep the files whose rows it would have removed,
        and close every open upload (its count may be ahead of its row now)."""
        self._unlink_after_commit.clear()
        moved, self._completed_in_transaction = self._completed_in_transaction, []
        for partial, final in reversed(moved):
            with contextlib.suppress(OSError):  # else the next start's recovery moves it
                os.replace(final, partial)
        self.release_all()

    def free_space(self) -> int | None:
        """Bytes free on the disk of ``downloads`` (None without a data directory)."""
        if self._downloads is None:
            return None
        return shutil.disk_usage(self._downloads).free

    def _dirs(self) -> tuple[Path, Path]:
        if self._downloads is None or self._partials is None:
            raise RuntimeError("this store has no data directory for files")
        return self._downloads, self._partials

    def _final_path(self, file_id: str) -> Path:
        if not FILE_ID.fullmatch(file_id):
            raise ValueError("malformed file id")
        return self._dirs()[0] / file_id

    def _partial_path(self, file_id: str) -> Path:
        if not FILE_ID.fullmatch(file_id):
            raise ValueError("malformed file id")
        return self._dirs()[1] / file_id

    def create_file(
        self,
        *,
        owner_key: str,
        name: str,
        size: int,
        sha256: bytes,
        room: str,
        to_key: str,
        ts: float,
    ) -> StoredFile:
        """Register an upload under a new server-chosen id and create its empty partial file.

        ``name`` is stored as text only. Exactly one of ``room`` and ``to_key`` must be set.
        """
        one_target(room, to_key)
        if size < 0:
            raise ValueError("file size cannot be negative")
        if len(sha256) != 32:
            raise ValueError("sha256 must be 32 bytes")
        file_id = secrets.token_hex(16)
        partial = self._partial_path(file_id)
        os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | O_NOFOLLOW, FILE_MODE))
        os.chmod(partial, FILE_MODE)
        try:
            self._conn.execute(
                "INSERT INTO files (file_id, owner_key, name, size, sha256, room, to_key, "
                "received, complete, ts) VALUES (?, ?, ?, ?, ?, ?, ?, 0, 0, ?)",
                (file_id, owner_key, name, size, bytes(sha256), room, to_key, ts),
            )
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        return StoredFile(
            file_id=file_id,
            owner_key=owner_key,
            name=name,
            size=size,
            sha256=bytes(sha256),
            room=room,
            to_key=to_key,
            received=0,
            complete=False,
            ts=ts,
        )

    def unfinished_uploads(self, owner_key: str) -> list[StoredFile]:
        """The user's incomplete uploads, the longest idle first."""
        unfinished = sqlite_files.unfinished_uploads(self._conn, owner_key)
        return sorted(unfinished, key=self._last_written)

    def _last_written(self, file: StoredFile) -> float:
        """When an upload was last written to (its offer's time if it never was)."""
        try:
            return max(file.ts, self._partial_path(file.file_id).stat().st_mtime)
        except (OSError, RuntimeError):  # no partial file yet, or no data folder
            return file.ts

    def _require_file(self, file_id: str) -> StoredFile:
        f = sqlite_files.get_file(self._conn, file_id)
        if f is None:
            raise ValueError("no such file")
        return f

    def write_chunk(self, file_id: str, offset: int, data: bytes | memoryview) -> int:
        """Append ``data`` at ``offset`` (which must equal the bytes received so far) and
        return the new count. ValueError for a wrong offset, too much data, a complete or
        unknown file, or a row changed behind the open upload (see the module docstring)."""
        upload = self._open_uploads.get(file_id)
        if upload is None:
            upload = self._open_upload(file_id)
        else:
            self._open_uploads.move_to_end(file_id)  # most recently written last
        received = upload.received
        if offset != received:
            raise ValueError(
                f"chunk offset {offset} does not match the {received} bytes received so far"
            )
        if received + len(data) > upload.size:
            raise ValueError(
                f"chunk of {len(data)} bytes at offset {offset} goes past the offered size "
                f"of {upload.size} bytes"
            )
        if not data:
            return received
        running = self._hashes.pop(file_id, None)
        if running is None and received == 0:
            running = RunningHash()
        elif running is not None and running.received != received:
            running = None  # it saw bytes whose count was never committed, or missed some
        new_count = received + len(data)
        try:
            # Unbuffered os.write: the bytes are in the kernel (the file's page cache) before
            # the new count is committed.
            view = memoryview(data)
            while view:
                view = view[os.write(upload.fd, view) :]
            updated = self._conn.execute(
                "UPDATE files SET received = ? WHERE file_id = ? AND received = ? AND complete = 0",
                (new_count, file_id, received),
            ).rowcount
        except BaseException:
            self.release_upload(file_id)  # reopened (and cut back to its count) next time
            raise
        if updated != 1:
            self.release_upload(file_id)
            raise ValueError("the file changed while it was being written; resume to continue")
        upload.received = new_count
        upload.behind.wrote(upload.fd, new_count)  # a few ms every 8 MiB, not 0.5 s at the end
        if running is not None:
            running.digest.update(data)
            running.received = new_count
            self._hashes[file_id] = running  # most recently written last
            if len(self._hashes) > _MAX_HASHERS:
                self._hashes.popitem(last=False)
        return new_count

    def _open_upload(self, file_id: str) -> _OpenUpload:
        """Open a partial upload for appending, checked against its row: bytes past the
        committed count (a write whose count was never committed) are cut off."""
        f = self._require_file(file_id)
        if f.complete:
            raise ValueError("file is already complete")
        fd = os.open(self._partial_path(file_id), os.O_WRONLY | os.O_APPEND | O_NOFOLLOW)
        try:
            actual = os.fstat(fd).st_size
            if actual > f.received:
                os.ftruncate(fd, f.received)
                self._hashes.pop(file_id, None)  # it may have seen the bytes cut off
            elif actual < f.received:
                raise ValueError(f"partial file holds {actual} bytes, expected {f.received}")
        except BaseException:
            os.close(fd)
            raise
        upload = self._open_uploads[file_id] = _OpenUpload(fd, f.received, f.size)
        if len(self._open_uploads) > _MAX_OPEN_UPLOADS:
            os.close(self._open_uploads.popitem(last=False)[1].fd)
        return upload

    def release_upload(self, file_id: str) -> None:
        """Close the partial file if it is open for writing (no-op otherwise). Its bytes, row
        and running hash stay: the upload can go on later."""
        upload = self._open_uploads.pop(file_id, None)
        if upload is not None:
            os.close(upload.fd)

    def release_all(self) -> None:
        """Close every open upload."""
        while self._open_uploads:
            os.close(self._open_uploads.popitem()[1].fd)

    def upload_hasher(self, file_id: str) -> Callable[[], Digest] | None:
        """None if ``complete_file(file_id)`` needs no read of the file (the upload's running
        SHA-256 covers all of it, it is empty, or there is nothing to complete); otherwise a
        function that reads the partial file and returns its size and SHA-256, fsyncing it,
        for another thread: it touches that file only (``FileNotFoundError`` if it is
        gone)."""
        f = sqlite_files.get_file(self._conn, file_id)
        if f is None or f.complete:
            return None
        running = self._hashes.get(file_id)
        if f.size == 0 or (running is not None and running.received == f.received == f.size):
            return None
        return bind(hash_file, self._partial_path(file_id), sync=True)

    def complete_file(self, file_id: str, digest: Digest | None = None) -> bool | ReadBackFailed:
        """Verify the stored bytes against the offered size and SHA-256; if they match, fsync
        the file, move it to ``downloads/<file_id>`` and mark it complete (True); otherwise
        delete the bytes and the row (False). True again for a file already complete.

        ``digest`` is the size and SHA-256 an ``upload_hasher`` function read (and fsynced)
        meanwhile; without it, the SHA-256 kept while the chunks were written is used when it
        covers the whole file, and otherwise the file is read back and hashed here.

        If the file cannot be looked at, as a hasher's failure is taken (and logged, with
        its id): ``ReadBackFailed.GONE`` if it is not there (the bytes and the row are
        deleted), ``ReadBackFailed.NOT_NOW`` for another ``OSError`` (EIO, EMFILE,
        EACCES...: the upload stays with all its bytes, and is read back to be checked
        the next time it is completed)."""
        self.release_upload(file_id)
        f = sqlite_files.get_file(self._conn, file_id)
        if f is None:
            return False
        if f.complete:
            return True
        partial = self._partial_path(file_id)
        final = self._final_path(file_id)
        running = self._hashes.pop(file_id, None)
        if running is None and f.size == 0:
            running = RunningHash()  # nothing to read: the SHA-256 of no bytes
        try:
            if digest is not None:  # read off the hub's thread; the bytes are all there
                matches = f.received == f.size and digest == (f.size, f.sha256)
                matches = matches and _holds(partial, f.size)
            elif running is not None and running.received == f.received == f.size:
                matches = running.digest.digest() == f.sha256 and sync_file(partial, f.size)
            else:  # no running hash (a restart, a resume after a crash): read the file
                matches = hash_file(partial, sync=True) == (f.size, f.sha256)
        except OSError as exc:
            failure = read_back_failed(exc, file_id, f"user {f.owner_key}")
            if failure is ReadBackFailed.GONE:
                self.delete_file(file_id)
            return failure
        if not matches:
            self.delete_file(file_id)
            return False
        if os.path.lexists(final):  # ids are unique; never replace anything
            raise FileExistsError(f"{final} already exists")
        os.replace(partial, final)
        fsync_dir(final.parent)
        if self._conn.in_transaction:
            self._completed_in_transaction.append((partial, final))
        self._conn.execute(
            "UPDATE files SET received = size, complete = 1 WHERE file_id = ?", (file_id,)
        )
        return True

    def delete_file(self, file_id: str) -> None:
        """Forget a file and delete its bytes (no-op for an unknown id)."""
        self._conn.execute("DELETE FROM files WHERE file_id = ?", (file_id,))
        self._hashes.pop(file_id, None)
        self.release_upload(file_id)
        if FILE_ID.fullmatch(file_id):
            # After the commit: a crash in between leaves at most an orphan file, never a row
            # pointing at nothing (stray partials are swept on the next open).
            paths = [self._partial_path(file_id), self._final_path(file_id)]
            if self._conn.in_transaction:  # committed later: delete then
                self._unlink_after_commit += paths
            else:
                for path in paths:
                    path.unlink(missing_ok=True)

    def read_chunk(self, file_id: str, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes of a complete file from ``offset`` (b"" at the end).

        ValueError for an unknown or incomplete file, or an offset outside 0..file size.
        """
        f = self._require_file(file_id)
        if not f.complete:
            raise ValueError("file is not complete")
        if not 0 <= offset <= f.size:
            raise ValueError(f"offset {offset} is outside the file's {f.size} bytes")
        if size < 0:
            raise ValueError("size cannot be negative")
        want = min(size, f.size - offset)
        parts: list[bytes] = []
        fd = os.open(self._final_path(file_id), os.O_RDONLY | O_NOFOLLOW)
        try:
            while want:  # a read may return less than asked (network file systems do)
                part = os.pread(fd, want, offset)
                if not part:
                    break  # the file is shorter than its row says: the caller sees it
                parts.append(part)
                offset += len(part)
                want -= len(part)
        finally:
            os.close(fd)
        return b"".join(parts)  # one part is returned as it is, not copied


def _holds(path: Path, size: int) -> bool:
    """Whether ``path`` is a regular file of ``size`` bytes (``FileNotFoundError`` if there
    is nothing there)."""
    info = os.lstat(path)
    return stat.S_ISREG(info.st_mode) and info.st_size == size
