"""The one way trio code feeds a sans-I/O connection: bytes, EOF, or a due timer."""

from __future__ import annotations

import contextlib
import math

import trio

from sealchat.core import Connection

RECEIVE_SIZE = 65536


async def feed(conn: Connection, stream: trio.abc.ReceiveStream) -> None:
    """Wait for bytes from the peer, or for the connection's next timer, and hand over
    whichever came first. A reset connection reads as EOF."""
    timer = conn.get_timer()
    data: bytes | bytearray = b""
    with trio.move_on_at(math.inf if timer is None else timer) as waited:
        with contextlib.suppress(trio.BrokenResourceError):
            data = await stream.receive_some(RECEIVE_SIZE)
    if waited.cancelled_caught:
        conn.handle_timer(trio.current_time())
    else:
        conn.receive_data(bytes(data))
