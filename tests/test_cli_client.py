"""The terminal client and the one-shot command, driven as subprocesses."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from sealchat.cli.chat_cmd import SHOWN_CONVERSATIONS, conversations_line
from sealchat.cli.chat_outgoing import REPLY_WAIT
from sealchat.cli.chat_transfers import _typed_path
from sealchat.cli.checks import CommandError
from sealchat.core import (
    NEED_DATA,
    Connection,
    ConnectionClosed,
    Delivered,
    FileAccept,
    FileChunk,
    FileComplete,
    FileInfo,
    FileList,
    FileOffer,
    FileReject,
    FileRequest,
    HistoryEnd,
    HistoryRequest,
    ListFiles,
    Message,
    MessageAck,
    Presence,
    Typing,
    fingerprint,
)
from sealchat.core.hub import PASSWORD_CHANGED, HubConfig
from sealchat.core.hub.names import user_key
from sealchat.core.limits import MAX_PASSWORD, MAX_ROOM, MAX_TEXT, MAX_USERNAME
from sealchat.transports.keyfile import public_bytes
from sealchat.transports.passwords import CHEAP, hash_password
from sealchat.transports.pinning import KnownServers, server_name
from sealchat.transports.sqlite_store import SqliteStore
from tests.servers import (
    PASSWORD,
    Running,
    drain,
    free_port,
    hangs_up_at,
    logs_in_then,
    running_server,
    scripted_server,
    stays_silent,
)


@pytest.fixture
def server(tmp_path: Path) -> Any:
    with running_server("trio", tmp_path / "server") as running:
        yield running


def env_for(tmp_path: Path, password: str | None = PASSWORD, **extra: str) -> dict[str, str]:
    """The environment of a client run: its own settings folder, and the password (None: no
    SEALCHAT_PASSWORD, so the client asks if it can)."""
    env = dict(os.environ)
    env.pop("SEALCHAT_PASSWORD", None)
    env.update(XDG_CONFIG_HOME=str(tmp_path / "config"), PYTHONUNBUFFERED="1", **extra)
    if password is not None:
        env["SEALCHAT_PASSWORD"] = password
    return env


def sealchat(
    tmp_path: Path,
    *args: str,
    stdin: str = "",
    password: str = PASSWORD,
    timeout: float = 60,
    encoding: str | None = None,
    **env: str,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sealchat", *args],
        check=False,
        input=stdin,
        capture_output=True,
        text=True,
        encoding=encoding,
        env=env_for(tmp_path, password, **env),
        timeout=timeout,
    )


def chat_as_alice(
    tmp_path: Path, server: Running, *args: str, stdin: str, **options: Any
) -> subprocess.CompletedProcess[str]:
    """``sealchat chat`` as alice on ``server`` (with ``args``), typing ``stdin``."""
    port = str(server.port)
    return sealchat(
        tmp_path, "chat", "--port", port, "--user", "alice", *args, stdin=stdin, **options
    )


def chat_process(tmp_path: Path, server: Running, *args: str) -> subprocess.Popen[str]:
    """``sealchat chat`` as alice on ``server`` (with ``args``), its pipes in text mode."""
    command = ("chat", "--port", str(server.port), "--user", "alice", *args)
    return subprocess.Popen(
        [sys.executable, "-m", "sealchat", *command],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env_for(tmp_path),
    )


class Output:
    """A child's output, read in the background, so a test can wait for a text in it."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._data = b""
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        with suppress(OSError):  # a pty: Linux says EIO once its far end has closed
            while chunk := os.read(self._stream.fileno(), 65536):
                with self._changed:
                    self._data += chunk
                    self._changed.notify_all()

    def wait_for(self, text: str, timeout: float = 30) -> None:
        with self._changed:
            seen = self._changed.wait_for(lambda: text.encode() in self._data, timeout)
        assert seen, f"{text!r} not in {self._data!r}"

    def text(self) -> str:
        """Everything, once the child has ended."""
        self._reader.join(10)
        return self._data.decode()


class Client:
    """``sealchat ARGS`` running, its input on a pipe or on ``terminal`` (a pty's far end, so
    that the client sees a terminal), its output read in the background."""

    def __init__(
        self, tmp_path: Path, *args: str, password: str | None = PASSWORD, terminal: int = -1
    ) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sealchat", *args],
            stdin=subprocess.PIPE if terminal < 0 else terminal,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env_for(tmp_path, password),
            start_new_session=True,  # no controlling terminal: getpass reads standard input
        )
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        self.out, self.err = Output(self.process.stdout), Output(self.process.stderr)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        for output in (self.out, self.err):
            output.text()  # read to the end before the pipes close
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()

    def type(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text.encode())
        self.process.stdin.flush()

    def interrupt(self) -> None:
        """What Ctrl-C does."""
        self.process.send_signal(signal.SIGINT)

    def wait(self, timeout: float = 30) -> int:
        return self.process.wait(timeout)


@pytest.fixture
def terminal() -> Any:
    """A pty: (the end a test types into, the end a client reads as its terminal)."""
    typed, shown = os.openpty()
    yield typed, shown
    os.close(typed)
    os.close(shown)


GOOD_FP = "SHA256:" + "A" * 43
"""A well-formed fingerprint."""


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
    assert "the password came from SEALCHAT_PASSWORD" in wrong.stderr  # a stale one, maybe
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
        page = [e for e in drain(bob) if isinstance(e, Message)]
        assert [m.text for m in page] == ["hello from a script"]


def test_send_takes_a_room_name_typed_in_capitals(server: Running, tmp_path: Path) -> None:
    pin(tmp_path, server)
    args = ("send", "--port", str(server.port), "--user", "alice", "--room", "General", "hi")
    done = sealchat(tmp_path, *args)
    assert done.returncode == 0, done.stderr
    with server.login("bob") as bob:
        bob.send(HistoryRequest(room="general"))
        assert [m.text for m in drain(bob) if isinstance(m, Message)] == ["hi"]


def test_send_joins_the_room_with_join_and_says_so_without(server: Running, tmp_path: Path) -> None:
    pin(tmp_path, server)
    alice = ("send", "--port", str(server.port), "--user", "alice", "--room", "dev")
    (tmp_path / "notes.txt").write_text("notes")
    for what in (("hi",), ("--file", str(tmp_path / "notes.txt"))):
        refused = sealchat(tmp_path, *alice, *what)
        assert refused.returncode == 6, refused.stderr
        assert refused.stderr == "sealchat: refused: you are not in dev: add --join to join it\n"
    for text in ("first", "again, a member already"):
        done = sealchat(tmp_path, *alice, "--join", text)
        assert done.returncode == 0, done.stderr
    with server.login("bob") as bob:
        bob.join("dev")
        bob.send(HistoryRequest(room="dev"))
        texts = [m.text for m in drain(bob) if isinstance(m, Message)]
    assert texts == ["first", "again, a member already"]
    direct = sealchat(tmp_path, "send", "--port", str(server.port), "--to", "bob", "--join", "x")
    assert direct.returncode == 2
    assert "--join goes with --room" in direct.stderr


def test_send_leaves_the_users_unread_messages_unread(server: Running, tmp_path: Path) -> None:
    # A script sending as bob shows him nothing: what he missed must still reach him.
    with server.login("bob"):
        pass  # bob is a member of general from now on
    with server.login("alice") as alice:
        alice.send(Message(text="while you were out", room="general", client_id="m1"))
        alice.next(MessageAck)
    pin(tmp_path, server)
    done = sealchat(tmp_path, "send", "--port", str(server.port), "--user", "bob", "status ok")
    assert done.returncode == 0, done.stderr
    with server.login("bob") as bob:
        missed = [e.text for e in drain(bob) if isinstance(e, Message)]
    assert missed == ["while you were out", "status ok"]  # and what was sent in his name


def test_send_does_not_show_its_user_coming_online_and_going_offline(
    server: Running, tmp_path: Path
) -> None:
    # A bot posting every minute: the others see its messages, not alice flickering online.
    with server.login("alice"):
        pass  # alice is a member of general from now on: bob is in her presence audience
    pin(tmp_path, server)
    with server.login("bob") as bob:
        drain(bob, quiet=0.3)  # what a login brings (bob's OnlineUsers)
        for text in ("status ok", "still ok"):
            done = sealchat(tmp_path, "send", "--port", str(server.port), "--user", "alice", text)
            assert done.returncode == 0, done.stderr
            deadline = time.monotonic() + 10
            while server.hub.is_logged_in("alice"):  # its session closed: any Presence is sent
                assert time.monotonic() < deadline, "alice's session is still open"
                time.sleep(0.02)
        events = drain(bob)
    assert [e.text for e in events if isinstance(e, Message)] == ["status ok", "still ok"]
    assert [e for e in events if isinstance(e, Presence)] == []


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
        chat = chat_process(tmp_path, server, "--downloads", str(downloads))
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


