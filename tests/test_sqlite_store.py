"""SqliteStore: the behaviour the hub and its users depend on."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from sealchat.core.hub.store import StoredFile, StoredMessage
from sealchat.transports import (
    sqlite_accounts,
    sqlite_files,
    sqlite_messages,
    sqlite_schema,
    sqlite_store,
    sqlite_uploads,
)
from sealchat.transports.folder_lock import LOCK_FILE, FolderInUse, FolderLock
from sealchat.transports.sqlite_store import SchemaVersionError, SqliteStore
from tests.sql_trace import sql_statements

PHC = "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "data", database=":memory:")
    yield s
    s.close()


def add_users(store: SqliteStore, *names: str) -> None:
    for name in names:
        assert store.add_user(name, name.lower(), PHC)


def room_msg(store: SqliteStore, sender: str, room: str, text: str, cid: str = "") -> StoredMessage:
    return store.append_message(
        ts=1.0,
        sender_key=sender.lower(),
        sender=sender,
        room=room,
        to_key="",
        to="",
        text=text,
        client_id=cid,
    )


def dm(store: SqliteStore, sender: str, to: str, text: str, cid: str = "") -> StoredMessage:
    return store.append_message(
        ts=2.0,
        sender_key=sender.lower(),
        sender=sender,
        room="",
        to_key=to.lower(),
        to=to,
        text=text,
        client_id=cid,
    )


def texts(messages: list[StoredMessage]) -> list[str]:
    return [m.text for m in messages]


def all_files(root: Path) -> set[Path]:
    """The files under ``root``, but for the serving store's lock (``folder_lock``)."""
    return {p for p in root.rglob("*") if p.is_file() and p.name != LOCK_FILE}


# --- users ------------------------------------------------------------------------------------


def test_users_are_unique_by_case_folded_key(store: SqliteStore) -> None:
    assert store.add_user("Esha", "esha", PHC)
    assert not store.add_user("esha", "esha", "other")
    user = store.get_user("esha")
    assert user is not None
    assert (user.name, user.key, user.password_hash) == ("Esha", "esha", PHC)
    assert store.get_user("nobody") is None
    assert store.list_users() == ["Esha"]


def test_set_password_and_remove_user(store: SqliteStore) -> None:
    add_users(store, "Esha", "Bob")
    assert store.set_password("esha", "new")
    assert store.get_user("esha").password_hash == "new"  # type: ignore[union-attr]
    assert not store.set_password("nobody", "x")
    store.ensure_room("lobby")
    store.add_member("lobby", "esha")
    store.set_cursor("esha", 5)
    assert store.remove_user("esha")
    assert not store.remove_user("esha")
    assert store.get_user("esha") is None
    assert store.members("lobby") == []
    assert store.get_cursor("esha") == 0
    assert store.list_users() == ["Bob"]


def test_removing_a_user_drops_the_rooms_it_leaves_empty_and_unused(store: SqliteStore) -> None:
    add_users(store, "Esha", "Bob")
    rooms = {"quiet": ["esha"], "shared": ["esha", "bob"], "posted": ["esha"], "lobby": ["esha"]}
    for room, members in rooms.items():
        store.ensure_room(room)
        for member in members:
            store.add_member(room, member)
    room_msg(store, "Esha", "posted", "hi")
    assert store.remove_user("esha", keep_room="lobby")
    assert store.rooms() == [("lobby", 0), ("posted", 0), ("shared", 1)]


def test_a_removed_users_name_is_retired_and_their_conversations_stay(
    store: SqliteStore,
) -> None:
    add_users(store, "Carol", "Bob")
    dm(store, "Bob", "Carol", "the vault code is 4711")
    dm(store, "Carol", "Bob", "thanks")
    f = offer(store, b"payslip", room="", to_key="carol", owner="bob")
    store.write_chunk(f.file_id, 0, b"payslip")
    assert store.complete_file(f.file_id)
    announce(store, f)
    assert not store.is_retired("carol")
    assert store.remove_user("carol")
    assert store.is_retired("carol")
    assert not store.add_user("CAROL", "carol", PHC)
    assert store.get_user("carol") is None
    assert store.list_users() == ["Bob"]
    # Bob's side is untouched.
    assert texts(store.direct_history("bob", "carol", 0, 10)) == [
        "the vault code is 4711",
        "thanks",
        "",  # the file's announcement
    ]
    assert [g.file_id for _, g in store.files_between("bob", "carol", 0, 10)] == [f.file_id]
    # Only an account that existed retires its name.
    assert not store.remove_user("nobody")
    assert not store.is_retired("nobody")
    assert store.add_user("nobody", "nobody", PHC)


def test_user_repr_hides_the_hash(store: SqliteStore) -> None:
    add_users(store, "Esha")
    assert PHC not in repr(store.get_user("esha"))
    assert PHC not in repr(store)


# --- rooms ------------------------------------------------------------------------------------


def test_rooms_and_memberships(store: SqliteStore) -> None:
    add_users(store, "Esha", "Bob")
    assert not store.room_exists("lobby")
    store.ensure_room("lobby")
    store.ensure_room("lobby")
    store.ensure_room("dev")
    assert store.room_exists("lobby")
    assert store.add_member("lobby", "esha")
    assert not store.add_member("lobby", "esha")
    assert store.add_member("lobby", "bob")
    assert store.add_member("dev", "bob")
    assert store.rooms() == [("dev", 1), ("lobby", 2)]
    assert store.rooms_of("bob") == ["dev", "lobby"]
    assert store.members("lobby") == ["Bob", "Esha"]
    assert store.remove_member("lobby", "bob")
    assert not store.remove_member("lobby", "bob")
    assert store.members("lobby") == ["Esha"]


def test_only_a_room_with_no_members_messages_or_files_is_dropped(store: SqliteStore) -> None:
    add_users(store, "Esha")
    for room in ("empty", "member", "talk", "shared"):
        store.ensure_room(room)
    store.add_member("member", "esha")
    room_msg(store, "esha", "talk", "hi")
    offer(store, b"x", room="shared")
    assert [store.drop_room_if_unused(r) for r in ("empty", "member", "talk", "shared")] == [
        True,
        False,
        False,
        False,
    ]
    assert [name for name, _ in store.rooms()] == ["member", "shared", "talk"]
    assert not store.drop_room_if_unused("empty")  # gone already


def test_membership_needs_an_existing_room_and_user(store: SqliteStore) -> None:
    add_users(store, "Esha")
    with pytest.raises(ValueError, match="no such room or user"):
        store.add_member("nowhere", "esha")
    store.ensure_room("lobby")
    with pytest.raises(ValueError, match="no such room or user"):
        store.add_member("lobby", "ghost")


# --- messages ---------------------------------------------------------------------------------


