"""Client requests as data: what to send, which replies belong to it, and what they mean.

Both clients (trio and blocking) send the same requests and collect the same replies (a
``Waiter`` each, fed by ``route``, within MAX_REPLY_ITEMS and MAX_REPLY_RECORDS); only the
waiting differs. A reply is matched by its content (room, transfer id…), since the server
interleaves other traffic, and by order: the server answers a session's requests in order, so
of the requests waiting for a reply like it, it answers the oldest.
"""

from __future__ import annotations

import os
import random
import re
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any, Final, Generic, Protocol, TypeGuard, TypeVar

from sealchat.core import (
    Authenticated,
    ChangePassword,
    FileAccept,
    FileInfo,
    FileList,
    FileOffer,
    FileReject,
    FileRequest,
    HistoryEnd,
    HistoryRequest,
    JoinRoom,
    LeaveRoom,
    ListFiles,
    ListMembers,
    ListRooms,
    LocalProtocolError,
    Login,
    LoginRejected,
    MemberInfo,
    Members,
    Message,
    MessageAck,
    PasswordChanged,
    Record,
    Register,
    RoomInfo,
    RoomLeft,
    RoomList,
)
from sealchat.core import Error as ServerError
from sealchat.core.codec import encode_record
from sealchat.core.connection import CLOSED_BEFORE_PREAMBLE
from sealchat.core.limits import MAX_CHUNK, MAX_TEXT
from sealchat.core.records import CHANGE_PASSWORD, FILES_REF, HISTORY_REF, PASSWORD_REF, ROOMS_REF
from sealchat.core.sizes import too_large

TRANSFER_BLOCK = 16 * MAX_CHUNK
"""Bytes an upload reads from disk per read and writes to the socket in one go."""
REQUEST_TIMEOUT = 30.0
"""Seconds a client waits for the reply to a request."""
EVENT_BUFFER = 10_000
"""Events a client keeps for its reader; beyond it the client reads no more from the server
until the reader takes some."""
TRANSFER_QUEUE = 32
"""Chunks a download holds between the socket and the disk (about 2 MiB): beyond it, the
reader waits and TCP flow control slows the server."""
MAX_REPLY_ITEMS = 100_000
"""Entries (rooms, members, files, messages) one request may collect across all its pages:
generous (a server of 100,000 rooms, a room of 100,000 members or files; a history page holds
at most MAX_HISTORY_PAGE messages). When a server sends more, the request fails at once, and
the rest of its reply is dropped as it comes, instead of held until the request times out;
the connection stays (a server flooded with rooms is no broken peer)."""
MAX_REPLY_RECORDS = 1_000
"""Records one request may collect, entries or not (an empty page holds none, but takes
memory): so a reply holds at most 1,000 times MAX_RECORD bytes (64 MiB) even of the largest
records. A real one has a few hundred at most: 100,000 entries come in pages of up to
MAX_LIST, a history page at most MAX_HISTORY_PAGE messages (and its end)."""

R = TypeVar("R")


class ClientError(Exception):
    """A request failed or the connection did; the message says why in words a user
    understands."""


class ConnectionLost(ClientError):
    """The connection dropped (or the server closed it)."""


class Unreachable(ClientError):
    """No connection to the server could be made (refused, no route, name unknown, timed
    out), or what answered did not finish the handshake in time."""


TURNED_AWAY = (
    "the server closed the connection at once: it may be full or shutting down, or allow no "
    "more connections from your address; try again later"
)
"""Why a connection ended before the server sent a byte (docs/protocol.md 9.12)."""


def unreachable(server: str, why: object) -> str:
    """Why no TCP connection to ``server`` could be made, and what to check."""
    return f"cannot reach {server}: {why}; is the server running and the address right?"


NOT_A_HOST_NAME: Final = "not a valid host name"
"""Why a host name that cannot even be looked up (``a..b``, a label over 63 characters:
Python's IDNA encoding refuses it with a UnicodeError) is unreachable."""


def no_handshake(server: str) -> str:
    """Why a connection to ``server`` ended with its handshake unfinished in time."""
    return f"{server} did not answer the handshake; is it a sealchat server at that address?"


def explain_handshake_error(error: str) -> str:
    """A protocol error met during the handshake, in words a user understands."""
    if "version mismatch" in error:
        return f"this client and the server speak different protocol versions ({error})"
    if "does not speak the sealchat protocol" in error:
        return "that address is not a sealchat server"
    if error == CLOSED_BEFORE_PREAMBLE:
        return TURNED_AWAY
    return f"the connection failed: {error}"