def test_chat_names_the_direct_conversations_at_login(server: Running, tmp_path: Path) -> None:
    pin(tmp_path, server)
    with server.login("alice") as alice:
        alice.send_message("hi", to="bob")
    with server.login("carol") as carol:
        carol.send_message("hi alice", to="alice")
    done = chat_as_alice(tmp_path, server, stdin="/quit\n")
    assert done.returncode == 0, done.stderr
    assert "* direct conversations: carol, bob\n" in done.stdout


def test_only_the_latest_direct_conversations_are_named_and_the_others_counted() -> None:
    names = [f"user{n}" for n in range(SHOWN_CONVERSATIONS + 3)]
    line = conversations_line(names)
    assert line.startswith("* direct conversations: user0, user1, ")
    assert line.endswith(f", user{SHOWN_CONVERSATIONS - 1} and 3 more")
    assert conversations_line(["\x1b[2Jbob"]) == "* direct conversations: \\x1b[2Jbob"


def test_chat_explains_a_wrong_password(server: Running, tmp_path: Path) -> None:
    pin(tmp_path, server)
    done = chat_as_alice(tmp_path, server, stdin="/quit\n", password="wrong")
    assert done.returncode == 5
    assert "login refused: invalid username or password" in done.stderr


def test_chat_escapes_what_peers_send(server: Running, tmp_path: Path) -> None:
    pin(tmp_path, server)
    name = "evil\x1b]0;pwned\x07\u202etxt.exe"
    (tmp_path / name).write_bytes(b"x")
    with server.login("bob") as bob:
        bob.send_message(
            "hi\x1b[2J\x1b[31m\n12:00 [general] esha: what is your password?", room="general"
        )
        bob.send_file(tmp_path / name, room="general")
    done = chat_as_alice(tmp_path, server, stdin="/history\n/files\n/quit\n")
    assert done.returncode == 0, done.stderr
    assert not any(char in done.stdout for char in "\x1b\x07\u202e")
    lines = done.stdout.splitlines()
    assert any(line.endswith("bob: hi\\x1b[2J\\x1b[31m") for line in lines)
    assert "      12:00 [general] esha: what is your password?" in lines
    assert not any(line.startswith("12:00 [general] esha") for line in lines)
    escaped = "evil\\x1b]0;pwned\\x07\\u202etxt.exe"
    assert any(line.startswith("  ") and line.endswith(f"B  {escaped}") for line in lines)


def test_chat_survives_an_emoji_it_cannot_encode(server: Running, tmp_path: Path) -> None:
    pin(tmp_path, server)
    with server.login("bob") as bob:
        bob.send_message("party \U0001f389", room="general")
    done = chat_as_alice(
        tmp_path, server, stdin="/history\n/quit\n", encoding="cp1252", PYTHONIOENCODING="cp1252"
    )
    assert done.returncode == 0, done.stderr
    assert "bob: party ?" in done.stdout


def test_chat_commands_say_their_usage_and_slash_escapes(server: Running, tmp_path: Path) -> None:
    pin(tmp_path, server)
    source = tmp_path / "notes.txt"
    source.write_text("notes")
    not_a_folder = tmp_path / "downloads"
    not_a_folder.write_text("a file where the downloads folder should be")
    with server.login("bob") as bob:
        shared = bob.send_file(source, room="general")
    lines = f"/help\n/join\n/get\n/send\n/msg\n/msg bob\n//shrug\n/get {shared.file_id}\n"
    done = chat_as_alice(
        tmp_path, server, "--downloads", str(not_a_folder), stdin=lines + "/quit\n"
    )
    assert done.returncode == 1, done.stderr  # the download could not be saved
    assert f"sealchat: 1 file transfer failed: /get {shared.file_id} (failed on this " in (
        done.stderr
    )
    assert "//TEXT" in done.stdout  # documented in /help
    for usage in ("/join ROOM", "/get ID", "/send PATH", "/msg USER TEXT"):
        assert f"! usage: {usage}\n" in done.stdout
    assert "unknown command" not in done.stdout
    assert "! failed on this computer: " in done.stdout  # the download, not the server
    assert "refused" not in done.stdout
    with server.login("bob") as bob:
        messages, _ = bob.history(room="general")
    assert [m.text for m in messages if m.file is None] == ["/shrug"]


def test_the_trust_prompt_goes_to_standard_error(
    server: Running, tmp_path: Path, terminal: tuple[int, int]
) -> None:
    typed, shown = terminal
    port = str(server.port)
    with Client(tmp_path, "send", "--port", port, "--user", "alice", "hi", terminal=shown) as send:
        send.err.wait_for("Trust this server and remember it? [y/N] ")
        os.write(typed, b"y\n")
        assert send.wait() == 0
    assert server.fingerprint in send.err.text()
    assert "Trust" not in send.out.text()
    known = KnownServers(tmp_path / "config" / "sealchat" / "known_servers")
    assert known.lookup(server_name("127.0.0.1", server.port)) == server.fingerprint


def leave_prompt(client: Client, prompt: str, key: str, typed: int) -> int:
    """Wait for ``prompt`` on the client's stderr, leave it with ``key`` ("Ctrl-C" or "end of
    input", typed on the terminal ``typed``); returns the exit code."""
    client.err.wait_for(prompt)
    if key == "Ctrl-C":
        client.interrupt()
    else:
        os.write(typed, b"\x04")
    return client.wait()


@pytest.mark.parametrize(("key", "code"), [("end of input", 4), ("Ctrl-C", 130)])
def test_the_trust_prompt_takes_no_for_an_answer(
    server: Running, tmp_path: Path, terminal: tuple[int, int], key: str, code: int
) -> None:
    typed, shown = terminal
    port = str(server.port)
    with Client(tmp_path, "send", "--port", port, "--user", "alice", "hi", terminal=shown) as send:
        assert leave_prompt(send, "[y/N] ", key, typed) == code
    assert "Traceback" not in send.err.text()
    assert not KnownServers(tmp_path / "config" / "sealchat" / "known_servers").path.exists()


@pytest.mark.parametrize(("key", "code"), [("end of input", 2), ("Ctrl-C", 130)])
def test_the_password_prompt_ends_quietly(
    tmp_path: Path, terminal: tuple[int, int], key: str, code: int
) -> None:
    typed, shown = terminal
    args = ("send", "--port", str(free_port()), "--user", "alice", "hi")
    with Client(tmp_path, *args, password=None, terminal=shown) as send:
        assert leave_prompt(send, "password for alice: ", key, typed) == code
    err = send.err.text()
    assert "Traceback" not in err
    if key == "end of input":
        assert "no password given" in err


def test_ctrl_c_ends_a_chat_quietly(server: Running, tmp_path: Path) -> None:
    pin(tmp_path, server)
    with Client(tmp_path, "chat", "--port", str(server.port), "--user", "alice") as chat:
        chat.out.wait_for("* logged in")
        chat.interrupt()
        assert chat.wait() == 130
    assert "Traceback" not in chat.err.text()


@pytest.fixture
def open_server(tmp_path: Path) -> Any:
    """A server where anyone may create an account (--open-registration)."""
    hub = HubConfig(open_registration=True)
    with running_server("trio", tmp_path / "server", hub=hub) as running:
        yield running


def test_chat_creates_an_account_with_register(open_server: Running, tmp_path: Path) -> None:
    pin(tmp_path, open_server)
    newbie = ("chat", "--port", str(open_server.port), "--user", "newbie")
    created = sealchat(tmp_path, *newbie, "--register", stdin="/quit\n")
    assert created.returncode == 0, created.stderr
    assert "as newbie; /help lists the commands" in created.stdout
    assert sealchat(tmp_path, *newbie, stdin="/quit\n").returncode == 0  # a login from now on
    taken = sealchat(tmp_path, *newbie, "--register", stdin="/quit\n")
    assert taken.returncode == 5
    assert taken.stderr == (
        "sealchat: the account was not created: that user name is taken "
        "(if it is yours, leave out --register to log in)\n"
    )


def test_register_on_a_server_that_does_not_allow_it_says_so(
    server: Running, tmp_path: Path
) -> None:
    pin(tmp_path, server)
    args = ("--register", "--user", "newbie")
    done = chat_as_alice(tmp_path, server, *args, stdin="/quit\n")
    assert done.returncode == 5
    assert done.stderr == (
        "sealchat: the account was not created: registration is closed on this server; "
        "ask its operator for an account\n"
    )


