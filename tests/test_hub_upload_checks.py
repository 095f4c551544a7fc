"""Completed uploads the store must read back to check (no running SHA-256 of them: the server
restarted during the upload, or forgot it among too many): the hub asks its driver to hash the
file off its thread (VerifyUpload) and finishes in ``upload_verified``, whatever happened
meanwhile."""

from __future__ import annotations

import errno
import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from sealchat.core import (
    FileAccept,
    FileChunk,
    FileComplete,
    FileReject,
    FileRequest,
    JoinRoom,
    LeaveRoom,
    Message,
)
from sealchat.core.hub import (
    ACCOUNT_REMOVED,
    Digest,
    Disconnect,
    Effect,
    Hub,
    HubConfig,
    ReadBackFailed,
    VerifyUpload,
)
from sealchat.core.hub.files import BEING_CHECKED, NOT_CHECKED_NOW, READ_BACK_GONE
from sealchat.core.hub.names import user_key
from sealchat.transports import sqlite_uploads
from sealchat.transports.sqlite_store import SqliteStore
from sealchat.transports.upload_checks import hash_file
from tests.test_hub import (
    NOW,
    _offer,
    accepted,
    hub_with,
    logged_in,
    records,
    removed_by_an_administrator,
)

DATA = bytes(range(256)) * 40
"""An upload's bytes (10 KiB, sent in chunks of 4 KiB)."""


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    """A store on a database file, which another connection (an operator's) can change."""
    with SqliteStore(tmp_path) as store:
        for name in ("Alice", "bob", "carol"):
            store.add_user(name, user_key(name), "$argon2id$fake")
        yield store


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The files the store reads back to hash them."""
    seen: list[Path] = []

    def spy(path: Path, *, sync: bool = False) -> tuple[int, bytes]:
        seen.append(path)
        return hash_file(path, sync=sync)

    monkeypatch.setattr(sqlite_uploads, "hash_file", spy)
    return seen


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def sent(hub: Hub, session: int, transfer: int, data: bytes = DATA, **where: str) -> FileAccept:
    """Offer ``data`` from ``session`` as ``transfer`` and send all its chunks."""
    accept = accepted(hub, session, _offer(data, transfer, **where))
    for offset in range(accept.offset, len(data), 4096):
        chunk = FileChunk(transfer=transfer, offset=offset, data=data[offset : offset + 4096])
        assert hub.handle(session, chunk, NOW) == []
    return accept


def forget_running_hashes(store: SqliteStore) -> None:
    """What a restart (or too many uploads at once) does to the store's running hashes."""
    store._uploads._hashes.clear()


def completed(hub: Hub, session: int, transfer: int, data: bytes = DATA) -> VerifyUpload:
    """Send FileComplete; the hub must ask for the file to be read back, and answer nothing
    yet."""
    digest = hashlib.sha256(data).digest()
    (check,) = hub.handle(session, FileComplete(transfer=transfer, sha256=digest), NOW)
    assert isinstance(check, VerifyUpload)
    assert (check.session, check.transfer) == (session, transfer)
    return check


def to_be_checked(
    hub: Hub, store: SqliteStore, session: int, transfer: int, **where: str
) -> tuple[FileAccept, VerifyUpload]:
    """Upload DATA whole from ``session`` as ``transfer`` (to ``where``), lose the store's
    running hash of it, and complete it: the offer's answer, and the check the hub asks."""
    accept = sent(hub, session, transfer, **where)
    forget_running_hashes(store)
    return accept, completed(hub, session, transfer)


def hashed(check: VerifyUpload) -> Digest | ReadBackFailed:
    """What a driver reports: the digest the check's function reads, or why it read none."""
    try:
        return check.hasher()
    except OSError as exc:
        return ReadBackFailed.of(exc)


def announced(effects: list[Effect], session: int) -> Message:
    (message,) = [r for r in records(effects, session) if isinstance(r, Message)]
    assert message.file is not None
    return message


