"""Records: the application messages carried inside the encrypted channel.

Each record is one msgspec ``Struct``, encoded as a MessagePack array whose first element is the
record's tag (``["msg", ...fields]``). The same class is sent on one side and returned by
``Connection.next_event()`` on the other. Field limits are declared once, in the annotations
below; the strict decoder enforces them on every record received and ``Connection.send``
enforces them on every record sent (see ``codec``).

``reprs`` never show passwords, message text, file data or digests: fields named in
``_hidden`` are shown by length only, those named in ``_secret`` (passwords) not even by that.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized
from typing import Annotated, ClassVar, Final

import msgspec

from sealchat.core import limits
from sealchat.core.role import Role

Meta = msgspec.Meta

UInt = Annotated[int, Meta(ge=0, le=limits.MAX_UINT)]
Username = Annotated[str, Meta(max_length=limits.MAX_USERNAME)]
Password = Annotated[str, Meta(max_length=limits.MAX_PASSWORD)]
RoomName = Annotated[str, Meta(max_length=limits.MAX_ROOM)]
Text = Annotated[str, Meta(max_length=limits.MAX_TEXT)]
Reason = Annotated[str, Meta(max_length=limits.MAX_REASON)]
Code = Annotated[str, Meta(max_length=limits.MAX_CODE)]
Ident = Annotated[str, Meta(max_length=limits.MAX_ID)]
Feature = Annotated[str, Meta(max_length=limits.MAX_CODE, pattern="^[a-z0-9-]*$")]
FileName = Annotated[str, Meta(max_length=limits.MAX_FILE_NAME)]
Digest = Annotated[bytes, Meta(min_length=limits.DIGEST_SIZE, max_length=limits.DIGEST_SIZE)]
ChunkData = Annotated[memoryview, Meta(max_length=limits.MAX_CHUNK)]
"""A chunk's bytes, viewed, not copied (see :class:`FileChunk`)."""
Timestamp = Annotated[float, Meta(ge=0, le=limits.MAX_TIMESTAMP)]
PageSize = Annotated[int, Meta(ge=1, le=limits.MAX_HISTORY_PAGE)]

CLIENT: frozenset[Role] = frozenset({Role.CLIENT})
SERVER: frozenset[Role] = frozenset({Role.SERVER})
BOTH: frozenset[Role] = frozenset(Role)


class _Shown:
    """A hidden field as reprs show it: its length only (``<7 chars>``), or for a secret
    nothing at all (``<hidden>``: a password's length narrows the search for it)."""

    __slots__ = ("_text",)

    def __init__(self, text: str) -> None:
        self._text = text

    @classmethod
    def size(cls, value: Sized | None) -> _Shown:
        unit = "chars" if isinstance(value, str) else "bytes"
        return cls("None" if value is None else f"<{len(value)} {unit}>")

    def __repr__(self) -> str:
        return self._text


_SECRET: Final = _Shown("<hidden>")


def _safe_fields(obj: _Safe) -> list[tuple[str, object]]:
    """(name, value) of each field, a hidden one's value replaced by its length, a secret's
    by ``<hidden>``."""
    fields: list[tuple[str, object]] = []
    for name in obj.__struct_fields__:
        value = getattr(obj, name)
        if name in obj._secret:
            value = _SECRET
        elif name in obj._hidden:
            value = _Shown.size(value)
        fields.append((name, value))
    return fields


def _safe_repr(obj: _Safe) -> str:
    parts = ", ".join(f"{name}={value!r}" for name, value in _safe_fields(obj))
    return f"{type(obj).__name__}({parts})"


class _Safe(msgspec.Struct, frozen=True, kw_only=True, array_like=True, gc=False):
    """What records and the items in them share: reprs that keep secrets."""

    _hidden: ClassVar[frozenset[str]] = frozenset()
    """Fields shown by their length only."""
    _secret: ClassVar[frozenset[str]] = frozenset()
    """Fields not shown at all, not even by their length (passwords)."""

    def __repr__(self) -> str:
        return _safe_repr(self)

    def __rich_repr__(self) -> list[tuple[str, object]]:
        """What rich's pretty printer shows (msgspec's would show every field)."""
        return _safe_fields(self)


class Item(_Safe, frozen=True, kw_only=True, array_like=True, gc=False):
    """A value nested inside a record (not a record itself: no tag)."""