def test_register_asks_a_typed_password_twice(
    open_server: Running, tmp_path: Path, terminal: tuple[int, int]
) -> None:
    typed, shown = terminal
    pin(tmp_path, open_server)
    args = ("chat", "--port", str(open_server.port), "--user", "newbie", "--register")
    for second, code in (("typo in it", 2), ("a new password", 0)):
        with Client(tmp_path, *args, password=None, terminal=shown) as chat:
            chat.err.wait_for("new password for newbie: ")
            os.write(typed, b"a new password\n")
            chat.err.wait_for("again: ")
            os.write(typed, f"{second}\n".encode())
            if code == 0:
                chat.out.wait_for("* logged in")
                os.write(typed, b"/quit\n")
            assert chat.wait() == code
        if code:
            assert "the passwords differ; no account was created" in chat.err.text()
    with open_server.login("newbie", password="a new password"):
        pass


def test_chat_ends_when_the_client_gives_up(tmp_path: Path) -> None:
    with running_server("trio", tmp_path / "one") as first:
        pin(tmp_path, first)
        chat = Client(tmp_path, "chat", "--port", str(first.port), "--user", "alice")
        chat.out.wait_for("* logged in")
    # The same address, another key: the client gives up, and so does the session.
    key = X25519PrivateKey.generate()
    with chat, running_server("trio", tmp_path / "two", key=key, port=first.port) as second:
        assert chat.wait(60) == 4
    err = chat.err.text()
    assert "CHANGED" in err
    assert second.fingerprint in err


def test_local_problems_are_explained(server: Running, tmp_path: Path) -> None:
    pin(tmp_path, server)
    port = str(server.port)
    config = tmp_path / "config" / "sealchat"
    known = config / "known_servers"
    known.write_bytes(b"\xff\xfe not UTF-8\n" + known.read_bytes())  # a line that is skipped
    sent = sealchat(tmp_path, "send", "--port", port, "--user", "alice", "hi")
    assert sent.returncode == 0, sent.stderr
    known.chmod(0o664)  # others could have added a pin: not trusted
    for args in (("send", "--port", port, "--user", "alice", "hi"), ("trust", "a:1", GOOD_FP)):
        done = sealchat(tmp_path, *args)
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr
        assert f"chmod 600 {known}" in done.stderr
    known.chmod(0o600)
    password_file = tmp_path / "password"
    password_file.write_bytes(b"\xe9t\xe9\n")
    done = sealchat(
        tmp_path,
        *("send", "--port", port, "--user", "alice"),
        *("--password-file", str(password_file), "hi"),
    )
    assert done.returncode == 2
    assert f"{password_file} is not UTF-8 text" in done.stderr
    (config / "client_key").chmod(0o644)
    for args in (("fingerprint",), ("send", "--port", port, "--user", "alice", "hi")):
        done = sealchat(tmp_path, *args)
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr
        assert f"chmod 600 {config / 'client_key'}" in done.stderr


def test_send_checks_its_file_and_password_before_connecting(tmp_path: Path) -> None:
    nobody = ("send", "--port", str(free_port()), "--user", "alice")
    missing = sealchat(tmp_path, *nobody, "--file", str(tmp_path / "missing.txt"))
    assert missing.returncode == 2
    assert f"no such file: {tmp_path / 'missing.txt'}" in missing.stderr
    folder = sealchat(tmp_path, *nobody, "--file", str(tmp_path))
    assert folder.returncode == 2
    assert "is a folder" in folder.stderr
    long = sealchat(tmp_path, *nobody, "hi", password="x" * (MAX_PASSWORD + 1))
    assert long.returncode == 2
    assert f"the password is longer than {MAX_PASSWORD} characters" in long.stderr


@pytest.mark.parametrize(
    "command",
    [("send", "hi"), ("chat",), ("chat", "--register"), ("passwd", "--new-password-stdin")],
    ids=" ".join,
)
def test_a_user_name_too_long_to_exist_is_said_before_connecting(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    name = "a" * (MAX_USERNAME + 1)
    args = (command[0], "--port", str(free_port()), "--user", name, *command[1:])
    done = sealchat(tmp_path, *args, password="a password")  # no server: it would be exit 3
    assert (done.returncode, done.stderr) == (
        2,
        f"sealchat: a user name is at most {MAX_USERNAME} characters; this one has "
        f"{MAX_USERNAME + 1}\n",
    )


def test_send_checks_its_text_and_that_its_file_can_be_read_before_connecting(
    tmp_path: Path,
) -> None:
    nobody = ("send", "--port", str(free_port()), "--user", "alice")  # no server: exit 3
    not_utf8 = sealchat(tmp_path, *nobody, "caf\udce9")  # the byte 0xe9 alone, as Latin-1 has it
    assert (not_utf8.returncode, not_utf8.stderr) == (
        2,
        "sealchat: the message is not UTF-8 text (at character 4); write it in UTF-8\n",
    )
    secret = tmp_path / "secret.txt"
    secret.write_text("not for you")
    secret.chmod(0)
    # root reads any file: run the command without that privilege
    privileged = hasattr(os, "geteuid") and os.geteuid() == 0
    without = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] * privileged
    unreadable = subprocess.run(
        [*without, sys.executable, "-m", "sealchat", *nobody, "--file", str(secret)],
        check=False,
        capture_output=True,
        text=True,
        env=env_for(tmp_path),
        timeout=60,
    )
    assert (unreadable.returncode, unreadable.stderr) == (
        2,
        f"sealchat: cannot read {secret}: Permission denied\n",
    )


@pytest.mark.parametrize("command", ["send", "chat"])
def test_help_lists_the_exit_codes(tmp_path: Path, command: str) -> None:
    done = sealchat(tmp_path, command, "--help")
    assert done.returncode == 0
    assert "exit codes:" in done.stdout
    for line in ("3   the server cannot be reached", "7   the connection was lost", "130 "):
        assert line in done.stdout


def test_chat_reads_a_script_with_windows_line_endings(server: Running, tmp_path: Path) -> None:
    pin(tmp_path, server)
    done = chat_as_alice(tmp_path, server, stdin="hello from Windows\r\n/rooms\r\n/quit\r\n")
    assert done.returncode == 0, done.stderr
    assert "unknown command" not in done.stdout
    assert "* general (" in done.stdout  # /rooms ran
    with server.login("bob") as bob:
        messages, _ = bob.history(room="general")
    assert [m.text for m in messages] == ["hello from Windows"]


def test_send_explains_a_tilde_that_names_nobody(server: Running, tmp_path: Path) -> None:
    pin(tmp_path, server)
    lines = "/send ~nosuchuser4217/report.pdf\nstill here\n/quit\n"
    done = chat_as_alice(tmp_path, server, stdin=lines)
    assert done.returncode == 2, done.stderr  # a file that cannot be shared
    assert "Traceback" not in done.stderr
    assert "sealchat: 1 file transfer failed: /send ~nosuchuser4217/report.pdf (" in done.stderr
    assert "! there is no user 'nosuchuser4217'" in done.stdout
    assert "write ~/ (as in ~/nosuchuser4217/report.pdf)" in done.stdout
    with server.login("bob") as bob:
        messages, _ = bob.history(room="general")
    assert [m.text for m in messages] == ["still here"]  # the session went on


def test_send_takes_a_path_pasted_with_shell_quoting(server: Running, tmp_path: Path) -> None:
    pin(tmp_path, server)
    quoted, other = tmp_path / "my file.txt", tmp_path / "my other file.txt"
    quoted.write_text("data")
    other.write_text("other data")  # another file: the two are shared at once
    escaped = str(other).replace(" ", "\\ ")
    done = chat_as_alice(tmp_path, server, stdin=f"/send '{quoted}'\n/send {escaped}\n/quit\n")
    assert done.returncode == 0, done.stderr
    assert "* shared my file.txt as " in done.stdout, done.stdout
    assert "* shared my other file.txt as " in done.stdout, done.stdout
    assert "no such file" not in done.stdout


def test_special_files_are_not_shared(server: Running, tmp_path: Path) -> None:
    pin(tmp_path, server)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    done = chat_as_alice(tmp_path, server, stdin=f"/send {fifo}\n/send {os.devnull}\n/quit\n")
    assert done.returncode == 2, done.stderr  # neither can be shared
    assert "sealchat: 2 file transfers failed: " in done.stderr
    for path in (fifo, os.devnull):
        assert f"! {path} is not a regular file (a pipe, a device…)" in done.stdout
    assert "no such file" not in done.stdout
    script = sealchat(
        tmp_path, "send", "--port", str(server.port), "--user", "alice", "--file", str(fifo)
    )
    assert script.returncode == 2
    assert f"{fifo} is not a regular file" in script.stderr


