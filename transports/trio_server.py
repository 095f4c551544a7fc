"""The default sealchat server: trio, a task per connection, the hub off the event loop.

Network I/O and the sans-I/O connections live on the trio thread. The hub and its store are
blocking (SQLite, file writes), so every hub call runs in one worker thread at a time
(``trio.to_thread`` with a limiter of one): the hub sees calls one by one, in order, and the
event loop never waits on a disk. Argon2id checks run in their own small thread pool, and so
do the reads of completed uploads that the store must hash again (``VerifyUpload``), so that
neither holds up the hub.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import TypeVar

import trio
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from sealchat.core import (
    NEED_DATA,
    Authenticated,
    Bye,
    Connection,
    ConnectionClosed,
    FileComplete,
    FileReject,
    KeysEstablished,
    ProtocolError,
    Record,
    Role,
    State,
)
from sealchat.core.codec import encode_record
from sealchat.core.connection import MAX_RECEIVE_BUFFER
from sealchat.core.hub import (
    CancelStream,
    Deliver,
    Digest,
    Disconnect,
    Effect,
    HandlingFailed,
    HashPassword,
    Hub,
    ReadBackFailed,
    StreamFile,
    VerifyPassword,
    VerifyUpload,
    ends_batch,
)
from sealchat.core.hub.names import user_key
from sealchat.core.limits import MAX_FRAME
from sealchat.core.records import file_chunks
from sealchat.transports.hub_failures import HubFailures
from sealchat.transports.output_budget import OVER_BUDGET, OutputBudget
from sealchat.transports.password_turns import TrioTurns
from sealchat.transports.passwords import hash_password, verify_password
from sealchat.transports.send_queue import Progress, unacknowledged
from sealchat.transports.server_config import (
    UPLOAD_CHECKS,
    WRITE_SLICE,
    ServerConfig,
    stream_read_size,
)
from sealchat.transports.server_limits import (
    OUTPUT_PILED_UP,
    STOPPED_READING,
    WENT_AWAY,
    ConnectionSlots,
    log_dropped,
    peer_name,
    quiet_trio_accept_log,
)
from sealchat.transports.trio_feed import RECEIVE_SIZE, feed
from sealchat.transports.upload_checks import read_back_failed

log = logging.getLogger("sealchat.server")
T = TypeVar("T")
BULK_RECEIVE_SIZE = 896 * 1024
"""Most bytes taken by a read that follows a full one (more is waiting): up to 14 file
chunks, so that an upload or a burst reaches the hub in few large batches (a trip to the
hub's thread and a commit each, which cost far more than handling a record). Other reads
take at most ``trio_feed.RECEIVE_SIZE``: a buffer this large costs a fresh mapping even
for a few bytes. Room is left in the connection's receive buffer for the partial frame a
read may leave behind; a read's buffer exists only during the read."""
assert BULK_RECEIVE_SIZE + 4 + MAX_FRAME <= MAX_RECEIVE_BUFFER
TICK = 0.25
"""Longest sleep of the hub's timer task: typing notices expire at most this late."""
_OVER = (State.CLOSED, State.ERROR)


class _Peer:
    """One client connection: its sans-I/O state and the tasks that move its bytes."""

    def __init__(
        self, server: TrioServer, session: int, stream: trio.SocketStream, address: str, key: str
    ) -> None:
        self.server = server
        self.session = session
        self.stream = stream
        self.address = address
        self.address_key = key
        """What the limits per address count this connection by (``address_key``)."""
        self.name = peer_name(stream.socket)
        """Its address and port, as the log names it."""
        self.logged_in = False
        self.user = ""
        """Whom it is logged in as ("" until then), as the log names it."""
        self.dropped = False
        """Set once the server has dropped it (and logged why): the failure of its
        connection that the reader meets next is no news."""
        self.conn = Connection(
            Role.SERVER,
            static_key=server.static_key,
            now=trio.current_time(),
            handshake_timeout=server.config.handshake_timeout,
            keepalive_interval=server.config.keepalive_interval,
        )
        self.output_ready = trio.Event()
        self.wrote = trio.Event()
        """Set (and replaced) after each write: a paused download checks the queue again."""
        self.writer_done = trio.Event()
        self.cancel = trio.CancelScope()
        self.streams: dict[int, trio.CancelScope] = {}
        self.nursery: trio.Nursery | None = None
        self.in_hub = False
        self.writing_since: float | None = None
        """When the slice of output being written began (None between writes)."""
        self.written = 0
        """Bytes handed to the socket so far."""
        self.progress = Progress()
        """What the peer acknowledged of those, from one keepalive tick to the next."""
        self.unwritten = 0
        """Bytes the writer has taken from the connection and not yet written."""

    def __repr__(self) -> str:
        return f"<peer {self.session} {self.address}>"

    def send(self, record: Record, encoded: bytes | None = None) -> None:
        """Queue ``record``; drop the peer if it has stopped reading, and the peers holding
        the most output if the server holds too much."""
        try:
            self.conn.send(record, encoded=encoded)
        except ProtocolError:
            return  # closed or closing: nothing more goes out
        if self.conn.bytes_to_send > self.server.config.max_outgoing_bytes:
            self.drop(OUTPUT_PILED_UP)
            return
        self.recount()
        self.output_ready.set()

    def recount(self) -> None:
        """Tell the server's output budget what this peer holds now; drop whom it sheds."""
        held = self.conn.bytes_to_send + self.unwritten
        for victim in self.server.output.update(self, held):
            victim.drop(OVER_BUDGET)

    def drop(self, why: str) -> None:
        """End the connection at once, discarding its output; log ``why`` (see
        ``log_dropped``), once."""
        if not self.dropped:
            self.dropped = True
            log_dropped(self.name, self.user, why)
        self.conn.send_failed()
        self.unwritten = 0
        self.server.output.update(self, 0)
        self.cancel.cancel()

    def sending(self) -> bool:
        """Whether output is still on its way to the peer, which is taking it (asked at each
        keepalive tick, docs/protocol.md 8.5): some is queued or being written (the watchdog
        drops a peer that stops taking it), or the socket holds some that the peer has
        acknowledged more of since the last tick (one that stops is pinged and dropped)."""
        written = self.written  # before the socket is asked: never more than it holds
        moving = self.progress.moving(written, unacknowledged(self.stream.socket))
        return moving or self.writing_since is not None or self.conn.bytes_to_send > 0

    def say_goodbye(self, reason: str) -> None:
        """Queue Bye and end the session once it is written."""
        self.send(Bye(reason=reason[:500]))
        self.output_ready.set()


class TrioServer:
    """Accepts connections and drives the hub. ``serve`` runs until cancelled."""

    def __init__(self, hub: Hub, static_key: X25519PrivateKey, config: ServerConfig) -> None:
        self.hub = hub
        self.static_key = static_key
        self.config = config
        self._peers: dict[int, _Peer] = {}
        self.output: OutputBudget[_Peer] = OutputBudget(config.max_outgoing_total)
        """What the peers' output takes together (``output_budget``)."""
        self._slots = ConnectionSlots(config)
        self._failures = HubFailures()
        self._ids = itertools.count(1)
        self._hub_lock = trio.CapacityLimiter(1)
        self._password_turns = TrioTurns(config.password_threads)
        self._password_threads = trio.CapacityLimiter(config.password_threads)
        """Threads of their own for the checks (the turns let as many run at once), so that
        they never wait behind trio's default threads (file I/O)."""
        self._upload_checks = trio.CapacityLimiter(UPLOAD_CHECKS)
        self._stopping = trio.Event()
        self._all_gone = trio.Event()
        """Set when the last peer has gone (the shutdown waits on a fresh one)."""

    def stop(self) -> None:
        """Begin a graceful shutdown: Bye to everyone, flush, close the store."""
        self._stopping.set()

    @property
    def connections(self) -> int:
        """Connections open right now."""
        return len(self._peers)

    async def serve(
        self,
        *,
        task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on the configured address until ``stop()``; ``task_status`` gets the
        listeners (their ``socket.getsockname()`` has the port when 0 was asked for)."""
        quiet_trio_accept_log()  # out of descriptors, trio logs each retry: 10 a second
        listeners = await trio.open_tcp_listeners(self.config.port, host=self.config.host)
        accepting = trio.CancelScope()

        async def accept(nursery: trio.Nursery) -> None:
            with accepting:
                await trio.serve_listeners(self._handle, listeners, handler_nursery=nursery)

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._run_timers)
                nursery.start_soon(accept, nursery)
                task_status.started(listeners)
                await self._stopping.wait()
                accepting.cancel()
                self._all_gone = trio.Event()  # not the one set when all had left earlier
                for peer in list(self._peers.values()):
                    peer.say_goodbye("the server is shutting down")
                with trio.move_on_after(3):
                    if self._peers:
                        await self._all_gone.wait()
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                for listener in listeners:
                    await listener.aclose()
                await self._in_hub(self.hub.store.close)

    # --- one connection -------------------------------------------------------------------

    async def _handle(self, stream: trio.SocketStream) -> None:
        address = _address(stream)
        key = None if self._stopping.is_set() else self._slots.admit(address, len(self._peers))
        if key is None:
            await stream.aclose()
            return
        peer = _Peer(self, next(self._ids), stream, address, key)
        self._peers[peer.session] = peer
        try:
            with peer.cancel:
                async with trio.open_nursery() as nursery:
                    peer.nursery = nursery
                    nursery.start_soon(self._write, peer)
                    await self._read(peer)
                    peer.output_ready.set()  # let the writer flush the last words
                    with trio.move_on_after(2):
                        await peer.writer_done.wait()
                    nursery.cancel_scope.cancel()
        except* Exception:  # the last line of defence: a bug costs this connection only
            log.exception("the connection of %r failed; closing it", peer)
        finally:
            del self._peers[peer.session]
            self.output.forget(peer)
            self._slots.release(key, logged_in=peer.logged_in)
            if not self._peers:
                self._all_gone.set()
            with trio.CancelScope(shield=True):
                if peer.in_hub:
                    await self._call_hub(
                        peer, "closing the session of", self.hub.close_session, peer.session, _now()
                    )
                await stream.aclose()

    async def _read(self, peer: _Peer) -> None:
        """Feed the connection until it closes; run what each event asks for."""
        size = RECEIVE_SIZE
        while True:
            received = await feed(peer.conn, peer.stream, size, peer.sending)
            size = BULK_RECEIVE_SIZE if received == size else RECEIVE_SIZE
            if not await self._drain_events(peer):
                return
            if peer.conn.bytes_to_send:  # a Pong or a Ping (effects wake the writer themselves)
                peer.output_ready.set()

    async def _drain_events(self, peer: _Peer) -> bool:
        """Handle every event buffered; False once the connection is over. The records that
        arrived together go to the hub in one call (one thread hop, not one per record)."""
        conn = peer.conn
        batch: list[Record] = []
        while True:
            try:
                event = conn.next_event()
            except ProtocolError as exc:
                # What came before the violation still counts, whatever the peer left unread.
                await self._to_hub(peer, batch, wait_for_reader=False)
                if not peer.dropped:  # else the connection failed under a write of ours
                    log.info("%r broke the protocol: %r", peer, str(exc))  # may quote peer text
                return False
            if isinstance(event, Record):
                if isinstance(event, Bye):
                    continue
                batch.append(event)
                if not ends_batch(event, len(batch)):
                    continue
                if not await self._to_hub(peer, batch):
                    return True
                batch = []
                continue
            if not await self._to_hub(peer, batch):
                return True  # said goodbye: the writer ends the connection
            batch = []
            if event is NEED_DATA:
                return True
            if isinstance(event, ConnectionClosed):
                log.info("%r closed: %r", peer, event.reason)  # repr: peer text, escaped
                return False
            if isinstance(event, KeysEstablished):
                log.info("%r connected with key %s", peer, event.fingerprint)
                await self._in_hub(
                    self.hub.open_session, peer.session, peer.address_key, _now(), event.fingerprint
                )
                peer.in_hub = True

    async def _to_hub(
        self, peer: _Peer, records: list[Record], *, wait_for_reader: bool = True
    ) -> bool:
        """Let the hub handle ``records`` (once the peer has read its earlier replies down to
        the reply window, unless not ``wait_for_reader``) and run its effects; False if it
        failed."""
        if not records:
            return True
        while wait_for_reader and peer.conn.bytes_to_send > self.config.reply_window:
            await peer.wrote.wait()
        return await self._call_hub(
            peer, "a record from", self.hub.handle_all, peer.session, records, _now()
        )

    async def _call_hub(
        self, peer: _Peer, what: str, fn: Callable[..., Sequence[Effect]], *args: object
    ) -> bool:
        """Call ``fn`` on the hub's thread and run the effects it returns; False if it failed.

        A failure (a bug, or the store failing: "database is locked" past its busy timeout, a
        full disk) costs ``peer``'s connection, never the server: it is logged, the effects
        that still stand are run (those of what was stored before it) and ``peer`` is told
        goodbye (``HubFailures.report``). ``what`` names the call in the log, before the
        peer."""
        try:
            effects = await self._in_hub(fn, *args)
        except Exception as exc:
            goodbye = self._failures.report(exc, what, peer)
            if isinstance(exc, HandlingFailed):  # what came before the failure is stored
                await self._run_effects(exc.effects)
            peer.say_goodbye(goodbye)
            return False
        await self._run_effects(effects)
        return True

    async def _write(self, peer: _Peer) -> None:
        """Write whatever the connection has queued, taken in one go per wake-up and written
        in slices of at most WRITE_SLICE; end the peer once its connection is over and
        everything is out. While output waits, the keepalive leaves a peer that is taking it
        to ``_drop_stuck_writers`` (``_Peer.sending``)."""
        conn, stream = peer.conn, peer.stream
        try:
            while True:
                await peer.output_ready.wait()
                peer.output_ready = trio.Event()
                data = conn.data_to_send()
                if data:
                    view = memoryview(data)
                    peer.unwritten = len(data)
                    try:
                        for start in range(0, len(view), WRITE_SLICE):
                            # Watched by _drop_stuck_writers: a peer that takes a slice within
                            # write_timeout is never cut off, however long the whole takes.
                            peer.writing_since = trio.current_time()
                            written = view[start : start + WRITE_SLICE]
                            await stream.send_all(written)
                            peer.written += len(written)
                            peer.unwritten -= len(written)
                            peer.recount()
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        if conn.state in _OVER:  # its end is logged already
                            conn.send_failed()
                        else:
                            peer.drop(WENT_AWAY)
                        return
                    finally:
                        peer.writing_since = None
                        peer.unwritten = 0
                    peer.wrote.set()
                    peer.wrote = trio.Event()
                if conn.state in _OVER and not conn.bytes_to_send:
                    return
        finally:
            peer.writer_done.set()
            peer.cancel.cancel()

    # --- the hub and its effects ----------------------------------------------------------

    async def _in_hub(self, fn: Callable[..., T], *args: object) -> T:
        return await trio.to_thread.run_sync(partial(fn, *args), limiter=self._hub_lock)

    async def _run_effects(self, effects: Sequence[Effect]) -> None:
        for effect in effects:
            match effect:
                case Deliver(sessions=sessions, record=record):
                    encoded = encode_record(record)
                    for session in sessions:
                        peer = self._peers.get(session)
                        if peer is not None:
                            peer.send(record, encoded)
                    if isinstance(record, Authenticated):  # to the session that logged in
                        for session in sessions:
                            peer = self._peers.get(session)
                            if peer is None:
                                continue
                            peer.user = record.username
                            if not peer.logged_in:
                                peer.logged_in = True
                                self._slots.logged_in(peer.address_key)
                case Disconnect(session=session, reason=reason):
                    peer = self._peers.get(session)
                    if peer is not None:
                        peer.say_goodbye(reason)
                case VerifyPassword() | HashPassword():
                    peer = self._peers.get(effect.session)
                    if peer is not None and peer.nursery is not None:
                        peer.nursery.start_soon(self._check_password, peer, effect)
                case StreamFile():
                    peer = self._peers.get(effect.session)
                    if peer is not None and peer.nursery is not None:
                        scope = trio.CancelScope()
                        peer.streams[effect.transfer] = scope
                        peer.nursery.start_soon(self._stream, peer, effect, scope)
                case VerifyUpload():
                    peer = self._peers.get(effect.session)
                    if peer is not None and peer.nursery is not None:
                        peer.nursery.start_soon(self._verify_upload, peer, effect)
                case CancelStream(session=session, transfer=transfer):
                    peer = self._peers.get(session)
                    if peer is not None and transfer in peer.streams:
                        peer.streams[transfer].cancel()

    async def _check_password(self, peer: _Peer, effect: VerifyPassword | HashPassword) -> None:
        """Run an Argon2id check on its own threads, in its account's turn
        (``password_turns``), and report it to the hub."""
        argon2, hub = self.config.argon2, self.hub
        outcome: bool | str
        tell: Callable[..., Sequence[Effect]]
        async with self._password_turns.turn(user_key(effect.username)):
            if isinstance(effect, VerifyPassword):
                known = effect.password_hash
                check = partial(verify_password, effect.password, known, params=argon2)
                outcome = await trio.to_thread.run_sync(check, limiter=self._password_threads)
                what, tell = "the password check of", hub.password_verified
            else:
                make = partial(hash_password, effect.password, params=argon2)
                outcome = await trio.to_thread.run_sync(make, limiter=self._password_threads)
                what, tell = "the password hashing of", hub.password_hashed
        await self._call_hub(peer, what, tell, effect.session, effect.username, outcome, _now())

    async def _verify_upload(self, peer: _Peer, effect: VerifyUpload) -> None:
        """Read back and hash a completed upload on its own threads and report it to the hub.
        If the peer goes meanwhile, the read is abandoned; if the server is stopping, the
        hub is not told. Either way the session ends, and the upload stays (all its bytes
        received) to be completed again."""
        digest: Digest | ReadBackFailed
        try:
            digest = await trio.to_thread.run_sync(
                effect.hasher, limiter=self._upload_checks, abandon_on_cancel=True
            )
        except OSError as exc:
            digest = read_back_failed(exc, effect.file_id, peer)
        if self._stopping.is_set():  # its session ends: the upload stays, to complete again
            return
        await self._call_hub(
            peer,
            "the check of an upload of",
            self.hub.upload_verified,
            effect.session,
            effect.transfer,
            digest,
            _now(),
        )

    async def _stream(self, peer: _Peer, effect: StreamFile, scope: trio.CancelScope) -> None:
        """Send a stored file's chunks, pausing while the peer's queue is full.

        Each trip to the hub's thread reads up to ``stream_read_size`` bytes at once (the trip,
        not the read, is what costs); every chunk still goes out as its own FileChunk."""
        try:
            with scope:
                offset = effect.offset
                while offset < effect.size:
                    while peer.conn.bytes_to_send > self.config.stream_window:
                        await peer.wrote.wait()
                    queued, remaining = peer.conn.bytes_to_send, effect.size - offset
                    size = stream_read_size(self.config, queued, remaining)
                    try:
                        data = await self._in_hub(
                            self.hub.store.read_chunk, effect.file_id, offset, size
                        )
                        if scope.cancel_called:  # cancelled while the thread read
                            return
                        if len(data) != size:
                            raise ValueError(f"read {len(data)} bytes of {size}: file truncated")
                    except Exception:  # the disk, or the store ("database is locked")
                        log.exception("cannot read file %s for %r", effect.file_id, peer)
                        reason = "the server could not read the file"
                        peer.send(FileReject(transfer=effect.transfer, reason=reason))
                        return
                    for chunk in file_chunks(effect.transfer, offset, data):
                        peer.send(chunk)
                    offset += size
                peer.send(FileComplete(transfer=effect.transfer, sha256=effect.sha256))
        finally:
            if peer.streams.get(effect.transfer) is scope:
                del peer.streams[effect.transfer]
            with trio.CancelScope(shield=True):
                try:
                    await self._in_hub(self.hub.stream_finished, peer.session, effect.transfer)
                except Exception as exc:
                    what = "the end of a download of"
                    peer.say_goodbye(self._failures.report(exc, what, peer))

    async def _run_timers(self) -> None:
        """Expire typing notices (and old login failures) when the hub says they are due.

        A deadline set while this sleeps is seen at the next wake-up, so the sleep is at most
        TICK (as in the threaded server); the hub is asked on its own thread, like every call.
        """
        while True:
            deadline = await self._in_hub(self.hub.next_deadline)
            wait = TICK if deadline is None else min(TICK, deadline - _now())
            await trio.sleep(max(0.05, wait))
            try:
                effects = await self._in_hub(self.hub.tick, _now())
            except Exception:  # the store failed (locked?): that tick is lost, not the server
                log.exception("the hub's timers failed; they run again at the next tick")
                effects = []
            await self._run_effects(effects)
            self._drop_stuck_writers()

    def _drop_stuck_writers(self) -> None:
        """Cut off peers whose current slice of output has waited longer than
        ``write_timeout`` (one watchdog instead of a timeout scope around every write)."""
        late = trio.current_time() - self.config.write_timeout
        for peer in list(self._peers.values()):
            if peer.writing_since is not None and peer.writing_since < late:
                peer.drop(STOPPED_READING)


def _now() -> float:
    """Wall-clock seconds: message timestamps and hub deadlines are Unix times."""
    return time.time()


def _address(stream: trio.SocketStream) -> str:
    try:
        host = stream.socket.getpeername()[0]
    except OSError:
        return "unknown"
    return str(host)
