"""The server's administration commands meet an operator's mistakes with a clear message
and an exit code, never a traceback or a quietly wrong result."""

from __future__ import annotations

import io
import logging
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sealchat.cli import server_cmd
from sealchat.cli.main import main
from sealchat.transports import sqlite_schema
from tests.servers import free_port


@pytest.fixture
def port_in_use() -> Iterator[int]:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        yield taken.getsockname()[1]


@pytest.mark.parametrize("port", ["99999", "65536", "-1", "http"])
def test_a_port_out_of_range_is_refused_before_anything_starts(
    port: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["server", "--data-dir", str(tmp_path / "data"), "--port", port])
    assert exited.value.code == 2
    assert "give a number from 1 to 65535" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    "limit",
    [
        "--max-connections",
        "--max-connections-per-address",
        "--max-unauthenticated-per-address",
        "--address-connection-burst",
        "--address-connections-per-second",
    ],
)
# 0 would turn everyone away; 10**400 would crash the server at the first connection (its
# rate, a float, would overflow); "²" is a digit to Python, but no number.
@pytest.mark.parametrize("value", ["0", "-5", "many", str(10**400), "1000000001", "²"])
def test_a_limit_that_would_turn_everyone_away_is_refused_before_anything_starts(
    limit: str, value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["server", "--data-dir", str(tmp_path / "data"), limit, value])
    assert exited.value.code == 2
    assert f"{value!r} is not a count: give a whole number from 1 to 1,000,000,000" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("threads", [False, True], ids=["trio", "threads"])
def test_a_port_in_use_is_said_in_one_line(
    threads: bool, port_in_use: int, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    args = ["server", "--data-dir", str(tmp_path), "--port", str(port_in_use)]
    with caplog.at_level(logging.INFO, logger="sealchat.server"):
        assert main(args + (["--threads"] if threads else [])) == 1
    assert f"cannot listen on 127.0.0.1:{port_in_use}: Address already in use" in caplog.text
    assert "listening on" not in caplog.text


@pytest.mark.parametrize("threads", [False, True], ids=["trio", "threads"])
@pytest.mark.parametrize(
    "signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name
)
def test_a_server_stopped_by_a_signal_says_so_and_ends_cleanly(
    threads: bool, signum: signal.Signals, tmp_path: Path
) -> None:
    # Also the threaded one, and on a hang-up (the terminal it ran in closed): the log of a
    # service says when and why it stopped.
    port = free_port()
    args = ["server", "--data-dir", str(tmp_path), "--port", str(port)]
    command = [sys.executable, "-m", "sealchat", *args, *(["--threads"] if threads else [])]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        _wait_until_listening(port)
        process.send_signal(signum)
        _, log = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, log
    assert f"{signum.name}: shutting down" in log
    assert log.rstrip().endswith("stopped")


@pytest.mark.parametrize("threads", [False, True], ids=["trio", "threads"])
def test_a_server_started_under_nohup_outlives_the_hang_up(threads: bool, tmp_path: Path) -> None:
    port = free_port()
    args = ["server", "--data-dir", str(tmp_path), "--port", str(port)]
    command = [sys.executable, "-m", "sealchat", *args, *(["--threads"] if threads else [])]
    nohup = (  # as nohup does: SIGHUP ignored, which the program it runs inherits
        "import os, signal, sys; signal.signal(signal.SIGHUP, signal.SIG_IGN); "
        "os.execv(sys.argv[1], sys.argv[1:])"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", nohup, *command], stderr=subprocess.PIPE, text=True
    )
    try:
        _wait_until_listening(port)
        process.send_signal(signal.SIGHUP)
        _wait_until_listening(port)  # still serving after it
        assert process.poll() is None
        process.send_signal(signal.SIGTERM)
        _, log = process.communicate(timeout=30)
    finally:
        process.kill()
    assert "SIGHUP" not in log
    assert "SIGTERM: shutting down" in log


def _wait_until_listening(port: int) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)


