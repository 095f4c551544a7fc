"""The terminal client and the one-shot command, driven as subprocesses."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from sealchat.core import HistoryRequest, Message, Typing
from sealchat.transports.pinning import KnownServers, server_name
from tests.servers import PASSWORD, Running, free_port, running_server


@pytest.fixture
def server(tmp_path: Path) -> Any:
    with running_server("trio", tmp_path / "server") as running:
        yield running


def env_for(tmp_path: Path, password: str = PASSWORD) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        SEALCHAT_PASSWORD=password,
        PYTHONUNBUFFERED="1",
    )
    return env


def sealchat(
    tmp_path: Path, *args: str, stdin: str = "", password: str = PASSWORD, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sealchat", *args],
        check=False,
        input=stdin,
        capture_output=True,
        text=True,
        env=env_for(tmp_path, password),
        timeout=timeout,
    )


def pin(tmp_path: Path, server: Running) -> None:
    done = sealchat(tmp_path, "trust", f"127.0.0.1:{server.port}", server.fingerprint)
    assert done.returncode == 0, done.stderr
    assert server.fingerprint in done.stdout


def test_trust_pins_out_of_band(server: Running, tmp_path: Path) -> None:
    pin(tmp_path, server)
    known = KnownServers(tmp_path / "config" / "sealchat" / "known_servers")
    assert known.lookup(server_name("127.0.0.1", server.port)) == server.fingerprint
    bad = sealchat(tmp_path, "trust", "nonsense", "SHA256:x")
    assert bad.returncode == 2
    assert "HOST:PORT" in bad.stderr


def test_fingerprint_is_stable(tmp_path: Path) -> None:
    first = sealchat(tmp_path, "fingerprint").stdout.strip()
    assert first.startswith("SHA256:")
    assert sealchat(tmp_path, "fingerprint").stdout.strip() == first
    key = tmp_path / "config" / "sealchat" / "client_key"
    assert oct(key.stat().st_mode & 0o777) == "0o600"


def test_send_exit_codes(server: Running, tmp_path: Path) -> None:
    port = str(server.port)
    unknown = sealchat(tmp_path, "send", "--port", port, "--user", "alice", "hello")
    assert unknown.returncode == 4
    assert "sealchat trust" in unknown.stderr  # says how to pin it
    pin(tmp_path, server)
    ok = sealchat(tmp_path, "send", "--port", port, "--user", "alice", "hello from a script")
    assert ok.returncode == 0, ok.stderr
    wrong = sealchat(tmp_path, "send", "--port", port, "--user", "alice", "x", password="nope")
    assert wrong.returncode == 5
    assert "invalid username or password" in wrong.stderr
    nobody = sealchat(tmp_path, "send", "--port", str(free_port()), "--user", "alice", "x")
    assert nobody.returncode == 3
    assert "cannot reach" in nobody.stderr
    dm_to_ghost = sealchat(
        tmp_path, "send", "--port", port, "--user", "alice", "--to", "ghost", "boo"
    )
    assert dm_to_ghost.returncode == 6
    assert "no user ghost" in dm_to_ghost.stderr
    with server.login("bob") as bob:
        bob.send(HistoryRequest(room="general"))
        page = [e for e in _drain(bob) if isinstance(e, Message)]
        assert [m.text for m in page] == ["hello from a script"]


def test_changed_key_is_refused(server: Running, tmp_path: Path) -> None:
    other = "SHA256:" + "B" * 43
    assert sealchat(tmp_path, "trust", f"127.0.0.1:{server.port}", other).returncode == 0
    done = sealchat(tmp_path, "send", "--port", str(server.port), "--user", "alice", "hi")
    assert done.returncode == 4
    assert "CHANGED" in done.stderr
    assert other in done.stderr
    assert server.fingerprint in done.stderr


def test_chat_session_through_stdin(server: Running, tmp_path: Path) -> None:
    pin(tmp_path, server)
    data = os.urandom(150_000)
    source = tmp_path / "photo.jpg"
    source.write_bytes(data)
    downloads = tmp_path / "downloads"
    with server.login("bob") as bob:
        chat = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sealchat",
                "chat",
                "--port",
                str(server.port),
                "--user",
                "alice",
                "--downloads",
                str(downloads),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env_for(tmp_path),
        )
        assert chat.stdin is not None
        try:
            chat.stdin.write("hello everyone\n/msg bob a secret\n")
            chat.stdin.flush()
            first = bob.next(Message, timeout=20)
            second = bob.next(Message, timeout=20)
            assert (first.text, first.room) == ("hello everyone", "general")
            assert (second.text, second.to) == ("a secret", "bob")
            bob.send(Typing(room="general"))
            bob.send(Message(text="hi alice", room="general", client_id="b1"))
            time.sleep(0.5)
            chat.stdin.write(f"/send {source}\n/join random\n/rooms\n/who\n")
            chat.stdin.flush()
            shared = bob.next(Message, timeout=30)
            assert shared.file is not None
            chat.stdin.write(f"/get {shared.file.file_id}\n/history\n/bogus\n/quit\n")
            chat.stdin.flush()
            out, err = chat.communicate(timeout=60)
        finally:
            if chat.poll() is None:
                chat.kill()
    assert chat.returncode == 0, err
    assert "* bob is typing" in out
    assert "bob: hi alice" in out
    assert "sending photo.jpg" in out
    assert "100%" in out
    assert "* now in random" in out
    assert "unknown command '/bogus'" in out
    saved = downloads / "photo.jpg"
    assert hashlib.sha256(saved.read_bytes()).digest() == hashlib.sha256(data).digest()
    assert f"* saved {saved}" in out


def test_chat_explains_a_wrong_password(server: Running, tmp_path: Path) -> None:
    pin(tmp_path, server)
    done = sealchat(
        tmp_path,
        "chat",
        "--port",
        str(server.port),
        "--user",
        "alice",
        stdin="/quit\n",
        password="wrong",
    )
    assert done.returncode == 5
    assert "login refused: invalid username or password" in done.stderr


def _drain(client: Any) -> list[object]:
    events = []
    while True:
        try:
            events.append(client.next_event(timeout=1))
        except TimeoutError:
            return events