class LoginFailed(ClientError):
    """The server refused the login; ``retry_after`` seconds before trying again."""

    def __init__(self, reason: str, retry_after: float = 0.0) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class PasswordNotChanged(ClientError):
    """The server refused a password change; ``code`` is its Error's (``wrong_password``,
    ``bad_password``, ``rate_limited``, ``in_progress``; protocol §9.11), or ``unsupported``
    when the server does not take the change at all (refused before asking it)."""

    def __init__(self, reason: str, code: str) -> None:
        super().__init__(reason)
        self.code = code


CANNOT_CHANGE_PASSWORD = "this server does not let users change their password; ask its operator"  # noqa: S105


class TransferFailed(ClientError):
    """An upload or download was refused, aborted, or did not arrive intact."""


class UploadBusy(TransferFailed):
    """A resume refused because another connection of the user is sending the file, or its
    end is being checked (docs/protocol.md §9.9, step 6): the server said to try again in
    ``retry_after`` seconds. ``send_file`` does so by itself, a few times."""

    def __init__(self, reason: str, retry_after: float) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


_UPLOAD_BUSY = re.compile(
    r"this file is already being sent in another transfer; try again in ([0-9]{1,6}) s"
)
UPLOAD_BUSY_TRIES: Final = 4
"""Offers ``send_file`` makes of a file that another connection of the user holds: the
server takes the upload over from one that has gone quiet (its connection most likely dead)
after a grace period, and says when; one really being sent elsewhere keeps it, and after
these tries the refusal stands."""
UPLOAD_BUSY_WAIT: Final = 30.0
"""The longest wait between those offers, whatever the server said."""
UPLOAD_BUSY_MARGIN: Final = 0.5
"""Added to the wait the server said, so that the next offer comes after its grace period."""


def busy_wait(busy: UploadBusy) -> float:
    """How long to wait before offering again a file refused with ``busy``."""
    return min(busy.retry_after, UPLOAD_BUSY_WAIT) + UPLOAD_BUSY_MARGIN


def shared_meanwhile(
    listed: Iterable[FileInfo], before: Collection[str], size: int, sha256: bytes
) -> FileInfo | None:
    """After waiting on an UploadBusy: the file of ``size`` bytes and ``sha256`` that the
    conversation's files list now (``listed``) and did not before the wait (``before``, their
    ids), if any: the other connection of the user that held the upload has shared it, and
    offering it again would upload and share it a second time."""
    for info in listed:
        if info.file_id not in before and (info.size, info.sha256) == (size, sha256):
            return info
    return None


class MessageTooLong(ClientError):
    """A message has more characters (``length``) than fit in one (``limit``): refused
    before it is sent."""

    def __init__(self, length: int, limit: int) -> None:
        super().__init__(f"the message has {length} characters; at most {limit} fit in one message")
        self.length, self.limit = length, limit


def message_limit(said: int = 0) -> int:
    """The most characters of one message: what the server ``said``
    (``Authenticated.max_message_chars``; 0: not said), within the protocol's MAX_TEXT."""
    return min(said, MAX_TEXT) if said > 0 else MAX_TEXT


def check_text(text: str, said: int = 0) -> None:
    """MessageTooLong if ``text`` has more characters (code points, as the server counts) than
    the server ``said`` it takes (``Authenticated.max_message_chars``; 0: not said) or than
    any server takes."""
    limit = message_limit(said)
    if len(text) > limit:
        raise MessageTooLong(len(text), limit)


def typed_room(text: str) -> str:
    """The room a person means by typing ``text``: room names are lowercase on the wire, so
    ``Dev`` is ``dev``. Only ASCII is lowercased: no other letter is valid in a room name,
    and Unicode's lowercasing would make some valid (the KELVIN SIGN becomes 'k')."""
    text = text.strip()
    return text.lower() if text.isascii() else text


@dataclass(frozen=True)
class Reply(Generic[R]):
    """Replies for which ``match`` holds are collected until ``done`` holds for one;
    ``result`` turns them into the answer (or raises ClientError). A ``contiguous`` reply is
    only the records that came one after another, with nothing else between them, up to the
    one that ends it (a history page: messages of the conversation that came before, live or
    replayed, are not part of it)."""

    match: Callable[[Record], bool]
    done: Callable[[Record], bool]
    result: Callable[[list[Record]], R]
    contiguous: bool = False