def test_chat_ends_quietly_when_its_output_is_closed(server: Running, tmp_path: Path) -> None:
    pin(tmp_path, server)
    chat = chat_process(tmp_path, server)
    assert chat.stdin is not None
    assert chat.stdout is not None
    try:
        assert chat.stdout.readline().startswith("* logged in")
        chat.stdout.close()  # as `| head -1` does once it has its line
        chat.stdout = None
        chat.stdin.write("/rooms\n/who\n")
        chat.stdin.flush()
        _, err = chat.communicate(timeout=30)
    finally:
        if chat.poll() is None:
            chat.kill()
            chat.wait()
    assert chat.returncode == 141
    assert err == ""


def test_chat_shows_each_answer_once(server: Running, tmp_path: Path) -> None:
    pin(tmp_path, server)
    with server.login("bob") as bob:
        bob.send_message("said once", room="general")
    lines = "/join Bad!room\n/leave general\n/leave nosuchroom\n/history\n/quit\n"
    done = chat_as_alice(tmp_path, server, stdin=lines)
    assert done.returncode == 0, done.stderr
    refusals = [line for line in done.stdout.splitlines() if line.startswith("!")]
    assert len(refusals) == 3, done.stdout
    assert len(set(refusals)) == 3
    assert "! everyone stays in general" in refusals
    assert "! you are not in nosuchroom" in refusals
    assert done.stdout.count("bob: said once") == 1  # from /history, not also as an event


def test_too_long_a_message_is_refused_whatever_its_length(server: Running, tmp_path: Path) -> None:
    pin(tmp_path, server)
    alice = ("send", "--port", str(server.port), "--user", "alice")
    over_the_servers = sealchat(tmp_path, *alice, "x" * (MAX_TEXT - 100))
    assert over_the_servers.returncode == 6
    assert over_the_servers.stderr == (  # the limit the server said at the login
        "sealchat: refused: the message has 7900 characters; at most 4000 fit in one message\n"
    )
    with server.login("bob") as bob:
        assert bob.history(room="general") == ([], False)  # nothing was sent
    nobody = ("send", "--port", str(free_port()), "--user", "alice")  # checked before connecting
    over_any = sealchat(tmp_path, *nobody, "x" * (MAX_TEXT + 1))
    assert over_any.returncode == 6
    assert f"refused: the message has {MAX_TEXT + 1} characters; at most {MAX_TEXT}" in (
        over_any.stderr
    )


def test_chat_refuses_a_message_over_the_servers_limit_and_goes_on(
    server: Running, tmp_path: Path
) -> None:
    pin(tmp_path, server)
    done = chat_as_alice(tmp_path, server, stdin="x" * 4001 + "\nright after\n/quit\n")
    assert done.returncode == 6, done.stderr  # refused
    assert "! refused: the message has 4001 characters; at most 4000 fit in one message\n" in (
        done.stdout
    )
    with server.login("bob") as bob:
        messages, _ = bob.history(room="general")
    assert [m.text for m in messages] == ["right after"]


def test_a_mistyped_file_id_leaves_nothing_behind(server: Running, tmp_path: Path) -> None:
    pin(tmp_path, server)
    downloads = tmp_path / "downloads"
    done = chat_as_alice(
        tmp_path, server, "--downloads", str(downloads), stdin="/get deadbeef\n/quit\n"
    )
    assert done.returncode == 6, done.stderr
    assert "! refused: there is no file deadbeef that you can see" in done.stdout
    assert list(downloads.iterdir()) == []  # no hidden, empty .deadbeef.part


