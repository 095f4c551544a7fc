"""The hub on its own (no network): the edge cases of logins, rooms, typing and files."""

from __future__ import annotations

import errno
import hashlib
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from sealchat.core import (
    Authenticated,
    Delivered,
    Error,
    FileAccept,
    FileChunk,
    FileComplete,
    FileList,
    FileOffer,
    FileReject,
    FileRequest,
    HistoryEnd,
    HistoryRequest,
    JoinRoom,
    LeaveRoom,
    ListFiles,
    ListMembers,
    ListRooms,
    Login,
    LoginRejected,
    Members,
    Membership,
    Message,
    MessageAck,
    OnlineUsers,
    Presence,
    Record,
    Register,
    RoomJoined,
    Typing,
)
from sealchat.core.codec import encode_record
from sealchat.core.hub import (
    PASSWORD_CHANGED,
    CancelStream,
    Deliver,
    Disconnect,
    Effect,
    HandlingFailed,
    HashPassword,
    Hub,
    HubConfig,
    StreamFile,
    VerifyPassword,
)
from sealchat.core.hub.files import SHORT_OF_SPACE, TAKEN_OVER, upload_busy
from sealchat.core.hub.names import user_key
from sealchat.core.hub.store import DISK_FULL_ERRNOS, StoredMessage
from sealchat.core.limits import MAX_FILE_NAME, MAX_LIST, MAX_RECORD, MAX_TEXT
from sealchat.core.records import (
    CHANGE_PASSWORD,
    FILES_REF,
    HISTORY_REF,
    READ_MARKERS,
    ROOMS_REF,
    TYPING_REF,
)
from sealchat.transports.hub_failures import disk_full
from sealchat.transports.sqlite_store import SqliteStore
from tests.sql_trace import sql_statements

NOW = 1_000_000.0
FEATURES = (CHANGE_PASSWORD, READ_MARKERS)


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    store = SqliteStore(tmp_path, database=":memory:")
    for name in ("Alice", "bob"):
        store.add_user(name, user_key(name), "$argon2id$fake")
    return store


def records(effects: list[Effect], session: int) -> list[object]:
    return [e.record for e in effects if isinstance(e, Deliver) and session in e.sessions]


def logged_in(hub: Hub, session: int, name: str, *, announce: bool = True) -> list[Effect]:
    """Log ``session`` in as ``name``; the login's effects."""
    hub.open_session(session, f"10.0.0.{session}", NOW)
    (check,) = hub.handle(session, Login(username=name, password="pw", announce=announce), NOW)
    assert isinstance(check, VerifyPassword)
    return hub.password_verified(session, name, True, NOW)


def hub_with(store: SqliteStore, *names: str, config: HubConfig | None = None) -> Hub:
    """A hub on ``store`` with ``names`` logged in as sessions 1, 2, ... in that order."""
    hub = Hub(store, config or HubConfig())
    for session, name in enumerate(names, start=1):
        logged_in(hub, session, name)
    return hub


def test_parallel_logins_cannot_outrun_the_back_off(store: SqliteStore) -> None:
    hub = Hub(store, HubConfig(free_login_failures=3))
    for session in range(1, 11):  # ten checks started at once, before any result
        hub.open_session(session, "203.0.113.9", NOW)
        assert isinstance(
            hub.handle(session, Login(username="alice", password="x"), NOW)[0], VerifyPassword
        )
    for session in range(1, 4):
        hub.password_verified(session, "alice", False, NOW)
    # The right password, checked in parallel, arrives after the block began: refused.
    (reply,) = records(hub.password_verified(10, "alice", True, NOW), 10)
    assert isinstance(reply, LoginRejected)
    assert "too many failed attempts" in reply.reason
    assert reply.retry_after > 0


def test_logins_in_progress_per_address_are_capped(store: SqliteStore) -> None:
    hub = Hub(store, HubConfig(max_pending_logins=2))
    outcomes = []
    for session in range(1, 4):
        hub.open_session(session, "198.51.100.7", NOW)
        outcomes.append(hub.handle(session, Login(username="bob", password="x"), NOW)[0])
    assert isinstance(outcomes[0], VerifyPassword)
    assert isinstance(outcomes[1], VerifyPassword)
    (refusal,) = records([outcomes[2]], 3)  # type: ignore[list-item]
    assert isinstance(refusal, LoginRejected)
    assert "in progress" in refusal.reason


class _NotScanned(dict[int, Any]):
    """Sessions that may be looked up one by one, never all gone through."""

    def values(self) -> Any:
        raise AssertionError("every session of the server was gone through")


def test_a_login_looks_only_at_the_sessions_of_its_address(store: SqliteStore) -> None:
    # A refused Register cost a pass over every session: from an unauthenticated peer, with
    # thousands of sessions open, a cheap way to keep the hub busy.
    hub = Hub(store, HubConfig(max_pending_logins=2))
    for session in range(1, 101):
        hub.open_session(session, f"10.0.1.{session}", NOW)
    hub._roster.sessions = hub._sessions = _NotScanned(hub._sessions)
    hub.open_session(200, "192.0.2.1", NOW)
    hub.open_session(201, "192.0.2.1", NOW)
    (refusal,) = records(hub.handle(200, Register(username="eve", password="x" * 8), NOW), 200)
    assert isinstance(refusal, LoginRejected)
    assert "registration is closed" in refusal.reason
    assert isinstance(hub.handle(200, Login(username="bob", password="x"), NOW)[0], VerifyPassword)
    assert isinstance(hub.handle(201, Login(username="bob", password="x"), NOW)[0], VerifyPassword)
    hub.close_session(201, NOW)
    hub.open_session(202, "192.0.2.1", NOW)  # the closed one no longer counts; 200 still does
    assert isinstance(hub.handle(202, Login(username="bob", password="x"), NOW)[0], VerifyPassword)
    hub.open_session(203, "192.0.2.1", NOW)
    (refusal,) = records(hub.handle(203, Login(username="bob", password="x"), NOW), 203)
    assert isinstance(refusal, LoginRejected)
    assert "in progress" in refusal.reason


def test_a_successful_login_does_not_clear_the_address_count(store: SqliteStore) -> None:
    hub = Hub(store, HubConfig(free_login_failures=2))
    for session in (1, 2):
        hub.open_session(session, "192.0.2.1", NOW)
        hub.handle(session, Login(username="alice", password="guess"), NOW)
        hub.password_verified(session, "alice", False, NOW)
    # Blocked now; after the block, the attacker logs in to its own account...
    later = NOW + 10
    hub.open_session(3, "192.0.2.1", later)
    hub.handle(3, Login(username="bob", password="mine"), later)
    hub.password_verified(3, "bob", True, later)
    # ...and its next wrong guess at alice is blocked again at once.
    hub.open_session(4, "192.0.2.1", later)
    hub.handle(4, Login(username="alice", password="guess"), later)
    (reply,) = records(hub.password_verified(4, "alice", False, later), 4)
    assert isinstance(reply, LoginRejected)
    assert reply.retry_after > 0


def attempt(
    hub: Hub,
    session: int,
    address: str,
    name: str,
    *,
    at: float = NOW,
    right: bool = True,
    register: bool = False,
) -> object:
    """A new session at ``address`` logs in as (or registers) ``name``, with the right
    password or not: the answer, Authenticated or LoginRejected. A refusal must come before
    any password work."""
    hub.open_session(session, address, at)
    asked = Register if register else Login
    effects = hub.handle(session, asked(username=name, password="longenough"), at)
    if isinstance(effects[0], HashPassword):
        effects = hub.password_hashed(session, name, "$argon2id$fake", at)
    elif isinstance(effects[0], VerifyPassword):
        effects = hub.password_verified(session, name, right, at)
    return records(effects, session)[0]


def test_logins_that_succeed_are_throttled_per_address_too(store: SqliteStore) -> None:
    hub = Hub(store, HubConfig(address_login_burst=3, address_logins_per_minute=60))
    for session in range(1, 4):  # each one a password check, all of them right
        assert isinstance(attempt(hub, session, "203.0.113.5", "bob"), Authenticated)
    refused = attempt(hub, 4, "203.0.113.5", "bob")
    assert isinstance(refused, LoginRejected)
    assert refused.reason == "too many logins from your address; try again in 1 s"
    assert refused.retry_after == 1.0
    assert isinstance(attempt(hub, 5, "198.51.100.1", "alice"), Authenticated)  # elsewhere
    assert isinstance(attempt(hub, 6, "203.0.113.5", "alice", at=NOW + 1), Authenticated)


def test_logins_to_one_account_are_throttled_from_any_address(store: SqliteStore) -> None:
    hub = Hub(store, HubConfig(user_login_burst=2, user_logins_per_minute=6))
    assert isinstance(attempt(hub, 1, "10.0.0.1", "bob"), Authenticated)
    assert isinstance(attempt(hub, 2, "10.0.0.2", "bob"), Authenticated)  # logins in a loop
    refused = attempt(hub, 3, "10.0.0.3", "BOB")
    assert isinstance(refused, LoginRejected)
    assert refused.reason == "too many logins to this account; try again in 10 s"
    assert refused.retry_after == 10.0
    assert isinstance(attempt(hub, 4, "10.0.0.3", "alice"), Authenticated)  # another account
    assert isinstance(attempt(hub, 5, "10.0.0.1", "bob"), Authenticated)  # known: not asked
    assert isinstance(attempt(hub, 6, "10.0.0.3", "bob", at=NOW + 10), Authenticated)


def test_registrations_are_throttled_per_address(store: SqliteStore) -> None:
    config = HubConfig(open_registration=True, registration_burst=2, registrations_per_hour=5)
    hub = Hub(store, config)
    taken = attempt(hub, 1, "192.0.2.1", "bob", register=True)  # refused for its name
    assert isinstance(taken, LoginRejected)
    assert taken.reason == "that user name is taken"  # and it used up nothing
    for session, name in ((2, "new1"), (3, "new2")):
        assert isinstance(attempt(hub, session, "192.0.2.1", name, register=True), Authenticated)
    refused = attempt(hub, 4, "192.0.2.1", "new3", register=True)
    assert isinstance(refused, LoginRejected)
    assert refused.reason == "too many new accounts from your address; try again in 720 s"
    assert refused.retry_after == 720.0
    assert store.get_user("new3") is None
    assert isinstance(attempt(hub, 5, "192.0.2.1", "new1"), Authenticated)  # logins go on
    assert isinstance(attempt(hub, 6, "192.0.2.2", "new3", register=True), Authenticated)
    assert isinstance(
        attempt(hub, 7, "192.0.2.1", "new4", at=NOW + 720, register=True), Authenticated
    )


