"""``sealchat user add|passwd|remove|list``: managing accounts on a server's data folder."""

from __future__ import annotations

import io
import logging
import os
import sqlite3
import stat
from pathlib import Path
from typing import TypeVar

import pytest

from sealchat.cli.main import main
from sealchat.cli.server_cmd import _ensure_demo_account
from sealchat.core import ConnectionClosed, Membership, Presence
from sealchat.core.hub import HubConfig
from sealchat.transports.blocking import BlockingClient
from sealchat.transports.passwords import CHEAP, hash_password, verify_password
from sealchat.transports.requests import ClientError, LoginFailed
from sealchat.transports.sqlite_store import SqliteStore
from tests.servers import KINDS, PASSWORD, running_server

T = TypeVar("T")


def user(data_dir: Path, *args: str, stdin: str = "", monkeypatch: pytest.MonkeyPatch) -> int:
    """``sealchat user ARGS --data-dir DATA_DIR`` with ``stdin`` as standard input."""
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    return main(["user", *args, "--data-dir", str(data_dir)])


def add(data_dir: Path, name: str, typed: str, monkeypatch: pytest.MonkeyPatch) -> int:
    """``sealchat user add NAME --password-stdin``, the password line being ``typed``."""
    return user(data_dir, "add", name, "--password-stdin", stdin=typed, monkeypatch=monkeypatch)


def password_of(data_dir: Path, key: str) -> str:
    """The stored password hash of user ``key``."""
    with SqliteStore(data_dir) as store:
        row = store.get_user(key)
    assert row is not None
    return row.password_hash


def test_accounts_are_added_listed_changed_and_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def run(*args: str, stdin: str = "") -> int:
        return user(tmp_path, *args, stdin=stdin, monkeypatch=monkeypatch)

    assert run("add", "Alice", "--password-stdin", stdin="first password\r\n") == 0
    assert run("add", "bob", "--password-stdin", stdin="bob's password\n") == 0
    assert run("add", "ALICE", "--password-stdin", stdin="another one\n") == 1
    assert "ALICE exists; use 'user passwd'" in capsys.readouterr().err
    assert run("passwd", "alice", "--password-stdin", stdin="second password\n") == 0
    assert verify_password("second password", password_of(tmp_path, "alice"))
    capsys.readouterr()
    assert run("list") == 0
    assert capsys.readouterr().out.split() == ["Alice", "bob"]
    assert run("remove", "alice") == 0
    assert run("remove", "alice") == 1
    assert "there is no user alice" in capsys.readouterr().err


