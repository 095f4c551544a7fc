"""The async sealchat client library (trio), used by the desktop client and the CLI.

Example::

    async with connect("127.0.0.1", 7878, confirm_new_key=ask_user) as client:
        await client.login("esha", password)
        await client.join("random")
        await client.send_message("hello", room="random")
        async for event in client.events():
            print(event)

The client pins the server's key (``known_servers``), reconnects with exponential back-off and
jitter when the connection drops, logs in again, receives what it missed, and resends the
messages it queued meanwhile; the server drops duplicates by client message id, and the
client drops messages it has already shown, so nothing is lost and nothing is doubled.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager, suppress
from functools import partial
from pathlib import Path
from typing import Any, Final, TypeVar

import trio
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from sealchat.core import (
    Bye,
    Delivered,
    Event,
    FileInfo,
    ListReadMarkers,
    LocalProtocolError,
    MemberInfo,
    Message,
    ProtocolError,
    ReadMarkers,
    ReadUpTo,
    Record,
    RoomInfo,
    RoomLeft,
    State,
    Typing,
)
from sealchat.core import Error as ServerError
from sealchat.core.codec import encode_record
from sealchat.core.records import CHANGE_IN_PROGRESS, READ_MARKERS, READ_REF
from sealchat.transports import requests
from sealchat.transports.downloads import AnyPath, default_downloads_dir
from sealchat.transports.keyfile import load_or_create_key
from sealchat.transports.pinning import (
    KnownServers,
    config_dir,
    server_name,
)
from sealchat.transports.read_marks import ReadMarks
from sealchat.transports.requests import (
    EVENT_BUFFER,
    REQUEST_TIMEOUT,
    ClientError,
    ConnectionLost,
    LoginFailed,
    PasswordNotChanged,
    Reply,
    Request,
    TransferFailed,
    Unreachable,
    UploadBusy,
)
from sealchat.transports.trio_burst import BurstChannel
from sealchat.transports.trio_delivery import CallWaiter, Delivery, LinkState
from sealchat.transports.trio_link import (
    ConfirmKey,
    Dialer,
    Disconnected,
    Link,
    LinkLost,
)
from sealchat.transports.trio_outbox import Outbox
from sealchat.transports.trio_reader import Reader
from sealchat.transports.trio_reconnect import Reconnector
from sealchat.transports.trio_transfers import (
    Progress,
    Transfers,
    Upload,
    file_sha256,
    no_progress,
)

__all__ = [
    "EVENT_BUFFER",
    "ChatClient",
    "ClientError",
    "ConfirmKey",
    "ConnectionLost",
    "Disconnected",
    "LinkState",
    "LoginFailed",
    "PasswordNotChanged",
    "Progress",
    "TransferFailed",
    "Unreachable",
    "UploadBusy",
    "client_key",
    "connect",
]

T = TypeVar("T")
ABANDONED_HOLD = REQUEST_TIMEOUT
"""Seconds the waiter of a call given up still holds back the messages it took, for its late
reply (without replies): a server that never answers holds back nothing for good."""

SENT_WAIT: Final = 10.0
"""Seconds leaving ``connect``'s block waits, by default, for the server to store the
messages sent (``ChatClient.wait_sent``)."""
_SENT_POLL: Final = 0.25
"""Seconds between two looks at whether ``events()`` is full, while ``wait_sent`` waits."""
log = logging.getLogger("sealchat.client")


def client_key(path: Path | None = None) -> X25519PrivateKey:
    """This installation's own static key (created 0600 on first use)."""
    return load_or_create_key(path or config_dir() / "client_key")