class Record(_Safe, frozen=True, kw_only=True, array_like=True, gc=False):
    """Base of every record. ``sent_by`` is which roles may send it; ``in_login`` marks the
    records allowed before the session is authenticated. Records are immutable and never
    refer back to themselves, so the garbage collector does not track them (``gc=False``)."""

    sent_by: ClassVar[frozenset[Role]] = BOTH
    in_login: ClassVar[bool] = False


# --- nested items -------------------------------------------------------------------------


class FileInfo(Item, frozen=True, kw_only=True):
    """A stored file as members see it. ``name`` is display text, never a path."""

    _hidden = frozenset({"sha256"})

    file_id: Ident
    name: FileName
    size: UInt
    sha256: Digest


class RoomInfo(Item, frozen=True, kw_only=True):
    """One room in a RoomList."""

    name: RoomName
    members: UInt = 0
    joined: bool = False


class MemberInfo(Item, frozen=True, kw_only=True):
    """One member of a room and whether they are online."""

    name: Username
    online: bool = False


class ReadMarker(Item, frozen=True, kw_only=True):
    """One conversation's read marker in a ReadMarkers list: the user has read ``room`` (or
    the direct conversation with ``peer``) up to message id ``up_to``."""

    up_to: UInt
    room: RoomName = ""
    peer: Username = ""


# --- session ------------------------------------------------------------------------------


class Login(Record, tag="login", frozen=True, kw_only=True):
    """Client asks to log in. Allowed only before authentication. ``announce=False`` logs in
    quietly: the session receives what the user's sessions receive, but does not make the
    user appear online (no Presence, not listed online; protocol §9)."""

    sent_by = CLIENT
    in_login = True
    _secret = frozenset({"password"})

    username: Username
    password: Password
    announce: bool = True


class Register(Record, tag="register", frozen=True, kw_only=True):
    """Client asks to create an account and log in (servers may refuse: LoginRejected);
    ``announce`` as in Login."""

    sent_by = CLIENT
    in_login = True
    _secret = frozenset({"password"})

    username: Username
    password: Password
    announce: bool = True


class Authenticated(Record, tag="auth", frozen=True, kw_only=True):
    """Server: the session is logged in as ``username`` (its canonical spelling).
    ``conversations`` names the users this user has direct messages with, the most recent
    conversation first (at most MAX_LIST); ``max_file_size`` is the largest file the server
    accepts, in bytes, and ``max_message_chars`` the most characters (code points) of a
    message's text it takes, at most MAX_TEXT (each 0: not said, as by an older server)."""

    sent_by = SERVER
    in_login = True

    username: Username
    conversations: Annotated[tuple[Username, ...], Meta(max_length=limits.MAX_LIST)] = ()
    max_file_size: UInt = 0
    features: Annotated[tuple[Feature, ...], Meta(max_length=limits.MAX_FEATURES)] = ()
    max_message_chars: UInt = 0


CHANGE_PASSWORD: Final = "change-password"  # noqa: S105
"""The name in ``Authenticated.features`` of a server that takes ChangePassword (§9.13): a
client must not send ChangePassword to a server that does not list it (an unknown tag is a
protocol violation there)."""


READ_MARKERS: Final = "read-markers"
"""The name in ``Authenticated.features`` of a server that keeps read markers (§9.14): it
takes ReadUpTo and ListReadMarkers, which a client must not send to a server that does not
list it."""


GENERIC_LOGIN_FAILURE: Final = "invalid username or password"
"""LoginRejected's reason for a wrong password and for an unknown user alike (protocol §9.3):
trying again with the same password cannot help."""
PASSWORD_CHANGED: Final = "your password was changed; log in again with the new one"  # noqa: S105
"""The reason of the server's Bye to a session that logged in before its password changed
(protocol §9.12): logging in again with the old password cannot help."""
ACCOUNT_REMOVED: Final = "your account was removed"
"""The reason of the server's Bye to the sessions of an account removed (protocol §9.12)."""
NAME_TAKEN: Final = "that user name is taken"
"""The reason of the LoginRejected refusing a Register of a name in use or retired (§9.3)."""
NAME_LOOKS_TAKEN: Final = "that user name looks like one that is taken; choose another"
"""The reason of the LoginRejected refusing a Register of a name that looks like one in use
or retired (§9.2, §9.3): ``AIice`` (capital i) once ``alice`` exists."""