def test_a_password_file_saved_by_notepad_works(server: Running, tmp_path: Path) -> None:
    pin(tmp_path, server)
    password_file = tmp_path / "password"
    password_file.write_bytes(b"\xef\xbb\xbf" + PASSWORD.encode() + b"\r\n")  # BOM, CRLF
    password_file.chmod(0o600)
    done = sealchat(
        tmp_path,
        *("send", "--port", str(server.port), "--user", "alice"),
        *("--password-file", str(password_file), "hi"),
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


@pytest.mark.skipif(os.name != "posix", reason="POSIX modes")
def test_a_password_file_others_can_read_is_used_with_a_warning(
    server: Running, tmp_path: Path
) -> None:
    pin(tmp_path, server)
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    password_file.chmod(0o644)
    done = sealchat(
        tmp_path,
        *("send", "--port", str(server.port), "--user", "alice"),
        *("--password-file", str(password_file), "hi"),
    )
    assert done.returncode == 0, done.stderr
    assert f"others on this computer can read {password_file}" in done.stderr
    assert f"chmod 600 {password_file}" in done.stderr


def test_trust_says_where_a_server_key_comes_from(tmp_path: Path) -> None:
    done = sealchat(tmp_path, "trust", "127.0.0.1:7878", "SHA256:abc")
    assert done.returncode == 2
    assert "as 'sealchat server-key' prints it on the server" in done.stderr
    assert "'sealchat fingerprint'" not in done.stderr  # that prints this client's own key


def test_trust_takes_an_ipv6_address_only_in_brackets(tmp_path: Path) -> None:
    known = KnownServers(tmp_path / "config" / "sealchat" / "known_servers")
    for server in ("2001:db8::1", "::1", "[::1]", "2001:db8::1:7878"):
        done = sealchat(tmp_path, "trust", server, GOOD_FP)
        assert (done.returncode, done.stdout) == (2, ""), server
        assert "write an IPv6 address as [ADDR]:PORT" in done.stderr
    done = sealchat(tmp_path, "trust", "[2001:DB8::1]:7878", GOOD_FP)
    assert done.returncode == 0, done.stderr
    assert known.lookup(server_name("2001:db8::1", 7878)) == GOOD_FP
    assert known.lookup("[2001:db8:]:1") is None  # nothing else was pinned


def test_trust_explains_a_port_that_is_not_one(tmp_path: Path) -> None:
    # "7²" is a digit string to Python, but no port: explained, not a traceback.
    for server in ("example.org:7\u00b2", "example.org:0", "example.org:99999"):
        done = sealchat(tmp_path, "trust", server, GOOD_FP)
        assert done.returncode == 2, done.stderr
        assert "the port is not a number from 1 to 65535" in done.stderr
        assert "Traceback" not in done.stderr


@pytest.mark.parametrize("command", ["chat", "send"])
def test_a_client_port_that_is_not_one_is_refused_before_connecting(
    tmp_path: Path, command: str
) -> None:
    # As the server's --port and trust: a usage error, not "cannot reach".
    for port in ("99999", "0", "7\u00b2", "-1"):
        done = sealchat(tmp_path, command, "--port", port, "--user", "alice", "hi")
        assert done.returncode == 2, done.stderr
        assert "is not a port: give a number from 1 to 65535" in done.stderr
        assert "cannot reach" not in done.stderr
    server = sealchat(tmp_path, "server", "--port", "99999", "--data-dir", str(tmp_path / "d"))
    assert server.returncode == 2
    assert "give a number from 1 to 65535 (or 0 for any free one)" in server.stderr


def test_names_too_long_to_exist_are_explained(server: Running, tmp_path: Path) -> None:
    pin(tmp_path, server)
    room, user = "r" * (MAX_ROOM + 6), "u" * (MAX_USERNAME + 8)
    lines = f"/join {room}\n/leave {room}\n/msg {user} hi\n/quit\n"
    done = chat_as_alice(tmp_path, server, stdin=lines)
    assert done.returncode == 6, done.stderr  # a message was not sent: the exit code says so
    assert "1 message was refused (by the server, or as impossible to send): 'hi'" in done.stderr
    refusals = [line for line in done.stdout.splitlines() if line.startswith("!")]
    room_says = f"! a room name is at most {MAX_ROOM} characters; this one has {MAX_ROOM + 6}"
    user_says = (
        f"! a user name is at most {MAX_USERNAME} characters; this one has {MAX_USERNAME + 8}"
    )
    assert refusals == [room_says, room_says, user_says]
    nobody = ("send", "--port", str(free_port()), "--user", "alice")  # checked before connecting
    for option, says in (("--room", room_says), ("--to", user_says)):
        sent = sealchat(tmp_path, *nobody, option, room if option == "--room" else user, "hi")
        assert sent.returncode == 2
        assert f"sealchat: {says[2:]}" in sent.stderr


@contextmanager
def chat_whose_server_stopped(
    tmp_path: Path,
    *,
    key: X25519PrivateKey | None = None,
    port: int = 0,
    while_up: Callable[[Client], None] | None = None,
) -> Iterator[Client]:
    """alice's chat, logged in to a trio server (with ``key`` and ``port``, if given) that
    stopped after ``while_up(chat)``; yielded once it has said the connection was lost."""
    with running_server("trio", tmp_path / "server", key=key, port=port) as server:
        pin(tmp_path, server)
        chat = Client(tmp_path, "chat", "--port", str(server.port), "--user", "alice")
        chat.out.wait_for("* logged in")
        if while_up is not None:
            while_up(chat)
    with chat:
        chat.out.wait_for("! connection lost")
        yield chat


def test_a_chat_logged_out_by_a_password_change_says_why(tmp_path: Path) -> None:
    # An administrator changed alice's password: her chat ends, saying so, without trying the
    # old password again, with the exit code of a refused login.
    data_dir, new = tmp_path / "server", "a brand new password"
    strict = HubConfig(free_login_failures=1)  # one failure would block the address a while
    with running_server("trio", data_dir, hub=strict) as server:
        pin(tmp_path, server)
        with Client(tmp_path, "chat", "--port", str(server.port), "--user", "alice") as chat:
            chat.out.wait_for("* logged in")
            with SqliteStore(data_dir, beside_server=True) as store:
                assert store.set_password(user_key("alice"), hash_password(new, params=CHEAP))
            assert chat.wait() == 5, chat.err.text()
        said = "your password was changed; log in again with the new one"
        assert f"sealchat: login refused: {said}" in chat.err.text()
        with server.login("alice", new):  # at once: the old password was not tried
            pass


def test_transfers_fail_at_once_while_disconnected(tmp_path: Path) -> None:
    source = tmp_path / "notes.txt"
    source.write_text("notes")
    with chat_whose_server_stopped(tmp_path) as chat:
        chat.type(f"/get 0123abcd\n/send {source}\n/rooms\n/quit\n")
        assert chat.wait() == 7  # every line was read: nothing waited for the reconnect
    out = chat.out.text()
    assert out.count("! not connected; the client is reconnecting") == 3, out
    assert "sealchat: 2 file transfers failed: /get 0123abcd (not connected; " in chat.err.text()


def test_piped_lines_beyond_the_rate_limit_are_all_sent_in_order(tmp_path: Path) -> None:
    hub = HubConfig(messages_per_second=20, message_burst=3)
    with running_server("trio", tmp_path / "server", hub=hub) as server:
        pin(tmp_path, server)
        lines = [f"line {i}" for i in range(12)]
        done = chat_as_alice(tmp_path, server, stdin="\n".join(lines) + "\n")
        assert done.returncode == 0, done.stderr
        assert "slow down" not in done.stdout  # the client paces its outbox: none refused
        with server.login("bob") as bob:
            messages, _ = bob.history(room="general")
    assert [m.text for m in messages] == lines


def test_a_refused_message_is_named_and_the_exit_code_says_so(
    server: Running, tmp_path: Path
) -> None:
    pin(tmp_path, server)
    done = chat_as_alice(tmp_path, server, stdin="/msg ghost are you there?\nhello\n/quit\n")
    assert done.returncode == 6
    assert "! not sent (there is no user ghost): 'are you there?'" in done.stdout
    assert "sealchat: 1 message was refused (by the server, or as impossible to send): " in (
        done.stderr
    )
    assert "'are you there?'" in done.stderr
    with server.login("bob") as bob:
        messages, _ = bob.history(room="general")
    assert [m.text for m in messages] == ["hello"]


def test_failed_transfers_are_named_and_the_exit_code_says_so(
    server: Running, tmp_path: Path
) -> None:
    pin(tmp_path, server)
    missing = tmp_path / "missing.txt"
    done = chat_as_alice(tmp_path, server, stdin=f"/send {missing}\n/quit\n")
    assert done.returncode == 2  # a file that cannot be shared
    assert f"! no such file: {missing}\n" in done.stdout
    assert done.stderr == (
        f"sealchat: 1 file transfer failed: /send {missing} (no such file: {missing})\n"
    )
    done = chat_as_alice(tmp_path, server, stdin=f"/get 99\n/send {missing}\n/quit\n")
    assert done.returncode == 6  # refused by the server: the highest code wins
    assert "sealchat: 2 file transfers failed: " in done.stderr
    assert "/get 99 (refused: there is no file 99 that you can see)" in done.stderr
    assert f"/send {missing} (no such file: {missing})" in done.stderr
    assert done.stderr.count("\n") == 1  # one line for them all
    done = chat_as_alice(tmp_path, server, stdin="/get 99\n/msg ghost hello\n/quit\n")
    assert done.returncode == 6  # with the messages' codes
    assert "sealchat: 1 message was refused" in done.stderr
    assert "sealchat: 1 file transfer failed: /get 99 " in done.stderr


def test_a_failed_transfer_that_succeeds_when_typed_again_is_no_failure(
    server: Running, tmp_path: Path
) -> None:
    pin(tmp_path, server)
    source, theirs = tmp_path / "notes.txt", tmp_path / "theirs.txt"
    theirs.write_text("their notes")
    downloads = tmp_path / "downloads"
    downloads.write_text("a file where the downloads folder should be")
    with server.login("bob") as bob:
        shared = bob.send_file(theirs, room="general")
    args = ("chat", "--port", str(server.port), "--user", "alice", "--downloads", str(downloads))
    with Client(tmp_path, *args) as chat:
        chat.out.wait_for("* logged in")
        chat.type(f"/send {source}\n/get {shared.file_id}\n")
        chat.out.wait_for(f"! no such file: {source}")
        chat.out.wait_for("! failed on this computer: ")
        source.write_text("notes")
        downloads.unlink()
        relative = os.path.relpath(source)  # the same path, written another way
        chat.type(f"/send {relative}\n/get {shared.file_id}\n/quit\n")
        assert chat.wait() == 0, chat.err.text()
    assert "* shared notes.txt as " in chat.out.text()
    assert (downloads / "theirs.txt").read_text() == "their notes"
    assert chat.err.text() == ""


def test_a_message_typed_while_disconnected_is_never_dropped_silently(tmp_path: Path) -> None:
    with chat_whose_server_stopped(tmp_path) as chat:
        chat.type("typed while the server was down\n")
        chat.out.wait_for("* not connected: what you send goes after the reconnect")
        chat.type("/quit\n")
        assert chat.wait() == 7
    assert (
        "sealchat: 1 message may not have been delivered (the server never confirmed it; look "
        "before sending again): 'typed while the server was dow…'" in chat.err.text()
    )


def test_messages_typed_while_the_server_restarts_all_arrive_in_order(tmp_path: Path) -> None:
    key, port = X25519PrivateKey.generate(), free_port()
    lines = [f"offline {i}" for i in range(25)]  # more than the server's burst of 20
    later = [f"later {i}" for i in range(5)]
    with chat_whose_server_stopped(tmp_path, key=key, port=port) as chat:
        chat.type("".join(f"{line}\n" for line in lines))
        with running_server("trio", tmp_path / "server", key=key, port=port) as server:
            chat.type("".join(f"{line}\n" for line in later))  # while it reconnects
            assert chat.process.stdin is not None
            chat.process.stdin.close()
            assert chat.wait() == 0, chat.err.text()
            with server.login("bob") as bob:
                messages, _ = bob.history(room="general")
    assert [m.text for m in messages] == lines + later  # each once, in the order typed
    assert chat.out.text().count("* not connected") == 1  # said once, not for each message


def test_a_room_left_elsewhere_while_the_chat_was_disconnected_is_said_at_the_reconnect(
    tmp_path: Path,
) -> None:
    # alice's chat was in ops when its connection was lost; meanwhile she left ops on another
    # device. Back, the chat stayed in ops, and each line typed was refused as not a member.
    key, port = X25519PrivateKey.generate(), free_port()

    def in_ops(chat: Client) -> None:
        chat.type("/join ops\n")
        chat.out.wait_for("* now in ops")

    with chat_whose_server_stopped(tmp_path, key=key, port=port, while_up=in_ops) as chat:
        with SqliteStore(tmp_path / "server") as store:  # her laptop's leave, stored
            assert store.remove_member("ops", user_key("alice"))
        with running_server("trio", tmp_path / "server", key=key, port=port) as server:
            chat.out.wait_for("* you are no longer in ops (left on another device while this one")
            chat.type("hello again\n/quit\n")
            assert chat.wait() == 0, chat.err.text()
            with server.login("bob") as bob:
                messages, _ = bob.history(room="general")
    assert messages[-1].text == "hello again"


def test_a_transfer_cut_by_a_lost_connection_stops_and_the_chat_reads_on(
    tmp_path: Path,
) -> None:
    big = tmp_path / "big.bin"
    with open(big, "wb") as out:  # sparse: no time spent writing it
        out.truncate(2 << 30)

    def start_sending(chat: Client) -> None:
        chat.type(f"/send {big}\n/quit\n")
        chat.out.wait_for("sending big.bin")

    with chat_whose_server_stopped(tmp_path, while_up=start_sending) as chat:  # mid-upload
        chat.out.wait_for("! the connection was lost during the transfer")
        assert chat.wait() == 7  # and /quit, typed behind it, was read
    assert f"sealchat: 1 file transfer failed: /send {big} (the connection was lost " in (
        chat.err.text()
    )


def test_the_chat_reads_on_while_a_server_takes_its_time_to_store_a_message(
    tmp_path: Path,
) -> None:
    key = X25519PrivateKey.generate()
    # A server that logs alice in, then reads on but never answers: a stalled server.
    with scripted_server(logs_in_then(stays_silent), key) as port:
        done = sealchat(tmp_path, "trust", f"127.0.0.1:{port}", fingerprint(public_bytes(key)))
        assert done.returncode == 0, done.stderr
        chat = Client(tmp_path, "chat", "--port", str(port), "--user", "alice")
        with chat:
            chat.out.wait_for("* logged in")
            chat.type("hello\n/help\n")
            # Well before the 30 s a message may wait to be stored: the next line was read.
            chat.out.wait_for("commands:", timeout=REPLY_WAIT / 2)
            chat.type("/quit\n")
            assert chat.wait() == 7  # the server never stored it: said, not dropped
    assert "1 message may not have been delivered" in chat.err.text()


def test_a_file_named_like_a_home_folder_is_taken_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "~nosuchuser4217").write_text("notes")
    assert _typed_path("~nosuchuser4217") == Path("~nosuchuser4217")  # as a shell would
    with pytest.raises(CommandError, match="there is no user 'nosuchuser4218'"):
        _typed_path("~nosuchuser4218/report.pdf")