def test_the_default_allowances_let_an_office_and_a_users_devices_in_at_once(
    store: SqliteStore,
) -> None:
    staff = [f"staff{n:03}" for n in range(128)]
    for name in staff:
        store.add_user(name, name, "$argon2id$fake")
    hub = Hub(store, HubConfig())
    office = "198.51.100.80"  # everyone behind one NAT, all at 9:00
    for session, name in enumerate(staff, start=1):
        assert isinstance(attempt(hub, session, office, name), Authenticated), name
    looping = attempt(hub, 200, office, "staff000")  # but not a login loop
    assert isinstance(looping, LoginRejected)
    assert looping.retry_after == 1.0
    for device in range(10):  # one user's devices, all back at once after a restart
        address = f"192.0.2.{device}"
        assert isinstance(attempt(hub, 300 + device, address, "alice"), Authenticated)
    assert isinstance(attempt(hub, 310, "192.0.2.99", "alice"), LoginRejected)


def test_guesses_cannot_use_up_a_users_allowance(store: SqliteStore) -> None:
    hub = Hub(store)
    assert isinstance(attempt(hub, 1, "192.0.2.10", "bob"), Authenticated)  # bob's place
    for session in range(2, 40):  # guesses from everywhere: the back-off stops them early
        guess = attempt(hub, session, f"203.0.113.{session}", "bob", right=False)
        assert isinstance(guess, LoginRejected)
    assert isinstance(attempt(hub, 40, "192.0.2.10", "bob"), Authenticated)


def test_allowances_full_again_are_forgotten(store: SqliteStore) -> None:
    hub = Hub(store, HubConfig(open_registration=True))
    for session in range(1, 101):  # a hundred names tried from a hundred addresses
        attempt(hub, session, f"10.0.{session}.1", f"nobody{session}", right=False)
    attempt(hub, 101, "10.0.0.1", "new1", register=True)
    logins = hub._logins
    allowances = (logins._address_checks, logins._user_checks, logins._registrations)
    assert all(a._buckets for a in allowances)
    hub.tick(NOW + 3600)  # long enough for every allowance to refill
    assert not any(a._buckets for a in allowances)


def test_registration_of_a_taken_name_costs_no_hash(store: SqliteStore) -> None:
    hub = Hub(store, HubConfig(open_registration=True))
    hub.open_session(1, "10.0.0.1", NOW)
    (reply,) = records(hub.handle(1, Register(username="ALICE", password="longenough"), NOW), 1)
    assert isinstance(reply, LoginRejected)
    assert reply.reason == "that user name is taken"
    hub.open_session(2, "10.0.0.2", NOW)
    effects = hub.handle(2, Register(username="carol", password="longenough"), NOW)
    assert isinstance(effects[0], HashPassword)


def test_a_removed_accounts_name_is_taken_for_registration(store: SqliteStore) -> None:
    store.add_user("Carol", "carol", "$argon2id$fake")
    assert store.remove_user("carol")
    hub = Hub(store, HubConfig(open_registration=True))
    hub.open_session(1, "10.0.0.1", NOW)
    effects = hub.handle(1, Register(username="CAROL", password="longenough"), NOW)
    assert not any(isinstance(e, HashPassword) for e in effects)  # refused before any hash
    (reply,) = records(effects, 1)
    assert isinstance(reply, LoginRejected)
    assert reply.reason == "that user name is taken"


def test_a_name_retired_while_its_password_was_hashed_is_not_registered(
    store: SqliteStore,
) -> None:
    hub = Hub(store, HubConfig(open_registration=True))
    hub.open_session(1, "10.0.0.1", NOW)
    (check,) = hub.handle(1, Register(username="carol", password="longenough"), NOW)
    assert isinstance(check, HashPassword)
    store.add_user("carol", "carol", "$argon2id$other")  # meanwhile, by the operator...
    assert store.remove_user("carol")  # ...and removed again
    (reply,) = records(hub.password_hashed(1, "carol", "$argon2id$fake", NOW), 1)
    assert isinstance(reply, LoginRejected)
    assert reply.reason == "that user name is taken"
    assert store.get_user("carol") is None


def test_unknown_rooms_do_not_grow_memory(store: SqliteStore) -> None:
    hub = hub_with(store, "alice")
    for n in range(200):
        hub.handle(1, Typing(room=f"nowhere{n}"), NOW + n)
        hub.handle(1, Message(text="x", room=f"void{n}", client_id=f"c{n}"), NOW + n)
    assert len(hub._roster.members) <= 1  # only general
    assert not hub._typing_notices.slots


def _room_names(hub: Hub, session: int) -> list[str]:
    return [
        r.name
        for page in records(hub.handle(session, ListRooms(), NOW), session)
        for r in page.rooms
    ]


def test_a_room_left_empty_with_nothing_said_in_it_is_gone(store: SqliteStore) -> None:
    hub = hub_with(store, "alice", "bob")
    for n in range(50):  # join and leave, over and over: nothing piles up
        hub.handle(1, JoinRoom(room=f"tmp{n}"), NOW + n)
        hub.handle(1, LeaveRoom(room=f"tmp{n}"), NOW + n)
    assert _room_names(hub, 1) == ["general"]
    hub.handle(1, JoinRoom(room="ops"), NOW + 60)
    hub.handle(2, JoinRoom(room="ops"), NOW + 60)
    hub.handle(1, LeaveRoom(room="ops"), NOW + 60)
    assert "ops" in _room_names(hub, 1)  # bob is still in it
    hub.handle(2, Message(text="hi", room="ops", client_id="c1"), NOW + 60)
    hub.handle(2, LeaveRoom(room="ops"), NOW + 60)
    assert "ops" in _room_names(hub, 1)  # its history stays, and the room with it
    hub.handle(1, JoinRoom(room="scratch"), NOW + 61)
    offer = _offer(b"x" * 100, 1, room="scratch")
    accepted(hub, 1, offer, NOW + 61)
    hub.handle(1, LeaveRoom(room="scratch"), NOW + 61)
    assert "scratch" in _room_names(hub, 1)  # a file is on its way into it
    hub.handle(1, FileReject(transfer=1, reason="cancelled"), NOW + 61)
    assert "scratch" not in _room_names(hub, 1)  # it never came
    (rejoined, *_) = records(hub.handle(1, JoinRoom(room="tmp0"), NOW + 61), 1)
    assert rejoined == RoomJoined(room="tmp0")  # a name that went can be used again


def _refusal(effects: list[Effect], session: int) -> Error | None:
    """The Error among what ``session`` got, if any."""
    errors = [r for r in records(effects, session) if isinstance(r, Error)]
    assert len(errors) <= 1
    return errors[0] if errors else None


def _lasting_room(hub: Hub, session: int, room: str, now: float) -> Error | None:
    """Join (creating) ``room``, say something in it (so it stays for good) and leave it, as
    the flood did; the refusal of the join, if any."""
    refused = _refusal(hub.handle(session, JoinRoom(room=room), now), session)
    if refused is None:
        hub.handle(session, Message(text=".", room=room, client_id=f"c-{room}"), now)
        hub.handle(session, LeaveRoom(room=room), now)
    return refused


def test_a_server_full_of_rooms_refuses_new_ones_saying_what_to_do(store: SqliteStore) -> None:
    # Rooms with history stay for good: without a cap, one account filled the server with
    # more than a client takes in one listing, and rooms() failed for everyone.
    config = HubConfig(max_rooms=3, messages_per_second=1e9, message_burst=10**9)
    hub = hub_with(store, "alice", "bob", config=config)
    assert _lasting_room(hub, 1, "one", NOW) is None
    assert _lasting_room(hub, 1, "two", NOW) is None  # with general: 3
    refused = _lasting_room(hub, 2, "three", NOW)
    assert refused is not None
    assert (refused.code, refused.ref) == ("rooms_full", "three")
    assert refused.detail.startswith("the server has 3 rooms and holds at most 3: join one")
    assert _room_names(hub, 2) == ["general", "one", "two"]  # nothing made, nobody moved
    assert _refusal(hub.handle(2, JoinRoom(room="one"), NOW), 2) is None  # those there: fine


def test_each_user_creates_new_rooms_only_so_fast(store: SqliteStore) -> None:
    config = HubConfig(room_creation_burst=3, room_creations_per_hour=6.0)
    hub = hub_with(store, "alice", "bob", config=config)
    for n in range(3):
        assert _lasting_room(hub, 1, f"junk-{n}", NOW + n) is None
    refused = _lasting_room(hub, 1, "junk-3", NOW + 3)
    assert refused is not None
    assert (refused.code, refused.ref) == ("rate_limited", "junk-3")
    assert refused.detail == (
        "you are creating rooms faster than this server allows (3 at once, then 6 an hour): "
        "join one that exists (the room list shows them), or, for a new one, try again in "
        "10 min"
    )
    assert "junk-3" not in _room_names(hub, 1)
    assert _refusal(hub.handle(1, JoinRoom(room="junk-0"), NOW + 4), 1) is None  # existing
    assert _lasting_room(hub, 2, "bobs", NOW + 4) is None  # an allowance per user
    assert _lasting_room(hub, 1, "junk-3", NOW + 3 + 600) is None  # one more every 10 min
    assert _lasting_room(hub, 1, "junk-4", NOW + 3 + 600) is not None
    # A room made and left unused is gone and gives the allowance back: temporary rooms
    # cost nothing (the flood's rooms stay: each has a message).
    for n in range(20):
        assert _refusal(hub.handle(2, JoinRoom(room=f"tmp{n}"), NOW + 700 + n), 2) is None
        hub.handle(2, LeaveRoom(room=f"tmp{n}"), NOW + 700 + n)


@pytest.mark.parametrize(
    ("asked", "ref"),
    [
        (ListRooms(), ROOMS_REF),
        (ListMembers(room="general"), "general"),
        (JoinRoom(room="general"), "general"),
        (HistoryRequest(room="general"), HISTORY_REF),
        (ListFiles(room="general"), FILES_REF),
    ],
)
def test_requests_that_read_much_are_limited_per_user(
    store: SqliteStore, asked: Record, ref: str
) -> None:
    # Each reads much on the hub's one thread: asked in a loop, they kept it from everyone.
    hub = hub_with(store, "alice", "bob", config=HubConfig(request_burst=5, requests_per_second=2))

    def refusals(session: int, now: float) -> list[Error]:
        return [
            r for r in records(hub.handle(session, asked, now), session) if isinstance(r, Error)
        ]

    for _ in range(5):
        assert refusals(1, NOW) == []
    (refused,) = refusals(1, NOW)
    assert (refused.code, refused.ref) == ("rate_limited", ref)
    assert refused.detail == "slow down: at most 2 requests a second"
    assert refusals(2, NOW) == []  # an allowance per user
    assert refusals(1, NOW + 0.5) == []  # it comes back with time
    assert refusals(1, NOW + 0.5) != []


def test_a_clock_set_back_takes_no_allowance_away(store: SqliteStore) -> None:
    # Time is the wall clock, which an operator or NTP may set back: an hour back drained
    # 18,000 messages' worth of allowance, and the user could send nothing for an hour.
    hub = hub_with(store, "alice", "bob")
    hub.handle(1, Message(text="before", room="general", client_id="c1"), NOW + 3600)
    for n, asked in enumerate((Message(text="after", room="general", client_id="c2"), ListRooms())):
        answer = records(hub.handle(1, asked, NOW + n), 1)
        assert [r for r in answer if isinstance(r, Error)] == []


