"""The desktop client's view-model, without a display: every feature the window shows."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from sealchat.core import (
    Error,
    FileInfo,
    HistoryEnd,
    MemberInfo,
    Membership,
    Message,
    MessageAck,
    OnlineUsers,
    Presence,
    ReadMarker,
    ReadMarkers,
    ReadUpTo,
    RoomInfo,
    RoomJoined,
    RoomLeft,
    Typing,
)
from sealchat.core.limits import MAX_TEXT
from sealchat.core.records import HISTORY_REF, PASSWORD_REF, READ_REF, TYPING_REF
from sealchat.gui.conversation import (
    DayBreak,
    Remembered,
    Row,
    TranscriptUpdate,
    direct_key,
    room_key,
)
from sealchat.gui.settings import Server, Settings
from sealchat.gui.text_helpers import elided, fitted, room_name_problem
from sealchat.gui.theme import EMOTICONS, PALETTES
from sealchat.gui.transfer_state import TransferState
from sealchat.gui.viewmodel import TYPING_SHOWN_FOR, Change, ViewModel
from sealchat.transports.trio_client import LinkState

NOW = 1_700_000_000.0


def said(
    message_id: int,
    sender: str,
    text: str = "",
    *,
    room: str = "",
    to: str = "",
    ts: float | None = None,
) -> Message:
    """A message as the server relays it (id, sender and time set: ``ts``, by default
    ``message_id`` seconds after ``NOW``)."""
    if not room and not to:
        room = "general"
    return Message(
        text=text or f"message {message_id}",
        room=room,
        to=to,
        id=message_id,
        sender=sender,
        ts=NOW + message_id if ts is None else ts,
    )


def logged_in(me: str = "alice", **options: str) -> ViewModel:
    vm = ViewModel(**options)
    vm.logged_in(me)
    return vm


def ids(vm: ViewModel) -> list[int]:
    return [m.id for m in vm.current_messages()]


def drawn(before: list[Row], updates: list[TranscriptUpdate]) -> list[Row]:
    """The rows a view shows once it has drawn ``updates`` (none a redraw) over ``before``."""
    rows = list(before)
    for update in updates:
        assert not update.redraw
        if update.removed:
            del rows[update.index]
        else:
            assert update.row is not None
            assert update.index <= len(rows)
            rows.insert(update.index, update.row)
    return rows


# --- the view-model is free of tkinter ------------------------------------------------------


def test_view_model_theme_and_settings_import_without_tkinter() -> None:
    code = (
        "import sys\n"
        "import sealchat.gui.viewmodel, sealchat.gui.theme, sealchat.gui.settings\n"
        "assert 'tkinter' not in sys.modules, 'tkinter imported'\n"
        "assert 'customtkinter' not in sys.modules, 'customtkinter imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# --- login ----------------------------------------------------------------------------------


def test_before_login_the_title_is_plain_and_general_is_shown() -> None:
    vm = ViewModel()
    assert vm.title() == "sealchat"
    assert vm.current == room_key("general")
    assert [c.key for c in vm.sorted_conversations()] == ["#general"]


def test_logging_in_sets_the_user_and_clears_an_earlier_error() -> None:
    vm = ViewModel()
    vm.apply(Error(code="auth", detail="invalid username or password"), NOW)
    assert vm.error == "Wrong user name or password."
    changes = vm.logged_in("alice")
    assert vm.me == "alice"
    assert vm.error == ""
    assert {Change.TITLE, Change.CONVERSATIONS, Change.ERROR} <= changes
    assert vm.title() == "sealchat — alice"


# --- conversations and unread counts --------------------------------------------------------


def test_unread_counts_grow_only_for_conversations_not_shown_and_reset_on_select() -> None:
    vm = logged_in()
    assert vm.apply(RoomJoined(room="random"), NOW) == {Change.CONVERSATIONS}

    shown = vm.apply(said(1, "bob", room="general"), NOW)
    assert Change.TRANSCRIPT in shown
    assert vm.conversation("#general").unread == 0

    for message_id in (2, 3):
        changes = vm.apply(said(message_id, "bob", room="random"), NOW)
        assert Change.CONVERSATIONS in changes
        assert Change.TRANSCRIPT not in changes
    assert vm.conversation("#random").unread == 2
    assert vm.conversation("#general").unread == 0

    changes = vm.select("#random")
    assert vm.current == "#random"
    assert vm.conversation("#random").unread == 0
    assert {Change.CONVERSATIONS, Change.TRANSCRIPT, Change.TYPING, Change.PEOPLE} <= changes
    assert vm.updates[-1] == TranscriptUpdate(redraw=True)
    assert ids(vm) == [2, 3]

    vm.apply(said(4, "carol", room="general"), NOW)
    assert vm.conversation("#general").unread == 1
    vm.select("#general")
    assert vm.conversation("#general").unread == 0


def test_own_messages_never_count_as_unread() -> None:
    vm = logged_in("alice")
    vm.apply(RoomJoined(room="random"), NOW)
    vm.apply(said(1, "alice", room="random"), NOW)
    vm.apply(said(2, "Alice", room="random"), NOW)  # the server may spell it differently
    vm.apply(said(3, "alice", to="bob"), NOW)
    assert vm.conversation("#random").unread == 0
    assert vm.conversation("@bob").unread == 0
    vm.apply(said(4, "bob", room="random"), NOW)
    assert vm.conversation("#random").unread == 1


def test_direct_messages_land_in_the_peer_conversation_from_either_side() -> None:
    vm = logged_in("alice")
    vm.apply(said(1, "bob", "hi alice", to="alice"), NOW)
    vm.apply(said(2, "alice", "hi bob", to="Bob"), NOW)
    vm.apply(said(3, "carol", "psst", to="alice"), NOW)
    bob = vm.conversation(direct_key("bob"))
    assert bob.key == "@bob"
    assert bob.ids == [1, 2]
    assert not bob.is_room
    assert bob.target == ("", bob.title)
    assert bob.title.lower() == "bob"
    assert bob.unread == 1  # only bob's own message
    assert vm.conversation("@carol").ids == [3]
    assert [c.key for c in vm.sorted_conversations()] == ["#general", "@carol", "@bob"]


def test_direct_conversations_go_to_the_top_when_they_move_the_latest_first() -> None:
    vm = logged_in("alice")
    vm.apply(RoomJoined(room="books"), NOW)
    vm.apply(said(10, "bob", "hi", to="alice"), NOW)
    vm.apply(said(20, "carol", "hey", to="alice"), NOW)
    vm.directs_listed(("Erin", "Dave", "carol"))  # the server's order: the latest first

    def order() -> list[str]:
        return [c.key for c in vm.sorted_conversations()]

    assert order() == ["#books", "#general", "@carol", "@bob", "@erin", "@dave"]
    assert Change.CONVERSATIONS in vm.apply(said(30, "alice", "back", to="bob"), NOW)  # mine too
    assert order() == ["#books", "#general", "@bob", "@carol", "@erin", "@dave"]
    assert Change.CONVERSATIONS in vm.apply(said(40, "dave", "news", to="alice"), NOW)
    assert order()[2:] == ["@dave", "@bob", "@carol", "@erin"]
    vm.select("@dave")
    assert vm.apply(said(50, "dave", "more", to="alice"), NOW) == {  # on top already
        Change.TRANSCRIPT,
        Change.TYPING,
    }
    vm.apply(said(60, "books-fan", "in a room", room="books"), NOW)
    assert order()[2:] == ["@dave", "@bob", "@carol", "@erin"]  # rooms move no one
    vm.history_loaded("@erin", [said(5, "erin", "long ago", to="alice")], more=False)
    assert order()[2:] == ["@dave", "@bob", "@carol", "@erin"]  # older than the others


def test_open_direct_selects_a_conversation_named_after_the_peer() -> None:
    vm = logged_in("alice")
    changes = vm.open_direct("Dave")
    assert vm.current == "@dave"
    assert vm.conversation("@dave").title == "Dave"
    assert vm.conversation("@dave").target == ("", "Dave")
    assert Change.TRANSCRIPT in changes
    vm.apply(said(7, "dave", to="alice"), NOW)
    assert ids(vm) == [7]
    assert vm.conversation("@dave").unread == 0


def test_the_direct_conversations_named_at_login_join_the_sidebar_once_and_read() -> None:
    vm = logged_in("alice")
    vm.apply(said(1, "bob", "hi alice", to="alice"), NOW)  # replayed: unread
    changes = vm.directs_listed(("Carol", "BOB", "dave"))
    assert changes == {Change.CONVERSATIONS}
    assert list(vm.conversations) == ["#general", "@bob", "@carol", "@dave"]  # after, in order
    assert [(c.title, c.unread) for c in vm.sorted_conversations()] == [
        ("general", 0),
        ("bob", 1),  # as it was: not named anew, nor a second time
        ("Carol", 0),
        ("dave", 0),
    ]
    assert vm.current == "#general"
    assert vm.directs_listed(("carol", "bob")) == set()  # a login after a reconnect
    assert len(vm.conversations) == 4


def test_a_direct_conversation_named_at_login_opens_as_one_opened_from_the_people_list() -> None:
    listed, opened = logged_in("alice"), logged_in("alice")
    listed.directs_listed(["Carol"])
    listed.select(direct_key("carol"))
    opened.open_direct("Carol")
    assert listed.conversations.keys() == opened.conversations.keys()
    for vm in (listed, opened):
        carol = vm.conversation("@carol")
        assert (vm.current, carol.title, carol.target) == ("@carol", "Carol", ("", "Carol"))
        assert not carol.first_page_loaded  # so showing it loads its history
        vm.history_loaded("@carol", [said(4, "Carol", to="alice")], more=False)
        assert ids(vm) == [4]
        assert carol.unread == 0


def test_sidebar_lists_rooms_first_then_direct_conversations_by_name() -> None:
    vm = logged_in("alice")
    for room in ("zoo", "Books", "art"):
        vm.apply(RoomJoined(room=room), NOW)
    vm.apply(said(1, "carol", to="alice"), NOW)
    vm.apply(said(2, "Bob", to="alice"), NOW)
    keys = [c.key for c in vm.sorted_conversations()]
    assert keys == ["#art", "#Books", "#general", "#zoo", "@bob", "@carol"]
    assert vm.conversation("#zoo").target == ("zoo", "")


def test_rooms_joined_in_earlier_sessions_come_from_the_room_list() -> None:
    vm = logged_in()
    changes = vm.rooms_listed(
        [
            RoomInfo(name="books", members=3, joined=True),
            RoomInfo(name="secret", members=2, joined=False),
            RoomInfo(name="general", members=4, joined=True),
        ]
    )
    assert changes == {Change.CONVERSATIONS}
    assert [c.key for c in vm.sorted_conversations()] == ["#books", "#general"]
    assert vm.current == "#general"


def test_rooms_left_meanwhile_go_when_the_room_list_comes() -> None:
    vm = logged_in()
    for room in ("books", "dev", "random"):
        vm.apply(RoomJoined(room=room), NOW)
    vm.open_direct("bob")
    vm.select("#random")
    listed = [RoomInfo(name="dev", joined=False), RoomInfo(name="random", joined=True)]
    assert vm.rooms_listed(listed) == {Change.CONVERSATIONS}  # books: gone from the list
    assert [c.key for c in vm.sorted_conversations()] == ["#general", "#random", "@bob"]
    assert vm.current == "#random"
    changes = vm.rooms_listed([])  # random was shown: #general is, as after a RoomLeft
    assert [c.key for c in vm.sorted_conversations()] == ["#general", "@bob"]
    assert vm.current == "#general"
    assert {Change.CONVERSATIONS, Change.TRANSCRIPT, Change.PEOPLE} <= changes


def test_a_room_joined_while_the_room_list_came_stays() -> None:
    vm = logged_in()
    known = set(vm.conversations)  # when the list was asked for
    vm.apply(RoomJoined(room="dev"), NOW)
    vm.select("#dev")
    assert vm.rooms_listed([RoomInfo(name="general", joined=True)], known=known) == {
        Change.CONVERSATIONS
    }
    assert (vm.current, [c.key for c in vm.sorted_conversations()]) == (
        "#dev",
        ["#dev", "#general"],
    )


def test_only_new_renamed_or_unread_conversations_change_the_sidebar() -> None:
    vm = logged_in("alice")
    vm.apply(RoomJoined(room="random"), NOW)
    # A backlog in the conversation shown: the transcript grows, the sidebar stays as it is.
    for message_id in range(1, 50):
        assert Change.CONVERSATIONS not in vm.apply(said(message_id, "bob"), NOW)
    assert Change.CONVERSATIONS not in vm.apply(said(50, "alice", room="random"), NOW)  # mine
    assert Change.CONVERSATIONS in vm.apply(said(51, "bob", room="random"), NOW)  # unread 1
    assert Change.CONVERSATIONS in vm.apply(said(45, "bob", room="random"), NOW)  # unread 2
    assert Change.CONVERSATIONS in vm.apply(said(52, "bob", to="alice"), NOW)  # new: @bob
    vm.open_direct("bob")
    assert Change.CONVERSATIONS not in vm.apply(said(53, "bob", to="alice"), NOW)
    assert Change.CONVERSATIONS in vm.apply(said(54, "Bob", to="alice"), NOW)  # renamed
    assert vm.conversation("@bob").title == "Bob"


def test_leaving_a_room_removes_it_and_falls_back_to_general() -> None:
    vm = logged_in()
    vm.apply(RoomJoined(room="random"), NOW)
    vm.apply(RoomJoined(room="books"), NOW)
    vm.select("#random")
    assert vm.apply(RoomLeft(room="books"), NOW) == {Change.CONVERSATIONS}
    assert vm.current == "#random"
    changes = vm.apply(RoomLeft(room="random"), NOW)
    assert vm.current == "#general"
    assert Change.TRANSCRIPT in changes
    assert [c.key for c in vm.sorted_conversations()] == ["#general"]


def test_a_room_left_takes_its_people_unread_count_and_typists_with_it() -> None:
    vm = logged_in()
    vm.apply(RoomJoined(room="dev"), NOW)
    vm.set_members("dev", [MemberInfo(name="alice", online=True), MemberInfo(name="bob")])
    vm.apply(said(1, "bob", room="dev"), NOW)
    vm.apply(Typing(room="dev", user="bob"), NOW)
    vm.select("#dev")
    vm.room_left("dev")
    assert (vm.current, "#dev" in vm.conversations) == ("#general", False)
    assert ("dev" in vm.members, "#dev" in vm.typing) == (False, False)
    vm.apply(RoomJoined(room="dev"), NOW)  # joined again: nothing of before shows
    vm.select("#dev")
    assert (vm.people_in_current(), vm.typing_text(NOW), vm.current_messages()) == ([], "", [])


def test_leaving_here_and_the_event_of_it_agree() -> None:
    """The window leaves a room (the answer to its leave), then the server's RoomLeft event
    of it comes: the second changes nothing more; in the other order, the same."""
    here, told = logged_in(), logged_in()
    for vm in (here, told):
        vm.apply(RoomJoined(room="dev"), NOW)
        vm.apply(RoomJoined(room="books"), NOW)
        vm.select("#dev")
    first = here.room_left("dev")
    assert here.apply(RoomLeft(room="dev"), NOW) == {Change.CONVERSATIONS}
    assert first == told.apply(RoomLeft(room="dev"), NOW)
    assert told.room_left("dev") == {Change.CONVERSATIONS}
    for vm in (here, told):
        assert (vm.current, [c.key for c in vm.sorted_conversations()]) == (
            "#general",
            ["#books", "#general"],
        )


def test_only_a_room_shown_can_be_left() -> None:
    vm = logged_in()
    assert vm.can_leave  # #general: the server says why not
    vm.open_direct("bob")
    assert not vm.can_leave
    vm.apply(RoomJoined(room="dev"), NOW)
    vm.select("#dev")
    assert vm.can_leave
    assert vm.room_left("general") == set()  # everyone stays in #general
    assert "#general" in vm.conversations


def test_a_room_is_not_left_twice_at_once() -> None:
    vm = logged_in()
    vm.apply(RoomJoined(room="dev"), NOW)
    vm.select("#dev")
    assert vm.asked_to_leave("#dev") == {Change.CONVERSATIONS}
    assert not vm.can_leave  # until the server answers
    vm.asked_to_leave("#dev", asked=False)
    assert vm.can_leave


# --- unread messages remembered from one run to the next ------------------------------------


def restored(remembered: dict[str, Remembered]) -> ViewModel:
    """A view-model logged in as alice, given what her last run left."""
    vm = logged_in("alice")
    vm.restore_unread(remembered)
    return vm


def test_unread_counts_of_the_last_run_show_at_login_and_go_when_opened() -> None:
    vm = restored(
        {
            "#general": Remembered("general", read_up_to=2, unread=frozenset({5})),
            "@bob": Remembered("Bob", read_up_to=3, unread=frozenset({4, 6, 9})),
            "#random": Remembered("random", read_up_to=10, unread=frozenset({12})),
            "@carol": Remembered("carol", read_up_to=20),  # read: not in the sidebar for it
        }
    )
    assert [(c.title, c.unread) for c in vm.sorted_conversations()] == [
        ("general", 1),
        ("random", 1),
        ("Bob", 3),
    ]
    assert not vm.unread_changed
    vm.select(vm.current)  # as the window shows it at login
    assert vm.conversation("#general").unread == 0
    assert vm.conversation("#general").read_up_to == 5
    assert vm.unread_changed
    vm.unread_changed = False  # as the controller does once it has saved it
    changes = vm.select("@bob")  # its messages come with its history, or never
    assert Change.CONVERSATIONS in changes
    assert vm.conversation("@bob").unread == 0
    assert vm.unread_changed
    vm.history_loaded("#random", [said(12, "bob", room="random")], more=False)
    assert vm.conversation("#random").unread == 1  # not shown: unread, and counted once
    vm.select("#random")
    assert vm.conversation("#random").unread == 0


def test_a_message_remembered_unread_and_replayed_counts_once() -> None:
    # Its acknowledgement had not reached the server when the last run ended.
    vm = restored({"@bob": Remembered("bob", read_up_to=3, unread=frozenset({4, 5}))})
    bob = vm.conversation("@bob")
    vm.set_focus(False)
    assert vm.apply(said(3, "bob", to="alice"), NOW) == set()  # read then: not counted
    vm.apply(said(5, "bob", to="alice"), NOW)
    assert bob.unread == 2
    assert vm.title() == "sealchat — alice"  # nothing new
    vm.apply(said(7, "bob", to="alice"), NOW)
    vm.apply(said(8, "alice", to="bob"), NOW)
    assert bob.unread == 3
    assert vm.title() == "(1) sealchat — alice"
    vm.set_focus(True)  # back at the window, she opens it
    vm.select("@bob")
    assert bob.unread == 0
    assert vm.unread_to_remember()["@bob"] == Remembered("bob", read_up_to=8)


def test_a_conversation_not_in_the_sidebar_yet_takes_where_it_was_read_when_it_appears() -> None:
    vm = restored({"@carol": Remembered("Carol", read_up_to=20)})
    assert "@carol" not in vm.conversations
    vm.directs_listed(["carol"])
    assert vm.conversation("@carol").read_up_to == 20
    assert vm.apply(said(18, "carol", to="alice"), NOW) == set()  # replayed, read before
    vm.apply(said(21, "carol", to="alice"), NOW)
    assert vm.conversation("@carol").unread == 1


def test_what_is_unread_is_remembered_for_the_next_run_also_what_did_not_appear() -> None:
    vm = restored(
        {
            "@carol": Remembered("carol", read_up_to=30),
            "@dave": Remembered("dave", read_up_to=2, unread=frozenset({5})),
        }
    )
    vm.apply(RoomJoined(room="random"), NOW)
    assert not vm.unread_changed
    vm.apply(said(40, "bob", "shown as it comes"), NOW)  # #general is shown
    assert not vm.unread_changed  # nothing to save for it
    vm.apply(said(41, "bob", room="random"), NOW)
    vm.apply(said(42, "alice", room="random"), NOW)
    vm.apply(said(43, "Bob", "psst", to="alice"), NOW)
    assert vm.unread_changed
    assert vm.unread_to_remember() == {
        "#general": Remembered("general", read_up_to=40),
        "#random": Remembered("random", unread=frozenset({41})),
        "@bob": Remembered("Bob", unread=frozenset({43})),
        "@carol": Remembered("carol", read_up_to=30),
        "@dave": Remembered("dave", read_up_to=2, unread=frozenset({5})),
    }

    vm.logged_out(by_user=True)  # the next user starts with nothing of it
    assert vm.unread_to_remember() == {}


def test_a_room_left_forgets_what_was_unread_there() -> None:
    vm = restored(
        {
            "#random": Remembered("random", unread=frozenset({3})),
            "#books": Remembered("books", read_up_to=7),
            "#chess": Remembered("chess", read_up_to=9),
        }
    )
    vm.unread_changed = False
    vm.apply(RoomLeft(room="random"), NOW)
    assert vm.unread_changed
    vm.rooms_listed([RoomInfo(name="general", joined=True), RoomInfo(name="chess", joined=True)])
    assert set(vm.unread_to_remember()) == {"#chess"}


def test_a_direct_conversation_remembered_unread_is_placed_by_its_newest_message() -> None:
    vm = restored({"@bob": Remembered("bob", unread=frozenset({50}))})
    vm.apply(said(20, "carol", to="alice"), NOW)
    vm.apply(said(30, "dave", to="alice"), NOW)
    assert [c.key for c in vm.sorted_conversations()] == ["#general", "@bob", "@dave", "@carol"]


# --- the transcript -------------------------------------------------------------------------


def test_messages_out_of_order_are_shown_in_id_order_and_duplicates_ignored() -> None:
    vm = logged_in()
    for message_id in (5, 2, 9, 7):
        vm.apply(said(message_id, "bob"), NOW)
    assert ids(vm) == [2, 5, 7, 9]
    # Under the separator of their day, which 2 took from 5.
    assert [(u.row.id, u.index) for u in vm.updates if isinstance(u.row, Message)] == [
        (5, 0),
        (2, 0),
        (9, 3),
        (7, 3),
    ]
    assert drawn([], vm.updates) == vm.current_rows() == [DayBreak(NOW + 2), *vm.current_messages()]
    before = list(vm.updates)
    assert vm.apply(said(5, "bob", "a replay after a reconnect"), NOW) == set()
    assert ids(vm) == [2, 5, 7, 9]
    assert vm.updates == before
    assert vm.conversation("#general").messages[5].text == "message 5"


def test_messages_replayed_after_live_ones_count_as_unread_unless_read_that_far() -> None:
    vm = logged_in()
    vm.apply(RoomJoined(room="random"), NOW)
    random = vm.conversation("#random")
    vm.apply(said(10, "bob", room="random"), NOW)  # live, while the replay brings older ones
    for message_id in (4, 5, 6):
        vm.apply(said(message_id, "bob", room="random"), NOW)
    vm.apply(said(7, "alice", room="random"), NOW)  # mine
    assert random.ids == [4, 5, 6, 7, 10]
    assert random.unread == 4

    vm.select("#random")
    vm.select("#general")  # read up to 10
    assert random.unread == 0
    assert vm.apply(said(8, "bob", room="random"), NOW) == set()  # older than what was read
    assert random.unread == 0
    vm.apply(said(12, "bob", room="random"), NOW)
    vm.apply(said(11, "bob", room="random"), NOW)
    assert random.unread == 2


def test_a_page_of_the_conversation_shown_is_read_up_to_its_newest_message() -> None:
    vm = logged_in()
    vm.apply(RoomJoined(room="random"), NOW)
    for message_id in (3, 5, 8):
        vm.apply(said(message_id, "bob", room="random"), NOW)  # while #general is shown
    assert vm.conversation("#random").unread == 3
    page = [said(4, "bob", room="random"), said(5, "bob", room="random")]
    assert vm.history_loaded("#random", page, more=True) == {Change.CONVERSATIONS}
    assert vm.conversation("#random").unread == 4  # not shown: unread as well
    page = [said(6, "bob"), said(7, "bob")]
    assert vm.history_loaded("#general", page, more=True) == {Change.TRANSCRIPT}
    assert vm.conversation("#general").read_up_to == 7
    assert vm.reads_to_tell == {"#general": 7}


def test_a_page_arriving_after_the_user_switched_away_leaves_its_messages_unread() -> None:
    vm = logged_in()
    vm.apply(RoomJoined(room="random"), NOW)
    vm.select("#random")  # its first page is asked for...
    vm.select("#general")  # ...and the user goes on before it comes
    vm.reads_to_tell.clear()
    page = [
        said(1, "bob", room="random"),
        said(2, "alice", room="random"),
        said(3, "bob", room="random"),
    ]
    assert vm.history_loaded("#random", page, more=False) == {Change.CONVERSATIONS}
    assert unread_counts(vm) == {"#random": 2}  # bob's, not hers
    assert vm.reads_to_tell == {}  # her other devices still show them unread
    assert vm.unread_to_remember()["#random"] == Remembered("random", unread=frozenset({1, 3}))
    assert vm.history_loaded("#random", page, more=False) == set()  # again: counted once
    vm.select("#random")
    assert unread_counts(vm) == {}
    assert vm.reads_to_tell == {"#random": 3}


def test_a_page_arriving_while_the_user_is_away_is_read_when_they_come_back() -> None:
    # Her window is not focused when the link drops; what bob wrote meanwhile is replayed,
    # then the catch-up page brings it again.
    vm = logged_in()
    vm.apply(said(1, "bob"), NOW)  # seen
    vm.set_focus(False)
    vm.apply(LinkState(connected=False, reason="reset", retry_in=1.0), NOW)
    vm.apply(LinkState(connected=True), NOW)
    for message_id in (2, 3, 4):
        vm.apply(said(message_id, "bob"), NOW)
    assert vm.title() == "(3) sealchat — alice"
    page = [said(n, "bob") for n in range(1, 6)]  # and 5, which the replay did not bring
    assert Change.TITLE not in vm.history_loaded("#general", page, more=False)
    assert vm.title() == "(3) sealchat — alice"
    assert vm.conversation("#general").read_up_to == 1
    assert vm.reads_to_tell == {"#general": 1}  # nothing she has not seen
    vm.set_focus(True)
    assert vm.title() == "sealchat — alice"
    assert vm.reads_to_tell == {"#general": 5}


def test_a_login_while_the_user_is_away_reads_nothing_until_they_come_back() -> None:
    vm = ViewModel()
    vm.restore_unread({"#general": Remembered("general", 2, frozenset({4}))})
    vm.set_focus(False)  # she went to another window while it connected
    vm.logged_in("alice")
    vm.select(vm.current)  # as the window shows it at login
    page = [said(n, "bob") for n in range(1, 6)]
    vm.history_loaded("#general", page, more=False)
    assert vm.conversation("#general").read_up_to == 2
    assert vm.reads_to_tell == {}
    assert vm.unread_to_remember()["#general"] == Remembered("general", 2, frozenset({3, 4, 5}))
    vm.set_focus(True)
    assert vm.reads_to_tell == {"#general": 5}
    assert vm.unread_to_remember()["#general"] == Remembered("general", 5)


def test_a_room_left_elsewhere_while_the_user_is_away_reads_nothing_of_general() -> None:
    vm = logged_in()
    vm.apply(RoomJoined(room="random"), NOW)
    vm.select("#random")
    vm.set_focus(False)
    vm.apply(said(1, "bob"), NOW)
    vm.apply(RoomLeft(room="random"), NOW)  # left on her phone: #general is shown instead
    assert vm.current == "#general"
    assert unread_counts(vm) == {"#general": 1}
    assert vm.reads_to_tell == {}
    assert Change.CONVERSATIONS in vm.set_focus(True)  # the sidebar's "(1)" goes
    assert unread_counts(vm) == {}
    assert vm.reads_to_tell == {"#general": 1}


def test_history_when_scrolling_up_is_prepended_and_says_whether_there_is_more() -> None:
    vm = logged_in()
    vm.apply(said(10, "bob"), NOW)
    vm.apply(said(11, "carol"), NOW)
    general = vm.conversation("#general")
    assert general.more_history
    assert general.oldest == 10
    assert not general.first_page_loaded  # live messages are not all there is
    vm.updates.clear()

    older = [said(i, "dave") for i in range(6, 10)]
    changes = vm.history_loaded("#general", older, more=True)
    assert changes == {Change.TRANSCRIPT}
    assert general.first_page_loaded
    # Inserted above what is shown (not redrawn), so the view can stay where it is.
    first_of_day = [
        TranscriptUpdate(older[0], 0),
        TranscriptUpdate(DayBreak(older[0].ts), 0),
        TranscriptUpdate(index=2, removed=True),  # 10's separator: 6 starts the day
    ]
    assert vm.updates == first_of_day + [TranscriptUpdate(m, n) for n, m in enumerate(older[1:], 2)]
    assert ids(vm) == [6, 7, 8, 9, 10, 11]
    assert general.oldest == 6
    assert general.more_history
    assert general.unread == 0

    vm.updates.clear()
    changes = vm.history_loaded("#general", [said(5, "dave"), said(6, "dave")], more=False)
    assert ids(vm) == [5, 6, 7, 8, 9, 10, 11]
    assert not general.more_history
    assert changes == {Change.TRANSCRIPT}
    assert vm.updates == [
        TranscriptUpdate(said(5, "dave"), 0),
        TranscriptUpdate(DayBreak(NOW + 5), 0),
        TranscriptUpdate(index=2, removed=True),
    ]
    assert vm.history_loaded("#general", [said(5, "dave")], more=False) == set()


def test_a_dropped_link_marks_what_may_be_missing_after_the_newest_message_shown() -> None:
    vm = logged_in()
    vm.apply(RoomJoined(room="dev"), NOW)
    vm.apply(said(5, "bob"), NOW)
    vm.history_loaded("#random", [], more=False)  # known to be empty
    lost = LinkState(connected=False, reason="reset", retry_in=1.0)
    vm.apply(lost, NOW)
    assert vm.conversation("#general").missing_after == 5
    assert vm.conversation("#random").missing_after == 0
    assert vm.conversation("#dev").missing_after is None  # its first page is the newest
    vm.apply(LinkState(connected=True), NOW)
    vm.apply(said(9, "bob"), NOW)
    vm.apply(lost, NOW)  # again, before it was fetched: still from the first drop on
    assert vm.conversation("#general").missing_after == 5
    vm.caught_up("#general")
    assert vm.conversation("#general").missing_after is None
    vm.caught_up("#gone")  # a room left meanwhile: nothing to do, and it does not come back
    assert "#gone" not in vm.conversations


def test_a_page_filling_a_gap_says_nothing_of_older_messages() -> None:
    vm = logged_in()
    general = vm.conversation("#general")
    vm.history_loaded("#general", [said(4, "bob"), said(5, "bob")], more=False)
    assert (general.first_page_loaded, general.more_history) == (True, False)
    vm.history_loaded("#general", [said(8, "bob"), said(9, "bob")], more=True)
    vm.history_loaded("#general", [said(6, "bob"), said(7, "bob")], more=True)
    assert ids(vm) == [4, 5, 6, 7, 8, 9]
    assert not general.more_history  # nothing before 4, as the first page said

    vm.apply(said(20, "bob", room="dev"), NOW)  # live only: its first page is still due
    dev = vm.conversation("#dev")
    vm.history_loaded("#dev", [said(22, "bob", room="dev")], more=True)
    assert not dev.first_page_loaded
    vm.history_loaded("#dev", [said(19, "bob", room="dev"), said(21, "bob", room="dev")], True)
    assert (dev.first_page_loaded, dev.more_history) == (True, True)
    assert dev.ids == [19, 20, 21, 22]


def test_history_of_a_conversation_not_shown_redraws_nothing() -> None:
    vm = logged_in()
    vm.updates.clear()
    changes = vm.history_loaded("#random", [said(1, "bob", room="random")], more=False)
    assert changes == {Change.CONVERSATIONS}  # its unread count, not the transcript
    assert vm.updates == []
    assert vm.conversation("#random").ids == [1]
    assert vm.conversation("#random").unread == 1
    assert vm.history_loaded("#general", [], more=False) == set()
    assert not vm.conversation("#general").more_history
    assert vm.apply(HistoryEnd(room="general", more=False), NOW) == set()


def on(day: int, hour: int, minute: int = 0) -> float:
    """The time of ``hour``:``minute`` (local time) on ``day`` November 2026."""
    return datetime(2026, 11, day, hour, minute).timestamp()


def test_each_day_starts_under_a_separator_of_its_own() -> None:
    vm = logged_in()
    times = [on(20, 9), on(20, 23, 59), on(21, 0, 0), on(23, 12), on(23, 18)]
    for n, ts in enumerate(times, 1):
        vm.apply(said(n, "bob", ts=ts), NOW)
    m1, m2, m3, m4, m5 = vm.current_messages()
    assert vm.current_rows() == [
        DayBreak(on(20, 9)),
        m1,
        m2,
        DayBreak(on(21, 0, 0)),
        m3,
        DayBreak(on(23, 12)),
        m4,
        m5,
    ]
    assert drawn([], vm.updates) == vm.current_rows()


def test_an_older_page_above_moves_its_days_separators_to_their_first_messages() -> None:
    vm = logged_in()
    vm.apply(said(30, "bob", ts=on(22, 21)), NOW)  # live: late yesterday, then today
    vm.apply(said(31, "bob", ts=on(23, 8)), NOW)
    before = vm.current_rows()
    assert [type(row) for row in before] == [DayBreak, Message, DayBreak, Message]
    vm.updates.clear()

    page = [said(n, "carol", ts=ts) for n, ts in ((27, on(19, 10)), (28, on(22, 9)))]
    vm.history_loaded("#general", page, more=True)
    rows = vm.current_rows()
    assert drawn(before, vm.updates) == rows
    assert rows == [
        DayBreak(on(19, 10)),
        page[0],
        DayBreak(on(22, 9)),  # 30's went: 28 is the first of that day now
        page[1],
        before[1],
        before[2],
        before[3],
    ]

    before = rows
    vm.updates.clear()
    page = [said(n, "dave", ts=ts) for n, ts in ((25, on(19, 8)), (26, on(19, 9)))]
    vm.history_loaded("#general", page, more=False)
    assert drawn(before, vm.updates) == vm.current_rows()
    assert vm.current_rows()[:4] == [DayBreak(on(19, 8)), *page, before[1]]
    assert sum(isinstance(row, DayBreak) for row in vm.current_rows()) == 3


def test_a_message_on_a_new_day_comes_under_its_separator() -> None:
    vm = logged_in()
    vm.apply(said(1, "bob", ts=on(22, 23, 50)), NOW)
    vm.apply(said(2, "bob", ts=on(22, 23, 55)), NOW)
    vm.updates.clear()
    vm.apply(said(3, "bob", ts=on(23, 0, 5)), NOW)
    assert vm.updates == [
        TranscriptUpdate(said(3, "bob", ts=on(23, 0, 5)), 3),
        TranscriptUpdate(DayBreak(on(23, 0, 5)), 3),
    ]
    vm.updates.clear()
    vm.apply(said(4, "alice", ts=on(23, 0, 6)), NOW)
    assert vm.updates == [TranscriptUpdate(said(4, "alice", ts=on(23, 0, 6)), 5)]


def test_a_message_between_two_days_takes_the_separator_of_its_own() -> None:
    vm = logged_in()
    vm.apply(said(1, "bob", ts=on(22, 12)), NOW)
    vm.apply(said(3, "bob", ts=on(23, 12)), NOW)
    before = vm.current_rows()
    vm.updates.clear()
    vm.apply(said(2, "bob", ts=on(23, 9)), NOW)  # replayed late: the first of the 23rd
    assert drawn(before, vm.updates) == vm.current_rows()
    assert [row.ts for row in vm.current_rows() if isinstance(row, DayBreak)] == [
        on(22, 12),
        on(23, 9),
    ]


def test_a_message_of_unknown_time_has_no_day_and_splits_none() -> None:
    vm = logged_in()
    for n, ts in ((1, on(22, 9)), (2, 0.0), (3, on(22, 10)), (4, 0.0), (5, on(23, 9))):
        vm.apply(said(n, "bob", ts=ts), NOW)
    m1, m2, m3, m4, m5 = vm.current_messages()
    assert vm.current_rows() == [DayBreak(on(22, 9)), m1, m2, m3, m4, DayBreak(on(23, 9)), m5]
    assert drawn([], vm.updates) == vm.current_rows()

    vm = logged_in()
    vm.apply(said(2, "bob", ts=0.0), NOW)
    assert vm.current_rows() == [said(2, "bob", ts=0.0)]
    before = vm.current_rows()
    vm.updates.clear()
    vm.history_loaded("#general", [said(1, "bob", ts=on(22, 9))], more=False)
    vm.apply(said(3, "bob", ts=on(22, 10)), NOW)  # the same day as 1, past 2
    assert drawn(before, vm.updates) == vm.current_rows()
    assert vm.current_rows() == [DayBreak(on(22, 9)), *vm.current_messages()]


def test_a_conversation_not_shown_has_its_days_when_it_is() -> None:
    vm = logged_in()
    vm.apply(RoomJoined(room="random"), NOW)
    for n, ts in ((2, on(22, 9)), (1, on(21, 9)), (3, on(22, 10))):
        vm.apply(said(n, "bob", room="random", ts=ts), NOW)
    vm.updates.clear()
    vm.select("#random")
    assert vm.updates == [TranscriptUpdate(redraw=True)]
    m1, m2, m3 = vm.current_messages()
    assert vm.current_rows() == [DayBreak(on(21, 9)), m1, DayBreak(on(22, 9)), m2, m3]


def test_file_announcements_are_found_by_message_id() -> None:
    vm = logged_in()
    info = FileInfo(file_id="f1", name="notes.txt", size=12, sha256=bytes(32))
    vm.apply(
        Message(room="general", id=3, sender="bob", ts=NOW, file=info),
        NOW,
    )
    assert vm.file_of(3) == info
    assert vm.file_of(4) is None


# --- typing ---------------------------------------------------------------------------------


def test_typing_text_for_one_two_and_three_people() -> None:
    vm = logged_in("dave")
    assert vm.typing_text(NOW) == ""
    assert vm.apply(Typing(room="general", user="carol"), NOW) == {Change.TYPING}
    assert vm.typing_text(NOW) == "carol is typing…"
    vm.apply(Typing(room="general", user="alice"), NOW)
    assert vm.typing_text(NOW) == "alice and carol are typing…"
    vm.apply(Typing(room="general", user="bob"), NOW)
    assert vm.typing_text(NOW) == "alice, bob and carol are typing…"
    vm.apply(Typing(room="general", user="bob", active=False), NOW)
    assert vm.typing_text(NOW) == "alice and carol are typing…"


def test_names_in_the_typing_line_and_the_title_show_hidden_characters_escaped() -> None:
    # Names are only length-checked on the wire: a server could send any characters.
    vm = logged_in("ali\u202ece")
    assert vm.title() == "sealchat — ali\\u202ece"
    vm.apply(Typing(room="general", user="bob\u2028carol: hi"), NOW)
    vm.apply(Typing(room="general", user="dave\x1b[2J"), NOW)
    assert vm.typing_text(NOW) == "bob\\u2028carol: hi and dave\\x1b[2J are typing…"


def test_typing_expires_after_the_last_refresh() -> None:
    vm = logged_in("dave")
    vm.apply(Typing(room="general", user="alice"), NOW)
    assert vm.typing_text(NOW + TYPING_SHOWN_FOR - 0.1) == "alice is typing…"
    assert vm.typing_text(NOW + TYPING_SHOWN_FOR) == ""
    vm.apply(Typing(room="general", user="alice"), NOW + 3)  # a refresh extends it
    assert vm.typing_text(NOW + TYPING_SHOWN_FOR + 1) == "alice is typing…"
    assert vm.expire_typing(NOW + TYPING_SHOWN_FOR + 1) == set()
    assert vm.expire_typing(NOW + 3 + TYPING_SHOWN_FOR) == {Change.TYPING}
    assert vm.typing_text(NOW) == ""  # gone, not merely hidden
    assert vm.expire_typing(NOW + 100) == set()


def test_typing_stays_until_the_typist_stops() -> None:
    vm = logged_in("dave")
    vm.apply(Typing(room="general", user="alice"), NOW)
    # The server relays no refreshes while alice keeps typing: only her start, then her stop.
    assert vm.expire_typing(NOW + 60) == set()
    assert vm.typing_text(NOW + 60) == "alice is typing…"
    assert vm.apply(Typing(room="general", user="alice", active=False), NOW + 61) == {Change.TYPING}
    assert vm.typing_text(NOW + 61) == ""


def test_a_lost_connection_ends_everyone_typing() -> None:
    vm = logged_in("dave")
    vm.apply(Typing(room="general", user="alice"), NOW)
    vm.apply(Typing(to="dave", user="bob"), NOW)
    changes = vm.apply(LinkState(connected=False, reason="reset", retry_in=1.0), NOW)
    assert Change.TYPING in changes  # their stops cannot reach us any more
    assert vm.typing_text(NOW) == ""
    vm.open_direct("bob")
    assert vm.typing_text(NOW) == ""


def test_a_message_from_someone_clears_their_typing() -> None:
    vm = logged_in("dave")
    vm.apply(Typing(room="general", user="alice"), NOW)
    vm.apply(Typing(room="general", user="bob"), NOW)
    changes = vm.apply(said(1, "alice", "done typing"), NOW)
    assert Change.TYPING in changes
    assert vm.typing_text(NOW) == "bob is typing…"


def test_typing_is_shown_only_in_its_own_conversation() -> None:
    vm = logged_in("dave")
    vm.apply(RoomJoined(room="random"), NOW)
    vm.apply(Typing(room="random", user="alice"), NOW)
    vm.apply(Typing(to="dave", user="bob"), NOW)
    assert vm.typing_text(NOW) == ""
    vm.select("#random")
    assert vm.typing_text(NOW) == "alice is typing…"
    vm.open_direct("bob")
    assert vm.typing_text(NOW) == "bob is typing…"


def test_someone_going_offline_stops_their_typing() -> None:
    vm = logged_in("dave")
    vm.apply(Typing(room="general", user="alice"), NOW)
    changes = vm.apply(Presence(user="alice", online=False), NOW)
    assert Change.TYPING in changes
    assert vm.typing_text(NOW) == ""


# --- people and presence --------------------------------------------------------------------


def test_online_users_and_presence() -> None:
    vm = logged_in("alice")
    assert vm.apply(OnlineUsers(users=["bob", "carol"]), NOW) == {Change.PEOPLE}
    assert vm.online == {"bob", "carol"}
    assert Change.PEOPLE in vm.apply(Presence(user="dave", online=True), NOW)
    assert Change.PEOPLE in vm.apply(Presence(user="bob", online=False), NOW)
    assert vm.online == {"carol", "dave"}


def test_who_is_online_is_listed_afresh_after_each_login() -> None:
    vm = logged_in("alice")
    vm.apply(OnlineUsers(users=["alice", "bob", "carol"]), NOW)
    vm.apply(LinkState(connected=False, reason="reset", retry_in=1.0), NOW)
    vm.apply(LinkState(connected=True), NOW)
    # bob left while the connection was down: the list after the new login no longer has him.
    vm.apply(OnlineUsers(users=["alice", "carol"], more=True), NOW)
    vm.apply(OnlineUsers(users=["dave"]), NOW)  # a long list comes in several records
    assert vm.online == {"alice", "carol", "dave"}


def test_while_the_link_is_down_nobody_is_shown_online() -> None:
    vm = logged_in("alice")
    vm.set_members("general", [MemberInfo(name=n, online=True) for n in ("alice", "bob")])
    vm.apply(OnlineUsers(users=["alice", "bob"]), NOW)
    vm.open_direct("bob")
    vm.select(room_key("general"))
    changes = vm.apply(LinkState(connected=False, reason="reset", retry_in=1.0), NOW)
    assert Change.PEOPLE in changes
    assert [m.online for m in vm.people_in_current()] == [False, False]  # unknown: not online
    vm.open_direct("bob")
    assert vm.people_in_current() == [MemberInfo(name="bob", online=False)]
    vm.select(room_key("general"))

    assert Change.PEOPLE in vm.apply(LinkState(connected=True), NOW)
    vm.apply(OnlineUsers(users=["alice"]), NOW)  # the new login's list: bob left meanwhile
    assert [(m.name, m.online) for m in vm.people_in_current()] == [
        ("alice", True),
        ("bob", False),
    ]


def test_people_in_the_current_room_with_presence() -> None:
    vm = logged_in("alice")
    changes = vm.set_members(
        "general",
        [
            MemberInfo(name="carol", online=False),
            MemberInfo(name="Bob", online=True),
            MemberInfo(name="alice", online=False),
        ],
    )
    assert changes == {Change.PEOPLE}
    assert vm.people_in_current() == [
        MemberInfo(name="alice", online=True),  # me: always online
        MemberInfo(name="Bob", online=True),
        MemberInfo(name="carol", online=False),
    ]
    vm.apply(Presence(user="carol", online=True), NOW)
    vm.apply(Presence(user="Bob", online=False), NOW)
    assert vm.people_in_current() == [
        MemberInfo(name="alice", online=True),
        MemberInfo(name="Bob", online=False),
        MemberInfo(name="carol", online=True),
    ]
    assert vm.apply(Membership(room="general", user="dave", joined=True), NOW) == {Change.PEOPLE}
    assert [m.name for m in vm.people_in_current()] == ["alice", "Bob", "carol", "dave"]
    vm.apply(Membership(room="general", user="carol", joined=False), NOW)
    assert [m.name for m in vm.people_in_current()] == ["alice", "Bob", "dave"]
    vm.apply(Membership(room="random", user="carol", joined=True), NOW)
    assert [m.name for m in vm.people_in_current()] == ["alice", "Bob", "dave"]


def test_people_in_a_direct_conversation_is_the_peer() -> None:
    vm = logged_in("alice")
    vm.open_direct("bob")
    assert vm.people_in_current() == [MemberInfo(name="bob", online=False)]
    vm.apply(Presence(user="bob", online=True), NOW)
    assert vm.people_in_current() == [MemberInfo(name="bob", online=True)]


# --- the connection banner and errors -------------------------------------------------------


def test_the_reconnect_banner_says_that_messages_typed_meanwhile_wait_to_go() -> None:
    # A message typed while the link is down left the box and showed nowhere: it seemed lost.
    vm = logged_in()
    vm.apply(LinkState(connected=False, reason="reset", retry_in=4.2), NOW)
    vm.sending("c1", "are you there?")
    vm.sending("c2", "hello?")
    assert vm.count_down(NOW + 0.1) == {Change.BANNER}
    assert vm.banner == "Connection lost — reconnecting in 4 s… (2 messages waiting to be sent)"
    vm.apply(MessageAck(client_id="c1", id=7, ts=NOW), NOW)
    vm.count_down(NOW + 0.2)
    assert vm.banner == "Connection lost — reconnecting in 4 s… (1 message waiting to be sent)"


def test_reconnect_banner_for_reconnecting_and_disconnected_cleared_on_reconnect() -> None:
    vm = logged_in()
    assert vm.banner == ""
    changes = vm.apply(LinkState(connected=False, reason="reset", retry_in=4.2), NOW)
    assert Change.BANNER in changes
    assert vm.banner == "Connection lost — reconnecting in 4 s…"
    vm.apply(LinkState(connected=False, reason="the server shut down"), NOW)
    assert vm.banner == "Disconnected: the server shut down"
    assert vm.apply(LinkState(connected=True), NOW) == {Change.BANNER, Change.PEOPLE}
    assert vm.banner == ""


def test_the_reconnect_banner_counts_down_to_the_next_try() -> None:
    # It said "reconnecting in 17 s" for all of those 17 s, and while the try was made.
    vm = logged_in()
    vm.apply(LinkState(connected=False, reason="reset", retry_in=4.2), NOW)
    assert vm.count_down(NOW + 0.1) == set()
    assert vm.count_down(NOW + 1.5) == {Change.BANNER}
    assert vm.banner == "Connection lost — reconnecting in 3 s…"
    vm.count_down(NOW + 4.0)
    assert vm.banner == "Connection lost — reconnecting…"
    vm.apply(LinkState(connected=True), NOW + 5)
    assert (vm.count_down(NOW + 6), vm.banner) == (set(), "")


def test_an_error_saying_the_connection_was_lost_goes_when_it_is_back() -> None:
    vm = logged_in()
    vm.apply(LinkState(connected=False, reason="reset", retry_in=1.0), NOW)
    assert vm.failed("the connection was lost", link_lost=True) == {Change.ERROR}
    assert vm.apply(LinkState(connected=True), NOW) == {
        Change.BANNER,
        Change.ERROR,
        Change.PEOPLE,
    }
    assert vm.error == ""

    vm.failed("the connection was lost", link_lost=True)
    vm.failed("no such room")  # a later error, not about the link: it stays
    vm.apply(LinkState(connected=True), NOW)
    assert vm.error == "no such room"


def _busy_session(theme: str) -> ViewModel:
    """Alice logged in with a room joined, a direct message, people online and a typist."""
    vm = logged_in("alice", theme=theme)
    vm.apply(RoomJoined(room="random"), NOW)
    vm.apply(said(1, "bob", to="alice"), NOW)
    vm.apply(OnlineUsers(users=["alice", "bob"]), NOW)
    vm.apply(Typing(room="general", user="bob"), NOW)
    return vm


def test_a_session_ended_for_good_leaves_nothing_of_it_but_the_transfers() -> None:
    vm = _busy_session(theme="light")
    vm.select("#random")
    upload = vm.start_transfer("notes.txt", upload=True)
    vm.apply(LinkState(connected=False, reason="the server's key changed"), NOW)
    changes = vm.logged_out()
    assert {Change.TITLE, Change.CONVERSATIONS, Change.TRANSCRIPT, Change.BANNER} <= changes
    assert (vm.me, vm.title(), vm.banner, vm.online) == ("", "sealchat", "", set())
    assert [c.key for c in vm.sorted_conversations()] == ["#general"]
    assert vm.current == "#general"
    assert vm.current_messages() == []
    assert vm.updates[-1] == TranscriptUpdate(redraw=True)
    assert vm.typing_text(NOW) == ""
    assert (vm.theme, vm.transfers) == ("light", {upload.id: upload})


def test_logging_out_leaves_nothing_for_the_next_user_but_the_theme() -> None:
    vm = _busy_session(theme="light")
    vm.failed("Slow down")
    running = vm.start_transfer("notes.txt", upload=True)
    finished = vm.start_transfer("photo.png", upload=False)
    vm.transfer_finished(finished.id, TransferState.DONE, "/home/alice/photo.png")
    vm.sending("c1", "never stored")
    changes = vm.logged_out(by_user=True)
    assert {Change.CONVERSATIONS, Change.TRANSFERS, Change.ERROR, Change.TYPING} <= changes
    assert (vm.me, vm.title(), vm.error, vm.online, vm.theme) == (
        "",
        "sealchat",
        "",
        set(),
        "light",
    )
    assert [c.key for c in vm.sorted_conversations()] == ["#general"]
    assert (vm.transfers, vm.returned, vm.unconfirmed) == ({}, [], {})
    # The cancelled transfer's task ends after the logout: nothing to redraw.
    assert vm.transfer_progress(running.id, 10, 100) == set()
    assert vm.transfer_finished(running.id, TransferState.CANCELLED) == set()
    assert vm.transfers == {}


def test_logging_out_asks_first_if_it_would_stop_transfers_or_lose_messages() -> None:
    vm = logged_in()
    assert vm.logout_warning() == ""
    upload = vm.start_transfer("notes.txt", upload=True)
    assert vm.logout_warning() == (
        "If you log out now, 1 file transfer still running will be stopped. Log out anyway?"
    )
    vm.start_transfer("photo.png", upload=False)
    vm.sending("c1", "hello")
    assert vm.logout_warning() == (
        "If you log out now, 2 file transfers still running will be stopped and 1 message not "
        "yet received by the server will be lost. Log out anyway?"
    )
    vm.apply(MessageAck(client_id="c1", id=7, ts=NOW), NOW)
    vm.transfer_finished(upload.id, TransferState.DONE)
    assert vm.logout_warning().startswith("If you log out now, 1 file transfer still running")


def test_a_refused_message_goes_back_to_the_input_box_with_the_reason() -> None:
    vm = logged_in()
    vm.sending("c1", "first")
    vm.sending("c2", "second")
    vm.apply(MessageAck(client_id="c1", id=7, ts=NOW), NOW)  # stored: never given back
    changes = vm.apply(Error(code="rate-limited", detail="slow down", ref="c2"), NOW)
    assert changes == {Change.ERROR, Change.INPUT}
    assert vm.returned == ["second"]
    assert vm.error == "Slow down (your message is back in the input box)"
    assert vm.unconfirmed == {}


def test_messages_never_stored_go_back_to_the_input_box_when_the_session_ends() -> None:
    vm = logged_in()
    vm.sending("c1", "stored")
    vm.sending("c2", "never stored")
    vm.sending("c3", "nor this")
    vm.apply(MessageAck(client_id="c1", id=7, ts=NOW), NOW)
    assert Change.INPUT in vm.logged_out()
    assert vm.returned == ["never stored", "nor this"]


def test_a_send_that_fails_after_the_session_ended_gives_the_text_back_once() -> None:
    vm = logged_in()
    vm.sending("c1", "hello")
    vm.logged_out()  # the session ended before the send task ran: its text is back already
    assert vm.not_sent("c1", "not connected") == {Change.ERROR}
    assert vm.returned == ["hello"]
    assert vm.error == "Not connected"


def test_an_error_about_something_else_gives_nothing_back() -> None:
    vm = logged_in()
    vm.sending("c1", "hello")
    assert vm.apply(Error(code="not-member", detail="no", ref="#secret"), NOW) == {Change.ERROR}
    assert (vm.returned, vm.unconfirmed) == ([], {"c1": "hello"})


@pytest.mark.parametrize(
    ("room", "problem"),
    [
        ("dev", ""),
        ("my.room_2-b", ""),
        ("r" * 65, "This room name has 65 characters; at most 64 are allowed. Shorten it."),
        *(
            (
                bad,
                "A room name is up to 64 letters (a to z), digits, '.', '_' or '-', starting "
                "with a letter or digit.",
            )
            for bad in ("bad room!", "-dev", "caf\u00e9", "")
        ),
    ],
)
def test_a_bad_room_name_is_explained_without_blaming_its_case(room: str, problem: str) -> None:
    assert room_name_problem(room) == problem


def test_error_records_are_shown() -> None:
    vm = logged_in()
    changes = vm.apply(Error(code="not-member", detail="you are not in #secret"), NOW)
    assert changes == {Change.ERROR}
    assert vm.error == "You are not in #secret"
    vm.apply(Error(code="rate-limited"), NOW)
    assert vm.error == "Rate-limited"


def test_a_refused_password_change_is_said_in_its_dialog_not_on_the_window() -> None:
    vm = logged_in()
    refusal = Error(code="bad_password", detail="the current password is wrong", ref=PASSWORD_REF)
    assert vm.apply(refusal, NOW) == set()  # the dialog says it (its call raised)
    assert vm.error == ""


def test_a_refused_typing_notice_is_no_error_to_show() -> None:
    vm = logged_in()
    vm.sending("c1", "hello")
    refusal = Error(code="not_member", detail="join dev first", ref=TYPING_REF)
    assert vm.apply(refusal, NOW) == set()  # typing notices are best effort
    assert (vm.error, vm.returned, vm.unconfirmed) == ("", [], {"c1": "hello"})


def test_a_request_about_a_room_refused_as_not_a_members_is_not_shown_but_a_message_is() -> None:
    # A page or the members of a room asked for as it was shown, answered after it was
    # left: the controller shows a page refused for a room still in the sidebar.
    vm = logged_in()
    vm.sending("c1", "hello")
    for refusal in (
        Error(code="not_member", detail="join dev first", ref=HISTORY_REF),
        Error(code="not_member", detail="you are not in dev", ref="dev"),
    ):
        assert vm.apply(refusal, NOW) == set()
    assert vm.error == ""
    changes = vm.apply(Error(code="not_member", detail="join dev first", ref="c1"), NOW)
    assert changes == {Change.ERROR, Change.INPUT}
    assert vm.returned == ["hello"]


def test_a_message_too_long_for_the_protocol_is_refused_saying_why() -> None:
    vm = logged_in()
    assert vm.fits("y" * MAX_TEXT)
    assert vm.error == ""
    assert not vm.fits("y" * (MAX_TEXT + 1))
    assert vm.error.startswith(f"This message has {MAX_TEXT + 1} characters; at most {MAX_TEXT}")


def test_a_message_too_long_for_the_server_is_refused_saying_its_limit() -> None:
    vm = logged_in()
    assert vm.fits("\u00e9" * 100, 100)  # characters, as the server counts them
    assert vm.error == ""
    assert not vm.fits("y" * 101, 100)
    assert vm.error == (
        "This message has 101 characters; at most 100 fit in one message. Shorten it, or send "
        "it as a file."
    )
    assert not vm.fits("y" * (MAX_TEXT + 1), MAX_TEXT * 2)  # never beyond the protocol's
    assert f"at most {MAX_TEXT} fit" in vm.error


def test_an_error_goes_away_when_the_user_acts_again() -> None:
    vm = logged_in()
    vm.apply(Error(code="too_long", detail="the message is too long"), NOW)
    assert vm.dismiss_error() == {Change.ERROR}
    assert vm.error == ""
    assert vm.dismiss_error() == set()


def test_unknown_events_change_nothing() -> None:
    vm = logged_in()
    assert vm.apply(object(), NOW) == set()


# --- notifications while the window is not focused ------------------------------------------


def test_title_counts_messages_replayed_after_live_ones_while_unfocused() -> None:
    vm = logged_in("alice")
    vm.apply(said(3, "bob"), NOW)  # seen
    vm.set_focus(False)
    vm.apply(said(9, "bob"), NOW)  # live, in the conversation shown
    vm.apply(said(5, "carol"), NOW)  # replayed after it
    vm.apply(said(6, "bob", room="random"), NOW)
    vm.apply(said(4, "bob", room="random"), NOW)
    assert vm.missed_while_away == 4
    vm.set_focus(True)
    vm.set_focus(False)
    vm.apply(said(8, "dave"), NOW)  # older than what was seen on coming back
    assert vm.missed_while_away == 0


def test_title_counts_messages_missed_while_unfocused_and_resets_on_focus() -> None:
    vm = logged_in("alice")
    vm.apply(RoomJoined(room="random"), NOW)
    assert vm.set_focus(False) == set()
    changes = vm.apply(said(1, "bob"), NOW)  # in the room shown
    assert Change.TITLE in changes
    vm.apply(said(2, "carol", room="random"), NOW)
    vm.apply(said(3, "bob", to="alice"), NOW)
    vm.apply(said(4, "alice"), NOW)  # my own (from another device): not missed
    vm.apply(said(3, "bob", to="alice"), NOW)  # a duplicate: not missed twice
    assert vm.missed_while_away == 3
    assert vm.title() == "(3) sealchat — alice"
    assert vm.set_focus(True) == {Change.TITLE}
    assert vm.missed_while_away == 0
    assert vm.title() == "sealchat — alice"
    assert vm.set_focus(True) == set()


def test_title_stops_counting_a_room_left_on_another_device_while_unfocused() -> None:
    vm = logged_in("alice")
    vm.apply(RoomJoined(room="random"), NOW)
    vm.set_focus(False)
    vm.apply(said(2, "carol", room="random"), NOW)
    vm.apply(said(3, "bob", to="alice"), NOW)
    assert vm.title() == "(2) sealchat — alice"
    assert Change.TITLE in vm.apply(RoomLeft(room="random"), NOW)  # left on her phone
    assert vm.missed_while_away == 1
    assert vm.title() == "(1) sealchat — alice"


def test_what_the_replay_brings_rings_no_bell_as_another_device_may_have_read_it() -> None:
    # The replay brings what this device missed, also what the phone read meanwhile: its
    # read markers come after the replay. The bell rang for messages already read.
    vm = logged_in("alice")
    vm.set_focus(False)
    for message in (said(1, "bob"), said(2, "carol")):
        changes = vm.apply(message, NOW)
        assert Change.BELL not in changes
        assert Change.TITLE in changes
    vm.apply(HistoryEnd(more=False), NOW)
    vm.apply(ReadMarkers(markers=[ReadUpTo(up_to=2, room="general")]), NOW)
    assert vm.title() == "sealchat — alice"
    assert Change.BELL in vm.apply(said(3, "bob"), NOW)  # caught up: a new one rings
    vm.apply(LinkState(connected=False, retry_in=1.0, reason="reset"), NOW)
    assert Change.BELL not in vm.apply(said(4, "bob"), NOW)  # the reconnect's replay


def test_no_title_change_for_messages_while_focused() -> None:
    vm = logged_in("alice")
    changes = vm.apply(said(1, "bob"), NOW)
    assert Change.TITLE not in changes
    assert Change.BELL not in changes
    assert vm.missed_while_away == 0


def test_the_bell_rings_for_each_message_missed_and_never_as_the_count_goes_down() -> None:
    vm = logged_in("alice")
    vm.apply(RoomJoined(room="random"), NOW)
    vm.apply(HistoryEnd(more=False), NOW)  # the login's replay has ended
    vm.set_focus(False)
    for message in (said(1, "bob"), said(2, "carol", room="random"), said(3, "bob", to="alice")):
        assert Change.BELL in vm.apply(message, NOW)
    for not_new in (said(3, "bob", to="alice"), said(4, "alice")):  # a duplicate, her own
        assert Change.BELL not in vm.apply(not_new, NOW)
    assert vm.title() == "(3) sealchat — alice"
    read_on_her_phone = vm.apply(ReadUpTo(up_to=3, peer="bob"), NOW)
    assert read_on_her_phone == {Change.CONVERSATIONS, Change.TITLE}  # no bell
    left_on_her_phone = vm.apply(RoomLeft(room="random"), NOW)
    assert Change.TITLE in left_on_her_phone
    assert Change.BELL not in left_on_her_phone
    assert vm.title() == "(1) sealchat — alice"
    assert Change.BELL not in vm.set_focus(True)


# --- read on the user's other devices ---------------------------------------------------------


def unread_counts(vm: ViewModel) -> dict[str, int]:
    return {c.key: c.unread for c in vm.sorted_conversations() if c.unread}


def test_a_conversation_read_on_another_device_is_read_here_in_the_sidebar_and_title() -> None:
    vm = logged_in("alice")
    vm.apply(RoomJoined(room="random"), NOW)
    vm.set_focus(False)
    for message in (said(2, "bob", room="random"), said(3, "carol", room="random")):
        vm.apply(message, NOW)
    vm.apply(said(4, "bob", to="alice"), NOW)
    vm.apply(said(5, "bob", room="random"), NOW)
    assert unread_counts(vm) == {"#random": 3, "@bob": 1}
    assert vm.title() == "(4) sealchat — alice"
    vm.unread_changed = False  # saved
    changes = vm.apply(ReadUpTo(up_to=3, room="random"), NOW)
    assert changes == {Change.CONVERSATIONS, Change.TITLE}
    assert unread_counts(vm) == {"#random": 1, "@bob": 1}
    assert vm.title() == "(2) sealchat — alice"
    assert vm.unread_changed  # to be saved
    assert vm.unread_to_remember()["#random"] == Remembered("random", 3, frozenset({5}))
    vm.apply(ReadUpTo(up_to=4, peer="Bob"), NOW)  # in the server's spelling
    assert unread_counts(vm) == {"#random": 1}
    assert vm.title() == "(1) sealchat — alice"
    assert vm.apply(ReadUpTo(up_to=2, room="random"), NOW) == set()  # lower: nothing changes
    assert unread_counts(vm) == {"#random": 1}
    assert vm.reads_to_tell == {}  # read elsewhere: not told back


def test_the_markers_listed_at_login_count_for_what_is_remembered_replayed_or_comes_later() -> None:
    vm = ViewModel()
    vm.restore_unread({"#random": Remembered("random", 1, frozenset({2, 3}))})
    vm.logged_in("alice")
    assert unread_counts(vm) == {"#random": 2}
    markers = [ReadMarker(up_to=3, room="random"), ReadMarker(up_to=7, peer="Carol")]
    vm.apply(ReadMarkers(markers=markers, more=True), NOW)
    assert unread_counts(vm) == {}
    vm.apply(said(3, "bob", room="random"), NOW)  # replayed: read on another device already
    vm.apply(said(6, "carol", to="alice"), NOW)  # a conversation that appears after its marker
    assert unread_counts(vm) == {}
    vm.apply(said(8, "carol", to="alice"), NOW)
    vm.apply(said(9, "bob", room="random"), NOW)
    assert unread_counts(vm) == {"#random": 1, "@carol": 1}


def test_what_is_read_here_is_told_once_for_a_replay() -> None:
    vm = logged_in("alice")
    vm.apply(RoomJoined(room="random"), NOW)
    for n in range(1, 51):  # a replay read as it comes, in the conversation shown
        vm.apply(said(n, "bob"), NOW)
    vm.apply(said(51, "bob", room="random"), NOW)
    assert vm.reads_to_tell == {"#general": 50}
    vm.select("#random")
    assert vm.reads_to_tell == {"#general": 50, "#random": 51}


def test_a_room_left_forgets_its_marker_as_the_server_does() -> None:
    vm = logged_in("alice")
    vm.apply(RoomJoined(room="random"), NOW)
    vm.apply(ReadUpTo(up_to=5, room="random"), NOW)
    vm.select("#random")
    vm.apply(said(6, "bob", room="random"), NOW)
    vm.apply(RoomLeft(room="random"), NOW)
    assert vm.reads_to_tell == {}  # the server would refuse it: the room is not hers
    vm.apply(RoomJoined(room="random"), NOW)
    vm.apply(said(4, "bob", room="random"), NOW)  # joined again: nothing read there yet
    assert unread_counts(vm) == {"#random": 1}


def test_a_marker_that_names_no_conversation_changes_nothing() -> None:
    vm = logged_in("alice")
    vm.apply(said(4, "bob", to="alice"), NOW)
    markers = [ReadMarker(up_to=9), ReadMarker(up_to=9, room="general", peer="bob")]
    assert vm.apply(ReadMarkers(markers=markers), NOW) == set()
    assert unread_counts(vm) == {"@bob": 1}
    assert sorted(vm.conversations) == ["#general", "@bob"]


def test_a_refused_read_marker_is_no_error_to_show() -> None:
    vm = logged_in("alice")
    assert vm.apply(Error(code="not_member", detail="join x first", ref=READ_REF), NOW) == set()
    assert vm.error == ""


# --- transfers ------------------------------------------------------------------------------


def test_an_upload_shows_progress_then_done() -> None:
    vm = logged_in()
    upload = vm.start_transfer("notes.txt", upload=True)
    assert vm.transfers[upload.id] is upload
    assert upload.state is TransferState.RUNNING
    assert upload.fraction == 0.0
    assert upload.label == "Sending notes.txt — 0%"
    assert vm.transfer_progress(upload.id, 50, 200) == {Change.TRANSFERS}
    assert upload.fraction == 0.25
    assert upload.label == "Sending notes.txt — 25%"
    assert vm.transfer_finished(upload.id, TransferState.DONE) == {Change.TRANSFERS}
    assert upload.fraction == 1.0
    assert upload.done == 200
    assert upload.label == "Sent notes.txt"


def test_a_download_shows_where_it_was_saved() -> None:
    vm = logged_in()
    download = vm.start_transfer("photo.png", upload=False)
    vm.transfer_progress(download.id, 0, 1000)
    assert download.label == "Receiving photo.png — 0%"
    vm.transfer_finished(download.id, TransferState.DONE, "/home/alice/Downloads/photo.png")
    assert download.fraction == 1.0
    assert download.label == "Saved to /home/alice/Downloads/photo.png"
    assert download.label_parts == ("Saved to /home/alice/Downloads/", "photo.png", "")


@pytest.mark.parametrize(
    ("width", "shown"),
    [
        (99, "Receiving quarterly-report.pdf — 40%"),  # it fits: whole
        (30, "Receiving quarter…rt.pdf — 40%"),  # the name's middle goes, the rest stays
        (20, "Receiving …pdf — 40%"),  # too little of the name would stay: all of it shrinks
        (2, "R…"),
    ],
)
def test_a_label_too_wide_is_shortened_in_the_middle_of_its_file_name(
    width: int, shown: str
) -> None:
    parts = ("Receiving ", "quarterly-report.pdf", " — 40%")
    assert fitted(*parts, lambda text: len(text) <= width) == shown
    assert elided("quarterly-report.pdf", 99) == "quarterly-report.pdf"


def test_a_running_transfer_says_it_waits_while_the_link_is_down() -> None:
    vm = logged_in()
    upload = vm.start_transfer("notes.txt", upload=True)
    vm.transfer_progress(upload.id, 39, 100)
    sent = vm.start_transfer("old.txt", upload=True)
    vm.transfer_finished(sent.id, TransferState.DONE)
    lost = vm.apply(LinkState(connected=False, reason="reset", retry_in=1.0), NOW)
    assert Change.TRANSFERS in lost
    assert upload.label == "Sending notes.txt — 39%, waiting for the connection"
    assert sent.label == "Sent old.txt"
    download = vm.start_transfer("photo.png", upload=False, file_id="f1")
    assert download.label == "Receiving photo.png — 0%, waiting for the connection"
    assert Change.TRANSFERS in vm.apply(LinkState(connected=True), NOW)
    assert upload.label == "Sending notes.txt — 39%"
    assert download.label == "Receiving photo.png — 0%"
    vm.transfer_finished(upload.id, TransferState.DONE)
    vm.transfer_finished(download.id, TransferState.DONE, "/tmp/photo.png")
    assert Change.TRANSFERS not in vm.apply(LinkState(connected=False, retry_in=1.0), NOW)


def test_a_file_is_being_downloaded_until_its_download_ends() -> None:
    vm = logged_in()
    upload = vm.start_transfer("photo.png", upload=True)
    assert not vm.downloading("f1")
    download = vm.start_transfer("photo.png", upload=False, file_id="f1")
    assert vm.downloading("f1")
    assert not vm.downloading("f2")
    vm.transfer_finished(download.id, TransferState.CANCELLED)
    vm.transfer_finished(upload.id, TransferState.DONE)
    assert not vm.downloading("f1")  # it can be downloaded again


def test_failed_and_cancelled_transfers_say_so() -> None:
    vm = logged_in()
    failed = vm.start_transfer("big.iso", upload=True)
    cancelled = vm.start_transfer("other.bin", upload=False)
    assert failed.id != cancelled.id
    vm.transfer_progress(failed.id, 30, 100)
    vm.transfer_finished(failed.id, TransferState.FAILED, "the file is too large")
    assert failed.label == "big.iso: failed (the file is too large)"
    assert failed.fraction == 0.3
    vm.transfer_finished(cancelled.id, TransferState.CANCELLED)
    assert cancelled.label == "other.bin: cancelled"
    assert cancelled.fraction == 0.0


def test_only_a_saved_download_has_a_folder_to_show() -> None:
    vm = logged_in()
    saved, failed, running = (vm.start_transfer(n, upload=False) for n in ("a", "b", "c"))
    sent = vm.start_transfer("d", upload=True)
    vm.transfer_finished(saved.id, TransferState.DONE, "/home/alice/Downloads/sealchat/a")
    vm.transfer_finished(failed.id, TransferState.FAILED, "no such file")
    vm.transfer_finished(sent.id, TransferState.DONE)
    assert saved.saved_to == Path("/home/alice/Downloads/sealchat/a")
    assert (failed.saved_to, running.saved_to, sent.saved_to) == (None, None, None)


def test_only_a_finished_transfer_can_be_dismissed() -> None:
    vm = logged_in()
    running = vm.start_transfer("big.iso", upload=True)
    finished = vm.start_transfer("notes.txt", upload=False)
    vm.transfer_finished(finished.id, TransferState.FAILED, "no such file")
    assert vm.dismiss_transfer(running.id) == set()
    assert vm.dismiss_transfer(finished.id) == {Change.TRANSFERS}
    assert list(vm.transfers) == [running.id]
    assert vm.dismiss_transfer(finished.id) == set()


def test_an_empty_file_is_complete_when_done() -> None:
    vm = logged_in()
    empty = vm.start_transfer("empty", upload=True)
    vm.transfer_progress(empty.id, 0, 0)
    assert empty.fraction == 0.0
    vm.transfer_finished(empty.id, TransferState.DONE)
    assert empty.fraction == 1.0


# --- theme ----------------------------------------------------------------------------------


def test_toggle_theme_switches_between_dark_and_light() -> None:
    vm = ViewModel()
    assert vm.theme == "dark"
    assert vm.toggle_theme() == {Change.THEME}
    assert vm.theme == "light"
    vm.toggle_theme()
    assert vm.theme == "dark"
    assert ViewModel(theme="light").theme == "light"
    assert ViewModel(theme="neon").theme == "dark"


def test_both_palettes_name_the_same_colours() -> None:
    assert set(PALETTES) == {"dark", "light"}
    assert set(PALETTES["dark"]) == set(PALETTES["light"])
    assert PALETTES["light"]["text_bg"] == "#ffffff"
    assert PALETTES["light"]["fg"] == "#000000"
    assert PALETTES["dark"]["text_bg"] != PALETTES["light"]["text_bg"]
    for palette in PALETTES.values():
        for colour in palette.values():
            assert colour.startswith("#")
            assert len(colour) == 7
            int(colour[1:], 16)


# --- emoji ----------------------------------------------------------------------------------


def test_emoji_choices_are_all_in_the_basic_multilingual_plane() -> None:
    assert len(EMOTICONS) >= 20
    assert len(set(EMOTICONS)) == len(EMOTICONS)
    for choice in EMOTICONS:
        assert choice
        assert all(ord(c) <= 0xFFFF for c in choice), f"{choice!r} is beyond the BMP"
        assert not any(0xD800 <= ord(c) <= 0xDFFF for c in choice), f"{choice!r}: surrogate"


# --- settings -------------------------------------------------------------------------------


def test_settings_round_trip_never_storing_a_password(tmp_path: Path) -> None:
    path = tmp_path / "config" / "sealchat" / "gui.json"
    settings = Settings(path=path)
    settings.theme = "light"
    settings.server = Server(host="chat.example.org", port=7979, username="alice")
    settings.save()

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data == {
        "theme": "light",
        "server": {"host": "chat.example.org", "port": 7979, "username": "alice"},
    }
    assert "password" not in path.read_text(encoding="utf-8").lower()
    assert [p.name for p in path.parent.iterdir()] == ["gui.json"]  # no temporary left

    loaded = Settings.load(path)
    assert loaded.theme == "light"
    assert loaded.server == Server(host="chat.example.org", port=7979, username="alice")
    assert loaded.path == path

    loaded.server = None
    loaded.theme = "dark"
    loaded.save()
    again = Settings.load(path)
    assert again.theme == "dark"
    assert again.server is None
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_settings_have_no_password_field() -> None:
    assert "password" not in {f.lower() for f in Settings.__dataclass_fields__}
    assert "password" not in {f.lower() for f in Server.__dataclass_fields__}


@pytest.mark.parametrize(
    "content",
    [
        "",
        "not json",
        "[]",
        '{"theme": "neon"}',
        '{"theme": "light", "server": {"host": "h"}}',
        '{"theme": "light", "server": {"host": "h", "port": "eighty"}}',
        '{"server": "nope"}',
    ],
)
def test_bad_settings_files_fall_back_to_defaults(tmp_path: Path, content: str) -> None:
    path = tmp_path / "gui.json"
    path.write_text(content, encoding="utf-8")
    loaded = Settings.load(path)
    assert loaded.theme in ("dark", "light")
    assert loaded.server is None
    if '"light"' in content:
        assert loaded.theme == "light"
    else:
        assert loaded.theme == "dark"


def test_missing_settings_file_gives_defaults(tmp_path: Path) -> None:
    loaded = Settings.load(tmp_path / "nothing" / "gui.json")
    assert loaded.theme == "dark"
    assert loaded.server is None


def test_default_settings_live_in_the_sealchat_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    settings = Settings.load()
    assert settings.path == tmp_path / "sealchat" / "gui.json"
    settings.save()
    assert stat.S_IMODE((tmp_path / "sealchat").stat().st_mode) == 0o700
    assert os.access(settings.path, os.R_OK)


def test_saving_settings_never_writes_through_a_link_placed_in_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Someone who can write to the config folder plants symbolic links where the settings'
    # temporary file may go (the old name was .gui.json.<pid>): what they point to must stay
    # as it was, and gui.json must be a file of its own.
    folder = tmp_path / "config"
    folder.mkdir()
    victim = tmp_path / "victims-file"
    victim.write_text("IMPORTANT DATA\n")
    path = folder / "gui.json"
    (folder / f".gui.json.{os.getpid()}").symlink_to(victim)
    settings = Settings(path=path, theme="light")
    settings.save()
    assert victim.read_text() == "IMPORTANT DATA\n"
    assert not path.is_symlink()
    assert Settings.load(path).theme == "light"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # Even a link at the very name chosen is never followed: the save fails instead.
    monkeypatch.setattr("sealchat.transports.keyfile.secrets.token_hex", lambda _n: "guessed")
    (folder / ".gui.json.guessed.tmp").symlink_to(victim)
    settings.theme = "dark"
    with pytest.raises(FileExistsError):
        settings.save()
    assert victim.read_text() == "IMPORTANT DATA\n"
    assert Settings.load(path).theme == "light"


@pytest.mark.parametrize(
    ("platform", "program"), [("linux", "xdg-open"), ("freebsd14", "xdg-open"), ("darwin", "open")]
)
def test_show_folder_starts_the_file_manager_on_the_folder_without_waiting(
    platform: str, program: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from sealchat.gui import file_manager

    started: list[tuple[list[str], dict[str, object]]] = []
    monkeypatch.setattr(file_manager.sys, "platform", platform)
    monkeypatch.setattr(
        file_manager.subprocess, "Popen", lambda args, **kw: started.append((args, kw))
    )
    monkeypatch.chdir(tmp_path)
    file_manager.show_folder(Path("downloads"))
    ((args, options),) = started
    assert args == [program, str(tmp_path / "downloads")]  # absolute: never read as an option
    assert options["start_new_session"] is True
    assert "shell" not in options
