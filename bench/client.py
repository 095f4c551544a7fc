"""Client benchmarks: the trio client library against a trio server over loopback, each next to
a minimal TLS baseline measured in the same run.

Every process gets its own core (this machine has two): the orchestrator (this process) only
starts children and reads their results from pipes; servers, clients, senders and receivers
each run in a child process started with the ``spawn`` context. Everything is on 127.0.0.1.

1. file transfer: a file of random bytes (1 GiB [64 MiB in quick mode]), generated once into a
   temp file, uploaded with ``ChatClient.send_file`` and downloaded again with
   ``ChatClient.download``, in MB/s (10^6 bytes per second) of the whole call: the upload
   includes the client's SHA-256 of the file and the server's verification (hash + fsync);
   the download includes writing the ``.part`` file, its fsync and the SHA-256 check. The
   phases go to stderr.
   Baselines (a sender process and a receiver process, blocking sockets, 64 KiB chunks read
   from the same file, an 8-byte size header and a 32-byte reply): TLS 1.3 restricted to
   TLS_AES_256_GCM_SHA384 with the receiver hashing what it receives with SHA-256 (the
   target: sealchat >= 1.3x); for orientation, the same receiver also appending to a file
   (as sealchat's server and downloading client do), the same without the hash, and raw TCP
   with the hash. Python's ``ssl`` has no ``set_ciphersuites``, so the TLS processes start
   with ``OPENSSL_CONF`` pointing at a config whose ``system_default`` section sets
   ``Ciphersuites``; the suite both sides actually negotiated (``SSLSocket.cipher()``) is
   checked and shown in the table.
   The baseline is direction-free (sender and receiver are the same programs whichever side
   listens), so one measurement per repetition serves as ceiling for both upload and download.
   The sealchat lines on stderr also give the CPU seconds client and server used (from
   ``/proc``): a side near the wall time is the bottleneck.
2. messages: 100-character messages from one client to another through the server, per second,
   from the sender's first ``send_message`` to the receiver's last ``Message`` event (one
   system-wide monotonic clock, read in both processes). Baseline: a TLS relay process that
   accepts two TLS connections and forwards complete length-prefixed frames (of the size of
   the encoded Message record) from the sender's to the receiver's, one sender process
   writing one frame per call and one receiver process counting frames.

Sizes: ``SEALCHAT_BENCH_QUICK=1`` shrinks them; each can be set alone with the environment
variable named in ``_SIZES`` (``SEALCHAT_BENCH_FILE_MIB=256``...). ``SEALCHAT_BENCH_PROFILE=1``
adds one upload, one download and one message burst under ``py-spy`` (if installed), attached
to every sealchat process, and prints where their time goes to stderr (not in the table).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import shutil
import signal
import socket
import ssl
import statistics
import struct
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any

import trio

from bench.harness import HOST, LENGTH, PASSWORD, ROOM, TEXT, Progress, Row, flag, sizes
from bench.processes import Child, Children, CpuMeter, answer, serve_sealchat, trio_answer, vm_bytes

UPLOADER, SENDER, RECEIVER = "uploader", "sender", "receiver"
CHUNK = 64 * 1024
"""Bytes per read and per write of the baseline senders and receivers."""
SUITE = "TLS_AES_256_GCM_SHA384"
LIFETIME = 900.0
"""No child waits for a command longer than this, whatever happens to the orchestrator."""
SOCKET_TIMEOUT = 300.0
PROFILE_RATE = 200
"""py-spy samples per second."""
MiB = 1 << 20
_SIZE = struct.Struct(">Q")

PROFILE = flag("PROFILE")
_SIZES = {
    "FILE_MIB": (1024, 64),
    "FILE_REPS": (3, 3),
    "MSG_N": (50_000, 5000),
    "MSG_REPS": (5, 3),
}

_size = sizes(_SIZES)
_say = Progress("client")


# --- the sealchat processes -----------------------------------------------------------------


def _sealchat_server(pipe: Pipe, data_dir: str, users: list[str]) -> None:
    """The trio server (see ``serve_sealchat``) with no rate or size limit in the way."""
    from sealchat.core.hub import HubConfig
    from sealchat.transports.server_config import ServerConfig

    hub_config = HubConfig(
        messages_per_second=1e9,
        message_burst=1_000_000_000,
        max_file_size=1 << 40,
        user_quota=1 << 44,
    )
    # Room for the whole message burst queued for a receiver that falls behind (the TLS
    # relay has no such limit either: it simply blocks).
    config = ServerConfig(hub=hub_config, max_outgoing_bytes=1 << 30)
    serve_sealchat(pipe, data_dir, users, config, LIFETIME)


async def _trust(server: str, fingerprint: str) -> bool:
    del server, fingerprint
    return True


@contextlib.asynccontextmanager
async def _logged_in(port: int, work: Path, name: str) -> AsyncIterator[Any]:
    """A connected ChatClient, logged in as ``name``, trusting the server's key."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from sealchat.transports.pinning import KnownServers
    from sealchat.transports.trio_client import connect

    work.mkdir(parents=True, exist_ok=True)
    async with connect(
        HOST,
        port,
        static_key=X25519PrivateKey.generate(),
        known_servers=KnownServers(work / "known_servers"),
        confirm_new_key=_trust,
        downloads_dir=work / "downloads",
        reconnect=False,
    ) as client:
        await client.login(name, PASSWORD)
        yield client