@dataclass(frozen=True)
class Request(Generic[R]):
    """``record`` to send and the ``reply`` it gets."""

    record: Record
    reply: Reply[R]


class _Flag(Protocol):
    """An event a waiter's caller waits on (``trio.Event``, ``threading.Event``)."""

    def set(self) -> None: ...


F = TypeVar("F", bound=_Flag)


class Waiter(Generic[F]):
    """Someone waiting for the records of ``reply``; ``finished`` (a ``trio.Event`` or a
    ``threading.Event``) is set once they are all here, the reply has gone past a bound
    (``failure`` says how), or the connection is ``lost``. ``last`` is the position in the
    stream of the latest of ``records`` (0: none yet). An ``abandoned`` one has no caller any
    more (see ``abandon``)."""

    def __init__(self, reply: Reply[Any], finished: F) -> None:
        self.reply = reply
        self.finished = finished
        self.records: list[Record] = []
        self.last = 0
        self.items = 0
        self.failure = ""
        self.lost = False
        self.abandoned = False

    def take(self, record: Record, position: int) -> bool:
        """Collect ``record`` (one the reply matches, the ``position``-th the connection
        read) unless it takes the reply past MAX_REPLY_ITEMS or MAX_REPLY_RECORDS; whether
        the reply is over (its last record came). A contiguous reply drops what it has if
        another record came between (it was not right before the end), or if ``record`` is a
        refusal (an answer on its own). Past a bound the reply has failed (``failure`` says
        how): what it held is dropped, and so is the rest of it as it comes."""
        if self.failure:
            return self.reply.done(record)
        if self.reply.contiguous and (
            isinstance(record, ServerError) or (self.last and self.last != position - 1)
        ):
            self.records, self.last, self.items = [], 0, 0
        items = self.items + _entries(record)
        if items > MAX_REPLY_ITEMS:
            excess = f"more than {MAX_REPLY_ITEMS:,} items"
        elif len(self.records) == MAX_REPLY_RECORDS:
            excess = f"more than {MAX_REPLY_RECORDS:,} records"
        else:
            self.items = items
            self.records.append(record)
            self.last = position
            return self.reply.done(record)
        self.failure = (
            f"the server sent {excess} ({type(record).__name__}) for one request, more than "
            "this client takes in one reply; the request failed (the connection stays)"
        )
        self.records, self.last, self.items = [], 0, 0
        return self.reply.done(record)

    def collected(self) -> list[Record]:
        """The records of the reply; ClientError if it went past a bound."""
        if self.failure:
            raise ClientError(self.failure)
        return self.records


W = TypeVar("W", bound=Waiter[Any])


def route(waiters: list[W], record: Record, position: int) -> list[W]:
    """Give ``record``, the ``position``-th record the connection read (the caller routes
    every one, counting from 1), to the oldest waiter (first in ``waiters``) whose reply
    matches it, and to no other: the server answers requests in order, so a reply belongs to
    the oldest request still waiting for one like it. A ``Message`` goes to every waiter that
    matches it (a live message can belong to several history pages under way). Waiters it
    ends are set and leave ``waiters``; one it takes past a bound is set (its call fails) but
    stays, to drop the rest of its reply, which would otherwise answer the next request like
    it, until the reply's last record. Returns the waiters that took it (those of the record
    of a reply past its bound included, but not a message: that goes on as any other)."""
    took: list[W] = []
    for waiter in list(waiters):
        if waiter.failure and isinstance(record, Message):
            continue  # the rest of a failed reply is no message of its own
        if waiter.reply.match(record):
            over = waiter.take(record, position)
            if over:
                waiters.remove(waiter)
            if over or waiter.failure:
                waiter.finished.set()
            if not (waiter.failure and isinstance(record, Message)):
                took.append(waiter)
            if not isinstance(record, Message):
                break
    return took


def abandon(waiters: list[W], waiter: W) -> None:
    """The caller of ``waiter`` stops waiting (cancelled, timed out). If it is still in
    ``waiters``, its request went out and the reply is yet to come: it stays there, marked
    ``abandoned``, to take that reply (``route`` ends it as any other), which would otherwise
    answer the next request like it; the connection's end clears it with the rest."""
    if waiter in waiters:
        waiter.abandoned = True


