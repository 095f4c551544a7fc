"""The hub on its own: read markers shared by a user's sessions (ReadUpTo, protocol §9.14)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sealchat.core import (
    Authenticated,
    Error,
    JoinRoom,
    LeaveRoom,
    ListReadMarkers,
    ListRooms,
    Message,
    ReadMarker,
    ReadMarkers,
    ReadUpTo,
    Typing,
)
from sealchat.core.hub import Hub, HubConfig
from sealchat.core.hub.names import user_key
from sealchat.core.limits import MAX_LIST
from sealchat.core.records import READ_MARKERS, READ_REF
from sealchat.transports.sqlite_store import SqliteStore
from tests.test_hub import NOW, hub_with, logged_in, records, writes_to_alice


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    store = SqliteStore(tmp_path, database=":memory:")
    for name in ("Alice", "bob"):
        store.add_user(name, user_key(name), "$argon2id$fake")
    return store


def posted(hub: Hub, session: int, count: int, *, room: str = "", to: str = "") -> int:
    """Post ``count`` messages from ``session``; the id of the last."""
    for n in range(count):
        hub.handle(session, Message(text=f"m{n}", room=room, to=to), NOW)
    return hub.store.last_message_id()


def markers(hub: Hub, session: int) -> list[ReadMarker]:
    """The markers a ListReadMarkers of ``session`` lists, all pages."""
    pages = records(hub.handle(session, ListReadMarkers(), NOW), session)
    assert all(isinstance(p, ReadMarkers) for p in pages)
    assert [p.more for p in pages] == [True] * (len(pages) - 1) + [False]  # type: ignore[attr-defined]
    return [m for p in pages for m in p.markers]  # type: ignore[attr-defined]


def test_the_server_lists_the_feature(store: SqliteStore) -> None:
    hub = Hub(store)
    (auth, *_) = records(logged_in(hub, 1, "Alice"), 1)
    assert isinstance(auth, Authenticated)
    assert READ_MARKERS in auth.features


def test_a_marker_goes_to_the_users_other_sessions_that_asked_for_markers(
    store: SqliteStore,
) -> None:
    hub = hub_with(store, "Alice", "alice", "alice", "bob")  # 1 reads; 2 asked; 3 did not
    last = posted(hub, 4, 3, to="Alice")
    assert markers(hub, 2) == []
    effects = hub.handle(1, ReadUpTo(up_to=last, peer="BOB"), NOW)
    notice = ReadUpTo(up_to=last, peer="bob")  # the peer in its canonical spelling
    assert records(effects, 2) == [notice]
    assert records(effects, 1) == []  # not the session that read
    assert records(effects, 3) == []  # an older client would take the tag for a violation
    assert records(effects, 4) == []  # nor anyone else
    assert markers(hub, 3) == [ReadMarker(up_to=last, peer="bob")]


def test_a_marker_never_goes_down_nor_beyond_the_newest_message(store: SqliteStore) -> None:
    hub = hub_with(store, "Alice", "alice")
    hub.handle(2, ListReadMarkers(), NOW)
    last = posted(hub, 1, 2, room="general")
    # Beyond the newest id: the messages still to come are not read yet.
    effects = hub.handle(1, ReadUpTo(up_to=last + 1000, room="general"), NOW)
    assert records(effects, 2) == [ReadUpTo(up_to=last, room="general")]
    assert records(hub.handle(1, ReadUpTo(up_to=last - 1, room="general"), NOW), 2) == []
    assert records(hub.handle(1, ReadUpTo(up_to=last, room="general"), NOW), 2) == []
    assert markers(hub, 1) == [ReadMarker(up_to=last, room="general")]
    newer = posted(hub, 1, 1, room="general")
    assert records(hub.handle(1, ReadUpTo(up_to=newer, room="general"), NOW), 2) == [
        ReadUpTo(up_to=newer, room="general")
    ]


@pytest.mark.parametrize(
    ("record", "code"),
    [
        (ReadUpTo(up_to=1, room="random"), "not_member"),  # nor a room that does not exist
        (ReadUpTo(up_to=1, peer="nobody"), "no_such_user"),
        (ReadUpTo(up_to=1), "bad_target"),
        (ReadUpTo(up_to=1, room="general", peer="bob"), "bad_target"),
    ],
)
def test_a_marker_outside_the_users_conversations_is_refused(
    store: SqliteStore, record: ReadUpTo, code: str
) -> None:
    hub = hub_with(store, "Alice", "alice")
    posted(hub, 1, 1, room="general")
    hub.handle(2, ListReadMarkers(), NOW)
    effects = hub.handle(1, record, NOW)
    (refusal,) = records(effects, 1)
    assert isinstance(refusal, Error)
    assert (refusal.code, refusal.ref) == (code, READ_REF)
    assert records(effects, 2) == []
    assert markers(hub, 1) == []


def test_a_room_left_takes_its_marker_with_it(store: SqliteStore) -> None:
    hub = hub_with(store, "Alice")
    hub.handle(1, JoinRoom(room="random"), NOW)
    last = posted(hub, 1, 1, room="random")
    hub.handle(1, ReadUpTo(up_to=last, room="random"), NOW)
    assert markers(hub, 1) == [ReadMarker(up_to=last, room="random")]
    hub.handle(1, LeaveRoom(room="random"), NOW)
    assert markers(hub, 1) == []
    (refusal,) = records(hub.handle(1, ReadUpTo(up_to=last, room="random"), NOW), 1)
    assert isinstance(refusal, Error)
    assert refusal.code == "not_member"
    hub.handle(1, JoinRoom(room="random"), NOW)  # back in it: read nothing there yet
    assert markers(hub, 1) == []


def test_markers_beyond_the_users_allowance_are_dropped_quietly(store: SqliteStore) -> None:
    hub = hub_with(store, "Alice", "alice", config=HubConfig(read_marker_burst=2))
    hub.handle(2, ListReadMarkers(), NOW)
    last = posted(hub, 1, 3, room="general")
    for up_to in (last - 2, last - 1):
        assert records(hub.handle(1, ReadUpTo(up_to=up_to, room="general"), NOW), 2)
    assert hub.handle(1, ReadUpTo(up_to=last, room="general"), NOW) == []
    assert markers(hub, 1) == [ReadMarker(up_to=last - 1, room="general")]
    later = NOW + 1  # a token back
    assert records(hub.handle(1, ReadUpTo(up_to=last, room="general"), later), 2)


def test_the_listing_of_many_conversations_is_paged(store: SqliteStore) -> None:
    hub = hub_with(store, "Alice")
    names = [f"u{n:03}" for n in range(MAX_LIST + 5)]
    for name in names:
        store.add_user(name, name, "$argon2id$fake")
    store.raise_read_marker("alice", "general", "", 1)
    for n, name in enumerate(names, start=1):
        store.raise_read_marker("alice", "", name, n)
    listed = markers(hub, 1)
    # Its rooms, and the MAX_LIST direct conversations read furthest (most recently).
    assert listed[0] == ReadMarker(up_to=1, room="general")
    assert [m.peer for m in listed[1:]] == names[::-1][:MAX_LIST]


def test_a_sessions_first_listing_is_answered_even_with_its_requests_used_up(
    store: SqliteStore,
) -> None:
    # A client asks once after each login, after the requests that catch it up: refused, it
    # would never get the markers the user's other devices raise for the whole session.
    hub = hub_with(store, "Alice", "alice", config=HubConfig(request_burst=1))
    hub.handle(1, ListRooms(), NOW)  # the user's one request
    assert markers(hub, 1) == []  # the session's first listing: not charged
    posted(hub, 2, 1, room="general")
    notice = ReadUpTo(up_to=hub.store.last_message_id(), room="general")
    assert records(hub.handle(2, notice, NOW), 1) == [notice]  # and it gets the markers
    # Asked again in the session, it is a request like the others: a loop is held back.
    (refusal,) = records(hub.handle(1, ListReadMarkers(), NOW), 1)
    assert isinstance(refusal, Error)
    assert (refusal.code, refusal.ref) == ("rate_limited", READ_REF)


def test_a_replay_of_a_full_listings_markers_at_once_is_taken_whole(store: SqliteStore) -> None:
    # A client sends again after a reconnect the markers its link lost: as many as a listing
    # holds (its rooms and MAX_LIST direct conversations) must all count, with the defaults.
    hub = hub_with(store, "Alice", "alice")
    hub.handle(2, ListReadMarkers(), NOW)
    names = [f"u{n:03}" for n in range(MAX_LIST)]
    replay = []
    for name in names:  # a conversation with each: a direct marker needs one
        replay.append(ReadUpTo(up_to=writes_to_alice(store, name).id, peer=name))
    last = posted(hub, 1, 1, room="general")
    replay.insert(0, ReadUpTo(up_to=last, room="general"))
    told = [r for record in replay for r in records(hub.handle(1, record, NOW), 2)]
    assert told == replay
    assert len(markers(hub, 1)) == MAX_LIST + 1


def test_a_direct_marker_needs_a_message_between_the_two_users(store: SqliteStore) -> None:
    # One user could otherwise store a marker (a row) for every account on the server.
    hub = hub_with(store, "Alice", "alice", "bob")
    hub.handle(2, ListReadMarkers(), NOW)
    store.add_user("carol", "carol", "$argon2id$fake")
    posted(hub, 1, 3, room="general")
    assert records(hub.handle(1, ReadUpTo(up_to=3, peer="carol"), NOW), 2) == []
    posted(hub, 3, 1, to="Alice")
    last = posted(hub, 1, 2, room="general")
    (told,) = records(hub.handle(1, ReadUpTo(up_to=last, peer="bob"), NOW), 2)
    assert told == ReadUpTo(up_to=last, peer="bob")
    listed = {(m.room, m.peer): m.up_to for m in markers(hub, 1)}
    assert listed == {("", "bob"): last}


def test_the_users_allowances_full_again_are_forgotten(store: SqliteStore) -> None:
    # One bucket per user who sent a message, a typing notice or a ReadUpTo: like those of
    # requests and logins, each must go once full again, else they pile up for good.
    hub = hub_with(store, "Alice", "bob")
    posted(hub, 1, 1, room="general")
    hub.handle(2, Typing(room="general", active=True), NOW)
    hub.handle(2, ReadUpTo(up_to=1, room="general"), NOW)
    per_user = hub._per_user[:3]  # of messages, typing notices and read markers
    assert all(a._buckets for a in per_user)
    hub.tick(NOW + 3600)  # long enough for every allowance to refill
    assert not any(a._buckets for a in per_user)