class _Phases:
    """Times of a transfer's progress: first report (the transfer is accepted) and last one
    (every chunk is out, or in)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.first: float | None = None
        self.last: float | None = None

    def progress(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if self.first is None:
            self.first = now
        if done >= total:
            self.last = now

    def split(self, names: tuple[str, str, str]) -> dict[str, float]:
        end = time.perf_counter()
        first = self.first if self.first is not None else end
        last = self.last if self.last is not None else end
        return dict(zip(names, (first - self.start, last - first, end - last), strict=True))


def _file_client(pipe: Pipe, port: int, work: str) -> None:
    """A logged-in client that uploads and downloads on command."""
    from sealchat.core import FileInfo

    async def main() -> None:
        async with _logged_in(port, Path(work), UPLOADER) as client, trio.open_nursery() as n:

            async def upload(path: str) -> tuple[float, dict[str, float], str]:
                phases = _Phases()
                info: FileInfo = await client.send_file(
                    Path(path), room=ROOM, progress=phases.progress
                )
                split = phases.split(("hash + offer", "stream", "server verify"))
                return sum(split.values()), split, info.file_id

            async def download(file_id: str) -> tuple[float, dict[str, float], int]:
                phases = _Phases()
                path = await client.download(file_id, progress=phases.progress)
                split = phases.split(("request", "stream + write", "fsync + hash"))
                size = path.stat().st_size
                path.unlink()
                return sum(split.values()), split, size

            n.start_soon(_drain, client.events(), lambda _event: None)
            pipe.send(("ready", os.getpid()))
            await trio_answer(pipe, LIFETIME, {"upload": upload, "download": download})
            n.cancel_scope.cancel()

    trio.run(main)


async def _drain(events: trio.MemoryReceiveChannel[Any], on_event: Callable[[Any], None]) -> None:
    async for event in events:
        on_event(event)


def _chat_client(pipe: Pipe, port: int, work: str, name: str) -> None:
    """SENDER sends ("send", n) messages as fast as it can and answers the time before the
    first; RECEIVER, told ("expect", n), answers "armed" at once and, once n more messages
    from SENDER have arrived, the time of the last."""
    from sealchat.core import Message

    async def main() -> None:
        async with _logged_in(port, Path(work), name) as client, trio.open_nursery() as n:
            count = 0
            target = 0
            reached = trio.Event()
            last = 0.0

            def on_event(event: Any) -> None:
                nonlocal count, last
                if isinstance(event, Message) and event.sender == SENDER:
                    count += 1
                    if count == target:
                        last = time.monotonic()
                        reached.set()

            async def send(number: int) -> float:
                start = time.monotonic()
                for _ in range(number):
                    await client.send_message(TEXT, room=ROOM)
                return start

            async def expect(number: int) -> float:
                nonlocal reached, target
                reached = trio.Event()
                target = count + number
                pipe.send(("armed", None))
                with trio.fail_after(LIFETIME):
                    await reached.wait()
                return last

            n.start_soon(_drain, client.events(), on_event)
            pipe.send(("ready", os.getpid()))
            await trio_answer(pipe, LIFETIME, {"send": send, "expect": expect})
            n.cancel_scope.cancel()

    trio.run(main)


# --- TLS and the baseline processes ---------------------------------------------------------


def _make_certificate(folder: Path) -> None:
    """A self-signed P-256 certificate for "localhost": cert.pem and key.pem in ``folder``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _openssl_env(folder: Path) -> dict[str, str]:
    """The environment that makes OpenSSL in a new process offer only TLS 1.3 with
    TLS_AES_256_GCM_SHA384 (Python's ``ssl`` cannot set TLS 1.3 suites itself)."""
    conf = folder / "openssl.cnf"
    conf.write_text(
        "openssl_conf = openssl_init\n"
        "[openssl_init]\nssl_conf = ssl_sect\n"
        "[ssl_sect]\nsystem_default = system_default_sect\n"
        f"[system_default_sect]\nMinProtocol = TLSv1.3\nCiphersuites = {SUITE}\n"
    )
    return {"OPENSSL_CONF": str(conf)}


