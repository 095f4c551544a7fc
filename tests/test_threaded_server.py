"""The threaded server short of descriptors or threads: it serves the connections it has, and
accepts again once it can (it must never stop accepting for good)."""

from __future__ import annotations

import hashlib
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from sealchat.core import (
    NEED_DATA,
    Authenticated,
    FileReject,
    FileRequest,
    Login,
    Message,
    MessageAck,
)
from sealchat.core.hub import Hub
from sealchat.transports.blocking_client import BlockingClient, ClientError
from sealchat.transports.blocking_server import ThreadedServer
from sealchat.transports.passwords import CHEAP, hash_password
from sealchat.transports.server_config import MiB, ServerConfig
from sealchat.transports.sqlite_store import SqliteStore
from tests.servers import KINDS, PASSWORD, free_port, running_server, share_empty_files
from tests.test_conformance import last, matching, raw_handshake, wait_until

TIMEOUT = 30.0
"""Upper bound for waiting on the server: only reached when something is broken."""
OPEN_FILES = 40
"""The server's descriptor limit: a few dozen idle connections use it all up."""
DEMO = ("esha", "esha123")


WITH_FEW_OPEN_FILES = f"""
import resource, runpy, sys
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, ({OPEN_FILES}, hard))
sys.argv[0] = "sealchat"
runpy.run_module("sealchat", run_name="__main__", alter_sys=True)
"""
"""``python -m sealchat`` with a limit of ``OPEN_FILES`` descriptors."""


@contextmanager
def threaded_cli_server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    """``sealchat server --threads --demo`` with a limit of ``OPEN_FILES`` descriptors, its
    log in a file; yields the process, its port and the log."""
    port, log = free_port(), tmp_path / "server.log"
    args = [sys.executable, "-c", WITH_FEW_OPEN_FILES, "server", "--threads", "--demo"]
    args += ["--port", str(port), "--data-dir", str(tmp_path / "data")]
    with log.open("wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_log(process, log, "listening on")
        yield process, port, log
    finally:
        process.kill()
        process.wait(10)


def wait_for_log(process: subprocess.Popen[bytes], log: Path, pattern: str) -> str:
    """The first line of the server's log matching ``pattern``, once it is there."""
    deadline = time.monotonic() + TIMEOUT
    while not (found := re.search(f".*{pattern}.*", log.read_text())):
        assert process.poll() is None, f"the server exited:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"no {pattern!r} in the log:\n{log.read_text()}"
        time.sleep(0.05)
    return found.group(0)


def client(port: int) -> BlockingClient:
    return BlockingClient("127.0.0.1", port, trust=lambda _event: True, timeout=TIMEOUT)


def test_a_server_out_of_descriptors_serves_on_and_accepts_again(tmp_path: Path) -> None:
    with threaded_cli_server(tmp_path) as (process, port, log), ExitStack() as stack:
        esha = stack.enter_context(client(port))
        assert esha.login(*DEMO) == "esha"
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(OPEN_FILES)]
        line = wait_for_log(process, log, "trying again every")
        assert "Too many open files" in line
        assert "ulimit -n" in line  # says what to do about it
        esha.send(Message(text="still here", room="general", client_id="e1"))
        assert esha.next(MessageAck, timeout=TIMEOUT).client_id == "e1"
        for sock in idle:
            sock.close()
        with client(port) as again:  # the descriptors are free again: accepted, served
            assert again.login(*DEMO) == "esha"
        assert process.poll() is None


def test_a_connection_whose_threads_cannot_start_is_closed_and_the_server_carries_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running_server("threads", tmp_path) as server:
        alice = server.login("alice")  # session 1
        # Session 2 gets no writer thread, session 3 no reader thread.
        failing = {"write-2", "client-3"}
        real_start = threading.Thread.start

        def start(thread: threading.Thread) -> None:
            if thread.name in failing:
                failing.discard(thread.name)
                raise RuntimeError("can't start new thread")
            real_start(thread)

        monkeypatch.setattr(threading.Thread, "start", start)
        for _ in range(2):
            with pytest.raises(ClientError):
                server.client(timeout=TIMEOUT)
        assert not failing
        bob = server.login("bob")
        bob.send(Message(text="hi alice", room="general", client_id="b1"))
        assert alice.next(Message, timeout=TIMEOUT).text == "hi alice"
        alice.close()
        bob.close()


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback here")
@pytest.mark.parametrize("kind", KINDS)
def test_both_servers_listen_on_an_ipv6_address(tmp_path: Path, kind: str) -> None:
    with running_server(kind, tmp_path, host="::1") as server:
        expected = server.fingerprint
        trust = lambda event: event.fingerprint == expected  # noqa: E731
        with BlockingClient("::1", server.port, trust=trust) as client:
            assert client.login("alice", PASSWORD) == "alice"