def test_typing_is_rate_limited_quietly(store: SqliteStore) -> None:
    hub = hub_with(store, "alice", "bob")
    relayed = 0
    for n in range(100):
        effects = hub.handle(1, Typing(room="general", active=n % 2 == 0), NOW)
        relayed += len(records(effects, 2))
    assert 0 < relayed <= 10


def test_rejoining_a_room_at_the_limit_is_fine(store: SqliteStore) -> None:
    hub = hub_with(store, "alice", config=HubConfig(max_rooms_per_user=2))
    hub.handle(1, JoinRoom(room="second"), NOW)
    again = records(hub.handle(1, JoinRoom(room="second"), NOW), 1)
    assert not [r for r in again if isinstance(r, Error)]
    (error,) = [
        r for r in records(hub.handle(1, JoinRoom(room="third"), NOW), 1) if isinstance(r, Error)
    ]
    assert error.code == "too_many_rooms"


def test_errors_name_the_request_they_answer(store: SqliteStore) -> None:
    hub = hub_with(store, "alice")
    asks = {
        HISTORY_REF: HistoryRequest(room="secret"),
        FILES_REF: ListFiles(room="secret"),
        TYPING_REF: Typing(room="secret"),
    }
    for ref, record in asks.items():
        (error,) = records(hub.handle(1, record, NOW), 1)
        assert isinstance(error, Error)
        assert error.ref == ref


def _offer(data: bytes, transfer: int, to: str = "", room: str = "general") -> FileOffer:
    digest = hashlib.sha256(data).digest()
    return FileOffer(
        transfer=transfer,
        name="f.bin",
        size=len(data),
        sha256=digest,
        room="" if to else room,
        to=to,
    )


def accepted(hub: Hub, session: int, offer: FileOffer, now: float = NOW) -> FileAccept:
    """Offer a file from ``session``; the hub must accept it."""
    (reply,) = records(hub.handle(session, offer, now), session)
    assert isinstance(reply, FileAccept)
    return reply


def test_one_partial_file_is_written_by_one_transfer_at_a_time(store: SqliteStore) -> None:
    hub = hub_with(store, "alice", "alice")  # the same user on a second device
    data = b"x" * 5000
    first = accepted(hub, 1, _offer(data, 1))
    (second,) = records(hub.handle(2, _offer(data, 1), NOW), 2)
    assert isinstance(second, FileReject)
    assert "another transfer" in second.reason
    hub.handle(1, FileChunk(transfer=1, offset=0, data=data), NOW)
    announced = records(
        hub.handle(1, FileComplete(transfer=1, sha256=_offer(data, 1).sha256), NOW), 1
    )
    assert isinstance(announced[0], Message)
    # A cancel of a transfer that is over never deletes the finished file.
    hub.handle(2, FileReject(transfer=1, reason="oops"), NOW)
    file = store.get_file(first.file_id)
    assert file is not None
    assert file.complete


GRACE = HubConfig().upload_takeover_after


def test_a_resume_from_another_connection_takes_over_an_upload_gone_quiet(
    store: SqliteStore,
) -> None:
    # Alice's phone lost its link mid-upload, but the server still has its connection (1)
    # open; her reconnected client (2) resumes where the server's copy stops.
    hub = hub_with(store, "alice", "alice")
    data = bytes(range(256)) * 40
    offer = _offer(data, 1)
    first = accepted(hub, 1, offer)
    assert hub.handle(1, FileChunk(transfer=1, offset=0, data=data[:4096]), NOW + 1) == []
    effects = hub.handle(2, _offer(data, 7), NOW + 1 + GRACE)
    assert records(effects, 1) == [FileReject(transfer=1, reason=TAKEN_OVER)]
    assert records(effects, 2) == [FileAccept(transfer=7, file_id=first.file_id, offset=4096)]
    assert effects[0].record == FileReject(transfer=1, reason=TAKEN_OVER)  # told first
    # The old connection's late records write nothing and cancel nothing: its transfer is
    # over, as if it had been cancelled.
    no_upload = FileReject(transfer=1, reason="no upload 1 in progress")
    late = FileChunk(transfer=1, offset=4096, data=b"\xff" * 4096)
    assert records(hub.handle(1, late, NOW + 20), 1) == [no_upload]
    assert records(hub.handle(1, FileComplete(transfer=1, sha256=offer.sha256), NOW), 1) == [
        no_upload
    ]
    assert hub.handle(1, FileReject(transfer=1, reason="upload abandoned"), NOW + 20) == []
    partial = store.get_file(first.file_id)
    assert partial is not None
    assert partial.received == 4096
    # Its slot and number are free; the new connection goes on to the end.
    assert isinstance(records(hub.handle(1, _offer(b"other", 1), NOW + 20), 1)[0], FileAccept)
    assert hub.handle(2, FileChunk(transfer=7, offset=4096, data=data[4096:]), NOW + 21) == []
    done = records(hub.handle(2, FileComplete(transfer=7, sha256=offer.sha256), NOW + 21), 2)
    assert isinstance(done[0], Message)
    assert done[0].file is not None
    assert (done[0].file.file_id, done[0].file.sha256) == (first.file_id, offer.sha256)


def test_an_upload_still_sending_is_not_taken_over_and_the_refusal_says_when_to_try_again(
    store: SqliteStore,
) -> None:
    hub = hub_with(store, "alice", "alice", config=HubConfig(upload_takeover_after=10.0))
    data = bytes(range(256)) * 40
    first = accepted(hub, 1, _offer(data, 1))
    (busy,) = records(hub.handle(2, _offer(data, 7), NOW + 0.5), 2)
    assert busy == FileReject(transfer=7, reason=upload_busy(10))
    assert busy.reason == "this file is already being sent in another transfer; try again in 10 s"
    # Each chunk puts the takeover off: two devices really sending at once never take the
    # upload from each other.
    assert hub.handle(1, FileChunk(transfer=1, offset=0, data=data[:100]), NOW + 5) == []
    (busy,) = records(hub.handle(2, _offer(data, 8), NOW + 12.5), 2)
    assert busy.reason == upload_busy(3)
    (busy,) = records(hub.handle(2, _offer(data, 9), NOW + 14.99), 2)
    assert busy.reason == upload_busy(1)
    # Once quiet that long, it is taken over; then the new holder is the one refusing.
    effects = hub.handle(2, _offer(data, 10), NOW + 15)
    assert records(effects, 2) == [FileAccept(transfer=10, file_id=first.file_id, offset=100)]
    (busy,) = records(hub.handle(1, _offer(data, 2), NOW + 16), 1)
    assert busy.reason == upload_busy(9)
    # An offer of the same file on the connection that is sending it is not a takeover.
    (same,) = records(hub.handle(2, _offer(data, 11), NOW + 100), 2)
    assert same.reason == ("this file is already being sent in transfer 10 of this connection")
    assert hub.handle(2, FileChunk(transfer=10, offset=100, data=data[100:]), NOW + 100) == []