def _tls_server(sock: socket.socket, certs: str) -> ssl.SSLSocket:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(Path(certs) / "cert.pem", Path(certs) / "key.pem")
    return ctx.wrap_socket(sock, server_side=True)


def _tls_client(sock: socket.socket, certs: str) -> ssl.SSLSocket:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(Path(certs) / "cert.pem")
    return ctx.wrap_socket(sock, server_hostname="localhost")


def _suite(sock: socket.socket) -> str:
    """The negotiated cipher suite, or "none" for plain TCP."""
    if isinstance(sock, ssl.SSLSocket):
        cipher = sock.cipher()
        return f"{cipher[1]} {cipher[0]}" if cipher else "?"
    return "none"


def _accept_one(listener: socket.socket, certs: str | None) -> socket.socket:
    conn, _ = listener.accept()
    conn.settimeout(SOCKET_TIMEOUT)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as trio's sockets
    return _tls_server(conn, certs) if certs else conn


def _connect(port: int, certs: str | None) -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=SOCKET_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return _tls_client(sock, certs) if certs else sock


def _receive_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        more = sock.recv(size - len(data))
        if not more:
            raise ConnectionError("closed early")
        data += more
    return bytes(data)


def _bulk_receiver(pipe: Pipe, certs: str | None, digest: bool, store: str) -> None:
    """Listen, accept one connection, receive a size-prefixed blob in 64 KiB reads (hashing
    it with SHA-256 if ``digest``, appending it to the file ``store`` if set) and answer the
    32-byte digest."""
    out = os.open(store, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600) if store else -1
    with contextlib.ExitStack() as cleanup, socket.create_server((HOST, 0)) as listener:
        if store:
            cleanup.callback(os.unlink, store)
            cleanup.callback(os.close, out)
        pipe.send(("ready", listener.getsockname()[1]))
        listener.settimeout(SOCKET_TIMEOUT)
        with _accept_one(listener, certs) as conn:
            (remaining,) = _SIZE.unpack(_receive_exactly(conn, _SIZE.size))
            hasher = hashlib.sha256()
            buffer = bytearray(CHUNK)
            view = memoryview(buffer)
            while remaining:
                n = conn.recv_into(buffer, min(CHUNK, remaining))
                if not n:
                    raise ConnectionError("closed early")
                if digest:
                    hasher.update(view[:n])
                if store:
                    written = 0
                    while written < n:
                        written += os.write(out, view[written:n])
                remaining -= n
            conn.sendall(hasher.digest() if digest else bytes(32))
            pipe.send(("done", _suite(conn)))