def messages_sharing(store: SqliteStore, file_id: str) -> list[int]:
    return [m.id for m in store.room_history("general", 0, 100) if m.file_id == file_id]


def partial_of(store: SqliteStore, file_id: str) -> Path:
    return store._uploads._partial_path(file_id)


def test_an_upload_without_its_running_hash_is_read_back_off_the_hub_then_shared(
    store: SqliteStore, reads: list[Path]
) -> None:
    hub = hub_with(store, "alice", "bob")
    quick = sent(hub, 1, 1, b"quick")  # its running hash is there: shared at once
    (message,) = records(hub.handle(1, FileComplete(transfer=1, sha256=_sha(b"quick")), NOW), 1)
    assert isinstance(message, Message)
    assert message.file is not None
    assert message.file.file_id == quick.file_id
    accept, check = to_be_checked(hub, store, 1, 2)
    assert reads == []  # nothing was read on the hub's thread
    assert check.file_id == accept.file_id
    file = store.get_file(accept.file_id)
    assert file is not None
    assert not file.complete
    assert records(hub.handle(2, FileRequest(transfer=1, file_id=accept.file_id), NOW), 2) == [
        FileReject(transfer=1, reason=f"there is no file {accept.file_id} that you can see")
    ]
    digest = check.hasher()  # the driver, on another thread
    assert reads == [partial_of(store, accept.file_id)]
    assert digest == (len(DATA), _sha(DATA))
    effects = hub.upload_verified(1, 2, digest, NOW)
    assert reads == [partial_of(store, accept.file_id)]  # read once, off the hub
    mine, bobs = announced(effects, 1), announced(effects, 2)
    assert mine == bobs
    assert mine.file is not None
    assert (mine.file.file_id, mine.file.sha256) == (accept.file_id, _sha(DATA))
    assert store.read_chunk(accept.file_id, 0, len(DATA)) == DATA
    assert messages_sharing(store, accept.file_id) == [mine.id]
    assert hub.upload_verified(1, 2, digest, NOW) == []  # once only
    assert messages_sharing(store, accept.file_id) == [mine.id]


def test_an_upload_resumed_after_a_restart_is_read_back_off_the_hub(
    tmp_path: Path, reads: list[Path]
) -> None:
    with SqliteStore(tmp_path) as store:
        store.add_user("Alice", "alice", "$argon2id$fake")
        hub = hub_with(store, "alice")
        accept = accepted(hub, 1, _offer(DATA, 1))
        hub.handle(1, FileChunk(transfer=1, offset=0, data=DATA[:5000]), NOW)
    with SqliteStore(tmp_path) as store:  # the server restarted
        hub = hub_with(store, "alice")
        resumed = sent(hub, 1, 2)
        assert (resumed.file_id, resumed.offset) == (accept.file_id, 5000)
        check = completed(hub, 1, 2)
        assert reads == []
        effects = hub.upload_verified(1, 2, hashed(check), NOW)
        assert announced(effects, 1).file is not None
        assert store.read_chunk(accept.file_id, 0, len(DATA)) == DATA


def test_an_upload_whose_running_hash_was_forgotten_among_many_is_read_back(
    store: SqliteStore, reads: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_uploads, "_MAX_HASHERS", 1)
    hub = hub_with(store, "alice")
    first = accepted(hub, 1, _offer(DATA, 1))
    hub.handle(1, FileChunk(transfer=1, offset=0, data=DATA), NOW)
    sent(hub, 1, 2, b"another")  # its running hash pushes out the first one's
    check = completed(hub, 1, 1)
    assert check.file_id == first.file_id
    assert reads == []
    assert announced(hub.upload_verified(1, 1, hashed(check), NOW), 1).file is not None


