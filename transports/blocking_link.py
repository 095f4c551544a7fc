"""Opening a connection of the blocking client: TCP, the handshake on the caller's thread
(with the decision on the server's key, asked again on a new connection if it was slow), and
the selector its reader watches the socket with.

The client built on it (``blocking_client``) runs the reader and writer threads.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import time
from collections.abc import Callable
from typing import Final

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from sealchat.core import (
    NEED_DATA,
    Connection,
    ConnectionClosed,
    KeysEstablished,
    PeerKeyReceived,
    ProtocolError,
    Role,
)
from sealchat.transports.pinning import server_name
from sealchat.transports.requests import (
    NOT_A_HOST_NAME,
    TURNED_AWAY,
    ClientError,
    ConnectionLost,
    Unreachable,
    explain_handshake_error,
    no_handshake,
    unreachable,
)

SLOW_TRUST: Final = 2.0
"""Seconds ``trust`` may take before the client connects again once it said yes: someone was
asked, and the server gives a handshake 10 s (a policy like ``pinned`` has pinned the key by
then, so nobody is asked twice)."""
RECEIVE_SIZE: Final = 256 * 1024
KeyPolicy = Callable[[PeerKeyReceived], bool]
"""Decides whether to trust the server key shown (True: go on; False: hang up)."""


def connect(
    host: str,
    port: int,
    *,
    key: X25519PrivateKey,
    trust: KeyPolicy,
    timeout: float,
    source_address: tuple[str, int] | None,
) -> tuple[socket.socket, Connection, KeysEstablished]:
    """A connected socket and its open connection, the handshake done on this thread. If
    ``trust`` said yes after SLOW_TRUST seconds, the server may have given up meanwhile: the
    client connects once more, and that key is not asked about again."""
    accepted: list[str] = []  # a key trusted on a first, slow try is not asked about again

    def decide(event: PeerKeyReceived) -> bool:
        if event.fingerprint in accepted:
            return True
        if trust(event):
            accepted.append(event.fingerprint)
            return True
        return False

    for last in (False, True):
        try:
            sock = socket.create_connection(
                (host, port), timeout=timeout, source_address=source_address
            )
        except OSError as exc:
            raise Unreachable(unreachable(server_name(host, port), exc.strerror or exc)) from None
        except UnicodeError:
            raise Unreachable(unreachable(server_name(host, port), NOT_A_HOST_NAME)) from None
        try:
            with contextlib.suppress(OSError):  # a reset already: the handshake says so
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            opened = _handshake(sock, key, decide, timeout, retry_if_slow=not last)
        except _TimedOut:
            sock.close()
            raise Unreachable(no_handshake(server_name(host, port))) from None
        except BaseException:
            sock.close()
            raise
        if opened is not None:
            sock.settimeout(None)
            return sock, *opened
        sock.close()
    raise AssertionError("unreachable: the last attempt does not retry")


def selector_for(sock: socket.socket) -> selectors.BaseSelector:
    """A selector watching ``sock`` for reading (not select(): it fails for fds past 1023);
    ClientError if the system refuses one (no descriptor left, say)."""
    selector = None
    try:
        selector = selectors.DefaultSelector()
        selector.register(sock, selectors.EVENT_READ)
    except OSError as exc:
        if selector is not None:
            selector.close()
        raise ClientError(f"cannot watch the connection: {exc.strerror or exc}") from None
    return selector


def _handshake(
    sock: socket.socket,
    key: X25519PrivateKey,
    trust: KeyPolicy,
    timeout: float,
    *,
    retry_if_slow: bool,
) -> tuple[Connection, KeysEstablished] | None:
    """Run the handshake over ``sock``: ``timeout`` seconds for each network phase, as long
    as ``trust`` needs for its decision; None if that took so long that a new connection is
    wiser (with ``retry_if_slow``)."""
    conn = Connection(Role.CLIENT, static_key=key, now=time.monotonic())
    conn.initiate()
    deadline = time.monotonic() + timeout
    heard = 0
    try:
        while True:
            _handshake_io(sock, conn, None)
            event = conn.next_event()
            if event is NEED_DATA:
                heard += _handshake_io(sock, conn, deadline)
            elif isinstance(event, PeerKeyReceived):
                asked = time.monotonic()
                if not trust(event):  # its own errors (ServerKeyChanged…) come out as they are
                    conn.reject_peer(f"the server key {event.fingerprint} is not trusted")
                    raise ClientError(f"the server key {event.fingerprint} is not trusted")
                if retry_if_slow and time.monotonic() - asked > SLOW_TRUST:
                    return None
                conn.accept_peer()
                deadline = time.monotonic() + timeout
            elif isinstance(event, KeysEstablished):
                _handshake_io(sock, conn, None)  # handshake message 3
                return conn, event
            elif isinstance(event, ConnectionClosed):
                raise ConnectionLost(f"the server closed the connection: {event.reason}")
    except ProtocolError as exc:
        raise ClientError(explain_handshake_error(str(exc))) from None
    except _HungUp:
        if heard:
            raise
        raise ConnectionLost(TURNED_AWAY) from None


class _HungUp(ConnectionLost):
    """A handshake message could not be written: the server has closed the connection."""


class _TimedOut(ClientError):
    """The server did not send its part of the handshake in time."""


def _handshake_io(sock: socket.socket, conn: Connection, deadline: float | None) -> int:
    """Write what ``conn`` has queued; with a ``deadline``, read what comes by then instead,
    and return how many bytes came. Socket errors become ``ClientError``."""
    try:
        if deadline is None:
            try:
                sock.sendall(conn.data_to_send())
            except (BrokenPipeError, ConnectionResetError) as exc:
                raise _HungUp(f"the connection failed during the handshake: {exc}") from None
            return 0
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        sock.settimeout(left)
        try:
            data = sock.recv(RECEIVE_SIZE)
        except ConnectionResetError:
            data = b""  # the end of the stream as much as a FIN is: the core says which end
        conn.receive_data(data)
        return len(data)
    except TimeoutError:
        raise _TimedOut("the handshake did not finish in time") from None
    except OSError as exc:
        raise ClientError(f"the connection failed during the handshake: {exc}") from None
