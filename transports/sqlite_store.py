"""The hub's durable state in SQLite (standard library) plus uploaded files on disk.

Layout under the data directory (every directory 0700, every file 0600)::

    sealchat.db                the database (+ -wal and -shm while open)
    downloads/<file_id>        complete, verified uploads
    downloads/.partial/<id>    uploads in progress

On POSIX the data directory and the database must belong to the user running the store and
give nobody else write access (``UnsafeDataDir`` otherwise, saying how to fix it): another
user who could swap them would read or change all that is stored.

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

Uploaded files (ids, running hashes, uploads kept open between chunks): see
``sqlite_uploads``.

Calls must come from one thread at a time (any thread): the single connection is opened with
``check_same_thread=False`` and is not locked.
"""

from __future__ import annotations

import os
import shlex
import sqlite3
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from stat import S_IMODE, S_ISREG
from typing import TYPE_CHECKING, Final

from sealchat.core.hub.store import (
    DISK_FULL_ERRNOS,
    Digest,
    ReadBackFailed,
    StoredFile,
    StoredMessage,
    UserRow,
)

if TYPE_CHECKING:
    from sealchat.core.hub.store import Store
from sealchat.transports import (
    sqlite_accounts,
    sqlite_files,
    sqlite_messages,
    sqlite_read_markers,
    sqlite_rooms,
    sqlite_schema,
)
from sealchat.transports.folder_lock import FolderInUse, FolderLock
from sealchat.transports.hub_failures import DiskFullLog
from sealchat.transports.keyfile import ensure_private_dir
from sealchat.transports.sqlite_schema import MIGRATIONS, SchemaVersionError
from sealchat.transports.sqlite_uploads import FILE_MODE, Uploads
from sealchat.transports.upload_checks import O_NOFOLLOW

__all__ = [
    "DB_FILE",
    "DOWNLOADS_DIR",
    "MIGRATIONS",
    "SchemaVersionError",
    "SqliteStore",
    "UnsafeDataDir",
    "check_data_dir",
]

DB_FILE: Final = "sealchat.db"
DOWNLOADS_DIR: Final = "downloads"
PARTIAL_DIR: Final = ".partial"


class DatabaseUnreadable(Exception):
    """The database file is damaged, or is not a database; the message says what to do."""


class UnsafeDataDir(PermissionError):
    """The data folder or its database belongs to another user, or others may change it;
    the message says how to fix it."""


def check_data_dir(data_dir: Path) -> None:
    """UnsafeDataDir unless ``data_dir`` is a folder of this user that no one else may
    change (on POSIX; elsewhere nothing is checked)."""
    _check_ours(data_dir, os.stat(data_dir), "the data folder", _command("chmod 700", data_dir))


def _command(command: str, path: Path) -> str:
    return f"{command} {shlex.quote(str(path))}"


def _check_ours(path: Path, status: os.stat_result, what: str, chmod: str) -> None:
    """UnsafeDataDir unless ``status`` (of ``path``, ``what`` it is) belongs to this user
    and gives nobody else write access (``chmod`` is the command that fixes the mode)."""
    if os.name != "posix":
        return
    quoted = shlex.quote(str(path))
    if status.st_uid != os.geteuid():
        raise UnsafeDataDir(
            f"{what} {path} belongs to another user (uid {status.st_uid}), who may have put "
            f"it there to read or change what the server stores; check what it holds, then "
            f"move it aside (sealchat makes a new one) or have it given to this user "
            f"(chown -R $USER {quoted}, as root), or use another --data-dir"
        )
    if status.st_mode & 0o022:
        raise UnsafeDataDir(
            f"{what} {path} has mode {status.st_mode & 0o777:04o}: other users can change "
            f"it, and so what the server stores; make it this user's alone with: {chmod}"
        )


def _private(path: str) -> None:
    """Take away group's and others' access to ``path`` (the database, or its -wal or -shm
    file) if it is a file of ours that gives them some: one copied in or made by another
    tool under a umask of 022 (cp from a backup, the sqlite3 shell) is 0644, and it holds
    the password hashes and every message. The folder is not writable by others
    (``check_data_dir``): nobody can swap the file between the look and the chmod."""
    if os.name != "posix":
        return
    try:
        status = os.lstat(path)
    except FileNotFoundError:
        return
    if S_ISREG(status.st_mode) and status.st_uid == os.geteuid() and status.st_mode & 0o077:
        os.chmod(path, S_IMODE(status.st_mode) & 0o700)