def _bulk_sender(pipe: Pipe, port: int, certs: str | None, path: str, expected: bytes) -> None:
    """Connect (and finish the handshake), then time: the size header, the file in 64 KiB
    reads and writes, and the receiver's 32-byte answer (checked unless ``expected`` is
    empty)."""
    size = os.path.getsize(path)
    with _connect(port, certs) as sock, open(path, "rb", buffering=0) as source:
        buffer = bytearray(CHUNK)
        view = memoryview(buffer)
        start = time.perf_counter()
        sock.sendall(_SIZE.pack(size))
        while n := source.readinto(buffer):
            sock.sendall(view[:n])
        answer = _receive_exactly(sock, 32)
        seconds = time.perf_counter() - start
        if expected and answer != expected:
            raise ValueError("the receiver's SHA-256 differs")
        pipe.send(("ready", (seconds, _suite(sock))))


def _frames_end(buffer: bytearray | bytes) -> tuple[int, int]:
    """(bytes, count) of the complete length-prefixed frames at the front of ``buffer``."""
    pos, count, end = 0, 0, len(buffer)
    while end - pos >= 4:
        (size,) = LENGTH.unpack_from(buffer, pos)
        if end - pos - 4 < size:
            break
        pos += 4 + size
        count += 1
    return pos, count


def _tls_relay(pipe: Pipe, certs: str) -> None:
    """Accept the receiver's TLS connection, then the sender's; forward every complete frame
    from the sender to the receiver (one write per read) until the sender goes away."""
    with socket.create_server((HOST, 0)) as listener:
        pipe.send(("ready", listener.getsockname()[1]))
        listener.settimeout(SOCKET_TIMEOUT)
        with _accept_one(listener, certs) as receiver, _accept_one(listener, certs) as sender:
            receiver.settimeout(None)
            sender.settimeout(None)  # idle between repetitions
            buffer = bytearray()
            while data := sender.recv(CHUNK):
                buffer += data
                end, _ = _frames_end(buffer)
                if end:
                    receiver.sendall(buffer[:end])
                    del buffer[:end]


def _frame_receiver(pipe: Pipe, port: int, certs: str) -> None:
    """Told ("expect", n), answers "armed" at once and, once n more frames have arrived, the
    time of the last."""
    with _connect(port, certs) as sock:
        buffer = bytearray()

        def expect(number: int) -> float:
            pipe.send(("armed", None))
            count = 0
            while count < number:
                data = sock.recv(CHUNK)
                if not data:
                    raise ConnectionError("the relay closed")
                buffer.extend(data)
                end, frames = _frames_end(buffer)
                del buffer[:end]
                count += frames
            return time.monotonic()

        pipe.send(("ready", _suite(sock)))
        answer(pipe, LIFETIME, {"expect": expect})


def _frame_sender(pipe: Pipe, port: int, certs: str, payload: bytes) -> None:
    """Sends ("send", n) frames as fast as it can and answers the time before the first."""
    frame = LENGTH.pack(len(payload)) + payload
    with _connect(port, certs) as sock:

        def send(number: int) -> float:
            start = time.monotonic()
            for _ in range(number):
                sock.sendall(frame)
            return start

        pipe.send(("ready", _suite(sock)))
        answer(pipe, LIFETIME, {"send": send})


# --- profiling ------------------------------------------------------------------------------


class _Profiler:
    """py-spy attached to some processes for the length of a ``with`` block."""

    def __init__(self, folder: Path, targets: dict[str, int]) -> None:
        self.folder = folder
        self.targets = targets
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def __enter__(self) -> _Profiler:
        spy = shutil.which("py-spy")
        assert spy is not None
        for label, pid in self.targets.items():
            out = self.folder / f"{label}.txt"
            command = [spy, "record", "--pid", str(pid), "--rate", str(PROFILE_RATE)]
            command += ["--format", "raw", "--threads", "--output", str(out)]
            self.running[label] = subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        time.sleep(1.0)  # attached before the work starts
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.running.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        for proc in self.running.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def report(self, top: int = 14) -> None:
        for label in self.targets:
            _summarise(label, self.folder / f"{label}.txt", top)


