"""The reader thread of the blocking client: it feeds the connection what arrives (and the
time, for its keepalive timer), routes each record to the call waiting for it and each chunk to
its download, and hands the events on; when it ends, every waiting call and download learns
that the connection was lost."""

from __future__ import annotations

import contextlib
import queue
import selectors
import socket
import threading
import time
from typing import Protocol

from sealchat.core import (
    NEED_DATA,
    Connection,
    ConnectionClosed,
    Delivered,
    Event,
    FileChunk,
    FileComplete,
    FileReject,
    Message,
    MessageAck,
    ProtocolError,
    ReadMarkers,
    ReadUpTo,
    Record,
    RoomLeft,
)
from sealchat.transports import requests
from sealchat.transports.blocking_handoff import CallWaiter
from sealchat.transports.blocking_handoff import put_even_if_full as _put_even_if_full
from sealchat.transports.blocking_link import RECEIVE_SIZE
from sealchat.transports.blocking_transfers import Transfers
from sealchat.transports.read_marks import ReadMarks


class Client(Protocol):
    """What the reader uses of the client: its connection, the lock and what it guards (shared
    with the writer and the calls), its transfers, and its events."""

    _conn: Connection
    _sock: socket.socket
    _selector: selectors.BaseSelector
    _lock: threading.Lock
    _output: threading.Condition
    _waiters: list[CallWaiter]
    _failure: str | None
    _stopping: bool
    _newest: int
    _shown: int
    _unshown: set[int]
    _acknowledging: bool
    _keeping_events: bool
    _transfers: Transfers
    _reads: ReadMarks

    def _emit(self, event: Event) -> None: ...

    def _thread_ended(self) -> None: ...


class Reader:
    """The reader thread of one client (``run``), and what it keeps between reads."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._position = 0
        """Records read so far: the position in the stream of the latest (see ``route``)."""
        self._arrived: list[tuple[int, queue.Queue[Record], Record]] = []
        """Chunk records read under the lock, handed to their downloads after it."""
        self._read_events: list[Event] = []
        """Events read under the lock, put on ``events`` after it."""

    def run(self) -> None:
        """The reader thread: feed the connection what arrives, or the time when its timer
        (keepalive) is due, until it closes."""
        client = self._client
        conn, sock, selector = client._conn, client._sock, client._selector
        closed = False
        try:
            while not closed:
                with client._lock:
                    timer = conn.get_timer()
                wait = None if timer is None else max(0.0, timer - time.monotonic())
                readable = selector.select(wait)
                data = b""
                if readable:
                    with contextlib.suppress(OSError):  # as EOF: the connection ends
                        data = sock.recv(RECEIVE_SIZE)
                with client._lock:
                    if readable:
                        conn.receive_data(data)
                    else:  # a ping for a silent server, or the end of one that stays silent
                        conn.handle_timer(time.monotonic())
                    closed = self._drain()
                    client._output.notify()  # pongs, pings, acknowledgements
                    arrived, self._arrived = self._arrived, []
                    read, self._read_events = self._read_events, []
                for transfer, chunks, record in arrived:  # outside the lock: may wait
                    client._transfers.hand_over(transfer, chunks, record)
                for event in read:
                    client._emit(event)
        except ProtocolError as exc:
            self._end(str(exc))
        except BaseException as exc:  # a bug must not leave callers waiting forever
            self._end(f"the client's reader failed: {exc!r}")
            raise
        finally:
            with client._lock:
                requests.lose(client._waiters)
                for chunks in client._transfers.chunks.values():
                    _put_even_if_full(
                        chunks, FileReject(transfer=0, reason="the connection was lost")
                    )
                client._output.notify()  # the writer sends a queued Bye, then ends
            selector.close()
            client._thread_ended()

    def _end(self, reason: str) -> None:
        """The reader stops early: the last event says why, and the writer stops too."""
        client = self._client
        with client._lock:
            client._failure = reason
            client._stopping = True  # the writer sends what is queued (a Bye), then ends
            read, self._read_events = self._read_events, []
        for event in [*read, ConnectionClosed(reason=reason)]:  # stopping: none waits for room
            client._emit(event)

    def _drain(self) -> bool:
        client = self._client
        while True:
            event = client._conn.next_event()
            if event is NEED_DATA:
                return False
            if isinstance(event, Record):
                self._route(event)
                if isinstance(event, FileChunk | FileComplete | FileReject) and (
                    client._transfers.not_for_events(event)
                ):
                    continue
            self._read_events.append(event)
            if isinstance(event, ConnectionClosed):
                client._failure = client._failure or event.reason  # calls still waiting say it
                return True

    def _route(self, record: Record) -> None:
        """Hand ``record`` to whoever waits for it (called under the lock)."""
        client = self._client
        self._position += 1
        requests.route(client._waiters, record, self._position)
        if isinstance(record, FileChunk | FileComplete | FileReject):
            chunks = client._transfers.chunks.get(record.transfer)
            if chunks is not None:
                self._arrived.append((record.transfer, chunks, record))
        elif isinstance(record, ReadUpTo | ReadMarkers):  # where the user's markers are
            client._reads.heard(record)  # nothing to send again: one login per connection
        elif isinstance(record, RoomLeft):  # the server deleted the user's marker there
            client._reads.left(record.room)
        elif isinstance(record, Message | MessageAck):  # our own messages come as acks
            client._newest = max(client._newest, record.id)
            if client._keeping_events:  # until taken from events or in a call's answer
                client._unshown.add(record.id)
        elif client._acknowledging and not client._keeping_events and requests.ends_replay(record):
            # The replay after login: acknowledging a page releases the next one (with events
            # kept, once the user takes its end from them).
            client._conn.send(Delivered(up_to=client._newest))