def _private_database(database: str) -> None:
    """Create the database file ourselves so that it (and the -wal/-shm files SQLite gives
    the same mode) is 0600; one found there must be ours alone, and is made private."""
    fd = os.open(database, os.O_RDWR | os.O_CREAT | O_NOFOLLOW, FILE_MODE)
    try:
        path = Path(database)
        _check_ours(path, os.fstat(fd), "the database", _command("chmod 600", path))
    finally:
        os.close(fd)
    for name in (database, f"{database}-wal", f"{database}-shm"):
        _private(name)


def _make_private(data_dir: Path, folders: Collection[Path]) -> None:
    """Make the data folder and what it holds this user's alone, as a server found them
    (copied in from a backup, made with a plain mkdir under a umask of 022): group's and
    others' access is taken away from ``data_dir`` and the ``folders`` of stored files (links
    to folders followed), and from the files in a folder others could reach. UnsafeDataDir
    for any of these that belongs to another user or that others may change: what it holds
    could have been read or changed (``data_dir`` is checked by ``check_data_dir`` first)."""
    if os.name != "posix":
        return
    fix = _command("chmod -R go-rwx", data_dir)
    reachable = False  # by others: through every folder on the way
    for folder in [data_dir, *folders]:
        status = os.stat(folder)
        _check_ours(folder, status, "the folder", fix)
        mode = S_IMODE(status.st_mode)
        reachable = (reachable or folder == data_dir) and bool(mode & 0o011)
        if mode & 0o077:
            os.chmod(folder, mode & 0o700)
        if reachable:
            _make_files_private(folder, fix)


def _make_files_private(folder: Path, fix: str) -> None:
    """Take group's and others' access away from the files in ``folder``; UnsafeDataDir for
    one of another user's, or that others may change."""
    with os.scandir(folder) as entries:
        for entry in entries:
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                status = entry.stat(follow_symlinks=False)
                _check_ours(Path(entry.path), status, "the stored file", fix)
                if S_IMODE(status.st_mode) & 0o077:
                    os.chmod(entry.path, S_IMODE(status.st_mode) & 0o600)
            except FileNotFoundError:  # an upload completed or discarded meanwhile
                continue


