"""What the hub needs from storage: a narrow, synchronous interface.

The hub never opens a database or a file itself; its driver gives it an object with these
methods (``sealchat.transports.sqlite_store.SqliteStore`` in production, the same class over
``:memory:`` and a temporary folder in tests). Calls are made from one thread at a time.

Every write is durable when the method returns, except inside ``with store.batch():``, where
the writes are durable when the block ends. The hub wraps each call it gets in a batch and
returns its effects only after the block: what it acknowledges is stored.

Names passed in are already case-folded where the parameter is called ``key``; ``name`` is the
display spelling.
"""

from __future__ import annotations

import enum
import errno
from collections.abc import Callable, Collection
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Final, Protocol, TypeAlias

Digest: TypeAlias = tuple[int, bytes]
"""The size and SHA-256 of a file's bytes as read from disk."""

DISK_FULL_ERRNOS: Final = frozenset({errno.ENOSPC, errno.EDQUOT})
"""The ``errno`` of an OSError a write raises for want of room: the disk is full (ENOSPC), or
the quota of the server's user on it is used up (EDQUOT). Space must be freed before such a
write can succeed."""


class ReadBackFailed(enum.Enum):
    """Why a completed upload's file could not be checked: why a VerifyUpload read no
    ``Digest`` back, or why ``Store.complete_file`` could not look at the file."""

    GONE = "gone"
    """The file is not there (``FileNotFoundError``): the upload is lost, to be sent again
    from the start."""
    NOT_NOW = "not now"
    """It could not be read for a reason that may pass (an I/O error, too many open files, a
    permission changed): what was received is kept, to be checked again when the uploader
    completes it again."""

    @classmethod
    def of(cls, exc: OSError) -> ReadBackFailed:
        """What the ``OSError`` a hasher (or the store's own check) raised means for its
        upload."""
        return cls.GONE if isinstance(exc, FileNotFoundError) else cls.NOT_NOW


class DuplicateMessage(ValueError):
    """``append_message`` was given a ``client_id`` its sender already used: the message is
    stored already (``find_by_client_id`` returns it)."""


@dataclass(frozen=True, slots=True)
class UserRow:
    """A registered user: display name, case-folded key, Argon2id PHC hash and password
    generation (counted up by each password change)."""

    name: str
    key: str
    password_hash: str
    password_generation: int = 0

    def __repr__(self) -> str:
        return f"UserRow(name={self.name!r})"


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message as stored: ``room`` set for a room message, ``to`` (display name) for a direct
    one; ``file_id`` for a file announcement."""

    id: int
    ts: float
    sender: str
    room: str
    to: str
    text: str
    client_id: str
    file_id: str = ""

    def __repr__(self) -> str:
        return f"StoredMessage(id={self.id}, sender={self.sender!r}, room={self.room!r})"


@dataclass(frozen=True, slots=True)
class StoredFile:
    """A file's metadata. ``received`` bytes are stored so far; ``complete`` once verified."""

    file_id: str
    owner_key: str
    name: str
    size: int
    sha256: bytes
    room: str
    to_key: str
    received: int
    complete: bool
    ts: float

    def __repr__(self) -> str:
        return f"StoredFile(file_id={self.file_id!r}, size={self.size}, received={self.received})"