def test_an_upload_whose_session_closes_during_the_check_stays_to_be_completed_again(
    store: SqliteStore,
) -> None:
    hub = hub_with(store, "alice", "bob")
    accept, check = to_be_checked(hub, store, 1, 1)
    hub.close_session(1, NOW)  # the connection dropped while the driver read the file
    late = hashed(check)
    assert hub.upload_verified(1, 1, late, NOW) == []
    file = store.get_file(accept.file_id)
    assert file is not None
    assert (file.complete, file.received) == (False, len(DATA))
    assert partial_of(store, accept.file_id).read_bytes() == DATA
    assert messages_sharing(store, accept.file_id) == []
    # Logged in again, the same offer resumes it at its end; FileComplete checks it again.
    logged_in(hub, 3, "alice")
    resumed = accepted(hub, 3, _offer(DATA, 7))
    assert (resumed.file_id, resumed.offset) == (accept.file_id, len(DATA))
    again = completed(hub, 3, 7)
    assert hub.upload_verified(1, 1, late, NOW) == []  # the first check's late outcome
    effects = hub.upload_verified(3, 7, hashed(again), NOW)
    assert announced(effects, 2) == announced(effects, 3)
    assert len(messages_sharing(store, accept.file_id)) == 1


def test_records_for_a_transfer_being_checked_are_answered_after_its_outcome(
    store: SqliteStore,
) -> None:
    hub = hub_with(store, "alice", "alice", "bob")  # alice on two devices
    shared = sent(hub, 1, 9, b"shared before")
    hub.handle(1, FileComplete(transfer=9, sha256=_sha(b"shared before")), NOW)
    accept, check = to_be_checked(hub, store, 1, 1)
    digest = _sha(DATA)
    # The same FileComplete again, a late chunk, a cancel: answered after the outcome (as
    # if the check had been done at once), and the file is shared once.
    assert hub.handle(1, FileComplete(transfer=1, sha256=digest), NOW) == []
    assert hub.handle(1, FileChunk(transfer=1, offset=len(DATA), data=b"more"), NOW) == []
    assert hub.handle(1, FileReject(transfer=1, reason="upload abandoned"), NOW) == []
    # Its number is in use, and its file is being sent: no other transfer takes either.
    in_use = FileReject(transfer=1, reason="transfer 1 is already in use")
    assert records(hub.handle(1, _offer(b"other", 1), NOW), 1) == [in_use]
    asked = FileRequest(transfer=1, file_id=shared.file_id)
    assert records(hub.handle(1, asked, NOW), 1) == [in_use]
    (busy,) = records(hub.handle(2, _offer(DATA, 5), NOW), 2)
    assert busy == FileReject(transfer=5, reason=BEING_CHECKED)
    effects = hub.upload_verified(1, 1, hashed(check), NOW)
    answers = records(effects, 1)
    assert isinstance(answers[0], Message)
    no_upload = FileReject(transfer=1, reason="no upload 1 in progress")
    assert answers[1:] == [no_upload, no_upload]
    assert announced(effects, 3) == answers[0]
    assert len(messages_sharing(store, accept.file_id)) == 1
    # Its number is free again.
    assert isinstance(records(hub.handle(1, _offer(b"other", 1), NOW), 1)[0], FileAccept)


def test_an_upload_being_checked_is_not_taken_over_however_long_the_check(
    store: SqliteStore,
) -> None:
    # Its FileComplete came: the other connection waits for the outcome, then finds the
    # file shared (a takeover would have it resumed at its end and shared twice).
    hub = hub_with(store, "alice", "alice")  # alice on two devices
    grace = HubConfig().upload_takeover_after
    accept, check = to_be_checked(hub, store, 1, 1)
    (busy,) = records(hub.handle(2, _offer(DATA, 5), NOW + 100 * grace), 2)
    assert busy == FileReject(transfer=5, reason=BEING_CHECKED)  # no retry: it is shared soon
    effects = hub.upload_verified(1, 1, hashed(check), NOW + 100 * grace)
    assert announced(effects, 1).file == announced(effects, 2).file
    assert len(messages_sharing(store, accept.file_id)) == 1