def lose(waiters: list[W]) -> None:
    """The connection ended: every call waiting on it fails (``lost``), and none is left."""
    for waiter in waiters:
        waiter.lost = True
        waiter.finished.set()
    waiters.clear()


def _entries(record: Record) -> int:
    """The entries ``record`` adds to a reply: those of its list, or itself (a Message)."""
    if isinstance(record, RoomList):
        return len(record.rooms)
    if isinstance(record, Members):
        return len(record.members)
    if isinstance(record, FileList):
        return len(record.files)
    return 1


def _request(
    record: Record,
    match: Callable[[Record], bool],
    done: Callable[[Record], bool],
    result: Callable[[list[Record]], R],
) -> Request[R]:
    return Request(record, Reply(match, done, result))


def _last_page(record: Record) -> bool:
    more: bool = getattr(record, "more", False)
    return not more


def _raise_errors(replies: list[Record]) -> None:
    for reply in replies:
        if isinstance(reply, ServerError):
            raise ClientError(reply.detail or reply.code)


def _error_about(record: Record, ref: str) -> bool:
    return isinstance(record, ServerError) and record.ref == ref


def login(
    username: str, password: str, *, register: bool = False, announce: bool = True
) -> Request[Authenticated]:
    """Log in (or register); the answer is the server's Authenticated record."""

    def result(replies: list[Record]) -> Authenticated:
        reply = replies[-1]
        if isinstance(reply, LoginRejected):
            raise LoginFailed(reply.reason, reply.retry_after)
        assert isinstance(reply, Authenticated)
        return reply

    kind = Register if register else Login
    return _request(
        kind(username=username, password=password, announce=announce),
        lambda r: isinstance(r, Authenticated | LoginRejected),
        lambda _r: True,
        result,
    )


def change_password(
    features: Iterable[str], old: str, new: str, *, logged_in: bool = True
) -> Request[None]:
    """Change the user's password from ``old`` to ``new``, on a server whose Authenticated
    listed ``features``: refused at once (PasswordNotChanged) before a login
    (``not_logged_in``: no features are known yet), and by a server that does not take
    ChangePassword (``unsupported``: sending it would break the protocol, §6.6.3)."""
    if not logged_in:
        raise PasswordNotChanged(
            "log in first: a password is changed for the user logged in", "not_logged_in"
        )
    if CHANGE_PASSWORD not in features:
        raise PasswordNotChanged(CANNOT_CHANGE_PASSWORD, "unsupported")

    def result(replies: list[Record]) -> None:
        reply = replies[-1]
        if isinstance(reply, ServerError):
            raise PasswordNotChanged(reply.detail or reply.code, reply.code)

    return _request(
        ChangePassword(old_password=old, new_password=new),
        lambda r: isinstance(r, PasswordChanged) or _error_about(r, PASSWORD_REF),
        lambda _r: True,
        result,
    )


def _members(replies: list[Record]) -> list[MemberInfo]:
    _raise_errors(replies)
    return [m for r in replies if isinstance(r, Members) for m in r.members]


def join(room: str) -> Request[list[MemberInfo]]:
    return _request(
        JoinRoom(room=room),
        lambda r: (isinstance(r, Members) and r.room == room) or _error_about(r, room),
        _last_page,
        _members,
    )


def members(room: str) -> Request[list[MemberInfo]]:
    return _request(
        ListMembers(room=room),
        lambda r: (isinstance(r, Members) and r.room == room) or _error_about(r, room),
        _last_page,
        _members,
    )


def leave(room: str) -> Request[None]:
    return _request(
        LeaveRoom(room=room),
        lambda r: (isinstance(r, RoomLeft) and r.room == room) or _error_about(r, room),
        lambda _r: True,
        _raise_errors,
    )


def rooms() -> Request[list[RoomInfo]]:
    def result(replies: list[Record]) -> list[RoomInfo]:
        _raise_errors(replies)
        return [i for r in replies if isinstance(r, RoomList) for i in r.rooms]

    return _request(
        ListRooms(),
        lambda r: isinstance(r, RoomList) or _error_about(r, ROOMS_REF),
        _last_page,
        result,
    )


