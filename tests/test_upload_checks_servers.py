"""Both servers read back the uploads the store must hash again (VerifyUpload) off the hub's
thread: after a restart mid-upload, the resumed file is shared and downloads intact; others
are served while it is read; a server stopped meanwhile keeps the upload to complete later."""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest

from sealchat.core import (
    ConnectionClosed,
    FileAccept,
    FileComplete,
    FileList,
    FileReject,
    ListFiles,
    ListRooms,
    Message,
    RoomList,
)
from sealchat.core.hub import Digest
from sealchat.core.hub.files import NOT_CHECKED_NOW
from sealchat.core.limits import MAX_CHUNK
from sealchat.transports import sqlite_uploads
from sealchat.transports.blocking_client import BlockingClient
from sealchat.transports.blocking_server import ThreadedServer
from sealchat.transports.sqlite_store import SqliteStore
from sealchat.transports.upload_checks import hash_file
from tests.servers import KINDS, Running, running_server
from tests.test_conformance import (
    TIMEOUT,
    _announces,
    download,
    finish,
    last,
    offer,
    payload,
    say,
    send_chunks,
    settle,
    sha,
    until,
    wait_until,
)

pytestmark = pytest.mark.parametrize("kind", KINDS)


class ReadOn:
    """Make every completed upload of ``server`` be read back with ``read`` (given the
    partial file's path), and note the threads the reads ran on."""

    def __init__(
        self, server: Running, monkeypatch: pytest.MonkeyPatch, read: Callable[[Path], Digest]
    ) -> None:
        self.threads: list[str] = []
        store = server.hub.store
        assert isinstance(store, SqliteStore)

        def reading(path: Path) -> Digest:
            self.threads.append(threading.current_thread().name)
            return read(path)

        def upload_hasher(file_id: str) -> Callable[[], Digest]:
            return partial(reading, store._uploads._partial_path(file_id))

        monkeypatch.setattr(store, "upload_hasher", upload_hasher)


class HeldChecks(ReadOn):
    """Make every completed upload of ``server`` be read back (as if the store had lost its
    running hash), the read waiting until ``release`` is set; ``started`` is set as one
    begins."""

    def __init__(self, server: Running, monkeypatch: pytest.MonkeyPatch) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        super().__init__(server, monkeypatch, self._read)

    def _read(self, path: Path) -> Digest:
        self.started.set()
        assert self.release.wait(TIMEOUT)
        return hash_file(path, sync=True)

    def completed(self, client: BlockingClient, data: bytes) -> FileAccept:
        """``client`` uploads ``data`` whole as transfer 1 and completes it: the offer's
        answer, once the check's read has begun (and is held)."""
        accept = offer(client, data)
        assert isinstance(accept, FileAccept)
        send_chunks(client, 1, data)
        client.send(FileComplete(transfer=1, sha256=sha(data)))
        assert self.started.wait(TIMEOUT)
        return accept


def resumes_and_shares(alice: BlockingClient, data: bytes, file_id: str) -> None:
    """An offer of ``data`` again resumes upload ``file_id`` at its end; completed, it is
    shared, and downloads whole."""
    resumed = offer(alice, data, transfer=2)
    assert isinstance(resumed, FileAccept)
    assert (resumed.file_id, resumed.offset) == (file_id, len(data))
    announced = finish(alice, 2, sha(data))
    assert isinstance(announced, Message), announced
    assert download(alice, file_id)[1] == data


