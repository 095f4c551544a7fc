"""The hub's durable state in SQLite (standard library) plus uploaded files on disk.

Layout under the data directory (every directory 0700, every file 0600)::

    sealchat.db                the database (+ -wal and -shm while open)
    downloads/<file_id>        complete, verified uploads
    downloads/.partial/<id>    uploads in progress

File ids are chosen here (``secrets.token_hex(16)``); a name a client sent is only ever stored
as text in the database, never used in a path.

Durability: WAL journal with ``synchronous=NORMAL``. A transaction is committed once its frames
are written to the WAL file, which lives in the OS page cache: killing the process (even with
SIGKILL) right after a method returns loses nothing, because the kernel still writes those
pages out. Only an OS crash or power loss can lose the last few commits (never corrupt the
database); ``FULL`` would fsync the WAL on every commit to cover that too, at several
milliseconds per message on ordinary disks. Completed uploads are fsynced before they are
renamed into place, so a file marked complete is on disk.

Batching: every write commits on return, except inside ``with store.batch():``, where all the
writes of the block form one transaction committed when the block ends (the hub wraps each
call in one, so a burst of records costs one commit). Files are deleted from disk only after
the deletion of their row is committed.

Upload hashing: while an upload is written in order through one store, a SHA-256 of the bytes
received so far is kept in memory, so completing it needs no second read of the file (only its
fsync); after a restart, or when that hash no longer matches the committed count, the file is
read and hashed instead.

Uploads in progress: the partial file being written stays open between chunks, with the size
and count its row had when it was opened. Each chunk is checked against that count and the
UPDATE recording the new count matches only a row that still holds it (so a chunk is never
written on a count the database does not have); any rollback closes every open upload, and
the next chunk opens the file and reads its row again (cutting off bytes whose count was
never committed). ``release_upload`` closes one when its transfer ends.

Calls must come from one thread at a time (any thread): the single connection is opened with
``check_same_thread=False`` and is not locked.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import sqlite3
import stat
from collections import OrderedDict
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from sealchat.core.hub.store import StoredFile, StoredMessage, UserRow

if TYPE_CHECKING:
    from sealchat.core.hub.store import Store
from sealchat.transports import sqlite_accounts, sqlite_messages, sqlite_rooms, sqlite_schema
from sealchat.transports.keyfile import ensure_private_dir, fsync_dir
from sealchat.transports.sqlite_schema import MIGRATIONS, SchemaVersionError, one_target
from sealchat.transports.writeback import WriteBehind

__all__ = ["DB_FILE", "DOWNLOADS_DIR", "MIGRATIONS", "SchemaVersionError", "SqliteStore"]

DB_FILE: Final = "sealchat.db"
DOWNLOADS_DIR: Final = "downloads"
PARTIAL_DIR: Final = ".partial"
FILE_MODE: Final = 0o600

_HASH_BLOCK = 1 << 20
_MAX_HASHERS = 4096
"""Partial uploads with a running SHA-256 in memory (about 200 bytes each); beyond this the
least recently written one is forgotten and hashed from disk when it completes."""
_MAX_OPEN_UPLOADS = 64
"""Partial uploads kept open between chunks (a file descriptor each); beyond this the least
recently written one is closed, and opened and checked again at its next chunk."""
_FILE_ID = re.compile(r"[0-9a-f]{32}")
_O_NOFOLLOW: int = getattr(os, "O_NOFOLLOW", 0)

# Queries name their columns in the order of _file()'s fields below.


def _file(row: Any) -> StoredFile:
    file_id, owner_key, name, size, sha256, room, to_key, received, complete, ts = row
    return StoredFile(
        file_id=file_id,
        owner_key=owner_key,
        name=name,
        size=size,
        sha256=bytes(sha256),
        room=room,
        to_key=to_key,
        received=received,
        complete=bool(complete),
        ts=ts,
    )


class _RunningHash:
    """The SHA-256 of the first ``received`` bytes of a partial upload."""

    __slots__ = ("digest", "received")

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.received = 0


class _OpenUpload:
    """A partial upload open for appending: its offered ``size`` and the ``received`` count
    committed (or about to be, in the current transaction) for it."""

    __slots__ = ("behind", "fd", "received", "size")

    def __init__(self, fd: int, received: int, size: int) -> None:
        self.fd = fd
        self.received = received
        self.size = size
        self.behind = WriteBehind(received)


class SqliteStore:
    """:class:`sealchat.core.hub.store.Store` on SQLite; every write is committed on return
    (at the end of the block inside :meth:`batch`).

    The store owns the connection and its transactions; the queries live in modules by
    subject (``sqlite_accounts``, ``sqlite_rooms``, ``sqlite_messages``), and a method
    without a docstring runs the function of the same name there on this connection."""

    def __init__(self, data_dir: Path | None, *, database: str | None = None) -> None:
        """Open (creating if needed) the store in ``data_dir``.

        ``database=":memory:"`` keeps the database in memory (tests); files still go under
        ``data_dir``. Without a ``data_dir`` the file methods raise ``RuntimeError``.
        """
        if data_dir is None and database is None:
            raise ValueError("give a data directory, or database=':memory:'")
        self._downloads: Path | None = None
        self._partials: Path | None = None
        if data_dir is not None:
            ensure_private_dir(data_dir)
            self._downloads = data_dir / DOWNLOADS_DIR
            self._partials = self._downloads / PARTIAL_DIR
            ensure_private_dir(self._partials)
        in_memory = database == ":memory:"
        if database is None:
            assert data_dir is not None
            database = str(data_dir / DB_FILE)
        if not in_memory:
            # Create the file ourselves so that it (and the -wal/-shm files SQLite gives the
            # same mode) is 0600.
            os.close(os.open(database, os.O_RDWR | os.O_CREAT | _O_NOFOLLOW, FILE_MODE))
        self._path = database
        self._hashes: OrderedDict[str, _RunningHash] = OrderedDict()
        self._open_uploads: OrderedDict[str, _OpenUpload] = OrderedDict()
        self._unlink_after_commit: list[Path] = []
        self._data_version: int | None = None
        """SQLite's ``data_version`` when ``password_generations`` last looked; None: look
        at the next call (this connection changed an account: that moves no version)."""
        self._conn = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
        try:
            sqlite_schema.configure(self._conn, database)
            sqlite_schema.migrate(self._conn, database)
            if not in_memory:
                self._recover_uploads()
        except BaseException:
            self._conn.close()
            raise

    def __repr__(self) -> str:
        return f"SqliteStore(database={self._path!r})"

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the database and every open upload (idempotent)."""
        self._release_all_uploads()
        self._conn.close()

    # -- setup -----------------------------------------------------------------------------

    def _recover_uploads(self) -> None:
        """Make partial uploads agree with the database after a crash.

        Bytes written after the last committed count are cut off (or the count lowered if the
        OS lost some), a file renamed into place whose completion was not recorded is checked
        and recorded, rows without bytes are dropped, and stray partial files are removed.
        """
        if self._partials is None:
            return
        rows = self._conn.execute(
            "SELECT file_id, size, sha256, received FROM files WHERE complete = 0"
        ).fetchall()
        live: set[str] = set()
        for file_id, size, sha256, received in rows:
            if not _FILE_ID.fullmatch(file_id):
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
            elif final.is_file() and _hash_file(final) == (size, bytes(sha256)):
                self._conn.execute(
                    "UPDATE files SET received = size, complete = 1 WHERE file_id = ?",
                    (file_id,),
                )
            else:
                self._conn.execute("DELETE FROM files WHERE file_id = ?", (file_id,))
                final.unlink(missing_ok=True)
        for entry in os.scandir(self._partials):
            if entry.name not in live and entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)

    # -- transactions ----------------------------------------------------------------------

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Group every write made inside the block into one transaction, committed when the
        block ends, whether it ends normally or by an exception: what was written before the
        exception stays written (the caller's state in memory has moved on with it). A batch
        inside a batch joins the outer one."""
        conn = self._conn
        if conn.in_transaction:
            yield
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            self._commit()

    def _commit(self) -> None:
        """Commit the open transaction, then delete the files whose rows it removed. If SQLite
        has already rolled it back by itself (after an I/O error, a full disk...), nothing was
        committed: it is handled as the rollback it was (no file is deleted) and raised, so
        that nothing of it is acknowledged."""
        conn = self._conn
        if not conn.in_transaction:
            self._rollback()
            raise sqlite3.OperationalError("SQLite rolled the transaction back; nothing was stored")
        try:
            conn.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        paths, self._unlink_after_commit = self._unlink_after_commit, []
        for path in paths:
            path.unlink(missing_ok=True)

    def _rollback(self) -> None:
        self._unlink_after_commit.clear()
        self._release_all_uploads()
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    # -- users (queries in sqlite_accounts) ------------------------------------------------

    def get_user(self, key: str) -> UserRow | None:
        return sqlite_accounts.get_user(self._conn, key)

    def add_user(self, name: str, key: str, password_hash: str) -> bool:
        return sqlite_accounts.add_user(self._conn, name, key, password_hash)

    def is_retired(self, key: str) -> bool:
        return sqlite_accounts.is_retired(self._conn, key)

    def set_password(self, key: str, password_hash: str) -> bool:
        changed = sqlite_accounts.set_password(self._conn, key, password_hash)
        self._data_version = None  # the next password_generations looks
        return changed

    def remove_user(self, key: str, *, keep_room: str = "") -> bool:
        """Delete a user with their memberships and cursor, and the rooms other than
        ``keep_room`` (the default room) that this leaves as a leave would: empty, with nothing
        posted or shared in them. Their messages and files stay, so ``key`` is retired: no
        account can take it again; their unfinished uploads go, as nobody can finish them.
        False (and nothing retired) if there is no such user."""
        with self.batch():
            rooms = self.rooms_of(key)
            if not sqlite_accounts.delete_user(self._conn, key):
                return False
            self._data_version = None  # the next password_generations looks
            for unfinished in self.unfinished_uploads(key):  # nobody can ever finish them
                self.delete_file(unfinished.file_id)
            sqlite_accounts.retire(self._conn, key)
            for room in rooms:
                if room != keep_room:
                    self.drop_room_if_unused(room)
        return True

    def list_users(self) -> list[str]:
        return sqlite_accounts.list_users(self._conn)

    def password_generations(self, keys: Collection[str]) -> dict[str, int] | None:
        """The password generation of each of ``keys`` that still has an account (a removed
        one is left out), or None at once if no account can have changed since the last
        call: SQLite's ``data_version`` says that no other connection (such as ``sealchat
        user passwd``) has committed since, and this one has changed no password and removed
        no account."""
        (version,) = self._conn.execute("PRAGMA data_version").fetchone()
        if version == self._data_version:
            return None
        self._data_version = version
        return sqlite_accounts.password_generations(self._conn, keys)

    # -- rooms (queries in sqlite_rooms) ---------------------------------------------------

    def ensure_room(self, room: str) -> None:
        sqlite_rooms.ensure_room(self._conn, room)

    def room_exists(self, room: str) -> bool:
        return sqlite_rooms.room_exists(self._conn, room)

    def drop_room_if_unused(self, room: str) -> bool:
        return sqlite_rooms.drop_room_if_unused(self._conn, room)

    def rooms(self) -> list[tuple[str, int]]:
        return sqlite_rooms.rooms(self._conn)

    def rooms_of(self, key: str) -> list[str]:
        return sqlite_rooms.rooms_of(self._conn, key)

    def members(self, room: str) -> list[str]:
        return sqlite_rooms.members(self._conn, room)

    def add_member(self, room: str, key: str) -> bool:
        return sqlite_rooms.add_member(self._conn, room, key)

    def remove_member(self, room: str, key: str) -> bool:
        return sqlite_rooms.remove_member(self._conn, room, key)

    # -- messages (queries in sqlite_messages) ---------------------------------------------

    def last_message_id(self) -> int:
        return sqlite_messages.last_message_id(self._conn)

    def append_message(
        self,
        *,
        ts: float,
        sender_key: str,
        sender: str,
        room: str,
        to_key: str,
        to: str,
        text: str,
        client_id: str,
        file_id: str = "",
    ) -> StoredMessage:
        return sqlite_messages.append_message(
            self._conn,
            ts=ts,
            sender_key=sender_key,
            sender=sender,
            room=room,
            to_key=to_key,
            to=to,
            text=text,
            client_id=client_id,
            file_id=file_id,
        )

    def find_by_client_id(self, sender_key: str, client_id: str) -> StoredMessage | None:
        return sqlite_messages.find_by_client_id(self._conn, sender_key, client_id)

    def room_history(self, room: str, before: int, limit: int) -> list[StoredMessage]:
        return sqlite_messages.room_history(self._conn, room, before, limit)

    def direct_history(
        self, a_key: str, b_key: str, before: int, limit: int
    ) -> list[StoredMessage]:
        return sqlite_messages.direct_history(self._conn, a_key, b_key, before, limit)

    def missed(self, key: str, after: int, limit: int) -> list[StoredMessage]:
        return sqlite_messages.missed(self._conn, key, after, limit)

    def get_cursor(self, key: str) -> int:
        return sqlite_messages.get_cursor(self._conn, key)

    def set_cursor(self, key: str, message_id: int) -> None:
        sqlite_messages.set_cursor(self._conn, key, message_id)

    # -- files -----------------------------------------------------------------------------

    def _dirs(self) -> tuple[Path, Path]:
        if self._downloads is None or self._partials is None:
            raise RuntimeError("this store has no data directory for files")
        return self._downloads, self._partials

    def _final_path(self, file_id: str) -> Path:
        if not _FILE_ID.fullmatch(file_id):
            raise ValueError("malformed file id")
        return self._dirs()[0] / file_id

    def _partial_path(self, file_id: str) -> Path:
        if not _FILE_ID.fullmatch(file_id):
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
        os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW, FILE_MODE))
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

    def find_partial_upload(
        self, owner_key: str, sha256: bytes, size: int, room: str, to_key: str
    ) -> StoredFile | None:
        """An incomplete upload by ``owner_key`` of the same content to the same target (the
        one with most bytes received), to resume."""
        row = self._conn.execute(
            "SELECT file_id, owner_key, name, size, sha256, room, to_key, received, complete, ts "
            "FROM files "
            "WHERE owner_key = ? AND complete = 0 AND sha256 = ? "
            "AND size = ? AND room = ? AND to_key = ? ORDER BY received DESC, ts DESC LIMIT 1",
            (owner_key, bytes(sha256), size, room, to_key),
        ).fetchone()
        return None if row is None else _file(row)

    def unfinished_uploads(self, owner_key: str) -> list[StoredFile]:
        """The user's incomplete uploads, the longest idle first."""
        rows = self._conn.execute(
            "SELECT file_id, owner_key, name, size, sha256, room, to_key, received, complete, ts "
            "FROM files WHERE owner_key = ? AND complete = 0 ORDER BY ts, file_id",
            (owner_key,),
        )
        return sorted((_file(row) for row in rows), key=self._last_written)

    def _last_written(self, file: StoredFile) -> float:
        """When an upload was last written to (its offer's time if it never was)."""
        try:
            return max(file.ts, self._partial_path(file.file_id).stat().st_mtime)
        except (OSError, RuntimeError):  # no partial file yet, or no data folder
            return file.ts

    def get_file(self, file_id: str) -> StoredFile | None:
        """A file's metadata, or None."""
        row = self._conn.execute(
            "SELECT file_id, owner_key, name, size, sha256, room, to_key, received, complete, ts "
            "FROM files "
            "WHERE file_id = ?",
            (file_id,),
        ).fetchone()
        return None if row is None else _file(row)

    def _require_file(self, file_id: str) -> StoredFile:
        f = self.get_file(file_id)
        if f is None:
            raise ValueError("no such file")
        return f

    def write_chunk(self, file_id: str, offset: int, data: bytes) -> int:
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
            running = _RunningHash()
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
        fd = os.open(self._partial_path(file_id), os.O_WRONLY | os.O_APPEND | _O_NOFOLLOW)
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

    def _release_all_uploads(self) -> None:
        while self._open_uploads:
            os.close(self._open_uploads.popitem()[1].fd)

    def complete_file(self, file_id: str) -> bool:
        """Verify the stored bytes against the offered size and SHA-256; if they match, fsync
        the file, move it to ``downloads/<file_id>`` and mark it complete (True); otherwise
        delete the bytes and the row (False). True again for a file already complete.

        The SHA-256 kept while the chunks were written is used when it covers the whole file;
        otherwise the file is read back and hashed."""
        self.release_upload(file_id)
        f = self.get_file(file_id)
        if f is None:
            return False
        if f.complete:
            return True
        partial = self._partial_path(file_id)
        final = self._final_path(file_id)
        running = self._hashes.pop(file_id, None)
        try:
            if running is not None and running.received == f.received == f.size:
                matches = running.digest.digest() == f.sha256 and _sync_file(partial, f.size)
            else:  # no running hash (a restart, a resume after a crash): read the file
                matches = _hash_file(partial, sync=True) == (f.size, f.sha256)
        except FileNotFoundError:
            matches = False
        if not matches:
            self.delete_file(file_id)
            return False
        if os.path.lexists(final):  # ids are unique; never replace anything
            raise FileExistsError(f"{final} already exists")
        os.replace(partial, final)
        fsync_dir(final.parent)
        self._conn.execute(
            "UPDATE files SET received = size, complete = 1 WHERE file_id = ?", (file_id,)
        )
        return True

    def delete_file(self, file_id: str) -> None:
        """Forget a file and delete its bytes (no-op for an unknown id)."""
        self._conn.execute("DELETE FROM files WHERE file_id = ?", (file_id,))
        self._hashes.pop(file_id, None)
        self.release_upload(file_id)
        if _FILE_ID.fullmatch(file_id):
            # After the commit: a crash in between leaves at most an orphan file, never a row
            # pointing at nothing (stray partials are swept on the next open).
            paths = [self._partial_path(file_id), self._final_path(file_id)]
            if self._conn.in_transaction:  # committed later: delete then
                self._unlink_after_commit += paths
            else:
                for path in paths:
                    path.unlink(missing_ok=True)

    def usage(self, owner_key: str) -> int:
        """Bytes the user's files take, counting partial uploads at their full offered size."""
        row = self._conn.execute(
            "SELECT COALESCE(SUM(size), 0) FROM files WHERE owner_key = ?", (owner_key,)
        ).fetchone()
        return int(row[0])

    def files_for_room(self, room: str) -> list[StoredFile]:
        """Complete files shared in ``room``, oldest first."""
        rows = self._conn.execute(
            "SELECT file_id, owner_key, name, size, sha256, room, to_key, received, complete, ts "
            "FROM files "
            "WHERE room = ? AND room <> '' AND complete = 1 "
            "ORDER BY ts, file_id",
            (room,),
        )
        return [_file(r) for r in rows]

    def files_between(self, a_key: str, b_key: str) -> list[StoredFile]:
        """Complete files sent directly between the two users (either way), oldest first."""
        rows = self._conn.execute(
            "SELECT file_id, owner_key, name, size, sha256, room, to_key, received, complete, ts "
            "FROM files "
            "WHERE to_key <> '' AND complete = 1 AND "
            "((owner_key = ? AND to_key = ?) OR (owner_key = ? AND to_key = ?)) "
            "ORDER BY ts, file_id",
            (a_key, b_key, b_key, a_key),
        )
        return [_file(r) for r in rows]

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
        fd = os.open(self._final_path(file_id), os.O_RDONLY | _O_NOFOLLOW)
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


def _sync_file(path: Path, size: int) -> bool:
    """fsync a regular file; False if it does not hold exactly ``size`` bytes."""
    fd = os.open(path, os.O_RDONLY | _O_NOFOLLOW)
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


def _hash_file(path: Path, *, sync: bool = False) -> tuple[int, bytes]:
    """(size, SHA-256) of a file read in 1 MiB blocks; fsync it too if ``sync``."""
    digest = hashlib.sha256()
    buf = bytearray(_HASH_BLOCK)
    view = memoryview(buf)
    total = 0
    fd = os.open(path, os.O_RDONLY | _O_NOFOLLOW)
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


if TYPE_CHECKING:

    def _conforms(store: SqliteStore) -> Store:  # mypy checks SqliteStore against the Protocol
        return store