def files(room: str = "", peer: str = "", after: int = 0) -> Request[FileList]:
    """One page of the files shared in ``room`` or with ``peer``: those after position
    ``after`` (``FileListing`` asks for them all, page by page)."""

    def result(replies: list[Record]) -> FileList:
        _raise_errors(replies)
        page = replies[-1]
        assert isinstance(page, FileList)
        return page

    return _request(
        ListFiles(room=room, peer=peer, after=after),
        lambda r: (
            (isinstance(r, FileList) and (r.room, r.peer) == (room, peer))
            or _error_about(r, FILES_REF)
        ),
        lambda _r: True,
        result,
    )


class FileListing:
    """The files of a conversation, in the order they were shared, a request per page:
    ``request`` is the next to make (None once the list is whole), ``take`` its answer. At
    most MAX_REPLY_ITEMS files, and every page but the last moves the position on: a server
    that says more follow for ever makes the listing fail, not go on for ever."""

    def __init__(self, room: str = "", peer: str = "") -> None:
        self.room, self.peer = room, peer
        self.files: list[FileInfo] = []
        self._after = 0
        self.request: Request[FileList] | None = files(room, peer)

    def take(self, page: FileList) -> None:
        """The answer to ``request``: its files are added, and ``request`` is the next."""
        if len(self.files) + len(page.files) > MAX_REPLY_ITEMS:
            raise ClientError(
                f"the server listed more than {MAX_REPLY_ITEMS:,} files; a listing holds "
                "at most that many"
            )
        self.files += page.files
        if not page.more:
            self.request = None
        elif page.files and page.last > self._after:
            self._after = page.last
            self.request = files(self.room, self.peer, page.last)
        else:
            raise ClientError(
                "the server's file list does not move on (a page that is empty or ends "
                "where the one before did, with more to come), which breaks the protocol"
            )


def history(
    room: str = "", peer: str = "", before: int = 0, limit: int = 50
) -> Request[tuple[list[Message], bool]]:
    """Messages older than ``before`` (0: the newest), oldest first, and whether there are
    older ones. The page is the messages that come right before its HistoryEnd: the server
    sends them together, so those of the conversation that came earlier (live, replayed
    after login, or of another page) are not part of it."""

    def ours(r: Record) -> bool:
        if isinstance(r, HistoryEnd):  # the replay's (room and peer empty) is never ours
            return (r.room, r.peer) == (room, peer) and bool(room or peer)
        if isinstance(r, Message):
            if before and r.id >= before:
                return False  # live, not part of the page
            if room:
                return r.room == room
            return not r.room and peer.lower() in (r.sender.lower(), r.to.lower())
        return _error_about(r, HISTORY_REF)

    def result(replies: list[Record]) -> tuple[list[Message], bool]:
        _raise_errors(replies)
        found = {m.id: m for m in replies if isinstance(m, Message)}
        end = replies[-1]
        return sorted(found.values(), key=lambda m: m.id), isinstance(end, HistoryEnd) and end.more

    return Request(
        HistoryRequest(room=room, peer=peer, before=before, limit=limit),
        Reply(ours, lambda r: not isinstance(r, Message), result, contiguous=True),
    )


_id_random = random.Random()  # noqa: S311  (ids need uniqueness, not secrecy)
os.register_at_fork(after_in_child=_id_random.seed)  # a forked child draws other ids


def new_client_id() -> str:
    """A fresh client message id: the time in milliseconds, then 32 random bits.

    Time first, so one sender's ids grow: the server's unique index on (sender, client id)
    then takes each new one at its end instead of at a random place (about a third of the
    server's work per message, measured); the random part keeps ids from one millisecond
    apart. An id is no secret (recipients see it, and only its sender can use it), so the
    random part comes from a generator of its own, not a system call per message (that was a
    seventh of a sending client's time, measured). Its own, because recipients see its
    output: the program's shared ``random`` (a bot's dice) stays unpredictable to them, and
    a program that seeds ``random`` does not repeat ids."""
    return f"{time.time_ns() // 1_000_000:012x}{_id_random.getrandbits(32):08x}"


def message(record: Message) -> Request[MessageAck]:
    """Send a message; the answer is the server's acknowledgement (it is stored)."""

    def result(replies: list[Record]) -> MessageAck:
        _raise_errors(replies)
        reply = replies[-1]
        assert isinstance(reply, MessageAck)
        return reply

    def ours(r: Record) -> bool:
        if isinstance(r, MessageAck):
            return r.client_id == record.client_id
        return _error_about(r, record.client_id)

    return _request(record, ours, lambda _r: True, result)