class LoginRejected(Record, tag="rejected", frozen=True, kw_only=True):
    """Server: login or registration failed; the client may try again after ``retry_after``
    seconds."""

    sent_by = SERVER
    in_login = True

    reason: Reason = GENERIC_LOGIN_FAILURE
    retry_after: Timestamp = 0.0


class Ping(Record, tag="ping", frozen=True, kw_only=True):
    """Either side checks the peer is alive; the connection answers with Pong automatically."""

    in_login = True

    nonce: UInt = 0


class Pong(Record, tag="pong", frozen=True, kw_only=True):
    """The answer to a Ping, echoing its nonce."""

    in_login = True

    nonce: UInt = 0


class Bye(Record, tag="bye", frozen=True, kw_only=True):
    """The explicit end of a session: nothing follows it in either direction."""

    in_login = True

    reason: Reason = ""


class Error(Record, tag="error", frozen=True, kw_only=True):
    """Server: a request failed. ``code`` is machine-readable, ``detail`` is for people and
    ``ref`` names what failed (a client message id, a room, a transfer)."""

    sent_by = SERVER

    code: Code
    detail: Reason = ""
    ref: Ident = ""


class ChangePassword(Record, tag="passwd", frozen=True, kw_only=True):
    """Client: replace this user's password ``old_password`` by ``new_password``. Only to a
    server whose Authenticated listed CHANGE_PASSWORD; answered by PasswordChanged or by an
    Error whose ``ref`` is PASSWORD_REF."""

    sent_by = CLIENT
    _secret = frozenset({"old_password", "new_password"})

    old_password: Password
    new_password: Password


CHANGE_IN_PROGRESS: Final = "a password change is already in progress"
"""Error.detail refusing a ChangePassword sent while one of the connection is carried out
(§9.13); the clients refuse a second one with it themselves: the server would answer it at
once, before the first, and replies are matched by their order (§9.10)."""


class PasswordChanged(Record, tag="passwd-ok", frozen=True, kw_only=True):
    """Server: the password is changed; this session stays logged in, the user's other
    sessions are logged out (protocol §9.13)."""

    sent_by = SERVER


HISTORY_REF: Final = ":history"
FILES_REF: Final = ":files"
ROOMS_REF: Final = ":rooms"
TYPING_REF: Final = ":typing"
PASSWORD_REF: Final = ":password"  # noqa: S105
READ_REF: Final = ":read"
"""The ``ref`` of an Error about a HistoryRequest, ListFiles, ListRooms, Typing,
ChangePassword, ReadUpTo or ListReadMarkers record (§9.11):
neither a valid room name (it starts with a letter or digit) nor a client id of the reference
clients (hex) starts with ':', so no other refusal of theirs has such a ``ref``."""


# --- rooms and presence -------------------------------------------------------------------


class JoinRoom(Record, tag="join", frozen=True, kw_only=True):
    """Client joins ``room``, creating it if it does not exist."""

    sent_by = CLIENT

    room: RoomName


class LeaveRoom(Record, tag="leave", frozen=True, kw_only=True):
    """Client leaves ``room``."""

    sent_by = CLIENT

    room: RoomName


class RoomJoined(Record, tag="joined", frozen=True, kw_only=True):
    """Server: this session's user is now a member of ``room`` (Members follow)."""

    sent_by = SERVER

    room: RoomName


class RoomLeft(Record, tag="left", frozen=True, kw_only=True):
    """Server: this session's user is no longer a member of ``room``."""

    sent_by = SERVER

    room: RoomName


class ListRooms(Record, tag="rooms?", frozen=True, kw_only=True):
    """Client asks for the rooms it can see."""

    sent_by = CLIENT


class RoomList(Record, tag="rooms", frozen=True, kw_only=True):
    """Server: rooms, in pages of at most MAX_LIST; ``more`` on all pages but the last."""

    sent_by = SERVER

    rooms: Annotated[list[RoomInfo], Meta(max_length=limits.MAX_LIST)]
    more: bool = False


class ListMembers(Record, tag="members?", frozen=True, kw_only=True):
    """Client asks who is in ``room``."""

    sent_by = CLIENT

    room: RoomName


class Members(Record, tag="members", frozen=True, kw_only=True):
    """Server: members of ``room`` with presence, paged like RoomList."""

    sent_by = SERVER

    room: RoomName
    members: Annotated[list[MemberInfo], Meta(max_length=limits.MAX_LIST)]
    more: bool = False


