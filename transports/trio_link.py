"""One connection of the trio client to its server: opening it (TCP, the handshake, the
decision on the server's key), reading its events, and the writer that sends what is queued.

The session built on it (``trio_client``) decides what the events mean and when to reconnect.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from sealchat.core import (
    NEED_DATA,
    Connection,
    ConnectionClosed,
    Event,
    KeysEstablished,
    LocalProtocolError,
    PeerKeyReceived,
    ProtocolError,
    Record,
    Role,
    State,
)
from sealchat.transports.pinning import KnownServers, ServerKeyChanged, ServerKeyUnknown
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
from sealchat.transports.trio_feed import feed

ConfirmKey = Callable[[str, str], Awaitable[bool]]
"""Asked ``(server, fingerprint)`` on first contact; True pins the key and goes on."""
_OVER = (State.CLOSED, State.ERROR)
SEND_BUFFER = 64 * 1024
"""Bytes queued for the writer beyond which a sender waits for it."""


class Disconnected(ConnectionLost):
    """The connection is gone and will not come back (closed, or reconnecting is off)."""


class LinkLost(ConnectionLost):
    """The connection dropped while a request was under way (it may come back)."""


class Link:
    """One TCP connection: the stream, its sans-I/O connection, and the writer's signals."""

    def __init__(self, stream: trio.SocketStream, conn: Connection) -> None:
        self.stream = stream
        self.conn = conn
        self.send_lock = trio.Lock()
        self.closed = trio.Event()
        self.reason = ""
        self.farewell: str | None = None
        """Why the server ended the session, if it said goodbye (with a reason or not)."""
        self.wake = trio.Event()
        """Set when records are queued: the writer takes them all in one write."""
        self.wrote = trio.Event()
        """Set (and replaced) after each write, and when the link ends."""
        self.writer = trio.CancelScope()

    async def next_event(self) -> Event:
        """The next event of the open link (reading as needed)."""
        conn = self.conn
        while True:
            event = conn.next_event()
            if event is not NEED_DATA:
                return event
            await feed(conn, self.stream)
            if conn.bytes_to_send:  # pongs and keepalive pings
                self.wake.set()

    def put(self, encoded: list[tuple[Record, bytes]]) -> None:
        """Queue records already checked and encoded (``requests.checked``) for the writer."""
        try:
            for record, payload in encoded:
                self.conn.send(record, encoded=payload)
        except LocalProtocolError as exc:
            if self.conn.state in _OVER:  # the writer failed: the link is going down
                raise LinkLost("the connection was lost") from None
            raise ClientError(f"cannot send this: {exc}") from None  # not allowed now
        finally:
            self.wake.set()  # what was queued goes now, whatever came after it

    async def taken(self, *, wait: bool) -> None:
        """After ``put``: with ``wait``, wait while more than SEND_BUFFER bytes are queued;
        LinkLost if the link has ended (also meanwhile: what it queued then never drains)."""
        while wait and self.conn.bytes_to_send > SEND_BUFFER and not self._ended:
            await self.wrote.wait()
        if self._ended:
            raise LinkLost(self.reason or "the connection was lost")
        await trio.lowlevel.checkpoint_if_cancelled()

    @property
    def _ended(self) -> bool:
        """Whether the link has ended (its reader closed it, or the connection failed)."""
        return self.closed.is_set() or self.conn.state in _OVER

    async def write(self) -> None:
        """The link's writer: whatever is queued, in one write per wake-up. A failed write
        closes the stream, so the reader ends the link (and recovery starts)."""
        with self.writer:
            try:
                while True:
                    await self.wake.wait()
                    self.wake = trio.Event()
                    async with self.send_lock:
                        await self.flush()
                    self.wrote.set()
                    self.wrote = trio.Event()
            except LinkLost:
                self.wrote.set()  # waiting senders see the connection has failed
                await self.stream.aclose()  # and the reader ends the link

    async def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.conn.send_failed()
                raise LinkLost("the connection was lost") from None


class _AskedAboutKey(Exception):
    """The user was asked about a new server key and trusted it (it is pinned); the
    connection, kept waiting meanwhile, is closed, and a new one made."""