def test_an_unknown_host_is_said_in_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    args = ["server", "--data-dir", str(tmp_path), "--host", "no-such-host.invalid"]
    with caplog.at_level(logging.ERROR, logger="sealchat.server"):
        assert main([*args, "--port", "0"]) == 1
    assert "cannot listen on no-such-host.invalid:0" in caplog.text


def test_a_data_dir_that_is_a_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    assert main(["server", "--data-dir", str(a_file), "--port", "0"]) == 1
    assert f"{a_file} is a file, not a folder" in capsys.readouterr().err
    assert main(["server", "--data-dir", str(a_file / "sub"), "--port", "0"]) == 1
    assert f"cannot make the data folder {a_file / 'sub'}: Not a directory" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize(
    "command",
    [["server-key"], ["user", "list"], ["user", "passwd", "bob"], ["user", "remove", "bob"]],
)
def test_commands_that_read_server_data_create_none_where_there_is_none(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A mistyped --data-dir must not make a fresh server: its key would be published as
    # the server's, and an empty user list would look like "no accounts".
    mistyped = tmp_path / "svr"
    assert main([*command, "--data-dir", str(mistyped)]) == 1
    assert f"no server data in {mistyped}" in capsys.readouterr().err
    assert not mistyped.exists()


def _added(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("a long password\n"))
    assert main(["user", "add", "bob", "--password-stdin", "--data-dir", str(tmp_path)]) == 0


def test_the_server_key_is_printed_from_an_existing_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    served: list[object] = []
    monkeypatch.setattr("sealchat.cli.server_cmd._run_trio", lambda *a: served.append(a) or 0)
    assert main(["server", "--data-dir", str(tmp_path), "--port", "0"]) == 0
    capsys.readouterr()
    assert main(["server-key", "--data-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith("SHA256:")


@pytest.mark.parametrize("action", ["add", "passwd"])
def test_no_password_is_read_from_a_stdin_that_is_not_a_terminal_unless_asked(
    action: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _added(tmp_path, monkeypatch)
    name = "carol" if action == "add" else "bob"
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # /dev/null, or a pipe
    assert main(["user", action, name, "--data-dir", str(tmp_path)]) == 2
    assert "pipe it in with --password-stdin" in capsys.readouterr().err


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("typed", "code"), [(KeyboardInterrupt, 130), (EOFError, 2)])
def test_giving_up_at_the_password_prompt_changes_nothing(
    typed: type[BaseException],
    code: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _added(tmp_path, monkeypatch)
    monkeypatch.setattr("sys.stdin", _Terminal())

    def prompt(_: str) -> str:
        raise typed

    monkeypatch.setattr("getpass.getpass", prompt)
    assert main(["user", "passwd", "bob", "--data-dir", str(tmp_path)]) == code
    assert "nothing changed" in capsys.readouterr().err


@pytest.mark.parametrize("full", [True, False], ids=["disk full", "locked"])
@pytest.mark.parametrize("command", [["user", "list"], ["server", "--port", "0"]])
def test_a_database_sqlite_cannot_open_is_said_in_one_line(
    command: list[str],
    full: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # On a full disk SQLite cannot make the database's -wal and -shm files and calls it a
    # "disk I/O error": every command on the data folder ended in that traceback.
    _added(tmp_path, monkeypatch)
    capsys.readouterr()
    why = "disk I/O error" if full else "database is locked"

    def fails(*_args: object) -> None:
        raise sqlite3.OperationalError(why)

    monkeypatch.setattr(sqlite_schema, "configure", fails)
    room = shutil.disk_usage(tmp_path)._replace(free=4096 if full else 1 << 30)
    monkeypatch.setattr(server_cmd.shutil, "disk_usage", lambda _path: room)
    assert main([*command, "--data-dir", str(tmp_path)]) == 1
    said = capsys.readouterr().err
    assert f"cannot use the database in {tmp_path}: {why}" in said
    assert (f"the disk of {tmp_path} is full: free some space" in said) is full
    assert "Traceback" not in said
