"""Server benchmarks: the servers over loopback, each next to a bare baseline from the same run.

Three kinds of process, all on 127.0.0.1 only:

* this process orchestrates (no event loop) and reads the server's RSS from ``/proc``;
* each server runs in its own process (the trio server, the threaded server,
  or a bare baseline: a trio or thread-per-connection server with no crypto and no hub);
* a load generator runs in a third process: trio, one task per client, raw
  ``sealchat.core.Connection`` objects over trio sockets (or plain length-prefixed frames
  against a bare server). Senders and receivers share that process, so every time is taken
  on one ``time.perf_counter()`` clock.

Benchmarks (sizes in brackets are the quick mode, ``SEALCHAT_BENCH_QUICK=1``; each size can
also be set alone with the environment variable named in ``_SIZES``):

1. fan-out: one 100-byte Message from one client to 1,000 [100] others in ``general``, timed
   from just before the sender's write until the last receiver has decrypted it; 20 [5] times.
   Baseline: a bare trio server whose one loop writes a frame of the same size to every
   other socket when a frame arrives. Both servers (each with its own load generator) run
   side by side and the sends alternate between them, so machine noise hits both alike.
2. room traffic: 100 [20] clients, 4 [2] of them sending as fast as the server relays (each
   keeps at most 32 messages not yet received by everyone), deliveries per second
   (messages x receivers) over 5 [2] one-second windows. Baseline: a bare trio relay that
   reads length-prefixed frames and queues each for every other connection's writer task.
   The windows alternate between the two, as in 1.
3. memory: server RSS per idle logged-in connection at 5,000 [500] connections, against a
   bare trio server holding the same number of idle sockets, and against the 30 KiB budget.
4. scale: 10,000 [1,000] logged-in clients held by one trio server process, and 1,000 [200]
   by the threaded server, with the time to log them all in; baselines: bare trio and bare
   thread-per-connection servers doing two round trips of the same sizes per connection.

Every client connects and logs in from 127.0.0.1, so the sealchat servers run with the limits
per address lifted to fit them all, as they would be for a NAT with that many users behind it:
``max_connections_per_address``, ``max_unauthenticated_per_address`` and
``address_connection_burst`` to ``max_connections``, and the hub's ``max_pending_logins`` and
``address_login_burst`` to more logins than any benchmark makes (each client has its own user
name, so the allowance per user is not in the way).

Logins use the ``CHEAP`` Argon2id parameters (documented for benchmarks only). Progress, the
individual samples and the CPU use of server and load generator go to stderr: a load
generator near 100% would mean the number measures it rather than the server.
"""

from __future__ import annotations

import os
import resource
import shutil
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from multiprocessing.connection import Connection as Pipe
from typing import Any

import trio
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from bench.harness import HOST, LENGTH, PASSWORD, ROOM, TEXT, Progress, Row, sizes
from bench.processes import Child, Children, CpuMeter, answer, serve_sealchat, trio_answer, vm_bytes
from sealchat.core import (
    NEED_DATA,
    Authenticated,
    Connection,
    ConnectionClosed,
    KeysEstablished,
    Login,
    LoginRejected,
    Message,
    PeerKeyReceived,
    ProtocolError,
    Role,
)
from sealchat.core.codec import encode_record
from sealchat.core.hub import HubConfig
from sealchat.core.limits import TAG_SIZE
from sealchat.transports.server_config import ServerConfig

RECEIVE_SIZE = 65536
LOGIN_PARALLEL = 100
"""Logins a load generator has in flight at once (well under the listen backlogs); once this
many have failed, the rest are not tried."""
LOGIN_TIMEOUT = 20.0
"""Seconds one login may take (a full server leaves connections unanswered in its backlog)."""
PRESENCE_LIMIT = HubConfig().presence_room_limit
"""Logins up to this many members of ``general`` are announced to every member online."""
BUDGET = 30 * 1024
"""Design budget for server RSS per idle logged-in connection, in bytes."""
LIFETIME = 600.0
"""No child process outlives this many seconds, whatever happens to the orchestrator."""
_TAG = 16
"""Bytes at the front of a bare frame's payload that carry its tag (a client_id)."""