class Membership(Record, tag="member", frozen=True, kw_only=True):
    """Server: ``user`` joined (``joined=True``) or left ``room``."""

    sent_by = SERVER

    room: RoomName
    user: Username
    joined: bool


class Presence(Record, tag="presence", frozen=True, kw_only=True):
    """Server: ``user`` came online or went offline (sent to those who share a room)."""

    sent_by = SERVER

    user: Username
    online: bool


class OnlineUsers(Record, tag="online", frozen=True, kw_only=True):
    """Server, after login: who is online among the users this user shares a room with."""

    sent_by = SERVER

    users: Annotated[list[Username], Meta(max_length=limits.MAX_LIST)]
    more: bool = False


class Typing(Record, tag="typing", frozen=True, kw_only=True):
    """Typing started (``active``) or stopped, in ``room`` or to user ``to``. The server relays
    it with ``user`` set; it expires 5 s after the last refresh."""

    room: RoomName = ""
    to: Username = ""
    user: Username = ""
    active: bool = True


# --- messages and history -----------------------------------------------------------------


class Message(Record, tag="msg", frozen=True, kw_only=True):
    """A chat message to a room (``room``) or a user (``to``), exactly one of them set.

    The client sets ``client_id`` (unique per sender) and ``text``; the server fills ``id``
    (increasing), ``sender`` and ``ts`` (Unix seconds) when it relays or replays the message.
    A message announcing a shared file carries ``file``.
    """

    _hidden = frozenset({"text"})

    text: Text = ""
    room: RoomName = ""
    to: Username = ""
    client_id: Ident = ""
    id: UInt = 0
    sender: Username = ""
    ts: Timestamp = 0.0
    file: FileInfo | None = None


class MessageAck(Record, tag="ack", frozen=True, kw_only=True):
    """Server: the message ``client_id`` is stored as ``id`` at ``ts``."""

    sent_by = SERVER

    client_id: Ident
    id: UInt
    ts: Timestamp


class Delivered(Record, tag="seen", frozen=True, kw_only=True):
    """Client: every message with an id up to ``up_to`` has reached this user; the server
    replays only later ones after the next login. During the replay after login the server
    counts it only up to the last replayed id, and it releases the replay's next page."""

    sent_by = CLIENT

    up_to: UInt


class HistoryRequest(Record, tag="history?", frozen=True, kw_only=True):
    """Client asks for up to ``limit`` messages of ``room`` (or of the direct conversation with
    ``peer``) with ids below ``before`` (0: the newest)."""

    sent_by = CLIENT

    room: RoomName = ""
    peer: Username = ""
    before: UInt = 0
    limit: PageSize = 50


class HistoryEnd(Record, tag="history", frozen=True, kw_only=True):
    """Server: the Message records of a history reply (or of the missed-message replay after
    login, with ``room`` and ``peer`` empty) have all been sent; ``more`` if older ones exist."""

    sent_by = SERVER

    room: RoomName = ""
    peer: Username = ""
    more: bool = False


# --- files --------------------------------------------------------------------------------


class FileOffer(Record, tag="file", frozen=True, kw_only=True):
    """Start of a file stream identified by ``transfer`` (chosen by the client).

    Client → server: upload ``name`` (display text) of ``size`` bytes with digest ``sha256``
    to ``room`` or user ``to``. Server → client: the answer to a FileRequest, describing the
    stored file ``file_id`` whose chunks follow from ``offset``.
    """

    _hidden = frozenset({"sha256"})

    transfer: UInt
    name: FileName
    size: UInt
    sha256: Digest
    room: RoomName = ""
    to: Username = ""
    file_id: Ident = ""
    offset: UInt = 0


class FileAccept(Record, tag="file-ok", frozen=True, kw_only=True):
    """Server: send the upload's chunks from ``offset`` (non-zero when resuming)."""

    sent_by = SERVER

    transfer: UInt
    file_id: Ident
    offset: UInt = 0


class FileReject(Record, tag="file-no", frozen=True, kw_only=True):
    """Either side refuses or aborts transfer ``transfer``."""

    transfer: UInt
    reason: Reason = ""


class FileRequest(Record, tag="file?", frozen=True, kw_only=True):
    """Client asks to download ``file_id`` from ``offset`` as transfer ``transfer``."""

    sent_by = CLIENT

    transfer: UInt
    file_id: Ident
    offset: UInt = 0