def test_an_upload_resumed_after_a_restart_is_shared_and_downloads_intact(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = payload(5 * MAX_CHUNK + 123, seed=11)
    data_dir = tmp_path / "data"
    with running_server(kind, data_dir) as server, server.login("alice") as alice:
        accept = offer(alice, data, transfer=1, name="big.bin")
        assert isinstance(accept, FileAccept)
        send_chunks(alice, 1, data[: 2 * MAX_CHUNK])
        settle(alice)
    with running_server(kind, data_dir) as server:  # restarted: no running hash of it
        store = server.hub.store
        assert isinstance(store, SqliteStore)
        hashers: list[bool] = []
        real = store.upload_hasher

        def spy(file_id: str) -> Callable[[], Digest] | None:
            hasher = real(file_id)
            hashers.append(hasher is not None)
            return hasher

        monkeypatch.setattr(store, "upload_hasher", spy)
        with server.login("bob") as bob, server.login("alice") as alice:
            resumed = offer(alice, data, transfer=2, name="big.bin")
            assert isinstance(resumed, FileAccept)
            assert (resumed.file_id, resumed.offset) == (accept.file_id, 2 * MAX_CHUNK)
            send_chunks(alice, 2, data, start=2 * MAX_CHUNK)
            announced = finish(alice, 2, sha(data))
            assert isinstance(announced, Message), announced
            assert hashers == [True]  # read back, off the hub
            assert announced.file is not None
            assert last(bob, _announces).file == announced.file
            offered, got, end = download(bob, accept.file_id)
            assert got == data
            assert offered.sha256 == end.sha256 == sha(data)


def test_others_are_served_while_an_upload_is_read_back(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = payload(3 * MAX_CHUNK, seed=12)
    with running_server(kind, tmp_path / "data") as server:
        checks = HeldChecks(server, monkeypatch)
        with server.login("alice") as alice, server.login("bob") as bob:
            carol = server.login("carol")
            with carol:
                accept = checks.completed(alice, data)
                say(bob, carol, "the hub is not held up")  # while the file is read
                say(carol, bob, "nor is its store")
                checks.release.set()
                announced = last(alice, _announces)
                assert announced.file is not None
                assert announced.file.file_id == accept.file_id
                assert last(carol, _announces).file == announced.file
                assert download(carol, accept.file_id)[1] == data
    assert len(checks.threads) == 1


def test_what_the_uploader_sends_during_the_check_of_its_upload_is_answered_when(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Both servers read on threads of their own: the uploader's session goes on, and its
    # later requests are answered before the check ends, the file when it is read.
    data = payload(2 * MAX_CHUNK, seed=18)
    with running_server(kind, tmp_path / "data") as server, server.login("alice") as alice:
        checks = HeldChecks(server, monkeypatch)
        checks.completed(alice, data)
        alice.send(ListRooms())
        answers = until(alice, lambda e: isinstance(e, RoomList))  # during the read
        assert not any(_announces(e) for e in answers)
        checks.release.set()
        assert last(alice, _announces).file is not None
        (reader,) = checks.threads
        assert not reader.startswith("client-")  # not alice's own thread


def test_a_server_stopped_during_a_check_keeps_the_upload_to_complete_later(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = payload(3 * MAX_CHUNK + 7, seed=13)
    data_dir = tmp_path / "data"
    with running_server(kind, data_dir) as server, server.login("alice") as alice:
        checks = HeldChecks(server, monkeypatch)
        accept = checks.completed(alice, data)
        stopping = threading.Thread(target=server.stop)
        stopping.start()
        closed = last(alice, lambda e: isinstance(e, ConnectionClosed | Message))
        assert isinstance(closed, ConnectionClosed)  # told goodbye, not of the file
        checks.release.set()  # the read ends after the server began to stop: not reported
        stopping.join(TIMEOUT)
        assert not stopping.is_alive()
    with SqliteStore(data_dir) as store:  # nothing half done: a partial with all its bytes
        file = store.get_file(accept.file_id)
        assert file is not None
        assert (file.complete, file.received) == (False, len(data))
        assert store._uploads._partial_path(accept.file_id).read_bytes() == data
        assert not any(m.file_id for m in store.room_history("general", 0, 100))
    with running_server(kind, data_dir) as server, server.login("alice") as alice:
        resumes_and_shares(alice, data, accept.file_id)


def test_an_upload_whose_connection_drops_during_its_check_is_shared_once(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The session ends during the read, which is then not reported: the upload stays, and
    # the uploader's next offer of the file completes it. The file is shared once.
    data = payload(2 * MAX_CHUNK + 5, seed=14)
    with running_server(kind, tmp_path / "data") as server, server.login("bob") as bob:
        checks = HeldChecks(server, monkeypatch)
        sessions = server.hub._sessions
        with server.login("alice") as alice:
            accept = checks.completed(alice, data)
        wait_until(lambda: len(sessions) == 1, "alice's session has ended")  # during the read
        checks.release.set()
        with server.login("alice") as alice:
            alice.send(ListFiles(room="general"))
            listed = last(alice, lambda e: isinstance(e, FileList))
            assert accept.file_id not in [f.file_id for f in listed.files]
            resumes_and_shares(alice, data, accept.file_id)
        shared = [e for e in settle(bob) if _announces(e)]
        assert [e.file.file_id for e in shared if isinstance(e, Message) and e.file] == [
            accept.file_id
        ]


class FailingChecks(ReadOn):
    """Make the next completed upload of ``server`` be read back, and that read fail with
    ``error`` (later ones read the file)."""

    def __init__(self, server: Running, monkeypatch: pytest.MonkeyPatch, error: OSError) -> None:
        self._failures = [error]
        super().__init__(server, monkeypatch, self._read)

    def _read(self, path: Path) -> Digest:
        if self._failures:
            raise self._failures.pop()
        return hash_file(path, sync=True)


def test_an_upload_unreadable_for_now_is_kept_and_shared_when_sent_again(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="sealchat.server")
    data = payload(2 * MAX_CHUNK + 9, seed=15)
    with running_server(kind, tmp_path / "data") as server, server.login("alice") as alice:
        FailingChecks(server, monkeypatch, OSError(errno.EIO, "Input/output error"))
        accept = offer(alice, data)
        assert isinstance(accept, FileAccept)
        send_chunks(alice, 1, data)
        assert finish(alice, 1, sha(data)) == FileReject(transfer=1, reason=NOT_CHECKED_NOW)
        (warning,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert warning.levelno == logging.WARNING
        assert accept.file_id in warning.getMessage()
        assert "it is kept" in warning.getMessage()
        resumes_and_shares(alice, data, accept.file_id)  # its bytes are all there still


def test_an_upload_gone_from_the_disk_during_its_check_is_lost(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="sealchat.server")
    data = payload(MAX_CHUNK + 3, seed=16)
    with running_server(kind, tmp_path / "data") as server, server.login("alice") as alice:
        FailingChecks(server, monkeypatch, FileNotFoundError(errno.ENOENT, "No such file"))
        accept = offer(alice, data)
        assert isinstance(accept, FileAccept)
        send_chunks(alice, 1, data)
        refused = finish(alice, 1, sha(data))
        assert isinstance(refused, FileReject)
        assert refused.reason == "the server could not read the stored file back; send it again"
        (warning,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert accept.file_id in warning.getMessage()
        assert "is lost" in warning.getMessage()
        again = offer(alice, data, transfer=2)  # from the start: nothing was kept
        assert isinstance(again, FileAccept)
        assert (again.file_id != accept.file_id, again.offset) == (True, 0)


def test_an_upload_the_store_cannot_check_at_once_for_now_is_kept_and_the_session_goes_on(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # No read-back asked for (the store kept its SHA-256): the store's own check, its fsync,
    # fails as a read-back off the hub may, and is answered the same way.
    caplog.set_level(logging.WARNING, logger="sealchat.server")
    data = payload(2 * MAX_CHUNK + 9, seed=17)
    failures = [OSError(errno.EIO, "Input/output error")]
    real = sqlite_uploads.sync_file

    def sync_file(path: Path, size: int) -> bool:
        if failures:
            raise failures.pop()
        return real(path, size)

    with running_server(kind, tmp_path / "data") as server, server.login("alice") as alice:
        monkeypatch.setattr(sqlite_uploads, "sync_file", sync_file)
        accept = offer(alice, data)
        assert isinstance(accept, FileAccept)
        send_chunks(alice, 1, data)
        assert finish(alice, 1, sha(data)) == FileReject(transfer=1, reason=NOT_CHECKED_NOW)
        assert failures == []
        (warning,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert warning.levelno == logging.WARNING
        assert accept.file_id in warning.getMessage()
        assert "it is kept" in warning.getMessage()
        resumes_and_shares(alice, data, accept.file_id)  # the same connection: its bytes are there


def test_a_bug_in_a_check_costs_the_uploader_its_connection_never_the_server(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(path: Path) -> Digest:
        raise ValueError("a bug in the read back")

    data = payload(2 * MAX_CHUNK, seed=19)
    with running_server(kind, tmp_path / "data") as server, server.login("bob") as bob:
        ReadOn(server, monkeypatch, broken)
        with server.login("alice") as alice, server.login("carol") as carol:
            accept = offer(alice, data)
            assert isinstance(accept, FileAccept)
            send_chunks(alice, 1, data)
            alice.send(FileComplete(transfer=1, sha256=sha(data)))
            closed = last(alice, lambda e: isinstance(e, ConnectionClosed))
            assert isinstance(closed, ConnectionClosed)  # told, not left waiting
            say(bob, carol, "still here")
    assert "a bug in the read back" in caplog.text  # in the server's log, with its traceback


def test_with_no_thread_to_spare_the_threaded_server_checks_on_the_uploaders_own(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if kind != "threads":
        pytest.skip("the trio server starts no thread of its own for a check")
    start_worker = ThreadedServer._start_worker

    def no_check_threads(
        self: ThreadedServer, target: Callable[..., object], name: str, *args: object
    ) -> None:
        if name.startswith("upload-check-"):
            raise RuntimeError("can't start new thread")
        start_worker(self, target, name, *args)

    monkeypatch.setattr(ThreadedServer, "_start_worker", no_check_threads)
    data = payload(2 * MAX_CHUNK + 3, seed=20)
    with running_server(kind, tmp_path / "data") as server, server.login("alice") as alice:
        reads = ReadOn(server, monkeypatch, partial(hash_file, sync=True))
        accept = offer(alice, data)
        assert isinstance(accept, FileAccept)
        send_chunks(alice, 1, data)
        announced = finish(alice, 1, sha(data))
        assert isinstance(announced, Message)  # checked all the same, and shared
        assert announced.file is not None
        assert download(alice, announced.file.file_id)[1] == data
        (reader,) = reads.threads
        assert reader.startswith("client-")