# The bare "login": two round trips with the sizes of the real one (preamble + handshake
# message 1; message 2; message 3 + Login; Authenticated + OnlineUsers + HistoryEnd).
_BARE_LOGIN = ((44, 108), (128, 120))

_SIZES = {
    "FANOUT_N": (1000, 100),
    "FANOUT_REPS": (20, 5),
    "TRAFFIC_N": (100, 20),
    "TRAFFIC_SENDERS": (4, 2),
    "TRAFFIC_WINDOWS": (5, 2),
    "TRAFFIC_WINDOW": (32, 32),
    "MEMORY_N": (5000, 500),
    "SCALE_N": (10_000, 1000),
    "THREADED_N": (1000, 200),
}

_size = sizes(_SIZES)
_say = Progress("server", load=True)


def _raise_nofile() -> int:
    """Raise the descriptor limit to the hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        with suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _username(index: int) -> str:
    return f"user{index:05d}"


def _rss(pid: int) -> int:
    """Resident set size of ``pid`` in bytes (VmRSS)."""
    return vm_bytes(pid, "VmRSS")


def _frame_sizes() -> tuple[int, int]:
    """Bytes on the wire (length prefix included) of the room Message a client sends, and of
    the Message the server relays (with id, sender and timestamp filled in)."""
    sent = Message(text=TEXT, room=ROOM, client_id="f123")
    relayed = Message(
        text=TEXT, room=ROOM, client_id="f123", id=123456, sender=_username(0), ts=time.time()
    )
    overhead = LENGTH.size + TAG_SIZE
    return overhead + len(encode_record(sent)), overhead + len(encode_record(relayed))


# --- rows -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LowerIsBetter(Row):
    """A row whose quantity is better smaller (a time, a size): ``ratio`` is ceiling ÷ ours, so
    "≥ 50%" in the target column means "at most twice the baseline"."""

    @property
    def ratio(self) -> float:
        return self.ceiling / self.ours if self.ours else float("nan")


def _p99(samples: list[float]) -> float:
    """Nearest-rank 99th percentile (the maximum for fewer than 100 samples)."""
    ordered = sorted(samples)
    return ordered[max(0, -(-99 * len(ordered) // 100) - 1)]


# --- server processes -----------------------------------------------------------------------


def _server_main(pipe: Pipe, spec: dict[str, Any]) -> None:
    """Entry point of a server process: serve until the orchestrator says "stop"."""
    _raise_nofile()
    kind = spec["kind"]
    if kind in ("trio", "threads"):
        users = (_username(index) for index in range(spec["users"]))
        # Every benchmark client logs in from 127.0.0.1 at once: lift the per-address caps.
        everyone = ServerConfig().max_connections
        hub_config = HubConfig(
            messages_per_second=1e6,
            message_burst=1_000_000,
            max_pending_logins=1_000_000,
            address_login_burst=1_000_000,
        )
        config = ServerConfig(
            hub=hub_config,
            max_connections_per_address=everyone,
            max_unauthenticated_per_address=everyone,
            address_connection_burst=everyone,
        )
        serve_sealchat(pipe, spec["data_dir"], users, config, LIFETIME, threads=kind == "threads")
    elif kind == "bare-trio":
        trio.run(_serve_bare_trio, pipe, spec)
    elif kind == "bare-threads":
        _serve_bare_threads(pipe, spec)
    else:
        raise ValueError(f"unknown server kind {kind!r}")


class _BarePeer:
    """One connection of a bare trio server."""

    __slots__ = ("out", "ready", "stream")

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.out: list[bytes] = []
        self.ready = trio.Event()


async def _receive_exactly(stream: trio.SocketStream, size: int) -> None:
    while size > 0:
        data = await stream.receive_some(size)
        if not data:
            raise ConnectionError("closed in the middle of the bare login")
        size -= len(data)


def _split_frames(buffer: bytearray) -> list[bytes]:
    """Remove and return the complete length-prefixed frames at the front of ``buffer``."""
    frames, pos, end = [], 0, len(buffer)
    while end - pos >= 4:
        (size,) = LENGTH.unpack_from(buffer, pos)
        if end - pos - 4 < size:
            break
        frames.append(bytes(buffer[pos : pos + 4 + size]))
        pos += 4 + size
    del buffer[:pos]
    return frames


async def _serve_bare_trio(pipe: Pipe, spec: dict[str, Any]) -> None:
    """A trio server with no crypto and no hub.

    Every connection first does the bare login. Then, in mode "loop", a frame from any
    connection is written by that connection's task to every other socket in turn (one
    ``send_all`` after another); in mode "relay" it is queued for every other connection's
    writer task, which writes all it has queued in one call (the servers' own pattern).
    """
    relay = spec["mode"] == "relay"
    peers: dict[int, _BarePeer] = {}
    counter = iter(range(1 << 62))

    async def writer(peer: _BarePeer) -> None:
        while True:
            await peer.ready.wait()
            peer.ready = trio.Event()
            data = b"".join(peer.out)
            peer.out.clear()
            await peer.stream.send_all(data)

    async def read(peer: _BarePeer, me: int) -> None:
        buffer = bytearray()
        while True:
            data = await peer.stream.receive_some(RECEIVE_SIZE)
            if not data:
                return
            buffer += data
            for frame in _split_frames(buffer):
                if relay:
                    for other_id, other in peers.items():
                        if other_id != me:
                            other.out.append(frame)
                            other.ready.set()
                else:
                    for other_id, other in list(peers.items()):
                        if other_id != me:
                            await other.stream.send_all(frame)

    async def handle(stream: trio.SocketStream) -> None:
        me = next(counter)
        try:
            for request, reply in _BARE_LOGIN:
                await _receive_exactly(stream, request)
                await stream.send_all(bytes(reply))
            peer = peers[me] = _BarePeer(stream)
            if not relay:
                await read(peer, me)
                return
            async with trio.open_nursery() as nursery:
                nursery.start_soon(writer, peer)
                await read(peer, me)
                nursery.cancel_scope.cancel()
        except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
            pass
        finally:
            peers.pop(me, None)
            await stream.aclose()

    async def count(_: object) -> int:
        return len(peers)

    listeners = await trio.open_tcp_listeners(0, host=HOST)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, handle, listeners)
        pipe.send(("ready", listeners[0].socket.getsockname()[1]))
        await trio_answer(pipe, LIFETIME, {"count": count})
        nursery.cancel_scope.cancel()


def _serve_bare_threads(pipe: Pipe, spec: dict[str, Any]) -> None:
    """A thread per connection doing the bare login, then reading until EOF."""
    listener = socket.create_server((HOST, 0), backlog=1024)
    listener.settimeout(0.25)
    stopping = threading.Event()
    held: set[socket.socket] = set()
    lock = threading.Lock()

    def serve(sock: socket.socket) -> None:
        try:
            for request, reply in _BARE_LOGIN:
                remaining = request
                while remaining > 0:
                    data = sock.recv(remaining)
                    if not data:
                        return
                    remaining -= len(data)
                sock.sendall(bytes(reply))
            with lock:
                held.add(sock)
            while sock.recv(RECEIVE_SIZE):
                pass
        except OSError:
            pass
        finally:
            with lock:
                held.discard(sock)
            sock.close()

    def accept() -> None:
        while not stopping.is_set():
            try:
                sock, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=serve, args=(sock,), daemon=True).start()

    def count(_: object) -> int:
        with lock:
            return len(held)

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        pipe.send(("ready", listener.getsockname()[1]))
        answer(pipe, LIFETIME, {"count": count})
    finally:
        stopping.set()
        acceptor.join(2)
        listener.close()
        with lock:
            for sock in held:
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


# --- load-generator clients -----------------------------------------------------------------


async def _connect(port: int) -> trio.SocketStream:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        await sock.connect((HOST, port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


_CLIENT_ERRORS = (OSError, ConnectionError, trio.BrokenResourceError, ProtocolError)


class _Client:
    """A load-generator client. ``read_forever`` calls ``on_message(client_id)`` for every
    room message it receives, and answers the server's keepalive pings."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.stream: trio.SocketStream | None = None
        self.lock = trio.Lock()
        self.closed = False

    async def start(self, port: int) -> None:
        raise NotImplementedError

    def queue(self, client_id: str) -> None:
        raise NotImplementedError

    def take_output(self) -> bytes:
        raise NotImplementedError

    async def read_forever(self, on_message: Callable[[str], None]) -> None:
        raise NotImplementedError

    async def flush(self) -> None:
        assert self.stream is not None
        async with self.lock:
            data = self.take_output()
            if data:
                await self.stream.send_all(data)


class _SealchatClient(_Client):
    """A sealchat client: a raw ``Connection`` over a trio socket."""

    def __init__(self, index: int, key: X25519PrivateKey) -> None:
        super().__init__(index)
        self.conn = Connection(Role.CLIENT, static_key=key)

    async def start(self, port: int) -> None:
        stream = self.stream = await _connect(port)
        conn = self.conn
        conn.initiate()
        await stream.send_all(conn.data_to_send())
        while True:
            event = conn.next_event()
            if event is NEED_DATA:
                data = await stream.receive_some(RECEIVE_SIZE)
                if not data:
                    raise ConnectionError("the server closed the connection during login")
                conn.receive_data(data)
            elif isinstance(event, PeerKeyReceived):
                conn.accept_peer()
            elif isinstance(event, KeysEstablished):
                conn.send(Login(username=_username(self.index), password=PASSWORD))
                await stream.send_all(conn.data_to_send())
            elif isinstance(event, Authenticated):
                return
            elif isinstance(event, LoginRejected | ConnectionClosed):
                raise ConnectionError(f"login failed: {event!r}")

    def queue(self, client_id: str) -> None:
        self.conn.send(Message(text=TEXT, room=ROOM, client_id=client_id))

    def take_output(self) -> bytes:
        return self.conn.data_to_send()

    async def read_forever(self, on_message: Callable[[str], None]) -> None:
        conn, stream = self.conn, self.stream
        assert stream is not None
        try:
            while True:
                while (event := conn.next_event()) is not NEED_DATA:
                    if type(event) is Message:
                        on_message(event.client_id)
                    elif isinstance(event, ConnectionClosed):
                        return
                if conn.bytes_to_send:  # a Pong
                    await self.flush()
                data = await stream.receive_some(RECEIVE_SIZE)
                conn.receive_data(data)
        except (*_CLIENT_ERRORS, trio.ClosedResourceError):
            pass
        finally:
            self.closed = True


class _BareClient(_Client):
    """A client of the bare servers: the bare login, then length-prefixed frames."""

    def __init__(self, index: int, frame_size: int) -> None:
        super().__init__(index)
        self.frame_size = frame_size
        self.out: list[bytes] = []

    async def start(self, port: int) -> None:
        stream = self.stream = await _connect(port)
        for request, reply in _BARE_LOGIN:
            await stream.send_all(bytes(request))
            await _receive_exactly(stream, reply)

    def queue(self, client_id: str) -> None:
        payload = client_id.encode().ljust(_TAG).ljust(self.frame_size - LENGTH.size, b"x")
        self.out.append(LENGTH.pack(len(payload)) + payload)

    def take_output(self) -> bytes:
        data = b"".join(self.out)
        self.out.clear()
        return data

    async def read_forever(self, on_message: Callable[[str], None]) -> None:
        stream = self.stream
        assert stream is not None
        buffer = bytearray()
        try:
            while True:
                data = await stream.receive_some(RECEIVE_SIZE)
                if not data:
                    return
                buffer += data
                for frame in _split_frames(buffer):
                    on_message(frame[4 : 4 + _TAG].decode().rstrip())
        except (*_CLIENT_ERRORS, trio.ClosedResourceError):
            pass
        finally:
            self.closed = True


def _make_clients(params: dict[str, Any], count: int) -> list[_Client]:
    if params["flavour"] == "sealchat":
        key = X25519PrivateKey.generate()  # shared: the server does not care, it saves time
        return [_SealchatClient(i, key) for i in range(count)]
    return [_BareClient(i, params["frame_size"]) for i in range(count)]


async def _log_in_all(
    clients: list[_Client],
    port: int,
    nursery: trio.Nursery,
    on_message: Callable[[str], None],
    timeout: float,
    done_at: list[float] | None = None,
) -> tuple[float, list[str]]:
    """Log every client in (``LOGIN_PARALLEL`` at a time) and start its reader; returns the
    seconds taken and one line per failure. ``done_at`` gets each login's completion time,
    in seconds from the start."""
    limiter = trio.CapacityLimiter(LOGIN_PARALLEL)
    failures: list[str] = []
    start = time.perf_counter()

    async def one(client: _Client) -> None:
        async with limiter:
            if len(failures) >= LOGIN_PARALLEL:  # the server is full or gone: stop trying
                failures.append(f"client {client.index}: not tried")
                client.closed = True
                return
            try:
                with trio.fail_after(LOGIN_TIMEOUT):
                    await client.start(port)
            except (*_CLIENT_ERRORS, trio.TooSlowError) as exc:
                failures.append(f"client {client.index}: {exc!r}")
                client.closed = True
                return
        if done_at is not None:
            done_at.append(time.perf_counter() - start)
        nursery.start_soon(client.read_forever, on_message)

    with trio.move_on_after(timeout) as waited:
        async with trio.open_nursery() as logins:
            for client in clients:
                logins.start_soon(one, client)
    if waited.cancelled_caught:
        failures.append(f"logins not finished after {timeout} s")
    return time.perf_counter() - start, failures


# --- load-generator scenarios ---------------------------------------------------------------


def _cpu_meter(params: dict[str, Any]) -> CpuMeter:
    """CPU seconds of the server and of this load generator, in that order."""
    return CpuMeter({"server": params["server_pid"], "load generator": os.getpid()})


def _loadgen_main(pipe: Pipe, scenario: str, params: dict[str, Any]) -> None:
    """Entry point of the load-generator process."""
    _raise_nofile()
    result = trio.run(_SCENARIOS[scenario], pipe, params)
    pipe.send(("result", result))


async def _fanout(pipe: Pipe, params: dict[str, Any]) -> dict[str, Any]:
    """Log ``n + 1`` clients in and send two warm-up messages (which also flush any login
    traffic still in flight); then, for each "send" command, time one fan-out: client 0
    sends, until all ``n`` others have the message. Ends on "close"."""
    n = params["n"]
    clients = _make_clients(params, n + 1)
    state: dict[str, Any] = {"rep": 0, "tag": "", "count": 0, "done": trio.Event(), "at": 0.0}

    def on_message(tag: str) -> None:
        if tag == state["tag"]:
            state["count"] += 1
            if state["count"] == n:
                state["at"] = time.perf_counter()
                state["done"].set()

    async def once(sender: _Client) -> float:
        state.update(tag=f"f{state['rep']}", count=0, done=trio.Event(), rep=state["rep"] + 1)
        sender.queue(state["tag"])
        start = time.perf_counter()
        await sender.flush()
        with trio.move_on_after(30):
            await state["done"].wait()
        if not state["done"].is_set():  # say enough to tell a lost message from a lost client
            closed = sum(c.closed for c in clients)
            raise RuntimeError(
                f"fan-out {state['tag']}: {state['count']} of {n} receivers had it after 30 s; "
                f"{closed} of {len(clients)} client connections had closed"
            )
        return float(state["at"] - start)

    async with trio.open_nursery() as nursery:
        login_s, failures = await _log_in_all(clients, params["port"], nursery, on_message, 120)
        if failures:
            raise RuntimeError(f"{len(failures)} logins failed, e.g. {failures[:3]}")
        for _ in range(2):
            await once(clients[0])
        pipe.send(("ready", {"login_s": login_s}))
        meter = _cpu_meter(params)
        reps = 0

        async def send(_: object) -> float:
            nonlocal reps
            reps += 1
            return await once(clients[0])

        await trio_answer(pipe, LIFETIME, {"send": send}, end="close")
        # Both processes sit idle between sends, so their CPU time is the fan-outs'.
        cpu = tuple(meter.used(per=max(reps, 1)).values())
        nursery.cancel_scope.cancel()
    return {"cpu": cpu}


async def _traffic(pipe: Pipe, params: dict[str, Any]) -> dict[str, Any]:
    """Log ``n`` clients in; for each "window" command, the first ``senders`` clients send as
    fast as deliveries keep up (each with at most ``window`` messages not yet received by
    everyone) and deliveries per second are counted at the receivers over one second, after
    a warm-up; then the senders stop and everything sent is waited for. Ends on "close"."""
    n, senders, window = params["n"], params["senders"], params["window"]
    receivers = n - 1  # everyone but the sender
    clients = _make_clients(params, n)
    delivered = [0]
    pending: list[dict[int, int]] = [{} for _ in range(senders)]
    complete = [-1] * senders  # highest sequence number every receiver has, per sender
    wake = [trio.Event() for _ in range(senders)]
    sent = [0] * senders

    def on_message(tag: str) -> None:
        delivered[0] += 1
        who, _, seq_text = tag.partition(":")
        s, seq = int(who), int(seq_text)
        counts = pending[s]
        count = counts.get(seq, 0) + 1
        if count == receivers:
            del counts[seq]
            if seq > complete[s]:
                complete[s] = seq
                wake[s].set()
        else:
            counts[seq] = count

    async def send_loop(s: int, client: _Client, stopping: trio.Event) -> None:
        while True:
            while sent[s] - 1 - complete[s] >= window and not stopping.is_set():
                wake[s] = trio.Event()
                await wake[s].wait()
            if stopping.is_set():
                return
            while sent[s] - 1 - complete[s] < window:
                client.queue(f"{s}:{sent[s]}")
                sent[s] += 1
            await client.flush()

    async def one_window(_: object) -> dict[str, Any]:
        stopping = trio.Event()
        async with trio.open_nursery() as sending:
            for s in range(senders):
                sending.start_soon(send_loop, s, clients[s], stopping)
            await trio.sleep(0.3)  # warm-up
            meter = _cpu_meter(params)
            count, start = delivered[0], time.perf_counter()
            await trio.sleep(1.0)
            wall = time.perf_counter() - start
            rate = (delivered[0] - count) / wall
            cpu = tuple(meter.used(per=wall).values())
            stopping.set()
            for event in wake:
                event.set()
        with trio.fail_after(30):  # everything sent arrives: nothing was dropped
            while any(complete[s] < sent[s] - 1 for s in range(senders)):
                await trio.sleep(0.02)
        return {"rate": rate, "cpu": cpu}

    async with trio.open_nursery() as nursery:
        login_s, failures = await _log_in_all(clients, params["port"], nursery, on_message, 120)
        if failures:
            raise RuntimeError(f"{len(failures)} logins failed, e.g. {failures[:3]}")
        await trio.sleep(0.5)  # login traffic settles
        pipe.send(("ready", {"login_s": login_s}))
        await trio_answer(pipe, LIFETIME, {"window": one_window}, end="close")
        nursery.cancel_scope.cancel()
    return {"messages": sum(sent)}


async def _hold(pipe: Pipe, params: dict[str, Any]) -> dict[str, Any]:
    """Log ``n`` clients in, report, keep them connected until told to close, then report how
    many were still connected."""
    n = params["n"]
    clients = _make_clients(params, n)
    done_at: list[float] = []
    meter = _cpu_meter(params)
    async with trio.open_nursery() as nursery:
        login_s, failures = await _log_in_all(
            clients, params["port"], nursery, lambda tag: None, params["timeout"], done_at
        )
        cpu = tuple(meter.used(per=login_s).values())
        marks = sorted({min(n, PRESENCE_LIMIT), n // 4, n // 2, 3 * n // 4, n} - {0})
        milestones = [(k, done_at[k - 1]) for k in marks if k <= len(done_at)]
        pipe.send(
            (
                "ready",
                {"login_s": login_s, "failures": failures, "cpu": cpu, "milestones": milestones},
            )
        )
        await trio_answer(pipe, LIFETIME, {}, end="close")
        held = sum(not c.closed for c in clients)
        nursery.cancel_scope.cancel()
    return {"held": held}


_SCENARIOS: dict[str, Callable[[Pipe, dict[str, Any]], Awaitable[dict[str, Any]]]] = {
    "fanout": _fanout,
    "traffic": _traffic,
    "hold": _hold,
}


# --- the orchestrator -----------------------------------------------------------------------


@contextmanager
def _data_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="sealchat-bench-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _server_spec(kind: str, users: int, data_dir: str, mode: str = "loop") -> dict[str, Any]:
    return {"kind": kind, "users": users, "data_dir": data_dir, "mode": mode}


def _loadgen_params(kind: str, port: int, **extra: Any) -> dict[str, Any]:
    flavour = "bare" if kind.startswith("bare") else "sealchat"
    return {"flavour": flavour, "port": port, "frame_size": _frame_sizes()[1], **extra}


def _start_pairs(
    children: Children, data_dir: str, scenario: str, mode: str, users: int, **params: Any
) -> dict[str, Child]:
    """A sealchat trio server and a bare trio server, each with its logged-in load generator
    (``users`` clients); returns the load generators by server kind."""
    loadgens = {}
    for kind in ("trio", "bare-trio"):
        server, port = children.start(_server_main, _server_spec(kind, users, data_dir, mode))
        loadgen = children.spawn(
            _loadgen_main, scenario, _loadgen_params(kind, port, server_pid=server.pid, **params)
        )
        ready = loadgen.expect("ready", 300.0)
        _say(f"  {kind}: {users} clients logged in in {ready['login_s']:.2f} s")
        loadgens[kind] = loadgen
    return loadgens


def fanout() -> list[Row]:
    n, reps = _size("FANOUT_N"), _size("FANOUT_REPS")
    _say(f"fan-out: {n} receivers + 1 sender, {reps} sends to each server, interleaved")
    samples: dict[str, list[float]] = {"trio": [], "bare-trio": []}
    with _data_dir() as data_dir, Children() as children:
        loadgens = _start_pairs(children, data_dir, "fanout", "loop", n + 1, n=n)
        for _ in range(reps):
            for kind, loadgen in loadgens.items():
                samples[kind].append(loadgen.ask("send", timeout=60.0))
        for kind, loadgen in loadgens.items():
            loadgen.tell("close")
            server_cpu, loadgen_cpu = loadgen.expect("result", 60.0)["cpu"]
            _say(
                f"  {kind}: fan-out ms "
                + " ".join(f"{s * 1e3:.1f}" for s in samples[kind])
                + f"; CPU ms per fan-out: server {server_cpu * 1e3:.0f}, "
                f"load generator {loadgen_cpu * 1e3:.0f}"
            )
    ours, bare = samples["trio"], samples["bare-trio"]
    what = f"(1) fan-out of one 100-char message to {n:,} clients"
    ceiling = f"bare trio loop writing {n:,} sockets"
    return [
        LowerIsBetter(
            f"{what}, p50 of {reps} (ratio = bare ÷ ours)",
            "µs",
            statistics.median(ours) * 1e6,
            statistics.median(bare) * 1e6,
            ceiling,
            0.5,
        ),
        LowerIsBetter(
            f"{what}, p99 of {reps} (nearest rank; ratio = bare ÷ ours)",
            "µs",
            _p99(ours) * 1e6,
            _p99(bare) * 1e6,
            ceiling,
        ),
    ]


def traffic() -> list[Row]:
    n, senders, windows = _size("TRAFFIC_N"), _size("TRAFFIC_SENDERS"), _size("TRAFFIC_WINDOWS")
    window = _size("TRAFFIC_WINDOW")
    _say(f"room traffic: {n} clients, {senders} senders, {windows} x 1 s per server, interleaved")
    results: dict[str, list[dict[str, Any]]] = {"trio": [], "bare-trio": []}
    with _data_dir() as data_dir, Children() as children:
        loadgens = _start_pairs(
            children, data_dir, "traffic", "relay", n, n=n, senders=senders, window=window
        )
        for _ in range(windows):
            for kind, loadgen in loadgens.items():
                results[kind].append(loadgen.ask("window", timeout=60.0))
        for kind, loadgen in loadgens.items():
            loadgen.tell("close")
            loadgen.expect("result", 60.0)
            rates = [r["rate"] for r in results[kind]]
            server_cpu = statistics.median(r["cpu"][0] for r in results[kind])
            loadgen_cpu = statistics.median(r["cpu"][1] for r in results[kind])
            _say(
                f"  {kind}: deliveries/s per window {' '.join(f'{r:,.0f}' for r in rates)}; "
                f"CPU: server {server_cpu:.0%}, load generator {loadgen_cpu:.0%}"
            )
    return [
        Row(
            f"(2) room traffic: {n} clients, {senders} sending, median of {windows} x 1 s",
            "deliveries/s",
            statistics.median(r["rate"] for r in results["trio"]),
            statistics.median(r["rate"] for r in results["bare-trio"]),
            "bare trio relay (no crypto, no hub)",
        )
    ]


def _hold_clients(kind: str, n: int, mode: str = "loop") -> dict[str, Any]:
    """Start a ``kind`` server, log ``n`` clients in, measure; returns what was seen."""
    with _data_dir() as data_dir, Children() as children:
        server, port = children.start(_server_main, _server_spec(kind, n, data_dir, mode))
        time.sleep(0.5)
        rss_before = _rss(server.pid)
        params = _loadgen_params(kind, port, n=n, timeout=300, server_pid=server.pid)
        loadgen = children.spawn(_loadgen_main, "hold", params)
        ready = loadgen.expect("ready", 360.0)
        time.sleep(1.0)  # idle
        rss_after = _rss(server.pid)
        connections = server.ask("count", timeout=30.0)
        loadgen.tell("close")
        held = loadgen.expect("result", 60.0)["held"]
    failures = ready["failures"]
    _say(
        f"  {kind}: {n - len(failures)} of {n} logged in in {ready['login_s']:.2f} s, "
        f"{held} still connected after idling, server counts {connections}; "
        f"RSS {rss_before / 2**20:.1f} → {rss_after / 2**20:.1f} MiB "
        f"({(rss_after - rss_before) / n / 1024:.1f} KiB per connection)"
    )
    server_cpu, loadgen_cpu = ready["cpu"]
    _say(
        "    logged in: "
        + ", ".join(f"{k:,} after {t:.2f} s" for k, t in ready["milestones"])
        + f"; CPU during logins: server {server_cpu:.0%}, load generator {loadgen_cpu:.0%}"
    )
    for line in failures[:5]:
        _say(f"    {line}")
    return {
        "logged_in": n - len(failures),
        "held": min(held, connections),
        "seconds": ready["login_s"],
        "per_connection": (rss_after - rss_before) / n,
        "failures": failures,
    }


def memory() -> list[Row]:
    n = _size("MEMORY_N")
    _say(f"memory: {n} idle logged-in connections")
    ours = _hold_clients("trio", n)
    bare = _hold_clients("bare-trio", n)
    name = f"(3) server RSS per idle logged-in connection at {n:,}"
    return [
        LowerIsBetter(
            f"{name} (ratio = bare ÷ ours)",
            "B",
            ours["per_connection"],
            bare["per_connection"],
            "bare trio: socket + 1 task",
        ),
        LowerIsBetter(
            f"{name}, against the budget (ratio = budget ÷ ours)",
            "B",
            ours["per_connection"],
            BUDGET,
            "budget: 30 KiB",
            1.0,
        ),
    ]


def scale() -> list[Row]:
    rows = []
    limit = _raise_nofile()
    for kind, bare_kind, n, label in (
        ("trio", "bare-trio", _size("SCALE_N"), "trio server"),
        ("threads", "bare-threads", _size("THREADED_N"), "threaded server"),
    ):
        _say(f"scale: {label}, {n} clients (descriptor limit {limit} per process)")
        ours = _hold_clients(kind, n)
        bare = _hold_clients(bare_kind, n)
        seconds = ours["seconds"]
        held = (
            f"held all {n:,}, all logged in after {seconds:.1f} s"
            if ours["held"] == n
            else f"ONLY {ours['held']:,} of {n:,} held ({len(ours['failures'])} failed; "
            f"descriptor limit {limit}; logins ended after {seconds:.1f} s)"
        )
        rows.append(
            Row(
                f"(4) {label} {held} (CHEAP Argon2)",
                "logins/s",
                ours["logged_in"] / ours["seconds"],
                bare["logged_in"] / bare["seconds"],
                f"bare {kind}: 2 round trips",
            )
        )
    return rows


def run() -> list[Row]:
    _raise_nofile()
    return [*fanout(), *traffic(), *memory(), *scale()]