_WAITS = ("_io_epoll.py:243", "_thread_cache.py:211", "selectors.py:")
"""Leaf frames that are waits (trio's epoll poll, an idle trio worker, a pipe poll): py-spy's
idle detection misses short waits, so these are sampled although the thread sleeps."""
_SEALCHAT_DIRS = frozenset({"core", "hub", "transports"})


def _summarise(label: str, raw: Path, top: int) -> None:
    """Shares of the samples: per thread kind, waits, the hottest lines (self) and the
    hottest sealchat functions (inclusive), from py-spy's collapsed stacks."""
    if not raw.exists():
        _say(f"  {label}: no profile written")
        return
    kinds: Counter[str] = Counter()
    lines: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    total = waits = 0
    for row in raw.read_text().splitlines():
        stack, _, count = row.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        code = [f for f in stack.split(";") if " (" in f and not f.startswith("thread (")]
        if not code:
            continue
        total += n
        if any(f.startswith("run (trio/_core/_run.py") for f in code):
            kinds["trio loop"] += n
        else:
            kinds["worker threads"] += n
        if any(wait in code[-1] for wait in _WAITS):
            waits += n
            continue
        lines[_short(code[-1])] += n
        for frame in {f for f in code if _SEALCHAT_DIRS & set(_path(f).split("/")[:-1])}:
            functions[_short(frame, line=False)] += n
    if not total:
        _say(f"  {label}: no samples")
        return
    share = ", ".join(f"{kind} {n / total:.0%}" for kind, n in kinds.most_common())
    _say(f"  {label}: {total} samples ({total / PROFILE_RATE:.1f} s at {PROFILE_RATE} Hz): {share}")
    _say(f"    {waits / total:6.1%}  waits (epoll poll, idle trio worker, pipe poll)")
    _say(f"  {label}: hottest lines, self (share of all samples)")
    for where, n in lines.most_common(top):
        _say(f"    {n / total:6.1%}  {where}")
    _say(f"  {label}: hottest sealchat functions, inclusive")
    for where, n in functions.most_common(top):
        _say(f"    {n / total:6.1%}  {where}")


def _path(frame: str) -> str:
    """The file of a py-spy frame ``name (path/to/module.py:12)``."""
    return frame.rpartition(" (")[2].rstrip(")").rpartition(":")[0]


def _short(frame: str, *, line: bool = True) -> str:
    """``name (path/to/module.py:12)`` as ``to/module.py:12 name`` (without the line number
    unless ``line``)."""
    name, _, where = frame.rpartition(" (")
    path, _, number = where.rstrip(")").rpartition(":")
    short = "/".join(Path(path).parts[-2:])
    return f"{short}:{number} {name}" if line else f"{short} {name}"


def _peak_rss(pid: int) -> float:
    """Peak resident set size of ``pid`` so far (VmHWM), in MB; NaN off Linux."""
    try:
        return vm_bytes(pid, "VmHWM") / 1e6
    except (OSError, LookupError):
        return float("nan")


def _cpu_text(used: dict[str, float]) -> str:
    return ", ".join(f"{label} {seconds:.2f}" for label, seconds in used.items())


# --- the benchmarks -------------------------------------------------------------------------


def _random_file(path: Path, size: int) -> bytes:
    """Write ``size`` random bytes to ``path``; returns their SHA-256."""
    hasher = hashlib.sha256()
    with open(path, "wb") as out:
        left = size
        while left:
            block = os.urandom(min(16 * MiB, left))
            hasher.update(block)
            out.write(block)
            left -= len(block)
    return hasher.digest()


