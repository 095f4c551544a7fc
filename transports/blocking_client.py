"""A sealchat client on plain blocking sockets, for scripts that do not use trio.

A reader thread feeds the connection and puts every event on ``events`` (a ``queue.Queue``);
``send`` may be called from any thread. ``ConnectionClosed`` is always the last event.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from sealchat.core import (
    NEED_DATA,
    Authenticated,
    Bye,
    Connection,
    ConnectionClosed,
    Event,
    KeysEstablished,
    Login,
    LoginRejected,
    PeerKeyReceived,
    ProtocolError,
    Record,
    Register,
    Role,
)

E = TypeVar("E")
KeyPolicy = Callable[[PeerKeyReceived], bool]
"""Decides whether to trust the server key shown (True: go on; False: hang up)."""


class ClientError(Exception):
    """The connection could not be made, or was refused."""


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
    ) -> None:
        self.events: queue.Queue[Event] = queue.Queue()
        self._conn = Connection(
            Role.CLIENT, static_key=static_key or X25519PrivateKey.generate(), now=time.monotonic()
        )
        self._lock = threading.Lock()
        self._trust = trust
        self._established = threading.Event()
        self._failure: str | None = None
        self._server_fingerprint = ""
        try:
            self._sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise ClientError(f"cannot reach {host}:{port}: {exc.strerror or exc}") from None
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock.settimeout(None)
        with self._lock:
            self._conn.initiate()
            self._flush()
        self._reader = threading.Thread(target=self._read, name="sealchat-reader", daemon=True)
        self._reader.start()
        if not self._established.wait(timeout):
            self.close()
            raise ClientError("the handshake did not finish in time")
        if self._failure is not None:
            raise ClientError(self._failure)
        self.server_fingerprint = self._server_fingerprint

    def __enter__(self) -> BlockingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- sending --------------------------------------------------------------------------

    def send(self, record: Record) -> None:
        """Encrypt and write ``record`` now."""
        with self._lock:
            self._conn.send(record)
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
        except (ProtocolError, OSError) as exc:
            self._failure = str(exc)
            self.events.put(ConnectionClosed(reason=str(exc)))
        finally:
            self._established.set()

    def _drain(self) -> bool:
        while True:
            event = self._conn.next_event()
            if event is NEED_DATA:
                return False
            if isinstance(event, PeerKeyReceived):
                self._server_fingerprint = event.fingerprint
                if self._trust(event):
                    self._conn.accept_peer()
                else:
                    reason = f"the server key {event.fingerprint} is not trusted"
                    self._conn.reject_peer(reason)
                    self._failure = reason
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

    # --- sessions -------------------------------------------------------------------------

    def login(self, username: str, password: str, *, register: bool = False) -> str:
        """Log in (or register); returns the canonical user name, raises ClientError with the
        server's reason if refused."""
        record = Register if register else Login
        self.send(record(username=username, password=password))
        while True:
            event = self.next_event()
            if isinstance(event, Authenticated):
                return event.username
            if isinstance(event, LoginRejected):
                raise ClientError(event.reason)
            if isinstance(event, ConnectionClosed):
                raise ClientError(f"connection closed: {event.reason}")