class Dialer:
    """Makes links to one server, checking its key against the pins (``known``), asking
    ``confirm`` about a new one, and telling ``on_key`` the fingerprint of a key it accepts."""

    def __init__(
        self,
        host: str,
        port: int,
        server: str,
        *,
        static_key: X25519PrivateKey,
        known: KnownServers,
        confirm: ConfirmKey | None,
        connect_timeout: float,
        on_key: Callable[[str], None],
    ) -> None:
        self.host, self.port, self.server = host, port, server
        self._key = static_key
        self._known = known
        self._confirm = confirm
        self._connect_timeout = connect_timeout
        self._on_key = on_key

    async def open(self) -> Link:
        """Connect, check the server key against the pins, finish the handshake.

        After the user is asked about a new key, the client pins it and connects again: the
        answer may take longer than the server waits for a handshake."""
        try:
            return await self._try_link()
        except _AskedAboutKey:
            try:
                return await self._try_link()
            except _AskedAboutKey:  # the pin did not hold (an unwritable pin file?)
                raise ClientError(f"the key of {self.server} could not be pinned") from None

    async def _try_link(self) -> Link:
        try:
            with trio.fail_after(self._connect_timeout):
                stream = await trio.open_tcp_stream(self.host, self.port)
        except (OSError, trio.TooSlowError) as exc:
            why = exc.strerror or exc if isinstance(exc, OSError) else "no answer"
            raise Unreachable(unreachable(self.server, why)) from None
        except UnicodeError:
            raise Unreachable(unreachable(self.server, NOT_A_HOST_NAME)) from None
        conn = Connection(
            Role.CLIENT,
            static_key=self._key,
            now=trio.current_time(),
            handshake_timeout=self._connect_timeout,
        )
        link = Link(stream, conn)
        try:
            conn.initiate()
            try:
                await stream.send_all(conn.data_to_send())
            except trio.BrokenResourceError:  # reset before the server sent a byte
                raise ConnectionLost(TURNED_AWAY) from None
            while True:
                event = await self._next_raw(link)
                if isinstance(event, PeerKeyReceived):
                    await self._decide_on_key(link, event)
                elif isinstance(event, KeysEstablished):
                    break
        except BaseException as exc:
            with trio.CancelScope(shield=True):
                await stream.aclose()
            if isinstance(exc, trio.BrokenResourceError | trio.ClosedResourceError):
                raise ConnectionLost(
                    f"the connection to {self.server} was lost during the handshake"
                ) from None
            raise
        return link

    async def _decide_on_key(self, link: Link, event: PeerKeyReceived) -> None:
        """Go on with a pinned key. Hang up on a changed key (ServerKeyChanged), and on a new
        one: ServerKeyUnknown if the user does not trust it, else _AskedAboutKey once it is
        pinned."""
        try:
            known = self._known.require(self.server, event.fingerprint)
        except ServerKeyChanged:
            link.conn.reject_peer("the server key changed")
            await link.stream.aclose()
            raise
        if not known:
            if self._confirm is None or not await self._confirm(self.server, event.fingerprint):
                link.conn.reject_peer("the server key was not trusted")
                await link.stream.aclose()
                raise ServerKeyUnknown(self.server, event.fingerprint)
            self._known.pin(self.server, event.fingerprint)
            link.conn.reject_peer("the key is pinned now; connecting again")
            await link.stream.aclose()
            raise _AskedAboutKey
        self._on_key(event.fingerprint)
        link.conn.accept_peer()
        await link.stream.send_all(link.conn.data_to_send())

    async def _next_raw(self, link: Link) -> Event:
        """The next event of a link still in its handshake; Unreachable if the server does
        not finish it in time."""
        conn = link.conn
        timed_out = False
        while True:
            try:
                event = conn.next_event()
            except ProtocolError as exc:
                await link.stream.aclose()
                raise ClientError(explain_handshake_error(str(exc))) from None
            if event is not NEED_DATA:
                if isinstance(event, ConnectionClosed):
                    await link.stream.aclose()
                    if timed_out:
                        raise Unreachable(no_handshake(self.server))
                    raise ConnectionLost(f"the server closed the connection: {event.reason}")
                return event
            deadline = conn.get_timer()
            arrived = await feed(conn, link.stream)
            timed_out = not arrived and deadline is not None and trio.current_time() >= deadline