def test_messages_get_increasing_ids(store: SqliteStore) -> None:
    assert store.last_message_id() == 0
    ids = [room_msg(store, "Esha", "lobby", f"m{i}").id for i in range(5)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 5
    assert store.last_message_id() == ids[-1]


def test_message_needs_exactly_one_target(store: SqliteStore) -> None:
    for room, to_key in (("", ""), ("lobby", "bob")):
        with pytest.raises(ValueError, match="exactly one"):
            store.append_message(
                ts=0,
                sender_key="a",
                sender="a",
                room=room,
                to_key=to_key,
                to="",
                text="x",
                client_id="",
            )


def test_duplicates_by_sender_and_client_id(store: SqliteStore) -> None:
    first = room_msg(store, "Esha", "lobby", "hello", cid="c1")
    assert store.find_by_client_id("esha", "c1") == first
    assert store.find_by_client_id("bob", "c1") is None
    assert store.find_by_client_id("esha", "c2") is None
    with pytest.raises(ValueError, match="duplicate"):
        room_msg(store, "Esha", "lobby", "again", cid="c1")
    room_msg(store, "Bob", "lobby", "same id, other sender", cid="c1")
    # An empty client id is never a duplicate.
    room_msg(store, "Esha", "lobby", "a")
    room_msg(store, "Esha", "lobby", "b")
    assert store.find_by_client_id("esha", "") is None


def test_message_fields_round_trip(store: SqliteStore) -> None:
    sent = store.append_message(
        ts=12.5,
        sender_key="esha",
        sender="Esha",
        room="",
        to_key="bob",
        to="Bob",
        text="hi ☃ \x00 there",
        client_id="c",
        file_id="f" * 32,
    )
    assert store.direct_history("esha", "bob", 0, 10) == [sent]
    assert sent.to == "Bob"
    assert "hi" not in repr(sent)


def test_room_history_pages_oldest_first(store: SqliteStore) -> None:
    ids = [room_msg(store, "Esha", "lobby", f"m{i}").id for i in range(10)]
    room_msg(store, "Esha", "other", "elsewhere")
    dm(store, "Esha", "Bob", "private")
    assert texts(store.room_history("lobby", 0, 3)) == ["m7", "m8", "m9"]
    assert texts(store.room_history("lobby", ids[7], 3)) == ["m4", "m5", "m6"]
    assert texts(store.room_history("lobby", ids[2], 3)) == ["m0", "m1"]
    assert store.room_history("lobby", ids[0], 3) == []
    assert len(store.room_history("lobby", 0, 100)) == 10
    assert store.room_history("lobby", 0, 0) == []
    assert store.room_history("nowhere", 0, 5) == []


def test_direct_history_both_ways_paged(store: SqliteStore) -> None:
    sent = []
    for i in range(6):
        sent.append(
            dm(store, "Esha", "Bob", f"e{i}") if i % 2 == 0 else dm(store, "Bob", "Esha", f"b{i}")
        )
        dm(store, "Esha", "Carol", f"c{i}")
        room_msg(store, "Bob", "lobby", f"r{i}")
    assert texts(store.direct_history("esha", "bob", 0, 10)) == ["e0", "b1", "e2", "b3", "e4", "b5"]
    assert texts(store.direct_history("bob", "esha", 0, 2)) == ["e4", "b5"]
    assert texts(store.direct_history("esha", "bob", sent[4].id, 3)) == ["b1", "e2", "b3"]
    assert texts(store.direct_history("esha", "carol", 0, 1)) == ["c5"]
    assert store.direct_history("bob", "carol", 0, 10) == []


def test_direct_history_with_oneself_has_no_duplicates(store: SqliteStore) -> None:
    dm(store, "Esha", "Esha", "note to self")
    assert texts(store.direct_history("esha", "esha", 0, 10)) == ["note to self"]
    assert texts(store.missed("esha", 0, 10)) == ["note to self"]


def test_direct_peers_are_named_as_they_spell_it_the_latest_conversation_first(
    store: SqliteStore,
) -> None:
    add_users(store, "Esha", "Bob", "Carol", "Dave")
    dm(store, "Esha", "bob", "to bob")
    dm(store, "Carol", "esha", "from carol")
    dm(store, "Bob", "Carol", "not esha's")
    room_msg(store, "Dave", "lobby", "in a room")
    assert store.direct_peers("esha", 10) == ["Carol", "Bob"]
    dm(store, "Bob", "Esha", "bob again")  # received, the latest: bob first now
    assert store.direct_peers("esha", 10) == ["Bob", "Carol"]
    assert store.direct_peers("esha", 1) == ["Bob"]
    assert store.direct_peers("esha", 0) == []
    assert store.direct_peers("dave", 10) == []
    assert store.remove_user("bob")  # its messages stay, but no conversation with it can go on
    assert store.direct_peers("esha", 10) == ["Carol"]
    assert store.direct_peers("carol", 10) == ["Esha"]


def test_a_user_who_wrote_to_itself_is_its_own_direct_peer_once(store: SqliteStore) -> None:
    add_users(store, "Esha")
    dm(store, "Esha", "Esha", "note to self")
    assert store.direct_peers("esha", 10) == ["Esha"]  # as direct_history("esha", "esha") has it


def test_direct_peers_are_found_by_the_indexes_of_the_users_direct_messages(
    store: SqliteStore,
) -> None:
    plan = [
        row[3]
        for row in store._conn.execute(
            "EXPLAIN QUERY PLAN " + sqlite_messages._DIRECT_PEERS, ("esha", 10)
        )
    ]
    reads = [step for step in plan if "messages" in step.split()]
    # Seeks in covering indexes only: never the table, never a pass over the user's messages.
    assert {step.split(" USING ")[0] for step in reads} == {"SEARCH messages"}, plan
    assert all("COVERING INDEX" in step for step in reads), plan
    assert any("messages_direct_pair (sender_key=? AND to_key>?)" in step for step in reads), plan
    assert any("messages_direct_from_to (to_key=? AND sender_key>?)" in step for step in reads)


def test_missed_is_exactly_what_a_member_may_see(store: SqliteStore) -> None:
    add_users(store, "Esha", "Bob", "Carol")
    for room in ("lobby", "dev", "secret"):
        store.ensure_room(room)
    store.add_member("lobby", "bob")
    store.add_member("secret", "carol")
    room_msg(store, "Bob", "lobby", "before esha joined")
    store.add_member("lobby", "esha")
    store.add_member("dev", "esha")
    room_msg(store, "Bob", "lobby", "lobby 1")
    room_msg(store, "Carol", "secret", "not for esha")
    dm(store, "Bob", "Esha", "bob to esha")
    dm(store, "Esha", "Carol", "esha to carol")
    dm(store, "Bob", "Carol", "bob to carol")
    room_msg(store, "Esha", "dev", "dev 1")
    room_msg(store, "Bob", "lobby", "lobby 2")
    expected = ["lobby 1", "bob to esha", "esha to carol", "dev 1", "lobby 2"]
    got = store.missed("esha", 0, 100)
    assert texts(got) == expected
    assert [m.id for m in got] == sorted(m.id for m in got)
    # after / limit
    assert texts(store.missed("esha", 0, 2)) == expected[:2]
    assert texts(store.missed("esha", got[1].id, 2)) == expected[2:4]
    assert texts(store.missed("esha", got[-1].id, 10)) == []
    assert store.missed("esha", 0, 0) == []
    # Bob sees the whole lobby; Carol her room and DMs only.
    assert texts(store.missed("bob", 0, 100)) == [
        "before esha joined",
        "lobby 1",
        "bob to esha",
        "bob to carol",
        "lobby 2",
    ]
    assert texts(store.missed("carol", 0, 100)) == ["not for esha", "esha to carol", "bob to carol"]


def test_missed_after_leaving_and_rejoining(store: SqliteStore) -> None:
    add_users(store, "Esha", "Bob")
    store.ensure_room("lobby")
    store.add_member("lobby", "esha")
    room_msg(store, "Bob", "lobby", "seen")
    store.remove_member("lobby", "esha")
    room_msg(store, "Bob", "lobby", "while away")
    store.add_member("lobby", "esha")
    room_msg(store, "Bob", "lobby", "back")
    assert texts(store.missed("esha", 0, 10)) == ["back"]


def test_missed_limit_across_many_rooms(store: SqliteStore) -> None:
    add_users(store, "Esha")
    for r in range(5):
        store.ensure_room(f"r{r}")
        store.add_member(f"r{r}", "esha")
    for i in range(20):
        room_msg(store, "Bob", f"r{i % 5}", f"m{i}")
    got = store.missed("esha", 0, 7)
    assert texts(got) == [f"m{i}" for i in range(7)]
    assert texts(store.missed("esha", got[-1].id, 100)) == [f"m{i}" for i in range(7, 20)]


def test_missed_reads_about_one_page_however_many_rooms_the_user_is_in(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A replay page at login (and at each Delivered) is built from this: a page of each of a
    # user's 100 rooms would be 20,000 long messages in memory (hundreds of megabytes) on the
    # hub's thread, for a page of 200.
    add_users(store, "Esha")
    rooms = [f"r{r}" for r in range(20)]
    for room in rooms:
        store.ensure_room(room)
        store.add_member(room, "esha")
    for i in range(200):
        room_msg(store, "Bob", rooms[i % len(rooms)], f"m{i}")
    built: list[Any] = []
    real = sqlite_messages._message
    monkeypatch.setattr(sqlite_messages, "_message", lambda row: built.append(row) or real(row))
    got = store.missed("esha", 0, 10)
    assert texts(got) == [f"m{i}" for i in range(10)]
    assert len(built) <= 10 + len(rooms) + 2  # the page, and at most one more per source


def test_cursors(store: SqliteStore) -> None:
    add_users(store, "Esha")
    assert store.get_cursor("esha") == 0
    store.set_cursor("esha", 7)
    assert store.get_cursor("esha") == 7
    store.set_cursor("esha", 9)
    assert store.get_cursor("esha") == 9
    with pytest.raises(ValueError, match="no such user"):
        store.set_cursor("ghost", 1)


def test_each_device_has_its_own_cursor_and_a_new_one_starts_from_the_users(
    store: SqliteStore,
) -> None:
    add_users(store, "Esha", "Bob")
    store.set_cursor("esha", 5, "laptop")
    store.set_cursor("esha", 9, "phone")
    assert store.get_cursor("esha", "laptop") == 5  # the phone's acknowledgements are its own
    assert store.get_cursor("esha", "phone") == 9
    assert store.get_cursor("esha", "tablet") == 9  # new: from the highest of any device
    assert store.get_cursor("esha") == 9
    store.set_cursor("esha", 3, "phone")  # late or stale: never down
    assert (store.get_cursor("esha", "phone"), store.get_cursor("esha")) == (9, 9)
    assert store.get_cursor("bob", "laptop") == 0  # a device name is the user's own
    assert store.remove_user("esha")
    assert store._conn.execute("SELECT count(*) FROM device_cursors").fetchone() == (0,)


def test_a_device_not_seen_for_a_month_is_forgotten_beyond_the_limit(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each client install is a device, and a script may make a new key each run: the cursors
    # of one user must not pile up, nor push out those of the devices in use.
    monkeypatch.setattr(sqlite_messages, "DEVICE_CURSORS", 2)
    add_users(store, "Esha")
    month_ago = time.time() - sqlite_messages.DEVICE_KEPT_FOR - 60
    store.set_cursor("esha", 1, "old")
    store._conn.execute("UPDATE device_cursors SET used = ?", (month_ago,))
    store.set_cursor("esha", 2, "laptop")
    store.set_cursor("esha", 3, "phone")  # the old one goes
    assert store.get_cursor("esha", "old") == 3  # forgotten: as a new device
    for n in range(5):  # a script's new keys: the laptop and the phone stay
        store.set_cursor("esha", 4 + n, f"script run {n}")
    assert (store.get_cursor("esha", "laptop"), store.get_cursor("esha", "phone")) == (2, 3)
    assert store.get_cursor("esha", "script run 0") == 8  # it had no place: the user's


def test_read_markers_only_rise_and_list_the_users_conversations(store: SqliteStore) -> None:
    add_users(store, "Esha", "Bob", "Carol")
    store.ensure_room("lobby")
    store.add_member("lobby", "esha")
    assert store.raise_read_marker("esha", "lobby", "", 7)
    assert not store.raise_read_marker("esha", "lobby", "", 5)  # never lowered
    assert not store.raise_read_marker("esha", "lobby", "", 7)
    assert store.raise_read_marker("esha", "", "bob", 3)
    assert store.raise_read_marker("esha", "", "carol", 9)
    assert store.raise_read_marker("bob", "", "esha", 4)  # bob's own, not esha's
    assert store.read_markers("esha", 500) == [("lobby", "", 7), ("", "Carol", 9), ("", "Bob", 3)]
    assert store.read_markers("esha", 1) == [("lobby", "", 7), ("", "Carol", 9)]
    with pytest.raises(ValueError, match="no such user"):
        store.raise_read_marker("ghost", "lobby", "", 1)


def test_a_read_marker_goes_with_the_membership_and_the_accounts(store: SqliteStore) -> None:
    add_users(store, "Esha", "Bob", "Carol")
    store.ensure_room("lobby")
    store.add_member("lobby", "esha")
    store.raise_read_marker("esha", "lobby", "", 7)
    store.raise_read_marker("esha", "", "bob", 3)
    store.raise_read_marker("carol", "", "esha", 2)
    store.remove_member("lobby", "esha")
    store.add_member("lobby", "esha")
    assert store.read_markers("esha", 500) == [("", "Bob", 3)]  # the room's went at the leave
    assert store.remove_user("bob")
    assert store.read_markers("esha", 500) == []  # a removed peer's conversation is not listed
    store.raise_read_marker("carol", "", "carol", 5)
    assert store.remove_user("esha")
    # Esha's markers went with the account, and so did Carol's of their conversation: the
    # name is retired for good, so nothing could ever list or delete it (dead rows).
    assert store._conn.execute("SELECT user_key, peer_key FROM read_markers").fetchall() == [
        ("carol", "carol")
    ]


# --- durability -------------------------------------------------------------------------------


def test_data_survives_close_and_reopen(tmp_path: Path) -> None:
    with SqliteStore(tmp_path) as s:
        add_users(s, "Esha")
        s.ensure_room("lobby")
        s.add_member("lobby", "esha")
        m = room_msg(s, "Esha", "lobby", "persisted", cid="c1")
        s.set_cursor("esha", m.id)
        f = offer(s, b"abc", name="a.txt")
        s.write_chunk(f.file_id, 0, b"abc")
        assert s.complete_file(f.file_id)
    with SqliteStore(tmp_path) as s:
        assert s.get_user("esha") is not None
        assert s.members("lobby") == ["Esha"]
        assert s.room_history("lobby", 0, 10) == [m]
        assert s.find_by_client_id("esha", "c1") == m
        assert s.get_cursor("esha") == m.id
        assert s.read_chunk(f.file_id, 0, 10) == b"abc"
        assert room_msg(s, "Esha", "lobby", "next").id > m.id


def test_wal_mode_and_file_modes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with SqliteStore(data) as s:
        room_msg(s, "Esha", "lobby", "x")
        mode = s._conn.execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"
        for path in data.rglob("*"):
            expected = 0o700 if path.is_dir() else 0o600
            assert stat.S_IMODE(path.stat().st_mode) == expected, path
    assert stat.S_IMODE(data.stat().st_mode) == 0o700


@pytest.mark.skipif(os.name != "posix", reason="POSIX owners and modes")
def test_a_data_folder_or_database_that_others_could_change_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another local user who could swap the folder or the database (left world-writable by
    # a umask of 000, or put there by them) would read every message stored: refused, saying
    # how to fix it, before anything is read or written there.
    data = tmp_path / "data"
    SqliteStore(data).close()
    db = data / sqlite_store.DB_FILE
    data.chmod(0o777)
    with pytest.raises(sqlite_store.UnsafeDataDir, match=f"mode 0777.* chmod 700 {data}$"):
        SqliteStore(data)
    data.chmod(0o700)
    db.chmod(0o666)
    with pytest.raises(sqlite_store.UnsafeDataDir, match=f"mode 0666.* chmod 600 {db}$"):
        SqliteStore(data)
    db.chmod(0o600)
    SqliteStore(data).close()  # ours alone again: it opens
    someone_else = os.geteuid() + 1
    with monkeypatch.context() as patched:  # as if another user made the folder
        patched.setattr(os, "geteuid", lambda: someone_else)
        with pytest.raises(sqlite_store.UnsafeDataDir, match="belongs to another user"):
            SqliteStore(data)
    db.unlink()  # a database someone else created in a folder of ours
    fd = os.open(db, os.O_CREAT | os.O_WRONLY, 0o600)
    os.close(fd)
    real_fstat = os.fstat

    def foreign(fd: int) -> os.stat_result:
        status = real_fstat(fd)
        fields = list(status)
        fields[stat.ST_UID] = someone_else
        return os.stat_result(fields)

    with monkeypatch.context() as patched:
        patched.setattr(sqlite_store.os, "fstat", foreign)
        with pytest.raises(sqlite_store.UnsafeDataDir, match=f"the database {db} belongs to"):
            SqliteStore(data)


@pytest.mark.skipif(os.name != "posix", reason="POSIX owners and modes")
def test_the_stored_files_and_their_folders_are_made_private_or_refused_on_opening(
    tmp_path: Path,
) -> None:
    # As restored by hand from a backup, or made with a plain mkdir under a umask of 022: a
    # file shared in a direct message must not stay readable by every local user.
    data = tmp_path / "data"
    SqliteStore(data).close()
    downloads = data / sqlite_store.DOWNLOADS_DIR
    partials = downloads / sqlite_store.PARTIAL_DIR
    stored = downloads / ("a" * 32)
    stored.write_bytes(b"private")
    stored.chmod(0o644)
    for folder in (data, downloads, partials):
        folder.chmod(0o755)
    SqliteStore(data).close()
    for path in (data, downloads, partials):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    # One that others could have changed is refused (as one of another user's: the folder's
    # own check, above).
    fix = f"chmod -R go-rwx {data}"
    downloads.chmod(0o777)
    with pytest.raises(sqlite_store.UnsafeDataDir, match=f"folder {downloads} has mode 0777"):
        SqliteStore(data)
    stored.chmod(0o666)
    downloads.chmod(0o700)  # in a folder others cannot enter, a file is none of theirs
    SqliteStore(data).close()
    assert stat.S_IMODE(stored.stat().st_mode) == 0o666  # not even looked at
    for folder in (data, downloads):
        folder.chmod(0o755)  # but in one they can
    with pytest.raises(sqlite_store.UnsafeDataDir, match=f"file {stored} has mode 0666.*{fix}$"):
        SqliteStore(data)
    stored.chmod(0o600)
    SqliteStore(data).close()  # all ours and private again: it opens
    # A folder of stored files linked from another disk is followed, as the data folder is.
    elsewhere = tmp_path / "bigger-disk"
    downloads.rename(elsewhere)
    downloads.symlink_to(elsewhere)
    elsewhere.chmod(0o755)
    SqliteStore(data).close()
    assert stat.S_IMODE(elsewhere.stat().st_mode) == 0o700
    # Beside a running server (the account commands), nothing there is changed.
    data.chmod(0o755)
    SqliteStore(data, beside_server=True).close()
    assert stat.S_IMODE(data.stat().st_mode) == 0o755


def test_a_database_others_can_read_is_made_private_on_opening(tmp_path: Path) -> None:
    # Copied in, or made by another tool, under a umask of 022: 0644, in a folder others
    # may enter (0755 is not refused: only a folder they could change is). It holds the
    # password hashes and every message, and so do its -wal and -shm files while in use.
    data = tmp_path / "data"
    SqliteStore(data).close()
    db = data / sqlite_store.DB_FILE
    data.chmod(0o755)
    db.chmod(0o644)
    other = sqlite3.connect(db)  # another tool, writing: SQLite gives its files the db's mode
    try:
        other.execute("PRAGMA wal_autocheckpoint=0")  # what it wrote stays in the -wal file
        other.execute("CREATE TABLE notes (x)")
        other.commit()
        logs = [data / f"{sqlite_store.DB_FILE}-{suffix}" for suffix in ("wal", "shm")]
        assert [stat.S_IMODE(log.stat().st_mode) for log in logs] == [0o644, 0o644]
        store = SqliteStore(data)
        try:
            for path in (db, *logs):
                assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        finally:
            store.close()
    finally:
        other.close()


_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from sealchat.transports.sqlite_store import SqliteStore

    store = SqliteStore(Path(sys.argv[1]))
    for i in range(int(sys.argv[2])):
        m = store.append_message(ts=1.0, sender_key="esha", sender="Esha", room="lobby",
                                 to_key="", to="", text=f"m{i}", client_id=f"c{i}")
        print(m.id, flush=True)
    if sys.argv[3] == "self":
        os.kill(os.getpid(), signal.SIGKILL)
    import time
    time.sleep(60)
    """
)


def test_message_survives_sigkill_right_after_append(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, str(tmp_path), "1", "self"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
    (message_id,) = map(int, result.stdout.split())
    with SqliteStore(tmp_path) as s:
        assert texts(s.room_history("lobby", 0, 10)) == ["m0"]
        assert s.find_by_client_id("esha", "c0").id == message_id  # type: ignore[union-attr]


def test_every_acknowledged_message_survives_sigkill_from_outside(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(tmp_path), "200", "wait"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    acknowledged = [int(child.stdout.readline()) for _ in range(50)]
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    child.stdout.close()
    with SqliteStore(tmp_path) as s:
        stored = {m.id for m in s.room_history("lobby", 0, 1000)}
    assert set(acknowledged) <= stored


def old_database(data_dir: Path, version: int, *statements: str) -> None:
    """A database of schema ``version`` in ``data_dir``, with ``statements`` run on it."""
    conn = sqlite3.connect(data_dir / sqlite_store.DB_FILE)
    conn.executescript("".join(sqlite_store.MIGRATIONS[:version]))
    conn.execute(f"PRAGMA user_version = {version}")
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    conn.close()


def test_a_v1_database_migrates_keeping_its_data_and_retiring_removed_names(
    tmp_path: Path,
) -> None:
    conn = sqlite3.connect(tmp_path / sqlite_store.DB_FILE)
    conn.executescript("".join(sqlite_store.MIGRATIONS[:1]))
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO users VALUES ('esha', 'Esha', 'h', 0), ('bob', 'Bob', 'h', 0)")
    conn.execute("INSERT INTO rooms VALUES ('lobby', 0)")
    conn.execute("INSERT INTO memberships VALUES ('lobby', 'esha', 0)")
    # Left by accounts removed before version 2: carol and dave (direct), erin (a room).
    conn.execute(
        "INSERT INTO messages (ts, sender_key, sender, room, to_key, to_name, text, client_id, "
        "file_id) VALUES (1, 'bob', 'Bob', '', 'carol', 'Carol', 'to carol', 'c1', ''), "
        "(2, 'esha', 'Esha', 'lobby', '', '', 'hello', 'c2', ''), "
        "(3, 'erin', 'Erin', 'lobby', '', '', 'bye', 'c3', '')"
    )
    conn.execute(
        "INSERT INTO files (file_id, owner_key, name, size, sha256, room, to_key, complete, ts) "
        "VALUES (?, 'dave', 'a.txt', 0, ?, '', 'bob', 1, 0)",
        ("f" * 32, hashlib.sha256(b"").digest()),
    )
    conn.commit()
    conn.close()
    with SqliteStore(tmp_path) as s:
        assert s._conn.execute("PRAGMA user_version").fetchone()[0] == len(sqlite_store.MIGRATIONS)
        assert s.list_users() == ["Bob", "Esha"]
        assert s.members("lobby") == ["Esha"]
        assert texts(s.room_history("lobby", 0, 10)) == ["hello", "bye"]
        assert texts(s.direct_history("bob", "carol", 0, 10)) == ["to carol"]
        assert s.get_file("f" * 32) is not None
        assert [s.is_retired(k) for k in ("carol", "dave", "erin", "esha", "bob")] == [
            True,
            True,
            True,
            False,
            False,
        ]
        assert not s.add_user("Carol", "carol", PHC)


def test_a_v2_database_migrates_counting_password_changes_from_zero(tmp_path: Path) -> None:
    users = "INSERT INTO users VALUES ('esha', 'Esha', 'h', 0), ('bob', 'Bob', 'h', 0)"
    old_database(tmp_path, 2, users)
    with SqliteStore(tmp_path) as s:
        assert s._conn.execute("PRAGMA user_version").fetchone()[0] == len(sqlite_store.MIGRATIONS)
        esha = s.get_user("esha")
        assert esha is not None
        assert (esha.name, esha.password_hash, esha.password_generation) == ("Esha", "h", 0)
        assert s.set_password("esha", PHC)
        assert s.password_generations(["esha", "bob"]) == {"esha": 1, "bob": 0}


def test_a_v5_database_migrates_to_keep_read_markers(tmp_path: Path) -> None:
    users = "INSERT INTO users VALUES ('esha', 'Esha', 'h', 0, 0), ('bob', 'Bob', 'h', 0, 0)"
    old_database(tmp_path, 5, users)
    with SqliteStore(tmp_path) as s:
        assert s._conn.execute("PRAGMA user_version").fetchone()[0] == len(sqlite_store.MIGRATIONS)
        assert s.read_markers("esha", 500) == []
        assert s.raise_read_marker("esha", "", "bob", 3)
    with SqliteStore(tmp_path) as s:
        assert s.read_markers("esha", 500) == [("", "Bob", 3)]


def test_a_v7_database_migrates_to_keep_a_cursor_per_device(tmp_path: Path) -> None:
    old_database(
        tmp_path,
        7,
        "INSERT INTO users VALUES ('esha', 'Esha', 'h', 0, 0)",
        "INSERT INTO cursors VALUES ('esha', 12)",
    )
    with SqliteStore(tmp_path) as s:
        assert s._conn.execute("PRAGMA user_version").fetchone()[0] == len(sqlite_store.MIGRATIONS)
        assert s.get_cursor("esha", "laptop") == 12  # every device starts where the user was
        s.set_cursor("esha", 15, "laptop")
    with SqliteStore(tmp_path) as s:
        assert (s.get_cursor("esha", "laptop"), s.get_cursor("esha", "phone")) == (15, 15)


class _OpenedMeanwhile:
    """The store's connection, before whose ``nth`` transaction another process opens (and
    so migrates) the database: the interleaving two processes starting at once can have."""

    def __init__(self, conn: sqlite3.Connection, data_dir: Path, nth: int) -> None:
        self._conn, self._data_dir, self._nth = conn, data_dir, nth

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        self._before(sql)
        return self._conn.execute(sql, *args)

    def executescript(self, script: str) -> sqlite3.Cursor:
        self._before(script)
        return self._conn.executescript(script)

    def _before(self, sql: str) -> None:
        if sql.startswith("BEGIN"):
            self._nth -= 1
            if self._nth == 0:  # the other process migrates as a store does
                database = str(self._data_dir / sqlite_store.DB_FILE)
                other = sqlite3.connect(database, isolation_level=None)
                try:
                    sqlite_schema.configure(other, database)
                    sqlite_schema.migrate(other, database)
                finally:
                    other.close()

    def __getattr__(self, name: str) -> object:
        return getattr(self._conn, name)


@pytest.mark.parametrize(("version", "nth"), [(2, 1), (1, 1), (1, 2)])
def test_a_database_migrated_by_another_process_meanwhile_opens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: int, nth: int
) -> None:
    """Each step rereads the version under the write lock: none is applied twice."""
    old_database(tmp_path, version, "INSERT INTO users VALUES ('bob', 'Bob', 'h', 0)")
    real_connect = sqlite3.connect

    def connect(database: str, **options: Any) -> Any:
        monkeypatch.setattr(sqlite3, "connect", real_connect)  # the other process's: as is
        return _OpenedMeanwhile(real_connect(database, **options), tmp_path, nth)

    monkeypatch.setattr(sqlite3, "connect", connect)
    with SqliteStore(tmp_path) as store:
        assert store._conn.execute("PRAGMA user_version").fetchone()[0] == len(
            sqlite_store.MIGRATIONS
        )
        bob = store.get_user("bob")
        assert bob is not None
        assert bob.password_generation == 0


_NOTE_STEP = "ALTER TABLE users ADD COLUMN note TEXT NOT NULL DEFAULT 'migrated';"
"""A migration step that no release has: a database without it is one step behind."""


def _one_step_behind(tmp_path: Path, patch: pytest.MonkeyPatch, step: str = _NOTE_STEP) -> None:
    """A data folder with a user, whose database lacks the migration ``step`` that ``patch``
    adds to this sealchat's."""
    with SqliteStore(tmp_path) as s:
        add_users(s, "Esha")
    patch.setattr(sqlite_schema, "MIGRATIONS", (*sqlite_schema.MIGRATIONS, step))


def test_migrations_are_applied_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _one_step_behind(tmp_path, monkeypatch)
    with SqliteStore(tmp_path) as s:
        assert s._conn.execute("PRAGMA user_version").fetchone()[0] == len(sqlite_schema.MIGRATIONS)
        assert s._conn.execute("SELECT note FROM users").fetchone()[0] == "migrated"
        assert s.get_user("esha") is not None


def test_a_command_beside_a_running_older_server_does_not_upgrade_its_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Between "pip install --upgrade" and the restart, the old server still runs: a `sealchat
    # user ...` of the new version must not change the schema under it.
    _one_step_behind(tmp_path, monkeypatch)
    running = FolderLock(tmp_path)  # the older server, still serving the folder
    try:
        with pytest.raises(FolderInUse, match="restart it with this version first"):
            SqliteStore(tmp_path, beside_server=True)
    finally:
        running.release()
    with SqliteStore(tmp_path, beside_server=True) as s:  # none running: it upgrades
        assert s._conn.execute("PRAGMA user_version").fetchone()[0] == len(sqlite_schema.MIGRATIONS)


def test_a_failed_migration_step_leaves_the_previous_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = "ALTER TABLE users ADD COLUMN note TEXT; INSERT INTO no_such_table VALUES (1);"
    with monkeypatch.context() as newer:
        _one_step_behind(tmp_path, newer, broken)
        with pytest.raises(sqlite3.OperationalError, match="no such table"):
            SqliteStore(tmp_path)
    with SqliteStore(tmp_path) as s:
        assert s._conn.execute("PRAGMA user_version").fetchone()[0] == len(sqlite_store.MIGRATIONS)
        assert "note" not in [row[1] for row in s._conn.execute("PRAGMA table_info(users)")]
        assert s.get_user("esha") is not None


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    with SqliteStore(tmp_path):
        pass
    conn = sqlite3.connect(tmp_path / sqlite_store.DB_FILE)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(SchemaVersionError, match=r"schema version 99.*upgrade sealchat"):
        SqliteStore(tmp_path)


# --- files ------------------------------------------------------------------------------------


def offer(
    store: SqliteStore,
    data: bytes,
    *,
    name: str = "photo.jpg",
    room: str = "lobby",
    to_key: str = "",
    owner: str = "esha",
) -> StoredFile:
    return store.create_file(
        owner_key=owner,
        name=name,
        size=len(data),
        sha256=hashlib.sha256(data).digest(),
        room=room,
        to_key=to_key,
        ts=3.0,
    )


def announce(store: SqliteStore, f: StoredFile) -> int:
    """Announce the complete file ``f`` as the hub does; its position in file lists (the
    announcing message's id)."""
    return store.append_message(
        ts=4.0,
        sender_key=f.owner_key,
        sender=f.owner_key,
        room=f.room,
        to_key=f.to_key,
        to=f.to_key,
        text="",
        client_id="",
        file_id=f.file_id,
    ).id


def share(store: SqliteStore, data: bytes = b"x", **where: str) -> tuple[int, str]:
    """Upload ``data`` whole, complete and announce it; its position and id."""
    f = offer(store, data, **where)
    store.write_chunk(f.file_id, 0, data)
    assert store.complete_file(f.file_id)
    return announce(store, f), f.file_id


def test_upload_in_order_then_complete(store: SqliteStore, tmp_path: Path) -> None:
    data = os.urandom(150_000)
    f = offer(store, data)
    assert len(f.file_id) == 32
    assert int(f.file_id, 16) >= 0
    assert (f.received, f.complete) == (0, False)
    partial = tmp_path / "data" / "downloads" / ".partial" / f.file_id
    assert partial.is_file()
    assert stat.S_IMODE(partial.stat().st_mode) == 0o600
    offset = 0
    for start in range(0, len(data), 60_000):
        chunk = data[start : start + 60_000]
        offset = store.write_chunk(f.file_id, offset, chunk)
        assert store.get_file(f.file_id).received == offset  # type: ignore[union-attr]
    assert offset == len(data)
    assert store.complete_file(f.file_id)
    final = tmp_path / "data" / "downloads" / f.file_id
    assert final.read_bytes() == data
    assert stat.S_IMODE(final.stat().st_mode) == 0o600
    assert not partial.exists()
    done = store.get_file(f.file_id)
    assert done is not None
    assert done.complete
    assert store.complete_file(f.file_id)  # idempotent
    with pytest.raises(ValueError, match="already complete"):
        store.write_chunk(f.file_id, len(data), b"x")


def test_wrong_offset_is_rejected(store: SqliteStore) -> None:
    f = offer(store, b"abcdef")
    store.write_chunk(f.file_id, 0, b"abc")
    for bad in (0, 2, 4, 6):
        with pytest.raises(ValueError, match="does not match the 3 bytes received"):
            store.write_chunk(f.file_id, bad, b"def")
    assert store.write_chunk(f.file_id, 3, b"def") == 6
    assert store.complete_file(f.file_id)


def test_oversize_is_rejected(store: SqliteStore) -> None:
    f = offer(store, b"abc")
    with pytest.raises(ValueError, match="past the offered size"):
        store.write_chunk(f.file_id, 0, b"abcd")
    store.write_chunk(f.file_id, 0, b"ab")
    with pytest.raises(ValueError, match="past the offered size"):
        store.write_chunk(f.file_id, 2, b"cd")
    assert store.get_file(f.file_id).received == 2  # type: ignore[union-attr]


def test_unknown_file_is_rejected(store: SqliteStore) -> None:
    with pytest.raises(ValueError, match="no such file"):
        store.write_chunk("0" * 32, 0, b"x")
    with pytest.raises(ValueError, match="no such file"):
        store.read_chunk("../../etc/passwd", 0, 1)
    assert not store.complete_file("0" * 32)
    store.delete_file("../../etc/passwd")  # no-op, touches nothing


@pytest.mark.parametrize("written", [b"abcdeX", b"abc"])
def test_wrong_hash_or_short_file_deletes_everything(
    store: SqliteStore, tmp_path: Path, written: bytes
) -> None:
    f = offer(store, b"abcdef")
    store.write_chunk(f.file_id, 0, written)
    assert not store.complete_file(f.file_id)
    assert store.get_file(f.file_id) is None
    assert all_files(tmp_path / "data") == set()
    assert store.usage("esha") == 0


@pytest.mark.parametrize(
    "name",
    ["../../etc/passwd", "/etc/passwd", "a\x00b", "x" * 4000, "résumé 📄 файл.pdf", "..", ""],
)
def test_hostile_names_are_only_text(store: SqliteStore, tmp_path: Path, name: str) -> None:
    data = b"payload"
    f = offer(store, data, name=name)
    store.write_chunk(f.file_id, 0, data)
    assert store.complete_file(f.file_id)
    announce(store, f)
    back = store.get_file(f.file_id)
    assert back is not None
    assert back.name == name
    assert store.files_for_room("lobby", 0, 10)[0][1].name == name
    downloads = tmp_path / "data" / "downloads"
    assert all_files(tmp_path) == {downloads / f.file_id}
    assert all_files(downloads) == {downloads / f.file_id}


def test_resume_finds_the_partial(store: SqliteStore) -> None:
    data = b"0123456789"
    f = offer(store, data, room="", to_key="bob")
    store.write_chunk(f.file_id, 0, data[:4])
    found = store.find_partial_upload("esha", hashlib.sha256(data).digest(), 10, "", "bob")
    assert found is not None
    assert (found.file_id, found.received) == (f.file_id, 4)
    digest = hashlib.sha256(data).digest()
    assert store.find_partial_upload("bob", digest, 10, "", "bob") is None
    assert store.find_partial_upload("esha", digest, 11, "", "bob") is None
    assert store.find_partial_upload("esha", digest, 10, "lobby", "") is None
    assert store.find_partial_upload("esha", bytes(32), 10, "", "bob") is None
    store.write_chunk(found.file_id, found.received, data[4:])
    assert store.complete_file(f.file_id)
    assert store.find_partial_upload("esha", digest, 10, "", "bob") is None


def test_usage_counts_complete_and_reserved_partial_sizes(store: SqliteStore) -> None:
    assert store.usage("esha") == 0
    done = offer(store, b"abc")
    store.write_chunk(done.file_id, 0, b"abc")
    store.complete_file(done.file_id)
    partial = offer(store, b"x" * 100)
    store.write_chunk(partial.file_id, 0, b"x")
    offer(store, b"y" * 5, owner="bob")
    assert store.usage("esha") == 103
    store.delete_file(partial.file_id)
    assert store.usage("esha") == 3
    assert store.usage("bob") == 5


def test_read_chunk(store: SqliteStore) -> None:
    data = bytes(range(256)) * 10
    f = offer(store, data)
    store.write_chunk(f.file_id, 0, data[:100])
    with pytest.raises(ValueError, match="not complete"):
        store.read_chunk(f.file_id, 0, 10)
    store.write_chunk(f.file_id, 100, data[100:])
    store.complete_file(f.file_id)
    assert store.read_chunk(f.file_id, 0, 10) == data[:10]
    assert store.read_chunk(f.file_id, 2000, 1000) == data[2000:]
    assert store.read_chunk(f.file_id, len(data), 10) == b""
    for bad in (-1, len(data) + 1):
        with pytest.raises(ValueError, match="outside"):
            store.read_chunk(f.file_id, bad, 10)


def test_empty_file(store: SqliteStore) -> None:
    f = offer(store, b"")
    assert store.write_chunk(f.file_id, 0, b"") == 0
    assert store.complete_file(f.file_id)
    assert store.read_chunk(f.file_id, 0, 10) == b""


def test_file_lists_show_shared_files_of_the_conversation(store: SqliteStore) -> None:
    in_room = share(store, b"r", room="lobby")
    to_bob = share(store, b"d", room="", to_key="bob")
    from_bob = share(store, b"e", room="", to_key="esha", owner="bob")
    share(store, b"c", room="", to_key="carol")
    share(store, b"s", room="", to_key="esha")  # to oneself
    offer(store, b"unfinished", room="lobby")
    complete = offer(store, b"not announced", room="lobby")
    store.write_chunk(complete.file_id, 0, b"not announced")
    assert store.complete_file(complete.file_id)

    def listed(rows: list[tuple[int, StoredFile]]) -> list[tuple[int, str]]:
        return [(position, f.file_id) for position, f in rows]

    assert listed(store.files_for_room("lobby", 0, 10)) == [in_room]
    assert listed(store.files_between("esha", "bob", 0, 10)) == [to_bob, from_bob]
    assert listed(store.files_between("bob", "esha", 0, 10)) == [to_bob, from_bob]


def test_file_lists_page_from_a_position_in_the_order_files_were_shared(
    store: SqliteStore,
) -> None:
    """A file's position is its announcement's id: one whose upload began first but ended
    last comes last, so a page from the last position seen misses none shared meanwhile."""
    first_offered = offer(store, b"slow", room="lobby")
    early = [share(store, bytes([n]), room="lobby") for n in range(3)]
    store.write_chunk(first_offered.file_id, 0, b"slow")
    assert store.complete_file(first_offered.file_id)
    late = (announce(store, first_offered), first_offered.file_id)
    share(store, b"elsewhere", room="other")
    pages = [store.files_for_room("lobby", 0, 2)]
    pages.append(store.files_for_room("lobby", pages[-1][-1][0], 2))
    pages.append(store.files_for_room("lobby", pages[-1][-1][0], 2))
    assert [[(p, f.file_id) for p, f in page] for page in pages] == [
        early[:2],
        [early[2], late],
        [],
    ]
    # Direct files: both ways merged in that order, each once (also to oneself), by limit.
    sent = [
        share(store, bytes([n]), room="", to_key=to, owner=owner)
        for n, (owner, to) in enumerate([("esha", "bob"), ("bob", "esha")] * 3)
    ]
    both = store.files_between("esha", "bob", 0, 4)
    assert [(p, f.file_id) for p, f in both] == sent[:4]
    rest = store.files_between("bob", "esha", both[-1][0], 4)
    assert [(p, f.file_id) for p, f in rest] == sent[4:]
    mine = [share(store, bytes([n]), room="", to_key="esha") for n in range(3)]
    assert [(p, f.file_id) for p, f in store.files_between("esha", "esha", mine[0][0], 5)] == (
        mine[1:]
    )


def test_a_page_of_files_reads_only_the_conversations_announcements(store: SqliteStore) -> None:
    """From the position on, by an index: not every message of the conversation, nor every
    file of the room, on each page."""
    for statement, args in [
        (sqlite_files._SELECT_SHARED + "AND m.room = ? ORDER BY m.id LIMIT ?", (0, "lobby", 5)),
        (sqlite_files._ONE_WAY, (0, "esha", "bob", 5)),
    ]:
        plan = [row[3] for row in store._conn.execute("EXPLAIN QUERY PLAN " + statement, args)]
        assert any("USING INDEX messages_" in step and "id>?" in step for step in plan), plan
        assert not any(step.startswith("SCAN") for step in plan), plan


def test_file_target_and_digest_are_checked(store: SqliteStore) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        offer(store, b"x", room="lobby", to_key="bob")
    with pytest.raises(ValueError, match="32 bytes"):
        store.create_file(
            owner_key="esha", name="x", size=1, sha256=b"short", room="lobby", to_key="", ts=0
        )


def test_interrupted_upload_is_repaired_on_open(tmp_path: Path) -> None:
    with SqliteStore(tmp_path) as s:
        f = offer(s, b"abcdef")
        s.write_chunk(f.file_id, 0, b"abc")
    partial = tmp_path / "downloads" / ".partial" / f.file_id
    with partial.open("ab") as out:  # bytes written, count never committed (crash)
        out.write(b"zz")
    stray = tmp_path / "downloads" / ".partial" / ("f" * 32)
    stray.write_bytes(b"orphan")
    with SqliteStore(tmp_path) as s:
        assert partial.read_bytes() == b"abc"
        assert not stray.exists()
        again = s.find_partial_upload("esha", hashlib.sha256(b"abcdef").digest(), 6, "lobby", "")
        assert again is not None
        assert again.received == 3
        s.write_chunk(f.file_id, 3, b"def")
        assert s.complete_file(f.file_id)


def test_file_methods_need_a_data_dir() -> None:
    with SqliteStore(None, database=":memory:") as s, pytest.raises(RuntimeError):
        offer(s, b"x")


# --- batches ----------------------------------------------------------------------------------


def committed_texts(data_dir: Path, room: str = "lobby") -> list[str]:
    """The room's messages as another connection sees them: only what is committed."""
    conn = sqlite3.connect(data_dir / sqlite_store.DB_FILE)
    try:
        rows = conn.execute("SELECT text FROM messages WHERE room = ? ORDER BY id", (room,))
        return [r[0] for r in rows]
    finally:
        conn.close()


def test_a_batch_commits_its_writes_as_one_when_it_ends(tmp_path: Path) -> None:
    with SqliteStore(tmp_path) as s:
        with s.batch():
            room_msg(s, "Esha", "lobby", "one")
            with s.batch():  # joins the outer batch: no commit when it ends
                room_msg(s, "Esha", "lobby", "two")
            assert s._conn.in_transaction
            assert committed_texts(tmp_path) == []
            assert texts(s.room_history("lobby", 0, 10)) == ["one", "two"]  # seen inside
        assert not s._conn.in_transaction
        assert committed_texts(tmp_path) == ["one", "two"]
        room_msg(s, "Esha", "lobby", "three")  # outside a batch: committed on return
        assert committed_texts(tmp_path) == ["one", "two", "three"]


@contextmanager
def batch_rolled_back_by_sqlite(store: SqliteStore) -> Iterator[None]:
    """Run the block in a batch that SQLite then rolls back on its own, as after an I/O error
    or a full disk (an interrupted write does the same). The batch must fail, so that nothing
    of it is acknowledged, and leave no transaction open."""
    # PT012 allowed: the caller's block runs inside both the batch and the failure it ends in.
    with pytest.raises(sqlite3.OperationalError, match="nothing was stored"), store.batch():  # noqa: PT012
        yield
        store._conn.set_progress_handler(lambda: 1, 1)  # the next statement is interrupted
        try:
            room_msg(store, "Esha", "lobby", "interrupted")
        finally:
            store._conn.set_progress_handler(None, 1)
    assert not store._conn.in_transaction


def test_a_batch_that_raises_still_commits_what_was_written(tmp_path: Path) -> None:
    def handle_then_fail(s: SqliteStore) -> None:
        with s.batch():
            room_msg(s, "Esha", "lobby", "handled before the failure")
            room_msg(s, "Esha", "lobby", "kept", cid="c1")
            with pytest.raises(ValueError, match="duplicate"):  # a failed statement
                room_msg(s, "Esha", "lobby", "dup", cid="c1")
            raise RuntimeError("hub bug")

    with SqliteStore(tmp_path) as s:
        with pytest.raises(RuntimeError, match="hub bug"):
            handle_then_fail(s)
        assert not s._conn.in_transaction
        assert committed_texts(tmp_path) == ["handled before the failure", "kept"]
    with SqliteStore(tmp_path) as s:
        assert texts(s.room_history("lobby", 0, 10)) == ["handled before the failure", "kept"]


def test_a_batch_sqlite_rolled_back_stores_none_of_its_writes(tmp_path: Path) -> None:
    with SqliteStore(tmp_path) as s:
        room_msg(s, "Esha", "lobby", "before")
        with batch_rolled_back_by_sqlite(s):
            room_msg(s, "Esha", "lobby", "undone")
            room_msg(s, "Esha", "lobby", "undone too")
        room_msg(s, "Esha", "lobby", "after")  # the store goes on
        assert committed_texts(tmp_path) == ["before", "after"]


def test_missed_works_inside_a_batch(store: SqliteStore) -> None:
    add_users(store, "Esha")
    store.ensure_room("lobby")
    store.add_member("lobby", "esha")
    with store.batch():
        m = room_msg(store, "Bob", "lobby", "hi")
        assert store.missed("esha", 0, 10) == [m]
        assert store._conn.in_transaction
    assert store.missed("esha", 0, 10) == [m]


def test_a_deleted_files_bytes_go_only_once_the_deletion_is_committed(
    store: SqliteStore, tmp_path: Path
) -> None:
    kept, deleted = offer(store, b"abc"), offer(store, b"def")
    partials = tmp_path / "data" / "downloads" / ".partial"
    with batch_rolled_back_by_sqlite(store):
        store.delete_file(kept.file_id)
    with store.batch():
        store.delete_file(deleted.file_id)
        assert (partials / deleted.file_id).exists()  # its row is not gone for good yet
    assert not (partials / deleted.file_id).exists()
    assert store.get_file(deleted.file_id) is None
    assert (partials / kept.file_id).exists()
    assert store.get_file(kept.file_id) is not None


# --- hashing uploads as they arrive -----------------------------------------------------------


def files_read_back(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The list, filled from now on, of the files the store reads back to hash them."""
    hashed: list[Path] = []
    real = sqlite_uploads.hash_file

    def spy(path: Path, *, sync: bool = False) -> tuple[int, bytes]:
        hashed.append(path)
        return real(path, sync=sync)

    monkeypatch.setattr(sqlite_uploads, "hash_file", spy)
    return hashed


def write_in_chunks(store: SqliteStore, f: StoredFile, data: bytes, start: int = 0) -> None:
    offset = start
    while offset < len(data):
        offset = store.write_chunk(f.file_id, offset, data[offset : offset + 60_000])


def finish_upload(store: SqliteStore, f: StoredFile, data: bytes, start: int) -> None:
    """Write ``data`` from ``start`` on, complete the file and check it reads back whole."""
    write_in_chunks(store, f, data, start)
    assert store.complete_file(f.file_id)
    assert store.read_chunk(f.file_id, 0, len(data)) == data


def test_a_file_written_in_order_completes_without_being_read_back(
    store: SqliteStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(250_000)
    f = offer(store, data)
    hashed = files_read_back(monkeypatch)
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    with store.batch():  # as the hub does it: chunks in batches
        write_in_chunks(store, f, data[:120_000])
    write_in_chunks(store, f, data, start=120_000)
    assert store.complete_file(f.file_id)
    assert hashed == []  # the running hash was used
    assert synced  # the bytes are still made durable before the rename
    assert (tmp_path / "data" / "downloads" / f.file_id).read_bytes() == data
    assert store._uploads._hashes == {}


def test_a_wrong_file_is_rejected_by_the_running_hash(
    store: SqliteStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(100_000)
    f = offer(store, data)
    hashed = files_read_back(monkeypatch)
    write_in_chunks(store, f, data[:-1] + bytes([data[-1] ^ 1]))
    assert not store.complete_file(f.file_id)
    assert hashed == []  # the running hash was used
    assert store.get_file(f.file_id) is None
    assert all_files(tmp_path / "data") == set()
    assert store._uploads._hashes == {}


@pytest.mark.parametrize("intact", [True, False])
def test_after_a_restart_the_file_is_read_back_to_verify_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, intact: bool
) -> None:
    data = os.urandom(200_000)
    with SqliteStore(tmp_path) as s:
        f = offer(s, data)
        write_in_chunks(s, f, data[:100_000])
    sent = data if intact else data[:100_000] + os.urandom(100_000)
    hashed = files_read_back(monkeypatch)
    with SqliteStore(tmp_path) as s:
        write_in_chunks(s, f, sent, start=100_000)
        assert s.complete_file(f.file_id) is intact
        assert hashed == [tmp_path / "downloads" / ".partial" / f.file_id]
        if intact:
            assert s.read_chunk(f.file_id, 0, len(data)) == data
        else:
            assert s.get_file(f.file_id) is None
            assert all_files(tmp_path / "downloads") == set()


def test_one_store_serves_a_folder_at_a_time(tmp_path: Path) -> None:
    with SqliteStore(tmp_path):
        with pytest.raises(FolderInUse, match=rf"another sealchat server is using .*{os.getpid()}"):
            SqliteStore(tmp_path)
        with SqliteStore(tmp_path, beside_server=True) as admin:  # the account commands
            assert admin.list_users() == []
    SqliteStore(tmp_path).close()  # let go when closed


def test_a_store_opened_beside_the_server_leaves_its_uploads_alone(tmp_path: Path) -> None:
    data = os.urandom(100_000)
    with SqliteStore(tmp_path) as server:
        f = offer(server, data)
        write_in_chunks(server, f, data[:50_000])
        partial = tmp_path / "downloads" / ".partial" / f.file_id
        with partial.open("ab") as written:  # a chunk written, its count not yet committed
            written.write(data[50_000:60_000])
        stray = partial.with_name("0" * 32)  # an upload's file made, its row not committed
        stray.write_bytes(b"new")
        with SqliteStore(tmp_path, beside_server=True):
            pass
        assert partial.stat().st_size == 60_000
        assert stray.read_bytes() == b"new"
    stray.unlink()
    with SqliteStore(tmp_path) as restarted:  # the server's own start repairs it
        assert partial.stat().st_size == 50_000
        write_in_chunks(restarted, f, data, start=50_000)
        assert restarted.complete_file(f.file_id)


def _resumed_and_completed(store: SqliteStore, f: StoredFile, data: bytes) -> None:
    """An offer of the same file finds the upload with every byte, and completes it."""
    found = store.find_partial_upload("esha", f.sha256, len(data), "lobby", "")
    assert found is not None
    assert (found.file_id, found.received, found.complete) == (f.file_id, len(data), False)
    assert store.complete_file(f.file_id)
    assert store.read_chunk(f.file_id, 0, len(data)) == data


def test_a_file_moved_into_place_by_a_completion_never_committed_can_be_completed_again(
    tmp_path: Path,
) -> None:
    data = os.urandom(100_000)
    with SqliteStore(tmp_path) as s:
        f = offer(s, data)
        write_in_chunks(s, f, data)
    downloads = tmp_path / "downloads"
    os.replace(downloads / ".partial" / f.file_id, downloads / f.file_id)  # then a crash
    with SqliteStore(tmp_path) as restarted:  # not "complete": no message announced it
        assert all_files(downloads) == {downloads / ".partial" / f.file_id}
        _resumed_and_completed(restarted, f, data)


def test_a_completion_rolled_back_moves_the_file_back(store: SqliteStore) -> None:
    data = os.urandom(100_000)
    f = offer(store, data)
    write_in_chunks(store, f, data)
    with batch_rolled_back_by_sqlite(store):  # a full disk, say
        assert store.complete_file(f.file_id)
    _resumed_and_completed(store, f, data)


def test_a_running_hash_that_saw_uncommitted_bytes_is_not_trusted(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(150_000)
    f = offer(store, data)
    store.write_chunk(f.file_id, 0, data[:50_000])
    with batch_rolled_back_by_sqlite(store):  # a write whose count is undone
        store.write_chunk(f.file_id, 50_000, b"x" * 10_000)
    hashed = files_read_back(monkeypatch)
    finish_upload(store, f, data, 50_000)
    assert len(hashed) == 1


def test_running_hashes_are_bounded_and_the_forgotten_ones_read_back(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_uploads, "_MAX_HASHERS", 2)
    files = [(offer(store, d), d) for d in (os.urandom(1000 + n) for n in range(3))]
    for f, d in files:
        store.write_chunk(f.file_id, 0, d[:500])
    assert list(store._uploads._hashes) == [f.file_id for f, _ in files[1:]]  # the oldest went
    hashed = files_read_back(monkeypatch)
    for f, d in files:
        finish_upload(store, f, d, 500)
    assert len(hashed) == 1
    assert store._uploads._hashes == {}


def test_an_upload_is_read_back_only_by_the_function_the_store_gives_for_it(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The hub asks upload_hasher first: None means complete_file needs no read of the file;
    # a function reads it (on another thread, touching no database) for complete_file.
    hashed = files_read_back(monkeypatch)
    data = os.urandom(3000)
    f = offer(store, data)
    write_in_chunks(store, f, data, 0)
    assert store.upload_hasher(f.file_id) is None  # its running hash covers it
    empty = offer(store, b"")
    assert store.upload_hasher(empty.file_id) is None  # nothing to read
    assert store.complete_file(empty.file_id)
    assert store.upload_hasher(empty.file_id) is None  # complete already
    assert store.upload_hasher("0" * 32) is None  # no such file: complete_file says so
    store._uploads._hashes.clear()  # as after a restart
    hasher = store.upload_hasher(f.file_id)
    assert hasher is not None
    assert hashed == []  # nothing read until the function runs
    digest = hasher()
    assert digest == (len(data), hashlib.sha256(data).digest())
    assert len(hashed) == 1
    assert store.complete_file(f.file_id, digest)
    assert len(hashed) == 1  # not read again
    assert store.read_chunk(f.file_id, 0, len(data)) == data
    assert store.upload_hasher(f.file_id) is None


def test_deleting_a_partial_upload_forgets_its_running_hash(store: SqliteStore) -> None:
    f = offer(store, b"abcdef")
    store.write_chunk(f.file_id, 0, b"abc")
    assert f.file_id in store._uploads._hashes
    store.delete_file(f.file_id)
    assert store._uploads._hashes == {}


# --- uploads kept open between chunks ---------------------------------------------------------


def open_partials(store: SqliteStore) -> set[str]:
    """File ids of the partial uploads this process has open right now (from /proc)."""
    fds = Path("/proc/self/fd")
    if not fds.is_dir():
        pytest.skip("needs /proc/self/fd")
    assert store._uploads._partials is not None
    found = set()
    for fd in fds.iterdir():
        try:
            target = Path(os.readlink(fd))
        except OSError:
            continue  # closed meanwhile (the directory listing's own descriptor)
        if target.parent == store._uploads._partials:
            found.add(target.name)
    return found


def test_an_upload_stays_open_between_chunks_without_reading_its_row(
    store: SqliteStore,
) -> None:
    data = os.urandom(200_000)
    f = offer(store, data)
    store.write_chunk(f.file_id, 0, data[:50_000])
    assert open_partials(store) == {f.file_id}
    with sql_statements(store._conn) as statements:
        write_in_chunks(store, f, data[:150_000], start=50_000)
    assert statements
    assert all(s.startswith("UPDATE files SET received") for s in statements)
    finish_upload(store, f, data, 150_000)
    assert open_partials(store) == set()


def test_release_delete_and_close_close_the_open_upload(tmp_path: Path) -> None:
    with SqliteStore(tmp_path) as s:
        resumed, deleted, left_open = (offer(s, os.urandom(1000 + n)) for n in range(3))
        for f in (resumed, deleted, left_open):
            s.write_chunk(f.file_id, 0, b"x" * 10)
        assert open_partials(s) == {resumed.file_id, deleted.file_id, left_open.file_id}
        s.release_upload(resumed.file_id)  # the transfer ended: the partial stays resumable
        s.release_upload(resumed.file_id)  # idempotent
        s.delete_file(deleted.file_id)
        assert open_partials(s) == {left_open.file_id}
        assert s.write_chunk(resumed.file_id, 10, b"y" * 5) == 15  # opened again
        assert open_partials(s) == {resumed.file_id, left_open.file_id}
    assert open_partials(s) == set()


def test_open_uploads_are_bounded(store: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_uploads, "_MAX_OPEN_UPLOADS", 2)
    files = [(offer(store, d), d) for d in (os.urandom(1000 + n) for n in range(3))]
    for f, d in files:
        store.write_chunk(f.file_id, 0, d[:500])
    assert open_partials(store) == {f.file_id for f, _ in files[1:]}  # the oldest closed
    for f, d in files:
        finish_upload(store, f, d, 500)
    assert open_partials(store) == set()


def test_a_row_changed_behind_an_open_upload_refuses_the_chunk(tmp_path: Path) -> None:
    data = os.urandom(30_000)
    with SqliteStore(tmp_path) as s:
        f = offer(s, data)
        s.write_chunk(f.file_id, 0, data[:10_000])
        other = sqlite3.connect(tmp_path / sqlite_store.DB_FILE)  # an admin tool, say
        other.execute("UPDATE files SET received = 5000 WHERE file_id = ?", (f.file_id,))
        other.commit()
        with pytest.raises(ValueError, match="changed while it was being written"):
            s.write_chunk(f.file_id, 10_000, data[10_000:20_000])
        assert open_partials(s) == set()
        assert s.get_file(f.file_id).received == 5000  # type: ignore[union-attr]
        # Resuming from the count the row holds cuts off everything past it.
        finish_upload(s, f, data, 5000)
        g = offer(s, data)
        s.write_chunk(g.file_id, 0, data[:10_000])
        other.execute("DELETE FROM files WHERE file_id = ?", (g.file_id,))
        other.commit()
        other.close()
        with pytest.raises(ValueError, match="changed while it was being written"):
            s.write_chunk(g.file_id, 10_000, data[10_000:])
        with pytest.raises(ValueError, match="no such file"):
            s.write_chunk(g.file_id, 10_000, data[10_000:])


def test_a_rolled_back_chunk_is_cut_off_before_the_next_one(store: SqliteStore) -> None:
    data = os.urandom(30_000)
    f = offer(store, data)
    store.write_chunk(f.file_id, 0, data[:10_000])
    with batch_rolled_back_by_sqlite(store):
        store.write_chunk(f.file_id, 10_000, b"z" * 10_000)
    assert open_partials(store) == set()  # its count may be older than the cached one
    finish_upload(store, f, data, 10_000)


def test_a_failed_write_is_cut_off_before_the_next_one(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(30_000)
    f = offer(store, data)
    store.write_chunk(f.file_id, 0, data[:10_000])
    real_write = os.write

    def half_then_full(fd: int, buf: bytes) -> int:
        real_write(fd, bytes(buf)[: len(buf) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(OSError, match="No space"):
        store.write_chunk(f.file_id, 10_000, data[10_000:20_000])
    monkeypatch.setattr(os, "write", real_write)
    assert open_partials(store) == set()
    assert store.get_file(f.file_id).received == 10_000  # type: ignore[union-attr]
    finish_upload(store, f, data, 10_000)


def test_a_partial_changed_behind_a_closed_upload_is_checked_when_it_reopens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(30_000)
    with SqliteStore(tmp_path) as s:
        f = offer(s, data)
        s.write_chunk(f.file_id, 0, data[:10_000])
        s.release_upload(f.file_id)
        partial = tmp_path / "downloads" / ".partial" / f.file_id
        os.truncate(partial, 4000)  # the OS lost bytes the count says are there
        with pytest.raises(ValueError, match="partial file holds 4000 bytes, expected 10000"):
            s.write_chunk(f.file_id, 10_000, data[10_000:20_000])
        assert open_partials(s) == set()
        # Count and bytes both set back (an admin tool, say): the running hash, which saw
        # 10000 bytes, is no longer trusted; the file is read back when it completes.
        s._conn.execute("UPDATE files SET received = 4000 WHERE file_id = ?", (f.file_id,))
        hashed = files_read_back(monkeypatch)
        finish_upload(s, f, data, 4000)
        assert hashed == [partial]


def test_a_batch_sqlite_rolled_back_by_itself_deletes_nothing_and_says_so(
    store: SqliteStore,
) -> None:
    """Nothing is committed, so no file may be deleted and no cached count may stay ahead of
    the rows (the batch failing, so that nothing is acknowledged, is checked by the helper)."""
    data = os.urandom(200_000)
    doomed = offer(store, data, name="a")
    store.write_chunk(doomed.file_id, 0, data[:100_000])
    other = offer(store, data, name="b")
    with batch_rolled_back_by_sqlite(store):
        store.write_chunk(other.file_id, 0, data[:60_000])
        store.delete_file(doomed.file_id)  # its bytes go once the deletion is committed
    kept = store.get_file(doomed.file_id)
    assert kept is not None
    assert kept.received == 100_000
    finish_upload(store, doomed, data, 100_000)  # its bytes are all there
    store.write_chunk(other.file_id, 0, data[:60_000])  # from the count the rows hold


def test_accounts_changed_by_another_process_are_seen(tmp_path: Path) -> None:
    with SqliteStore(tmp_path) as server:
        add_users(server, "Esha", "Bob")
        assert server.password_generations(["esha", "bob"]) == {"esha": 0, "bob": 0}
        with sql_statements(server._conn) as statements:
            assert server.password_generations(["esha", "bob"]) is None
        assert statements == ["PRAGMA data_version"]  # nothing changed: no lookup
        with SqliteStore(tmp_path, beside_server=True) as admin:
            assert admin.remove_user("bob")
            assert admin.set_password("esha", "new")
        assert server.password_generations(["esha", "bob"]) == {"esha": 1}
        with SqliteStore(tmp_path, beside_server=True) as admin:
            add_users(admin, "Zed")
        many = [f"user{n}" for n in range(1200)]  # asked about in several queries
        assert server.password_generations(["zed", *many, "esha"]) == {"zed": 0, "esha": 1}


def test_a_change_is_still_seen_after_a_lookup_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with SqliteStore(tmp_path) as server:
        add_users(server, "Esha", "Bob")
        assert server.password_generations(["esha", "bob"]) == {"esha": 0, "bob": 0}
        with SqliteStore(tmp_path, beside_server=True) as admin:
            assert admin.set_password("bob", "new")
        with monkeypatch.context() as failing:
            failing.setattr(sqlite_accounts, "password_generations", _database_is_locked)
            with pytest.raises(sqlite3.OperationalError):
                server.password_generations(["esha", "bob"])
        assert server.password_generations(["esha", "bob"]) == {"esha": 0, "bob": 1}
        assert server.password_generations(["esha", "bob"]) is None


def _database_is_locked(*_args: object) -> dict[str, int]:
    raise sqlite3.OperationalError("database is locked")


def test_accounts_changed_through_the_same_store_are_seen(store: SqliteStore) -> None:
    add_users(store, "Esha", "Bob")
    assert store.password_generations(["esha", "bob"]) == {"esha": 0, "bob": 0}
    assert store.set_password("bob", "new")
    assert store.password_generations(["esha", "bob"]) == {"esha": 0, "bob": 1}
    assert store.password_generations(["esha", "bob"]) is None
    assert store.remove_user("bob")
    assert store.password_generations(["esha", "bob"]) == {"esha": 0}


def test_unfinished_uploads_come_longest_idle_first(store: SqliteStore, tmp_path: Path) -> None:
    files = [offer(store, b"file %d" % n) for n in range(3)]  # offered at the same time
    for file in files:
        store.write_chunk(file.file_id, 0, b"f")
        store.release_upload(file.file_id)
    for file, written in zip(files, (300.0, 100.0, 200.0), strict=True):
        os.utime(tmp_path / "data" / "downloads" / ".partial" / file.file_id, (written, written))
    idle_first = [files[1], files[2], files[0]]
    assert [f.file_id for f in store.unfinished_uploads("esha")] == [f.file_id for f in idle_first]


def test_removing_a_user_deletes_the_uploads_nobody_can_finish(tmp_path: Path) -> None:
    with SqliteStore(tmp_path) as store:
        add_users(store, "Esha")
        store.ensure_room("lobby")
        done, unfinished = offer(store, b"done"), offer(store, b"half of it")
        store.write_chunk(done.file_id, 0, b"done")
        assert store.complete_file(done.file_id)
        store.write_chunk(unfinished.file_id, 0, b"half")
        assert store.remove_user("esha")
    with SqliteStore(tmp_path) as store:
        assert store.get_file(done.file_id) is not None  # shared: it stays
        assert store.get_file(unfinished.file_id) is None
    assert not (tmp_path / "downloads" / ".partial" / unfinished.file_id).exists()


def test_the_free_space_is_that_of_the_disk_holding_the_files(tmp_path: Path) -> None:
    with SqliteStore(tmp_path) as s:
        assert s.free_space() == shutil.disk_usage(tmp_path).free
    with SqliteStore(None, database=":memory:") as s:
        assert s.free_space() is None  # no files: nothing to fill