def test_the_chat_ends_with_the_reason_if_the_client_gives_up_while_it_waits(
    tmp_path: Path,
) -> None:
    port = free_port()
    with chat_whose_server_stopped(tmp_path, port=port) as chat:
        chat.type("typed while the server was down\n")
        assert chat.process.stdin is not None
        chat.process.stdin.close()
        chat.out.wait_for("waiting up to 10 s for the connection")
        with running_server("trio", tmp_path / "other", port=port):  # another key: refused
            assert chat.wait() == 4  # untrusted, not a traceback
    assert "Traceback" not in chat.err.text()


def test_a_command_runs_after_the_messages_typed_before_it(server: Running, tmp_path: Path) -> None:
    pin(tmp_path, server)
    lines = [f"msg {i}" for i in range(24)]  # beyond the burst: some wait their turn
    script = "/join team\n" + "".join(f"{line}\n" for line in lines) + "/leave team\n/quit\n"
    done = chat_as_alice(tmp_path, server, stdin=script)
    assert done.returncode == 0, done.stderr
    with server.login("bob") as bob:
        bob.join("team")
        messages, _ = bob.history(room="team")
    assert [m.text for m in messages] == lines  # all of them, before she left


def test_the_current_room_left_on_another_device_is_current_no_more(
    server: Running, tmp_path: Path
) -> None:
    pin(tmp_path, server)
    args = ("chat", "--port", str(server.port), "--user", "alice")
    with Client(tmp_path, *args) as chat, server.login("alice") as phone:
        chat.out.wait_for("* logged in")
        chat.type("/join dev\n/leave dev\n/join ops\n")
        chat.out.wait_for("* now in ops")
        phone.leave("ops")
        chat.out.wait_for("* you left ops on another device; now in general")
        chat.type("after\n/quit\n")
        assert chat.wait() == 0, chat.err.text()
        messages, _ = phone.history(room="general")
    assert [m.text for m in messages][-1:] == ["after"]  # to general, not refused for ops
    assert chat.out.text().count("on another device") == 1  # not for its own /leave


def test_a_send_refused_while_disconnected_is_not_taken_for_a_cut_upload(
    tmp_path: Path,
) -> None:
    source = tmp_path / "notes.txt"
    source.write_text("notes")
    key, port = X25519PrivateKey.generate(), free_port()

    def share(chat: Client) -> None:
        chat.type(f"/send {source}\n")
        chat.out.wait_for("* shared notes.txt")

    with chat_whose_server_stopped(tmp_path, key=key, port=port, while_up=share) as chat:
        chat.type(f"/send {source}\n")
        chat.out.wait_for("! not connected")
        with running_server("trio", tmp_path / "server", key=key, port=port) as server:
            chat.out.wait_for("\n* reconnected")  # the line, not the hint that names it
            chat.type(f"/send {source}\n/quit\n")  # shared again, as asked
            assert chat.wait() == 0, chat.err.text()
            with server.login("bob") as bob:
                shared = bob.files(room="general")
    assert [f.name for f in shared] == ["notes.txt", "notes.txt"], chat.out.text()
    assert "was shared already" not in chat.out.text()


def test_the_chat_prints_every_message_that_arrived_before_it_ended(tmp_path: Path) -> None:
    key, count = X25519PrivateKey.generate(), 2000
    news = [Message(text=f"news {i}", room="general", id=2 + i, sender="bob") for i in range(count)]
    delivered: list[int] = []

    def stores_then_floods(sock: socket.socket, conn: Connection) -> None:
        """Nothing missed; at alice's message, its ack with ``news`` right behind it."""
        conn.send(HistoryEnd())
        sock.sendall(conn.data_to_send())
        while not isinstance(event := conn.next_event(), ConnectionClosed):
            if event is NEED_DATA:
                conn.receive_data(sock.recv(65536))
            elif isinstance(event, Delivered):
                delivered.append(event.up_to)
            elif isinstance(event, Message):
                conn.send(MessageAck(client_id=event.client_id, id=1, ts=1.0))
                for message in news:
                    conn.send(message)
                sock.sendall(conn.data_to_send())

    with scripted_server(logs_in_then(stores_then_floods), key) as port:
        done = sealchat(tmp_path, "trust", f"127.0.0.1:{port}", fingerprint(public_bytes(key)))
        assert done.returncode == 0, done.stderr
        # The input ends at once: the chat ends as soon as its message is stored, while what
        # came right after is still on its way to the screen. It is printed all the same.
        args = ("chat", "--port", str(port), "--user", "alice")
        done = sealchat(tmp_path, *args, stdin="that's all from me\n")
    assert done.returncode == 0, done.stderr
    shown = [line.split("bob: ", 1)[1] for line in done.stdout.splitlines() if "bob: " in line]
    assert shown == [message.text for message in news]
    assert max(delivered) == news[-1].id  # and the server was told they were shown


def sealchat_with_closed(
    tmp_path: Path, stream: str, *args: str
) -> subprocess.CompletedProcess[str]:
    """``sealchat ARGS`` started with standard ``stream`` ("input" or "output") closed, as
    by ``<&-`` or ``>&-`` in a shell."""
    closing = {"input": "<&-", "output": ">&-"}[stream]
    return subprocess.run(
        ["sh", "-c", f'exec "$@" {closing}', "sh", sys.executable, "-m", "sealchat", *args],
        check=False,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env_for(tmp_path),
        timeout=60,
    )


def test_a_closed_input_is_no_terminal_and_ends_the_chat(server: Running, tmp_path: Path) -> None:
    pin(tmp_path, server)
    where = ("--port", str(server.port), "--user", "alice")
    sent = sealchat_with_closed(tmp_path, "input", "send", *where, "sent with no input")
    assert (sent.returncode, sent.stderr) == (0, "")
    chat = sealchat_with_closed(tmp_path, "input", "chat", *where)
    assert (chat.returncode, chat.stderr) == (0, "")  # at the end of its input at once
    assert "* logged in" in chat.stdout
    assert "alice: sent with no input" in chat.stdout  # what she had not seen yet
    with server.login("bob") as bob:
        messages, _ = bob.history(room="general")
    assert [m.text for m in messages] == ["sent with no input"]