class ChatClient:
    """A session with one server. Create it with :func:`connect`."""

    def __init__(
        self,
        host: str,
        port: int,
        nursery: trio.Nursery,
        *,
        static_key: X25519PrivateKey | None = None,
        known_servers: KnownServers | None = None,
        confirm_new_key: ConfirmKey | None = None,
        downloads_dir: AnyPath | None = None,
        reconnect: bool = True,
        backoff: tuple[float, float] = (0.5, 30.0),
        connect_timeout: float = 10.0,
        events: bool = True,
        acknowledge: bool | None = None,
        replies: bool = True,
        sent_wait: float = SENT_WAIT,
    ) -> None:
        self.host, self.port = host, port
        self.sent_wait = sent_wait
        """Seconds leaving ``connect``'s block waits for the messages sent to be stored (0:
        it does not wait; the caller has waited as it saw fit)."""
        self.server = server_name(host, port)
        self._nursery = nursery
        self._dialer = Dialer(
            host,
            port,
            self.server,
            static_key=static_key or client_key(),
            known=known_servers or KnownServers(),
            confirm=confirm_new_key,
            connect_timeout=connect_timeout,
            on_key=self._note_key,
        )
        self.downloads_dir = Path(downloads_dir) if downloads_dir else default_downloads_dir()
        self._link: Link | None = None
        self.username = ""
        self.conversations: tuple[str, ...] = ()
        """Whom the user has direct messages with, the most recent conversation first, as the
        server said at the last login (each reconnect's login says it again); empty from a
        server that does not say (protocol §6.6.3)."""
        self.max_file_size = 0
        """The largest file the server accepts, in bytes, as it said at the last login (0: not
        said): ``send_file`` refuses a larger one at once, before hashing it."""
        self.max_message_chars = 0
        """The most characters of a message the server takes, as it said at the last login
        (0: not said): ``send_message`` refuses a longer one at once (MessageTooLong)."""
        self.features: tuple[str, ...] = ()
        """The optional requests the server takes, as it said at the last login (protocol
        §6.6.3; empty from an older server): ``change_password`` needs ``change-password``."""
        self.fingerprint = ""
        self._reads = ReadMarks()
        self._changing_password = False
        """Whether a change_password call waits for its answer."""
        self._delivery = Delivery(self, events=events, acknowledge=acknowledge)
        self._waiters = self._delivery.waiters
        self.gave_up_on: Exception | None = None
        """Why the client stopped reconnecting for good (a changed or unknown key, a refused
        login, or Disconnected: also once it is closed), once it has."""
        self._outbox = Outbox(self)
        self._transfers = Transfers(self, self._delivery)
        self._reader = Reader(self, self._delivery, self._outbox, self._transfers, replies=replies)
        self._reconnector = Reconnector(self, self._delivery, reconnect=reconnect, backoff=backoff)
        self._closing = False
        self._online = trio.Event()

    def __repr__(self) -> str:
        return f"<ChatClient {self.server} user={self.username!r}>"

    # Views of the collaborators' state (the tests watch these).

    @property
    def _chunks(self) -> dict[int, trio.MemorySendChannel[Record]]:
        """The queues of the downloads under way (see ``Transfers.chunks``)."""
        return self._transfers.chunks

    @property
    def _withheld(self) -> deque[tuple[Event | LinkState, list[CallWaiter]]]:
        """The events held back for calls (see ``Delivery.withheld``)."""
        return self._delivery.withheld

    @property
    def _pacing(self) -> bool:
        """Whether the outbox goes out in paced rounds (see ``Outbox.pacing``)."""
        return self._outbox.pacing

    # --- connecting -----------------------------------------------------------------------

    async def _open_link(self) -> Link:
        """Connect, check the server key against the pins, finish the handshake (see
        ``Dialer.open``), and start the link's reader and writer; returns the new link."""
        link = await self._dialer.open()
        self._link = link
        self._nursery.start_soon(self._reader.read, link)
        self._nursery.start_soon(link.write)
        return link

    def _note_key(self, fingerprint: str) -> None:
        """The server's key (``fingerprint``) is accepted."""
        self.fingerprint = fingerprint

    # --- the reader and reconnecting ----------------------------------------------------

    async def _dispatch(self, record: Event) -> None:
        """Take a record read where it belongs (see ``Reader.dispatch``)."""
        match record:
            case ReadUpTo() | ReadMarkers():
                again = self._reads.heard(record)  # after the listing: those it lacks
                if again:
                    with suppress(ClientError):  # the reader waits for no send room
                        await self._send_all(again, wait=False)
            case RoomLeft(room=room):
                self._reads.left(room)
            case ServerError(code="not_member", ref=ref) if ref == READ_REF:
                self._reads.refused_as_not_a_member()
        await self._reader.dispatch(record)

    def _link_ended(self, link: Link, reason: str) -> None:
        """The reader of ``link`` has ended it (for ``reason``): if it is the client's link,
        the client is offline, and recovers unless it is closing."""
        if self._link is link:
            self._link = None
            self._went_offline()
            if not self._closing:
                self._nursery.start_soon(self._reconnector.recover, reason, link.farewell)

    async def _abandon_link(self) -> None:
        """Close a link that did not make it to a session, or failed while it resent the
        outbox after logging in (without starting a recovery: the caller retries)."""
        link, self._link = self._link, None
        self._went_offline()  # if the login had said online: not any more
        if link is not None:
            await link.stream.aclose()

    def _went_offline(self) -> None:
        """The session is not logged in: a new ``_online`` for the next login. One not set yet
        is kept: tasks already wait on it (nothing else would ever set it); so is the one set
        on giving up or closing, for whoever waits after that."""
        if self._online.is_set() and self.gave_up_on is None:
            self._online = trio.Event()

    # --- sending --------------------------------------------------------------------------

    async def _send(self, record: Record) -> None:
        await self._send_all((record,))

    async def _send_all(
        self, records: Iterable[Record], *, wait: bool = True, expecting: CallWaiter | None = None
    ) -> None:
        """Queue ``records`` for the link's writer, which sends everything queued in one
        write. Waits only while more than SEND_BUFFER bytes are queued, so a burst of
        messages goes out in a few writes instead of one each. ``expecting`` joins the
        waiters once they are queued: a waiter is there only if its request went out."""
        await self._queue(requests.checked(records), wait=wait, expecting=expecting)

    async def _queue(
        self,
        encoded: list[tuple[Record, bytes]],
        *,
        wait: bool = True,
        expecting: CallWaiter | None = None,
    ) -> None:
        """``_send_all`` for records already checked and encoded (``requests.checked``)."""
        link = self._link
        if link is None or link.closed.is_set() or self._logging_in_again(link, encoded):
            self._fail_if_given_up()
            raise LinkLost("not connected; the client is reconnecting")
        link.put(encoded)
        if expecting is not None:
            self._waiters.append(expecting)
        await link.taken(wait=wait)

    def _logging_in_again(self, link: Link, encoded: list[tuple[Record, bytes]]) -> bool:
        """Whether ``link`` is a reconnect's, still logging in, and ``encoded`` holds records
        that only a session may send: then the call is made while the client reconnects (it
        waits for that, or says so). Before the first login, such a call is refused as it
        is by the connection ("cannot send … in state login")."""
        return (
            link.conn.state is State.LOGIN
            and self._reconnector.credentials is not None
            and not all(record.in_login for record, _ in encoded)
        )

    async def _ask(self, request: Request[T], timeout: float = REQUEST_TIMEOUT) -> T:
        """Send a request and wait for its reply."""
        waiter = CallWaiter(request.reply)
        try:
            await self._send_all((request.record,), expecting=waiter)
            return await self._await(waiter, request.reply, timeout)
        finally:
            # If cancelled or timed out: its reply answers no other.
            self._delivery.abandon(waiter, ABANDONED_HOLD)

    async def _await(self, waiter: CallWaiter, reply: Reply[T], timeout: float) -> T:
        try:
            with trio.fail_after(timeout):
                await waiter.finished.wait()
        except trio.TooSlowError:
            raise ClientError(f"the server did not answer within {timeout:g} s") from None
        if waiter.lost:
            raise LinkLost("the connection was lost")
        return reply.result(waiter.collected())

    async def _retrying(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run ``attempt``; if the connection drops meanwhile, wait for the reconnect and run
        it again (it must resume, not repeat)."""
        while True:
            try:
                return await attempt()
            except LinkLost:
                if not self._reconnector.enabled or self._closing:
                    raise Disconnected("the connection was lost") from None
                await self.wait_online()

    # --- the session ----------------------------------------------------------------------

    async def login(self, username: str, password: str, *, announce: bool = True) -> str:
        """Log in; returns the user name as the server spells it. Raises LoginFailed.
        ``announce=False`` logs in quietly: the session gets the user's messages but does not
        make the user appear online (no Presence); a reconnect logs in the same way. A client
        logs in once: ClientError if it did already."""
        self._refuse_second_login()
        return await self._log_in(username, password, register=False, announce=announce)

    async def register(self, username: str, password: str, *, announce: bool = True) -> str:
        """Create an account (where the server allows it) and log in (``announce`` as in
        ``login``)."""
        self._refuse_second_login()
        return await self._log_in(username, password, register=True, announce=announce)

    def _refuse_second_login(self) -> None:
        """ClientError if the client logged in already (it logs in again by itself after a
        reconnect); refused here, as the server would, before the replay it would expect."""
        if self._reconnector.credentials is not None:
            raise ClientError(
                f"already logged in as {self.username}; to log in as another user, connect again"
            )

    async def _log_in(
        self, username: str, password: str, *, register: bool, announce: bool = True
    ) -> str:
        # Before asking: the replay's last HistoryEnd (which ends it) can come in the same
        # read as the answer, and be handled before this call resumes.
        self._delivery.start_replay()
        link = self._link
        request = requests.login(username, password, register=register, announce=announce)
        authenticated = await self._ask(request)
        first = self._reconnector.credentials is None
        self._reconnector.logged_in(username, password, announce=announce)
        self.username = name = authenticated.username
        self.conversations = authenticated.conversations
        self.max_file_size = authenticated.max_file_size
        self.max_message_chars = authenticated.max_message_chars
        self.features = authenticated.features
        if first:
            self._nursery.start_soon(self._outbox.keep_pacing)
        if first and self._delivery.acknowledging:
            self._nursery.start_soon(self._delivery.keep_acknowledging)
        await self._outbox.resend()  # before going online: what is sent next comes after
        if READ_MARKERS in self.features and self._delivery.keeping_events:
            # What the link may have lost goes after the listing, if the server lacks it.
            self._reads.after_login()
            await self._send(ListReadMarkers())
        elif READ_MARKERS in self.features:  # no events: no use for the markers
            await self._send_all(self._reads.after_login(listing=False))
        if self._link is link:  # else it was lost meanwhile: offline until the next login
            self._online.set()
        return name

    async def wait_online(self) -> None:
        """Wait until the session is logged in (again); Disconnected if the client has given
        up reconnecting."""
        await self._online.wait()
        self._fail_if_given_up()

    def _fail_if_given_up(self) -> None:
        """Disconnected, saying why, if the client has given up reconnecting or is closed."""
        error = self.gave_up_on
        if isinstance(error, Disconnected):
            raise Disconnected(str(error))
        if error is not None:
            raise Disconnected(f"disconnected: {error}")

    async def _give_up(self, reason: str, error: Exception | None = None) -> None:
        """No more reconnecting (because of ``error``, if one says why): tell the events
        reader, and wake everyone who waits for the session so they fail instead of hanging.
        Once only: the first reason (or the close) stays."""
        if self.gave_up_on is not None:
            return
        self.gave_up_on = error or Disconnected(f"disconnected: {reason}")
        self._online.set()
        self._outbox.note_answer()  # whoever waits for the outbox stops waiting
        await self._delivery.pass_on(LinkState(connected=False, reason=reason))

    async def change_password(self, old: str, new: str) -> None:
        """Change the user's password from ``old`` to ``new``; this session stays logged in,
        the user's other sessions are logged out, and reconnects log in with ``new`` from
        then on. Raises PasswordNotChanged with the server's reason if refused, or at once
        (``code`` ``unsupported``) if the server does not let users change their password
        (``features``). Not retried after a reconnect: if the connection drops after the
        request went out and before the answer (LinkLost), the password may or may not have
        changed, and the reconnect logs in with the old one. One change at a time: another
        call while one waits for its answer raises PasswordNotChanged (``in_progress``)."""
        request = requests.change_password(self.features, old, new, logged_in=bool(self.username))
        if self._changing_password:
            raise PasswordNotChanged(CHANGE_IN_PROGRESS, "in_progress")
        self._changing_password = True
        try:
            await self._ask(request)
        finally:
            self._changing_password = False
        if self._reconnector.credentials is not None:
            self._reconnector.credentials = (self._reconnector.credentials[0], new)

    async def mark_read(self, up_to: int, *, room: str = "", peer: str = "") -> bool:
        """The user has read ``room`` (or the direct conversation with ``peer``) up to message id
        ``up_to``: tell the user's other devices, through a server that keeps read markers
        (``features`` lists ``read-markers``). Sent only when it raises the marker known
        (``read_marker``), so calling it for every message shown costs nothing; nothing is sent to
        an older server. Whether it was sent. A marker the connection lost on its way is sent again
        after the reconnect, if the server's listing lacks it. ClientError, keeping and sending
        nothing, for a marker no server could take (an id out of bounds, a name too long), whatever
        the server. Disconnected once the client has given up reconnecting, or is closed."""
        self._fail_if_given_up()  # nothing could be sent any more
        record = self._reads.mark(up_to, room, peer, features=self.features)
        if record is None:
            return False
        if self._logged_in:
            with suppress(ClientError):  # lost with the link: sent again after the reconnect
                await self._send(record)
        return True

    @property
    def _logged_in(self) -> bool:
        """Whether the link has a session: from the login's answer on, also while the login
        is still being finished (``online`` is not said yet), until the link ends."""
        link = self._link
        return link is not None and link.conn.state is State.READY and self.gave_up_on is None

    def read_marker(self, *, room: str = "", peer: str = "") -> int:
        """How far the user has read ``room`` (or the conversation with ``peer``), on any of
        its devices, as far as this client knows: 0 if nothing. After each login the client
        asks the server for the markers (one made with ``events=False`` does not: it knows
        only those set here); ``ReadMarkers`` and ``ReadUpTo`` events say when
        they (or another device's) arrive."""
        return self._reads.get(room, peer)

    def events(self) -> BurstChannel[Event | LinkState]:
        """Everything the server sends (records, without duplicates) and LinkState changes."""
        return self._delivery.events

    async def join(self, room: str) -> list[MemberInfo]:
        """Join (or create) ``room``; returns its members."""
        return await self._ask(requests.join(room))

    async def leave(self, room: str) -> None:
        await self._ask(requests.leave(room))

    async def rooms(self) -> list[RoomInfo]:
        return await self._ask(requests.rooms())

    async def members(self, room: str) -> list[MemberInfo]:
        return await self._ask(requests.members(room))

    async def send_message(
        self, text: str, *, room: str = "", to: str = "", client_id: str = ""
    ) -> str:
        """Queue a message and send it if connected (after the older ones, while the server
        finds those too fast); returns its client id (``client_id``, or a new one). It is
        delivered once even if the connection drops before the server acknowledges it. A
        text longer than the server takes (``max_message_chars``) is refused at once, and
        nothing is sent (MessageTooLong)."""
        client_id = client_id or requests.new_client_id()
        message = Message(text=text, room=room, to=to, client_id=client_id)
        self._fail_if_given_up()
        requests.check_text(text, self.max_message_chars)
        try:
            payload = encode_record(message)  # checked now: the outbox holds what can go
        except LocalProtocolError as exc:
            raise ClientError(f"cannot send this message: {exc}") from None
        self._outbox.messages[client_id] = message
        if self._link is not None and self._online.is_set() and not self._pacing:
            with suppress(ClientError):  # if it fails, it is resent after the reconnect
                await self._queue([(message, payload)])
        return client_id

    @property
    def online(self) -> bool:
        """Whether the session is logged in now (False while it reconnects, and for good
        once the client has given up)."""
        return self._link is not None and self._online.is_set() and self.gave_up_on is None

    @property
    def unacknowledged(self) -> int:
        """Messages sent but not yet stored by the server."""
        return len(self._outbox.messages)

    async def wait_sent(self, timeout: float = SENT_WAIT) -> int:
        """Wait until the server has stored (or refused) every message sent, across
        reconnects too, for ``timeout`` seconds at most or until the client gives up or is
        closed; returns how many are still unconfirmed (0: all are stored). It stops early if
        ``events()`` is full (nobody reads it): the reader then waits, and reads no answer."""
        delivery = self._delivery
        with trio.move_on_after(timeout):
            while self._outbox.messages and self.gave_up_on is None:
                if delivery.keeping_events and delivery.events.queued >= EVENT_BUFFER:
                    break
                with trio.move_on_after(_SENT_POLL):  # the reader may fill events() meanwhile
                    await self._outbox.next_answer()
        return self.unacknowledged

    async def typing(self, active: bool = True, *, room: str = "", to: str = "") -> None:
        await self._send(Typing(room=room, to=to, active=active))

    async def history(
        self, *, room: str = "", peer: str = "", before: int = 0, limit: int = 50
    ) -> tuple[list[Message], bool]:
        """Messages of a room or direct conversation older than ``before`` (0: the newest),
        oldest first, and whether older ones exist."""
        return await self._ask(requests.history(room, peer, before, limit))

    async def files(self, *, room: str = "", peer: str = "") -> list[FileInfo]:
        """The files shared in ``room`` or with ``peer``, in the order they were shared
        (asked for a page at a time)."""
        listing = requests.FileListing(room, peer)
        while listing.request is not None:
            listing.take(await self._ask(listing.request))
        return listing.files

    # --- files ----------------------------------------------------------------------------

    async def send_file(
        self,
        path: AnyPath,
        *,
        room: str = "",
        to: str = "",
        progress: Progress | None = None,
    ) -> FileInfo:
        """Upload ``path``. If the connection drops, it resumes after the reconnect where the
        server's copy stops. If the server still holds the upload for the old connection (its
        side of it may stay open for a minute), it takes the upload over once that has gone
        quiet, and says when: the offer is made again then, up to ``UPLOAD_BUSY_TRIES``
        times in all (one really being sent by another connection keeps it: UploadBusy, a
        TransferFailed). Cancelling the calling task cancels the upload (the server
        discards the part it has). A file over the server's ``max_file_size`` is refused at
        once (TransferFailed), before it is read."""
        path = Path(path)
        size = path.stat().st_size
        requests.check_file_size(size, self.max_file_size)
        digest = await file_sha256(path, size)
        job = Upload(path, size, digest, room, to, progress or no_progress)
        tries, before = 1, None  # before: the ids of the files there before the first wait
        while True:
            try:
                return await self._retrying(partial(self._transfers.upload, job))
            except UploadBusy as busy:  # another connection of ours holds it: it may be dead
                if tries >= requests.UPLOAD_BUSY_TRIES:
                    raise
                tries += 1
                with suppress(ClientError):  # not listed: offered again all the same
                    if before is None:
                        before = {f.file_id for f in await self.files(room=room, peer=to)}
                await trio.sleep(requests.busy_wait(busy))
                with suppress(ClientError):
                    listed = await self.files(room=room, peer=to)
                    done = requests.shared_meanwhile(listed, before or (), size, digest)
                    if done is not None:  # the other connection finished it meanwhile
                        job.progress(size, size)
                        return done

    async def download(
        self,
        file_id: str,
        *,
        progress: Progress | None = None,
        expected: FileInfo | None = None,
    ) -> Path:
        """Fetch a shared file into the downloads folder, resuming a partial one (also after
        a reconnect); returns where it landed once its SHA-256 was checked. ``expected``, the
        file as the user was shown it (its announcement or a listing), is what it must be:
        the server's offer of another size or SHA-256 is refused (TransferFailed)."""
        return await self._retrying(
            partial(self._transfers.download, file_id, progress or no_progress, expected)
        )

    # --- closing --------------------------------------------------------------------------

    async def aclose(self, reason: str = "goodbye") -> None:
        """Say goodbye (``reason``) and close. Messages the server has not stored yet are not
        sent (``wait_sent`` waits for them; leaving ``connect``'s block does so first)."""
        self._closing = True
        self.gave_up_on = self.gave_up_on or Disconnected("the client was closed")
        self._online.set()  # whoever waits for a reconnect gets Disconnected
        link, self._link = self._link, None
        if link is not None:
            await self._say_bye(link, reason, acknowledge=self._delivery.acknowledges)
            link.writer.cancel()
            await link.stream.aclose()

    async def _say_bye(self, link: Link, reason: str, *, acknowledge: bool = False) -> None:
        """Send Bye with ``reason`` (after Delivered for what arrived, with ``acknowledge``)
        and write it out, within 2 s; a link already failing is left as it is."""
        with trio.move_on_after(2):
            try:
                async with link.send_lock:
                    up_to = self._delivery.due() if acknowledge else None
                    if up_to is not None and link.conn.state is State.READY:
                        link.conn.send(Delivered(up_to=up_to))
                    link.conn.send(Bye(reason=reason))
                    await link.flush()
            except (ClientError, ProtocolError):
                pass


@asynccontextmanager
async def connect(host: str, port: int, **options: Any) -> AsyncIterator[ChatClient]:
    """Connect to a server (pinning its key) and yield the client; closes it afterwards.

    Errors come out as themselves, not wrapped in an exception group."""
    try:
        async with trio.open_nursery() as nursery:
            client = ChatClient(host, port, nursery, **options)
            nursery.start_soon(client._delivery.keep_releasing)
            await client._open_link()
            try:
                yield client
                if client.sent_wait and await client.wait_sent(client.sent_wait):
                    log.warning(
                        "%d messages sent were not confirmed by %s before the client closed: "
                        "the server may not have stored them",
                        client.unacknowledged,
                        client.server,
                    )
            finally:
                with trio.CancelScope(shield=True):
                    await client.aclose()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        raise _sole(group) from None


def _sole(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one exception inside nested single-member groups, or the group itself."""
    while len(group.exceptions) == 1:
        inner = group.exceptions[0]
        if not isinstance(inner, BaseExceptionGroup):
            return inner
        group = inner
    return group
