"""What a server's socket still holds of what was written to it: the part of a slow reader's
output that the keepalive cannot see in the connection, and that both servers count as on its
way while the peer keeps taking it (docs/protocol.md, 8.5).

Written bytes leave the program as soon as the socket's send buffer takes them, and that
buffer grows to megabytes (2.8 MB on Linux's loopback): a peer reading 4 KB/s has minutes of
output there, ahead of any Ping written after it.
"""

from __future__ import annotations

import sys
from typing import Protocol


class Socket(Protocol):
    """What ``unacknowledged`` uses of a socket (a ``socket.socket`` or a trio socket)."""

    def fileno(self) -> int: ...

    def getsockopt(self, level: int, optname: int, /) -> int: ...


if sys.platform == "linux":
    import fcntl
    import termios

    def unacknowledged(sock: Socket) -> int | None:
        """Bytes written to ``sock`` that its peer has not acknowledged yet (SIOCOUTQ, the
        same request as TIOCOUTQ), or None if the socket cannot tell (closed)."""
        try:
            answer = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, bytes(4))
        except (OSError, ValueError):
            return None
        return int.from_bytes(answer, sys.byteorder, signed=True)

elif sys.platform == "darwin":
    import socket

    _SO_NWRITE = 0x1024

    def unacknowledged(sock: Socket) -> int | None:
        """Bytes written to ``sock`` that its peer has not acknowledged yet (SO_NWRITE), or
        None if the socket cannot tell (closed)."""
        try:
            return sock.getsockopt(socket.SOL_SOCKET, _SO_NWRITE)
        except (OSError, ValueError):
            return None

else:

    def unacknowledged(sock: Socket) -> int | None:
        """None: this system does not tell what a socket still holds (the keepalive then
        sees only the output the server has not handed to it)."""
        return None


class Progress:
    """What the peer's TCP has acknowledged of a socket's output, from one keepalive tick to
    the next: whether a slow reader is still taking what the socket holds for it."""

    __slots__ = ("_acknowledged",)

    def __init__(self) -> None:
        self._acknowledged = 0
        """Of the bytes written, how many the peer had acknowledged at the last tick."""

    def moving(self, written: int, unacked: int | None) -> bool:
        """Whether the socket still holds some of the ``written`` bytes (``unacked``, as
        ``unacknowledged`` told; read after ``written``) and the peer has acknowledged more
        of them since the last call. False where the system cannot tell."""
        if unacked is None:
            return False
        acknowledged = written - unacked
        moving = unacked > 0 and acknowledged > self._acknowledged
        self._acknowledged = acknowledged
        return moving