class Store(Protocol):
    """Durable state. Every write is committed before the method returns, or, inside
    ``batch()``, when the batch ends."""

    def batch(self) -> AbstractContextManager[None]:
        """Group the writes of one hub call into one commit.

        Everything written inside the block is committed when it ends, also when it ends with
        an exception (what was done before stays done: the hub's state in memory has moved
        on). A batch inside a batch joins the outer one. A store without transactions can
        return ``contextlib.nullcontext()``."""
        ...

    # users
    def get_user(self, key: str) -> UserRow | None: ...
    def add_user(self, name: str, key: str, password_hash: str) -> bool:
        """False if ``key`` is taken or retired; a new account is at password generation 0."""
        ...

    def is_retired(self, key: str) -> bool:
        """Whether ``key`` belonged to a removed account: it is never registered again, since
        that account's direct messages and files stay filed under it."""
        ...

    def looks_taken(self, key: str) -> bool:
        """Whether a user's or a removed account's name looks like ``key``
        (``names.look_alike_key``), ``key`` itself included."""
        ...

    def set_password(self, key: str, password_hash: str) -> bool:
        """Replace the user's hash and count up its password generation; False if there is
        no such user."""
        ...

    def remove_user(self, key: str, *, keep_room: str = "") -> bool:
        """Delete the user (their messages and files stay) and retire ``key``; False if there
        is no such user."""
        ...

    def list_users(self) -> list[str]: ...
    def password_generations(self, keys: Collection[str]) -> dict[str, int] | None:
        """The password generation of each of ``keys`` that still has an account (one
        removed meanwhile is left out); may answer None at once if no account can have
        changed since the last call (nothing but this store has written to the database,
        and it changed no password and removed no account)."""
        ...

    # rooms and memberships (rooms by their exact name; members by user key)
    def ensure_room(self, room: str) -> None: ...
    def room_exists(self, room: str) -> bool: ...
    def drop_room_if_unused(self, room: str) -> bool:
        """Delete ``room`` if nobody is in it and nothing was ever posted or shared in it;
        whether it was deleted."""
        ...

    def rooms(self) -> list[tuple[str, int]]:
        """Every room with its member count, by name."""
        ...

    def room_count(self) -> int:
        """How many rooms there are."""
        ...

    def rooms_of(self, key: str) -> list[str]: ...
    def members(self, room: str) -> list[str]:
        """Display names of the room's members."""
        ...

    def add_member(self, room: str, key: str) -> bool:
        """False if already a member."""
        ...

    def remove_member(self, room: str, key: str) -> bool:
        """End a membership, with the user's read marker in the room; False if there was
        none."""
        ...

    # messages
    def last_message_id(self) -> int: ...
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
        """Store a message and give it the next id. Raises ``DuplicateMessage`` (storing
        nothing) if the sender already has a message with this non-empty ``client_id``."""
        ...

    def find_by_client_id(self, sender_key: str, client_id: str) -> StoredMessage | None: ...
    def room_history(self, room: str, before: int, limit: int) -> list[StoredMessage]:
        """Up to ``limit`` messages of ``room`` with id < ``before`` (0: no bound), oldest
        first."""
        ...

    def direct_history(
        self, a_key: str, b_key: str, before: int, limit: int
    ) -> list[StoredMessage]:
        """Like room_history, for the direct conversation between two users."""
        ...

    def direct_peers(self, key: str, limit: int) -> list[str]:
        """Display names of up to ``limit`` users that user ``key`` has direct messages with,
        sent or received, the one with the latest message first; removed accounts are left
        out, and the user itself is there if it wrote to itself (as in direct_history)."""
        ...

    def missed(self, key: str, after: int, limit: int) -> list[StoredMessage]:
        """Up to ``limit`` messages visible to user ``key`` (its rooms' messages from when it
        joined, its direct messages both ways) with id > ``after``, oldest first."""
        ...

    def get_cursor(self, key: str, device: str = "") -> int:
        """The id of the last message user ``key`` acknowledged on ``device`` (0 if none); for
        a device not known (or ``""``), the highest any of its devices acknowledged."""
        ...

    def set_cursor(self, key: str, message_id: int, device: str = "") -> None:
        """Record that user ``key`` has had every message up to ``message_id`` on ``device``:
        its cursor there, and the user's, go up to it (never down). ValueError if no such
        user. A store may forget the cursors of the devices not seen for longest, beyond a
        few dozen per user."""
        ...

    # read markers (a conversation: a room, or the direct one with the user ``peer_key``)
    def raise_read_marker(self, key: str, room: str, peer_key: str, up_to: int) -> bool:
        """Set user ``key``'s read marker in the conversation to ``up_to`` if that is higher
        than the one stored (none counts as 0); whether it rose."""
        ...

    def read_markers(self, key: str, limit: int) -> list[tuple[str, str, int]]:
        """User ``key``'s read markers as (room, peer's display name, up_to): those of the
        rooms it is a member of, and those of up to ``limit`` direct conversations with
        existing users (the highest markers first). ``remove_member`` deletes the user's
        marker in the room; ``remove_user`` the user's markers, and every marker of a direct
        conversation with the user."""
        ...

    # files
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
        """Register an upload under a new server-chosen id (nothing received yet)."""
        ...

    def find_partial_upload(
        self, owner_key: str, sha256: bytes, size: int, room: str, to_key: str
    ) -> StoredFile | None: ...
    def unfinished_uploads(self, owner_key: str) -> list[StoredFile]:
        """The user's incomplete uploads, the longest idle first."""
        ...

    def get_file(self, file_id: str) -> StoredFile | None: ...
    def write_chunk(self, file_id: str, offset: int, data: bytes | memoryview) -> int:
        """Append ``data`` at ``offset`` (which must equal the bytes received so far) and
        return the new count. The store may keep the partial file open until
        ``release_upload``, ``complete_file`` or ``delete_file``. OSError if the bytes cannot
        be written (with an errno in DISK_FULL_ERRNOS for want of room), ValueError if they
        do not fit the upload."""
        ...

    def release_upload(self, file_id: str) -> None:
        """The upload's transfer ended (or its session closed): free what the store keeps
        open for writing it. The partial stays, to be resumed."""
        ...

    def upload_hasher(self, file_id: str) -> Callable[[], Digest] | None:
        """How the upload ``file_id`` (all its bytes received) is to be verified: None if
        ``complete_file(file_id)`` can do it at once (the store kept the upload's SHA-256 as
        its chunks were written), else a function that reads the partial file back and
        returns its ``Digest``, having fsynced it. The function is called on another thread,
        while the store is used: it touches that file only, never the database. It raises
        ``OSError`` if the file cannot be read (``FileNotFoundError`` if it is gone)."""
        ...

    def complete_file(self, file_id: str, digest: Digest | None = None) -> bool | ReadBackFailed:
        """Verify the stored bytes against the offered size and SHA-256; if they match, fsync
        and move the file into place and mark it complete (True); otherwise delete it
        (False). ``digest`` is what an ``upload_hasher`` function read from the file: it is
        taken instead of reading the file again (which the store does without it if it
        kept no SHA-256 of the upload: the hub never lets it, it asks ``upload_hasher``).

        If the file cannot be looked at (opened, fsynced or read): ``ReadBackFailed.GONE``
        if it is not there (the upload is deleted, as one that differs), or
        ``ReadBackFailed.NOT_NOW`` for any other ``OSError`` (nothing is deleted: the upload
        stays with all its bytes, to be completed again)."""
        ...

    def delete_file(self, file_id: str) -> None: ...
    def usage(self, owner_key: str) -> int:
        """Bytes of storage the user's files (complete and partial) take."""
        ...

    def free_space(self) -> int | None:
        """Bytes free on the disk that holds the files (None: not known)."""
        ...

    def files_for_room(self, room: str, after: int, limit: int) -> list[tuple[int, StoredFile]]:
        """Up to ``limit`` files shared in ``room`` whose announcing message has an id above
        ``after``, in the order they were shared (by that id), each with that id. A file is
        shared once complete and announced: a new one never comes before one listed."""
        ...

    def files_between(
        self, a_key: str, b_key: str, after: int, limit: int
    ) -> list[tuple[int, StoredFile]]:
        """Like files_for_room, for the files sent directly between two users (either way)."""
        ...

    def read_chunk(self, file_id: str, offset: int, size: int) -> bytes: ...

    def close(self) -> None: ...