def test_a_check_takes_a_transfer_slot_until_its_outcome(store: SqliteStore) -> None:
    hub = hub_with(store, "alice", config=HubConfig(max_transfers=1))
    _, check = to_be_checked(hub, store, 1, 1)
    (full,) = records(hub.handle(1, _offer(b"other", 2), NOW), 1)
    assert full == FileReject(transfer=2, reason="at most 1 transfers at a time")
    hub.upload_verified(1, 1, hashed(check), NOW)
    assert isinstance(records(hub.handle(1, _offer(b"other", 2), NOW), 1)[0], FileAccept)


def test_an_upload_being_checked_is_not_displaced_by_a_new_one(store: SqliteStore) -> None:
    hub = hub_with(store, "alice", config=HubConfig(max_unfinished_uploads=1))
    accept, check = to_be_checked(hub, store, 1, 1)
    accepted(hub, 1, _offer(b"new", 2))  # one unfinished upload at most: none idle to drop
    assert partial_of(store, accept.file_id).exists()
    assert announced(hub.upload_verified(1, 1, hashed(check), NOW), 1).file is not None
    assert store.read_chunk(accept.file_id, 0, len(DATA)) == DATA


def test_a_file_whose_bytes_changed_on_disk_is_refused_and_deleted(store: SqliteStore) -> None:
    hub = hub_with(store, "alice", "bob")
    accept, check = to_be_checked(hub, store, 1, 1)
    partial = partial_of(store, accept.file_id)
    partial.write_bytes(b"X" + DATA[1:])  # the disk gave back other bytes
    effects = hub.upload_verified(1, 1, hashed(check), NOW)
    assert records(effects, 1) == [
        FileReject(
            transfer=1, reason="the stored file's SHA-256 differs from the offer; send it again"
        )
    ]
    assert records(effects, 2) == []
    assert store.get_file(accept.file_id) is None
    assert not partial.exists()
    assert messages_sharing(store, accept.file_id) == []


def test_a_file_gone_from_the_disk_during_the_check_is_refused_without_a_trace(
    store: SqliteStore,
) -> None:
    hub = hub_with(store, "alice")
    accept, check = to_be_checked(hub, store, 1, 1)
    partial_of(store, accept.file_id).unlink()
    with pytest.raises(FileNotFoundError):
        check.hasher()
    assert hashed(check) is ReadBackFailed.GONE
    (refused,) = records(hub.upload_verified(1, 1, ReadBackFailed.GONE, NOW), 1)
    assert refused == FileReject(
        transfer=1, reason="the server could not read the stored file back; send it again"
    )
    assert store.get_file(accept.file_id) is None
    assert store.unfinished_uploads("alice") == []


@pytest.mark.parametrize(
    "code", [errno.EIO, errno.EMFILE, errno.ENFILE, errno.EACCES], ids=errno.errorcode.get
)
def test_a_file_unreadable_for_now_is_kept_and_completed_later(
    store: SqliteStore, code: int
) -> None:
    hub = hub_with(store, "alice", "bob")
    accept, _ = to_be_checked(hub, store, 1, 1)
    failure = ReadBackFailed.of(OSError(code, "cannot read"))
    assert failure is ReadBackFailed.NOT_NOW
    effects = hub.upload_verified(1, 1, failure, NOW)
    (refused,) = records(effects, 1)
    assert refused == FileReject(
        transfer=1,
        reason=(
            "the server could not read the file back to check it just now; send it again "
            "later: what it received is kept, and nothing is sent twice"
        ),
    )
    assert records(effects, 2) == []
    file = store.get_file(accept.file_id)
    assert file is not None
    assert (file.complete, file.received) == (False, len(DATA))
    assert partial_of(store, accept.file_id).read_bytes() == DATA
    resumed = accepted(hub, 1, _offer(DATA, 2))  # sent again: resumed at its end
    assert (resumed.file_id, resumed.offset) == (accept.file_id, len(DATA))
    again = completed(hub, 1, 2)
    effects = hub.upload_verified(1, 2, hashed(again), NOW)
    assert announced(effects, 1).file == announced(effects, 2).file
    assert messages_sharing(store, accept.file_id) != []