class FileChunk(Record, tag="chunk", frozen=True, kw_only=True):
    """``data`` of transfer ``transfer`` starting at byte ``offset``; chunks come in order.

    ``data`` is a read-only ``memoryview``, so that the bulk path copies no chunk: a received
    one views the record's decrypted bytes (immutable, and kept alive by the view), and
    :func:`file_chunks` cuts views out of the block a sender read. Writing, hashing, ``len``
    and ``==`` take it as they take bytes; ``bytes(chunk.data)`` makes a copy (and a chunk
    pickles only as one built with such a copy)."""

    _hidden = frozenset({"data"})

    transfer: UInt
    offset: UInt
    data: ChunkData


def file_chunks(transfer: int, offset: int, data: bytes) -> Iterator[FileChunk]:
    """``data`` of ``transfer``, which starts at byte ``offset`` of the file, as FileChunks of
    at most MAX_CHUNK bytes each, views of ``data`` (a sender reads big blocks; each chunk is
    one record)."""
    view = memoryview(data).toreadonly()
    for start in range(0, len(view), limits.MAX_CHUNK):
        yield FileChunk(
            transfer=transfer, offset=offset + start, data=view[start : start + limits.MAX_CHUNK]
        )


class FileComplete(Record, tag="file-end", frozen=True, kw_only=True):
    """All chunks of ``transfer`` are sent; ``sha256`` is the whole file's digest."""

    _hidden = frozenset({"sha256"})

    transfer: UInt
    sha256: Digest


class ListFiles(Record, tag="files?", frozen=True, kw_only=True):
    """Client asks for a page of the files shared in ``room`` or with ``peer``: those shared
    after position ``after`` (0: from the first; else the ``last`` of the page before)."""

    sent_by = CLIENT

    room: RoomName = ""
    peer: Username = ""
    after: UInt = 0


class FileList(Record, tag="files", frozen=True, kw_only=True):
    """Server: one page of shared files, the answer to one ListFiles, in the order they were
    shared. ``more`` if files follow; ``last`` is the position of the page's last file (the
    id of the Message that announced it; the request's ``after`` for an empty page): ask
    with ``after=last`` for the next page."""

    sent_by = SERVER

    files: Annotated[list[FileInfo], Meta(max_length=limits.MAX_LIST)]
    room: RoomName = ""
    peer: Username = ""
    more: bool = False
    last: UInt = 0


# --- read markers -------------------------------------------------------------------------


class ReadUpTo(Record, tag="read", frozen=True, kw_only=True):
    """This user has read ``room`` (or the direct conversation with ``peer``) up to message
    id ``up_to``. Client: only to a server whose Authenticated listed READ_MARKERS. Server:
    the user's marker rose on another session (sent to the sessions that sent
    ListReadMarkers; ``peer`` in its canonical spelling)."""

    up_to: UInt
    room: RoomName = ""
    peer: Username = ""


class ListReadMarkers(Record, tag="reads?", frozen=True, kw_only=True):
    """Client asks for the read markers of its conversations (ReadMarkers pages), and for
    the ReadUpTo of its other sessions from then on. Only to a server that listed
    READ_MARKERS."""

    sent_by = CLIENT


class ReadMarkers(Record, tag="reads", frozen=True, kw_only=True):
    """Server: the user's read markers, paged like RoomList; the answer to ListReadMarkers."""

    sent_by = SERVER

    markers: Annotated[list[ReadMarker], Meta(max_length=limits.MAX_LIST)]
    more: bool = False


RECORD_TYPES: tuple[type[Record], ...] = (
    Login,
    Register,
    Authenticated,
    LoginRejected,
    Ping,
    Pong,
    Bye,
    Error,
    ChangePassword,
    PasswordChanged,
    JoinRoom,
    LeaveRoom,
    RoomJoined,
    RoomLeft,
    ListRooms,
    RoomList,
    ListMembers,
    Members,
    Membership,
    Presence,
    OnlineUsers,
    Typing,
    Message,
    MessageAck,
    Delivered,
    HistoryRequest,
    HistoryEnd,
    FileOffer,
    FileAccept,
    FileReject,
    FileRequest,
    FileChunk,
    FileComplete,
    ListFiles,
    FileList,
    ReadUpTo,
    ListReadMarkers,
    ReadMarkers,
)
"""Every record type of protocol v1, in the order docs/protocol.md lists them."""
