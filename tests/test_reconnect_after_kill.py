"""The real server process is killed (SIGKILL) and restarted mid-conversation: the trio
clients reconnect, and every message arrives exactly once."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import trio
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from sealchat.core import Message
from sealchat.transports.pinning import KnownServers
from sealchat.transports.trio_client import ChatClient, LinkState, connect
from tests.servers import free_port

PASSWORD = "a long enough password"


def cli(data_dir: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sealchat", *args, "--data-dir", str(data_dir)],
        input=stdin,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )


def start_server(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sealchat",
            "server",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return server
        except OSError:
            time.sleep(0.05)
    server.kill()
    raise AssertionError("the server did not start")


async def next_message(client: ChatClient) -> Message:
    async for event in client.events():
        if isinstance(event, Message):
            return event
    raise AssertionError("the event stream ended")


async def test_messages_survive_a_killed_server(tmp_path: Path) -> None:
    data_dir, port = tmp_path / "server", free_port()
    for name in ("alice", "bob"):
        cli(data_dir, "user", "add", name, "--password-stdin", stdin=PASSWORD + "\n")
    server = start_server(data_dir, port)

    async def yes(_server: str, _fp: str) -> bool:
        return True

    def options(who: str) -> dict[str, object]:
        return {
            "static_key": X25519PrivateKey.generate(),
            "known_servers": KnownServers(tmp_path / f"{who}-known"),
            "confirm_new_key": yes,
            "backoff": (0.05, 0.3),
        }

    try:
        async with (
            connect("127.0.0.1", port, **options("alice")) as alice,
            connect("127.0.0.1", port, **options("bob")) as bob,
        ):
            await alice.login("alice", PASSWORD)
            await bob.login("bob", PASSWORD)
            await alice.send_message("before the crash", room="general")
            with trio.fail_after(10):
                assert (await next_message(bob)).text == "before the crash"
                while alice.unacknowledged:  # its acknowledgement may trail bob's copy
                    await trio.sleep(0.01)
            os.kill(server.pid, signal.SIGKILL)
            server.wait()
            with trio.fail_after(10):
                async for event in alice.events():
                    if isinstance(event, LinkState) and not event.connected:
                        break
            await alice.send_message("during the outage", room="general")
            assert alice.unacknowledged == 1
            server = start_server(data_dir, port)
            with trio.fail_after(30):
                await alice.wait_online()
                await bob.wait_online()
                assert (await next_message(bob)).text == "during the outage"
            with trio.move_on_after(2):  # nothing arrives twice
                extra = await next_message(bob)
                raise AssertionError(f"a message came twice: {extra.text}")
            page, _ = await bob.history(room="general")
            assert [m.text for m in page] == ["before the crash", "during the outage"]
            assert alice.unacknowledged == 0
    finally:
        server.kill()
        server.wait()
