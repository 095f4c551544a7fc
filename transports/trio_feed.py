"""The one way trio code feeds a sans-I/O connection: bytes, EOF, or a due timer."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import trio

from sealchat.core import Connection

RECEIVE_SIZE = 256 * 1024
"""Most bytes taken per read by default: up to four file chunks, so that records arriving in
a burst are handled together. The buffer exists only during the read (the socket's ``recv``
allocates it and shrinks it to what arrived), so an idle connection costs nothing for it."""


async def feed(
    conn: Connection,
    stream: trio.abc.ReceiveStream,
    receive_size: int = RECEIVE_SIZE,
    sending: Callable[[], bool] | None = None,
) -> int:
    """Wait for bytes from the peer (at most ``receive_size``), or for the connection's next
    timer, and hand over whichever came first; returns how many bytes arrived (0 for a timer
    or EOF). A reset connection reads as EOF. ``sending``, asked when the timer is due, is
    what ``Connection.handle_timer`` takes: whether output is still on its way to the peer
    (a server's; the clients' writes have no timeout to drop a peer that takes nothing)."""
    timer = conn.get_timer()
    data: bytes | bytearray = b""
    with trio.move_on_at(math.inf if timer is None else timer) as waited:
        with contextlib.suppress(trio.BrokenResourceError):
            data = await stream.receive_some(receive_size)
    if waited.cancelled_caught:
        conn.handle_timer(trio.current_time(), sending=sending is not None and sending())
        return 0
    conn.receive_data(bytes(data))
    return len(data)
