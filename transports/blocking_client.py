"""A sealchat client on plain blocking sockets, for scripts that do not use trio.

A reader thread feeds the connection: replies to this client's requests go to the waiting
call, and every event also goes on ``events`` (a ``queue.Queue``); ``ConnectionClosed`` is
always the last. Requests may be made from any thread. Unlike the trio client it does not
reconnect by itself.

Example::

    with BlockingClient("127.0.0.1", 7878, trust=pinned(KnownServers(), "127.0.0.1:7878")) as c:
        c.login("esha", password)
        c.send_message("hello", room="general")
"""

from __future__ import annotations

import contextlib
import itertools
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from sealchat.core import (
    NEED_DATA,
    Bye,
    Connection,
    ConnectionClosed,
    Delivered,
    Event,
    FileChunk,
    FileComplete,
    FileInfo,
    FileOffer,
    FileReject,
    HistoryEnd,
    KeysEstablished,
    LocalProtocolError,
    MemberInfo,
    Message,
    MessageAck,
    PeerKeyReceived,
    ProtocolError,
    Record,
    Role,
    RoomInfo,
    State,
    Typing,
)
from sealchat.core.records import file_chunks
from sealchat.transports import requests
from sealchat.transports.downloads import PartialDownload, sha256_of
from sealchat.transports.pinning import ServerKeyChanged, ServerKeyUnknown
from sealchat.transports.requests import (
    TRANSFER_BLOCK,
    TRANSFER_QUEUE,
    ClientError,
    Reply,
    Request,
    TransferFailed,
)

