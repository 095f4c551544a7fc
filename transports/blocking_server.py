"""The threaded sealchat server: plain blocking sockets, one thread per client.

Each client has a reader thread (the connection's own thread: it reads, runs the hub and
checks passwords) and a writer thread, so that a client that stops reading only ever blocks
its own writer. Completed uploads the store must read back and hash again are read on threads
of their own, so that their uploaders' connections go on meanwhile. The hub is shared behind
one lock, under which the records it produces are also queued (so every client gets them in
the hub's order); each connection has its own lock, since other clients' threads deliver to
it.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

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
from sealchat.core.records import file_chunks
from sealchat.transports.hub_failures import FAILED, HubFailures
from sealchat.transports.output_budget import OVER_BUDGET, OutputBudget
from sealchat.transports.password_turns import ThreadTurns
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
    ThrottledLog,
    log_dropped,
    peer_name,
)
from sealchat.transports.upload_checks import read_back_failed

log = logging.getLogger("sealchat.server")
T = TypeVar("T")
RECEIVE_SIZE = 65536
ACCEPT_RETRY = 0.1
"""Seconds the accept loop waits before it tries again when it has run out of descriptors,
memory or threads (as trio's ``serve_listeners`` does): new connections wait in the listen
backlog meanwhile, and those already open are served on."""
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_GONE_BEFORE_ACCEPTED = frozenset(
    getattr(errno, name)
    for name in (
        "ECONNABORTED",
        "EPROTO",
        "EPERM",
        "ECONNRESET",
        "ETIMEDOUT",
        "ENETDOWN",
        "ENETUNREACH",
        "EHOSTDOWN",
        "EHOSTUNREACH",
        "ENONET",
        "ENOPROTOOPT",
        "EOPNOTSUPP",
        "ENOSR",
        "ESOCKTNOSUPPORT",
        "EPROTONOSUPPORT",
    )
    if hasattr(errno, name)
)
"""What accept() may say of one connection that failed before it was taken (reset, timed
out, its network gone, a firewall's veto…): that connection is skipped, never the server."""
"""Errors of ``accept`` about that one connection only (trio's listener skips them too)."""
_OVER = (State.CLOSED, State.ERROR)
Slow = VerifyPassword | HashPassword | VerifyUpload
"""Effects run outside the hub lock, as they take a while: password checks by the client's
own thread, the reads of uploads back on threads of their own (``ThreadedServer.run_slow``)."""


class _Client:
    """One client connection and the two threads that serve it. Making one takes a second
    descriptor (the writer's), which may fail (``OSError``); the server starts ``writer``,
    then a thread for ``run``."""

    def __init__(
        self, server: ThreadedServer, session: int, sock: socket.socket, address: str, key: str
    ) -> None:
        self.server = server
        self.session = session
        self.sock = sock
        self.address = address
        self.address_key = key
        """What the limits per address count this connection by (``address_key``)."""
        self.name = peer_name(sock)
        """Its address and port, as the log names it."""
        self.logged_in = False
        self.user = ""
        """Whom it is logged in as ("" until then), as the log names it."""
        self.dropped = False
        """Set (under ``lock``) once the server has dropped it (and logged why): the failure
        of its connection that the reader meets next is no news."""
        self.out = sock.dup()
        """The writer's socket: its own timeout, apart from the reader's."""
        self.out.settimeout(server.config.write_timeout)
        self.writer = threading.Thread(target=self._write, name=f"write-{session}", daemon=True)
        self.conn = Connection(
            Role.SERVER,
            static_key=server.static_key,
            now=time.monotonic(),
            handshake_timeout=server.config.handshake_timeout,
            keepalive_interval=server.config.keepalive_interval,
        )
        self.lock = threading.Condition()
        """Guards ``conn``; notified whenever output is queued or written."""
        self.finished = False
        self.in_hub = False
        self.streams: dict[int, threading.Event] = {}
        """The running downloads by transfer number, each with its cancellation."""
        self.writing = False
        """Whether the writer is writing output it took (under ``lock``)."""
        self.written = 0
        """Bytes the writer has handed to the socket so far (only the writer adds to it)."""
        self.progress = Progress()
        """What the peer acknowledged of those, from one keepalive tick to the next."""
        self.forgotten = False
        """Set (under ``lock``) once the server has forgotten the client: its output counts
        no more, though its writer may still be finishing."""
        self.unwritten = 0
        """Bytes the writer has taken from the connection and not yet written (under
        ``lock``)."""

    def hung_up(self) -> bool:
        """Whether the peer has closed or reset its end while this (its reader) thread was
        busy elsewhere: a look at the socket that takes nothing from it."""
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        if not poller.poll(0):
            return False  # nothing to read, not even the end
        try:
            return self.sock.recv(1, socket.MSG_PEEK) == b""
        except OSError:  # reset
            return True

    def __repr__(self) -> str:
        return f"<client {self.session} {self.address}>"

    def send(self, record: Record, encoded: bytes | None = None) -> None:
        """Queue ``record`` for the writer; drop the client if it has stopped reading, and
        the clients holding the most output if the server holds too much."""
        with self.lock:
            try:
                self.conn.send(record, encoded=encoded)
            except ProtocolError:
                return
            if self.conn.bytes_to_send > self.server.config.max_outgoing_bytes:
                self._drop(OUTPUT_PILED_UP)
                return
            victims = self._recount()
            self.lock.notify_all()
        _drop_shed(victims)

    def _recount(self) -> list[_Client]:
        """Tell the server's output budget what this client holds now (under ``lock``); the
        clients it sheds, to be dropped once ``lock`` is released (``_drop_shed``). Nothing
        once the client is forgotten: its writer may outlive it a moment."""
        if self.forgotten:
            return []
        return self.server.output.update(self, self.conn.bytes_to_send + self.unwritten)

    def _drop(self, why: str) -> None:
        """End the connection at once, discarding its output (under ``lock``); log ``why``
        (see ``log_dropped``), once."""
        if not self.dropped:
            self.dropped = True
            log_dropped(self.name, self.user, why)
        self.conn.send_failed()
        self.unwritten = 0
        self.server.output.update(self, 0)
        self._abort()

    def goodbye(self, reason: str) -> None:
        self.send(Bye(reason=reason[:500]))

    def _abort(self) -> None:
        """Wake both threads for good: the socket is shut down under them."""
        self.finished = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.lock.notify_all()

    # --- the reader thread ----------------------------------------------------------------

    def run(self) -> None:
        try:
            self._read()
        except OSError:
            pass
        except Exception:  # the last line of defence: a bug costs this connection only
            log.exception("the connection of %r failed; closing it", self)
        finally:
            with self.lock:
                self.finished = True
                self.lock.notify_all()
            self.writer.join(timeout=2)
            self.server._forget(self)
            with contextlib.suppress(OSError):
                self.sock.close()

    def _read(self) -> None:
        conn = self.conn
        while not self.finished:
            with self.lock:
                timer = conn.get_timer()
            timeout = None if timer is None else timer - time.monotonic()
            if timeout is not None and timeout <= 0:
                # Due already (this thread was busy: a password check, the hub lock, a peer
                # reading its replies): handled before any wait. A timeout of 0 would make
                # the socket non-blocking, and recv raise BlockingIOError.
                data, timed_out = b"", True
            else:
                self.sock.settimeout(timeout)
                try:
                    data = self.sock.recv(RECEIVE_SIZE)
                    timed_out = False
                except TimeoutError:
                    data, timed_out = b"", True
                except ConnectionError:
                    data, timed_out = b"", False
            events: list[object] = []
            with self.lock:
                if timed_out:
                    self._timer_due(time.monotonic())
                else:
                    conn.receive_data(data)
                over = self._take_events(events)
                self.lock.notify_all()
            self._handle_events(events)
            if over:
                return

    def _timer_due(self, now: float) -> None:
        """Run the connection's timer (under ``lock``), telling its keepalive whether output
        is still on its way to the peer."""
        self.conn.handle_timer(now, sending=self._sending())

    def _sending(self) -> bool:
        """Whether output is still on its way to the peer, which is taking it (asked under
        ``lock`` at each keepalive tick, docs/protocol.md 8.5): some is queued or being
        written (the socket's write_timeout drops a peer that stops taking it), or the socket
        holds some that the peer has acknowledged more of since the last tick (one that
        stops is pinged and dropped)."""
        written = self.written  # before the socket is asked: never more than it holds
        moving = self.progress.moving(written, unacknowledged(self.sock))
        return moving or self.writing or self.conn.bytes_to_send > 0

    def _take_events(self, events: list[object]) -> bool:
        """Move buffered events into ``events``; True once the connection is over."""
        while True:
            try:
                event = self.conn.next_event()
            except ProtocolError as exc:
                if not self.dropped:  # else the connection failed under a write of ours
                    log.info("%r broke the protocol: %r", self, str(exc))  # may quote peer text
                return True
            if event is NEED_DATA:
                return False
            if isinstance(event, ConnectionClosed):
                log.info("%r closed: %r", self, event.reason)  # repr: peer text, escaped
                return True
            events.append(event)

    def _handle_events(self, events: list[object]) -> None:
        """Handle what one read produced, in order; the records that arrived together go to
        the hub in batches (one commit for each). Password checks run after all of them, as
        in the trio server: a login sent behind another one finds it in progress."""
        batch: list[Record] = []
        checks: list[Slow] = []
        for event in events:
            if isinstance(event, Record):
                if isinstance(event, Bye):
                    continue
                batch.append(event)
                if not ends_batch(event, len(batch)):
                    continue
            if not self._to_hub(batch, checks):
                return
            batch = []
            if isinstance(event, KeysEstablished):
                log.info("%r connected with key %s", self, event.fingerprint)
                server = self.server
                key = self.address_key
                server.in_hub(
                    server.hub.open_session, self.session, key, time.time(), event.fingerprint
                )
                self.in_hub = True
        if self._to_hub(batch, checks):
            for check in checks:
                self.server.run_slow(check)

    def _to_hub(self, records: list[Record], checks: list[Slow]) -> bool:
        """Let the hub handle ``records`` and carry out its effects, adding the slow ones it
        asks for (password checks, reading an upload back) to ``checks``; False if it
        failed."""
        if not records:
            return True
        server = self.server
        with self.lock:  # the peer reads its earlier replies down to the window first
            while self.conn.bytes_to_send > server.config.reply_window and not self.finished:
                self.lock.wait(1.0)
        try:
            checks += server.hub_effects(server.hub.handle_all, self.session, records, time.time())
        except Exception as exc:  # a bug must cost one connection, never the server
            self.goodbye(server.failures.report(exc, "a record from", self))
            return False
        return True

    # --- the writer thread ----------------------------------------------------------------

    def _write(self) -> None:
        try:
            self._write_all()
        except Exception:  # the last line of defence: a bug costs this connection only
            log.exception("the writer of %r failed; closing it", self)
            with self.lock:
                self.conn.send_failed()
                self._abort()

    def _write_all(self) -> None:
        out = self.out
        try:
            while True:
                with self.lock:
                    while not self.conn.bytes_to_send:
                        if self.finished or self.conn.state in _OVER:
                            data = self.conn.data_to_send()
                            break
                        self.lock.wait()
                    else:
                        data = self.conn.data_to_send()
                        self.writing = True
                        self.unwritten = len(data)
                    done = self.finished or self.conn.state in _OVER
                if data:
                    try:  # in slices: the socket's timeout is write_timeout for each
                        view = memoryview(data)
                        for start in range(0, len(view), WRITE_SLICE):
                            written = view[start : start + WRITE_SLICE]
                            out.sendall(written)
                            self.written += len(written)
                            with self.lock:
                                self.unwritten = max(0, self.unwritten - len(written))
                                victims = self._recount()  # (a pong may have come meanwhile)
                            _drop_shed(victims)
                    except OSError as exc:
                        with self.lock:
                            if self.finished or self.conn.state in _OVER:  # its end is logged
                                self.conn.send_failed()
                                self._abort()
                            else:
                                timed_out = isinstance(exc, TimeoutError)
                                self._drop(STOPPED_READING if timed_out else WENT_AWAY)
                        return
                    with self.lock:
                        self.writing = False
                        self.unwritten = 0
                        self.lock.notify_all()
                if done:
                    with self.lock:
                        self._abort()
                    return
        finally:
            out.close()


def _drop_shed(victims: list[_Client]) -> None:
    """Drop the clients the output budget shed, each under its own lock (taken only once the
    caller has let its own go: two clients shedding each other must not wait on each other)."""
    for victim in victims:
        with victim.lock:
            victim._drop(OVER_BUDGET)


class ThreadedServer:
    """Accepts connections on a listening socket; a thread per client drives the hub."""

    def __init__(self, hub: Hub, static_key: X25519PrivateKey, config: ServerConfig) -> None:
        self.hub = hub
        self.static_key = static_key
        self.config = config
        self._hub_lock = threading.Lock()
        self._password_turns = ThreadTurns(config.password_threads)
        self._upload_checks = threading.BoundedSemaphore(UPLOAD_CHECKS)
        self._clients: dict[int, _Client] = {}
        self.output: OutputBudget[_Client] = OutputBudget(config.max_outgoing_total)
        """What the clients' output takes together (``output_budget``)."""
        self._slots = ConnectionSlots(config)
        self.failures = HubFailures()
        """Reports the hub's failures on a client's requests and names their goodbye."""
        """Connections per address; under ``_clients_lock``, like ``_clients``."""
        self._clients_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._short_of_resources = ThrottledLog(logging.WARNING)
        """Said when a connection cannot be accepted or served for want of descriptors,
        memory or threads (only the accept loop says it)."""
        self._workers: set[threading.Thread] = set()
        """Client, download and upload-check threads: each may still call the hub, so stop()
        waits for them before it closes the store."""

    @property
    def connections(self) -> int:
        with self._clients_lock:
            return len(self._clients)

    def bind(self) -> tuple[str, int]:
        """Open the listening socket; returns the address (the port, if 0 was asked for)."""
        host, port = self.config.host, self.config.port
        # One family (create_server takes IPv4 unless told): IPv6 for an address or a name
        # that is IPv6 only, IPv4 for one that has both (as before; trio listens on both).
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        families = {info[0] for info in found}
        family = socket.AF_INET if socket.AF_INET in families else socket.AF_INET6
        listener = socket.create_server((host, port), family=family, backlog=1024)
        self._listener = listener
        host, port = listener.getsockname()[:2]
        return str(host), int(port)

    def start(self) -> tuple[str, int]:
        """Bind and serve in background threads; returns the address."""
        address = self.bind()
        for target, name in ((self._accept_loop, "accept"), (self._tick_loop, "hub-timers")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return address

    def serve_forever(self) -> None:
        """Bind and serve in this thread until ``stop()``."""
        if self._listener is None:
            self.bind()
        ticker = threading.Thread(target=self._tick_loop, name="hub-timers", daemon=True)
        ticker.start()
        self._threads.append(ticker)
        self._accept_loop()

    def stop(self) -> None:
        """Bye to everyone, wait briefly for it to go out, close the store."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.close()
        with self._clients_lock:
            clients = list(self._clients.values())
        for client in clients:
            client.goodbye("the server is shutting down")
        deadline = time.monotonic() + 3
        while self.connections and time.monotonic() < deadline:
            time.sleep(0.02)
        for client in clients:
            with client.lock:
                client._abort()
        with self._clients_lock:
            workers = list(self._workers)
        for worker in workers:  # a closing client still tells the hub (and the store)
            worker.join(max(0.0, deadline + 2 - time.monotonic()))
        with self._hub_lock:
            self.hub.store.close()

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        listener.settimeout(0.25)
        while not self._stopping.is_set():
            try:
                sock, peer = listener.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                if self._stopping.is_set():
                    return  # stop() closed the listener
                if exc.errno in _GONE_BEFORE_ACCEPTED:
                    continue
                if exc.errno not in _OUT_OF_RESOURCES:
                    raise  # loudly: a server that silently stops accepting looks alive
                self._short_of(f"cannot accept a connection: {os.strerror(exc.errno)}")
                continue
            self._admit(sock, str(peer[0]))

    def _admit(self, sock: socket.socket, address: str) -> None:
        """Serve a connection just accepted from ``address``, or close it (the server or
        the address has its fill of connections, or the server is stopping, or short of
        descriptors or threads)."""
        with self._clients_lock:
            key = self._slots.admit(address, len(self._clients))
        if key is None:
            sock.close()
            return
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client = _Client(self, next(self._ids), sock, address, key)
        except OSError as exc:  # no descriptor for the writer's socket, or the peer is gone
            with self._clients_lock:
                self._slots.release(key, logged_in=False)
            sock.close()
            if exc.errno in _OUT_OF_RESOURCES:
                self._short_of(f"cannot serve a connection: {os.strerror(exc.errno)}")
            return
        with self._clients_lock:
            if self._stopping.is_set():  # stop() has taken its list of clients
                self._slots.release(key, logged_in=False)
                client.out.close()
                sock.close()
                return
            self._clients[client.session] = client
        try:
            client.writer.start()
            self._start_worker(client.run, f"client-{client.session}")
        except RuntimeError as exc:  # "can't start new thread"
            with client.lock:
                client._abort()  # a writer already started ends, closing its socket
            with self._clients_lock:
                del self._clients[client.session]
                self._slots.release(key, logged_in=False)
            if client.writer.ident is None:
                client.out.close()
            sock.close()
            self._short_of(f"cannot start a thread for a connection: {exc}")

    def _short_of(self, what: str) -> None:
        """Say that the server is short of descriptors, memory or threads (at most once a
        minute), and wait a moment before accepting again."""
        self._short_of_resources(
            "%s; trying again every %g s, serving the connections already open meanwhile "
            "(if the load is genuine, raise the limit on open files, ulimit -n, or threads)",
            what,
            ACCEPT_RETRY,
        )
        self._stopping.wait(ACCEPT_RETRY)

    def _start_worker(self, target: Callable[..., object], name: str, *args: object) -> None:
        def run() -> None:
            try:
                target(*args)
            finally:
                with self._clients_lock:
                    self._workers.discard(thread)

        thread = threading.Thread(target=run, name=name, daemon=True)
        with self._clients_lock:
            self._workers.add(thread)
        try:
            thread.start()
        except RuntimeError:  # "can't start new thread"
            with self._clients_lock:
                self._workers.discard(thread)
            raise

    def _tick_loop(self) -> None:
        while not self._stopping.wait(0.25):
            try:
                self.call_hub(self.hub.tick, time.time())
            except Exception:  # the store failed (locked?): that tick is lost, not the timers
                log.exception("the hub's timers failed; they run again at the next tick")

    def _forget(self, client: _Client) -> None:
        with client.lock:  # its writer recounts under it: never after this
            client.forgotten = True
            self.output.forget(client)
        with self._clients_lock:
            if self._clients.pop(client.session, None) is not None:
                self._slots.release(client.address_key, logged_in=client.logged_in)
        if client.in_hub:
            try:
                self.call_hub(self.hub.close_session, client.session, time.time())
            except Exception:  # the effects that stand have run (hub_effects)
                log.exception("the hub failed on closing the session of %r", client)

    # --- the hub and its effects ----------------------------------------------------------

    def in_hub(self, fn: Callable[..., T], *args: object) -> T:
        """Call into the hub (or its store); one call at a time across all threads. Calls
        that return effects go through ``call_hub``."""
        with self._hub_lock:
            return fn(*args)

    def _client(self, session: int) -> _Client | None:
        with self._clients_lock:
            return self._clients.get(session)

    def call_hub(self, fn: Callable[..., Sequence[Effect]], *args: object) -> None:
        """Call into the hub, carry out the effects it returns, then the slow ones."""
        for check in self.hub_effects(fn, *args):
            self.run_slow(check)

    def hub_effects(self, fn: Callable[..., Sequence[Effect]], *args: object) -> list[Slow]:
        """Call into the hub and carry out the effects it returns, except the slow ones
        (password checks, reading an upload back): those are returned, for the caller to run
        with ``run_slow``.

        Records are queued on their connections before the hub lock is released, so no
        thread's deliveries overtake another's: every client gets records in the order the
        hub produced them (nothing reaches a session before its Authenticated, no live
        message cuts into the replay after login).
        """
        with self._hub_lock:
            try:
                effects = fn(*args)
            except HandlingFailed as exc:  # what came before the failure is stored: carry it out
                self._carry_out(exc.effects)
                raise
            return self._carry_out(effects)

    def _carry_out(self, effects: Sequence[Effect]) -> list[Slow]:
        """Queue records and start downloads (quick, under the hub lock); return the slow
        effects for the caller to run."""
        slow: list[Slow] = []
        for effect in effects:
            match effect:
                case Deliver(sessions=sessions, record=record):
                    encoded = encode_record(record)
                    for session in sessions:
                        client = self._client(session)
                        if client is not None:
                            client.send(record, encoded)
                    if isinstance(record, Authenticated):  # to the session that logged in
                        for session in sessions:
                            self._logged_in(session, record.username)
                case Disconnect(session=session, reason=reason):
                    client = self._client(session)
                    if client is not None:
                        client.goodbye(reason)
                case VerifyPassword() | HashPassword() | VerifyUpload():
                    slow.append(effect)
                case StreamFile():
                    client = self._client(effect.session)
                    if client is not None:
                        self._start_stream(client, effect)
                case CancelStream(session=session, transfer=transfer):
                    client = self._client(session)
                    if client is not None and transfer in client.streams:
                        with client.lock:  # a download waiting for room stops at once
                            client.streams[transfer].set()
                            client.lock.notify_all()
        return slow

    def _start_stream(self, client: _Client, effect: StreamFile) -> None:
        """Start the thread of a download (under the hub lock). If it cannot start, the
        download is refused, and the effects after it (others' deliveries) still run."""
        cancelled = client.streams[effect.transfer] = threading.Event()
        try:
            self._start_worker(self._stream, f"stream-{client.session}", client, effect, cancelled)
        except RuntimeError:  # "can't start new thread"
            log.warning("no thread for a download of %r; refusing it", client)
            del client.streams[effect.transfer]
            self.hub.stream_finished(client.session, effect.transfer)
            reason = "the server is too busy to send the file now; try again later"
            client.send(FileReject(transfer=effect.transfer, reason=reason))

    def _logged_in(self, session: int, user: str) -> None:
        """Count ``session``'s connection as logged in (as ``user``) for the limits per
        address."""
        with self._clients_lock:
            client = self._clients.get(session)
            if client is None:
                return
            client.user = user
            if not client.logged_in:
                client.logged_in = True
                self._slots.logged_in(client.address_key)

    def run_slow(self, effect: Slow) -> None:
        """Run a slow effect outside the hub lock: a password check in this (the client's
        reader) thread, the read back of an upload on a thread of its own (in this one if
        no thread can start), so that the uploader's connection goes on meanwhile."""
        if isinstance(effect, VerifyUpload):
            try:
                self._start_worker(self.verify_upload, f"upload-check-{effect.session}", effect)
            except RuntimeError:  # "can't start new thread"
                self.verify_upload(effect)
        else:
            self.check_password(effect)

    def verify_upload(self, effect: VerifyUpload) -> None:
        """Read back and hash a completed upload, outside the hub lock, and report it (the
        hub does nothing with it if the session has ended meanwhile: the upload stays, to be
        completed again). If the server is stopping by then, the hub is not told either. If
        the hub (or its store) fails on the outcome, the client is told goodbye."""
        digest: Digest | ReadBackFailed
        try:
            with self._upload_checks:
                if self._stopping.is_set() or self._client(effect.session) is None:
                    return  # the read would be for nothing: the upload stays as it is
                digest = effect.hasher()
        except OSError as exc:
            digest = read_back_failed(exc, effect.file_id, f"session {effect.session}")
        except Exception as exc:  # a bug costs the uploader its connection, never the server
            self._failed(effect.session, exc, "the check of an upload of")
            return
        if self._stopping.is_set():
            return
        try:
            self.call_hub(
                self.hub.upload_verified, effect.session, effect.transfer, digest, time.time()
            )
        except Exception as exc:  # a bug or a failing store costs one connection, not the server
            self._failed(effect.session, exc, "the check of an upload of")

    def _failed(self, session: int, exc: Exception, what: str) -> None:
        """The hub (or its store) failed on the outcome of ``what`` session ``session``
        asked for: it is logged, and the session's client, if still there, told goodbye."""
        client = self._client(session)
        goodbye = self.failures.report(
            exc, what, f"session {session}" if client is None else client
        )
        if client is not None:
            client.goodbye(goodbye)

    def check_password(self, effect: VerifyPassword | HashPassword) -> None:
        """Run an Argon2id check in this (the client's reader) thread, in its account's turn
        (``password_turns``), and report it. If the hub (or its store) fails on the outcome,
        the client is told goodbye, as for a record (the effects that stand have run)."""
        try:
            argon2, hub = self.config.argon2, self.hub
            outcome: bool | str
            tell: Callable[..., Sequence[Effect]]
            with self._password_turns.turn(user_key(effect.username)):
                client = self._client(effect.session)
                if client is None or client.hung_up():
                    return  # gone while it waited: a check for no one (its reader ends it)
                if isinstance(effect, VerifyPassword):
                    outcome = verify_password(effect.password, effect.password_hash, params=argon2)
                    tell = hub.password_verified
                else:
                    outcome = hash_password(effect.password, params=argon2)
                    tell = hub.password_hashed
            self.call_hub(tell, effect.session, effect.username, outcome, time.time())
        except Exception as exc:  # a bug or a failing store costs one connection, not the server
            self._failed(effect.session, exc, "the password check of")

    def _stream(self, client: _Client, effect: StreamFile, cancelled: threading.Event) -> None:
        """Send a stored file's chunks, waiting while the client's queue is full; up to
        ``stream_read_size`` bytes are read per turn with the hub, a FileChunk each MAX_CHUNK."""
        try:
            offset = effect.offset
            while offset < effect.size:
                with client.lock:  # a cancellation ends the wait (CancelStream notifies)
                    while (
                        client.conn.bytes_to_send > self.config.stream_window
                        and not client.finished
                        and not cancelled.is_set()
                    ):
                        client.lock.wait(1.0)
                if client.finished or cancelled.is_set():
                    return
                with client.lock:
                    queued = client.conn.bytes_to_send
                size = stream_read_size(self.config, queued, effect.size - offset)
                try:
                    data = self.in_hub(self.hub.store.read_chunk, effect.file_id, offset, size)
                    if client.finished or cancelled.is_set():
                        return  # cancelled while this thread read
                    if len(data) != size:
                        raise ValueError(f"read {len(data)} bytes of {size}: file truncated")
                except Exception:  # the disk, or the store ("database is locked")
                    log.exception("cannot read file %s for %r", effect.file_id, client)
                    reason = "the server could not read the file"
                    client.send(FileReject(transfer=effect.transfer, reason=reason))
                    return
                for chunk in file_chunks(effect.transfer, offset, data):
                    client.send(chunk)
                offset += size
            client.send(FileComplete(transfer=effect.transfer, sha256=effect.sha256))
        except Exception:  # the last line of defence: a bug costs this connection only
            log.exception("the download of %r failed; closing its connection", client)
            client.goodbye(FAILED)
        finally:
            with self._hub_lock:  # under the lock that runs CancelStream effects
                if client.streams.get(effect.transfer) is cancelled:
                    del client.streams[effect.transfer]
            try:
                self.in_hub(self.hub.stream_finished, client.session, effect.transfer)
            except Exception as exc:
                what = "the end of a download of"
                client.goodbye(self.failures.report(exc, what, client))