class SqliteStore:
    """:class:`sealchat.core.hub.store.Store` on SQLite; every write is committed on return
    (at the end of the block inside :meth:`batch`).

    The store owns the connection and its transactions. The queries live in modules by
    subject (``sqlite_accounts``, ``sqlite_rooms``, ``sqlite_messages``, ``sqlite_files``) and
    the files on disk in ``sqlite_uploads.Uploads``: a method without a docstring hands its
    call to the one of the same name there."""

    def __init__(
        self, data_dir: Path | None, *, database: str | None = None, beside_server: bool = False
    ) -> None:
        """Open (creating if needed) the store in ``data_dir``.

        A store serves the folder alone: it holds the folder's lock while open (FolderInUse
        if another does) and repairs partial uploads a crash left. ``beside_server=True``
        opens it beside a server that may be running (the account commands): without the lock
        or the repair, which would cut that server's uploads in progress.

        ``database=":memory:"`` keeps the database in memory (tests); files still go under
        ``data_dir``. Without a ``data_dir`` the file methods raise ``RuntimeError``.
        """
        if data_dir is None and database is None:
            raise ValueError("give a data directory, or database=':memory:'")
        downloads: Path | None = None
        partials: Path | None = None
        if data_dir is not None:
            ensure_private_dir(data_dir)
            check_data_dir(data_dir)
            downloads = data_dir / DOWNLOADS_DIR
            partials = downloads / PARTIAL_DIR
            ensure_private_dir(partials)
            if not beside_server:  # the server's: a command beside it changes nothing there
                _make_private(data_dir, (downloads, partials))
        self._lock = None if data_dir is None or beside_server else FolderLock(data_dir)
        in_memory = database == ":memory:"
        if database is None:
            assert data_dir is not None
            database = str(data_dir / DB_FILE)
        try:
            if not in_memory:
                _private_database(database)
        except BaseException:
            self._release_folder()
            raise
        self._path = database
        self._data_version: int | None = None
        """SQLite's ``data_version`` when ``password_generations`` last looked; None: look
        at the next call (this connection changed an account: that moves no version)."""
        self._conn = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
        self._uploads = Uploads(self._conn, downloads, partials)
        self._disk_full = None if data_dir is None else DiskFullLog(data_dir)
        """Logs the chunks of uploads a full disk loses (no data directory: no uploads)."""
        try:
            try:
                sqlite_schema.configure(self._conn, database)
                self._migrate(database, data_dir if beside_server else None)
            except sqlite3.DatabaseError as exc:
                if isinstance(exc, sqlite3.OperationalError):  # locked, I/O: not the file's
                    raise
                raise DatabaseUnreadable(
                    f"the database {database} cannot be read ({exc}): restore it from a "
                    "backup, or move it aside to start with an empty one"
                ) from None
            if not in_memory and self._lock is not None:
                self._uploads.recover()
        except BaseException:
            self._conn.close()
            self._release_folder()
            raise

    def _migrate(self, database: str, beside: Path | None) -> None:
        """Bring the database to this sealchat's schema. Beside a server (a command run in
        ``beside``, its data folder), only if none is running: one would be an older sealchat,
        reading a database upgraded under it (FolderInUse, saying to restart it first)."""
        if beside is None or not sqlite_schema.behind(self._conn, database):
            sqlite_schema.migrate(self._conn, database)
            return
        try:
            lock = FolderLock(beside)
        except FolderInUse:
            raise FolderInUse(
                f"a sealchat server (or another command upgrading it) is using {beside}, "
                "and the database is not yet of this sealchat's schema: if that server is of "
                "an older sealchat, restart it with this version first (it upgrades the "
                "database as it starts); then run this command again"
            ) from None
        try:
            sqlite_schema.migrate(self._conn, database)
        finally:
            lock.release()

    def _release_folder(self) -> None:
        if self._lock is not None:
            self._lock.release()

    def __repr__(self) -> str:
        return f"SqliteStore(database={self._path!r})"

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the database and every open upload, and let the folder go (idempotent)."""
        self._uploads.release_all()
        self._conn.close()
        self._release_folder()

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
        self._uploads.committed()

    def _rollback(self) -> None:
        self._uploads.rolled_back()
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    # -- users (queries in sqlite_accounts) ------------------------------------------------

    def get_user(self, key: str) -> UserRow | None:
        return sqlite_accounts.get_user(self._conn, key)

    def add_user(self, name: str, key: str, password_hash: str) -> bool:
        return sqlite_accounts.add_user(self._conn, name, key, password_hash)

    def is_retired(self, key: str) -> bool:
        return sqlite_accounts.is_retired(self._conn, key)

    def looks_taken(self, key: str) -> bool:
        return sqlite_accounts.looks_taken(self._conn, key)

    def set_password(self, key: str, password_hash: str) -> bool:
        changed = sqlite_accounts.set_password(self._conn, key, password_hash)
        self._data_version = None  # the next password_generations looks
        return changed

    def remove_user(self, key: str, *, keep_room: str = "") -> bool:
        """Delete a user with their memberships, cursor and read markers (and the others'
        markers of their direct conversations with it), and the rooms other than
        ``keep_room`` (the default room) that this leaves as a leave would: empty, with nothing
        posted or shared in them. Their messages and files stay, so ``key`` is retired: no
        account can take it again; their unfinished uploads go, as nobody can finish them.
        False (and nothing retired) if there is no such user."""
        with self.batch():
            rooms = self.rooms_of(key)
            if not sqlite_accounts.delete_user(self._conn, key):
                return False
            self._data_version = None  # the next password_generations looks
            sqlite_read_markers.forget_peer_markers(self._conn, key)  # its own go by cascade
            for unfinished in sqlite_files.unfinished_uploads(self._conn, key):
                self.delete_file(unfinished.file_id)
            sqlite_accounts.retire(self._conn, key)
            for room in rooms:
                if room != keep_room:
                    self.drop_room_if_unused(room)
        return True

    def list_users(self) -> list[str]:
        return sqlite_accounts.list_users(self._conn)

    def look_alike_users(self) -> list[list[str]]:
        """Users whose names look alike, in groups (see ``sqlite_accounts``)."""
        return sqlite_accounts.look_alike_users(self._conn)

    def password_generations(self, keys: Collection[str]) -> dict[str, int] | None:
        """The password generation of each of ``keys`` that still has an account (a removed
        one is left out), or None at once if no account can have changed since the last
        call: SQLite's ``data_version`` says that no other connection (such as ``sealchat
        user passwd``) has committed since, and this one has changed no password and removed
        no account."""
        (version,) = self._conn.execute("PRAGMA data_version").fetchone()
        if version == self._data_version:
            return None
        generations = sqlite_accounts.password_generations(self._conn, keys)
        self._data_version = version  # only now: after a failed lookup, the next call looks
        return generations

    # -- rooms (queries in sqlite_rooms) ---------------------------------------------------

    def ensure_room(self, room: str) -> None:
        sqlite_rooms.ensure_room(self._conn, room)

    def room_exists(self, room: str) -> bool:
        return sqlite_rooms.room_exists(self._conn, room)

    def drop_room_if_unused(self, room: str) -> bool:
        return sqlite_rooms.drop_room_if_unused(self._conn, room)

    def rooms(self) -> list[tuple[str, int]]:
        return sqlite_rooms.rooms(self._conn)

    def room_count(self) -> int:
        return sqlite_rooms.room_count(self._conn)

    def rooms_of(self, key: str) -> list[str]:
        return sqlite_rooms.rooms_of(self._conn, key)

    def members(self, room: str) -> list[str]:
        return sqlite_rooms.members(self._conn, room)

    def add_member(self, room: str, key: str) -> bool:
        return sqlite_rooms.add_member(self._conn, room, key)

    def remove_member(self, room: str, key: str) -> bool:
        with self.batch():
            sqlite_read_markers.forget_room_marker(self._conn, room, key)
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

    def direct_peers(self, key: str, limit: int) -> list[str]:
        return sqlite_messages.direct_peers(self._conn, key, limit)

    def missed(self, key: str, after: int, limit: int) -> list[StoredMessage]:
        return sqlite_messages.missed(self._conn, key, after, limit)

    def get_cursor(self, key: str, device: str = "") -> int:
        return sqlite_messages.get_cursor(self._conn, key, device)

    def set_cursor(self, key: str, message_id: int, device: str = "") -> None:
        sqlite_messages.set_cursor(self._conn, key, message_id, device)

    # -- read markers (queries in sqlite_read_markers) -------------------------------------

    def raise_read_marker(self, key: str, room: str, peer_key: str, up_to: int) -> bool:
        return sqlite_read_markers.raise_read_marker(self._conn, key, room, peer_key, up_to)

    def read_markers(self, key: str, limit: int) -> list[tuple[str, str, int]]:
        return sqlite_read_markers.read_markers(self._conn, key, limit)

    # -- files (rows in sqlite_files, bytes on disk in sqlite_uploads) ---------------------

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
        return self._uploads.create_file(
            owner_key=owner_key,
            name=name,
            size=size,
            sha256=sha256,
            room=room,
            to_key=to_key,
            ts=ts,
        )

    def find_partial_upload(
        self, owner_key: str, sha256: bytes, size: int, room: str, to_key: str
    ) -> StoredFile | None:
        return sqlite_files.find_partial_upload(
            self._conn, owner_key, sha256=sha256, size=size, room=room, to_key=to_key
        )

    def unfinished_uploads(self, owner_key: str) -> list[StoredFile]:
        return self._uploads.unfinished_uploads(owner_key)

    def get_file(self, file_id: str) -> StoredFile | None:
        return sqlite_files.get_file(self._conn, file_id)

    def write_chunk(self, file_id: str, offset: int, data: bytes | memoryview) -> int:
        """``Uploads.write_chunk``; a chunk the disk has no room for is logged too, in a line
        at most once a minute (``DiskFullLog``): the hub only refuses it to its client."""
        try:
            return self._uploads.write_chunk(file_id, offset, data)
        except OSError as exc:
            if exc.errno in DISK_FULL_ERRNOS and self._disk_full is not None:
                self._disk_full.chunk_lost()
            raise

    def release_upload(self, file_id: str) -> None:
        self._uploads.release_upload(file_id)

    def upload_hasher(self, file_id: str) -> Callable[[], Digest] | None:
        return self._uploads.upload_hasher(file_id)

    def complete_file(self, file_id: str, digest: Digest | None = None) -> bool | ReadBackFailed:
        return self._uploads.complete_file(file_id, digest)

    def delete_file(self, file_id: str) -> None:
        self._uploads.delete_file(file_id)

    def free_space(self) -> int | None:
        return self._uploads.free_space()

    def usage(self, owner_key: str) -> int:
        return sqlite_files.usage(self._conn, owner_key)

    def files_for_room(self, room: str, after: int, limit: int) -> list[tuple[int, StoredFile]]:
        return sqlite_files.files_for_room(self._conn, room, after, limit)

    def files_between(
        self, a_key: str, b_key: str, after: int, limit: int
    ) -> list[tuple[int, StoredFile]]:
        return sqlite_files.files_between(self._conn, a_key, b_key, after, limit)

    def read_chunk(self, file_id: str, offset: int, size: int) -> bytes:
        return self._uploads.read_chunk(file_id, offset, size)


if TYPE_CHECKING:

    def _conforms(store: SqliteStore) -> Store:  # mypy checks SqliteStore against the Protocol
        return store