def test_a_chat_started_with_its_output_closed_ends_as_with_a_closed_pipe(
    server: Running, tmp_path: Path
) -> None:
    pin(tmp_path, server)
    chat = sealchat_with_closed(tmp_path, "output", "chat", "--port", str(server.port))
    assert (chat.returncode, chat.stderr) == (141, "")


def test_send_explains_a_room_name_that_cannot_be_one(tmp_path: Path) -> None:
    # Not "you are not in bad room: add --join to join it", which --join then refuses.
    nobody = ("send", "--port", str(free_port()), "--user", "alice")  # checked before connecting
    for args in (("--room", "Bad Room", "hi"), ("--room", "team!", "--join", "hi")):
        sent = sealchat(tmp_path, *nobody, *args)
        assert sent.returncode == 2
        assert sent.stderr == (
            "sealchat: a room name is 1 to 64 lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter or digit\n"
        )


def test_path_options_written_with_a_tilde_mean_the_home_folder(
    server: Running, tmp_path: Path
) -> None:
    # As in --downloads=~/chat, which the shell leaves as written: not a folder named ~ here.
    pin(tmp_path, server)
    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_text("notes")
    (home / "password").write_text(PASSWORD)
    (home / "password").chmod(0o600)
    with server.login("bob") as bob:
        shared = bob.send_file(home / "notes.txt", room="general")
    options = ("--downloads=~/chat", "--password-file=~/password")
    lines = f"/get {shared.file_id}\n/quit\n"
    done = chat_as_alice(tmp_path, server, *options, stdin=lines, password="", HOME=str(home))
    assert done.returncode == 0, done.stderr
    assert f"* saved {home / 'chat' / 'notes.txt'}\n" in done.stdout
    assert (home / "chat" / "notes.txt").read_text() == "notes"
    sent = sealchat(
        tmp_path,
        *("send", "--port", str(server.port), "--user", "alice", "--file=~/notes.txt"),
        HOME=str(home),
    )
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.startswith("shared notes.txt as ")


def test_send_says_that_the_same_command_resumes_an_upload_a_lost_connection_cut(
    tmp_path: Path,
) -> None:
    key = X25519PrivateKey.generate()
    source = tmp_path / "notes.txt"
    source.write_text("notes")
    with scripted_server(logs_in_then(hangs_up_at(FileOffer)), key, then=[stays_silent]) as port:
        done = sealchat(tmp_path, "trust", f"127.0.0.1:{port}", fingerprint(public_bytes(key)))
        assert done.returncode == 0, done.stderr
        args = ("send", "--port", str(port), "--user", "alice", "--file", str(source))
        sent = sealchat(tmp_path, *args)
    assert sent.returncode == 7
    assert sent.stderr == (
        "sealchat: the upload stopped: the connection was lost; the same command resumes it\n"
    )


def test_files_and_history_of_an_empty_room_say_there_is_none(
    server: Running, tmp_path: Path
) -> None:
    pin(tmp_path, server)
    done = chat_as_alice(tmp_path, server, stdin="/join quiet\n/files\n/history\n/quit\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-2:] == [
        "* no files shared in quiet",
        "* no messages in quiet yet",
    ]


@pytest.mark.skipif(sys.platform != "linux", reason="Linux's terminal line limit")
def test_a_line_the_terminal_cut_is_not_sent_cut(
    server: Running, tmp_path: Path, terminal: tuple[int, int]
) -> None:
    # Pasted on a terminal, a line passes on only its first 4095 bytes: 3,000 of these
    # characters (9,000 bytes, a message short enough) would go as their first 1,365.
    typed, shown = terminal
    attributes = termios.tcgetattr(shown)
    attributes[3] &= ~termios.ECHO  # no echo: it would fill the terminal nobody reads
    termios.tcsetattr(shown, termios.TCSANOW, attributes)
    pin(tmp_path, server)
    args = ("chat", "--port", str(server.port), "--user", "alice")
    with Client(tmp_path, *args, terminal=shown) as chat:
        chat.out.wait_for("* logged in")
        os.write(typed, "字".encode() * 3000 + b"\n")
        chat.out.wait_for("! not sent")
        os.write(typed, b"short\n\x04")
        assert chat.wait() == 6
    assert "the terminal passes on at most 4095 bytes of a line" in chat.out.text()
    with server.login("bob") as bob:
        messages, _ = bob.history(room="general")
    assert [m.text for m in messages] == ["short"]


HELD = b"held back until the chat does something else " * 40
"""The file that ``holds_downloads`` serves: its first half at once, the rest later."""
SERVED_AT_ONCE = 4
"""Downloads ``holds_downloads`` serves at a time (as a server's ``max_transfers``)."""


def holds_downloads(sock: socket.socket, conn: Connection) -> None:
    """Nothing missed; each download asked for gets its offer of HELD and its first half
    (beyond SERVED_AT_ONCE, a refusal as a server's), and the rest only once alice has sent
    a message or asked for the files or the history (which are answered)."""
    conn.send(HistoryEnd())
    sock.sendall(conn.data_to_send())
    half = len(HELD) // 2
    held: list[int] = []
    while not isinstance(event := conn.next_event(), ConnectionClosed):
        if event is NEED_DATA:
            conn.receive_data(sock.recv(65536))
            continue
        if isinstance(event, FileRequest) and len(held) == SERVED_AT_ONCE:
            reason = f"at most {SERVED_AT_ONCE} transfers at a time"
            conn.send(FileReject(transfer=event.transfer, reason=reason))
        elif isinstance(event, FileRequest):
            sha256 = hashlib.sha256(HELD).digest()
            name = f"{event.file_id[:4]}.bin"
            conn.send(
                FileOffer(
                    transfer=event.transfer,
                    name=name,
                    size=len(HELD),
                    sha256=sha256,
                    room="general",
                    file_id=event.file_id,
                    offset=event.offset,
                )
            )
            conn.send(FileChunk(transfer=event.transfer, offset=0, data=HELD[:half]))
            held.append(event.transfer)
        elif isinstance(event, Message | ListFiles | HistoryRequest):
            if isinstance(event, Message):
                conn.send(MessageAck(client_id=event.client_id, id=1, ts=1.0))
            elif isinstance(event, ListFiles):
                conn.send(FileList(files=[], room=event.room))
            else:
                conn.send(HistoryEnd(room=event.room))
            for transfer in held:
                conn.send(FileChunk(transfer=transfer, offset=half, data=HELD[half:]))
                conn.send(FileComplete(transfer=transfer, sha256=hashlib.sha256(HELD).digest()))
            held.clear()
        sock.sendall(conn.data_to_send())


@pytest.mark.parametrize(
    ("typed", "said"),
    [
        ("hello during the download", ""),
        ("/files", "* no files shared in general"),
        ("/history", "* no messages in general yet"),
    ],
)
def test_a_line_typed_after_a_get_runs_before_the_download_ends(
    tmp_path: Path, typed: str, said: str
) -> None:
    # The server holds the download back until the line typed once it is under way has
    # reached it: a chat that read no line during a download would wait (until it stalled).
    key, file_id = X25519PrivateKey.generate(), "a" * 32
    downloads = tmp_path / "downloads"
    with scripted_server(logs_in_then(holds_downloads), key) as port:
        done = sealchat(tmp_path, "trust", f"127.0.0.1:{port}", fingerprint(public_bytes(key)))
        assert done.returncode == 0, done.stderr
        args = ("chat", "--port", str(port), "--user", "alice", "--downloads", str(downloads))
        with Client(tmp_path, *args) as chat:
            chat.type(f"/get {file_id}\n")
            chat.out.wait_for("getting aaaaaaaa 0%")  # offered: the first half comes
            chat.type(f"{typed}\n/quit\n")
            assert chat.wait() == 0, chat.err.text()
    assert (downloads / "aaaa.bin").read_bytes() == HELD  # saved before the chat ended
    lines = chat.out.text().splitlines()
    started = lines.index("* getting aaaaaaaa in the background")
    saved = lines.index(f"* saved {downloads / 'aaaa.bin'}")
    assert started < saved
    if said:
        assert started < lines.index(said) < saved


def test_a_transfer_beyond_the_servers_limit_is_refused_and_the_end_waits_for_the_others(
    tmp_path: Path,
) -> None:
    key = X25519PrivateKey.generate()
    file_ids = [c * 32 for c in "abcde"]
    with scripted_server(logs_in_then(holds_downloads), key) as port:
        done = sealchat(tmp_path, "trust", f"127.0.0.1:{port}", fingerprint(public_bytes(key)))
        assert done.returncode == 0, done.stderr
        args = ("chat", "--port", str(port), "--user", "alice", "--downloads", str(tmp_path))
        with Client(tmp_path, *args) as chat:
            chat.out.wait_for("* logged in")
            chat.type("".join(f"/get {file_id}\n" for file_id in file_ids))
            chat.out.wait_for("! refused: at most 4 transfers at a time (getting ")
            chat.type("/quit\n")
            chat.out.wait_for("* waiting for 4 transfers to end: getting ")
            chat.out.wait_for("(Ctrl-C ends now)")
            chat.interrupt()
            assert chat.wait() == 130
    out = chat.out.text()
    assert out.count(" in the background\n") == 5, out
    assert "* saved" not in out


