"""The threaded server short of descriptors or threads: it serves the connections it has, and
accepts again once it can (it must never stop accepting for good)."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from sealchat.core import Message, MessageAck
from sealchat.transports.blocking_client import BlockingClient, ClientError
from tests.servers import KINDS, PASSWORD, free_port, running_server

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
