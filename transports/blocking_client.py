"""A sealchat client on plain blocking sockets, for scripts that do not use trio.

The constructor connects and runs the handshake on the caller's thread (so the question about
a new server key is asked there, and an answer slower than the server's handshake timeout
leads to a second connection, not a broken one). Then a reader thread feeds the connection and
runs its keepalive timer: replies to this client's requests go to the waiting call, and every
event also goes on ``events`` (a ``queue.Queue`` of EVENT_BUFFER events at most: while it is
full the reader waits); ``ConnectionClosed`` is always the last. Only the messages taken from
``events`` (or that came in a call's answer) are acknowledged, so those still waiting there
when the client closes come again at the next login. A writer thread does all the writing, so
a server that stops reading blocks nobody but it. Requests may be made from any thread.
Unlike the trio client it does not reconnect by itself.

Connecting and the handshake live in ``blocking_link``, the reader thread in
``blocking_reader``, file transfers in ``blocking_transfers``.

Example::

    with BlockingClient("127.0.0.1", 7878, trust=pinned(KnownServers(), "127.0.0.1:7878")) as c:
        c.login("esha", password)
        c.send_message("hello", room="general")
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final, TypeVar

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from sealchat.core import (
    Bye,
    ConnectionClosed,
    Delivered,
    Event,
    FileInfo,
    ListReadMarkers,
    LocalProtocolError,
    MemberInfo,
    Message,
    MessageAck,
    ProtocolError,
    Record,
    RoomInfo,
    State,
    Typing,
)
from sealchat.core.records import CHANGE_IN_PROGRESS, READ_MARKERS
from sealchat.transports import requests
from sealchat.transports.blocking_handoff import CallWaiter as _Waiter
from sealchat.transports.blocking_handoff import TakenQueue
from sealchat.transports.blocking_handoff import put_even_if_full as _put_even_if_full
from sealchat.transports.blocking_handoff import put_while as _put_while
from sealchat.transports.blocking_link import KeyPolicy
from sealchat.transports.blocking_link import connect as _connect
from sealchat.transports.blocking_link import selector_for as _selector_for
from sealchat.transports.blocking_reader import Reader
from sealchat.transports.blocking_transfers import Progress, Transfers
from sealchat.transports.downloads import AnyPath
from sealchat.transports.read_marks import ReadMarks
from sealchat.transports.requests import (
    EVENT_BUFFER,
    REQUEST_TIMEOUT,
    ClientError,
    ConnectionLost,
    PasswordNotChanged,
    Reply,
    Request,
)

E = TypeVar("E")
T = TypeVar("T")
SEND_BUFFER: Final = 256 * 1024
"""Bytes queued for the writer beyond which ``send``/``send_all`` wait for it (for 30 s at
most without progress)."""
CLOSE_TIMEOUT: Final = 2.0
"""Seconds ``close`` gives the writer to send the goodbye."""
_OVER: Final = (State.CLOSED, State.ERROR)


class BlockingClient:
    """One connection to a sealchat server."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        static_key: X25519PrivateKey | None = None,
        trust: KeyPolicy,
        timeout: float = 10.0,
        source_address: tuple[str, int] | None = None,
        acknowledge: bool | None = None,
        events: bool = True,
    ) -> None:
        self.events: queue.Queue[Event] = TakenQueue(self._taken, EVENT_BUFFER)
        self._keeping_events = events
        """Whether events other than ``ConnectionClosed`` go on ``events`` (False: a script
        that only sends, which then never has to take them)."""
        self._events_full = False
        """Whether the reader waits for room on ``events`` (a reply cannot arrive meanwhile)."""
        self._lock = threading.Lock()
        self._output = threading.Condition(self._lock)
        """Notified when bytes are queued for the writer (or it should stop)."""
        self._written = threading.Condition(self._lock)
        """Notified after each write, and when the writer ends."""
        self._writer_done = False
        self._stopping = False
        self._failure: str | None = None
        self._waiters: list[_Waiter] = []
        self._newest = 0
        """The newest message id that arrived (acknowledged as such when events are not
        kept)."""
        self._shown = 0
        """The newest message id taken from ``events`` or that came in a call's answer."""
        self._unshown: set[int] = set()
        """Message ids on ``events`` not taken yet and in no call's answer: none of them is
        acknowledged (a call given up, or a page the message was dropped from, shows
        nothing)."""
        self._acknowledging = events if acknowledge is None else acknowledge
        """Whether to tell the server what arrived (as the trio client's ``acknowledge``; by
        default only when events are kept)."""
        self.conversations: tuple[str, ...] = ()
        """Whom the user has direct messages with, the most recent conversation first, as the
        server said at the login; empty from a server that does not say (protocol §6.6.3)."""
        self.max_file_size = 0
        """The largest file the server accepts, in bytes, as it said at the login (0: not
        said): ``send_file`` refuses a larger one at once, before hashing it."""
        self.max_message_chars = 0
        """The most characters of a message the server takes, as it said at the login (0: not
        said): ``send_message`` refuses a longer one at once (MessageTooLong)."""
        self.features: tuple[str, ...] = ()
        """The optional requests the server takes, as it said at the login (protocol §6.6.3;
        empty from an older server): ``change_password`` needs ``change-password``."""
        self._changing_password = threading.Lock()
        """Held while a change_password call waits for its answer."""
        self._reads = ReadMarks()  # under the lock: the reader notes what the server says
        self._transfers = Transfers(self)
        self._reading = Reader(self)
        self._running = 2
        """Threads (reader, writer) not yet ended; the last one closes the socket, which is
        never closed under a thread still using it (its number could be reused meanwhile)."""
        key = static_key or X25519PrivateKey.generate()
        self._sock, self._conn, established = _connect(
            host, port, key=key, trust=trust, timeout=timeout, source_address=source_address
        )
        try:
            self._selector = _selector_for(self._sock)
        except BaseException:
            self._sock.close()
            raise
        self.server_fingerprint = established.fingerprint
        self._emit(established)
        self._reader = threading.Thread(
            target=self._reading.run, name="sealchat-reader", daemon=True
        )
        self._writer = threading.Thread(target=self._write, name="sealchat-writer", daemon=True)
        self._reader.start()
        self._writer.start()

    def __enter__(self) -> BlockingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- sending --------------------------------------------------------------------------

    def send(self, record: Record) -> None:
        """Queue ``record`` for the writer (see ``send_all``)."""
        self.send_all((record,))

    def send_all(self, records: Iterable[Record], *, wait: bool = True) -> None:
        """Encrypt ``records`` and queue them for the writer, which writes them out in one
        go. With ``wait``, then waits while more than SEND_BUFFER bytes are queued (a server
        that takes nothing for 30 s raises ``ClientError``). A record that breaks a limit
        raises ``ClientError`` before any is queued."""
        self._send_all(records, wait=wait)

    def _send_all(
        self, records: Iterable[Record], *, wait: bool, expecting: _Waiter | None = None
    ) -> None:
        """``send_all``; with ``expecting``, that waiter is added in the same step as the
        records are queued (if they are), so that waiters are in the order their requests
        went out (the server answers in that order, and a reply goes to the oldest waiter it
        fits)."""
        encoded = requests.checked(records)
        with self._lock:
            self._require_open()
            try:
                for record, payload in encoded:
                    self._conn.send(record, encoded=payload)
            except LocalProtocolError as exc:  # not allowed now (a Message before the login)
                raise ClientError(f"cannot send this: {exc}") from None
            except BaseException:  # Ctrl-C inside the encryption: the nonces may be off
                self._conn.send_failed()
                self._failure = "interrupted while sending"
                raise
            else:
                if expecting is not None:  # the reader routes under this lock: none came yet
                    self._waiters.append(expecting)
            finally:
                self._output.notify()  # what was queued goes now, whatever came after it
            while wait and self._conn.bytes_to_send > SEND_BUFFER:
                if not self._written.wait(REQUEST_TIMEOUT):
                    raise ClientError(f"the server took nothing we sent for {REQUEST_TIMEOUT:g} s")
                self._require_open()

    def _require_open(self) -> None:
        if self._conn.state in _OVER or self._writer_done:
            raise ConnectionLost(f"the connection is closed: {self._failure or 'it ended'}")

    def _write(self) -> None:
        """The writer thread: whatever is queued, in one write per wake-up, until the
        connection is over and everything is out (or a write fails); then the socket is shut,
        which ends the reader too."""
        conn = self._conn
        try:
            while True:
                with self._lock:
                    while not conn.bytes_to_send and not self._over():
                        self._output.wait()
                    data = conn.data_to_send()
                view = memoryview(data)
                for start in range(0, len(view), SEND_BUFFER):  # progress shows per slice
                    try:
                        self._sock.sendall(view[start : start + SEND_BUFFER])
                    except OSError as exc:
                        with self._lock:
                            conn.send_failed()
                            self._failure = self._failure or f"could not write: {exc}"
                        return
                    with self._lock:
                        self._written.notify_all()
                with self._lock:
                    if self._over() and not conn.bytes_to_send:
                        return
        finally:
            with self._lock:
                self._writer_done = True
                self._written.notify_all()
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._thread_ended()

    def _thread_ended(self) -> None:
        with self._lock:
            self._running -= 1
            last = not self._running
        if last:
            self._sock.close()

    def _over(self) -> bool:
        return self._stopping or self._conn.state in _OVER

    def close(self, reason: str = "goodbye") -> None:
        """Say Bye if the session is open (after telling the server what arrived), give the
        writer CLOSE_TIMEOUT seconds to send it, then close the socket."""
        with self._lock:
            if not self._over() and not self._writer_done:
                with contextlib.suppress(ProtocolError):
                    if self._acknowledging and (shown := self._acknowledgeable()):
                        self._conn.send(Delivered(up_to=shown))  # need not be replayed
                    self._conn.send(Bye(reason=reason))
                self._output.notify()
            deadline = time.monotonic() + CLOSE_TIMEOUT
            while self._conn.bytes_to_send and not self._writer_done:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._written.wait(left)
            self._stopping = True
            self._output.notify()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)  # also ends a write the server never takes
        for thread in (self._reader, self._writer):
            if thread is not threading.current_thread():
                thread.join(timeout=5)  # the last of them closes the socket

    # --- receiving ------------------------------------------------------------------------

    def _emit(self, event: Event) -> None:
        """Put ``event`` on ``events`` (if they are kept), waiting while EVENT_BUFFER are
        unread; once the client closes, without waiting (beyond the bound: an event read may
        have been acknowledged already). ``ConnectionClosed`` always goes on."""
        if isinstance(event, ConnectionClosed):
            _put_even_if_full(self.events, event)
        elif self._keeping_events:
            self._events_full = self.events.full()
            if not _put_while(self.events, event, lambda: not self._stopping):  # a flag set once
                _put_even_if_full(self.events, event)  # read (maybe acknowledged): never lost
            self._events_full = False

    def _taken(self, event: Event) -> None:
        """Note that the user took ``event`` from ``events``; taking the end of a replay page
        acknowledges what was shown, which asks the server for the next page."""
        with self._lock:
            if isinstance(event, Message | MessageAck):
                self._note_shown(event)
            elif self._acknowledging and requests.ends_replay(event) and not self._over():
                with contextlib.suppress(ProtocolError):
                    self._conn.send(Delivered(up_to=self._acknowledgeable()))
                self._output.notify()

    def _note_shown(self, record: Message | MessageAck) -> None:
        """``record`` was shown: taken from ``events`` or in a call's answer (under the lock)."""
        self._unshown.discard(record.id)
        self._shown = max(self._shown, record.id)

    def _acknowledgeable(self) -> int:
        """The newest message id that may be acknowledged (called under the lock): what
        arrived if events are not kept, else what was shown up to the oldest still unshown
        (what waits on ``events`` when the client closes comes again at the next login)."""
        if not self._keeping_events:
            return self._newest
        if self._unshown:
            return min(self._shown, min(self._unshown) - 1)
        return self._shown

    def next_event(self, timeout: float = 10.0) -> Event:
        """The next event; TimeoutError if none arrives in time."""
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no event within {timeout} s") from None

    def next(self, kind: type[E], timeout: float = 10.0) -> E:
        """Wait for the next event of type ``kind``, dropping others before it;
        ConnectionLost if the connection closes first."""
        deadline = time.monotonic() + timeout
        while True:
            event = self.next_event(max(0.0, deadline - time.monotonic()))
            if isinstance(event, kind):
                return event
            if isinstance(event, ConnectionClosed):
                raise ConnectionLost(f"connection closed: {event.reason}")

    # --- requests -------------------------------------------------------------------------

    def _expect(self, reply: Reply[T]) -> _Waiter:
        waiter = _Waiter(reply)
        with self._lock:
            self._waiters.append(waiter)
        return waiter

    def _forget(self, waiter: _Waiter) -> None:
        with self._lock:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def _wait(self, waiter: _Waiter, timeout: float = REQUEST_TIMEOUT) -> Any:
        try:
            if not waiter.finished.wait(timeout):
                if self._events_full:
                    raise ClientError(
                        f"no answer within {timeout:g} s: {EVENT_BUFFER:,} events are waiting "
                        "on `events` and the client reads nothing more until some are taken "
                        "(a client that only sends can be made with events=False)"
                    )
                raise ClientError(f"the server did not answer within {timeout:g} s")
        finally:
            with self._lock:  # if timed out or interrupted: its reply answers no other
                requests.abandon(self._waiters, waiter)
        if waiter.lost:
            raise ConnectionLost(f"the connection closed: {self._failure or 'it ended'}")
        records = waiter.collected()
        with self._lock:
            for record in records:
                if isinstance(record, Message | MessageAck):
                    self._note_shown(record)
        return waiter.reply.result(records)

    def ask(self, request: Request[T], timeout: float = REQUEST_TIMEOUT) -> T:
        """Send ``request`` and wait for its reply."""
        waiter = _Waiter(request.reply)
        self._send_all((request.record,), wait=False, expecting=waiter)  # waits for the reply only
        result: T = self._wait(waiter, timeout)
        return result

    # --- the session ----------------------------------------------------------------------

    def login(
        self, username: str, password: str, *, register: bool = False, announce: bool = True
    ) -> str:
        """Log in (or register); returns the canonical user name, raises LoginFailed with the
        server's reason if refused. ``announce=False`` logs in quietly: the session gets the
        user's messages but does not make the user appear online (no Presence). Sets
        ``conversations``, ``max_file_size``, ``max_message_chars`` and ``features`` as the
        server says them. With events kept, from a server that keeps read markers, it then
        asks for the user's markers (``ReadMarkers`` on ``events``), and for those the user's
        other sessions set from then on (``ReadUpTo``)."""
        request = requests.login(username, password, register=register, announce=announce)
        authenticated = self.ask(request)
        self.conversations = authenticated.conversations
        self.max_file_size = authenticated.max_file_size
        self.max_message_chars = authenticated.max_message_chars
        self.features = authenticated.features
        if READ_MARKERS in self.features and self._keeping_events:
            with self._lock:  # nothing to send again: one login per connection
                self._reads.after_login()
            self.send(ListReadMarkers())
        return authenticated.username

    def change_password(self, old: str, new: str) -> None:
        """Change the user's password from ``old`` to ``new``; this session stays logged in,
        the user's other sessions are logged out. Raises PasswordNotChanged with the
        server's reason if refused, or at once (``code`` ``unsupported``) if the server does
        not let users change their password (``features``). One change at a time: another
        call while one waits for its answer raises PasswordNotChanged (``in_progress``)."""
        logged_in = self._conn.state is not State.LOGIN
        request = requests.change_password(self.features, old, new, logged_in=logged_in)
        if not self._changing_password.acquire(blocking=False):
            raise PasswordNotChanged(CHANGE_IN_PROGRESS, "in_progress")
        try:
            self.ask(request)
        finally:
            self._changing_password.release()

    def mark_read(self, up_to: int, *, room: str = "", peer: str = "") -> bool:
        """The user has read ``room`` (or the direct conversation with ``peer``) up to message
        id ``up_to``: tell the user's other devices, through a server that keeps read markers
        (``features`` lists ``read-markers``). Sent only when it raises the marker known
        (``read_marker``); nothing is sent to an older server. Whether it was sent.
        ClientError, keeping and sending nothing, for a marker no server could take (an id
        out of bounds, a name too long), whatever the server."""
        with self._lock:
            record = self._reads.mark(up_to, room, peer, features=self.features)
        if record is None:
            return False
        self.send(record)
        return True

    def read_marker(self, *, room: str = "", peer: str = "") -> int:
        """How far the user has read ``room`` (or the conversation with ``peer``), on any of
        its devices, as far as this client knows: 0 if nothing. With events kept, the
        client asks the server for the markers at the login (``ReadMarkers`` and
        ``ReadUpTo`` events say when they, or another device's, arrive)."""
        with self._lock:
            return self._reads.get(room, peer)

    def join(self, room: str) -> list[MemberInfo]:
        return self.ask(requests.join(room))

    def leave(self, room: str) -> None:
        self.ask(requests.leave(room))

    def rooms(self) -> list[RoomInfo]:
        return self.ask(requests.rooms())

    def members(self, room: str) -> list[MemberInfo]:
        return self.ask(requests.members(room))

    def history(
        self, *, room: str = "", peer: str = "", before: int = 0, limit: int = 50
    ) -> tuple[list[Message], bool]:
        return self.ask(requests.history(room, peer, before, limit))

    def files(self, *, room: str = "", peer: str = "") -> list[FileInfo]:
        """The files shared in ``room`` or with ``peer``, in the order they were shared
        (asked for a page at a time)."""
        listing = requests.FileListing(room, peer)
        while listing.request is not None:
            listing.take(self.ask(listing.request))
        return listing.files

    def send_message(
        self, text: str, *, room: str = "", to: str = "", client_id: str = ""
    ) -> MessageAck:
        """Send a message and wait until the server has stored it. ``client_id`` (default: a
        new one) names it: sent again with the same one, also from another connection, it is
        stored once, and the answer is the first one's acknowledgement. A text longer than
        the server takes (``max_message_chars``) is refused at once, and nothing is sent
        (MessageTooLong)."""
        requests.check_text(text, self.max_message_chars)
        client_id = client_id or requests.new_client_id()
        request = requests.message(Message(text=text, room=room, to=to, client_id=client_id))
        return self.ask(request)

    def typing(self, active: bool = True, *, room: str = "", to: str = "") -> None:
        self.send(Typing(room=room, to=to, active=active))

    def send_file(
        self, path: AnyPath, *, room: str = "", to: str = "", progress: Progress | None = None
    ) -> FileInfo:
        """Upload ``path`` (resuming where the server's copy stops). If the server refuses it
        midway, the upload stops there and raises TransferFailed with the server's reason; a
        file over ``max_file_size`` is refused so at once, before it is read. If another
        connection of the user holds the upload (an earlier one, dead on this side but still
        open on the server's), the server takes it over once that has gone quiet and says
        when: the offer is made again then, up to ``UPLOAD_BUSY_TRIES`` times in all (then
        UploadBusy, a TransferFailed)."""
        return self._transfers.send_file(Path(path), room=room, to=to, progress=progress)

    def download(
        self,
        file_id: str,
        folder: AnyPath,
        *,
        progress: Progress | None = None,
        expected: FileInfo | None = None,
    ) -> Path:
        """Fetch a shared file into ``folder`` (resuming a partial one); returns its path once
        the SHA-256 matched. ``expected``, the file as the user was shown it (its announcement
        or a listing), is what it must be: the server's offer of another size or SHA-256 is
        refused (TransferFailed).

        ``progress`` runs on the calling thread between chunks and must not make requests on
        this client: while it runs, at most 32 chunks wait for it, then the reader waits too
        (so a reply it asked for could not arrive)."""
        return self._transfers.download(file_id, Path(folder), progress=progress, expected=expected)