def _bulk(
    children: Children,
    path: Path,
    certs: str | None,
    env: dict[str, str],
    digest: bytes,
    store: str = "",
) -> tuple[float, str]:
    """One baseline transfer: (seconds, negotiated suite)."""
    receiver, port = children.start(_bulk_receiver, certs, bool(digest), store, env=env)
    sender, (seconds, suite) = children.start(_bulk_sender, port, certs, str(path), digest, env=env)
    receiver.expect("done", 60.0)
    children.stop(sender, receiver)
    return seconds, suite


def _phase_text(split: dict[str, float]) -> str:
    return ", ".join(f"{name} {seconds:.2f} s" for name, seconds in split.items())


def file_transfer() -> list[Row]:
    mib, reps = _size("FILE_MIB"), _size("FILE_REPS")
    size = mib * MiB
    label = f"{mib // 1024} GiB" if mib % 1024 == 0 else f"{mib} MiB"
    mb = size / 1e6
    with (
        tempfile.TemporaryDirectory(prefix="sealchat-bench-client-") as tmp,
        Children() as children,
    ):
        work = Path(tmp)
        _say(f"file transfer: writing {label} of random bytes; {reps} repetitions")
        path = work / "random.bin"
        digest = _random_file(path, size)
        _make_certificate(work)
        certs, env = str(work), _openssl_env(work)
        server, port = children.start(_sealchat_server, str(work / "server"), [UPLOADER])
        client, _ = children.start(_file_client, port, str(work / "client"))
        pids = {"client": client.pid, "server": server.pid}
        timeout = max(120.0, size / 20e6)
        samples: dict[str, list[float]] = {
            k: [] for k in ("up", "down", "tls", "stored", "bare", "raw")
        }
        suites: set[str] = set()

        def sealchat(kind: str, arg: str, tag: str) -> tuple[float, Any]:
            meter = CpuMeter(pids)
            seconds, split, result = client.ask(kind, arg, timeout=timeout)
            used = meter.used()
            _say(
                f"  {tag} sealchat {kind:8} {mb / seconds:6.0f} MB/s "
                f"({_phase_text(split)}; CPU s {_cpu_text(used)}; "
                f"client peak RSS so far {_peak_rss(client.pid):.0f} MB)"
            )
            return mb / seconds, result

        def baseline(key: str, name: str, tls: bool, digest: bytes, tag: str) -> None:
            store = str(work / "stored.bin") if key == "stored" else ""
            seconds, suite = _bulk(children, path, certs if tls else None, env, digest, store)
            samples[key].append(mb / seconds)
            if tls:
                suites.add(suite)
            _say(f"  {tag} {name:17} {mb / seconds:6.0f} MB/s ({suite})")

        for rep in range(1, reps + 1):
            tag = f"{rep}/{reps}"
            rate, file_id = sealchat("upload", str(path), tag)
            samples["up"].append(rate)
            baseline("tls", "TLS + SHA-256", True, digest, tag)
            rate, got = sealchat("download", file_id, tag)
            assert got == size, f"downloaded {got} bytes, expected {size}"
            samples["down"].append(rate)
            baseline("stored", "TLS + SHA + file", True, digest, tag)
            baseline("bare", "TLS, no hash", True, b"", tag)
            baseline("raw", "raw TCP + SHA-256", False, digest, tag)
        if PROFILE:
            box: dict[str, str] = {}

            def transfer(kind: str) -> Callable[[], str]:
                def run() -> str:
                    arg = str(path) if kind == "upload" else box["file_id"]
                    seconds, split, result = client.ask(kind, arg, timeout=timeout)
                    box["file_id"] = result if kind == "upload" else box["file_id"]
                    return f"{mb / seconds:.0f} MB/s ({_phase_text(split)})"

                return run

            for kind in ("upload", "download"):
                _profiled(work, kind, {f"{kind}, {k}": p for k, p in pids.items()}, transfer(kind))
    med = {key: statistics.median(values) for key, values in samples.items()}
    tls = "/".join(sorted(suites))
    if tls != f"TLSv1.3 {SUITE}":
        _say(f"  WARNING: TLS negotiated {tls}, not {SUITE}")
    tls_name = tls.replace("TLSv1.3 ", "TLS 1.3 ")
    return [
        Row(f"{label} upload", "MB/s", med["up"], med["tls"], f"{tls_name} + SHA-256", 1.3),
        Row(f"{label} download", "MB/s", med["down"], med["tls"], f"{tls_name} + SHA-256", 1.3),
        Row(f"{label} upload", "MB/s", med["up"], med["stored"], f"{tls_name} + SHA-256 + file"),
        Row(f"{label} upload", "MB/s", med["up"], med["bare"], f"{tls_name}, no hash"),
        Row(f"{label} upload", "MB/s", med["up"], med["raw"], "raw TCP + SHA-256"),
    ]