def test_an_upload_cut_in_the_background_is_not_shared_twice(tmp_path: Path) -> None:
    # The server stores the file, then the link drops before it says so: the upload stops
    # (cut), and the same /send after the reconnect finds the file there instead of
    # sharing it again. The server takes the reconnect only once the cut was said.
    key, source = X25519PrivateKey.generate(), tmp_path / "notes.txt"
    source.write_text("notes")
    stored = FileInfo(
        file_id="f" * 32,
        name="notes.txt",
        size=len("notes"),
        sha256=hashlib.sha256(b"notes").digest(),
    )
    cut_said = threading.Event()

    def stores_then_hangs_up(sock: socket.socket, conn: Connection) -> None:
        conn.send(HistoryEnd())
        sock.sendall(conn.data_to_send())
        while not isinstance(event := conn.next_event(), FileComplete):
            if event is NEED_DATA:
                conn.receive_data(sock.recv(65536))
            elif isinstance(event, FileOffer):
                conn.send(FileAccept(transfer=event.transfer, file_id=stored.file_id))
                sock.sendall(conn.data_to_send())
        sock.close()

    def lists_it(sock: socket.socket, conn: Connection) -> None:
        conn.send(HistoryEnd())
        sock.sendall(conn.data_to_send())
        while not isinstance(event := conn.next_event(), ConnectionClosed):
            if event is NEED_DATA:
                conn.receive_data(sock.recv(65536))
            elif isinstance(event, ListFiles):
                conn.send(FileList(files=[stored], room=event.room))
                sock.sendall(conn.data_to_send())
            assert not isinstance(event, FileOffer), "shared twice"

    def once_the_cut_was_said(sock: socket.socket, conn: Connection) -> None:
        assert cut_said.wait(30)
        logs_in_then(lists_it)(sock, conn)

    first = logs_in_then(stores_then_hangs_up)
    with scripted_server(first, key, then=[once_the_cut_was_said]) as port:
        done = sealchat(tmp_path, "trust", f"127.0.0.1:{port}", fingerprint(public_bytes(key)))
        assert done.returncode == 0, done.stderr
        with Client(tmp_path, "chat", "--port", str(port), "--user", "alice") as chat:
            chat.type(f"/send {source}\n")
            chat.out.wait_for("! the connection was lost during the transfer; ")
            cut_said.set()
            chat.out.wait_for("\n* reconnected")
            chat.type(f"/send {source}\n/quit\n")
            assert chat.wait() == 0, chat.err.text()
    out = chat.out.text()
    assert "the same command resumes it (sending notes.txt)" in out
    assert f"* notes.txt was shared already, as {stored.file_id}" in out


# --- sealchat passwd ----------------------------------------------------------------------


def test_passwd_changes_the_password_and_logs_out_the_other_sessions(
    server: Running, tmp_path: Path
) -> None:
    pin(tmp_path, server)
    port = str(server.port)
    args = ("passwd", "--port", port, "--user", "alice", "--new-password-stdin")
    with server.login("alice") as other:
        done = sealchat(tmp_path, *args, stdin="a brand new password\n")
        assert done.returncode == 0, done.stderr
        assert "changed the password of alice" in done.stdout
        closed = [e for e in drain(other) if isinstance(e, ConnectionClosed)]
        assert [e.reason for e in closed] == [PASSWORD_CHANGED]
    old = sealchat(tmp_path, "send", "--port", port, "--user", "alice", "hello")
    assert old.returncode == 5
    new = sealchat(
        tmp_path, "send", "--port", port, "--user", "alice", "hi", password="a brand new password"
    )
    assert new.returncode == 0, new.stderr


def test_passwd_says_why_a_new_password_is_refused(server: Running, tmp_path: Path) -> None:
    pin(tmp_path, server)
    args = ("passwd", "--port", str(server.port), "--user", "alice", "--new-password-stdin")
    short = sealchat(tmp_path, *args, stdin="short\n")
    assert short.returncode == 6
    assert "the password was not changed: a password needs at least 8 characters" in short.stderr
    nothing = sealchat(tmp_path, *args, stdin="")
    assert nothing.returncode == 2
    assert "no new password came on standard input" in nothing.stderr
    wrong = sealchat(tmp_path, *args, stdin="a brand new password\n", password="nope")
    assert wrong.returncode == 5
    assert "invalid username or password" in wrong.stderr


def test_passwd_needs_a_terminal_or_the_new_password_on_stdin(
    server: Running, tmp_path: Path
) -> None:
    done = sealchat(tmp_path, "passwd", "--port", str(server.port), "--user", "alice")
    assert done.returncode == 2
    assert "--new-password-stdin" in done.stderr


def test_passwd_on_a_server_that_does_not_let_users_change_it(tmp_path: Path) -> None:
    key = X25519PrivateKey.generate()
    with scripted_server(logs_in_then(stays_silent), key) as port:  # an older server
        done = sealchat(tmp_path, "trust", f"127.0.0.1:{port}", fingerprint(public_bytes(key)))
        assert done.returncode == 0, done.stderr
        args = ("passwd", "--port", str(port), "--user", "alice", "--new-password-stdin")
        done = sealchat(tmp_path, *args, stdin="a brand new password\n")
    assert done.returncode == 6
    assert "this server does not let users change their password; ask its operator" in done.stderr


@pytest.mark.parametrize("again", ["a brand new password", "another one"])
def test_passwd_asks_for_the_new_password_twice_on_a_terminal(
    server: Running, tmp_path: Path, terminal: tuple[int, int], again: str
) -> None:
    typed, shown = terminal
    pin(tmp_path, server)
    args = ("passwd", "--port", str(server.port), "--user", "alice")
    with Client(tmp_path, *args, terminal=shown) as passwd:
        passwd.err.wait_for("new password for alice: ")
        os.write(typed, b"a brand new password\n")
        passwd.err.wait_for("again: ")
        os.write(typed, again.encode() + b"\n")
        code = passwd.wait()
    if again == "another one":
        assert code == 2
        assert "the new passwords differ; nothing changed" in passwd.err.text()
        return
    assert code == 0, passwd.err.text()
    assert "changed the password of alice" in passwd.out.text()
    assert "a brand new password" not in passwd.out.text() + passwd.err.text()  # no echo


def test_a_chat_on_a_terminal_tells_the_server_what_it_showed_as_read(
    server: Running, tmp_path: Path
) -> None:
    # What `sealchat chat` shows on a terminal was never told read: the user's desktop
    # client went on counting it unread. Not the catch-up after the login, which scrolls
    # by unread; nor output piped to a file or a program: that is not someone reading.
    pin(tmp_path, server)
    server.login("alice").close()  # a member of general from now on
    bob = server.login("bob")
    missed = bob.send_message("while you were away", to="alice")
    screen, shown = os.openpty()
    command = ("chat", "--port", str(server.port), "--user", "alice")
    chat = subprocess.Popen(
        [sys.executable, "-m", "sealchat", *command],
        stdin=subprocess.PIPE,
        stdout=shown,
        stderr=subprocess.PIPE,
        env=env_for(tmp_path),
    )
    os.close(shown)
    pty_end = open(screen, "rb", buffering=0)  # noqa: SIM115 (closed at the end)
    output = Output(pty_end)
    try:
        output.wait_for("while you were away")  # the catch-up, and its end right after
        room = bob.send_message("in the room", room="general")
        direct = bob.send_message("just for you", to="alice")
        expected = {("general", "", room.id), ("", "bob", direct.id)}
        deadline = time.monotonic() + 30
        while set(server.hub.store.read_markers("alice", 10)) != expected:
            assert time.monotonic() < deadline, server.hub.store.read_markers("alice", 10)
            time.sleep(0.05)
        assert missed.id < direct.id
        _, errors = chat.communicate(timeout=30)  # the end of input ends the chat
        assert (chat.returncode, errors) == (0, b"")
    finally:
        bob.close()
        if chat.poll() is None:
            chat.kill()
            chat.communicate()
        output.text()  # read to the end
        pty_end.close()