E = TypeVar("E")
T = TypeVar("T")
REQUEST_TIMEOUT = 30.0
Progress = Callable[[int, int], None]
KeyPolicy = Callable[[PeerKeyReceived], bool]
"""Decides whether to trust the server key shown (True: go on; False: hang up)."""


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
        acknowledge: bool = True,
    ) -> None:
        self.events: queue.Queue[Event] = queue.Queue()
        self._conn = Connection(
            Role.CLIENT, static_key=static_key or X25519PrivateKey.generate(), now=time.monotonic()
        )
        self._lock = threading.Lock()
        self._trust = trust
        self._established = threading.Event()
        self._failure: str | None = None
        self._refusal: Exception | None = None
        self._server_fingerprint = ""
        self._waiters: list[_Waiter] = []
        self._newest = 0
        self._acknowledging = acknowledge
        """Whether to tell the server what arrived (as the trio client's ``acknowledge``)."""
        self._transfers = itertools.count(1)
        self._chunks: dict[int, queue.Queue[Record]] = {}
        self._arrived: list[tuple[queue.Queue[Record], Record]] = []
        """Chunk records read under the lock, handed to their downloads after it."""
        try:
            self._sock = socket.create_connection(
                (host, port), timeout=timeout, source_address=source_address
            )
        except OSError as exc:
            raise ClientError(f"cannot reach {host}:{port}: {exc.strerror or exc}") from None
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock.settimeout(None)
        with self._lock:
            self._conn.initiate()
            self._flush()
        self._reader = threading.Thread(target=self._read, name="sealchat-reader", daemon=True)
        self._reader.start()
        established = self._established.wait(timeout)
        if not established or self._refusal is not None or self._failure is not None:
            self.close()
            if self._refusal is not None:
                raise self._refusal
            raise ClientError(self._failure or "the handshake did not finish in time")
        self.server_fingerprint = self._server_fingerprint

    def __enter__(self) -> BlockingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- sending --------------------------------------------------------------------------

    def send(self, record: Record) -> None:
        """Encrypt and write ``record`` now."""
        self.send_all((record,))

    def send_all(self, records: Iterable[Record]) -> None:
        """Encrypt ``records`` and write them out in one go."""
        with self._lock:
            if self._conn.state in (State.CLOSED, State.ERROR):
                raise ClientError(f"the connection is closed: {self._failure or 'it ended'}")
            for record in records:
                try:
                    self._conn.send(record)
                except LocalProtocolError as exc:  # a record that breaks a limit
                    raise ClientError(f"cannot send this: {exc}") from None
            self._flush()

    def _flush(self) -> None:
        data = self._conn.data_to_send()
        if data:
            try:
                self._sock.sendall(data)
            except OSError:
                self._conn.send_failed()
                raise

    def close(self, reason: str = "goodbye") -> None:
        """Say Bye if the session is open, then close the socket."""
        with self._lock:
            with contextlib.suppress(ProtocolError, OSError):
                if self._newest and self._acknowledging:  # need not be replayed next time
                    self._conn.send(Delivered(up_to=self._newest))
                self._conn.send(Bye(reason=reason))
                self._flush()
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
        self._reader.join(timeout=5)
        self._sock.close()

    # --- receiving ------------------------------------------------------------------------

    def _read(self) -> None:
        conn = self._conn
        closed = False
        try:
            while not closed:
                try:
                    data = self._sock.recv(65536)
                except OSError:
                    data = b""
                with self._lock:
                    conn.receive_data(data)
                    closed = self._drain()
                    self._flush()
                    arrived, self._arrived = self._arrived, []
                for chunks, record in arrived:  # outside the lock: a full queue waits here
                    chunks.put(record)
        except (ProtocolError, OSError) as exc:
            self._failure = str(exc)
            self.events.put(ConnectionClosed(reason=str(exc)))
        finally:
            self._established.set()
            with self._lock:
                for waiter in self._waiters:
                    waiter.lost = True
                    waiter.finished.set()
                self._waiters.clear()
                for chunks in self._chunks.values():
                    _put_last(chunks, FileReject(transfer=0, reason="the connection was lost"))

    def _drain(self) -> bool:
        while True:
            event = self._conn.next_event()
            if event is NEED_DATA:
                return False
            if isinstance(event, PeerKeyReceived):
                self._server_fingerprint = event.fingerprint
                try:
                    trusted = self._trust(event)
                except (ServerKeyChanged, ServerKeyUnknown) as exc:
                    self._refusal, trusted = exc, False
                if trusted:
                    self._conn.accept_peer()
                else:
                    reason = f"the server key {event.fingerprint} is not trusted"
                    self._conn.reject_peer(reason)
                    self._failure = reason
                continue
            if isinstance(event, Record):
                self._route(event)
                if isinstance(event, FileChunk | FileComplete) and event.transfer in self._chunks:
                    continue
            if isinstance(event, KeysEstablished):
                self._established.set()
            self.events.put(event)
            if isinstance(event, ConnectionClosed):
                self._established.set()
                return True

    def next_event(self, timeout: float = 10.0) -> Event:
        """The next event; TimeoutError if none arrives in time."""
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no event within {timeout} s") from None

    def next(self, kind: type[E], timeout: float = 10.0) -> E:
        """Wait for the next event of type ``kind``, dropping others before it; ClientError
        if the connection closes first."""
        deadline = time.monotonic() + timeout
        while True:
            event = self.next_event(max(0.0, deadline - time.monotonic()))
            if isinstance(event, kind):
                return event
            if isinstance(event, ConnectionClosed):
                raise ClientError(f"connection closed: {event.reason}")

    # --- requests -------------------------------------------------------------------------

    def _route(self, record: Record) -> None:
        """Hand ``record`` to whoever waits for it (called under the lock)."""
        for waiter in list(self._waiters):
            if waiter.reply.match(record):
                waiter.records.append(record)
                if waiter.reply.done(record):
                    self._waiters.remove(waiter)
                    waiter.finished.set()
        if isinstance(record, FileChunk | FileComplete | FileReject):
            chunks = self._chunks.get(record.transfer)
            if chunks is not None:
                self._arrived.append((chunks, record))
        elif isinstance(record, Message):
            self._newest = max(self._newest, record.id)
        elif self._acknowledging and _ends_replay(record):
            # The replay after login: acknowledging a page releases the next one.
            self._conn.send(Delivered(up_to=self._newest))

    def _expect(self, reply: Reply[T]) -> _Waiter:
        waiter = _Waiter(reply)
        with self._lock:
            self._waiters.append(waiter)
        return waiter

    def _wait(self, waiter: _Waiter, timeout: float = REQUEST_TIMEOUT) -> Any:
        try:
            if not waiter.finished.wait(timeout):
                raise ClientError(f"the server did not answer within {timeout:g} s")
        finally:
            with self._lock:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        if waiter.lost:
            raise ClientError(f"the connection closed: {self._failure or 'by the server'}")
        return waiter.reply.result(waiter.records)

    def ask(self, request: Request[T], timeout: float = REQUEST_TIMEOUT) -> T:
        """Send ``request`` and wait for its reply."""
        waiter = self._expect(request.reply)
        self.send(request.record)
        result: T = self._wait(waiter, timeout)
        return result

    # --- the session ----------------------------------------------------------------------

    def login(self, username: str, password: str, *, register: bool = False) -> str:
        """Log in (or register); returns the canonical user name, raises LoginFailed with the
        server's reason if refused."""
        return self.ask(requests.login(username, password, register=register))

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
        return self.ask(requests.files(room, peer))

    def send_message(self, text: str, *, room: str = "", to: str = "") -> MessageAck:
        """Send a message and wait until the server has stored it."""
        client_id = requests.new_client_id()
        request = requests.message(Message(text=text, room=room, to=to, client_id=client_id))
        return self.ask(request)

    def typing(self, active: bool = True, *, room: str = "", to: str = "") -> None:
        self.send(Typing(room=room, to=to, active=active))

    def send_file(
        self, path: Path, *, room: str = "", to: str = "", progress: Progress | None = None
    ) -> FileInfo:
        """Upload ``path`` (resuming where the server's copy stops)."""
        data_size = path.stat().st_size
        digest = sha256_of(path)
        transfer = next(self._transfers)
        offer = FileOffer(
            transfer=transfer, name=path.name, size=data_size, sha256=digest, room=room, to=to
        )
        accept = self.ask(requests.upload(offer))
        outcome = requests.announced(accept.file_id, transfer)
        waiter = self._expect(outcome)
        offset = accept.offset
        with open(path, "rb") as source:
            source.seek(offset)
            while offset < data_size:
                block = source.read(min(TRANSFER_BLOCK, data_size - offset))
                if not block:
                    raise TransferFailed(f"{path} shrank while it was being sent")
                self.send_all(file_chunks(transfer, offset, block))
                offset += len(block)
                if progress is not None:
                    progress(offset, data_size)
        self.send(FileComplete(transfer=transfer, sha256=digest))
        info: FileInfo = self._wait(waiter)
        return info

    def download(self, file_id: str, folder: Path, *, progress: Progress | None = None) -> Path:
        """Fetch a shared file into ``folder`` (resuming a partial one); returns its path once
        the SHA-256 matched.

        ``progress`` runs on the calling thread between chunks and must not make requests on
        this client: while it runs, at most 32 chunks wait for it, then the reader waits too
        (so a reply it asked for could not arrive)."""
        transfer = next(self._transfers)
        chunks: queue.Queue[Record] = queue.Queue(TRANSFER_QUEUE)
        with self._lock:  # the reader may be going through the downloads
            self._chunks[transfer] = chunks
        try:
            with PartialDownload(folder, file_id) as target:
                offer = self.ask(requests.download(transfer, file_id, target.size))
                target.expect(offer.size)  # no byte beyond it
                while True:
                    try:
                        record = chunks.get(timeout=REQUEST_TIMEOUT)
                    except queue.Empty:
                        raise TransferFailed(
                            "the download stalled; try again to resume it"
                        ) from None
                    if isinstance(record, FileComplete):
                        return target.finish(offer.name, offer.sha256)
                    if isinstance(record, FileReject):
                        raise TransferFailed(record.reason)
                    assert isinstance(record, FileChunk)
                    target.write(record.offset, record.data)
                    if progress is not None:
                        progress(target.size, offer.size)
        except (ValueError, OSError) as exc:  # a bad id, a chunk out of place, a wrong hash
            raise TransferFailed(str(exc)) from None
        finally:
            with self._lock:
                del self._chunks[transfer]
            with contextlib.suppress(queue.Empty):  # let a reader waiting on a full queue on
                while True:
                    chunks.get_nowait()


def _put_last(chunks: queue.Queue[Record], record: Record) -> None:
    """Queue ``record`` without waiting: if the queue is full, it replaces the newest chunk,
    so the download reads what came before, then ``record`` (it fails anyway)."""
    with chunks.mutex:  # the queue's own lock: nothing else changes it meanwhile
        if chunks.maxsize and len(chunks.queue) >= chunks.maxsize:
            chunks.queue.pop()
        chunks.queue.append(record)
        chunks.not_empty.notify()


class _Waiter:
    def __init__(self, reply: Reply[Any]) -> None:
        self.reply = reply
        self.records: list[Record] = []
        self.finished = threading.Event()
        self.lost = False


def _ends_replay(record: Record) -> bool:
    """Whether ``record`` ends a page of the replay after login."""
    return isinstance(record, HistoryEnd) and not (record.room or record.peer)