def check_file_size(size: int, limit: int) -> None:
    """TransferFailed, in the words of the server's refusal, if a file of ``size`` bytes is
    over the server's ``limit`` (``Authenticated.max_file_size``; 0: not known): such a file
    is refused before it is hashed or offered."""
    if limit and size > limit:
        raise TransferFailed(too_large(size, limit))


def upload(offer: FileOffer) -> Request[FileAccept]:
    """Offer a file; the answer says where to start sending (non-zero when resuming)."""

    def result(replies: list[Record]) -> FileAccept:
        reply = replies[-1]
        if isinstance(reply, FileReject):
            if busy := _UPLOAD_BUSY.fullmatch(reply.reason):
                raise UploadBusy(reply.reason, float(busy[1]))
            raise TransferFailed(reply.reason)
        assert isinstance(reply, FileAccept)
        return reply

    return _request(
        offer,
        lambda r: isinstance(r, FileAccept | FileReject) and r.transfer == offer.transfer,
        lambda _r: True,
        result,
    )


def announced(file_id: str, transfer: int) -> Reply[FileInfo]:
    """What follows an upload's FileComplete: the stored file's announcement, or a refusal."""

    def result(replies: list[Record]) -> FileInfo:
        reply = replies[-1]
        if isinstance(reply, FileReject):
            raise TransferFailed(reply.reason)
        assert isinstance(reply, Message)
        assert reply.file is not None
        return reply.file

    return Reply(
        lambda r: (
            (isinstance(r, Message) and r.file is not None and r.file.file_id == file_id)
            or (isinstance(r, FileReject) and r.transfer == transfer)
        ),
        lambda _r: True,
        result,
    )


def download(transfer: int, file_id: str, offset: int) -> Request[FileOffer]:
    """Ask for a stored file from ``offset``; the answer describes what follows. A refusal
    of a resumed download (``offset`` > 0) says which partial file to delete to start afresh,
    in case that file is the problem."""

    def result(replies: list[Record]) -> FileOffer:
        reply = replies[-1]
        if isinstance(reply, FileReject):
            resuming = (
                f" (while resuming from the {offset} bytes downloaded before: "
                f"delete .{file_id}.part in the downloads folder to start afresh)"
            )
            raise TransferFailed(reply.reason + (resuming if offset else ""))
        assert isinstance(reply, FileOffer)
        return reply

    return _request(
        FileRequest(transfer=transfer, file_id=file_id, offset=offset),
        lambda r: isinstance(r, FileOffer | FileReject) and r.transfer == transfer,
        lambda _r: True,
        result,
    )


def check_expected(file_id: str, expected: FileInfo | None) -> None:
    """ValueError if ``expected`` (the file a download should be) is of another file."""
    if expected is not None and expected.file_id != file_id:
        raise ValueError(f"expected is file {expected.file_id!r}, not {file_id!r}")


def check_offer(offer: FileOffer, expected: FileInfo | None) -> None:
    """TransferFailed if the server offers a download as other than the file ``expected``
    (what the user was shown: its announcement or a listing), by size or SHA-256: the bytes
    that follow are not the file the user asked for, and a size larger than the one shown
    would fill the disk. Nothing to check without ``expected``."""
    if expected is None:
        return
    if offer.size != expected.size:
        differs = f"as {offer.size:,} bytes, not the {expected.size:,} bytes it announced"
    elif offer.sha256 != expected.sha256:
        differs = "with another SHA-256 than it announced"
    else:
        return
    raise TransferFailed(
        f"the server offered {expected.name!r} ({expected.file_id}) {differs}; the download "
        "was refused (the server may be faulty, or not what it seems)"
    )


def checked(records: Iterable[Record]) -> list[tuple[Record, bytes]]:
    """Each of ``records`` with its encoding, every one checked before any is sent: a batch
    with a record beyond a limit raises ``ClientError`` and sends nothing."""
    try:
        return [(record, encode_record(record)) for record in records]
    except LocalProtocolError as exc:
        raise ClientError(f"cannot send this: {exc}") from None


def ends_replay(record: object) -> TypeGuard[HistoryEnd]:
    """Whether ``record`` ends a page of the replay after login."""
    return isinstance(record, HistoryEnd) and not (record.room or record.peer)