def test_a_password_ends_at_the_line_break_whatever_its_style(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert add(tmp_path, "alice", "typed on windows\r\n", monkeypatch) == 0
    assert verify_password("typed on windows", password_of(tmp_path, "alice"))


@pytest.mark.parametrize(
    ("name", "password", "error"),
    [
        ("al ice", "long enough", "user"),
        ("alice", "short", "at least"),
        ("alice", "", "no password came on standard input"),  # < /dev/null
    ],
)
def test_bad_names_and_short_passwords_are_refused_saying_why(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    name: str,
    password: str,
    error: str,
) -> None:
    assert add(tmp_path, name, password, monkeypatch) == 2
    assert error in capsys.readouterr().err
    with SqliteStore(tmp_path) as store:
        assert store.list_users() == []


def test_removing_a_user_keeps_the_default_room_and_drops_rooms_left_unused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert add(tmp_path, "alice", "long enough\n", monkeypatch) == 0
    with SqliteStore(tmp_path) as store:
        for room in ("general", "quiet"):
            store.ensure_room(room)
            store.add_member(room, "alice")
    assert user(tmp_path, "remove", "alice", monkeypatch=monkeypatch) == 0
    with SqliteStore(tmp_path) as store:
        assert store.rooms() == [("general", 0)]


def next_of(client: BlockingClient, kind: type[T], timeout: float = 10.0) -> T:
    """The next event of type ``kind`` the client receives (the others are skipped)."""
    while True:
        event = client.events.get(timeout=timeout)
        if isinstance(event, kind):
            return event


@pytest.mark.parametrize("kind", KINDS)
def test_removing_an_account_logs_its_sessions_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    data_dir = tmp_path / "server"
    with running_server(kind, data_dir) as server, server.login("bob") as bob:
        with server.login("carol") as carol:
            assert user(data_dir, "remove", "carol", monkeypatch=monkeypatch) == 0
            closed = next_of(carol, ConnectionClosed)
            assert "your account was removed" in closed.reason
            with pytest.raises(ClientError):
                carol.send_message("still here?", room="general")
        seen = [next_of(bob, Membership) for _ in range(2)]  # carol's first login, then this
        assert [(m.room, m.user, m.joined) for m in seen] == [
            ("general", "carol", True),
            ("general", "carol", False),
        ]
        assert bob.send_message("hello", room="general").id  # everyone else carries on


@pytest.mark.parametrize("kind", KINDS)
def test_changing_a_password_logs_the_accounts_sessions_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    data_dir = tmp_path / "server"
    with running_server(kind, data_dir) as server, server.login("bob") as bob:
        with server.login("carol") as carol, server.login("carol") as carol_elsewhere:
            new = "the new password\n"
            assert (
                user(
                    data_dir,
                    "passwd",
                    "carol",
                    "--password-stdin",
                    stdin=new,
                    monkeypatch=monkeypatch,
                )
                == 0
            )
            for session in (carol, carol_elsewhere):
                closed = next_of(session, ConnectionClosed)
                assert "your password was changed" in closed.reason
                with pytest.raises(ClientError, match="closed: your password was changed"):
                    session.send_message("still here?", room="general")  # it says why
        seen = [next_of(bob, Presence) for _ in range(2)]  # carol's first login, then this
        assert [(p.user, p.online) for p in seen] == [("carol", True), ("carol", False)]
        with pytest.raises(LoginFailed), server.login("carol", PASSWORD):
            pass
        with server.login("carol", "the new password") as carol:
            assert carol.send_message("back", room="general").id
            assert next_of(bob, Presence) == Presence(user="carol", online=True)


def test_a_removed_accounts_name_cannot_be_added_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def run(*args: str, stdin: str = "") -> int:
        return user(tmp_path, *args, stdin=stdin, monkeypatch=monkeypatch)

    assert run("add", "carol", "--password-stdin", stdin="long enough\n") == 0
    assert run("remove", "carol") == 0
    assert "the name stays reserved" in capsys.readouterr().out
    for name in ("carol", "Carol"):
        assert run("add", name, "--password-stdin", stdin="another password\n") == 1
        err = capsys.readouterr().err
        assert f"{name} belonged to a removed account" in err
        assert "choose another name" in err
    assert run("passwd", "carol", "--password-stdin", stdin="another password\n") == 1
    assert "there is no user carol" in capsys.readouterr().err
    with SqliteStore(tmp_path) as store:
        assert store.list_users() == []


def test_no_demo_account_takes_a_removed_accounts_name(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with SqliteStore(tmp_path) as store:
        store.add_user("esha", "esha", "$argon2id$fake")
        store.remove_user("esha")
        with caplog.at_level(logging.WARNING, logger="sealchat.server"):
            _ensure_demo_account(store)
        assert store.get_user("esha") is None
    assert "no demo account" in caplog.text
    assert "DEMO ACCOUNT" not in caplog.text


def test_demo_leaves_an_esha_with_a_password_of_its_own_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with SqliteStore(tmp_path) as store:
        store.add_user("esha", "esha", hash_password("esha's own password", params=CHEAP))
        with caplog.at_level(logging.WARNING, logger="sealchat.server"):
            _ensure_demo_account(store)
        row = store.get_user("esha")
        assert row is not None
        assert verify_password("esha's own password", row.password_hash)  # not reset
    assert "user 'esha' exists with a password of its own, not the demo password" in caplog.text
    assert "DEMO ACCOUNT" not in caplog.text  # which would say anyone can log in


def test_a_server_without_demo_refuses_to_start_while_the_demo_password_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The public esha/esha123 left by an earlier --demo must not stay open without a word:
    # a start without --demo refuses, saying how to remove the account or change its
    # password (or to say --demo); once either is done, the server starts.
    served: list[object] = []
    monkeypatch.setattr("sealchat.cli.server_cmd._run_trio", lambda *a: served.append(a) or 0)

    def serve(*extra: str) -> int:
        return main(["server", "--data-dir", str(tmp_path), "--port", "0", *extra])

    assert serve("--demo") == 0
    assert len(served) == 1
    with caplog.at_level(logging.ERROR, logger="sealchat.server"):
        assert serve() == 1
    assert len(served) == 1  # it never listened
    assert "demo account 'esha' with the public demo password" in caplog.text
    assert f"'sealchat user remove esha --data-dir {tmp_path}'" in caplog.text
    assert f"'sealchat user passwd esha --data-dir {tmp_path}'" in caplog.text
    assert "start with --demo" in caplog.text
    assert serve("--demo") == 0  # the demo on purpose
    assert len(served) == 2
    new = "esha's own password\n"
    assert (
        user(tmp_path, "passwd", "esha", "--password-stdin", stdin=new, monkeypatch=monkeypatch)
        == 0
    )
    assert serve() == 0  # an ordinary account now
    assert len(served) == 3
    with SqliteStore(tmp_path) as store:  # back to the demo password: that is what counts
        assert store.set_password("esha", hash_password("esha123", params=CHEAP))
    assert serve() == 1
    assert len(served) == 3
    assert user(tmp_path, "remove", "esha", monkeypatch=monkeypatch) == 0
    assert serve() == 0  # no demo account at all
    assert len(served) == 4


@pytest.mark.skipif(os.name != "posix", reason="POSIX modes and umask")
def test_the_data_folder_and_its_missing_parents_are_private_whatever_the_umask(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Under umask 000, parents made world-writable would let another local user swap the
    # data folder for one of their own, and read every message the server stores.
    data = tmp_path / "share" / "deeper" / "sealchat"
    old = os.umask(0)
    try:
        assert (
            user(
                data,
                "add",
                "alice",
                "--password-stdin",
                stdin="pw-12345678\n",
                monkeypatch=monkeypatch,
            )
            == 0
        )
    finally:
        os.umask(old)
    for folder in (tmp_path / "share", tmp_path / "share" / "deeper", data):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    capsys.readouterr()
    (data / "sealchat.db").chmod(0o666)  # as a swapped-in database would be
    for command in (["user", "list"], ["server"]):
        assert main([*command, "--data-dir", str(data)]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"sealchat: the database {data / 'sealchat.db'} has mode 0666")
        assert err.rstrip().endswith(f"chmod 600 {data / 'sealchat.db'}")
    (data / "sealchat.db").chmod(0o600)
    data.chmod(0o757)
    assert main(["user", "list", "--data-dir", str(data)]) == 1
    assert f"chmod 700 {data}" in capsys.readouterr().err


@pytest.mark.parametrize("kind", KINDS)
def test_nobody_new_gets_a_removed_users_messages_or_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    data = tmp_path / "data"
    payslip = tmp_path / "payslip.txt"
    payslip.write_bytes(b"carol: 123k")
    with running_server(kind, data, users=("bob", "carol")) as server, server.login("bob") as bob:
        bob.send_message("the vault code is 4711", to="carol")
        shared = bob.send_file(payslip, to="carol")
    assert user(data, "remove", "carol", monkeypatch=monkeypatch) == 0
    opened = HubConfig(open_registration=True)
    with running_server(kind, data, hub=opened, users=()) as server:
        for name in ("carol", "CAROL"):
            with (
                server.client() as mallory,
                pytest.raises(LoginFailed, match=r"^that user name is taken$"),
            ):
                mallory.login(name, "mallory's own password", register=True)
        with server.client() as erin:
            assert erin.login("erin", "erin's own password", register=True) == "erin"
            with pytest.raises(ClientError, match="no user carol"):
                erin.history(peer="carol")
            with pytest.raises(ClientError, match="no user carol"):
                erin.files(peer="carol")
            with pytest.raises(ClientError):
                erin.download(shared.file_id, tmp_path / "erin")
            assert not (tmp_path / "erin" / payslip.name).exists()
    with SqliteStore(data) as store:  # nothing was deleted from bob's side
        kept = store.direct_history("bob", "carol", 0, 10)
        assert [(m.text, m.file_id) for m in kept] == [
            ("the vault code is 4711", ""),
            ("", shared.file_id),
        ]
        assert [f.file_id for _, f in store.files_between("bob", "carol", 0, 9)] == [shared.file_id]


def test_a_second_server_on_a_data_folder_in_use_is_refused_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sealchat.cli.server_cmd._run_trio", lambda *a: 0)
    assert add(tmp_path, "alice", PASSWORD, monkeypatch) == 0
    with SqliteStore(tmp_path):  # the first server
        capsys.readouterr()
        assert main(["server", "--data-dir", str(tmp_path), "--port", "0"]) == 1
        said = capsys.readouterr().err
        assert said == (
            f"sealchat: another sealchat server is using {tmp_path} (process {os.getpid()}): "
            "stop it first, or give this one another --data-dir\n"
        )
        assert user(tmp_path, "list", monkeypatch=monkeypatch) == 0  # beside it: fine
        assert capsys.readouterr().out == "alice\n"
    assert main(["server", "--data-dir", str(tmp_path), "--port", "0"]) == 0  # once it stopped


@pytest.mark.parametrize("damage", ["garbage", "truncated", "a page", "newer"])
def test_a_damaged_or_newer_database_is_explained_in_one_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    damage: str,
) -> None:
    monkeypatch.setattr("sealchat.cli.server_cmd._run_trio", lambda *a: 0)
    assert add(tmp_path, "alice", PASSWORD, monkeypatch) == 0
    database = tmp_path / "sealchat.db"
    if damage == "garbage":
        database.write_bytes(os.urandom(8192))
    elif damage == "truncated":
        os.truncate(database, 1000)
    elif damage == "a page":  # the header and the schema are fine: met by a query later
        with open(database, "r+b") as file:
            file.seek(8192)
            file.write(b"\xff" * 4096)
    else:
        with sqlite3.connect(database) as conn:
            conn.execute("PRAGMA user_version = 99")
    capsys.readouterr()
    for command in (["user", "list"], ["server", "--port", "0"]):
        assert main([*command, "--data-dir", str(tmp_path)]) == 1
        said = capsys.readouterr().err
        assert said.startswith("sealchat: ")
        assert said.count("\n") == 1, said  # one line, no traceback
        if damage == "newer":
            assert "upgrade sealchat" in said
        elif damage == "a page":
            assert f"the database in {tmp_path} is damaged (database disk image is malformed)" in (
                said
            )
        else:
            assert f"the database {database} cannot be read" in said
        if damage != "newer":
            assert "restore it from a backup, or move it aside" in said


def test_a_bugs_database_error_keeps_its_traceback_not_called_damage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A constraint failing under a bug is no damaged database: moving it aside would be the
    # wrong advice, and the traceback is what finds the bug.
    def bug(*_args: object) -> int:
        raise sqlite3.IntegrityError("UNIQUE constraint failed: users.key")

    monkeypatch.setattr("sealchat.cli.server_cmd._run_trio", bug)
    with pytest.raises(sqlite3.IntegrityError):
        main(["server", "--data-dir", str(tmp_path), "--port", "0"])


def test_a_data_dir_written_with_a_tilde_means_the_home_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As in --data-dir=~/chat, which the shell leaves as written: not a folder named ~ here.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.stdin", io.StringIO("a long password\n"))
    assert main(["user", "add", "alice", "--password-stdin", "--data-dir=~/chat"]) == 0
    assert verify_password("a long password", password_of(tmp_path / "home" / "chat", "alice"))
    assert not (tmp_path / "~").exists()
