"""The trio client's view of its user's read markers on its own (ReadMarks, protocol §9.14)."""

from __future__ import annotations

import pytest

from sealchat.core import ReadMarker, ReadMarkers, ReadUpTo
from sealchat.core.records import READ_MARKERS
from sealchat.transports import read_marks
from sealchat.transports.read_marks import ReadMarks

KEEPS = (READ_MARKERS,)

GENERAL = ReadUpTo(up_to=5, room="general")
BOB = ReadUpTo(up_to=7, peer="bob")
DONE = ReadMarkers(markers=[])


def test_after_a_login_only_the_markers_the_listing_lacks_go_again() -> None:
    reads = ReadMarks()
    assert reads.mark(5, room="general", features=KEEPS) == GENERAL
    assert reads.mark(7, peer="bob", features=KEEPS) == BOB
    assert reads.after_login() == []  # the listing first
    listed = ReadMarker(up_to=5, room="general")
    assert reads.heard(ReadMarkers(markers=[listed], more=True)) == []  # not the last page
    assert reads.heard(DONE) == [BOB]  # the server has general's


def test_a_marker_the_server_never_takes_goes_again_once_only() -> None:
    reads = ReadMarks()
    reads.mark(7, peer="bob", features=KEEPS)
    reads.after_login()
    assert reads.heard(DONE) == [BOB]  # refused, or lost with the link
    reads.after_login()
    assert reads.heard(DONE) == []  # given up
    reads.after_login()
    assert reads.heard(DONE) == []
    assert reads.get(peer="bob") == 7  # still read here


def test_a_marker_set_after_the_login_is_not_sent_again_after_its_listing() -> None:
    reads = ReadMarks()
    reads.after_login()
    assert reads.mark(5, room="general", features=KEEPS) == GENERAL  # sent as it was set
    assert reads.heard(DONE) == []


def test_without_a_listing_the_markers_go_at_once_and_once() -> None:
    reads = ReadMarks()
    reads.mark(5, room="general", features=KEEPS)
    assert reads.after_login(listing=False) == [GENERAL]
    assert reads.after_login(listing=False) == []


def test_a_room_the_listing_does_not_name_is_forgotten_unless_set_here() -> None:
    reads = ReadMarks()
    reads.heard(
        ReadMarkers(markers=[ReadMarker(up_to=3, room="ops"), ReadMarker(up_to=4, peer="bob")])
    )
    reads.after_login()
    # Set while the listing was under way:
    assert reads.mark(5, room="general", features=KEEPS) == GENERAL
    assert reads.heard(DONE) == []
    assert reads.get(room="ops") == 0  # left on another device
    assert reads.get(room="general") == 5
    assert reads.get(peer="bob") == 4  # a listing holds only the most recent conversations


def test_markers_sent_again_for_rooms_the_user_left_meanwhile_are_forgotten_when_refused() -> None:
    # Read here while offline, in a room left meanwhile on another device: sent again after
    # the login's listing (which did not name it), refused as not a member, and then kept
    # here above the server's, also after the user joined the room again.
    reads = ReadMarks()
    reads.mark(9, room="ops", features=KEEPS)
    reads.mark(5, room="general", features=KEEPS)
    reads.mark(7, peer="bob", features=KEEPS)
    reads.after_login()
    assert reads.heard(DONE) == [ReadUpTo(up_to=9, room="ops"), GENERAL, BOB]
    reads.refused_as_not_a_member()  # which room, the refusal does not say
    assert reads.get(room="ops") == reads.get(room="general") == 0
    assert reads.get(peer="bob") == 7  # not a room's
    assert reads.mark(3, room="ops", features=KEEPS) == ReadUpTo(up_to=3, room="ops")
    reads.after_login()
    assert reads.heard(DONE) == [ReadUpTo(up_to=3, room="ops")]  # bob's: sent again once


def test_a_server_naming_too_many_conversations_grows_the_client_no_further(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(read_marks, "MAX_KNOWN", 3)
    reads = ReadMarks()
    for n in range(1, 6):  # a listing and live markers naming five rooms
        reads.heard(ReadUpTo(up_to=n, room=f"r{n}"))
    assert [reads.get(room=f"r{n}") for n in range(1, 6)] == [1, 2, 3, 0, 0]
    reads.heard(ReadUpTo(up_to=9, room="r2"))  # those known still rise
    assert reads.get(room="r2") == 9
    assert reads.mark(5, room="general", features=KEEPS) == GENERAL  # the user's own count
    assert reads.get(room="general") == 5
    assert len(reads.known) == 4
