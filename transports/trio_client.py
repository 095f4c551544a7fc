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

import math
import random
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import trio
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
from sealchat.core import Error as ServerError
from sealchat.core.codec import encode_record
from sealchat.core.records import file_chunks
from sealchat.transports import requests
from sealchat.transports.downloads import PartialDownload, default_downloads_dir, sha256_of
from sealchat.transports.keyfile import load_or_create_key
from sealchat.transports.pinning import (
    KnownServers,
    ServerKeyChanged,
    ServerKeyUnknown,
    config_dir,
    server_name,
)
from sealchat.transports.requests import (
    EVENT_BUFFER,
    TRANSFER_BLOCK,
    TRANSFER_QUEUE,
    ClientError,
    LoginFailed,
    Reply,
    Request,
    TransferFailed,
)
from sealchat.transports.trio_burst import BurstChannel
from sealchat.transports.trio_feed import feed

ConfirmKey = Callable[[str, str], Awaitable[bool]]
"""Asked ``(server, fingerprint)`` on first contact; True pins the key and goes on."""
Progress = Callable[[int, int], None]
"""Called with (bytes done, bytes in all) as a transfer advances."""

T = TypeVar("T")
REQUEST_TIMEOUT = 30.0
ABANDONED_HOLD = REQUEST_TIMEOUT
"""Seconds the waiter of a call given up still holds back the messages it took, for its late
reply (without replies): a server that never answers holds back nothing for good."""
_OVER = (State.CLOSED, State.ERROR)
SEEN_MEMORY = 50_000
SEND_BUFFER = 64 * 1024
"""Bytes queued for the writer beyond which a sender waits for it."""
PACE = (0.5, 4.0)
"""The first and the longest pause before messages the server found too fast go again."""
PACE_BATCH = 20
"""Most messages sent in one round while the client paces its outbox."""


class ConnectionLost(ClientError):
    """The connection dropped (or the server closed it)."""


class Disconnected(ConnectionLost):
    """The connection is gone and will not come back (closed, or reconnecting is off)."""


class Unreachable(ClientError):
    """No connection to the server could be made (refused, no route, name unknown, timed
    out)."""


class _LinkLost(ConnectionLost):
    """The connection dropped while a request was under way (it may come back)."""


@dataclass(frozen=True, slots=True)
class LinkState:
    """Emitted on ``events()`` when the connection drops or comes back."""

    connected: bool
    reason: str = ""
    retry_in: float = 0.0


def client_key(path: Path | None = None) -> X25519PrivateKey:
    """This installation's own static key (created 0600 on first use)."""
    return load_or_create_key(path or config_dir() / "client_key")


class _Link:
    """One TCP connection: the stream, its sans-I/O connection, and the writer's signals."""

    def __init__(self, stream: trio.SocketStream, conn: Connection) -> None:
        self.stream = stream
        self.conn = conn
        self.send_lock = trio.Lock()
        self.closed = trio.Event()
        self.reason = ""
        self.wake = trio.Event()
        """Set when records are queued: the writer takes them all in one write."""
        self.wrote = trio.Event()
        """Set (and replaced) after each write, and when the link ends."""
        self.writer = trio.CancelScope()


class _AskedAboutKey(Exception):
    """The user was asked about a new server key and trusted it (it is pinned); the
    connection, kept waiting meanwhile, is closed, and a new one made."""


@dataclass(slots=True)
class _Upload:
    """One ``send_file``, across the tries a lost connection makes it take."""

    path: Path
    size: int
    digest: bytes
    room: str
    to: str
    progress: Progress
    file_id: str = ""
    """The stored file's id, once the server has accepted an offer."""

    def offer(self, transfer: int) -> FileOffer:
        return FileOffer(
            transfer=transfer,
            name=self.path.name,
            size=self.size,
            sha256=self.digest,
            room=self.room,
            to=self.to,
        )


class _Waiter(requests.Waiter[trio.Event]):
    """Someone waiting for the records of a reply."""

    def __init__(self, reply: Reply[Any]) -> None:
        super().__init__(reply, trio.Event())
        self.release_by = math.inf
        """When it stops holding back the messages it took (once its call is given up)."""


def _holds(waiter: _Waiter, event: Event | LinkState) -> bool:
    """Whether the answer ``waiter`` got holds ``event``, a message (or one of the same id:
    a history page may repeat a message that came before it, live or replayed). That of a
    call given up, which no caller shows, holds only what came as its page (see ``_page``):
    a message that came before it goes on, even if the page repeats it."""
    answered = waiter.finished.is_set() and not (waiter.lost or waiter.failure)
    if not answered or not isinstance(event, Message):
        return False
    if waiter.abandoned:
        return any(message is event for message in _page(waiter.records))
    return any(isinstance(r, Message) and r.id == event.id for r in waiter.records)


