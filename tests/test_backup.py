"""``sealchat backup``: a copy of a server's data made while it runs, that a server restarts from
with everything its users had (history, direct messages, files, an upload to resume, its key)."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import socket
import sqlite3
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from sealchat.cli.main import main
from sealchat.core import Message, fingerprint
from sealchat.core.hub import HubConfig
from sealchat.transports import backup as backup_module
from sealchat.transports.backup import BackupError, back_up
from sealchat.transports.blocking import BlockingClient
from sealchat.transports.keyfile import load_or_create_key, public_bytes
from sealchat.transports.requests import TRANSFER_BLOCK, ClientError
from sealchat.transports.sqlite_store import SqliteStore
from tests.servers import running_server

WAIT = 20.0


def _uploaded(data_dir: Path) -> int:
    """Bytes the server has committed of the uploads in progress in ``data_dir``."""
    db = sqlite3.connect(f"file:{data_dir / 'sealchat.db'}?mode=ro", uri=True)
    try:
        query = "SELECT coalesce(sum(received), 0) FROM files WHERE complete = 0"
        return int(db.execute(query).fetchone()[0])
    finally:
        db.close()


def _cut_off_midway(client: BlockingClient, path: Path) -> None:
    """Start uploading ``path`` and drop the connection after its first block (the server
    keeps what it received, for a resume)."""

    def drop(done: int, _total: int) -> None:
        client._sock.shutdown(socket.SHUT_RDWR)

    with pytest.raises(ClientError):
        client.send_file(path, room="ops", progress=drop)


def _empty_server_data(tmp_path: Path) -> tuple[Path, X25519PrivateKey]:
    """A data folder under ``tmp_path`` as a first start leaves it: its key and database."""
    data = tmp_path / "data"
    key = load_or_create_key(data / "server_key")
    SqliteStore(data).close()
    return data, key


def _texts(messages: list[Message]) -> list[str]:
    return [m.text for m in messages]


def test_a_backup_made_while_the_server_runs_brings_everything_back(tmp_path: Path) -> None:
    data, backup = tmp_path / "data", tmp_path / "backup"
    key = load_or_create_key(data / "server_key")
    shared = tmp_path / "report.pdf"
    shared.write_bytes(os.urandom(300_000))
    big = tmp_path / "video.bin"
    big.write_bytes(os.urandom(3 * TRANSFER_BLOCK))
    with running_server("trio", data, key=key) as server:
        alice, bob = server.login("alice"), server.login("bob")
        with alice, bob:
            alice.join("ops")
            bob.join("ops")
            for n in range(3):
                alice.send_message(f"room message {n}", room="ops")
            bob.send_message("just between us", to="alice")
            file = alice.send_file(shared, room="ops")
            uploader = server.login("alice")
            _cut_off_midway(uploader, big)
            uploader.close()
            deadline = time.monotonic() + WAIT
            while not _uploaded(data) and time.monotonic() < deadline:
                time.sleep(0.05)
            report = back_up(data, backup)  # while the server runs and bob is connected
            bob.send_message("after the backup", room="ops")

    assert report.path == backup
    assert (report.users, report.files, report.file_bytes) == (4, 1, 300_000)
    assert report.uploads_in_progress == 1
    assert report.damaged == ()
    restored_key = load_or_create_key(backup / "server_key")
    assert public_bytes(restored_key) == public_bytes(key) == report.public_key

    with (
        running_server("trio", backup, key=restored_key) as restored,
        restored.login("bob") as bob,
        restored.login("alice") as alice,
    ):
        room, _ = bob.history(room="ops")
        assert _texts(room) == [f"room message {n}" for n in range(3)] + [""]  # + the file
        announced = room[-1].file
        assert announced is not None
        assert announced.file_id == file.file_id
        direct, _ = alice.history(peer="bob")
        assert _texts(direct) == ["just between us"]
        saved = bob.download(file.file_id, tmp_path / "bob-downloads")
        assert saved.read_bytes() == shared.read_bytes()

        resumed_from: list[int] = []
        alice.send_file(big, room="ops", progress=lambda done, _: resumed_from.append(done))
        assert resumed_from[0] > TRANSFER_BLOCK  # went on from the part the backup kept
        got = bob.download(bob.files(room="ops")[-1].file_id, tmp_path / "bob-downloads")
        assert got.read_bytes() == big.read_bytes()


def test_the_backup_is_private_and_self_contained(tmp_path: Path) -> None:
    data, _ = _empty_server_data(tmp_path)
    backup = tmp_path / "backup"
    back_up(data, backup)
    for path in [backup, *backup.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), path
    assert sorted(p.name for p in backup.iterdir()) == ["downloads", "sealchat.db", "server_key"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_stopped_servers_data_folder_is_left_as_it_was(tmp_path: Path) -> None:
    data, _ = _empty_server_data(tmp_path)
    before = sorted(p.name for p in data.iterdir())
    back_up(data, tmp_path / "backup")
    assert sorted(p.name for p in data.iterdir()) == before  # no -wal or -shm left behind


@pytest.mark.parametrize(
    ("where", "says"),
    [
        ("existing", "already exists; give the name of a new folder"),
        ("data/inside", "is inside the data folder"),
        ("missing/backup", "does not exist; create it first"),
    ],
)
def test_a_destination_that_cannot_hold_a_backup_is_refused(
    tmp_path: Path, where: str, says: str
) -> None:
    data, _ = _empty_server_data(tmp_path)
    (tmp_path / "existing").mkdir()
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(BackupError, match=says):
        back_up(data, tmp_path / where)
    assert sorted(tmp_path.rglob("*")) == before


def test_a_destination_with_the_longest_name_a_folder_can_have_is_made(tmp_path: Path) -> None:
    data, _ = _empty_server_data(tmp_path)
    longest = tmp_path / ("b" * 252 + "é")  # 254 bytes: its hidden working name must fit too
    assert back_up(data, longest).path == longest
    assert (longest / "sealchat.db").is_file()


def test_a_damaged_database_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    load_or_create_key(data / "server_key")
    data.joinpath("sealchat.db").write_bytes(b"this is not a database" * 100)
    data.joinpath("sealchat.db").chmod(0o600)
    with pytest.raises(BackupError, match="cannot copy the database"):
        back_up(data, tmp_path / "backup")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_the_command_reports_the_backup_and_says_how_to_restore(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, key = _empty_server_data(tmp_path)
    backup = tmp_path / "backup"
    assert main(["backup", str(backup), "--data-dir", str(data)]) == 0
    out = capsys.readouterr().out
    assert f"backed up {data} to {backup}: 0 users, 0 messages, 0 files" in out
    assert fingerprint(public_bytes(key)) in out
    assert f"start it with --data-dir {backup}" in out

    assert main(["backup", str(backup), "--data-dir", str(data)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["backup", str(tmp_path / "b2"), "--data-dir", str(tmp_path / "nothing")]) == 1
    assert "no server data in" in capsys.readouterr().err


def test_a_backup_killed_earlier_is_named_by_the_next_for_removal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # SIGKILL (the OOM killer, a cron timeout) leaves the hidden work folder: a copy of the
    # key and every message that nothing else would ever mention.
    data, _ = _empty_server_data(tmp_path)
    killed = tmp_path / ".nightly.k1ll3d.partial"
    killed.mkdir()
    (killed / "server_key").write_bytes(b"k" * 32)
    (tmp_path / ".profile.partial").mkdir()  # not a backup's: no key in it
    assert main(["backup", str(tmp_path / "nightly"), "--data-dir", str(data)]) == 0
    assert capsys.readouterr().err == (
        f"sealchat: {killed} was left by a backup that never finished (killed midway); it "
        "holds a copy of the server's key and messages: unless a backup is running there now, "
        f"remove it with: rm -r {killed}\n"
    )
    assert killed.is_dir()  # never removed by itself: it may be a backup under way


def test_files_whose_bytes_are_lost_are_named_and_the_rest_is_backed_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, backup = tmp_path / "data", tmp_path / "backup"
    key = load_or_create_key(data / "server_key")
    kept, lost = tmp_path / "kept.txt", tmp_path / "lost.txt"
    kept.write_bytes(b"kept " * 1000)
    lost.write_bytes(b"lost " * 1000)
    with running_server("trio", data, key=key) as server, server.login("alice") as alice:
        alice.send_file(kept, room="general")
        gone = alice.send_file(lost, room="general")
    (data / "downloads" / gone.file_id).unlink()

    assert main(["backup", str(backup), "--data-dir", str(data)]) == 1
    captured = capsys.readouterr()
    assert "1 file" in captured.out
    assert "1 file could not be backed up" in captured.err
    assert f"'lost.txt' (5,000 bytes, id {gone.file_id})" in captured.err
    assert sorted(p.name for p in (backup / "downloads").iterdir()) == [
        ".partial",
        next(p.name for p in (data / "downloads").iterdir() if p.name != ".partial"),
    ]


def test_an_upload_completed_while_the_files_are_copied_is_kept_to_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The snapshot lists the upload in progress; by the time its part is copied the server
    # has completed it and moved it out of downloads/.partial.
    data, backup = tmp_path / "data", tmp_path / "backup"
    key = load_or_create_key(data / "server_key")
    big = tmp_path / "video.bin"
    big.write_bytes(os.urandom(3 * TRANSFER_BLOCK))
    snapshot = backup_module._snapshot
    with running_server("trio", data, key=key) as server, server.login("alice") as alice:
        alice.join("ops")
        uploader = server.login("alice")
        _cut_off_midway(uploader, big)
        uploader.close()
        deadline = time.monotonic() + WAIT
        uploading = server.hub._files._uploading  # until the server has seen the drop
        while (uploading or not _uploaded(data)) and time.monotonic() < deadline:
            time.sleep(0.05)
        received = _uploaded(data)

        def then_completed(source: Path, copy: Path) -> None:
            snapshot(source, copy)
            alice.send_file(big, room="ops")

        monkeypatch.setattr(backup_module, "_snapshot", then_completed)
        report = back_up(data, backup)

    assert (report.files, report.uploads_in_progress, report.damaged) == (0, 1, ())
    (kept,) = (backup / "downloads" / ".partial").iterdir()
    part = kept.read_bytes()
    assert len(part) >= received  # and more if more had come by the snapshot
    assert part == big.read_bytes()[: len(part)]


def test_the_key_backed_up_is_the_one_checked_and_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The key file is read once (checked: a regular private file of 32 bytes): what the
    # backup holds is the key whose fingerprint it prints, whatever is at the path after.
    data, key = _empty_server_data(tmp_path)
    backup = tmp_path / "backup"
    load = backup_module.load_or_create_key

    def then_swapped(path: Path) -> X25519PrivateKey:
        loaded = load(path)
        path.unlink()
        path.symlink_to(tmp_path / "elsewhere")
        (tmp_path / "elsewhere").write_bytes(bytes(32))
        return loaded

    monkeypatch.setattr(backup_module, "load_or_create_key", then_swapped)
    report = back_up(data, backup)
    assert report.public_key == public_bytes(key)
    assert public_bytes(load_or_create_key(backup / "server_key")) == public_bytes(key)


def test_a_backup_that_would_fill_the_servers_disk_is_refused_before_it_copies_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On the server's own disk, copying the files up to a full disk would leave the running
    # server no room to store messages until the backup failed.
    data, backup = tmp_path / "data", tmp_path / "backup"
    key = load_or_create_key(data / "server_key")
    shared = tmp_path / "report.pdf"
    shared.write_bytes(os.urandom(300_000))
    with running_server("trio", data, key=key) as server, server.login("alice") as alice:
        alice.send_file(shared, room="general")
    real = shutil.disk_usage
    keep = HubConfig().min_free_space

    def nearly_full(path: str | os.PathLike[str]) -> Any:
        usage = real(path)
        return usage._replace(free=keep + 200_000)

    monkeypatch.setattr(shutil, "disk_usage", nearly_full)
    says = r"files need 293\.0 KiB and .* has 256\.2 MiB free, and 256\.0 MiB must stay free"
    with pytest.raises(BackupError, match=f"not enough room: the {says} there for the server"):
        back_up(data, backup)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "report.pdf"]
    monkeypatch.setattr(shutil, "disk_usage", real)
    assert back_up(data, backup).files == 1


def _ctrl_c() -> None:
    raise KeyboardInterrupt


def _sigterm() -> None:
    os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.parametrize("interrupt", [_ctrl_c, _sigterm], ids=["ctrl-c", "sigterm"])
def test_an_interruption_midway_leaves_nothing_and_says_so(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    interrupt: Callable[[], None],
) -> None:
    # A SIGTERM too (a shutdown, a job runner's timeout): the hidden folder (a whole copy,
    # and the key) must not stay behind unseen, growing with each night's attempt.
    data, _ = _empty_server_data(tmp_path)
    snapshot = backup_module._snapshot

    def interrupted(source: Path, copy: Path) -> None:
        snapshot(source, copy)
        interrupt()

    monkeypatch.setattr(backup_module, "_snapshot", interrupted)

    def ignored(_signum: int, _frame: object) -> None:  # not this test process's end
        pass

    before = signal.signal(signal.SIGTERM, ignored)
    try:
        code = main(["backup", str(tmp_path / "backup"), "--data-dir", str(data)])
        assert signal.getsignal(signal.SIGTERM) is ignored  # given back
    finally:
        signal.signal(signal.SIGTERM, before)
    assert code == 130  # no traceback
    assert "interrupted; no backup was made" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_a_database_that_would_not_fit_is_refused_before_it_is_copied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not SQLite's "cannot copy the database data/sealchat.db: database or disk is full",
    # which blames the server's database (and its disk) for the backup's.
    data, _ = _empty_server_data(tmp_path)
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: real(path)._replace(free=1000))
    with pytest.raises(BackupError, match=r"not enough room: the key and the database need"):
        back_up(data, tmp_path / "backup")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_a_full_disk_is_said_before_the_key_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The key was written first, unchecked: on a full disk the command said only "cannot
    # use: No space left on device", naming no folder and no way out.
    data, _ = _empty_server_data(tmp_path)
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: real(path)._replace(free=0))

    def no_space(*_args: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(backup_module, "create_private_file", no_space)
    with pytest.raises(BackupError, match="make room, or back up to another disk"):
        back_up(data, tmp_path / "backup")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