def _profiled(work: Path, kind: str, targets: dict[str, int], action: Callable[[], str]) -> None:
    """Run ``action`` once with py-spy attached to ``targets``; print the summaries."""
    if shutil.which("py-spy") is None:
        _say(f"profile of one {kind}: py-spy is not installed; skipped")
        return
    folder = work / f"profile-{kind}"
    folder.mkdir()
    profiler = _Profiler(folder, targets)
    with profiler:
        outcome = action()
    _say(f"profile of one {kind} under py-spy: {outcome}")
    profiler.report()


def messages() -> list[Row]:
    from sealchat.core import Message
    from sealchat.core.codec import encode_record

    number, reps = _size("MSG_N"), _size("MSG_REPS")
    payload = encode_record(Message(text=TEXT, room=ROOM, client_id="0123456789abcdef"))
    _say(f"messages: {reps} x {number} messages of 100 characters, {len(payload)}-byte records")
    with (
        tempfile.TemporaryDirectory(prefix="sealchat-bench-client-") as tmp,
        Children() as children,
    ):
        work = Path(tmp)
        _make_certificate(work)
        certs, env = str(work), _openssl_env(work)
        server, port = children.start(_sealchat_server, str(work / "server"), [SENDER, RECEIVER])
        receiver, _ = children.start(_chat_client, port, str(work / "receiver"), RECEIVER)
        sender, _ = children.start(_chat_client, port, str(work / "sender"), SENDER)
        relay, relay_port = children.start(_tls_relay, certs, env=env)
        tls_receiver, suite = children.start(_frame_receiver, relay_port, certs, env=env)
        tls_sender, _ = children.start(_frame_sender, relay_port, certs, payload, env=env)
        timeout = max(120.0, number / 100)
        ours: list[float] = []
        ceiling: list[float] = []
        setups = (
            ("sealchat", sender, receiver, server, ours),
            ("TLS relay", tls_sender, tls_receiver, relay, ceiling),
        )
        for rep in range(1, reps + 1):
            for name, source, sink, middle, samples in setups:
                meter = CpuMeter({"sender": source.pid, "server": middle.pid, "receiver": sink.pid})
                rate = _burst(source, sink, number, timeout)
                used = meter.used()
                samples.append(rate)
                _say(f"  {rep}/{reps} {name:9} {rate:9,.0f} msg/s (CPU s {_cpu_text(used)})")
        if PROFILE:
            targets = {"messages, sender": sender.pid, "messages, server": server.pid}
            targets["messages, receiver"] = receiver.pid

            def burst() -> str:
                return f"{_burst(sender, receiver, number, timeout):,.0f} msg/s"

            _profiled(work, "message burst", targets, burst)
    return [
        Row(
            "100-char messages client→server→client",
            "msg/s",
            statistics.median(ours),
            statistics.median(ceiling),
            f"relay over {suite.replace('TLSv1.3 ', 'TLS 1.3 ')}",
            1.0,
        )
    ]


def _burst(sender: Child, receiver: Child, number: int, timeout: float) -> float:
    """Messages per second from the sender's first send to the receiver's last receipt."""
    receiver.tell("expect", number)
    receiver.expect("armed", 30.0)
    start: float = sender.ask("send", number, timeout=timeout)
    last: float = receiver.expect("expect", timeout)
    return number / (last - start)


def run() -> list[Row]:
    return [*file_transfer(), *messages()]