def _page(records: list[Record]) -> list[Message]:
    """The messages of a reply that are in id order right before its end, as a history page
    is: without a live one that came just before the page."""
    messages = [r for r in records if isinstance(r, Message)]
    start = len(messages) - 1
    while start > 0 and messages[start - 1].id < messages[start].id:
        start -= 1
    return messages[max(start, 0) :]


class _ReplyTooLong(Exception):
    """The server sent more for one request than a reply may hold (the message says how)."""


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
        downloads_dir: Path | None = None,
        reconnect: bool = True,
        backoff: tuple[float, float] = (0.5, 30.0),
        connect_timeout: float = 10.0,
        events: bool = True,
        acknowledge: bool | None = None,
        replies: bool = True,
    ) -> None:
        self.host, self.port = host, port
        self.server = server_name(host, port)
        self._nursery = nursery
        self._key = static_key or client_key()
        self._known = known_servers or KnownServers()
        self._confirm = confirm_new_key
        self.downloads_dir = downloads_dir or default_downloads_dir()
        self._reconnect = reconnect
        self._backoff = backoff
        self._connect_timeout = connect_timeout
        self._rng = random.Random()  # noqa: S311  (jitter, not secrets)
        self._link: _Link | None = None
        self._credentials: tuple[str, str] | None = None
        self.username = ""
        self.fingerprint = ""
        self._events = BurstChannel[Event | LinkState](EVENT_BUFFER)
        self._keep_events = events
        self._replies = replies
        """Whether what answers a call (a refusal, a page of history…) goes on events() too."""
        self._acknowledging = events if acknowledge is None else acknowledge
        """Whether to tell the server what arrived; by default only a client that keeps its
        events does (one that shows nothing must not mark the user's messages read), and only
        until its events stream is closed."""
        self._acknowledge_given = acknowledge is not None
        self.gave_up_on: Exception | None = None
        """Why the client stopped reconnecting for good (a changed or unknown key, a refused
        login, or Disconnected: also once it is closed), once it has."""
        self._recovering = False
        self._downloading: set[str] = set()
        self._waiters: list[_Waiter] = []
        self._position = 0
        """Records read so far (over all links): the position in the stream of the latest
        (see ``route``)."""
        self._withheld: deque[tuple[Event | LinkState, list[_Waiter]]] = deque()
        """Without replies: a message that calls took (with those calls) waits here, and the
        events after it (LinkState too) wait behind it, until the calls are over, to learn
        whether their answers hold it (a history page is only the messages right before its
        end). Only the releaser (``_keep_releasing``) takes them out, so they keep their
        order: it waits for ``_releasable`` (set when an event is withheld, or a waiter
        leaves), or for the end of a hold (see ``_abandon``), and sets (and replaces)
        ``_released`` as it takes each out."""
        self._releasable, self._released = trio.Event(), trio.Event()
        self._outbox: dict[str, Message] = {}
        self._too_fast: set[str] = set()
        """Client ids of messages the server refused as rate_limited, not sent again yet."""
        self._pacing = False
        """Whether the outbox goes out in paced rounds (from a rate_limited refusal until it
        is empty); new messages then queue behind the older ones."""
        self._slowed = trio.Event()
        """Set by a rate_limited refusal: wakes the pacer."""
        self._answered = trio.Event()
        """Set (and replaced) when the server answers a message, and when a link ends."""
        self._seen: set[int] = set()
        self._seen_order: deque[int] = deque()
        self._delivered = self._shown = 0
        """The newest message id acknowledged (outside a replay: during one, the server takes
        no more than the page it sent), and the newest that reached ``events()`` (or a call's
        answer): only what the user was shown is acknowledged, not all that arrived."""
        self._replaying = False
        self._transfers = iter(range(1, 2**62))
        self._chunks: dict[int, trio.MemorySendChannel[Record]] = {}
        self._closing = False
        self._online = trio.Event()

    def __repr__(self) -> str:
        return f"<ChatClient {self.server} user={self.username!r}>"

    # --- connecting -----------------------------------------------------------------------

    async def _open_link(self) -> None:
        """Connect, check the server key against the pins, finish the handshake.

        After the user is asked about a new key, the client pins it and connects again: the
        answer may take longer than the server waits for a handshake."""
        try:
            await self._try_link()
        except _AskedAboutKey:
            try:
                await self._try_link()
            except _AskedAboutKey:  # the pin did not hold (an unwritable pin file?)
                raise ClientError(f"the key of {self.server} could not be pinned") from None

    async def _try_link(self) -> None:
        try:
            with trio.fail_after(self._connect_timeout):
                stream = await trio.open_tcp_stream(self.host, self.port)
        except (OSError, trio.TooSlowError) as exc:
            why = exc.strerror or exc if isinstance(exc, OSError) else "no answer"
            raise Unreachable(
                f"cannot reach {self.server}: {why}; is the server running and the address right?"
            ) from None
        conn = Connection(
            Role.CLIENT,
            static_key=self._key,
            now=trio.current_time(),
            handshake_timeout=self._connect_timeout,
        )
        link = _Link(stream, conn)
        try:
            conn.initiate()
            await stream.send_all(conn.data_to_send())
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
        self._link = link
        self._nursery.start_soon(self._read, link)
        self._nursery.start_soon(self._write, link)

    async def _decide_on_key(self, link: _Link, event: PeerKeyReceived) -> None:
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
        self.fingerprint = event.fingerprint
        link.conn.accept_peer()
        await link.stream.send_all(link.conn.data_to_send())

    async def _next_raw(self, link: _Link) -> Event:
        """The next event of a link still in its handshake; Unreachable if the server does
        not finish it in time."""
        conn = link.conn
        timed_out = False
        while True:
            try:
                event = conn.next_event()
            except ProtocolError as exc:
                await link.stream.aclose()
                raise ClientError(_explain(str(exc))) from None
            if event is not NEED_DATA:
                if isinstance(event, ConnectionClosed):
                    await link.stream.aclose()
                    if timed_out:
                        raise Unreachable(
                            f"{self.server} did not answer the handshake; "
                            "is it a sealchat server at that address?"
                        )
                    raise ConnectionLost(f"the server closed the connection: {event.reason}")
                return event
            deadline = conn.get_timer()
            arrived = await feed(conn, link.stream)
            timed_out = not arrived and deadline is not None and trio.current_time() >= deadline

    # --- the reader -----------------------------------------------------------------------

    async def _read(self, link: _Link) -> None:
        reason = "the connection was lost"
        try:
            while True:
                event = await self._next_raw_open(link)
                if isinstance(event, ConnectionClosed):
                    reason = event.reason or reason
                    return
                await self._dispatch(event)
        except _ReplyTooLong as exc:  # as for other violations, the link ends (and comes back)
            reason = str(exc)
            await self._say_bye(link, reason)
        except ProtocolError as exc:
            reason = str(exc)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, _LinkLost):
            pass
        finally:
            link.reason = reason
            link.closed.set()
            link.writer.cancel()
            link.wrote.set()  # senders waiting for room see the link is gone
            self._note_answer()  # and the pacer stops waiting for answers
            with trio.CancelScope(shield=True):
                await link.stream.aclose()
            for waiter in self._waiters:
                waiter.lost = True
                waiter.finished.set()
            self._waiters.clear()
            self._wake_releaser()
            for chunks in self._chunks.values():
                chunks.close()  # the download sees the end of its chunks: it resumes later
            if self._link is link:
                self._link = None
                self._online = trio.Event()
                if not self._closing:
                    self._nursery.start_soon(self._recover, reason)

    async def _next_raw_open(self, link: _Link) -> Event:
        conn = link.conn
        while True:
            event = conn.next_event()
            if event is not NEED_DATA:
                return event
            await feed(conn, link.stream)
            if conn.bytes_to_send:  # pongs and keepalive pings
                link.wake.set()

    async def _dispatch(self, record: Event) -> None:
        if not isinstance(record, Record):
            return
        self._position += 1
        took, failure = requests.route(self._waiters, record, self._position)
        if failure:
            raise _ReplyTooLong(failure)
        self._wake_releaser()  # for the events that calls it ended had held back
        match record:
            case FileChunk() | FileComplete() | FileReject() if record.transfer in self._chunks:
                # A full queue makes the reader wait: the socket backs up, the server pauses.
                with suppress(trio.BrokenResourceError):  # the download ended meanwhile
                    await self._chunks[record.transfer].send(record)
                return
            case FileChunk() | FileComplete() | FileReject():
                return  # the rest of an abandoned download, already on its way
            case Message():
                if not self._remember(record.id):
                    return
            case ServerError(code="rate_limited", ref=ref) if ref in self._outbox:
                self._slow_down(ref)  # not refused: it goes again after a pause
                return
            case ServerError(ref=ref) if ref in self._outbox:
                del self._outbox[ref]  # refused for good (too long, not a member…)
                self._too_fast.discard(ref)
                self._note_answer()
            case MessageAck():
                self._too_fast.discard(record.client_id)
                self._note_answer()
                sent = self._outbox.pop(record.client_id, None)
                if sent is not None and self._remember(record.id):
                    # Our own message, now stored: shown like anyone's, in id order.
                    await self._pass_on(
                        msgspec.structs.replace(
                            sent, id=record.id, ts=record.ts, sender=self.username
                        )
                    )
        if self._replies or not took:
            await self._pass_on(record)
        elif isinstance(record, Message):  # it may be an answer, or not: wait and see
            await self._pass_on(record, took)

    async def _pass_on(self, event: Event | LinkState, took: list[_Waiter] | None = None) -> None:
        """Emit ``event`` after those withheld; hold it back while calls that ``took`` it wait
        (without replies, see ``_withheld``). Waits while more than EVENT_BUFFER are withheld
        (the events reader is that far behind)."""
        if not (took or self._withheld):
            await self._emit(event)
            return
        self._withheld.append((event, took or []))
        self._releasable.set()
        while len(self._withheld) > EVENT_BUFFER:
            await self._released.wait()

    def _wake_releaser(self) -> None:
        """Let the releaser look again at the withheld events: a waiter has left."""
        if self._withheld:
            self._releasable.set()

    def _forget(self, waiter: _Waiter) -> None:
        """``waiter`` waits no more: the events it held back may go."""
        if waiter in self._waiters:
            self._waiters.remove(waiter)
            self._wake_releaser()

    def _abandon(self, waiter: _Waiter) -> None:
        """The call of ``waiter`` is over: if its reply is still to come, the waiter stays to
        take it (see ``requests.abandon``), and holds back what it took until then (its page,
        which no one asked for any more, is then dropped) or for ABANDONED_HOLD at most."""
        requests.abandon(self._waiters, waiter)
        if waiter.abandoned:
            waiter.release_by = trio.current_time() + ABANDONED_HOLD
        self._wake_releaser()

    def _holding(self, waiter: _Waiter) -> bool:
        """Whether ``waiter`` holds back the messages it took: it waits for its reply (if its
        call was given up, until its ``release_by``)."""
        return waiter in self._waiters and trio.current_time() < waiter.release_by

    async def _keep_releasing(self) -> None:
        """The releaser: emits withheld events as the calls that took them end, or stop
        holding them (see ``_release``). One task for all, since emitting may wait for the
        events reader."""
        while True:
            now = trio.current_time()
            due = min((w.release_by for w in self._waiters if w.release_by > now), default=math.inf)
            with trio.move_on_at(due):
                await self._releasable.wait()
            self._releasable = trio.Event()
            await self._release()

    async def _release(self) -> None:
        """Emit the withheld events up to the first that a call still waiting took (past it
        too while more than EVENT_BUFFER wait), except each message that a call's answer
        holds (or the late page of calls given up: dropped). Each leaves the queue once
        emitted, so nothing overtakes it meanwhile."""
        while self._withheld:
            event, took = self._withheld[0]
            if any(map(self._holding, took)) and len(self._withheld) <= EVENT_BUFFER:
                return
            answers = [waiter for waiter in took if _holds(waiter, event)]
            if not answers:
                await self._emit(event)
            elif not all(waiter.abandoned for waiter in answers):
                self._note_shown(event)  # its call has given it to the caller
            elif isinstance(event, Message):
                # The late page of calls given up: dropped unshown, so a later copy (replayed)
                # is shown. (Its id stays in _seen_order: at worst it is forgotten early.)
                self._seen.discard(event.id)
            self._withheld.popleft()
            self._released.set()
            self._released = trio.Event()

    async def _emit(self, event: Event | LinkState) -> None:
        """Hand ``event`` to ``events()`` (waiting while its reader is EVENT_BUFFER behind),
        unless the client was made with ``events=False``. At the end of a replay page (all
        before it emitted), tell the server what arrived: that asks for the next page."""
        if self._keep_events:
            await self._events.put(event)
        self._note_shown(event)
        if requests.ends_replay(event):
            self._replaying = event.more
            with suppress(ClientError):  # the link is lost: the next login replays the rest
                await self._acknowledge(page_end=True)

    def _note_shown(self, event: Event | LinkState) -> None:
        """``event`` reached the user: a message in it may be acknowledged."""
        if isinstance(event, Message):
            self._shown = max(self._shown, event.id)

    def _remember(self, message_id: int) -> bool:
        """Note a message id; False if it was already shown."""
        if message_id in self._seen:
            return False
        self._seen.add(message_id)
        self._seen_order.append(message_id)
        if len(self._seen_order) > SEEN_MEMORY:
            self._seen.discard(self._seen_order.popleft())
        return True

    @property
    def _acknowledges(self) -> bool:
        """Whether to tell the server what arrived now (see ``_acknowledging``)."""
        return self._acknowledging and (self._acknowledge_given or not self._events.closed)

    def _due(self, *, page_end: bool = False) -> int | None:
        """What a Delivered should say now (every message up to it was shown), or None if
        none is due. Delivered means all up to it, so it stops short of the oldest message
        held back. While the replay runs, one goes only as a page's end is emitted (``page_end``):
        the server takes it no further than the page it sent last (with it, all before that end
        was shown; what is held back came after it, newer than the page or no message a replay
        brings), and sends the next page; any other would cover a page under way."""
        if self._replaying:
            return self._shown if page_end else None
        held = [event.id for event, _ in self._withheld if isinstance(event, Message)]
        up_to = min(self._shown, min(held) - 1) if held else self._shown
        return up_to if up_to > self._delivered else None

    async def _acknowledge(self, *, page_end: bool = False) -> None:
        """Tell the server which messages reached the user (see ``_due``; at a replay page's
        ``page_end`` this also asks for the next page). Not while there is no link (the next
        login's replay asks again); it counts as acknowledged once it went on the link."""
        link = self._link
        up_to = self._due(page_end=page_end)
        if not self._acknowledges or link is None or link.closed.is_set() or up_to is None:
            return
        counts = not self._replaying
        # No waiting for room: the reader may be sending it, and only it sees the link end.
        await self._send_all((Delivered(up_to=up_to),), wait=False)
        if counts:
            self._delivered = max(self._delivered, up_to)

    async def _keep_acknowledging(self) -> None:
        while True:
            await trio.sleep(2)
            with suppress(ClientError):
                await self._acknowledge()

    # --- pacing the outbox ----------------------------------------------------------------

    def _slow_down(self, client_id: str) -> None:
        """The server found the message ``client_id`` too fast: keep it for the pacer."""
        self._too_fast.add(client_id)
        self._pacing = True
        self._slowed.set()
        self._note_answer()

    def _note_answer(self) -> None:
        self._answered.set()
        self._answered = trio.Event()

    async def _keep_pacing(self) -> None:
        """After each rate_limited refusal, send the outbox again in paced rounds."""
        while True:
            await self._slowed.wait()
            self._slowed = trio.Event()
            await self._pace()
            self._pacing = False

    async def _pace(self) -> None:
        """Send the outbox, oldest first, a round at a time until it is empty or the link
        is lost (the next login resends it): each round waits for the server's answers to the
        last, and pauses first if the server found some too fast (twice as long if it stored
        none, up to PACE[1]). A round holds twice what the last one got stored (at least one,
        at most PACE_BATCH), so a slow server is not flooded with messages it must refuse."""
        pause, size = PACE[0], PACE_BATCH
        while self._outbox:
            if self._too_fast:
                await trio.sleep(pause)
            link = self._link
            if link is None or link.closed.is_set() or not self._online.is_set():
                return
            batch = list(self._outbox)[:size]
            self._too_fast.difference_update(batch)
            with suppress(ClientError):  # the link is lost: the loop ends
                await self._send_all([self._outbox[c] for c in batch])
            with trio.move_on_after(REQUEST_TIMEOUT):
                while not link.closed.is_set() and any(
                    c in self._outbox and c not in self._too_fast for c in batch
                ):
                    await self._answered.wait()
            stored = sum(c not in self._outbox for c in batch)
            pause = PACE[0] if stored else min(2 * pause, PACE[1])
            size = max(1, min(PACE_BATCH, 2 * stored))

    # --- reconnecting ---------------------------------------------------------------------

    async def _recover(self, reason: str) -> None:
        """Reconnect with exponential back-off and jitter, then log in again (the server
        replays what was missed; the outbox is resent)."""
        if not self._reconnect or self._credentials is None:
            await self._give_up(reason)
            return
        if self._recovering:  # a link lost while logging in again: that recovery goes on
            return
        self._recovering = True
        try:
            await self._reconnect_loop(reason, self._credentials)
        finally:
            self._recovering = False

    async def _reconnect_loop(self, reason: str, credentials: tuple[str, str]) -> None:
        delay, cap = self._backoff
        while not self._closing:
            wait = delay * self._rng.uniform(0.5, 1.5)
            await self._pass_on(LinkState(connected=False, reason=reason, retry_in=wait))
            await trio.sleep(wait)
            try:
                await self._open_link()
                await self._log_in(*credentials, register=False)
            except (
                ClientError,
                OSError,
                trio.TooSlowError,
                ServerKeyChanged,
                ServerKeyUnknown,
            ) as exc:
                await self._abandon_link()
                reason = str(exc)
                if isinstance(exc, LoginFailed) and exc.retry_after:  # busy: come back later
                    delay = max(delay, exc.retry_after)
                elif isinstance(exc, LoginFailed | ServerKeyChanged | ServerKeyUnknown):
                    await self._give_up(reason, exc)  # trying again won't help
                    return
                else:
                    delay = min(cap, delay * 2)
                continue
            await self._pass_on(LinkState(connected=True))
            return

    async def _abandon_link(self) -> None:
        """Close a link that did not make it to a session, or failed while it resent the
        outbox after logging in (without starting a recovery: the caller retries)."""
        link, self._link = self._link, None
        if self._online.is_set():  # the login had said online: not any more
            self._online = trio.Event()
        if link is not None:
            await link.stream.aclose()

    # --- sending --------------------------------------------------------------------------

    async def _send(self, record: Record) -> None:
        await self._send_all((record,))

    async def _send_all(
        self, records: Iterable[Record], *, wait: bool = True, expecting: _Waiter | None = None
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
        expecting: _Waiter | None = None,
    ) -> None:
        """``_send_all`` for records already checked and encoded (``requests.checked``)."""
        link = self._link
        if link is None or link.closed.is_set():
            self._fail_if_given_up()
            raise _LinkLost("not connected; the client is reconnecting")
        try:
            for record, payload in encoded:
                link.conn.send(record, encoded=payload)
        except LocalProtocolError as exc:
            if link.conn.state in _OVER:  # the writer failed: the link is going down
                raise _LinkLost("the connection was lost") from None
            raise ClientError(f"cannot send this: {exc}") from None  # not allowed now
        finally:
            link.wake.set()  # what was queued goes now, whatever came after it
        if expecting is not None:
            self._waiters.append(expecting)
        while wait and link.conn.bytes_to_send > SEND_BUFFER:
            await link.wrote.wait()
        if link.closed.is_set() or link.conn.state in _OVER:
            raise _LinkLost(link.reason or "the connection was lost")
        await trio.lowlevel.checkpoint_if_cancelled()

    async def _write(self, link: _Link) -> None:
        """The link's writer: whatever is queued, in one write per wake-up. A failed write
        closes the stream, so the reader ends the link (and recovery starts)."""
        with link.writer:
            try:
                while True:
                    await link.wake.wait()
                    link.wake = trio.Event()
                    async with link.send_lock:
                        await self._flush(link)
                    link.wrote.set()
                    link.wrote = trio.Event()
            except _LinkLost:
                link.wrote.set()  # waiting senders see the connection has failed
                await link.stream.aclose()  # and the reader ends the link

    async def _flush(self, link: _Link) -> None:
        data = link.conn.data_to_send()
        if data:
            try:
                await link.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                link.conn.send_failed()
                raise _LinkLost("the connection was lost") from None

    async def _ask(self, request: Request[T], timeout: float = REQUEST_TIMEOUT) -> T:
        """Send a request and wait for its reply."""
        waiter = _Waiter(request.reply)
        try:
            await self._send_all((request.record,), expecting=waiter)
            return await self._await(waiter, request.reply, timeout)
        finally:
            self._abandon(waiter)  # if cancelled or timed out: its reply answers no other

    async def _await(self, waiter: _Waiter, reply: Reply[T], timeout: float) -> T:
        try:
            with trio.fail_after(timeout):
                await waiter.finished.wait()
        except trio.TooSlowError:
            raise ClientError(f"the server did not answer within {timeout:g} s") from None
        if waiter.lost:
            raise _LinkLost("the connection was lost")
        return reply.result(waiter.collected())

    async def _retrying(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run ``attempt``; if the connection drops meanwhile, wait for the reconnect and run
        it again (it must resume, not repeat)."""
        while True:
            try:
                return await attempt()
            except _LinkLost:
                if not self._reconnect or self._closing:
                    raise Disconnected("the connection was lost") from None
                await self.wait_online()

    # --- the session ----------------------------------------------------------------------

    async def login(self, username: str, password: str) -> str:
        """Log in; returns the user name as the server spells it. Raises LoginFailed."""
        return await self._log_in(username, password, register=False)

    async def register(self, username: str, password: str) -> str:
        """Create an account (where the server allows it) and log in."""
        return await self._log_in(username, password, register=True)

    async def _log_in(self, username: str, password: str, *, register: bool) -> str:
        # Set before asking: the replay's last HistoryEnd (which clears it) can come in the
        # same read as the answer, and be handled before this call resumes.
        self._replaying = True
        name = await self._ask(requests.login(username, password, register=register))
        first = self._credentials is None
        self._credentials = (username, password)
        self.username = name
        if first:
            self._nursery.start_soon(self._keep_pacing)
        if first and self._acknowledging:
            self._nursery.start_soon(self._keep_acknowledging)
        await self._resend_outbox()  # before going online: what is sent next comes after
        self._online.set()
        return name

    async def _resend_outbox(self) -> None:
        """Send what was queued while away (once, by client id), oldest first, including
        what is queued meanwhile; not while the pacer has the outbox."""
        resent: set[str] = set()
        while waiting := [m for c, m in self._outbox.items() if c not in resent]:
            for message in waiting:
                if self._pacing:
                    return
                resent.add(message.client_id)
                await self._send(message)

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
        reader, and wake everyone who waits for the session so they fail instead of hanging."""
        self.gave_up_on = error or Disconnected(f"disconnected: {reason}")
        self._online.set()
        await self._pass_on(LinkState(connected=False, reason=reason))

    def events(self) -> BurstChannel[Event | LinkState]:
        """Everything the server sends (records, without duplicates) and LinkState changes."""
        return self._events

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
        delivered once even if the connection drops before the server acknowledges it."""
        client_id = client_id or requests.new_client_id()
        message = Message(text=text, room=room, to=to, client_id=client_id)
        self._fail_if_given_up()
        requests.check_text(text)
        try:
            payload = encode_record(message)  # checked now: the outbox holds what can go
        except LocalProtocolError as exc:
            raise ClientError(f"cannot send this message: {exc}") from None
        self._outbox[client_id] = message
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
        return len(self._outbox)

    async def typing(self, active: bool = True, *, room: str = "", to: str = "") -> None:
        await self._send(Typing(room=room, to=to, active=active))

    async def history(
        self, *, room: str = "", peer: str = "", before: int = 0, limit: int = 50
    ) -> tuple[list[Message], bool]:
        """Messages of a room or direct conversation older than ``before`` (0: the newest),
        oldest first, and whether older ones exist."""
        return await self._ask(requests.history(room, peer, before, limit))

    async def files(self, *, room: str = "", peer: str = "") -> list[FileInfo]:
        return await self._ask(requests.files(room, peer))

    # --- files ----------------------------------------------------------------------------

    async def send_file(
        self,
        path: Path,
        *,
        room: str = "",
        to: str = "",
        progress: Progress | None = None,
    ) -> FileInfo:
        """Upload ``path``. If the connection drops, it resumes after the reconnect where the
        server's copy stops. Cancelling the calling task cancels the upload (the server
        discards the part it has)."""
        size = path.stat().st_size
        digest = await trio.to_thread.run_sync(sha256_of, path)
        job = _Upload(path, size, digest, room, to, progress or _no_progress)
        return await self._retrying(partial(self._upload, job))

    async def _upload(self, job: _Upload) -> FileInfo:
        path, size, digest, progress = job.path, job.size, job.digest, job.progress
        if job.file_id:  # again after a lost connection: the last try may have finished
            stored = await self.files(room=job.room, peer=job.to)
            done = [f for f in stored if f.file_id == job.file_id]
            if done:  # complete (only those are listed): offering it again would store it twice
                progress(size, size)
                return done[0]
        transfer = next(self._transfers)
        announced: _Waiter | None = None
        settled = False  # stored, or the link was lost (the server keeps the part it has)
        try:
            reply = await self._ask(requests.upload(job.offer(transfer)))
            job.file_id = reply.file_id
            outcome = requests.announced(reply.file_id, transfer)
            announced = _Waiter(outcome)
            self._waiters.append(announced)
            offset = reply.offset
            progress(offset, size)
            async with await trio.open_file(path, "rb") as source:
                await source.seek(offset)
                while offset < size and not announced.finished.is_set():  # refused: stop
                    block = await source.read(min(TRANSFER_BLOCK, size - offset))
                    if not block:
                        raise TransferFailed(f"{path} shrank while it was being sent")
                    await self._send_all(file_chunks(transfer, offset, block))
                    offset += len(block)
                    progress(offset, size)
            if announced.finished.is_set():
                settled = True  # refused midway: the server has ended the transfer
            else:
                await self._send(FileComplete(transfer=transfer, sha256=digest))
            info = await self._await(announced, outcome, REQUEST_TIMEOUT)
            settled = True
            return info
        except _LinkLost:
            settled = True
            raise
        finally:
            if announced is not None:
                self._forget(announced)
            if not settled:  # cancelled or failed here: the server frees the transfer
                await self._stop_transfer(transfer, "upload abandoned")

    async def _stop_transfer(self, transfer: int, reason: str) -> None:
        """Tell the server to end ``transfer`` (it frees the slot), even while cancelled;
        within 2 s, and not at all if the link is down."""
        with trio.CancelScope(shield=True), trio.move_on_after(2), suppress(ClientError):
            await self._send(FileReject(transfer=transfer, reason=reason))

    async def download(self, file_id: str, *, progress: Progress | None = None) -> Path:
        """Fetch a shared file into the downloads folder, resuming a partial one (also after
        a reconnect); returns where it landed once its SHA-256 was checked."""
        return await self._retrying(partial(self._download, file_id, progress or _no_progress))

    async def _download(self, file_id: str, progress: Progress) -> Path:
        if file_id in self._downloading:
            raise TransferFailed(f"{file_id} is already being downloaded")
        self._downloading.add(file_id)
        transfer = next(self._transfers)
        send_chunks, receive_chunks = trio.open_memory_channel[Record](TRANSFER_QUEUE)
        target: PartialDownload | None = None
        asked = lost = False
        try:
            target = await trio.to_thread.run_sync(PartialDownload, self.downloads_dir, file_id)
            self._chunks[transfer] = send_chunks
            asked = True
            reply = await self._ask(requests.download(transfer, file_id, target.size))
            await trio.to_thread.run_sync(target.expect, reply.size)  # no byte beyond it
            progress(reply.offset, reply.size)
            while True:
                chunks, last = await _arrived(receive_chunks)
                if chunks:
                    await trio.to_thread.run_sync(
                        target.write_all, [(c.offset, c.data) for c in chunks]
                    )
                    progress(target.size, reply.size)
                if isinstance(last, FileComplete):
                    asked = False  # done: nothing to stop
                    return await trio.to_thread.run_sync(target.finish, reply.name, reply.sha256)
                if isinstance(last, FileReject):
                    asked = False  # the server stopped it
                    raise TransferFailed(last.reason)
        except (ValueError, OSError) as exc:  # a bad id, a chunk out of place, a wrong SHA-256
            raise TransferFailed(str(exc)) from None
        except trio.TooSlowError:
            raise TransferFailed("the download stalled; try again to resume it") from None
        except (trio.EndOfChannel, _LinkLost):
            lost = True
            raise _LinkLost("the connection was lost") from None
        finally:
            self._downloading.discard(file_id)
            self._chunks.pop(transfer, None)
            receive_chunks.close()
            if target is not None:
                target.close()
            if asked and not lost:  # failed or cancelled here: the server stops streaming
                await self._stop_transfer(transfer, "download abandoned")

    # --- closing --------------------------------------------------------------------------

    async def aclose(self, reason: str = "goodbye") -> None:
        self._closing = True
        self.gave_up_on = self.gave_up_on or Disconnected("the client was closed")
        self._online.set()  # whoever waits for a reconnect gets Disconnected
        link, self._link = self._link, None
        if link is not None:
            await self._say_bye(link, reason, acknowledge=self._acknowledges)
            link.writer.cancel()
            await link.stream.aclose()

    async def _say_bye(self, link: _Link, reason: str, *, acknowledge: bool = False) -> None:
        """Send Bye with ``reason`` (after Delivered for what arrived, with ``acknowledge``)
        and write it out, within 2 s; a link already failing is left as it is."""
        with trio.move_on_after(2):
            try:
                async with link.send_lock:
                    up_to = self._due() if acknowledge else None
                    if up_to is not None and link.conn.state is State.READY:
                        link.conn.send(Delivered(up_to=up_to))
                    link.conn.send(Bye(reason=reason))
                    await self._flush(link)
            except (ClientError, ProtocolError):
                pass


@asynccontextmanager
async def connect(host: str, port: int, **options: Any) -> AsyncIterator[ChatClient]:
    """Connect to a server (pinning its key) and yield the client; closes it afterwards.

    Errors come out as themselves, not wrapped in an exception group."""
    try:
        async with trio.open_nursery() as nursery:
            client = ChatClient(host, port, nursery, **options)
            nursery.start_soon(client._keep_releasing)
            await client._open_link()
            try:
                yield client
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


async def _arrived(
    chunks: trio.MemoryReceiveChannel[Record],
) -> tuple[list[FileChunk], Record | None]:
    """The chunks of a download that are here (waiting for at least one record), and the
    record that ended the download if it came too. EndOfChannel if the link was lost."""
    with trio.fail_after(REQUEST_TIMEOUT):
        record: Record | None = await chunks.receive()
    got: list[FileChunk] = []
    while isinstance(record, FileChunk):
        got.append(record)
        try:
            record = chunks.receive_nowait() if len(got) < TRANSFER_QUEUE else None
        except (trio.WouldBlock, trio.EndOfChannel):  # the end shows at the next call
            record = None
    return got, record


def _no_progress(done: int, total: int) -> None:
    del done, total


def _explain(error: str) -> str:
    """Protocol errors in words a user understands."""
    if "version mismatch" in error:
        return f"this client and the server speak different protocol versions ({error})"
    if "does not speak the sealchat protocol" in error:
        return "that address is not a sealchat server"
    return f"the connection failed: {error}"