def test_a_file_whose_uploader_left_the_room_during_the_check_is_kept_not_shared(
    store: SqliteStore,
) -> None:
    hub = hub_with(store, "alice", "bob")
    for session in (1, 2):
        hub.handle(session, JoinRoom(room="ops"), NOW)
    accept, check = to_be_checked(hub, store, 1, 1, room="ops")
    hub.handle(1, LeaveRoom(room="ops"), NOW)
    effects = hub.upload_verified(1, 1, hashed(check), NOW)
    (refused,) = records(effects, 1)
    assert isinstance(refused, FileReject)
    assert refused.reason.startswith("you left ops; join it again")
    assert records(effects, 2) == []
    hub.handle(1, JoinRoom(room="ops"), NOW)
    resumed = accepted(hub, 1, _offer(DATA, 2, room="ops"))
    assert (resumed.file_id, resumed.offset) == (accept.file_id, len(DATA))


def test_a_file_to_a_user_removed_during_the_check_is_refused_and_deleted(
    store: SqliteStore, tmp_path: Path
) -> None:
    hub = hub_with(store, "alice", "alice")
    accept, check = to_be_checked(hub, store, 1, 1, to="bob")
    digest = hashed(check)
    removed_by_an_administrator(tmp_path, "bob")
    effects = hub.upload_verified(1, 1, digest, NOW)
    (refused,) = records(effects, 1)
    assert isinstance(refused, FileReject)
    assert "there is no user bob" in refused.reason
    assert records(effects, 2) == []
    assert store.get_file(accept.file_id) is None
    assert not partial_of(store, accept.file_id).exists()


def test_an_uploader_removed_during_the_check_leaves_no_row_no_file_no_message(
    store: SqliteStore, tmp_path: Path
) -> None:
    hub = hub_with(store, "alice", "bob")
    accept, check = to_be_checked(hub, store, 1, 1)
    removed_by_an_administrator(tmp_path, "alice")  # her unfinished uploads go with her
    digest = hashed(check)  # the file is gone: the driver says so
    assert digest is ReadBackFailed.GONE
    effects = hub.upload_verified(1, 1, digest, NOW)
    assert [e for e in effects if isinstance(e, Disconnect)] == [Disconnect(1, ACCOUNT_REMOVED)]
    assert not any(isinstance(r, Message | FileReject) for r in records(effects, 2))
    assert store.get_file(accept.file_id) is None
    assert not partial_of(store, accept.file_id).exists()
    assert messages_sharing(store, accept.file_id) == []


def test_a_file_already_read_back_is_checked_against_the_digest_given(
    store: SqliteStore, reads: list[Path]
) -> None:
    hub = hub_with(store, "alice")
    accept = sent(hub, 1, 1)
    forget_running_hashes(store)
    hasher = store.upload_hasher(accept.file_id)
    assert hasher is not None
    assert not store.complete_file(accept.file_id, (len(DATA), _sha(b"other")))
    assert store.get_file(accept.file_id) is None  # deleted, as a file that differs is
    assert reads == []
    again = sent(hub, 1, 2)
    assert store.upload_hasher(again.file_id) is None  # its running hash covers it
    forget_running_hashes(store)
    digest = (len(DATA), _sha(DATA))
    partial_of(store, again.file_id).write_bytes(DATA[:-1])  # not the bytes that were hashed
    assert not store.complete_file(again.file_id, digest)
    assert reads == []