def test_downloads_cancelled_while_the_client_is_not_reading_end_their_threads(
    tmp_path: Path,
) -> None:
    # A download waits while its connection has more than stream_window queued; one the client
    # cancels must stop waiting at once. Else a client that stops reading with a download
    # paused could request and cancel downloads for ever, a thread each: the server would run
    # out of threads for everyone's connections.
    store = SqliteStore(tmp_path / "data")
    for name in ("alice", "bob"):
        store.add_user(name, name, hash_password(PASSWORD, params=CHEAP))
    store.ensure_room("general")
    store.add_member("general", "bob")
    big = _stored_file(store, os.urandom(16 * MiB))
    small = _stored_file(store, b"small")
    config = ServerConfig(port=0, argon2=CHEAP, write_timeout=600.0)
    hub = Hub(store, config.hub)
    server = ThreadedServer(hub, X25519PrivateKey.generate(), config)
    _, port = server.start()
    try:
        with ExitStack() as stack:
            alice = stack.enter_context(client(port))
            alice.login("alice", PASSWORD)
            sock = stack.enter_context(socket.socket())
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock, conn = raw_handshake(port, sock)  # bob, who never reads
            conn.send(Login(username="bob", password=PASSWORD))
            sock.sendall(conn.data_to_send())
            while not isinstance(event := conn.next_event(), Authenticated):
                if event is NEED_DATA:
                    conn.receive_data(sock.recv(4096))
            conn.send(FileRequest(transfer=1, file_id=big))  # then bob reads nothing more
            sock.sendall(conn.data_to_send())
            bob = max(server._clients.values(), key=lambda c: c.session)  # the newest
            wait_until(
                lambda: bob.conn.bytes_to_send > config.stream_window, "bob's download pauses"
            )
            for transfer in range(2, 42):
                conn.send(FileRequest(transfer=transfer, file_id=small))
                conn.send(FileReject(transfer=transfer))
            conn.send(Message(text="done", room="general"))
            sock.sendall(conn.data_to_send())
            assert alice.next(Message, timeout=TIMEOUT).text == "done"  # all handled
            wait_until(lambda: _threads("stream-") <= 1, "the cancelled downloads end")
    finally:
        server.stop()


def _stored_file(store: SqliteStore, data: bytes) -> str:
    """The id of a complete file of ``data`` shared in general."""
    digest = hashlib.sha256(data).digest()
    file = store.create_file(
        owner_key="alice",
        name="f",
        size=len(data),
        sha256=digest,
        room="general",
        to_key="",
        ts=1.0,
    )
    for offset in range(0, len(data), MiB):
        store.write_chunk(file.file_id, offset, data[offset : offset + MiB])
    assert store.complete_file(file.file_id)
    return file.file_id


def _threads(prefix: str) -> int:
    return sum(t.name.startswith(prefix) for t in threading.enumerate())


def test_a_download_whose_thread_cannot_start_is_refused_and_the_rest_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running_server("threads", tmp_path) as server:
        alice, bob = server.login("alice"), server.login("bob")
        (file_id,) = share_empty_files(alice, ["empty.txt"])
        real_start = threading.Thread.start

        def start(thread: threading.Thread) -> None:
            if thread.name.startswith("stream-"):
                raise RuntimeError("can't start new thread")
            real_start(thread)

        monkeypatch.setattr(threading.Thread, "start", start)
        alice.send_all(
            [
                FileRequest(transfer=9, file_id=file_id),
                Message(text="after the download", room="general", client_id="a1"),
            ]
        )
        assert alice.next(FileReject, timeout=TIMEOUT).transfer == 9
        assert alice.next(MessageAck, timeout=TIMEOUT).client_id == "a1"  # still served
        assert last(bob, matching(Message, text="after the download"))  # delivered too
        alice.close()
        bob.close()


def test_the_threaded_server_keeps_to_ipv4_for_a_name_that_has_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Where "localhost" (or the server's own name) resolves to ::1 first, as on most systems
    # with IPv6, listening on that alone would turn away clients that connect to 127.0.0.1.
    resolve = socket.getaddrinfo

    def ipv6_first(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        found = resolve(host, port, *args, **kwargs)
        if host != "localhost":
            return found
        return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", port, 0, 0)), *found]

    monkeypatch.setattr(socket, "getaddrinfo", ipv6_first)
    with running_server("threads", tmp_path, host="localhost") as server:
        server.login("alice").close()  # over 127.0.0.1