def test_a_takeover_counts_the_bytes_still_to_come_once(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    free = [4000 + 5000]
    monkeypatch.setattr(store, "free_space", lambda: free[0])
    hub = hub_with(store, "alice", "alice", config=HubConfig(min_free_space=4000))
    data = b"z" * 5000
    accepted(hub, 1, _offer(data, 1))  # leaves exactly min_free_space
    effects = hub.handle(2, _offer(data, 7), NOW + GRACE)
    assert isinstance(records(effects, 2)[0], FileAccept)
    free[0] -= 1  # the disk filled meanwhile: no room for what is still to come
    (refused,) = records(hub.handle(1, _offer(data, 2), NOW + 2 * GRACE), 1)
    assert refused == FileReject(transfer=2, reason=SHORT_OF_SPACE)
    # A refused takeover takes nothing: the holder goes on.
    assert hub.handle(2, FileChunk(transfer=7, offset=0, data=data), NOW + 2 * GRACE) == []


def _uploaded(hub: Hub, session: int, data: bytes) -> str:
    """Upload ``data`` whole from ``session``; returns the file's id."""
    offer = _offer(data, 99)
    file_id = accepted(hub, session, offer).file_id
    hub.handle(session, FileChunk(transfer=99, offset=0, data=data), NOW)
    hub.handle(session, FileComplete(transfer=99, sha256=offer.sha256), NOW)
    return file_id


def test_a_cancelled_downloads_number_stays_in_use_until_its_stream_ends(
    store: SqliteStore,
) -> None:
    hub = hub_with(store, "alice", config=HubConfig(max_transfers=1))
    file_id = _uploaded(hub, 1, b"x" * 5000)
    (stream,) = hub.handle(1, FileRequest(transfer=5, file_id=file_id), NOW)[1:]
    assert isinstance(stream, StreamFile)
    (cancel,) = hub.handle(1, FileReject(transfer=5, reason="abandoned"), NOW)
    assert cancel == CancelStream(1, 5)
    # The slot is free at once, but chunks of the old stream may still be on their way,
    # so its number is not: they must not pass for a new transfer's.
    (reused,) = records(hub.handle(1, FileRequest(transfer=5, file_id=file_id), NOW), 1)
    assert isinstance(reused, FileReject)
    assert reused.reason == "transfer 5 is already in use"
    assert isinstance(hub.handle(1, FileRequest(transfer=6, file_id=file_id), NOW)[1], StreamFile)
    hub.stream_finished(1, 6)
    hub.stream_finished(1, 5)  # the driver ended the old stream: its number is free
    assert isinstance(hub.handle(1, FileRequest(transfer=5, file_id=file_id), NOW)[1], StreamFile)


def test_downloads_cancelled_as_they_are_asked_for_start_no_more_streams_than_twice_the_limit(
    store: SqliteStore,
) -> None:
    # A stream runs on (a thread, on the threaded server) until it notices its cancel: a
    # client asking and cancelling in a loop must not start streams without end.
    hub = hub_with(store, "alice", config=HubConfig(max_transfers=2))
    file_id = _uploaded(hub, 1, b"x" * 5000)
    streams, refusals = [], []
    for transfer in range(1, 101):
        effects = hub.handle(1, FileRequest(transfer=transfer, file_id=file_id), NOW)
        streams += [e for e in effects if isinstance(e, StreamFile)]
        refusals += [r.reason for r in records(effects, 1) if isinstance(r, FileReject)]
        hub.handle(1, FileReject(transfer=transfer, reason="abandoned"), NOW)
    assert len(streams) == 4
    assert refusals[0] == (
        "at most 2 transfers at a time, and 4 cancelled downloads are still stopping; "
        "try again in a moment"
    )
    # Once a stream has stopped, its place is free again; an upload counts the same way.
    hub.stream_finished(1, streams[0].transfer)
    assert isinstance(hub.handle(1, FileRequest(transfer=200, file_id=file_id), NOW)[1], StreamFile)
    (busy,) = records(hub.handle(1, _offer(b"y" * 10, 201), NOW), 1)
    assert isinstance(busy, FileReject)
    assert busy.reason.startswith("at most 2 transfers at a time, and 3 cancelled")


def test_a_file_is_not_shared_in_a_room_its_uploader_left_meanwhile(store: SqliteStore) -> None:
    hub = hub_with(store, "alice", "bob")
    for session in (1, 2):
        hub.handle(session, JoinRoom(room="ops"), NOW)
    data = b"x" * 5000
    offer = _offer(data, 1, room="ops")
    accept = accepted(hub, 1, offer)
    hub.handle(1, FileChunk(transfer=1, offset=0, data=data), NOW)
    hub.handle(1, LeaveRoom(room="ops"), NOW)
    effects = hub.handle(1, FileComplete(transfer=1, sha256=offer.sha256), NOW)
    (refused,) = records(effects, 1)
    assert isinstance(refused, FileReject)
    assert refused.reason.startswith("you left ops; join it again")
    assert records(effects, 2) == []  # bob is told of nothing
    file = store.get_file(accept.file_id)
    assert file is not None
    assert not file.complete
    # Back in the room, the same offer resumes at the end: nothing is sent twice.
    hub.handle(1, JoinRoom(room="ops"), NOW)
    resumed = accepted(hub, 1, _offer(data, 2, room="ops"))
    assert (resumed.file_id, resumed.offset) == (accept.file_id, len(data))
    effects = hub.handle(1, FileComplete(transfer=2, sha256=offer.sha256), NOW)
    (announced,) = records(effects, 2)
    assert isinstance(announced, Message)
    assert announced.room == "ops"


def test_a_chunk_the_store_refuses_ends_the_transfer_not_the_hub(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = hub_with(store, "alice")
    data = b"y" * 100
    accepted(hub, 1, _offer(data, 7))

    def broken(*_args: object) -> int:
        raise OSError("disk full")

    monkeypatch.setattr(store, "write_chunk", broken)
    (reject,) = records(hub.handle(1, FileChunk(transfer=7, offset=0, data=data), NOW), 1)
    assert isinstance(reject, FileReject)
    assert "could not store" in reject.reason


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT], ids=["ENOSPC", "EDQUOT"])
def test_a_chunk_refused_for_a_full_disk_says_when_to_resume(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    # Resuming at once would only fail again: the user is told to wait for the operator.
    hub = hub_with(store, "alice")
    data = b"y" * 100
    accepted(hub, 1, _offer(data, 7))

    def full(*_args: object) -> int:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(store, "write_chunk", full)
    (reject,) = records(hub.handle(1, FileChunk(transfer=7, offset=0, data=data), NOW), 1)
    assert isinstance(reject, FileReject)
    assert "disk is full" in reject.reason
    assert "freed some space" in reject.reason


def test_the_hub_and_the_servers_take_the_same_errors_for_a_full_disk(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One list in the core: a chunk refused for a full disk, and a server's goodbye for one.
    assert frozenset({errno.ENOSPC, errno.EDQUOT}) == DISK_FULL_ERRNOS
    hub = hub_with(store, "alice")
    data = b"y" * 100
    accepted(hub, 1, _offer(data, 7))
    for code in (*DISK_FULL_ERRNOS, errno.EIO):
        error = OSError(code, os.strerror(code))
        assert disk_full(error) == (code in DISK_FULL_ERRNOS)

        def failing(*_args: object, error: OSError = error) -> int:
            raise error

        monkeypatch.setattr(store, "write_chunk", failing)
        chunk = FileChunk(transfer=7, offset=0, data=data)
        (reject,) = records(hub.handle(1, chunk, NOW), 1)
        assert isinstance(reject, FileReject)
        assert ("disk is full" in reject.reason) == (code in DISK_FULL_ERRNOS)
        accepted(hub, 1, _offer(data, 7))  # resumed, for the next


def test_the_store_keeps_no_upload_open_once_its_transfer_ends(store: SqliteStore) -> None:
    hub = hub_with(store, "alice")
    data = b"q" * 5000
    offer = _offer(data, 4)
    accept = accepted(hub, 1, offer)
    hub.handle(1, FileChunk(transfer=4, offset=0, data=data[:1000]), NOW)
    assert list(store._uploads._open_uploads) == [accept.file_id]
    hub.close_session(1, NOW)  # disconnected mid-upload
    assert not store._uploads._open_uploads
    logged_in(hub, 2, "alice")
    resumed = accepted(hub, 2, offer)
    assert (resumed.file_id, resumed.offset) == (accept.file_id, 1000)
    hub.handle(2, FileChunk(transfer=4, offset=1000, data=data[1000:2000]), NOW)
    assert list(store._uploads._open_uploads) == [accept.file_id]
    (refused,) = records(hub.handle(2, FileChunk(transfer=4, offset=0, data=data), NOW), 2)
    assert isinstance(refused, FileReject)  # a wrong offset ends the transfer
    assert not store._uploads._open_uploads
    resumed = accepted(hub, 2, offer)
    assert resumed.offset == 2000
    hub.handle(2, FileChunk(transfer=4, offset=2000, data=data[2000:]), NOW)
    assert list(store._uploads._open_uploads) == [accept.file_id]
    (announced,) = records(hub.handle(2, FileComplete(transfer=4, sha256=offer.sha256), NOW), 2)
    assert isinstance(announced, Message)
    assert not store._uploads._open_uploads
    cancelled = accepted(hub, 2, _offer(b"c" * 10, 5))
    hub.handle(2, FileChunk(transfer=5, offset=0, data=b"c" * 4), NOW)
    hub.handle(2, FileReject(transfer=5, reason="cancelled"), NOW)  # the client cancels
    assert not store._uploads._open_uploads
    assert store.get_file(cancelled.file_id) is None


def test_a_file_to_a_user_names_them_as_they_spell_it(store: SqliteStore) -> None:
    hub = hub_with(store, "bob")
    data = b"z" * 10
    offer = _offer(data, 3, to="alice")
    accepted(hub, 1, offer)
    hub.handle(1, FileChunk(transfer=3, offset=0, data=data), NOW)
    (announcement,) = records(hub.handle(1, FileComplete(transfer=3, sha256=offer.sha256), NOW), 1)
    assert isinstance(announcement, Message)
    assert announcement.to == "Alice"


def test_a_file_to_a_user_removed_meanwhile_is_refused_not_announced(
    store: SqliteStore,
) -> None:
    hub = hub_with(store, "alice", "alice")  # her second session sees what she shares
    data = b"z" * 10
    offer = _offer(data, 3, to="bob")
    accepted(hub, 1, offer)
    hub.handle(1, FileChunk(transfer=3, offset=0, data=data), NOW)
    assert store.remove_user("bob", keep_room="general")
    effects = hub.handle(1, FileComplete(transfer=3, sha256=offer.sha256), NOW)
    (reply,) = records(effects, 1)
    assert isinstance(reply, FileReject)
    assert "bob" in reply.reason
    assert records(effects, 2) == []  # no message to nobody (neither room nor user set)
    assert not any(m.file_id for m in store.missed("alice", 0, 10))
    assert store.unfinished_uploads("alice") == []  # nobody can ever get it: not kept


def test_uploads_in_progress_together_cannot_fill_the_disk(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each offer alone leaves min_free_space; the bytes the others still have to send count
    # too, or uploads started together fill the disk the database needs for messages.
    hub = hub_with(store, "alice", "bob", config=HubConfig(min_free_space=1000))
    monkeypatch.setattr(store, "free_space", lambda: 1300)
    accepted(hub, 1, _offer(bytes(200), 1))
    (refused,) = records(hub.handle(2, _offer(bytes(range(200)), 1), NOW), 2)
    assert refused == FileReject(transfer=1, reason=SHORT_OF_SPACE)
    hub.handle(1, FileChunk(transfer=1, offset=0, data=bytes(150)), NOW)
    monkeypatch.setattr(store, "free_space", lambda: 1150)  # what arrived is on the disk
    (refused,) = records(hub.handle(2, _offer(bytes(range(200)), 1), NOW), 2)
    assert refused.reason == SHORT_OF_SPACE  # 50 still to come + 200 leave 900
    assert isinstance(records(hub.handle(2, _offer(bytes(range(100)), 1), NOW), 2)[0], FileAccept)


def test_records_that_arrive_together_are_stored_in_one_commit(store: SqliteStore) -> None:
    hub = hub_with(store, "alice")
    batch = [Message(text=f"m{n}", room="general", client_id=f"c{n}") for n in range(5)]
    with sql_statements(store._conn) as statements:
        effects = hub.handle_all(1, batch, NOW)
    assert [s for s in statements if s in ("BEGIN IMMEDIATE", "COMMIT")] == [
        "BEGIN IMMEDIATE",
        "COMMIT",
    ]
    assert statements[-1] == "COMMIT"  # nothing after it: the acks come once it is stored
    # The account check runs under the write lock, at one PRAGMA while no account changed.
    assert statements[:2] == ["BEGIN IMMEDIATE", "PRAGMA data_version"]
    assert statements.count("PRAGMA data_version") == 1
    assert len(records(effects, 1)) == 5
    assert not store._conn.in_transaction


def test_a_resend_is_acknowledged_not_repeated_and_costs_no_token(store: SqliteStore) -> None:
    hub = hub_with(
        store, "alice", "bob", config=HubConfig(messages_per_second=1e-9, message_burst=2)
    )
    (first,) = records(hub.handle(1, Message(text="hi", room="general", client_id="a"), NOW), 1)
    assert isinstance(first, MessageAck)
    resend = Message(text="hi", room="general", client_id="a")
    effects = hub.handle(1, resend, NOW)
    assert records(effects, 1) == [first]  # the same id and time
    assert records(effects, 2) == []  # bob saw it once
    (second,) = records(hub.handle(1, Message(text="b", room="general", client_id="b"), NOW), 1)
    assert isinstance(second, MessageAck)  # the resend left the second token
    (limited,) = records(hub.handle(1, Message(text="c", room="general", client_id="c"), NOW), 1)
    assert isinstance(limited, Error)
    assert limited.code == "rate_limited"
    assert records(hub.handle(1, resend, NOW), 1) == [first]  # acknowledged even when limited
    assert [m.text for m in store.room_history("general", 0, 10)] == ["hi", "b"]


def test_a_duplicate_in_one_batch_is_stored_and_delivered_once(store: SqliteStore) -> None:
    hub = hub_with(store, "alice", "bob")
    batch = [Message(text="x", room="general", client_id=c) for c in ("a", "b", "a")]
    with sql_statements(store._conn) as statements:
        effects = hub.handle_all(1, batch, NOW)
    acks = records(effects, 1)
    assert [type(a) for a in acks] == [MessageAck] * 3
    assert acks[2] == acks[0]
    assert len(records(effects, 2)) == 2
    assert len(store.room_history("general", 0, 10)) == 2
    # New messages are inserted without a lookup first; only the duplicate looks one up.
    assert sum("client_id = " in s for s in statements) == 1


def test_records_handled_before_a_failure_stay_stored(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = hub_with(store, "alice", "bob")
    real = store.append_message

    def fails_on_boom(**fields: Any) -> StoredMessage:
        if fields["client_id"] == "boom":
            raise RuntimeError("a bug in the hub")
        return real(**fields)

    monkeypatch.setattr(store, "append_message", fails_on_boom)
    batch = [
        Message(text="first", room="general", client_id="a"),
        Message(text="second", room="general", client_id="boom"),
        Message(text="third", room="general", client_id="c"),
    ]
    with pytest.raises(HandlingFailed) as failed:
        hub.handle_all(1, batch, NOW)
    assert isinstance(failed.value.__cause__, RuntimeError)
    assert not store._conn.in_transaction
    assert [m.text for m in store.room_history("general", 0, 10)] == ["first"]
    # "first" is stored, so its acknowledgement and its delivery to bob come with the error
    # (the driver runs them before it ends the session); nothing after the failure was handled.
    sent = [(e.sessions, e.record) for e in failed.value.effects if isinstance(e, Deliver)]
    assert any(1 in to and isinstance(r, MessageAck) and r.client_id == "a" for to, r in sent)
    assert any(2 in to and isinstance(r, Message) and r.text == "first" for to, r in sent)
    assert not any(isinstance(r, Message) and r.text == "third" for _, r in sent)


def test_joining_and_leaving_over_and_over_cannot_flood_the_members(store: SqliteStore) -> None:
    hub = hub_with(store, "alice", "bob")
    hub.handle(2, JoinRoom(room="ops"), NOW)
    notices, refusals = 0, []
    for _ in range(100):  # in one instant: only the burst gets through
        for record in (JoinRoom(room="ops"), LeaveRoom(room="ops")):
            effects = hub.handle(1, record, NOW)
            notices += sum(isinstance(r, Membership) for r in records(effects, 2))
            refusals += [r for r in records(effects, 1) if isinstance(r, Error)]
    assert notices == HubConfig().message_burst
    # A refused join leaves nothing to leave.
    assert {(r.code, r.ref) for r in refusals} == {("rate_limited", "ops"), ("not_member", "ops")}
    assert "slow down" in refusals[0].detail
    (joined, *_) = records(hub.handle(1, JoinRoom(room="ops"), NOW + 1), 1)
    assert joined == RoomJoined(room="ops")  # the allowance comes back with time


def test_new_uploads_are_rate_limited_but_a_resume_is_not(store: SqliteStore) -> None:
    hub = hub_with(store, "alice", config=HubConfig(message_burst=3))
    first = _offer(b"first", 1)
    for transfer, offer in enumerate([first, _offer(b"second", 2), _offer(b"third", 3)], 1):
        accepted(hub, 1, offer)
        hub.handle(1, FileChunk(transfer=transfer, offset=9, data=b"x"), NOW)  # kept to resume
    (refused,) = records(hub.handle(1, _offer(b"fourth", 4), NOW), 1)
    assert isinstance(refused, FileReject)
    assert "slow down" in refused.reason
    assert accepted(hub, 1, first).file_id  # resuming costs nothing
    assert accepted(hub, 1, _offer(b"fourth", 4), NOW + 1)


def test_the_oldest_unfinished_upload_makes_room_for_a_new_one(store: SqliteStore) -> None:
    hub = hub_with(store, "alice", config=HubConfig(max_unfinished_uploads=3))
    ids = []
    for n in range(5):
        ids.append(accepted(hub, 1, _offer(b"file %d" % n, n + 1), NOW + n).file_id)
        hub.handle(1, FileChunk(transfer=n + 1, offset=9, data=b"x"), NOW + n)
    assert [f.file_id for f in store.unfinished_uploads("alice")] == ids[2:]
    # One in progress is never discarded: the new upload waits its turn instead.
    in_progress = accepted(hub, 1, _offer(b"file 2", 10), NOW + 9)
    assert in_progress.file_id == ids[2]
    accepted(hub, 1, _offer(b"file 5", 11), NOW + 9)
    remaining = [f.file_id for f in store.unfinished_uploads("alice")]
    assert ids[2] in remaining
    assert len(remaining) == 3


def test_failures_from_elsewhere_do_not_lock_a_user_out_of_a_known_address(
    store: SqliteStore,
) -> None:
    hub = Hub(store, HubConfig(free_login_failures=3))

    def log_in(session: int, address: str, password: str) -> object:
        hub.open_session(session, address, NOW)
        effects = hub.handle(session, Login(username="bob", password=password), NOW)
        if not isinstance(effects[0], VerifyPassword):
            return records(effects, session)[0]
        return records(hub.password_verified(session, "bob", password == "right", NOW), session)[0]

    assert isinstance(log_in(1, "192.0.2.10", "right"), Authenticated)  # bob's usual place
    for session in range(2, 6):  # an attacker elsewhere
        assert isinstance(log_in(session, "203.0.113.66", "guess"), LoginRejected)
    refused = log_in(6, "198.51.100.1", "right")  # somewhere new: the user's block holds
    assert isinstance(refused, LoginRejected)
    assert "too many failed attempts" in refused.reason
    assert isinstance(log_in(7, "192.0.2.10", "right"), Authenticated)
    # That login lifted nothing elsewhere: guesses from a fresh address are still blocked.
    elsewhere = log_in(9, "198.51.100.2", "guess")
    assert isinstance(elsewhere, LoginRejected)
    assert "too many failed attempts" in elsewhere.reason
    # The attacker's own address stays blocked, whatever name it tries.
    again = log_in(8, "203.0.113.66", "right")
    assert isinstance(again, LoginRejected)
    assert "too many failed attempts" in again.reason


def removed_by_an_administrator(data_dir: Path, key: str) -> None:
    """``sealchat user remove KEY``: another process, another connection to the database."""
    with SqliteStore(data_dir, beside_server=True) as admin:
        assert admin.remove_user(key, keep_room="general")


@pytest.fixture
def shared_store(tmp_path: Path) -> SqliteStore:
    """A store on a database file that another connection can change too."""
    store = SqliteStore(tmp_path)
    for name in ("Alice", "bob"):
        store.add_user(name, user_key(name), "$argon2id$fake")
    return store


def test_an_account_removed_while_online_is_logged_out_and_seen_to_leave(
    tmp_path: Path, shared_store: SqliteStore
) -> None:
    hub = hub_with(shared_store, "alice", "bob", "bob")
    removed_by_an_administrator(tmp_path, "bob")
    effects = hub.tick(NOW + 1)
    assert {e.session for e in effects if isinstance(e, Disconnect)} == {2, 3}
    assert records(effects, 1) == [
        Membership(room="general", user="bob", joined=False),
        Presence(user="bob", online=False),
    ]
    assert not hub.is_online("bob")


@pytest.mark.parametrize("before_the_tick", ["closes", "acknowledges"])
def test_a_removed_account_is_logged_out_before_anything_else_of_it_is_handled(
    tmp_path: Path, shared_store: SqliteStore, before_the_tick: str
) -> None:
    hub = hub_with(shared_store, "alice", "bob")
    hub.handle(1, Message(text="hi", room="general", client_id="a1"), NOW)
    removed_by_an_administrator(tmp_path, "bob")
    if before_the_tick == "closes":
        effects = hub.close_session(2, NOW + 0.1)
    else:  # its cursor could not be stored any more: nothing of it is handled
        effects = hub.handle(2, Delivered(up_to=1), NOW + 0.1)
    assert Membership(room="general", user="bob", joined=False) in records(effects, 1)
    assert not hub.is_online("bob")


def password_changed_by_an_administrator(data_dir: Path, key: str) -> None:
    """``sealchat user passwd KEY``: another process, another connection to the database."""
    with SqliteStore(data_dir, beside_server=True) as admin:
        assert admin.set_password(key, "$argon2id$new")


def test_a_password_change_logs_out_every_session_of_the_account(
    tmp_path: Path, shared_store: SqliteStore
) -> None:
    hub = hub_with(shared_store, "alice", "bob", "bob")
    password_changed_by_an_administrator(tmp_path, "bob")
    effects = hub.tick(NOW + 1)
    assert [(e.session, e.reason) for e in effects if isinstance(e, Disconnect)] == [
        (2, PASSWORD_CHANGED),
        (3, PASSWORD_CHANGED),
    ]
    assert records(effects, 1) == [Presence(user="bob", online=False)]  # as for any logout
    assert not hub.is_online("bob")
    logged_in(hub, 4, "bob")  # with the new password, at once
    assert hub.is_online("bob")
    assert not [e for e in hub.tick(NOW + 2) if isinstance(e, Disconnect)]


def test_a_password_changed_through_the_servers_own_store_logs_out_too(
    shared_store: SqliteStore,
) -> None:
    hub = hub_with(shared_store, "alice", "bob")
    assert shared_store.set_password("bob", "$argon2id$new")  # no other connection
    effects = hub.handle(2, Message(text="still me", room="general", client_id="b1"), NOW)
    assert Disconnect(2, PASSWORD_CHANGED) in effects
    assert records(effects, 1) == [Presence(user="bob", online=False)]  # not the message
    assert shared_store.room_history("general", 0, 10) == []
    assert not hub.is_online("bob")


def test_only_the_sessions_from_before_the_change_are_logged_out(
    tmp_path: Path, shared_store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = hub_with(shared_store, "alice", "bob")
    password_changed_by_an_administrator(tmp_path, "bob")
    with monkeypatch.context() as late:  # the change commits just after the hub's check
        late.setattr(shared_store, "password_generations", lambda _keys: None)
        logged_in(hub, 3, "bob")  # with the new password
    effects = hub.tick(NOW + 1)
    assert [e.session for e in effects if isinstance(e, Disconnect)] == [2]
    assert records(effects, 1) == []  # bob is still online
    assert hub.is_online("bob")


def locked(*_args: Any) -> Any:
    raise sqlite3.OperationalError("database is locked")


def test_a_store_failing_the_account_check_still_forgets_a_closed_session(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The user is not left online for good (nor its uploads held): the next tick checks again.
    hub = hub_with(store, "alice", "bob")
    monkeypatch.setattr(store, "password_generations", locked)
    effects = hub.close_session(2, NOW)
    assert not hub.is_online("bob")
    assert Presence(user="bob", online=False) in records(effects, 1)


def test_a_store_failing_to_release_uploads_still_takes_their_user_offline(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Disconnected mid-upload while the store fails: the user is not left online for good,
    # its room-mates are told it left (the server runs the effects HandlingFailed carries),
    # and both uploads can be resumed from its next session.
    hub = hub_with(store, "alice", "bob")
    data = b"u" * 5000
    offers = [_offer(data, 1), _offer(data + b"2", 2)]
    for offer in offers:
        accepted(hub, 1, offer)
        hub.handle(1, FileChunk(transfer=offer.transfer, offset=0, data=data[:1000]), NOW)
    monkeypatch.setattr(store, "release_upload", locked)
    with pytest.raises(HandlingFailed) as failed:
        hub.close_session(1, NOW)
    assert not hub.is_online("alice")
    assert Presence(user="Alice", online=False) in records(failed.value.effects, 2)
    monkeypatch.undo()
    logged_in(hub, 3, "alice")
    assert [accepted(hub, 3, offer).offset for offer in offers] == [1000, 1000]


def test_a_store_failing_while_members_are_reread_keeps_the_handling_failure(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The effects of what was stored before the failure still come back to the server.
    hub = hub_with(store, "alice", "bob")
    monkeypatch.setattr(store, "rooms_of", locked)
    records_in = [
        Message(text="stored", room="general", client_id="c1"),
        JoinRoom(room="elsewhere"),
    ]
    with pytest.raises(HandlingFailed) as failed:
        hub.handle_all(1, records_in, NOW)
    assert MessageAck(client_id="c1", id=1, ts=NOW) in records(failed.value.effects, 1)


def test_a_change_committed_just_before_a_calls_transaction_stops_its_records(
    tmp_path: Path, shared_store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check runs under the call's write lock: a change that commits just before the
    call's transaction begins is seen before the records of the old session are handled."""
    hub = hub_with(shared_store, "alice", "bob")
    real_batch = shared_store.batch

    @contextmanager
    def batch() -> Iterator[None]:
        password_changed_by_an_administrator(tmp_path, "bob")  # just before BEGIN IMMEDIATE
        with real_batch():
            yield

    monkeypatch.setattr(shared_store, "batch", batch)
    effects = hub.handle(2, Message(text="after the change", room="general", client_id="b1"), NOW)
    assert Disconnect(2, PASSWORD_CHANGED) in effects
    assert records(effects, 1) == [Presence(user="bob", online=False)]  # not the message
    assert shared_store.room_history("general", 0, 10) == []
    assert not hub.is_online("bob")


def test_a_password_changed_while_a_login_is_checked_refuses_the_login(
    tmp_path: Path, shared_store: SqliteStore
) -> None:
    hub = hub_with(shared_store, "alice")
    hub.open_session(2, "10.0.0.2", NOW)
    (check,) = hub.handle(2, Login(username="bob", password="the old one"), NOW)
    assert isinstance(check, VerifyPassword)
    password_changed_by_an_administrator(tmp_path, "bob")
    hub.tick(NOW + 0.1)  # the hub notices the change before the check ends
    (reply,) = records(hub.password_verified(2, "bob", True, NOW + 0.2), 2)
    assert isinstance(reply, LoginRejected)
    assert "password was changed" in reply.reason
    assert not hub.is_online("bob")


def test_a_registration_after_a_failed_login_keeps_its_session_at_any_account_change(
    store: SqliteStore,
) -> None:
    assert store.set_password("alice", "$argon2id$new")  # alice is at generation 1
    hub = Hub(store, HubConfig(open_registration=True))
    hub.open_session(1, "10.0.0.1", NOW)
    hub.handle(1, Login(username="alice", password="a guess"), NOW)
    hub.password_verified(1, "alice", False, NOW)
    hub.handle(1, Register(username="carol", password="longenough"), NOW)
    hub.password_hashed(1, "carol", "$argon2id$fake", NOW)
    assert hub.is_online("carol")
    assert store.set_password("bob", "$argon2id$new")  # someone else's
    assert not [e for e in hub.tick(NOW + 1) if isinstance(e, Disconnect)]
    assert hub.is_online("carol")


@pytest.mark.parametrize(
    ("size", "reason"),
    [
        (3 << 30, "file too large: 3.0 GiB; the limit is 2.0 GiB"),
        # Rounded, both would read 2.0 GiB: in bytes instead.
        ((2 << 30) + 1, "file too large: 2,147,483,649 bytes; the limit is 2,147,483,648 bytes"),
    ],
)
def test_a_file_too_large_is_refused_in_sizes_people_read(
    store: SqliteStore, size: int, reason: str
) -> None:
    hub = hub_with(store, "alice", config=HubConfig(max_file_size=2 << 30))
    offer = FileOffer(transfer=1, name="big.bin", size=size, sha256=bytes(32), room="general")
    (refused,) = records(hub.handle(1, offer, NOW), 1)
    assert isinstance(refused, FileReject)
    assert refused.reason == reason


def test_a_refused_offer_discards_no_unfinished_upload(store: SqliteStore) -> None:
    hub = hub_with(store, "alice", config=HubConfig(max_unfinished_uploads=1, user_quota=100))
    data = bytes(range(50))
    kept = accepted(hub, 1, _offer(data, 1))
    hub.handle(1, FileChunk(transfer=1, offset=0, data=data[:30]), NOW)
    hub.close_session(1, NOW)  # the link dropped: the 30 bytes stay to resume
    logged_in(hub, 2, "alice")
    (refused,) = records(hub.handle(2, _offer(b"y" * 200, 2), NOW + 1), 2)
    assert isinstance(refused, FileReject)
    assert refused.reason == (
        "over quota: you use 50 B of 100 B; this file needs 200 B (the server's operator can "
        "raise the quota)"
    )
    resumed = accepted(hub, 2, _offer(data, 3), NOW + 2)
    assert (resumed.file_id, resumed.offset) == (kept.file_id, 30)
    hub.close_session(2, NOW + 2)
    logged_in(hub, 3, "alice")
    # One that fits once the idle upload is gone displaces it.
    assert accepted(hub, 3, _offer(b"z" * 60, 4), NOW + 3).file_id != kept.file_id
    assert store.get_file(kept.file_id) is None


def test_an_upload_that_would_fill_the_disk_is_refused_before_a_byte_is_stored(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = hub_with(store, "alice", config=HubConfig(min_free_space=1000))
    monkeypatch.setattr(store, "free_space", lambda: 1100)
    data = bytes(range(200))
    (refused,) = records(hub.handle(1, _offer(data, 1), NOW), 1)
    assert refused == FileReject(transfer=1, reason=SHORT_OF_SPACE)
    assert store.unfinished_uploads("alice") == []
    monkeypatch.setattr(store, "free_space", lambda: 1200)  # room for it, just
    started = accepted(hub, 1, _offer(data, 2))
    hub.handle(1, FileChunk(transfer=2, offset=0, data=data[:150]), NOW)
    hub.close_session(1, NOW)
    logged_in(hub, 2, "alice")
    monkeypatch.setattr(store, "free_space", lambda: 1060)  # what it took is gone
    (refused,) = records(hub.handle(2, _offer(b"another" * 30, 3), NOW + 1), 2)
    assert refused.reason == SHORT_OF_SPACE
    resumed = accepted(hub, 2, _offer(data, 4), NOW + 1)  # only 50 bytes still to come
    assert (resumed.file_id, resumed.offset) == (started.file_id, 150)


def test_a_removal_seen_by_a_call_whose_commit_fails_still_logs_out(
    tmp_path: Path, shared_store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = hub_with(shared_store, "alice", "bob")
    removed_by_an_administrator(tmp_path, "bob")

    def disk_full() -> None:
        shared_store._rollback()
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(shared_store, "_commit", disk_full)
    with pytest.raises(HandlingFailed) as failed:
        hub.handle(1, Message(text="hi", room="general", client_id="a1"), NOW)
    effects = failed.value.effects  # what stands: the logout, not alice's unstored message
    assert [e.session for e in effects if isinstance(e, Disconnect)] == [2]
    assert records(effects, 1) == [
        Membership(room="general", user="bob", joined=False),
        Presence(user="bob", online=False),
    ]


def test_a_removal_after_a_failed_call_is_still_seen_by_room_mates(
    tmp_path: Path, shared_store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = hub_with(shared_store, "alice", "bob")
    with monkeypatch.context() as failing:
        failing.setattr(shared_store, "append_message", _raises_disk_error)
        with pytest.raises(HandlingFailed):  # the hub rereads who is where after this
            hub.handle(1, Message(text="x", room="general", client_id="c1"), NOW)
    removed_by_an_administrator(tmp_path, "bob")
    assert records(hub.tick(NOW + 1), 1) == [
        Membership(room="general", user="bob", joined=False),
        Presence(user="bob", online=False),
    ]


def _raises_disk_error(**_fields: object) -> StoredMessage:
    raise OSError("disk I/O error")


@pytest.mark.parametrize("how", ["leaves", "is removed"])
def test_a_room_at_the_presence_limit_hears_a_member_go(
    tmp_path: Path, shared_store: SqliteStore, how: str
) -> None:
    shared_store.add_user("carol", "carol", "$argon2id$fake")
    hub = hub_with(shared_store, "alice", "bob", "carol", config=HubConfig(presence_room_limit=2))
    for session in (1, 2, 3):
        hub.handle(session, JoinRoom(room="dev"), NOW)
    if how == "leaves":
        effects = hub.handle(2, LeaveRoom(room="dev"), NOW + 1)
    else:
        removed_by_an_administrator(tmp_path, "bob")
        effects = hub.tick(NOW + 1)
    assert Membership(room="dev", user="bob", joined=False) in records(effects, 1)


def test_a_name_outside_ascii_names_no_user(store: SqliteStore) -> None:
    """Names are ASCII; Unicode case folding must not turn another name into one of them
    (the KELVIN SIGN lowercases to an ASCII 'k')."""
    store.add_user("kit", user_key("kit"), "$argon2id$fake")
    hub = hub_with(store, "alice")
    hub.open_session(2, "10.0.0.2", NOW)
    (check,) = hub.handle(2, Login(username="\u212ait", password="pw"), NOW)
    assert isinstance(check, VerifyPassword)
    assert check.password_hash is None  # checked against no account: refused
    (error,) = records(hub.handle(1, Message(text="hi", to="\u212ait", client_id="c1"), NOW), 1)
    assert isinstance(error, Error)
    assert user_key("\u212ait") != user_key("kit")
    assert user_key("KiT") == user_key("kit")


LONGEST_NAME = "\U0001f600" * (MAX_FILE_NAME - 3)
"""Most of a file name of the longest kind (16 KiB of UTF-8): a page holds 3 of them."""


def _shared(hub: Hub, session: int, transfer: int, name: str, **where: str) -> str:
    """Share an empty file named ``name`` from ``session`` (to ``where``, default general);
    returns its id."""
    offer = FileOffer(
        transfer=transfer, name=name, size=0, sha256=hashlib.sha256(b"").digest(), **where
    )
    file_id = accepted(hub, session, offer).file_id
    (announced, *_) = records(
        hub.handle(session, FileComplete(transfer=transfer, sha256=offer.sha256), NOW), session
    )
    assert isinstance(announced, Message)
    return file_id


def _page(hub: Hub, session: int, ask: ListFiles) -> FileList:
    """The answer to ``ask``: exactly one FileList, which fits one record."""
    (page,) = records(hub.handle(session, ask, NOW), session)
    assert isinstance(page, FileList)
    assert len(encode_record(page)) <= MAX_RECORD
    return page


@pytest.mark.parametrize("direct", [False, True], ids=["room", "direct"])
def test_a_file_list_is_one_page_a_request_and_goes_on_from_its_last(
    store: SqliteStore, direct: bool
) -> None:
    """A room (or conversation) with megabytes of file names is listed a page per ListFiles:
    nothing queues more than a page at a time. Paging from the last position seen misses
    none shared meanwhile and repeats none: a file whose upload began before the listing
    but ended during it comes after the ones listed before it ended."""
    hub = hub_with(store, "alice", "bob", config=HubConfig(message_burst=100))

    def where(n: int) -> dict[str, str]:  # direct: alice and bob send them by turns
        return {"to": ("bob", "alice")[n % 2]} if direct else {"room": "general"}

    def share(n: int) -> str:
        sender = 2 if direct and n % 2 else 1
        return _shared(hub, sender, n, f"{n:03d}{LONGEST_NAME}", **where(n))

    slow = FileOffer(
        transfer=500, name="slow", size=4, sha256=hashlib.sha256(b"slow").digest(), **where(0)
    )
    slow_id = accepted(hub, 1, slow).file_id  # its upload begins before the others
    hub.handle(1, FileChunk(transfer=500, offset=0, data=b"slow"), NOW)
    expected = [share(n) for n in range(7)]
    ask = ListFiles(peer="alice") if direct else ListFiles(room="general")  # no after: from 0
    listed: list[str] = []
    page, pages = _page(hub, 2, ask), 1
    while True:
        listed += [f.file_id for f in page.files]
        if len(listed) == 3:  # shared while bob pages through
            hub.handle(1, FileComplete(transfer=500, sha256=slow.sha256), NOW)
            expected.append(slow_id)
            expected += [share(n) for n in range(7, 10)]
        if not page.more:
            break
        assert page.files  # a page with more to come is never empty
        assert page.last > ask.after
        ask = ListFiles(room=ask.room, peer=ask.peer, after=page.last)
        page, pages = _page(hub, 2, ask), pages + 1
    assert listed == expected  # each once, in the order shared
    assert pages >= 4
    # Later, only what was shared since: nothing yet, then the new file.
    empty = _page(hub, 2, ListFiles(room=ask.room, peer=ask.peer, after=page.last))
    assert (empty.files, empty.more, empty.last) == ([], False, page.last)
    newer = share(10)
    since = _page(hub, 2, ListFiles(room=ask.room, peer=ask.peer, after=page.last))
    assert ([f.file_id for f in since.files], since.more) == ([newer], False)
    assert since.last > page.last


def test_a_file_list_of_short_names_takes_many_to_a_page(store: SqliteStore) -> None:
    hub = hub_with(store, "alice", config=HubConfig(message_burst=100))
    expected = [_shared(hub, 1, n, f"{n}.txt", room="general") for n in range(70)]
    page = _page(hub, 1, ListFiles(room="general"))
    assert ([f.file_id for f in page.files], page.more) == (expected, False)


def test_a_block_is_said_in_whole_seconds_rounded_up(store: SqliteStore) -> None:
    """0.4 s left is "try again in 1 s", never "in 0 s" (a retry then would be refused)."""
    hub = Hub(store, HubConfig(free_login_failures=1, login_backoff_base=1.0))
    hub.open_session(1, "192.0.2.4", NOW)
    hub.handle(1, Login(username="alice", password="guess"), NOW)
    hub.password_verified(1, "alice", False, NOW)
    hub.open_session(2, "192.0.2.4", NOW + 0.6)
    (refusal,) = records(hub.handle(2, Login(username="alice", password="x"), NOW + 0.6), 2)
    assert isinstance(refusal, LoginRejected)
    assert refusal.reason == "too many failed attempts; try again in 1 s"
    assert refusal.retry_after == pytest.approx(0.4)


LONG = "\U0001f600" * 4000
"""The longest message (by default), 16,000 bytes encoded: 200 of them are 3.2 MB."""
FAST = HubConfig(messages_per_second=1000, message_burst=1000)


def _long_messages(hub: Hub, count: int) -> list[int]:
    """Session 1 sends bob ``count`` LONG direct messages; returns their ids."""
    ids = []
    for n in range(count):
        (ack,) = records(hub.handle(1, Message(text=LONG, to="bob", client_id=f"c{n}"), NOW), 1)
        assert isinstance(ack, MessageAck)
        ids.append(ack.id)
    return ids


def _messages_page(got: list[object]) -> tuple[list[Message], HistoryEnd]:
    (end,) = [r for r in got if isinstance(r, HistoryEnd)]
    return [r for r in got if isinstance(r, Message)], end


def _size(page: list[Message]) -> int:
    return sum(len(encode_record(m)) for m in page)


def test_a_replay_page_of_long_messages_ends_early_at_page_bytes(store: SqliteStore) -> None:
    # 200 missed messages of 16 KB are not one 3.2 MB page (written in one go, it outlasted
    # the write timeout of a slow link at every login): each page stops at the message that
    # brings it to page_bytes, says more, and the next one goes on from there.
    hub = hub_with(store, "alice", config=FAST)
    ids = _long_messages(hub, FAST.replay_page)
    hub.open_session(2, "10.0.0.2", NOW)
    hub.handle(2, Login(username="bob", password="pw"), NOW)
    pages = [_messages_page(records(hub.password_verified(2, "bob", True, NOW), 2))]
    while pages[-1][1].more:
        up_to = pages[-1][0][-1].id
        pages.append(_messages_page(records(hub.handle(2, Delivered(up_to=up_to), NOW), 2)))
    assert [m.id for page, _ in pages for m in page] == ids
    assert len(pages) > 1
    for page, _ in pages[:-1]:
        assert _size(page[:-1]) < FAST.page_bytes <= _size(page)


def test_a_history_page_of_long_messages_ends_early_at_page_bytes(store: SqliteStore) -> None:
    # A page holds the newest messages before ``before`` up to page_bytes; the older ones
    # are left for the next request (more), none lost or repeated.
    hub = hub_with(store, "alice", "bob", config=FAST)
    ids = _long_messages(hub, 120)
    pages: list[list[Message]] = []
    before = 0
    while True:
        request = HistoryRequest(peer="alice", before=before, limit=FAST.history_page)
        page, end = _messages_page(records(hub.handle(2, request, NOW), 2))
        pages.append(page)
        if not end.more:
            break
        before = page[0].id
    assert [m.id for page in reversed(pages) for m in page] == ids
    assert len(pages[0]) < FAST.history_page
    for page in pages[:-1]:
        assert _size(page[1:]) < FAST.page_bytes <= _size(page)


def test_guesses_in_parallel_cannot_use_up_an_accounts_logins(store: SqliteStore) -> None:
    """Wrong guesses checked side by side all pass the back-off before any fails; they must
    not leave the account's allowance of password checks empty for its owner: the owner's
    known address skips that allowance, and a failed or refused check gives it back."""
    hub = hub_with(store, "alice")  # alice has logged in from 10.0.0.1
    hub.close_session(1, NOW)
    guesses = range(10, 22)
    for session in guesses:
        hub.open_session(session, f"198.51.100.{session}", NOW)
        hub.handle(session, Login(username="alice", password="x"), NOW)  # some refused
    for session in guesses:
        hub.password_verified(session, "alice", False, NOW)
    # Her own address: no account allowance, and no back-off there either.
    hub.open_session(2, "10.0.0.1", NOW)
    (check,) = hub.handle(2, Login(username="alice", password="pw"), NOW)
    assert isinstance(check, VerifyPassword)
    # After the block, from a new address: the checks the guesses took came back.
    later = NOW + 600
    for session in range(30, 40):
        hub.open_session(session, f"203.0.113.{session}", later)
        (check,) = hub.handle(session, Login(username="alice", password="pw"), later)
        assert isinstance(check, VerifyPassword), check


# --- quiet sessions (Login.announce=False) --------------------------------------------------


def _presence(effects: list[Effect]) -> list[Presence]:
    return [e.record for e in effects if isinstance(e, Deliver) and isinstance(e.record, Presence)]


def _online_flags(hub: Hub, session: int) -> dict[str, bool]:
    members = records(hub.handle(session, ListMembers(room="general"), NOW), session)
    return {m.name: m.online for page in members if isinstance(page, Members) for m in page.members}


def test_a_quiet_session_comes_and_goes_unannounced_yet_gets_messages(store: SqliteStore) -> None:
    hub = hub_with(store, "alice")
    login = logged_in(hub, 2, "bob", announce=False)
    assert _presence(login) == []
    assert not hub.is_online("bob")
    assert hub.is_logged_in("bob")
    assert records(login, 2)[:1] == [
        Authenticated(
            username="bob", max_file_size=2 << 30, features=FEATURES, max_message_chars=4000
        )
    ]
    assert OnlineUsers(users=["Alice"]) in records(login, 2)  # bob himself is not listed
    assert _online_flags(hub, 1) == {"Alice": True, "bob": False}
    # alice logging in again meanwhile is not told that bob is online either
    again = logged_in(hub, 3, "alice")
    assert OnlineUsers(users=["Alice"]) in records(again, 3)
    # what is sent to bob reaches the quiet session, and what it sends reaches the others
    sent = hub.handle(1, Message(text="hi bob", to="bob", client_id="a1"), NOW)
    assert [type(r) for r in records(sent, 2)] == [Message]
    posted = hub.handle(2, Message(text="status ok", room="general", client_id="b1"), NOW)
    assert [r.text for r in records(posted, 1) if isinstance(r, Message)] == ["status ok"]
    assert _presence(hub.close_session(2, NOW)) == []
    assert not hub.is_logged_in("bob")


def test_a_quiet_session_leaves_a_users_announced_presence_as_it_was(store: SqliteStore) -> None:
    hub = hub_with(store, "alice", "bob")
    assert _presence(logged_in(hub, 3, "bob", announce=False)) == []
    assert hub.is_online("bob")
    assert _online_flags(hub, 1) == {"Alice": True, "bob": True}
    assert _presence(hub.close_session(3, NOW)) == []  # bob's other session is still there
    assert hub.is_online("bob")
    # the quiet session outlives the announcing one: bob goes offline with the latter
    assert _presence(logged_in(hub, 4, "bob", announce=False)) == []
    assert records(hub.close_session(2, NOW), 1) == [Presence(user="bob", online=False)]
    assert not hub.is_online("bob")
    assert _online_flags(hub, 1) == {"Alice": True, "bob": False}
    # and logging in normally beside a quiet session announces as usual
    assert records(logged_in(hub, 5, "bob"), 1) == [Presence(user="bob", online=True)]
    assert _presence(hub.close_session(4, NOW)) == []
    assert records(hub.close_session(5, NOW), 1) == [Presence(user="bob", online=False)]


def test_typing_stops_when_its_user_goes_offline_though_a_quiet_session_stays(
    store: SqliteStore,
) -> None:
    hub = hub_with(store, "alice", "bob")
    logged_in(hub, 3, "bob", announce=False)  # a bot of bob's
    hub.handle(2, Typing(room="general", active=True), NOW)
    gone = records(hub.close_session(2, NOW + 1), 1)
    assert gone == [
        Typing(room="general", user="bob", active=False),
        Presence(user="bob", online=False),
    ]
    logged_in(hub, 4, "bob")  # back, and typing again: alice sees it
    typed = records(hub.handle(4, Typing(room="general", active=True), NOW + 3), 1)
    assert typed == [Typing(room="general", user="bob", active=True)]


def test_typing_stops_when_its_user_leaves_the_room(store: SqliteStore) -> None:
    # bob typed in ops, then left it (from another device): alice saw him typing there for
    # the rest of the notice's 5 s.
    hub = hub_with(store, "alice", "bob")
    for session in (1, 2):
        hub.handle(session, JoinRoom(room="ops"), NOW)
    hub.handle(2, Typing(room="ops", active=True), NOW)
    hub.handle(2, Typing(room="general", active=True), NOW)
    told = records(hub.handle(2, LeaveRoom(room="ops"), NOW + 1), 1)
    assert told[0] == Typing(room="ops", user="bob", active=False)
    assert Typing(room="general", user="bob", active=False) not in told  # still typing there
    assert records(hub.tick(NOW + 60), 1) == [Typing(room="general", user="bob", active=False)]


def test_a_quiet_registration_is_not_announced(store: SqliteStore) -> None:
    hub = hub_with(store, "alice", config=HubConfig(open_registration=True))
    hub.open_session(2, "10.0.0.2", NOW)
    register = Register(username="carol", password="a long password", announce=False)
    (hashing,) = hub.handle(2, register, NOW)
    assert isinstance(hashing, HashPassword)
    effects = hub.password_hashed(2, "carol", "$argon2id$fake", NOW)
    carol = Authenticated(
        username="carol", max_file_size=2 << 30, features=FEATURES, max_message_chars=4000
    )
    assert carol in records(effects, 2)
    assert _presence(effects) == []
    assert not hub.is_online("carol")


def _authenticated(effects: list[Effect], session: int) -> Authenticated:
    (authenticated,) = [r for r in records(effects, session) if isinstance(r, Authenticated)]
    return authenticated


def _talk(hub: Hub, session: int, to: str, client_id: str) -> None:
    """A direct message from ``session`` to ``to``, stored."""
    said = records(
        hub.handle(session, Message(text="hi", to=to, client_id=client_id), NOW), session
    )
    assert [type(r) for r in said] == [MessageAck]


def test_a_login_names_the_direct_conversations_the_latest_first_and_the_file_limit(
    store: SqliteStore,
) -> None:
    store.add_user("carol", "carol", "$argon2id$fake")
    config = HubConfig(max_file_size=5 << 20)
    hub = hub_with(store, "alice", "bob", "carol", config=config)
    first = _authenticated(logged_in(hub, 4, "alice"), 4)
    assert (first.conversations, first.max_file_size) == ((), 5 << 20)
    _talk(hub, 1, "BOB", "a1")  # sent: a conversation too
    _talk(hub, 3, "alice", "c1")  # received, and later
    assert _authenticated(logged_in(hub, 5, "ALICE"), 5).conversations == ("carol", "bob")
    _talk(hub, 2, "alice", "b1")
    assert _authenticated(logged_in(hub, 6, "alice"), 6).conversations == ("bob", "carol")
    assert _authenticated(logged_in(hub, 7, "carol"), 7).conversations == ("Alice",)


def test_a_login_says_the_longest_message_the_server_takes(store: SqliteStore) -> None:
    hub = hub_with(store, "alice", config=HubConfig(max_message_chars=1000))
    assert _authenticated(logged_in(hub, 2, "alice"), 2).max_message_chars == 1000
    longest = Message(text="\u00e9" * 1000, room="general", client_id="c1")  # characters
    assert [type(r) for r in records(hub.handle(1, longest, NOW), 1)] == [MessageAck]
    over = Message(text="x" * 1001, room="general", client_id="c2")
    (refusal,) = records(hub.handle(1, over, NOW), 1)
    assert isinstance(refusal, Error)
    assert refusal.code == "too_long"


def test_a_login_says_no_longer_message_limit_than_the_protocol_allows(
    store: SqliteStore,
) -> None:
    hub = hub_with(store, config=HubConfig(max_message_chars=MAX_TEXT * 2))
    assert _authenticated(logged_in(hub, 1, "alice"), 1).max_message_chars == MAX_TEXT


def test_a_message_limit_below_one_is_refused_at_once() -> None:
    # Authenticated would say 0, "not said": clients would take up to MAX_TEXT characters,
    # and the server would refuse every message.
    with pytest.raises(ValueError, match="max_message_chars must be at least 1, not 0"):
        HubConfig(max_message_chars=0)


@pytest.mark.parametrize(
    ("setting", "refusal"),
    [
        ({"registrations_per_hour": 0}, "registrations_per_hour must be more than 0, not 0"),
        ({"typing_per_second": -1.0}, "typing_per_second must be more than 0, not -1.0"),
        ({"login_timeout": 0}, "login_timeout must be more than 0, not 0"),
        ({"upload_takeover_after": 0}, "upload_takeover_after must be more than 0, not 0"),
        ({"message_burst": 0}, "message_burst must be at least 1, not 0"),
        ({"replay_page": 0}, "replay_page must be at least 1, not 0"),
        (
            {"message_text_per_day": 15_999},
            "message_text_per_day must hold the longest message: at least 16000 bytes",
        ),
    ],
)
def test_limits_that_would_break_the_hub_are_refused_at_once(
    setting: dict[str, float], refusal: str
) -> None:
    # A rate of 0 divided by zero at the first refusal: the login or message then failed as a
    # bug, long after the server started.
    with pytest.raises(ValueError, match=refusal):
        HubConfig(**setting)  # type: ignore[arg-type]
    assert HubConfig(room_creations_per_hour=0).room_creations_per_hour == 0  # burst only


def test_the_direct_conversations_outlive_a_restart_but_not_a_removed_account(
    tmp_path: Path, shared_store: SqliteStore
) -> None:
    shared_store.add_user("Carol", "carol", "$argon2id$fake")
    hub = hub_with(shared_store, "alice", "bob", "carol")
    _talk(hub, 1, "bob", "a1")
    _talk(hub, 3, "alice", "c1")
    shared_store.close()
    with SqliteStore(tmp_path) as restarted:
        again = Hub(restarted, HubConfig())
        assert _authenticated(logged_in(again, 1, "alice"), 1).conversations == ("Carol", "bob")
    removed_by_an_administrator(tmp_path, "carol")
    with SqliteStore(tmp_path) as restarted:
        again = Hub(restarted, HubConfig())
        assert _authenticated(logged_in(again, 1, "alice"), 1).conversations == ("bob",)


def writes_to_alice(store: SqliteStore, name: str) -> StoredMessage:
    """A new user ``name`` with a direct message to Alice, stored as if sent; that message."""
    store.add_user(name, name, "$argon2id$fake")
    return store.append_message(
        ts=NOW,
        sender_key=name,
        sender=name,
        room="",
        to_key="alice",
        to="Alice",
        text="hi",
        client_id="",
    )


def test_a_login_names_at_most_max_list_conversations_the_latest(store: SqliteStore) -> None:
    peers = [f"peer{n}" for n in range(MAX_LIST + 1)]
    for name in peers:  # each writes to alice in turn: the first is the oldest conversation
        writes_to_alice(store, name)
    hub = Hub(store, HubConfig())
    authenticated = _authenticated(logged_in(hub, 1, "alice"), 1)
    assert authenticated.conversations == tuple(reversed(peers[1:]))
    encode_record(authenticated)  # it fits in one record


def test_the_text_a_user_stores_a_day_is_bounded(store: SqliteStore) -> None:
    # The rate limit alone let one account store some 7 GB of messages a day: the text a day
    # is bounded too (here 86,400 bytes: a byte a second), and a message over it is refused,
    # not stored, saying when it fits.
    hub = hub_with(store, "alice", "bob", config=HubConfig(message_text_per_day=86_400))
    long = "é" * 3000  # 6,000 bytes

    def answer(session: int, text: str, ref: str, now: float = NOW) -> object:
        sent = Message(text=text, room="general", client_id=ref)
        (first, *_) = records(hub.handle(session, sent, now), session)
        return first

    for n in range(14):
        assert isinstance(answer(1, long, f"c{n}"), MessageAck)
    refused = answer(1, long, "c14")
    assert isinstance(refused, Error)
    assert (refused.code, refused.ref) == ("over_quota", "c14")
    assert (
        refused.detail == "over the 84.4 KiB of text a day kept from one user; try again in 60 min"
    )
    assert len(store.room_history("general", 10**9, 20)) == 14
    assert isinstance(answer(1, long, "c0"), MessageAck)  # a resend is acknowledged still
    assert isinstance(answer(1, "a" * 2400, "c15"), MessageAck)  # what fits goes
    assert isinstance(answer(2, long, "b0"), MessageAck)  # an allowance per user
    assert isinstance(answer(1, long, "c14", NOW + 6000), MessageAck)  # time refills it


def test_a_device_offline_while_another_read_on_gets_what_it_missed(store: SqliteStore) -> None:
    # The cursor was the user's: what the laptop acknowledged was never replayed to the phone,
    # which came back to a silent gap. Each device (its client key) now has its own, and a
    # device never seen starts where the user is.
    hub = Hub(store, HubConfig())

    def log_in(session: int, name: str, device: str) -> list[object]:
        hub.open_session(session, f"10.0.0.{session}", NOW, device)
        hub.handle(session, Login(username=name, password="pw"), NOW)
        return records(hub.password_verified(session, name, True, NOW), session)

    def texts(answer: list[object]) -> list[str]:
        return [r.text for r in answer if isinstance(r, Message)]

    log_in(1, "alice", "SHA256:laptop")
    log_in(2, "alice", "SHA256:phone")
    log_in(3, "bob", "SHA256:bobs")
    first = records(hub.handle(3, Message(text="before", room="general"), NOW), 3)[0]
    assert isinstance(first, Message)
    hub.handle(2, Delivered(up_to=first.id), NOW)
    hub.close_session(2, NOW)  # the phone goes offline
    newest = 0
    for n in range(3):
        sent = records(hub.handle(3, Message(text=f"missed {n}", room="general"), NOW), 3)[0]
        assert isinstance(sent, Message)
        newest = sent.id
    hub.handle(1, Delivered(up_to=newest), NOW)  # the laptop had them
    assert texts(log_in(4, "alice", "SHA256:phone")) == ["missed 0", "missed 1", "missed 2"]
    assert texts(log_in(5, "alice", "SHA256:laptop")) == []
    assert texts(log_in(6, "alice", "SHA256:new tablet")) == []