class FailingSync:
    """Make the store's own check of the next completed upload (the fsync it does when its
    running SHA-256 covers the file, no read-back asked for) fail with ``error``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, error: OSError) -> None:
        self.failures = [error]
        real = sqlite_uploads.sync_file

        def sync_file(path: Path, size: int) -> bool:
            if self.failures:
                raise self.failures.pop()
            return real(path, size)

        monkeypatch.setattr(sqlite_uploads, "sync_file", sync_file)


@pytest.mark.parametrize(
    "code", [errno.EIO, errno.EMFILE, errno.ENFILE, errno.EACCES], ids=errno.errorcode.get
)
def test_a_file_the_store_cannot_check_at_once_for_now_is_kept_as_off_the_hub(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    # Its running SHA-256 covers it: no VerifyUpload, the store checks it in complete_file.
    hub = hub_with(store, "alice", "bob")
    accept = sent(hub, 1, 1)
    assert store.upload_hasher(accept.file_id) is None
    failing = FailingSync(monkeypatch, OSError(code, "cannot sync"))
    effects = hub.handle(1, FileComplete(transfer=1, sha256=_sha(DATA)), NOW)  # no failure
    assert failing.failures == []
    assert records(effects, 1) == [FileReject(transfer=1, reason=NOT_CHECKED_NOW)]
    assert records(effects, 2) == []
    assert not any(isinstance(e, Disconnect) for e in effects)
    file = store.get_file(accept.file_id)
    assert file is not None
    assert (file.complete, file.received) == (False, len(DATA))
    assert partial_of(store, accept.file_id).read_bytes() == DATA
    assert messages_sharing(store, accept.file_id) == []
    resumed = accepted(hub, 1, _offer(DATA, 2))  # sent again: resumed at its end
    assert (resumed.file_id, resumed.offset) == (accept.file_id, len(DATA))
    again = completed(hub, 1, 2)  # read back this time, off the hub
    effects = hub.upload_verified(1, 2, hashed(again), NOW)
    assert announced(effects, 1).file == announced(effects, 2).file
    assert store.read_chunk(accept.file_id, 0, len(DATA)) == DATA


def test_a_file_the_store_finds_gone_when_it_checks_it_at_once_is_lost_as_off_the_hub(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = hub_with(store, "alice")
    accept = sent(hub, 1, 1)
    FailingSync(monkeypatch, FileNotFoundError(errno.ENOENT, "No such file"))
    (refused,) = records(hub.handle(1, FileComplete(transfer=1, sha256=_sha(DATA)), NOW), 1)
    assert refused == FileReject(transfer=1, reason=READ_BACK_GONE)
    assert store.get_file(accept.file_id) is None
    assert not partial_of(store, accept.file_id).exists()
    assert accepted(hub, 1, _offer(DATA, 2)).offset == 0  # sent again from the start


def test_a_file_read_back_off_the_hub_then_unreadable_for_now_is_kept(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The store still looks at the file (its size) when given the digest read off the hub.
    hub = hub_with(store, "alice")
    accept, check = to_be_checked(hub, store, 1, 1)
    digest = hashed(check)

    def denied(path: Path, size: int) -> bool:
        raise PermissionError(errno.EACCES, "Permission denied")

    with monkeypatch.context() as patched:
        patched.setattr(sqlite_uploads, "_holds", denied)
        (refused,) = records(hub.upload_verified(1, 1, digest, NOW), 1)
    assert refused == FileReject(transfer=1, reason=NOT_CHECKED_NOW)
    resumed = accepted(hub, 1, _offer(DATA, 2))
    assert (resumed.file_id, resumed.offset) == (accept.file_id, len(DATA))
    effects = hub.upload_verified(1, 2, hashed(completed(hub, 1, 2)), NOW)
    assert announced(effects, 1).file is not None


def test_the_store_says_why_it_could_not_check_a_file_and_keeps_it_unless_gone(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = hub_with(store, "alice")
    kept = sent(hub, 1, 1)
    FailingSync(monkeypatch, OSError(errno.EIO, "Input/output error"))
    assert store.complete_file(kept.file_id) is ReadBackFailed.NOT_NOW
    file = store.get_file(kept.file_id)
    assert file is not None
    assert (file.complete, file.received) == (False, len(DATA))
    assert store.upload_hasher(kept.file_id) is not None  # checked again by reading it
    lost = sent(hub, 1, 2, b"lost")
    FailingSync(monkeypatch, FileNotFoundError(errno.ENOENT, "No such file"))
    assert store.complete_file(lost.file_id) is ReadBackFailed.GONE
    assert store.get_file(lost.file_id) is None
