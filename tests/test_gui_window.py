"""The desktop client in a real window (under a private Xvfb) against a real server.

Each test starts a server with users alice, bob, carol and dave, opens the ``App`` with its own
settings, pins and downloads folder, and drives it through its widgets; a second client
(``BlockingClient``) plays the other person. Screenshots of both themes and of the login
screen are saved to ``artifacts/``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import stat
import subprocess
import sys
import time
import tkinter as tk
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from tkinter import filedialog, messagebox
from typing import Any
from unittest import mock

import customtkinter as ctk
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from sealchat.core import (
    ConnectionClosed,
    Error,
    FileInfo,
    ListReadMarkers,
    MemberInfo,
    Membership,
    Message,
    Presence,
    ReadMarkers,
    ReadUpTo,
    RoomJoined,
    Typing,
)
from sealchat.core.hub import PASSWORD_CHANGED, HubConfig
from sealchat.core.hub.names import user_key
from sealchat.gui.app import closed_on_signals
from sealchat.gui.controller import _Outgoing
from sealchat.gui.conversation import Conversation, TranscriptUpdate, direct_key
from sealchat.gui.password_dialog import PasswordDialog
from sealchat.gui.text_helpers import file_label, friendly, without_blank_ends
from sealchat.gui.theme import PALETTES, accented
from sealchat.gui.transfer_state import Transfer, TransferState
from sealchat.gui.unread_store import UnreadStore
from sealchat.transports.blocking_client import BlockingClient
from sealchat.transports.passwords import CHEAP, hash_password
from sealchat.transports.pinning import KnownServers, server_name
from sealchat.transports.shown_time import day_label
from sealchat.transports.sqlite_store import SqliteStore
from sealchat.transports.trio_client import LinkState
from tests.gui_harness import Dialog, Window, destroyed, environment, open_window, xvfb
from tests.servers import PASSWORD, Running, free_port, running_server

DARK, LIGHT = PALETTES["dark"], PALETTES["light"]
ASK_YES_NO = messagebox.askyesno
"""The real question box (the harness answers the windows' questions instead of it)."""
TODAY = "\u2500\u2500 Today \u2500\u2500"
"""The separator above the first message of today."""


@pytest.fixture(scope="session")
def display() -> Iterator[str]:
    """A private X display for the whole session; DISPLAY points at it meanwhile."""
    with xvfb() as name:
        before = os.environ.get("DISPLAY")
        os.environ["DISPLAY"] = name
        try:
            yield name
        finally:
            if before is None:
                os.environ.pop("DISPLAY", None)
            else:
                os.environ["DISPLAY"] = before


@pytest.fixture
def server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Running]:
    """A trio server (with the test's own HubConfig when parametrized indirectly)."""
    hub: HubConfig | None = getattr(request, "param", None)
    with running_server("trio", tmp_path / "server", hub=hub) as running:
        yield running


@pytest.fixture
def window(
    display: str, server: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Window]:
    """The App, not yet logged in (closed at the end, before the server stops)."""
    environment(tmp_path, monkeypatch)
    with open_window(tmp_path / "gui.json", display) as opened:
        yield opened


@pytest.fixture
def bob(server: Running) -> Iterator[BlockingClient]:
    with server.login("bob") as client:
        yield client


def settings_file(tmp_path: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((tmp_path / "gui.json").read_text(encoding="utf-8"))
    return data


def button_texts(frame: tk.Misc) -> list[str]:
    """The texts of the buttons ``frame`` shows, top to bottom (hidden ones are not)."""
    return [str(child.cget("text")) for child in frame.pack_slaves()]


# --- login ----------------------------------------------------------------------------------


def test_log_in_through_the_widgets_trusting_the_key_on_first_contact(
    window: Window, server: Running, tmp_path: Path
) -> None:
    app = window.app
    assert app.title() == "sealchat"
    assert not app.chat.winfo_ismapped()
    window.fill_login(server.port, "alice", PASSWORD)
    app.login_form.remember.select()
    window.screenshot("gui-login.png")

    window.submit_login()
    window.until(lambda: app.vm.me == "alice", "the login")

    assert [d.kind for d in window.dialogs] == ["askyesno"]
    question = window.dialogs[0].message
    assert f"127.0.0.1:{server.port} is new to this computer" in question
    shown = question.split("\n\n")[1]
    assert shown == server.fingerprint
    pins = (tmp_path / "config" / "sealchat" / "known_servers").read_text(encoding="utf-8")
    assert server.fingerprint in pins

    window.until(app.vm.people_in_current, "the members of #general")
    assert app.title() == "sealchat — alice"
    assert app.chat.winfo_ismapped()
    assert not app.login_form.winfo_ismapped()
    assert button_texts(app.chat.conversation_list) == ["# general"]
    assert "\u25cf alice" in button_texts(app.chat.people_list)

    remembered = settings_file(tmp_path)
    assert remembered["server"] == {"host": "127.0.0.1", "port": server.port, "username": "alice"}
    assert PASSWORD not in (tmp_path / "gui.json").read_text(encoding="utf-8")


def trio_runs(window: Window) -> None:
    """Wait until a trio task started now has run: trio takes its steps."""
    ran: list[bool] = []

    async def run() -> None:
        await trio.sleep(0)
        ran.append(True)

    window.app.spawn(run)
    window.until(lambda: ran, "a trio task to run")


def test_trio_runs_while_the_question_of_the_servers_key_is_open(
    window: Window, server: Running
) -> None:
    window.while_next_dialog_open = lambda _question: trio_runs(window)
    window.login(server.port, "alice")  # once the key is trusted
    assert [d.title for d in window.dialogs] == ["Trust this server?"]


def test_a_question_whose_asker_gave_up_before_it_showed_is_never_asked(window: Window) -> None:
    ended: list[bool] = []

    async def give_up() -> None:
        with trio.CancelScope() as scope:
            scope.cancel()  # as a login given up before Tk was idle
            await window.app.controller._ask("Trust this server?", "…")
        ended.append(scope.cancelled_caught)

    window.app.spawn(give_up)
    window.until(lambda: ended, "the asker to end")
    window.pump(0.2)
    assert ended == [True]
    assert window.dialogs == []


def log_in_after_joining(window: Window, server: Running, *rooms: str) -> None:
    """Alice joins ``rooms`` in an earlier session, then logs in through the window."""
    with server.login("alice") as earlier:
        for room in rooms:
            earlier.join(room)
    window.login(server.port, "alice")


def test_rooms_joined_in_an_earlier_session_are_in_the_sidebar(
    window: Window, server: Running
) -> None:
    log_in_after_joining(window, server, "books", "random")
    window.until(
        lambda: (
            button_texts(window.app.chat.conversation_list) == ["# books", "# general", "# random"]
        ),
        "alice's rooms in the sidebar",
    )


def test_direct_conversations_of_earlier_sessions_are_in_the_sidebar_and_open(
    window: Window, server: Running
) -> None:
    with server.login("alice") as earlier:  # read to the end: nothing of it is replayed
        earlier.send_message("about the trip", to="bob")
        earlier.send_message("see you at 8", to="carol")
    app = window.app
    window.login(server.port, "alice")
    # The latest first, as the server lists them.
    assert button_texts(app.chat.conversation_list) == ["# general", "@ carol", "@ bob"]
    assert not app.vm.conversation("@carol").ids  # not replayed: it is the login's list
    app.controller.select("@carol")
    window.until_shown("see you at 8")
    assert "about the trip" not in window.transcript()


def test_a_wrong_password_is_shown_on_the_login_form(window: Window, server: Running) -> None:
    app = window.app
    window.fill_login(server.port, "alice", "not the password")
    window.submit_login()
    window.until(window.login_error, "the login error")
    assert window.login_error() == "Wrong user name or password."
    assert app.login_form.button.cget("state") == "normal"
    assert app.login_form.button.cget("text") == "Log in"
    assert app.vm.me == ""
    assert app.title() == "sealchat"
    assert not app.chat.winfo_ismapped()

    window.login(server.port, "alice")  # the key is pinned now: no second question
    assert [d.kind for d in window.dialogs] == ["askyesno"]
    assert app.title() == "sealchat — alice"


def fill_new_account(window: Window, port: int, user: str, password: str, again: str) -> None:
    """Tick "Create a new account" and fill in the form, the password twice."""
    form = window.app.login_form
    form.create.toggle()  # as a click does
    window.fill_login(port, user, password)
    form.repeat.delete(0, "end")
    form.repeat.insert(0, again)
    window.pump()


@pytest.mark.parametrize("server", [HubConfig(open_registration=True)], indirect=True)
def test_an_account_is_created_from_the_login_form_where_the_server_allows_it(
    window: Window, server: Running
) -> None:
    form = window.app.login_form
    assert not form.repeat.winfo_ismapped()
    fill_new_account(window, server.port, "newbie", "a new password", "a new pasword")
    assert form.repeat.winfo_ismapped()
    assert form.button.cget("text") == "Create account"
    window.submit_login()
    window.pump()
    assert window.login_error() == "The two passwords differ. Type the same password in both boxes."
    assert window.dialogs == []  # refused before connecting
    assert form.button.cget("text") == "Create account"

    form.repeat.delete(0, "end")
    form.repeat.insert(0, "a new password")
    window.submit_login()
    window.until(lambda: window.app.vm.me == "newbie", "the new account's login")
    assert not form.creating  # the account exists: next time is a login
    assert not form.repeat.winfo_ismapped()
    with server.login("newbie", "a new password"):  # the account is there, for others too
        pass


def test_creating_an_account_where_the_server_does_not_allow_it_says_so(
    window: Window, server: Running
) -> None:
    fill_new_account(window, server.port, "newbie", "a new password", "a new password")
    window.submit_login()
    window.until(window.login_error, "the refusal")
    assert window.login_error() == (
        "Registration is closed on this server; ask its operator for an account"
    )
    assert window.app.login_form.button.cget("text") == "Create account"
    assert window.app.vm.me == ""
    window.app.login_form.create.toggle()  # back to logging in
    assert window.login_error() == ""
    assert not window.app.login_form.repeat.winfo_ismapped()
    assert window.app.login_form.button.cget("text") == "Log in"


def test_pressing_enter_twice_on_the_form_logs_in_once(window: Window, server: Running) -> None:
    app = window.app
    window.fill_login(server.port, "alice", PASSWORD)
    inner = app.login_form.password._entry  # the tk.Entry inside the CTkEntry
    inner.focus_force()
    window.pump()
    with mock.patch.object(app.controller, "_session", wraps=app.controller._session) as session:
        inner.event_generate("<Return>")
        inner.event_generate("<Return>")  # again, while the form says "Connecting…"
        window.until(lambda: app.vm.me == "alice", "the login")
    assert session.call_count == 1
    assert [d.kind for d in window.dialogs] == ["askyesno"]


def test_enter_logs_in_also_from_a_ticked_box_of_the_form(window: Window, server: Running) -> None:
    app = window.app
    window.fill_login(server.port, "alice", PASSWORD)
    canvas = app.login_form.remember._canvas  # where a click lands, and the keys then go
    canvas.event_generate("<Button-1>", x=4, y=4)
    canvas.event_generate("<ButtonRelease-1>", x=4, y=4)
    window.pump()
    assert app.focus_get() is canvas
    assert app.login_form.remember.get() == 1
    canvas.event_generate("<Return>")
    window.until(lambda: app.vm.me == "alice", "the login")


def test_declining_the_server_key_does_not_connect(window: Window, server: Running) -> None:
    window.trust = False
    window.fill_login(server.port, "alice", PASSWORD)
    window.submit_login()
    window.until(window.login_error, "the login error")
    assert window.login_error() == "You did not trust the server's key; not connected."
    assert window.app.vm.me == ""


def test_the_keys_go_to_the_first_empty_field_then_to_the_message_box(
    window: Window, server: Running
) -> None:
    app = window.app
    assert app.focus_lastfor() is app.login_form.username._entry  # the server is filled in
    window.login(server.port, "alice")
    assert app.focus_lastfor() is app.chat.input._textbox  # typing after the login goes there


@pytest.mark.parametrize("port", ["http", "78\u00b2", "\uff17\uff18", "0", "65536", ""])
def test_an_incomplete_form_is_refused_before_connecting(window: Window, port: str) -> None:
    form = window.app.login_form
    window.fill_login(0, "alice", PASSWORD)
    form.port.delete(0, "end")
    form.port.insert(0, port)
    window.submit_login()
    window.pump()
    assert window.login_error() == "Fill in the server, a port (1 to 65535) and your user name."
    assert form.button.cget("state") == "normal"
    assert window.dialogs == []


@pytest.mark.parametrize(
    ("user", "password", "error"),
    [
        ("a" * 33, PASSWORD, "This user name has 33 characters; at most 32 are allowed."),
        ("alice", "p" * 1025, "This password has 1025 characters; at most 1024 are allowed."),
    ],
    ids=["user name", "password"],
)
def test_a_name_or_password_too_long_is_refused_saying_what_to_change(
    window: Window, server: Running, user: str, password: str, error: str
) -> None:
    form = window.app.login_form
    window.fill_login(server.port, user, password)
    window.submit_login()
    window.pump()
    assert window.login_error() == f"{error} Shorten it."
    assert form.button.cget("state") == "normal"
    assert window.dialogs == []  # not even connected


def test_login_error_wording() -> None:
    assert friendly("invalid username or password") == "Wrong user name or password."
    assert friendly("your password was changed; log in again with the new one") == (
        "Your password was changed; log in again with the new one"  # the server's goodbye
    )
    assert friendly("cannot reach 127.0.0.1:9: Connection refused") == (
        "The server cannot be reached. Check the address and port, and that it runs."
    )
    assert friendly("too many failed attempts; try again in 8 s") == "Too many failed attempts."
    assert "different protocol versions" in friendly("version mismatch: 2 vs 1")
    assert friendly("the handshake did not finish in time") == (
        "The handshake did not finish in time"
    )
    # What the client refuses to send, before it goes (its checks name records and fields).
    too_long = "cannot send this: invalid Login: Expected `str` of length <= 32 - at `$[1]`"
    assert friendly(too_long) == (
        "Something you entered is too long: at most 32 characters fit. Shorten it."
    )
    assert friendly("cannot send this: cannot send JoinRoom in state login") == (
        "The connection is not ready for this yet; try again in a moment."
    )
    assert friendly("cannot send this message: invalid Message: Expected `str`") == (
        "Something you entered cannot be sent as it is; change it and try again."
    )


def test_a_rate_limited_login_says_once_when_to_try_again(window: Window, server: Running) -> None:
    form = window.app.login_form
    while "too many" not in window.login_error().lower():
        window.fill_login(server.port, "alice", "wrong")
        window.submit_login()
        window.until(lambda: form.button.cget("state") == "normal", "the form back")
    error = window.login_error()
    assert error.startswith("Too many failed attempts. Try again in "), error
    assert error.lower().count("try again") == 1, error
    assert " 0 s" not in error, error  # a wait under a second is "1 s"


def test_settings_that_cannot_be_saved_do_not_block_the_login(
    display: str, server: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    environment(tmp_path, monkeypatch)
    (tmp_path / "not-a-folder").write_text("", encoding="utf-8")
    with open_window(tmp_path / "not-a-folder" / "gui.json", display) as window:
        window.app.login_form.remember.select()
        window.login(server.port, "alice")
        window.app.chat.theme_switch.toggle()
        window.pump()
        assert window.app.vm.theme == "light"


def test_an_unreachable_server_is_explained_on_the_form(window: Window) -> None:
    window.fill_login(free_port(), "alice", PASSWORD)
    window.submit_login()
    window.until(window.login_error, "the login error")
    assert window.login_error() == (
        "The server cannot be reached. Check the address and port, and that it runs."
    )


# --- messages -------------------------------------------------------------------------------


def test_send_with_enter_and_receive_from_a_second_client(
    window: Window, server: Running, bob: BlockingClient
) -> None:
    app = window.app
    window.login(server.port, "alice")
    window.until(lambda: "\u25cf bob" in button_texts(app.chat.people_list), "bob shown online")

    window.type_and_enter("hello bob :) \u263a")
    received = window.receive(bob, Message, "alice's message at bob")
    assert (received.sender, received.room, received.text) == (
        "alice",
        "general",
        "hello bob :) \u263a",
    )
    assert app.chat.input.get("1.0", "end").strip() == ""
    window.until_shown("alice: hello bob :) \u263a")

    bob.send_message("hi alice, got it", room="general")
    window.until_shown("bob: hi alice, got it")
    text = window.transcript()
    assert text.index("alice: hello bob") < text.index("bob: hi alice")
    assert app.vm.conversation("#general").unread == 0


def test_a_direct_message_opens_a_conversation_with_an_unread_count(
    window: Window, server: Running, bob: BlockingClient
) -> None:
    app = window.app
    window.login(server.port, "alice")
    bob.send_message("just for you", to="alice")
    window.until(lambda: "@ bob  (1)" in button_texts(app.chat.conversation_list), "the unread DM")
    assert "just for you" not in window.transcript()

    app.controller.select("@bob")
    window.until_shown("bob: just for you")
    assert "@ bob" in button_texts(app.chat.conversation_list)
    window.type_and_enter("thanks")
    received = window.receive(bob, Message, "alice's DM at bob")
    assert (received.sender, received.to, received.room, received.text) == (
        "alice",
        "bob",
        "",
        "thanks",
    )


def test_unread_counts_survive_closing_the_window_and_add_what_came_meanwhile(
    window: Window, server: Running, bob: BlockingClient, tmp_path: Path, display: str
) -> None:
    app = window.app
    window.login(server.port, "alice")
    for text in ("are you there?", "the keys are under the mat", "call me"):
        bob.send_message(text, to="alice")
    window.until(lambda: "@ bob  (3)" in button_texts(app.chat.conversation_list), "3 unread")
    window.close()  # the three were acknowledged: the server does not send them again
    remembered = tmp_path / "unread.json"
    assert stat.S_IMODE(remembered.stat().st_mode) == 0o600
    assert "the keys" not in remembered.read_text(encoding="utf-8")
    assert PASSWORD not in remembered.read_text(encoding="utf-8")
    bob.send_message("still there?", to="alice")  # while her window is closed
    bob.send_message("ok, tomorrow then", to="alice")

    with open_window(tmp_path / "gui.json", display) as again:
        again.login(server.port, "alice")
        conversations = again.app.chat.conversation_list
        again.until(lambda: "@ bob  (5)" in button_texts(conversations), "3 + 2 unread")
        again.app.controller.select("@bob")
        again.until_shown("bob: the keys are under the mat")
        again.until(lambda: button_texts(conversations) == ["# general", "@ bob"], "none unread")


def test_a_conversation_read_on_another_device_stops_counting_here(
    window: Window, server: Running, bob: BlockingClient, tmp_path: Path
) -> None:
    app = window.app
    window.login(server.port, "alice")
    app.event_generate("<FocusOut>")  # the user is at her other device
    window.pump()
    bob.send_message("are you there?", to="alice")
    last = bob.send_message("call me", to="alice")
    window.until(lambda: "@ bob  (2)" in button_texts(app.chat.conversation_list), "2 unread")
    window.until(lambda: app.title() == "(2) sealchat — alice", "the title to count them")
    with server.login("alice") as phone:  # where she reads them
        phone.send(ReadUpTo(up_to=last.id, peer="bob"))
        window.until(lambda: "@ bob" in button_texts(app.chat.conversation_list), "none unread")
        assert app.title() == "sealchat — alice"
        remembered = tmp_path / "unread.json"
        account = f"alice@127.0.0.1:{server.port}"

        def saved_read() -> bool:
            data = json.loads(remembered.read_text(encoding="utf-8"))
            return data["accounts"][account]["@bob"]["unread"] == []

        window.until(lambda: remembered.exists() and saved_read(), "the read state saved")


def test_a_conversation_read_here_is_read_on_the_users_other_devices(
    window: Window, server: Running, bob: BlockingClient
) -> None:
    app = window.app
    with server.login("alice") as phone:
        phone.send(ListReadMarkers())  # as a client that shows unread counts does
        phone.next(ReadMarkers)
        window.login(server.port, "alice")
        last = bob.send_message("call me", to="alice")
        window.until(lambda: "@ bob  (1)" in button_texts(app.chat.conversation_list), "1 unread")
        app.controller.select("@bob")
        window.until_shown("bob: call me")
        told = window.receive(phone, ReadUpTo, "the marker at alice's other device")
        assert told == ReadUpTo(up_to=last.id, peer="bob")


def _log_out(window: Window, phone: BlockingClient) -> ReadUpTo:
    """Log out; the next marker at ``phone``."""
    window.app.chat.logout_button.invoke()
    window.until(window.app.login_form.winfo_ismapped, "the login form")
    return window.receive(phone, ReadUpTo, "the marker at alice's other device")


def _close(window: Window, phone: BlockingClient) -> ReadUpTo:
    """Close the window; the next marker at ``phone``."""
    window.close()
    return phone.next(ReadUpTo)


@pytest.mark.parametrize("leave", [_log_out, _close], ids=["logout", "close"])
def test_what_was_read_last_reaches_the_other_devices_as_the_user_leaves(
    window: Window,
    server: Running,
    bob: BlockingClient,
    monkeypatch: pytest.MonkeyPatch,
    leave: Callable[[Window, BlockingClient], ReadUpTo],
) -> None:
    # Logging out and closing the window end the session as the user leaving it: what was
    # read in the last second still reaches the other devices (the link outlives the window).
    monkeypatch.setattr("sealchat.gui.controller.READS_TOLD_EVERY", 3600.0)  # only at the end
    app = window.app
    with server.login("alice") as phone:
        phone.send(ListReadMarkers())
        phone.next(ReadMarkers)
        window.login(server.port, "alice")
        last = bob.send_message("call me", to="alice")
        window.until(lambda: "@ bob  (1)" in button_texts(app.chat.conversation_list), "1 unread")
        app.controller.select("@bob")
        window.until_shown("bob: call me")
        assert leave(window, phone) == ReadUpTo(up_to=last.id, peer="bob")


def test_the_window_closes_even_if_the_session_cannot_end_in_time(
    window: Window, server: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sealchat.gui.app.LEAVE_WAIT", 0.5)
    monkeypatch.setattr("sealchat.gui.controller.LAST_READS_WAIT", 3600.0)

    async def stuck(*_args: object) -> None:  # as if the server had stopped reading
        await trio.sleep_forever()

    window.login(server.port, "alice")
    monkeypatch.setattr(window.app.controller, "_tell_reads", stuck)
    window.close(timeout=10.0)
    assert destroyed(window.app)


def test_a_damaged_unread_file_is_ignored_and_replaced(
    window: Window, server: Running, bob: BlockingClient, tmp_path: Path
) -> None:
    remembered = tmp_path / "unread.json"
    remembered.write_text('{"version": 1, "accounts": {"alice@', encoding="utf-8")
    app = window.app
    window.login(server.port, "alice")
    bob.send_message("hello", to="alice")
    window.until(lambda: "@ bob  (1)" in button_texts(app.chat.conversation_list), "1 unread")
    assert (app.vm.error, window.errors) == ("", [])  # nothing said about the file
    window.close()
    data = json.loads(remembered.read_text(encoding="utf-8"))
    assert len(data["accounts"][f"alice@127.0.0.1:{server.port}"]["@bob"]["unread"]) == 1


def test_typing_indicator_appears_and_expires(
    window: Window, server: Running, bob: BlockingClient
) -> None:
    window.login(server.port, "alice")
    assert window.typing() == ""
    bob.send(Typing(room="general"))
    window.until(lambda: window.typing() == "bob is typing…", "bob's typing notice")
    # No refresh and no stop: the server ends it 5 s after it arrived, and says so.
    window.until(lambda: window.typing() == "", "the typing notice to expire", timeout=20)

    bob.send(Typing(room="general"))
    window.until(lambda: window.typing() == "bob is typing…", "bob's typing notice again")
    bob.send_message("there", room="general")
    window.until_shown("bob: there")
    assert window.typing() == ""  # his message ends his notice


def test_typing_indicator_stays_while_the_peer_keeps_typing(
    window: Window, server: Running, bob: BlockingClient
) -> None:
    window.login(server.port, "alice")
    bob.send(Typing(room="general"))
    window.until(lambda: window.typing() == "bob is typing…", "bob's typing notice")
    for _ in range(2):  # bob refreshes every 3 s; the server relays none of the refreshes
        window.pump(3)
        bob.send(Typing(room="general"))
        assert window.typing() == "bob is typing…"
    window.pump(1)
    assert window.typing() == "bob is typing…"  # 7 s after the only notice alice got
    bob.send(Typing(room="general", active=False))
    window.until(lambda: window.typing() == "", "bob's stop")


def test_typing_in_the_box_tells_the_others_and_then_stops(
    window: Window, server: Running, bob: BlockingClient
) -> None:
    window.login(server.port, "alice")
    box = window.app.chat.input._textbox
    box.focus_force()
    box.insert("end", "h")
    box.event_generate("<KeyRelease>", keysym="h")
    started = window.receive(bob, Typing, "alice's typing notice at bob")
    assert (started.user, started.room, started.active) == ("alice", "general", True)
    # After a pause of about 4 s without keys, the window says she stopped.
    stopped = window.receive(bob, Typing, "alice's typing stop at bob")
    assert (stopped.user, stopped.room, stopped.active) == ("alice", "general", False)


def test_a_typing_notice_follows_the_conversation_shown(
    window: Window, server: Running, bob: BlockingClient
) -> None:
    app = window.app
    window.login(server.port, "alice")
    box = app.chat.input._textbox

    def key(char: str) -> None:
        box.focus_force()
        box.insert("end", char)
        box.event_generate("<KeyRelease>", keysym=char)

    def notice(what: str) -> tuple[str, str, bool]:
        got = window.receive(bob, Typing, what)
        return (got.room, got.user, got.active)

    key("h")
    assert notice("typing in #general") == ("general", "alice", True)
    app.controller.open_direct("bob")
    key("i")  # at once, well within the 3 s before a refresh
    assert {notice("one notice"), notice("another")} == {
        ("general", "alice", False),  # where the notice went
        ("", "alice", True),
    }
    assert notice("the stop to bob, after a pause") == ("", "alice", False)


def test_a_typing_notice_to_a_room_left_elsewhere_ends_there_unsaid(
    window: Window, server: Running, bob: BlockingClient
) -> None:
    app = window.app
    with server.login("alice") as elsewhere:
        elsewhere.join("dev")
    window.login(server.port, "alice")
    window.until(lambda: "#dev" in app.chat.conversation_buttons, "# dev")
    app.controller.select("#dev")
    assert app.controller.client is not None
    tried: list[tuple[bool, str]] = []
    typing = app.controller.client.typing

    async def tried_typing(active: bool, **target: str) -> None:
        tried.append((active, target["room"]))
        await typing(active, **target)

    box = app.chat.input._textbox
    with mock.patch.object(app.controller.client, "typing", tried_typing):
        box.focus_force()
        box.insert("end", "h")
        box.event_generate("<KeyRelease>", keysym="h")
        window.until(lambda: tried == [(True, "dev")], "typing in #dev")
        with server.login("alice") as elsewhere:
            elsewhere.leave("dev")
        window.until(lambda: app.vm.current == "#general", "#general shown instead of #dev")
        box.insert("end", "i")
        box.event_generate("<KeyRelease>", keysym="i")  # typing on, in #general now
        started = window.receive(bob, Typing, "alice's typing notice in #general at bob")
    assert (started.user, started.room, started.active) == ("alice", "general", True)
    assert tried == [(True, "dev"), (True, "general")]  # no stop to #dev: it would be refused
    assert not app.chat.banner.winfo_ismapped(), app.chat.banner.cget("text")


def test_only_keys_that_change_the_draft_count_as_typing(window: Window, server: Running) -> None:
    app = window.app
    window.login(server.port, "alice")
    box = app.chat.input._textbox
    box.focus_force()
    window.pump()
    with mock.patch.object(app.typing_notice, "user_is_typing") as typing:
        for keysym in ("Left", "Control_L", "Shift_L", "Home"):
            box.event_generate("<KeyRelease>", keysym=keysym)
        assert typing.call_count == 0
        box.insert("end", "h")
        box.event_generate("<KeyRelease>", keysym="h")
        assert typing.call_count == 1
        box.event_generate("<KeyRelease>", keysym="Right")
        box.event_generate("<Return>")  # sends "h", which empties the box
        box.event_generate("<KeyRelease>", keysym="Return")
        assert typing.call_count == 1
        box.insert("end", "\n")  # what Shift+Return does
        box.event_generate("<KeyRelease>", keysym="Return")
        assert typing.call_count == 2


def test_title_and_bell_for_messages_while_unfocused(
    window: Window, server: Running, bob: BlockingClient
) -> None:
    app = window.app
    window.login(server.port, "alice")
    app.event_generate("<FocusOut>")  # another window takes the focus
    window.pump()
    assert not app.vm.focused
    bob.send_message("are you there?", room="general")
    window.until(lambda: app.title() == "(1) sealchat — alice", "the title to count it")
    assert window.bells >= 1
    app.event_generate("<FocusIn>")
    window.until(lambda: app.title() == "sealchat — alice", "the title to reset")


def test_the_bell_rings_for_messages_missed_not_for_those_read_on_another_device(
    window: Window, server: Running, bob: BlockingClient
) -> None:
    app = window.app
    window.login(server.port, "alice")
    app.event_generate("<FocusOut>")  # the user is at her other device
    window.pump()
    first = bob.send_message("are you there?", to="alice")
    bob.send_message("anyone?", room="general")
    window.until(lambda: app.title() == "(2) sealchat — alice", "the title to count them")
    assert window.bells == 2  # one for each
    with server.login("alice") as phone:  # where she reads the first
        phone.send(ReadUpTo(up_to=first.id, peer="bob"))
        window.until(lambda: app.title() == "(1) sealchat — alice", "the title to count one")
    assert window.bells == 2


def test_the_emoji_picker_is_not_leaving_the_window(
    window: Window, server: Running, bob: BlockingClient
) -> None:
    app = window.app
    window.login(server.port, "alice")
    app.chat.input._textbox.focus_force()
    window.until(lambda: app.focus_get() is app.chat.input._textbox, "the input box focused")
    app.chat.emoji_button.invoke()
    picker = app.chat.emoji_window
    picker.focus_force()  # what the window manager does for a new window
    window.until(lambda: str(app.focus_get()).startswith(str(picker)), "the picker focused")
    assert app.vm.focused
    bob.send_message("hi", room="general")
    window.until_shown("bob: hi")
    assert window.bells == 0
    assert app.title() == "sealchat — alice"
    picker.event_generate("<FocusOut>")  # another application takes the focus
    window.pump()
    assert not app.vm.focused


def open_books(window: Window) -> Conversation:
    """Join #books with the Join box, and wait for the newest page of its 120 books."""
    app = window.app
    inner = app.chat.join_entry._entry  # the tk.Entry inside the CTkEntry
    inner.focus_force()
    window.pump()  # focus first: it takes the placeholder text away
    app.chat.join_entry.insert(0, "books")
    inner.event_generate("<Return>")
    window.until(lambda: app.vm.current == "#books", "#books to open")
    assert (app.chat.join_entry.get(), inner.get()) == ("", "")  # typed there: no hint
    books: Conversation = app.vm.conversation("#books")
    window.until(lambda: len(books.ids) == 50, "the newest page")
    window.until_shown("bob: book 120")
    return books


def top_line(window: Window) -> str:
    """The transcript's line at the top of its view."""
    return str(window.app.chat.transcript.get("@0,0 linestart", "@0,0 lineend"))


@pytest.mark.parametrize(
    "server", [HubConfig(messages_per_second=1000, message_burst=1000)], indirect=True
)
def test_history_loads_page_by_page_when_scrolling_up(
    window: Window, server: Running, bob: BlockingClient
) -> None:
    def text_of(n: int) -> str:
        return f"book {n}" + ("\nsecond line" if n % 7 == 0 else "")  # some span two lines

    bob.join("books")
    for n in range(1, 121):
        bob.send_message(text_of(n), room="books")
    app = window.app
    transcript = app.chat.transcript
    window.login(server.port, "alice")
    books = open_books(window)
    window.pump(0.5)
    assert len(books.ids) == 50, "more than one page loaded without scrolling"
    assert books.more_history
    assert transcript.yview()[1] == 1.0, "the newest message is not in view"

    pages = 1
    while books.more_history:
        shown = len(books.ids)
        oldest = f"bob: book {books.oldest}"
        app.chat.scroll_by_user("moveto", "0.0")  # the reader drags the scrollbar to the top
        assert top_line(window) == TODAY  # above the oldest message, its day
        window.until(lambda shown=shown: len(books.ids) > shown, "an older page")
        pages += 1
        window.pump(0.5)
        assert len(books.ids) == min(120, 50 * pages), "scrolling up once loaded several pages"
        # The separator the reader saw went up with the page: its message is at the top.
        assert top_line(window).endswith(oldest), "the view did not stay where the reader was"
    assert pages == 3

    expected = []
    for n in range(1, 121):
        first, *rest = text_of(n).split("\n")
        expected += [f"bob: {first}", *rest]
    assert window.transcript_lines() == expected
    assert window.days() == [TODAY]


SMALL_PAGES = HubConfig(history_page=5, messages_per_second=1000, message_burst=1000)
"""A server that sends its history five messages at a time."""


def _general_after(
    window: Window, server: Running, bob: BlockingClient, count: int
) -> Conversation:
    """#general as alice's window shows it once she logged in after bob wrote ``count``
    messages there ("hello 1"...)."""
    for n in range(1, count + 1):
        bob.send_message(f"hello {n}", room="general")
    window.login(server.port, "alice")
    return window.app.vm.conversation("#general")


@pytest.mark.parametrize("server", [SMALL_PAGES], indirect=True)
def test_a_history_that_fits_in_the_window_loads_whole_without_scrolling(
    window: Window, server: Running, bob: BlockingClient
) -> None:
    app = window.app
    general = _general_after(window, server, bob, 12)
    # Five at a time, the view has room for more, and it cannot scroll up to ask for them.
    window.until(lambda: not general.more_history, "the whole history")
    assert window.transcript_lines() == [f"bob: hello {n}" for n in range(1, 13)]
    assert app.chat.transcript.yview() == (0.0, 1.0)


@pytest.mark.parametrize("server", [SMALL_PAGES], indirect=True)
def test_older_pages_load_until_the_view_can_scroll_then_as_the_user_scrolls(
    window: Window, server: Running, bob: BlockingClient
) -> None:
    app = window.app
    transcript = app.chat.transcript
    general = _general_after(window, server, bob, 100)
    window.until(
        lambda: transcript.yview()[0] > 0.0 and not app.controller._loading_history,
        "pages enough to fill the view",
    )
    shown = len(general.ids)
    assert general.more_history
    assert 5 < shown < 100
    assert transcript.yview()[1] == 1.0, "the newest message is not in view"
    assert window.transcript_lines()[-1] == "bob: hello 100"
    app.chat.scroll_by_user("moveto", "0.0")  # the reader goes up for more
    window.until(lambda: len(general.ids) > shown, "an older page")
    app.chat.scroll_by_user("moveto", "1.0")
    window.until(lambda: not app.controller._loading_history, "the page in")
    shown = len(general.ids)
    app.geometry("1000x1600")  # a taller window has room for more
    window.until(lambda: len(general.ids) > shown, "older pages for the taller window")


def days_ago(days: int, minutes: int) -> float:
    """The time ``minutes`` past 8:00 (local time), ``days`` days before today."""
    morning = datetime.combine(date.today() - timedelta(days=days), datetime.min.time())
    return (morning + timedelta(hours=8, minutes=minutes)).timestamp()


def store_messages(tmp_path: Path, room: str, times: list[float]) -> None:
    """Store messages ``book 1``, ``book 2``... by bob in ``room`` at ``times``, as the
    server would have had them (its clock says now): a history that spans days."""
    with SqliteStore(tmp_path / "server", beside_server=True) as store:
        for n, ts in enumerate(times, 1):
            store.append_message(
                ts=ts,
                sender_key=user_key("bob"),
                sender="bob",
                room=room,
                to_key="",
                to="",
                text=f"book {n}",
                client_id=f"stored-{n}",
            )


def with_days(lines: list[tuple[float, str]]) -> list[str]:
    """``lines`` (their message's time, their text), with the separator above each day's
    first, as the transcript shows them now."""
    shown: list[str] = []
    for ts, line in lines:
        label = f"\u2500\u2500 {day_label(ts, time.time())} \u2500\u2500"
        if label not in shown:
            shown.append(label)
        shown.append(line)
    return shown


def test_each_day_of_the_history_shows_above_its_first_message(
    window: Window, server: Running, bob: BlockingClient, tmp_path: Path
) -> None:
    # Ten days ago (a date), three days ago (a weekday) and yesterday: the pages of 50 end
    # within a day (a separator moves up) and at one.
    times = [days_ago(10 if n <= 30 else 3 if n <= 60 else 1, n) for n in range(1, 121)]
    labels = {day_label(ts, time.time()) for ts in times}
    assert len(labels) == 3
    assert "Yesterday" in labels
    bob.join("books")
    store_messages(tmp_path, "books", times)
    app = window.app
    window.login(server.port, "alice")
    books = open_books(window)

    def rows(first: int) -> list[str]:
        return with_days([(times[n - 1], f"bob: book {n}") for n in range(first, 121)])

    assert window.transcript_lines(days=True) == rows(71)
    assert window.days() == ["\u2500\u2500 Yesterday \u2500\u2500"]

    for first in (21, 1):
        shown = len(books.ids)
        oldest = f"bob: book {books.oldest}"
        app.chat.scroll_by_user("moveto", "0.0")
        window.until(lambda shown=shown: len(books.ids) > shown, "an older page")
        window.pump(0.5)
        assert books.oldest == first
        assert window.transcript_lines(days=True) == rows(first)
        assert top_line(window).endswith(oldest), "the view did not stay where the reader was"
    assert len(window.days()) == 3

    app.chat.scroll_by_user("moveto", "1.0")
    bob.send_message("back today", room="books")  # live, on a day of its own
    window.until_shown("bob: back today")
    bob.send_message("still today", room="books")
    window.until_shown("bob: still today")
    assert window.transcript_lines(days=True) == [
        *rows(1),
        TODAY,
        "bob: back today",
        "bob: still today",
    ]
    assert in_view(window, "bob: still today")

    # Drawn afresh (shown again) a day later, the days are named as seen then.
    tomorrow = time.time() + 24 * 3600
    app.chat.draw_transcript(app.vm, [TranscriptUpdate(redraw=True)], tomorrow)
    assert window.days()[-2:] == [
        f"\u2500\u2500 {day_label(times[-1], tomorrow)} \u2500\u2500",
        "\u2500\u2500 Yesterday \u2500\u2500",
    ]

    # Past the next midnight, the next drawing names every day again, in its line: the
    # reader's view does not move. So does a timer just after midnight, message or not.
    def named(now: float) -> list[str]:
        firsts = (times[0], times[30], times[60], time.time())
        return [f"\u2500\u2500 {day_label(ts, now)} \u2500\u2500" for ts in firsts]

    app.chat.scroll_by_user("moveto", "0.4")
    window.pump(0.3)
    top = top_line(window)
    for days_later in (2, 6):
        now = time.time() + days_later * 24 * 3600
        assert window.days() != named(now)
        if days_later == 2:
            app.chat.draw_transcript(app.vm, [], now)
        else:
            with mock.patch.object(time, "time", return_value=now):
                app.chat._name_days_at_midnight()
        assert window.days() == named(now)
        assert top_line(window) == top


@pytest.mark.parametrize(
    ("where", "key"), [({"room": "dev"}, "#dev"), ({"to": "alice"}, "@bob")], ids=["room", "dm"]
)
def test_a_conversation_with_a_missed_message_shows_its_earlier_ones_too(
    window: Window, server: Running, bob: BlockingClient, where: dict[str, str], key: str
) -> None:
    with server.login("alice") as earlier:
        earlier.join("dev")
        bob.join("dev")
        for n in range(3):
            bob.send_message(f"earlier {n}", **where)
            earlier.next(Message)  # read in that session
    bob.send_message("missed while away", **where)
    app = window.app
    window.login(server.port, "alice")
    window.until(lambda: app.vm.conversation(key).ids, "the missed message")
    app.chat.conversation_buttons[key].invoke()
    window.until_shown("bob: earlier 0")
    assert window.transcript_lines() == [
        "bob: earlier 0",
        "bob: earlier 1",
        "bob: earlier 2",
        "bob: missed while away",
    ]


def test_a_conversation_shown_while_another_loads_its_history_loads_its_own(
    window: Window, server: Running, bob: BlockingClient
) -> None:
    with server.login("alice") as earlier:
        earlier.join("dev")  # a room alice joined, and read, in an earlier session
        bob.join("dev")
        bob.send_message("earlier in dev", room="dev")
        earlier.next(Message)
    app = window.app
    window.login(server.port, "alice")
    window.until(lambda: "#dev" in app.chat.conversation_buttons, "#dev in the sidebar")
    window.until(lambda: app.vm.conversation("#general").first_page_loaded, "#general's history")
    app.controller.open_direct("bob")  # a click on bob under People, then at once on "# dev"
    app.chat.conversation_buttons["#dev"].invoke()
    window.until_shown("bob: earlier in dev")
    assert app.vm.current == "#dev"


@pytest.mark.parametrize(
    "server", [HubConfig(messages_per_second=1000, message_burst=1000)], indirect=True
)
def test_incoming_messages_update_the_sidebar_without_rebuilding_it(
    window: Window, server: Running, bob: BlockingClient
) -> None:
    app = window.app
    bob.join("random")
    log_in_after_joining(window, server, "random")
    sidebar = app.chat.conversation_list
    window.until(lambda: button_texts(sidebar) == ["# general", "# random"], "the sidebar")
    buttons = sidebar.winfo_children()
    with mock.patch.object(
        app.chat, "draw_conversations", wraps=app.chat.draw_conversations
    ) as drawn:
        for n in range(30):
            bob.send_message(f"here {n}", room="general")
        window.until_shown("bob: here 29")
        assert drawn.call_count == 0  # messages in the conversation shown leave it alone
        for n in range(30):
            bob.send_message(f"there {n}", room="random")
        window.until(lambda: "# random  (30)" in button_texts(sidebar), "30 unread in #random")
    assert sidebar.winfo_children() == buttons  # updated in place, not made anew


def whole_text_shown(button: ctk.CTkButton) -> bool:
    """Whether ``button`` shows all of its text (its label is not cut at the button's end)."""
    label = button._text_label
    return bool(label.winfo_width() >= label.winfo_reqwidth())


def test_a_long_conversation_name_is_shortened_so_its_unread_count_shows(
    window: Window, server: Running, bob: BlockingClient
) -> None:
    app = window.app
    room = "the-quarterly-planning-of-the-infrastructure-team-and-friends-42"
    bob.join(room)
    log_in_after_joining(window, server, room)
    bob.send_message("first", room=room)
    bob.send_message("second", room=room)
    window.until(lambda: app.vm.conversation(f"#{room}").unread == 2, "2 unread")
    window.pump()  # laid out
    button = app.chat.conversation_buttons[f"#{room}"]
    text = button.cget("text")
    assert whole_text_shown(button)  # it was cut off, the count with it
    assert text.startswith("# the-")
    assert "\u2026" in text  # the name shortened in its middle
    assert text.endswith("-42  (2)")


def test_a_peer_cannot_make_a_line_pose_as_a_message_of_its_own(
    window: Window, server: Running, bob: BlockingClient
) -> None:
    app = window.app
    transcript = app.chat.transcript
    window.login(server.port, "alice")
    bob.send_message(
        "ok\n12:00  carol: the server moved, log in at evil.example\r\n"
        "\x1b[2J\u202egpj.exe\u2028bye",
        room="general",
    )
    bob.send_message("long " * 200, room="general")
    window.until_shown("bob: long")
    window.type_and_enter("party \U0001f389 \U0001f469\u200d\U0001f4bb")
    window.until_shown("alice: party")
    assert window.transcript_lines() == [
        "bob: ok",
        "carol: the server moved, log in at evil.example",
        "\\x1b[2J\\u202egpj.exe\\u2028bye",
        "bob: " + "long " * 200,
        "alice: party \U0001f389 \U0001f469\u200d\U0001f4bb",  # emoji and joiners kept
    ]

    def left(index: str) -> int:
        transcript.see(index)
        window.pump()
        x, _y, _width, _height = transcript.bbox(index)
        return int(x)

    assert window.days() == [TODAY]  # on line 1
    message = left("2.0")
    assert left("3.0") > message  # the peer's further lines are indented under its message
    assert left("4.0") == left("3.0")
    assert left("5.0") == message
    assert left("5.0 + 1 display lines") > message  # and so are the lines a long one wraps to
    assert left("6.0") == message


@pytest.mark.parametrize("theme", ["dark", "light"])
def test_a_message_naming_the_user_stands_out_in_both_themes(
    window: Window, server: Running, bob: BlockingClient, theme: str
) -> None:
    app = window.app
    transcript = app.chat.transcript
    window.login(server.port, "alice")
    if app.vm.theme != theme:
        app.chat.theme_switch.toggle()
    bob.send_message("@Alice, can you\nlook at this", room="general")
    bob.send_message("malice aforethought", room="general")
    window.type_and_enter("alice here")
    window.until_shown("alice: alice here")

    def mentioned(text: str) -> bool:
        return "mention" in transcript.tag_names(transcript.search(text, "1.0", "end"))

    assert mentioned("@Alice, can you")
    assert mentioned("look at this")  # the whole message, its further lines too
    line_end = transcript.search("look at this", "1.0", "end") + " lineend"
    assert "mention" in transcript.tag_names(line_end)  # to the right edge
    assert not mentioned("malice")
    assert not mentioned("alice here")  # one's own message names no one new
    palette = PALETTES[theme]
    assert transcript.tag_cget("mention", "background") == palette["mention"]
    assert contrast(palette["fg"], palette["mention"]) >= 4.5
    # A selection shows over every tag, the mention's too, its text readable.
    order = transcript.tag_names()  # the lowest priority first
    assert all(order.index("sel") > order.index(t) for t in ("mention", "me", "other", "file"))
    assert transcript.cget("selectforeground") == palette["window"]
    assert contrast(palette["window"], palette["accent"]) >= 4.5


def test_pasted_code_keeps_the_indentation_of_its_first_line(
    window: Window, server: Running, bob: BlockingClient
) -> None:
    window.login(server.port, "alice")
    window.type_and_enter("\n  \n    return x\n\tpass\n\n")
    received = window.receive(bob, Message, "alice's message at bob")
    assert received.text == "    return x\n\tpass"


@pytest.mark.parametrize(
    ("typed", "sent"),
    [
        ("hello", "hello"),
        ("  indented\n  too  ", "  indented\n  too  "),
        ("\n \t\nfirst\n\nlast\n \n", "first\n\nlast"),
        (" \n\t\n", ""),
        ("", ""),
    ],
)
def test_only_blank_lines_at_the_ends_of_a_message_go(typed: str, sent: str) -> None:
    assert without_blank_ends(typed) == sent


def test_a_message_waiting_to_go_shows_no_text_in_its_repr() -> None:
    waiting = _Outgoing("meet me at noon", "general", "", "c1")
    assert repr(waiting) == "_Outgoing(text=<15 chars>, room='general', user='', client_id='c1')"


@pytest.mark.parametrize(
    "server", [HubConfig(messages_per_second=1000, message_burst=1000)], indirect=True
)
def test_messages_sent_in_quick_succession_are_stored_in_the_order_typed(
    window: Window, server: Running
) -> None:
    app = window.app
    window.login(server.port, "alice")
    box = app.chat.input._textbox
    box.focus_force()
    window.pump()
    typed = []
    for n in range(10):
        for text in (f"{n} first", f"{n} second"):  # two Enters before trio gets to run
            box.insert("end", text)
            box.event_generate("<Return>")
            typed.append(text)
        window.pump()
    window.until(lambda: f"alice: {typed[-1]}" in window.transcript(), "the last message")
    window.until(lambda: len(window.transcript_lines()) == len(typed), "every message")
    assert window.transcript_lines() == [f"alice: {text}" for text in typed]  # by stored id


def test_a_message_too_long_stays_in_the_box_saying_why(window: Window, server: Running) -> None:
    app = window.app
    window.login(server.port, "alice")
    window.type_and_enter("y" * 4001)  # over the 4000 characters the server said it takes
    window.until(app.chat.banner.winfo_ismapped, "the error banner")
    assert str(app.chat.banner.cget("text")).startswith(
        "This message has 4001 characters; at most 4000 fit in one message."
    )
    assert app.chat.input.get("1.0", "end-1c") == "y" * 4001
    with server.login("bob") as bob:  # a round trip after anything the window sent
        assert bob.history(room="general") == ([], False)


def test_a_message_the_server_refuses_comes_back_into_the_box(
    window: Window, server: Running
) -> None:
    app = window.app
    window.login(server.port, "alice")
    assert app.controller.client is not None
    app.controller.client.max_message_chars = 0  # not said, as by an older server
    window.type_and_enter("x" * 4001)  # over the server's 4000, not the protocol's 8000
    window.until(app.chat.banner.winfo_ismapped, "the server's refusal")
    assert str(app.chat.banner.cget("text")) == (
        "A message is at most 4000 characters (your message is back in the input box)"
    )
    assert app.chat.input.get("1.0", "end-1c") == "x" * 4001
    assert "x" * 4001 not in window.transcript()


def test_a_refused_message_goes_back_before_what_was_typed_since(
    window: Window, server: Running
) -> None:
    app = window.app
    window.login(server.port, "alice")
    for n, text in enumerate(["the first refused", "the second", "the third"]):
        app.vm.sending(f"c{n}", text)  # as if sent, then the user typed on
    app.chat.input.insert("end", "typed meanwhile")
    for n in range(3):  # each refusal comes on its own, in the order they were sent
        refusal = Error(code="too_long", detail="too long for this server", ref=f"c{n}")
        app.redraw(app.vm.apply(refusal, time.time()))
    assert app.chat.input.get("1.0", "end-1c").split("\n") == [
        "the first refused",
        "the second",
        "the third",
        "typed meanwhile",
    ]
    assert str(app.chat.banner.cget("text")) == (
        "Too long for this server (your message is back in the input box)"
    )
    app.chat.send()  # all of it goes as one; a later refusal starts afresh at the top
    app.vm.sending("c3", "refused later")
    app.chat.input.insert("end", "new draft")
    app.redraw(app.vm.apply(Error(code="too_long", detail="too long", ref="c3"), time.time()))
    assert app.chat.input.get("1.0", "end-1c") == "refused later\nnew draft"


def test_the_error_banner_goes_away_when_the_next_message_goes(
    window: Window, server: Running
) -> None:
    app = window.app
    window.login(server.port, "alice")
    window.type_and_enter("x" * 4001)  # over the server's 4000: refused
    window.until(app.chat.banner.winfo_ismapped, "the server's refusal")
    app.chat.input.delete("1.0", "end")  # the user gives up on it
    window.type_and_enter("a shorter one")
    window.until_shown("alice: a shorter one")
    window.pump(0.5)
    assert not app.chat.banner.winfo_ismapped(), app.chat.banner.cget("text")


def test_a_message_of_several_lines_keeps_the_transcript_in_order(
    window: Window, server: Running, bob: BlockingClient
) -> None:
    window.login(server.port, "alice")
    bob.send_message("first line\nsecond line", room="general")
    bob.send_message("third", room="general")
    window.type_and_enter("fourth")
    window.until_shown("alice: fourth")
    assert window.transcript_lines() == [
        "bob: first line",
        "second line",
        "bob: third",
        "alice: fourth",
    ]


def in_view(window: Window, text: str) -> bool:
    """Whether the transcript's line with ``text`` is shown whole."""
    transcript = window.app.chat.transcript
    index = transcript.search(text, "1.0", "end")
    line = transcript.dlineinfo(index) if index else None
    return line is not None and line[1] + line[3] <= transcript.winfo_height()


@pytest.mark.parametrize(
    "server", [HubConfig(messages_per_second=1000, message_burst=1000)], indirect=True
)
def test_the_transcript_follows_new_messages_until_the_user_scrolls_up(
    window: Window, server: Running, bob: BlockingClient, tmp_path: Path
) -> None:
    app = window.app
    chat = app.chat
    window.login(server.port, "alice")
    for n in range(40):
        bob.send_message(f"filler {n}", room="general")
    window.until_shown("bob: filler 39")

    def shows_at_once(text: str) -> None:
        window.until_shown(text)
        window.pump(0.3)  # the layout settles
        assert in_view(window, text), f"{text!r} is below the view: {chat.transcript.yview()}"

    window.type_and_enter("y" * 8001)  # the error banner takes room from the transcript
    window.until(chat.banner.winfo_ismapped, "the error banner")
    window.pump(0.3)
    assert in_view(window, "bob: filler 39")
    bob.send_message("latest while the banner shows", room="general")
    shows_at_once("bob: latest while the banner shows")
    chat.input.delete("1.0", "end")
    window.type_and_enter("mine after the banner")
    shows_at_once("alice: mine after the banner")

    path = tmp_path / "notes.txt"
    path.write_text("notes", encoding="utf-8")
    app.transfers.send_file(path)  # its row takes room from the transcript too
    window.until_transferred("the upload")
    shows_at_once("alice: \u2913 notes.txt")
    bob.send_message("latest under a transfer row", room="general")
    shows_at_once("bob: latest under a transfer row")

    for _ in range(3):  # the user scrolls up with the wheel: the view stays where they put it
        chat.transcript.event_generate("<Button-4>", x=20, y=20)
    window.pump(0.3)
    assert not chat.following
    read = top_line(window)
    bob.send_message("latest while scrolled up", room="general")
    window.until_shown("bob: latest while scrolled up")
    window.pump(0.3)
    assert top_line(window) == read
    assert not in_view(window, "bob: latest while scrolled up")

    chat.scroll_by_user("moveto", "1.0")  # back at the end: it follows again
    bob.send_message("latest at the end again", room="general")
    shows_at_once("bob: latest at the end again")


# --- people ---------------------------------------------------------------------------------


def people_buttons(window: Window) -> dict[str, ctk.CTkButton]:
    """The people list's buttons by the name they show, checked to be on screen top to
    bottom in the order the list packs them."""
    window.pump()
    buttons = window.app.chat.people_list.pack_slaves()
    tops = [button.winfo_y() for button in buttons]
    assert tops == sorted(tops), tops
    return {str(button.cget("text"))[2:]: button for button in buttons}


def test_the_people_list_keeps_its_buttons_across_presence_joins_and_leaves(
    window: Window, server: Running
) -> None:
    # Each change made every button anew: 0.7 s a presence in a room of 300.
    app = window.app
    people = app.chat.people_list
    log_in_after_joining(window, server, "dev")
    app.controller.select("#dev")
    window.until(lambda: button_texts(people) == ["\u25cf alice"], "#dev's people")
    with server.login("dave") as dave:
        dave.join("dev")
        window.until(lambda: button_texts(people) == ["\u25cf alice", "\u25cf dave"], "dave")
        first = people_buttons(window)
        with server.login("bob") as bob:
            bob.join("dev")  # between the two
            window.until(
                lambda: button_texts(people) == ["\u25cf alice", "\u25cf bob", "\u25cf dave"],
                "bob in the middle",
            )
            joined = people_buttons(window)
            assert (joined["alice"], joined["dave"]) == (first["alice"], first["dave"])
        window.until(
            lambda: button_texts(people) == ["\u25cf alice", "\u25cb bob", "\u25cf dave"],
            "bob offline",
        )
        assert people_buttons(window) == joined  # the same buttons, bob's updated
        assert joined["bob"].cget("text_color") == app.palette["dim"]
        dave.leave("dev")
        window.until(lambda: button_texts(people) == ["\u25cf alice", "\u25cb bob"], "dave gone")
        assert people_buttons(window) == {"alice": joined["alice"], "bob": joined["bob"]}
        app.chat.theme_switch.toggle()  # kept buttons take the other theme's colours
        assert joined["alice"].cget("text_color") == app.palette["accent"]
        assert joined["bob"].cget("text_color") == app.palette["dim"]
        assert joined["bob"].cget("hover_color") == app.palette["panel"]
        joined["bob"].invoke()
    window.until(lambda: app.vm.current == "@bob", "the conversation with bob")
    assert people_buttons(window) == {"bob": joined["bob"]}  # kept for the peer too


def test_a_people_button_shown_again_for_another_name_opens_that_conversation(
    window: Window, server: Running
) -> None:
    app = window.app
    people = app.chat.people_list
    with server.login("dave"), server.login("bob"):  # their first logins: into #general
        pass
    window.login(server.port, "alice")
    window.until(lambda: len(button_texts(people)) == 3, "#general's people")
    before = people_buttons(window)
    before["bob"].invoke()
    window.until(lambda: button_texts(people) == ["\u25cb bob"], "the conversation with bob")
    app.chat.conversation_buttons["#general"].invoke()
    window.until(lambda: len(button_texts(people)) == 3, "#general's people again")
    after = people_buttons(window)
    assert list(after) == ["alice", "bob", "dave"]
    assert after["bob"] is before["bob"]
    assert {after["alice"], after["dave"]} == {before["alice"], before["dave"]}  # hidden, back
    after["dave"].invoke()
    window.until(lambda: app.vm.current == "@dave", "the conversation with dave")


def test_the_people_list_follows_many_changes_in_order(window: Window, server: Running) -> None:
    # Joins, leaves, presences and switches in any order: the buttons kept, made and moved
    # show the members as the view-model orders them, with their marks.
    app = window.app
    window.login(server.port, "alice")
    vm, chance = app.vm, random.Random(7)
    dots = {True: "\u25cf", False: "\u25cb"}
    names = [f"{first}{n}" for first in ("a", "B", "c", "D") for n in range(8)]
    app.redraw(vm.set_members("big", [MemberInfo(name=n, online=False) for n in names[::3]]))
    app.redraw(vm.select("#big"))  # a room the server has not: nothing comes from it
    for step in range(150):
        name = chance.choice(names)
        match chance.randrange(5):
            case 0 | 1:
                joined = chance.random() < 0.6
                changes = vm.apply(Membership(room="big", user=name, joined=joined), 0.0)
            case 2 | 3:
                changes = vm.apply(Presence(user=name, online=chance.random() < 0.5), 0.0)
            case _:
                changes = vm.select(chance.choice(["#big", "#big", direct_key(name)]))
        app.redraw(changes)
        expected = [f"{dots[m.online]} {m.name}" for m in vm.people_in_current()]
        assert button_texts(app.chat.people_list) == expected, step
    shown = people_buttons(window)
    assert len(shown) == len(vm.people_in_current())
    for member in vm.people_in_current():
        colour = app.palette["accent"] if member.online else app.palette["dim"]
        assert shown[member.name].cget("text_color") == colour, member.name


# --- theme ----------------------------------------------------------------------------------


def test_theme_switch_changes_colours_is_saved_and_restored(
    window: Window, server: Running, bob: BlockingClient, tmp_path: Path, display: str
) -> None:
    app = window.app
    window.login(server.port, "alice")
    bob.send_message("the dark theme is dark blue and green", room="general")
    window.type_and_enter("and the light one is white and black")
    window.until_shown("and the light one")
    note = tmp_path / "palette.txt"
    note.write_text("dark: #0d2137\nlight: #ffffff\n", encoding="utf-8")
    app.transfers.send_file(note)
    transfer = window.until_transferred("the upload")
    bar = app.chat.transfer_rows[transfer.id].bar
    transcript = app.chat.transcript

    assert app.vm.theme == "dark"
    assert transcript.cget("background") == DARK["text_bg"]
    assert transcript.cget("foreground") == DARK["fg"]
    assert window.pixel(transcript) == DARK["text_bg"]
    assert transcript.tag_cget("day", "foreground") == DARK["dim"]  # the days' separators
    assert app.chat.theme_switch.get() == 1
    assert bar.cget("progress_color") == DARK["accent"]
    window.screenshot("gui-dark.png")

    app.chat.theme_switch.toggle()  # what a click on it does
    window.pump()
    assert app.vm.theme == "light"
    assert transcript.cget("background") == LIGHT["text_bg"]
    assert transcript.cget("foreground") == LIGHT["fg"]
    assert window.pixel(transcript) == LIGHT["text_bg"]
    assert transcript.tag_cget("day", "foreground") == LIGHT["dim"]
    assert app.chat.theme_switch.get() == 0
    assert app.chat.typing_label.cget("text_color") == LIGHT["dim"]
    assert bar.cget("progress_color") == LIGHT["accent"]
    assert settings_file(tmp_path)["theme"] == "light"
    window.screenshot("gui-light.png")

    app.chat.theme_switch.toggle()
    window.pump()
    assert app.vm.theme == "dark"
    assert transcript.cget("background") == DARK["text_bg"]
    assert window.pixel(transcript) == DARK["text_bg"]
    assert settings_file(tmp_path)["theme"] == "dark"

    app.chat.theme_switch.toggle()
    window.pump()
    assert settings_file(tmp_path)["theme"] == "light"
    window.close()

    with open_window(tmp_path / "gui.json", display) as again:
        assert again.app.vm.theme == "light"
        assert again.app.chat.transcript.cget("background") == LIGHT["text_bg"]
        assert again.app.login_form.cget("fg_color") == LIGHT["panel"]
        assert again.pixel(again.app.login_form, 20, 20) == LIGHT["panel"]
        assert again.app.chat.theme_switch.get() == 0


def contrast(first: str, second: str) -> float:
    """The WCAG contrast ratio of two ``#rrggbb`` colours (1 to 21)."""

    def luminance(colour: str) -> float:
        channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
        red, green, blue = (
            c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels
        )
        return 0.2126 * red + 0.7152 * green + 0.0722 * blue

    darker, lighter = sorted((luminance(first), luminance(second)))
    return (lighter + 0.05) / (darker + 0.05)


@pytest.mark.parametrize("theme", ["dark", "light"])
def test_the_banners_are_readable_in_both_themes(
    window: Window, server: Running, theme: str
) -> None:
    app = window.app
    window.login(server.port, "alice")
    if app.vm.theme != theme:
        app.chat.theme_switch.toggle()
    banner = app.chat.banner
    app.redraw(app.failed("This message has 9000 characters; at most 8000 fit in one message."))
    window.pump()
    assert contrast(banner.cget("fg_color"), banner.cget("text_color")) >= 4.5
    app.redraw(app.vm.apply(LinkState(connected=False, reason="reset", retry_in=3.0), 0.0))
    window.pump()
    assert banner.cget("text").startswith("Connection lost")
    assert contrast(banner.cget("fg_color"), banner.cget("text_color")) >= 4.5


@pytest.mark.parametrize("theme", ["dark", "light"])
def test_the_sidebar_is_readable_under_the_pointer_in_both_themes(
    window: Window, server: Running, bob: BlockingClient, theme: str
) -> None:
    # In the light theme, a conversation under the pointer was black on dark grey (1.7:1).
    app = window.app
    window.login(server.port, "alice")
    bob.send_message("hi", to="alice")
    window.until(lambda: "@bob" in app.chat.conversation_buttons, "the conversation with bob")
    if app.vm.theme != theme:
        app.chat.theme_switch.toggle()
    buttons = [*app.chat.conversation_buttons.values(), *app.chat.people_list.pack_slaves()]
    assert len(buttons) == 4  # general (shown), bob; alice and bob in #general
    for button in buttons:
        text = button.cget("text")
        assert contrast(button.cget("text_color"), button.cget("hover_color")) >= 4.5, text


@pytest.mark.parametrize("theme", sorted(PALETTES))
def test_accented_buttons_are_readable_also_under_the_pointer(theme: str) -> None:
    # The dark theme's hover green was 4.3:1 under the button's text.
    colours = accented(PALETTES[theme])
    for background in (colours["fg_color"], colours["hover_color"]):
        assert contrast(colours["text_color"], background) >= 4.5, background


def test_the_emoji_picker_and_the_remember_box_follow_the_theme(
    window: Window, server: Running
) -> None:
    app = window.app
    window.login(server.port, "alice")
    app.chat.emoji_button.invoke()
    picker = app.chat.emoji_window

    def looks() -> dict[str, str]:
        return {
            "picker": picker.cget("fg_color"),
            "emoji": picker.winfo_children()[0].cget("fg_color"),
            "remember": app.login_form.remember.cget("fg_color"),
            "remember's text": app.login_form.remember.cget("text_color"),
        }

    expected = {
        palette: {
            "picker": PALETTES[palette]["window"],
            "emoji": PALETTES[palette]["accent"],
            "remember": PALETTES[palette]["accent"],
            "remember's text": PALETTES[palette]["fg"],
        }
        for palette in ("dark", "light")
    }
    assert looks() == expected["dark"]
    app.chat.theme_switch.toggle()  # with the picker open
    window.pump()
    assert looks() == expected["light"]
    app.chat.close_emoji_picker()
    app.chat.emoji_button.invoke()  # opened anew in the light theme
    picker = app.chat.emoji_window
    assert looks() == expected["light"]


# --- files ----------------------------------------------------------------------------------


def test_send_a_small_file_and_see_its_progress_complete(
    window: Window, server: Running, bob: BlockingClient, tmp_path: Path
) -> None:
    app = window.app
    window.login(server.port, "alice")
    data = bytes(range(256)) * 600  # 150 KiB: three chunks
    path = tmp_path / "notes.bin"
    path.write_bytes(data)
    seen: list[tuple[int, int]] = []
    original = app.vm.transfer_progress

    def progress(transfer_id: int, done: int, total: int) -> object:
        seen.append((done, total))
        return original(transfer_id, done, total)

    app.vm.transfer_progress = progress  # type: ignore[method-assign]
    app.transfers.send_file(path)
    transfer = window.until_transferred("the upload")

    row = app.chat.transfer_rows[transfer.id]
    assert row.label.cget("text") == "Sent notes.bin"
    assert row.bar.get() == 1.0
    assert row.button.cget("text") == "Dismiss"
    assert row.folder is None  # an upload has no folder to show
    assert seen[-1] == (len(data), len(data))
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)

    announced = window.receive(bob, Message, "the file announcement at bob")
    assert announced.sender == "alice"
    assert announced.file is not None
    assert (announced.file.name, announced.file.size) == ("notes.bin", len(data))
    saved = bob.download(announced.file.file_id, tmp_path / "bob-downloads")
    assert saved.read_bytes() == data
    window.until_shown("alice: \u2913 notes.bin (150.0 KiB)")


def test_a_transfer_row_follows_the_theme(window: Window, server: Running, tmp_path: Path) -> None:
    app = window.app
    window.login(server.port, "alice")
    path = tmp_path / "notes.txt"
    path.write_text("notes", encoding="utf-8")
    app.transfers.send_file(path)
    transfer = window.until_transferred("the upload")
    row = app.chat.transfer_rows[transfer.id]
    for palette in (DARK, LIGHT):
        if palette is LIGHT:
            app.chat.theme_switch.toggle()
            window.pump()
        assert row.bar.cget("progress_color") == palette["accent"]
        assert row.button.cget("fg_color") == palette["accent"]
        assert row.button.cget("text_color") == palette["window"]


def test_a_long_file_name_is_shortened_and_its_row_keeps_its_buttons(
    window: Window, server: Running, bob: BlockingClient, tmp_path: Path
) -> None:
    app = window.app
    app.geometry("760x520")  # the smallest the window gets
    window.login(server.port, "alice")
    name = "quarterly-financial-report-final-version-" * 5 + ".pdf"
    path = tmp_path / name
    path.write_text("figures", encoding="utf-8")
    info = bob.send_file(path, room="general")
    window.until_shown(name[:40])
    app.transfers.download(info.file_id)
    transfer = window.until_transferred("the download")
    window.pump(0.3)

    row = app.chat.transfer_rows[transfer.id]
    right_edge = app.winfo_rootx() + app.winfo_width()
    assert row.folder is not None  # in the place of the full bar
    assert not row.bar.winfo_ismapped()
    for widget in (row.folder, row.button):
        assert widget.winfo_ismapped()
        assert widget.winfo_rootx() + widget.winfo_width() <= right_edge
    assert row.label.winfo_rootx() + row.label.winfo_width() <= row.folder.winfo_rootx()
    folder = tmp_path / "downloads" / "sealchat"
    assert transfer.label == f"Saved to {folder / name}"
    shown = str(row.label.cget("text"))  # too narrow to keep the folder whole as well
    assert shown.startswith("Saved to /tmp")
    assert shown.endswith("version-.pdf")
    assert "\u2026" in shown

    app.geometry("1270x680")  # wider: the folder is whole, the name loses its middle
    window.pump(0.5)
    shown = str(row.label.cget("text"))
    assert shown.startswith(f"Saved to {folder}{os.sep}quarterly-fin")
    assert shown.endswith("version-.pdf")
    assert "\u2026" in shown
    assert row.label.winfo_rootx() + row.label.winfo_width() <= row.folder.winfo_rootx()
    assert row.label._label.winfo_reqwidth() <= row.label.winfo_width()
    row.button.invoke()
    window.pump()
    assert app.chat.transfer_rows == {}


def test_finished_transfers_can_be_dismissed_giving_the_transcript_its_room_back(
    window: Window, server: Running, tmp_path: Path
) -> None:
    app = window.app
    window.login(server.port, "alice")
    window.pump(0.5)
    height = app.chat.transcript.winfo_height()
    for n in range(6):  # one after the other: the server takes 4 at a time
        path = tmp_path / f"file{n}.txt"
        path.write_text(f"file {n}", encoding="utf-8")
        app.transfers.send_file(path)
        transfer = app.vm.transfers[max(app.vm.transfers)]
        window.until(lambda t=transfer: t.state is TransferState.DONE, f"upload {n}")
    window.pump(0.5)
    assert app.chat.transcript.winfo_height() < height
    for row in list(app.chat.transfer_rows.values()):
        assert row.button.cget("text") == "Dismiss"
        row.button.invoke()
    window.pump(0.5)
    assert app.chat.transfer_rows == {}
    assert app.vm.transfers == {}
    assert app.chat.transcript.winfo_height() == height


def test_clicking_a_file_announced_by_the_other_client_downloads_it(
    window: Window, server: Running, bob: BlockingClient, tmp_path: Path
) -> None:
    app = window.app
    window.login(server.port, "alice")
    data = os.urandom(5000)
    path = tmp_path / "photo.png"
    path.write_bytes(data)
    info = bob.send_file(path, room="general")
    window.until_shown("bob: \u2913 photo.png (4.9 KiB)")

    click_file_link(window, info.file_id)
    window.until(lambda: app.vm.transfers, "the download to start")
    transfer = window.until_transferred("the download")

    saved = Path(transfer.detail)
    assert saved.read_bytes() == data
    assert saved.parent == tmp_path / "downloads" / "sealchat"
    row = app.chat.transfer_rows[transfer.id]
    assert transfer.label == f"Saved to {saved}"
    assert str(row.label.cget("text")).endswith(f"{os.sep}photo.png")  # the folder may be shortened
    assert row.bar.get() == 1.0

    # Show folder opens the folder, never the file a peer sent (opening it could run it).
    assert row.folder is not None
    assert row.folder.cget("text") == "Show folder"
    opened: list[Path] = []
    app.show_folder = opened.append
    row.folder.invoke()
    assert opened == [saved.parent]

    def no_file_manager(folder: Path) -> None:
        raise FileNotFoundError(2, "No such file or directory", "xdg-open")

    app.show_folder = no_file_manager
    row.folder.invoke()
    window.pump()
    said = f"No file manager could be opened (No such file or directory); the file is in {saved}"
    assert app.chat.banner.cget("text") == said


def test_a_double_click_on_a_file_link_downloads_it_once(
    window: Window, server: Running, bob: BlockingClient, tmp_path: Path
) -> None:
    window.login(server.port, "alice")
    data = os.urandom(5000)
    (tmp_path / "photo.png").write_bytes(data)
    info = bob.send_file(tmp_path / "photo.png", room="general")
    window.until_shown("bob: \u2913 photo.png")
    click_file_link(window, info.file_id, times=2)
    transfer = window.until_transferred("the download")  # the only one
    assert Path(transfer.detail).read_bytes() == data
    assert [p.name for p in (tmp_path / "downloads" / "sealchat").iterdir()] == ["photo.png"]


def click_file_link(window: Window, file_id: str, times: int = 1) -> None:
    """Click the transcript's link to ``file_id`` ``times`` times, as the mouse does."""
    transcript = window.app.chat.transcript
    first = transcript.tag_ranges(f"file:{file_id}")[0]
    transcript.see(first)
    window.pump()
    x, y, _width, height = transcript.bbox(first)
    transcript.event_generate("<Motion>", x=x + 2, y=y + height // 2)
    for _ in range(times):
        transcript.event_generate("<Button-1>", x=x + 2, y=y + height // 2)
        transcript.event_generate("<ButtonRelease-1>", x=x + 2, y=y + height // 2)


def test_a_file_that_cannot_be_read_fails_its_transfer_and_the_window_stays(
    window: Window, server: Running, bob: BlockingClient, tmp_path: Path
) -> None:
    app = window.app
    window.login(server.port, "alice")
    app.transfers.send_file(tmp_path / "gone.txt")  # deleted after the file dialog returned it
    (transfer,) = app.vm.transfers.values()
    window.until(lambda: transfer.state is TransferState.FAILED, "the upload to fail")
    row = app.chat.transfer_rows[transfer.id]
    assert row.label.cget("text") == "gone.txt: failed (cannot read it: No such file or directory)"
    bob.send_message("still connected", room="general")
    window.until_shown("bob: still connected")


def test_a_file_chosen_as_the_session_ends_fails_its_transfer_saying_what_to_do(
    window: Window, server: Running, tmp_path: Path
) -> None:
    app = window.app
    window.login(server.port, "alice")
    notes = tmp_path / "notes.txt"
    notes.write_text("hello", encoding="utf-8")

    def choose(**_options: object) -> str:
        """While the file dialog is open, the password is changed elsewhere."""
        with SqliteStore(tmp_path / "server", beside_server=True) as store:
            store.set_password(user_key("alice"), hash_password("new password", params=CHEAP))
        window.until(app.login_form.winfo_ismapped, "the login form")
        return str(notes)

    with mock.patch.object(filedialog, "askopenfilename", choose):
        app.chat.file_button.invoke()
    (transfer,) = app.vm.transfers.values()
    window.until(lambda: transfer.state is not TransferState.RUNNING, "the row to end")
    window.login(server.port, "alice", "new password")
    row = app.chat.transfer_rows[transfer.id]
    assert row.label.cget("text") == "notes.txt: failed (not connected: log in, then send it again)"
    row.button.invoke()  # Dismiss
    window.until(lambda: not app.vm.transfers, "the row to go")


def test_an_unexpected_error_in_a_task_is_shown_and_the_window_keeps_running(
    window: Window, server: Running, bob: BlockingClient, caplog: pytest.LogCaptureFixture
) -> None:
    app = window.app

    async def broken() -> None:
        raise RuntimeError("a bug")

    app.spawn(broken)  # before the login: on the form
    window.until(window.login_error, "the error on the login form")
    assert window.login_error() == ("Something went wrong (RuntimeError: a bug).")
    window.login(server.port, "alice")
    app.log_file = Path("/home/alice/.local/state/sealchat/log/gui.log")  # as run_gui sets it
    with caplog.at_level(logging.ERROR, logger="sealchat.gui"):
        app.spawn(broken)  # after it: in the banner
        window.until(app.chat.banner.winfo_ismapped, "the error banner")
    assert str(app.chat.banner.cget("text")) == (
        "Something went wrong (RuntimeError: a bug)."
        " The details are in /home/alice/.local/state/sealchat/log/gui.log."
    )
    assert "Traceback" in caplog.text
    assert "a bug" in caplog.text
    bob.send_message("still connected", room="general")
    window.until_shown("bob: still connected")


def test_download_by_file_id(
    window: Window, server: Running, bob: BlockingClient, tmp_path: Path
) -> None:
    app = window.app
    window.login(server.port, "alice")
    data = b"sealchat " * 1000
    path = tmp_path / "readme.txt"
    path.write_bytes(data)
    info = bob.send_file(path, room="general")
    window.until_shown("readme.txt")

    app.transfers.download(info.file_id)
    transfer = window.until_transferred("the download")
    row = app.chat.transfer_rows[transfer.id]
    assert str(row.label.cget("text")).endswith("readme.txt")
    assert str(row.label.cget("text")).startswith("Saved to ")
    assert row.bar.get() == 1.0
    assert Path(transfer.detail).read_bytes() == data


def test_a_download_takes_only_the_file_as_the_window_showed_it(
    window: Window, server: Running, bob: BlockingClient, tmp_path: Path
) -> None:
    # The window hands the client the file as its transcript shows it, so a server that
    # then offers another size or SHA-256 (a full disk, other bytes) is refused.
    app = window.app
    window.login(server.port, "alice")
    (tmp_path / "f.txt").write_text("hi")
    info = bob.send_file(tmp_path / "f.txt", room="general")
    window.until_shown("f.txt")
    client = app.controller.client
    assert client is not None
    download = client.download
    expected: list[object] = []

    async def noted(file_id: str, **options: Any) -> Path:
        expected.append(options.get("expected"))
        return await download(file_id, **options)

    with mock.patch.object(client, "download", noted):
        app.transfers.download(info.file_id)
        transfer = window.until_transferred("the download")
    assert transfer.state is TransferState.DONE
    assert expected == [info]


# --- the connection and closing -------------------------------------------------------------


def test_reconnect_banner_when_the_server_goes_away(window: Window, server: Running) -> None:
    app = window.app
    window.login(server.port, "alice")
    assert not app.chat.banner.winfo_ismapped()
    server.stop()
    window.until(
        lambda: str(app.chat.banner.cget("text")).startswith("Connection lost"),
        "the reconnect banner",
    )
    assert app.chat.banner.winfo_ismapped()
    # Closing while it waits to reconnect still ends cleanly (checked by the fixture).


def test_a_password_changed_elsewhere_brings_back_the_login_form_saying_so(
    window: Window, server: Running, tmp_path: Path
) -> None:
    app = window.app
    window.login(server.port, "alice")
    with SqliteStore(tmp_path / "server", beside_server=True) as store:
        new_hash = hash_password("a brand new password", params=CHEAP)
        assert store.set_password(user_key("alice"), new_hash)
    window.until(app.login_form.winfo_ismapped, "the login form again")
    assert window.login_error() == "Your password was changed; log in again with the new one"
    assert not app.chat.winfo_ismapped()


def change_password_elsewhere(tmp_path: Path, user: str, password: str) -> None:
    """Change ``user``'s password in the server's store, as another device would: the
    sessions of ``user`` end."""
    with SqliteStore(tmp_path / "server", beside_server=True) as store:
        assert store.set_password(user_key(user), hash_password(password, params=CHEAP))


def test_after_a_session_ends_by_itself_the_keys_go_to_the_login_form(
    window: Window, server: Running, tmp_path: Path
) -> None:
    app = window.app
    window.login(server.port, "alice")
    window.press_keys("my draft")
    app.chat.emoji_button.invoke()
    change_password_elsewhere(tmp_path, "alice", "the new one 2")
    window.until(app.login_form.winfo_ismapped, "the login form again")
    assert app.focus_get() is app.login_form.password._entry  # the name is filled in
    assert app.chat.emoji_window is None  # gone with the chat: no emoji into a hidden box

    window.press_keys("the new one 2\n")  # replaces the old password; Enter logs in
    window.until(app.vm.people_in_current, "alice to be logged in with the new password")
    assert app.chat.input.get("1.0", "end-1c") == "my draft"  # as she left it, no password
    assert app.focus_get() is app.chat.input._textbox


def test_when_the_client_gives_up_reconnecting_the_login_form_says_why(
    display: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    environment(tmp_path, monkeypatch)
    port = free_port()
    with open_window(tmp_path / "gui.json", display) as window:
        app = window.app
        with running_server("trio", tmp_path / "server", port=port):
            window.login(port, "alice")
            app.chat.input.insert("1.0", "alice's unsent draft")

        def form_and_trio(_box: Dialog) -> None:  # while "Server key changed" is open
            window.until(app.login_form.winfo_ismapped, "the login form behind the box")
            trio_runs(window)

        window.while_next_dialog_open = form_and_trio
        with running_server("trio", tmp_path / "server", port=port) as moved:  # another key
            window.until(app.login_form.winfo_ismapped, "the login form again", timeout=60)
            assert window.login_error() == "The server's key changed; the connection was refused."
            assert [d.title for d in window.dialogs] == ["Trust this server?", "Server key changed"]
            assert window.dialogs[-1].message.startswith("The key of 127.0.0.1:")  # a sentence
            assert not app.chat.winfo_ismapped()
            assert (app.title(), app.vm.me, app.vm.banner) == ("sealchat", "", "")

            KnownServers().pin(server_name("127.0.0.1", port), moved.fingerprint)  # confirmed
            window.login(port, "bob")  # the form works again, for someone else too
            assert not app.chat.banner.winfo_ismapped()
            assert app.chat.input.get("1.0", "end").strip() == ""  # nothing of alice's
            window.close()


@dataclass
class Away:
    """A window whose server stops and starts again, on the same port with the same key."""

    window: Window
    port: int
    key: X25519PrivateKey
    data_dir: Path
    hub: HubConfig | None = None

    def server(self) -> AbstractContextManager[Running]:
        """The server, started (again) for the block."""
        return running_server("trio", self.data_dir, port=self.port, key=self.key, hub=self.hub)

    def until_lost(self) -> None:
        self.window.until(lambda: self.window.app.vm.banner.startswith("Connection lost"), "lost")

    def until_back(self) -> None:
        self.window.until(lambda: not self.window.app.vm.banner, "the reconnect", 60)


@contextmanager
def away(
    display: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hub: HubConfig | None = None
) -> Iterator[Away]:
    """A window (with this test's settings and pins) and a server (with ``hub``) it can lose
    and get back."""
    environment(tmp_path, monkeypatch)
    with open_window(tmp_path / "gui.json", display) as window:
        key = X25519PrivateKey.generate()
        yield Away(window, free_port(), key, tmp_path / "server", hub)


def test_after_a_reconnect_people_and_rooms_show_what_changed_meanwhile(
    display: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with away(display, tmp_path, monkeypatch) as gone:
        window, app, port = gone.window, gone.window.app, gone.port
        with gone.server() as first:
            window.login(port, "alice")
            with first.login("bob"):
                window.until(lambda: "\u25cf bob" in button_texts(app.chat.people_list), "bob")
        gone.until_lost()
        window.pump()  # while it is away, nobody shows online, alice neither
        assert button_texts(app.chat.people_list) == ["\u25cb alice", "\u25cb bob"]
        # The same server comes back. Until the window is pumped again it cannot reconnect:
        # carol's first login (which puts her in #general) and alice joining a room from
        # elsewhere happen while it is away.
        with gone.server() as second:
            with second.login("carol"), second.login("alice") as elsewhere:
                elsewhere.join("dev")
                gone.until_back()
                window.until(lambda: "\u25cf carol" in button_texts(app.chat.people_list), "carol")
                assert "\u25cb bob" in button_texts(app.chat.people_list)
                assert "\u25cf alice" in button_texts(app.chat.people_list)
                window.until(lambda: "#dev" in app.chat.conversation_buttons, "# dev")
            window.close()


def test_the_input_box_holds_to_the_message_limit_said_at_the_last_login(
    display: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    banner = "This message has {} characters; at most {} fit in one message."
    with away(display, tmp_path, monkeypatch, HubConfig(max_message_chars=100)) as gone:
        window, app, port = gone.window, gone.window.app, gone.port
        with gone.server():
            window.login(port, "alice")
            window.type_and_enter("y" * 101)
            window.until(app.chat.banner.winfo_ismapped, "the error banner")
            assert str(app.chat.banner.cget("text")).startswith(banner.format(101, 100))
        gone.until_lost()
        gone.hub = HubConfig(max_message_chars=50)  # it comes back taking shorter ones
        with gone.server() as second:
            gone.until_back()
            app.chat.input.delete("1.0", "end")
            window.type_and_enter("z" * 51)
            window.until(
                lambda: str(app.chat.banner.cget("text")).startswith(banner.format(51, 50)),
                "the error banner with the new limit",
            )
            assert app.chat.input.get("1.0", "end-1c") == "z" * 51
            with second.login("bob") as bob:
                assert bob.history(room="general") == ([], False)  # nothing was sent
            window.close()


def test_a_room_left_elsewhere_while_away_goes_once_the_link_is_back(
    display: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with away(display, tmp_path, monkeypatch) as gone:
        window, app, port = gone.window, gone.window.app, gone.port
        with gone.server() as first:
            with first.login("alice") as elsewhere:
                elsewhere.join("dev")
            window.login(port, "alice")
            window.until(lambda: "#dev" in app.chat.conversation_buttons, "# dev")
            app.controller.select("#dev")
            window.until(lambda: "\u25cf alice" in button_texts(app.chat.people_list), "dev's")
        gone.until_lost()
        with gone.server() as second:
            with second.login("alice") as elsewhere:
                elsewhere.leave("dev")  # from another device, while the window is away
            with second.login("carol"):  # her first login puts her in #general
                gone.until_back()
                window.until(lambda: "#dev" not in app.chat.conversation_buttons, "# dev gone")
                assert app.vm.current == "#general"
                window.until(
                    lambda: "\u25cf carol" in button_texts(app.chat.people_list), "#general's"
                )
                assert not app.chat.banner.winfo_ismapped(), app.chat.banner.cget("text")
            window.close()


@pytest.mark.parametrize("when", ["shown while reconnecting", "loading as the link drops"])
def test_a_first_page_that_could_not_load_while_away_loads_once_the_link_is_back(
    display: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    with away(display, tmp_path, monkeypatch) as gone:
        window, app, port = gone.window, gone.window.app, gone.port
        with gone.server() as first:
            with first.login("bob") as bob:
                bob.join("dev")
                bob.send_message("said before alice came", room="dev")
            with first.login("alice") as elsewhere:
                elsewhere.join("dev")
            window.login(port, "alice")
            window.until(lambda: "#dev" in app.chat.conversation_buttons, "# dev")
            assert app.controller.client is not None
            history, held = app.controller.client.history, []

            async def held_until_the_link_drops(**options: object) -> object:
                if not held:  # the first request waits for the drop, then fails on it
                    held.append(options)
                    while app.controller.client is not None and app.controller.client.online:
                        await trio.sleep(0.05)
                return await history(**options)

            monkeypatch.setattr(app.controller.client, "history", held_until_the_link_drops)
            if when == "loading as the link drops":
                app.controller.select("#dev")
                window.until(lambda: held, "the first page to be asked for")
        gone.until_lost()
        if when == "shown while reconnecting":
            app.controller.select("#dev")
        window.until(lambda: app.vm.error, "the first page to fail")
        with gone.server():
            gone.until_back()
            window.until_shown("bob: said before alice came")
            assert not app.chat.banner.winfo_ismapped(), app.chat.banner.cget("text")
            window.close()


def test_messages_read_on_another_device_while_away_show_once_the_link_is_back(
    display: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pages of 2 messages: what was missed takes several.
    with away(display, tmp_path, monkeypatch, HubConfig(history_page=2)) as gone:
        window, app, port = gone.window, gone.window.app, gone.port
        with gone.server() as first:
            with first.login("alice") as elsewhere:
                elsewhere.join("dev")
            window.login(port, "alice")
            with first.login("bob") as bob:
                bob.join("dev")
                bob.send_message("dev before the drop", room="dev")
                bob.send_message("before the drop", room="general")
                window.until_shown("bob: before the drop")
                window.until(lambda: app.vm.conversation("#dev").ids, "#dev's message")
        gone.until_lost()
        with gone.server() as second:
            with second.login("bob") as bob:
                for n in range(5):
                    bob.send_message(f"away {n}", room="general")
                for n in range(3):
                    bob.send_message(f"dev away {n}", room="dev")
            with second.login("alice") as phone:  # her phone reads them: no replay for the window
                for _ in range(8):
                    phone.next(Message)
            gone.until_back()
            window.until_shown("bob: away 0")
            assert window.transcript_lines() == [
                "bob: before the drop",
                *(f"bob: away {n}" for n in range(5)),
            ]
            app.controller.select("#dev")
            window.until_shown("bob: dev away 0")
            assert window.transcript_lines() == [
                "bob: dev before the drop",
                *(f"bob: dev away {n}" for n in range(3)),
            ]
            window.close()


def test_typing_while_reconnecting_leaves_no_error_once_reconnected(
    display: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with away(display, tmp_path, monkeypatch) as gone:
        window, app, port = gone.window, gone.window.app, gone.port
        with gone.server():
            window.login(port, "alice")
        gone.until_lost()
        assert app.controller.client is not None
        tried: list[bool] = []
        typing = app.controller.client.typing

        async def tried_typing(active: bool, **target: str) -> None:
            try:
                await typing(active, **target)
            finally:
                tried.append(active)

        with mock.patch.object(app.controller.client, "typing", tried_typing):
            box = app.chat.input._textbox
            box.focus_force()
            box.insert("end", "h")
            box.event_generate("<KeyRelease>", keysym="h")  # a draft, while reconnecting
            window.until(lambda: tried, "the typing notice to be tried")
        with gone.server():
            gone.until_back()
            assert not app.chat.banner.winfo_ismapped(), app.chat.banner.cget("text")
            window.close()


def test_the_window_handles_its_own_events_while_trio_is_busy(window: Window) -> None:
    app = window.app
    replayed: list[int] = []
    tk_ran_after: list[int] = []

    async def long_replay() -> None:
        """Messages one after another, as a replay of a long backlog brings them."""
        app.after(0, lambda: tk_ran_after.append(len(replayed)))  # a redraw, a click...
        while not tk_ran_after and len(replayed) < 2000:
            replayed.append(len(replayed) + 1)
            message = Message(text="missed", room="general", id=replayed[-1], sender="bob")
            app.redraw(app.vm.apply(message, time.time()))
            await trio.lowlevel.checkpoint()

    app.spawn(long_replay)
    window.until(lambda: tk_ran_after, "Tk's callback")
    assert tk_ran_after[0] < 2000, "Tk waited for the whole replay"


def test_closing_the_window_cancels_trio_and_finishes_cleanly(
    window: Window, server: Running, bob: BlockingClient
) -> None:
    app = window.app
    window.login(server.port, "alice")
    close = app.tk.call("wm", "protocol", app._w, "WM_DELETE_WINDOW")
    assert close, "no WM_DELETE_WINDOW handler"
    app.tk.call(close)  # what the window manager's close button does
    window.until_finished()
    assert app.guest.result is not None
    app.guest.result.unwrap()
    assert destroyed(app)
    while True:  # the server saw alice go (after her arrival, which bob saw first)
        presence = bob.next(Presence, timeout=30)
        if presence.user == "alice" and not presence.online:
            break


def test_a_sigterm_ends_the_session_as_a_logout_does(
    window: Window, server: Running, bob: BlockingClient
) -> None:
    # The desktop session ending (SIGTERM) killed the window: the server saw the connection
    # drop, not the user leave, and what had been read was not told.
    app = window.app
    window.login(server.port, "alice")
    with closed_on_signals(app):
        signal.raise_signal(signal.SIGTERM)
        window.until_finished()
    app.guest.result.unwrap()  # type: ignore[union-attr]
    assert destroyed(app)
    assert window.errors == []
    while True:  # the server saw alice go (after her arrival, which bob saw first)
        presence = bob.next(Presence, timeout=30)
        if presence.user == "alice" and not presence.online:
            break


def test_a_close_asked_before_trio_ran_closes_the_window_once_it_does(
    display: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A Ctrl-C as the window opened, before trio's first step, was lost.
    from sealchat.gui.app import App
    from sealchat.gui.settings import Settings

    environment(tmp_path, monkeypatch)
    app = App(Settings.load(tmp_path / "gui.json"))
    app.close()  # what the signal's handler asks for
    app.start()
    deadline = time.monotonic() + 30
    while app.guest.result is None:
        assert time.monotonic() < deadline, "trio did not finish"
        with suppress(tk.TclError):
            app.update()
    app.guest.result.unwrap()
    assert destroyed(app)


def test_the_signal_wake_up_fd_is_put_back_or_cleared_when_trio_ends(display: str) -> None:
    # Two windows' runs overlapping: the first one's pipe, closed when it ended, was put
    # back by the second as "the one before it", and setting it raised (EBADF).
    from sealchat.gui.guest import TkGuest

    async def main() -> None:
        await trio.sleep(0)

    before, closed_since = os.pipe()
    os.set_blocking(closed_since, False)
    root = tk.Tk()
    try:
        signal.set_wakeup_fd(closed_since)
        guest = TkGuest(root)
        guest.start(main)
        os.close(closed_since)
        deadline = time.monotonic() + 30
        while guest.running:
            assert time.monotonic() < deadline, "trio did not finish"
            root.update()
        guest.result.unwrap()  # type: ignore[union-attr]
        assert signal.set_wakeup_fd(-1) == -1  # none: not the closed one, nor the guest's
    finally:
        signal.set_wakeup_fd(-1)
        os.close(before)
        root.destroy()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_closes_a_window_idle_in_its_main_loop(
    display: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, signum: int
) -> None:
    # Ctrl-C in the terminal that started `sealchat gui` did nothing while Tk waited for an
    # event (Python runs a signal's handler only when Tk calls back), and trio's KeyboardInterrupt
    # then went to Tk's error report; SIGTERM killed the window without a logout.
    environment(tmp_path, monkeypatch)
    monkeypatch.setenv("DISPLAY", display)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    program = (
        "import sys\n"
        "from pathlib import Path\n"
        "from sealchat.gui import app\n"
        "start = app.App.start\n"
        "def started(self):\n"
        "    start(self)\n"
        "    self.after(100, lambda: print('ready', flush=True))\n"
        "app.App.start = started\n"
        "sys.exit(app.run_gui(log_dir=Path(sys.argv[1])))\n"
    )
    gui = subprocess.Popen(
        [sys.executable, "-c", program, str(tmp_path / "logs")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert gui.stdout is not None
        assert gui.stdout.readline() == "ready\n"
        time.sleep(0.3)  # Tk now waits in its main loop, no event due
        gui.send_signal(signum)
        assert gui.wait(timeout=60) == 0
        assert gui.communicate()[1] == ""
    finally:
        if gui.poll() is None:
            gui.kill()
            gui.wait()


def test_closing_the_window_while_the_file_dialog_is_open_finishes_cleanly(
    window: Window, server: Running
) -> None:
    app = window.app
    window.login(server.port, "alice")
    close = app.tk.call("wm", "protocol", app._w, "WM_DELETE_WINDOW")
    app.after(0, app.chat.file_button.invoke)  # the real dialog, modal: Tk runs on inside it
    app.after(500, lambda: app.tk.call(close))  # the close button, while the dialog is open
    window.until_finished()
    assert destroyed(app)
    assert window.errors == []


def test_closing_the_window_while_the_question_of_the_servers_key_is_open_finishes_cleanly(
    window: Window, server: Running
) -> None:
    app = window.app
    close = app.tk.call("wm", "protocol", app._w, "WM_DELETE_WINDOW")
    stuck: list[bool] = []

    def close_once_open() -> None:
        """The close button, once the real question is open; the window then closes by
        itself (otherwise, after 30 s, the question is answered for the test to go on)."""
        if not app.tk.call("winfo", "exists", ".__tk__messagebox"):
            app.after(20, close_once_open)
            return
        app.tk.call(close)
        app.after(30_000, answer_as_still_open)

    def answer_as_still_open() -> None:
        stuck.append(True)
        app.tk.eval(".__tk__messagebox.no invoke")

    window.fill_login(server.port, "alice", PASSWORD)
    with mock.patch.object(messagebox, "askyesno", ASK_YES_NO):
        window.submit_login()
        close_once_open()
        window.until_finished()
    assert not stuck, "the window stayed until the question was answered"
    assert destroyed(app)
    assert window.errors == []
    assert app.vm.me == ""


def test_closing_before_logging_in_finishes_cleanly(window: Window) -> None:
    app = window.app
    app.close()
    window.until_finished()
    assert app.guest.result is not None
    app.guest.result.unwrap()
    assert destroyed(app)


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("invoice\u202egpj.exe", "invoice\\u202egpj.exe"),
        ("a\u00adb\u200e.exe", "a\\xadb\\u200e.exe"),
    ],
)
def test_file_names_are_shown_without_bidi_tricks_or_invisible_marks(name: str, shown: str) -> None:
    info = FileInfo(file_id="f" * 32, name=name, size=2048, sha256=bytes(32))
    assert file_label(info) == f"\u2913 {shown} (2.0 KiB) — click to download"


def test_a_message_shows_the_marks_writing_needs_but_no_bidi_tricks(
    window: Window, server: Running, bob: BlockingClient
) -> None:
    england = "\U0001f3f4\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f"
    texts = [
        "Donau\u00addampf\u00adschiff",
        "price: \u200e100 \u05e9\u05e7\u05dc",
        "\u05e9\u05dc\u05d5\u05dd\u200f!",
        "\u061c\u0627\u0644\u0633\u0644\u0627\u0645",
        "no\u2060break",
        f"go {england}",
    ]
    window.login(server.port, "alice")
    for text in [*texts, "invoice\u202egpj.exe"]:
        bob.send_message(text, room="general")
    window.until_shown("bob: invoice")
    assert window.transcript_lines() == [f"bob: {text}" for text in texts] + [
        "bob: invoice\\u202egpj.exe"
    ]


def test_tabs_in_a_message_stay_tabs(window: Window, server: Running, bob: BlockingClient) -> None:
    window.login(server.port, "alice")
    bob.send_message("def f():\n\treturn 1", room="general")
    window.until_shown("return 1")
    assert window.transcript_lines()[-2:] == ["bob: def f():", "\treturn 1"]


def _download_of_bobs_file(
    window: Window,
    server: Running,
    bob: BlockingClient,
    tmp_path: Path,
    download: Callable[..., Awaitable[Path]],
) -> Transfer:
    """Alice logged in, downloading a file of bob's with ``download`` in place of the
    client's own."""
    app = window.app
    window.login(server.port, "alice")
    (tmp_path / "f.txt").write_text("hi")
    info = bob.send_file(tmp_path / "f.txt", room="general")
    window.until_shown("f.txt")
    assert app.controller.client is not None
    with mock.patch.object(app.controller.client, "download", download):
        app.transfers.download(info.file_id)
        window.pump(0.2)
    (transfer,) = app.vm.transfers.values()
    return transfer


def test_a_transfer_whose_task_fails_unexpectedly_ends_and_can_be_dismissed(
    window: Window, server: Running, bob: BlockingClient, tmp_path: Path
) -> None:
    app = window.app

    async def a_bug(*_args: object, **_options: object) -> Path:
        raise RuntimeError("a bug")

    transfer = _download_of_bobs_file(window, server, bob, tmp_path, a_bug)
    window.until(app.chat.banner.winfo_ismapped, "the banner")
    assert transfer.state is TransferState.FAILED
    app.transfers.dismiss_transfer(transfer.id)
    window.pump()
    assert transfer.id not in app.vm.transfers


def test_the_join_box_keeps_a_room_name_until_the_room_is_joined(
    window: Window, server: Running
) -> None:
    app = window.app
    window.login(server.port, "alice")
    box = app.chat.join_entry
    box.insert(0, "r" * 65)
    app.chat.join_button.invoke()
    window.pump()
    assert app.vm.error == "This room name has 65 characters; at most 64 are allowed. Shorten it."
    assert app.chat.banner.winfo_ismapped()
    assert box.get() == "r" * 65

    box.delete(0, "end")
    box.insert(0, "Bad Room!")
    app.chat.join_button.invoke()
    window.pump()
    assert str(app.chat.banner.cget("text")) == (  # not its case: the window lowercases it
        "A room name is up to 64 letters (a to z), digits, '.', '_' or '-', starting with a "
        "letter or digit."
    )
    assert box.get() == "Bad Room!"  # to be corrected, not typed again

    box.delete(0, "end")
    box.insert(0, " Dev")
    app.chat.join_button.invoke()
    window.until(lambda: app.vm.current == "#dev", "#dev")
    assert box.get() == ""
    assert box._entry.get() == "room name"  # the hint again: the focus is not there
    assert not app.chat.banner.winfo_ismapped()


def test_clicking_a_person_clears_an_old_error(window: Window, server: Running) -> None:
    app = window.app
    window.login(server.port, "alice")
    app.redraw(app.failed("some earlier error"))
    window.pump()
    app.controller.open_direct("bob")  # what a click in the People list does
    window.pump()
    assert not app.chat.banner.winfo_ismapped()


def test_server_text_in_the_banner_and_the_login_form_is_escaped(
    window: Window, server: Running
) -> None:
    app = window.app
    app.login_form.show_error("refused: ok\u202egpj.exe")
    assert "\\u202e" in str(app.login_form.error.cget("text"))
    window.login(server.port, "alice")
    app.redraw(app.vm.apply(Error(code="x", detail="ok\u202egpj.exe\nfake line"), 0.0))
    window.pump()
    shown = str(app.chat.banner.cget("text"))
    assert "\u202e" not in shown
    assert "\n" not in shown


def test_names_from_the_server_show_hidden_characters_escaped_everywhere(
    window: Window, server: Running
) -> None:
    # A server may send names with any characters (only their length is checked): a line
    # separator or a bidi override in a name must not dress up the sidebar, the people list,
    # the typing line or the title as something else.
    app = window.app
    window.login(server.port, "alice")
    vm, spoof, room = app.vm, "eve\u2028\u25cf bob", "x\u202eevil"
    app.redraw(vm.apply(Message(text="hi", to="alice", id=99, sender=spoof, ts=time.time()), 0))
    app.redraw(vm.apply(RoomJoined(room=room), 0.0))
    app.redraw(vm.set_members("general", [MemberInfo(name=spoof, online=True)]))
    app.redraw(vm.apply(Typing(room="general", user=spoof), time.time()))
    app.redraw(vm.logged_in("ali\x1bce"))
    window.pump()
    shown = [
        *button_texts(app.chat.conversation_list),
        *button_texts(app.chat.people_list),
        window.typing(),
        app.title(),
    ]
    assert shown == [
        "# general",
        "# x\\u202eevil",
        "@ eve\\u2028\u25cf bob  (1)",
        "\u25cf eve\\u2028\u25cf bob",
        "eve\\u2028\u25cf bob is typing…",
        "sealchat — ali\\x1bce",
    ]
    people_buttons(window)["eve\\u2028\u25cf bob"].invoke()  # still opens that conversation
    window.until(lambda: vm.current == direct_key(spoof), "the conversation with eve")


# --- leaving a room, logging out ------------------------------------------------------------


def test_leave_room_takes_the_room_shown_from_the_sidebar_and_shows_general(
    window: Window, server: Running, bob: BlockingClient
) -> None:
    app = window.app
    bob.join("dev")
    log_in_after_joining(window, server, "books", "dev")
    window.until(lambda: "#dev" in app.chat.conversation_buttons, "# dev")
    app.controller.open_direct("bob")
    window.pump()
    assert app.chat.leave_button.cget("state") == "disabled"  # a direct conversation
    app.chat.conversation_buttons["#dev"].invoke()
    window.until(lambda: "\u25cf bob" in button_texts(app.chat.people_list), "dev's people")
    assert app.chat.leave_button.cget("state") == "normal"

    app.chat.leave_button.invoke()
    window.until(lambda: "#dev" not in app.chat.conversation_buttons, "# dev gone")
    assert app.vm.current == "#general"
    assert button_texts(app.chat.conversation_list) == ["# books", "# general", "@ bob"]
    assert "dev" not in app.vm.members
    window.until(app.vm.people_in_current, "#general's people")
    assert "alice" not in [m.name for m in bob.members("dev")]  # the server knows it
    window.pump(0.5)  # the server's RoomLeft event of it changes nothing more
    assert button_texts(app.chat.conversation_list) == ["# books", "# general", "@ bob"]
    assert not app.chat.banner.winfo_ismapped(), app.chat.banner.cget("text")


def test_leaving_general_is_refused_saying_why(window: Window, server: Running) -> None:
    app = window.app
    window.login(server.port, "alice")
    assert app.chat.leave_button.cget("state") == "normal"  # the server says why not
    app.chat.leave_button.invoke()
    window.until(app.chat.banner.winfo_ismapped, "the banner")
    assert app.chat.banner.cget("text") == (
        "You cannot leave #general: everyone on this server stays in it."
    )
    assert button_texts(app.chat.conversation_list) == ["# general"]
    assert app.chat.leave_button.cget("state") == "normal"  # the answer came


def test_a_double_click_on_leave_room_leaves_once(window: Window, server: Running) -> None:
    app = window.app
    log_in_after_joining(window, server, "dev")
    window.until(lambda: "#dev" in app.chat.conversation_buttons, "# dev")
    app.chat.conversation_buttons["#dev"].invoke()
    window.until(
        lambda: app.vm.people_in_current() and app.vm.conversation("#dev").first_page_loaded,
        "#dev's people and history",
    )
    client = app.controller.client
    asked: list[str] = []
    answered: list[str] = []
    real_leave = client.leave

    async def leave(room: str) -> None:
        asked.append(room)
        try:
            await real_leave(room)
        finally:
            answered.append(room)

    with mock.patch.object(client, "leave", leave):
        app.chat.leave_button.invoke()
        assert app.chat.leave_button.cget("state") == "disabled"  # until the server answers
        app.chat.leave_button.invoke()  # the second click of a double click
        window.until(lambda: "#dev" not in app.chat.conversation_buttons, "# dev gone")
        window.until(lambda: len(answered) == len(asked), "the server's answers")
    assert app.vm.current == "#general"
    assert not app.chat.banner.winfo_ismapped(), app.chat.banner.cget("text")
    assert app.chat.leave_button.cget("state") == "normal"  # #general: the server says why not


def test_leaving_a_room_before_its_history_came_shows_no_error(
    window: Window, server: Running
) -> None:
    app = window.app
    log_in_after_joining(window, server, "dev")
    window.until(lambda: "#dev" in app.chat.conversation_buttons, "# dev")
    client = app.controller.client
    assert client is not None
    left = trio.Event()
    real_history, real_leave = client.history, client.leave

    async def history_after_the_leave(**options: Any) -> Any:
        if options.get("room") == "dev":
            await left.wait()  # the page's request reaches the server after the leave
        return await real_history(**options)

    async def leave(room: str) -> None:
        try:
            await real_leave(room)
        finally:
            left.set()

    with (
        mock.patch.object(client, "history", history_after_the_leave),
        mock.patch.object(client, "leave", leave),
    ):
        app.chat.conversation_buttons["#dev"].invoke()
        app.chat.leave_button.invoke()
        window.until(lambda: "#dev" not in app.chat.conversation_buttons, "# dev gone")
        window.until(lambda: not app.controller._loading_history, "the page's refusal")
    window.pump(0.3)
    assert app.vm.current == "#general"
    assert not app.chat.banner.winfo_ismapped(), app.chat.banner.cget("text")


def test_log_out_brings_back_the_form_for_another_user_with_nothing_left_of_the_first(
    window: Window, server: Running, bob: BlockingClient, tmp_path: Path
) -> None:
    app = window.app
    window.login(server.port, "alice")
    app.chat.join_entry.insert(0, "dev")
    app.chat.join_button.invoke()
    window.until(lambda: app.vm.current == "#dev", "#dev")
    bob.send_message("for alice", to="alice")
    window.until(lambda: "@bob" in app.chat.conversation_buttons, "bob's message")
    (tmp_path / "notes.txt").write_text("hello", encoding="utf-8")
    app.transfers.send_file(tmp_path / "notes.txt")
    window.until_transferred("the upload")
    app.chat.input.insert("1.0", "alice's draft")
    app.chat.join_entry.insert(0, "random")
    app.redraw(app.failed("an old error"))

    app.chat.logout_button.invoke()
    window.until(app.login_form.winfo_ismapped, "the login form")
    assert [d.title for d in window.dialogs] == ["Trust this server?"]  # nothing running
    form = app.login_form
    assert (form.host.get(), form.port.get(), form.username.get(), form.password.get()) == (
        "127.0.0.1",
        str(server.port),
        "alice",
        "",
    )
    assert window.login_error() == "You are logged out."
    assert app.focus_get() is form.password._entry
    assert (app.title(), app.vm.me, app.vm.transfers, app.chat.transfer_rows) == (
        "sealchat",
        "",
        {},
        {},
    )
    while True:  # the server saw alice go
        presence = window.receive(bob, Presence, "alice's presence at bob")
        if presence.user == "alice" and not presence.online:
            break

    window.login(server.port, "carol")
    assert button_texts(app.chat.conversation_list) == ["# general"]
    assert app.chat.input.get("1.0", "end").strip() == ""
    assert app.chat.join_entry.get() == ""
    assert app.chat.join_entry._entry.get() == "room name"  # its hint, shown again
    assert not app.chat.banner.winfo_ismapped(), app.chat.banner.cget("text")
    assert "for alice" not in window.transcript()


def test_unread_counts_are_saved_as_they_change_and_come_back_after_logging_out_and_in(
    window: Window,
    server: Running,
    bob: BlockingClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("sealchat.gui.controller.UNREAD_SAVED_EVERY", 0.1)
    app = window.app
    conversations = app.chat.conversation_list
    window.login(server.port, "alice")
    bob.send_message("for alice", to="alice")
    window.until(lambda: "@ bob  (1)" in button_texts(conversations), "bob's message")

    def saved() -> object:
        with suppress(OSError, ValueError, LookupError):  # not written yet
            data = json.loads((tmp_path / "unread.json").read_text(encoding="utf-8"))
            return data["accounts"][f"alice@127.0.0.1:{server.port}"]["@bob"]["unread"]
        return None

    window.until(saved, "the unread message saved while the session runs")
    app.chat.logout_button.invoke()
    window.until(app.login_form.winfo_ismapped, "the login form")
    bob.send_message("are you there?", to="alice")

    window.login(server.port, "carol")  # another account: nothing of alice's
    assert button_texts(conversations) == ["# general"]
    app.chat.logout_button.invoke()
    window.until(app.login_form.winfo_ismapped, "the login form")
    window.login(server.port, "alice")
    window.until(lambda: "@ bob  (2)" in button_texts(conversations), "1 + 1 unread")


def test_unread_counts_that_could_not_be_saved_are_saved_once_the_disk_takes_them(
    window: Window,
    server: Running,
    bob: BlockingClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr("sealchat.gui.controller.UNREAD_SAVED_EVERY", 0.1)
    refusals = 3
    save = UnreadStore.save

    def full_disk_at_first(*args: Any) -> None:
        nonlocal refusals
        if refusals:
            refusals -= 1
            raise OSError(28, "No space left on device")
        save(*args)

    monkeypatch.setattr(UnreadStore, "save", full_disk_at_first)
    with caplog.at_level(logging.WARNING, logger="sealchat.gui"):
        window.login(server.port, "alice")
        bob.send_message("for alice", to="alice")
        window.until(lambda: refusals == 0, "three refused saves")
        window.until((tmp_path / "unread.json").exists, "a save once the disk has room")
    data = json.loads((tmp_path / "unread.json").read_text(encoding="utf-8"))
    assert data["accounts"][f"alice@127.0.0.1:{server.port}"]["@bob"]["unread"]
    warnings = [r.getMessage() for r in caplog.records if "unread" in r.getMessage()]
    assert len(warnings) == 1, warnings  # one warning, not one per attempt
    assert "No space left on device" in warnings[0]


def _download_that_runs(
    window: Window, server: Running, bob: BlockingClient, tmp_path: Path
) -> Transfer:
    """Alice logged in, downloading a file of bob's that never ends."""

    async def stuck(*_args: object, **_options: object) -> Path:
        await trio.sleep_forever()

    transfer = _download_of_bobs_file(window, server, bob, tmp_path, stuck)
    assert transfer.state is TransferState.RUNNING
    return transfer


def test_closing_the_window_during_a_transfer_asks_first(
    window: Window, server: Running, bob: BlockingClient, tmp_path: Path
) -> None:
    app = window.app
    transfer = _download_that_runs(window, server, bob, tmp_path)
    window.trust = False  # "No": the window stays, still downloading
    app.close_asked()  # the window's close button
    window.pump(0.3)
    assert window.dialogs[-1] == Dialog(
        "askyesno",
        "Close sealchat?",
        "If you close the window now, 1 file transfer still running will be stopped. "
        "Close the window anyway?",
    )
    assert app.chat.winfo_ismapped()
    assert transfer.state is TransferState.RUNNING
    window.trust = True
    app.close_asked()
    window.until_finished()


def test_log_out_during_a_transfer_asks_first_and_stops_it(
    window: Window, server: Running, bob: BlockingClient, tmp_path: Path
) -> None:
    app = window.app
    transfer = _download_that_runs(window, server, bob, tmp_path)
    window.trust = False  # "No": still logged in, still downloading
    app.chat.logout_button.invoke()
    window.pump(0.3)
    assert [d.title for d in window.dialogs][-1] == "Log out?"
    assert window.dialogs[-1].message == (
        "If you log out now, 1 file transfer still running will be stopped. Log out anyway?"
    )
    assert app.chat.winfo_ismapped()
    assert transfer.state is TransferState.RUNNING

    window.trust = True
    app.chat.logout_button.invoke()
    window.until(app.login_form.winfo_ismapped, "the login form")
    window.until(lambda: transfer.state is TransferState.CANCELLED, "the download to stop")
    assert (app.vm.transfers, app.chat.transfer_rows) == ({}, {})
    assert window.errors == []


def test_leave_room_and_log_out_show_in_the_smallest_window(
    window: Window, server: Running
) -> None:
    app = window.app
    window.login(server.port, "alice")
    app.geometry("760x520")
    window.until(lambda: app.winfo_height() == 520, "the smallest window")
    window.pump(0.3)
    bottom = app.winfo_rooty() + app.winfo_height()
    for widget in (app.chat.leave_button, app.chat.logout_button, app.chat.theme_switch):
        assert widget.winfo_ismapped(), widget.cget("text")
        assert widget.winfo_rooty() + widget.winfo_height() <= bottom, widget.cget("text")


def test_a_long_error_shows_whole_in_the_smallest_window(window: Window, server: Running) -> None:
    # It was one line, centred: in a small window, its start and its end were cut off.
    app = window.app
    window.login(server.port, "alice")
    app.geometry("760x520")
    window.until(lambda: app.winfo_height() == 520, "the smallest window")
    window.type_and_enter("x" * 8001)
    window.pump()
    banner = app.chat.banner
    assert banner.cget("text").startswith("This message has 8001 characters")
    text = banner._label  # the tk.Label inside the CTkLabel
    assert text.winfo_width() >= text.winfo_reqwidth()
    assert text.winfo_height() >= text.winfo_reqheight()
    assert text.winfo_rootx() >= banner.winfo_rootx()
    assert text.winfo_rootx() + text.winfo_width() <= banner.winfo_rootx() + banner.winfo_width()
    assert text.winfo_width() > banner.winfo_width() / 2  # on two lines, not a narrow column
    window.screenshot("gui-long-error.png")


def test_leave_room_and_log_out_while_the_connection_is_down(
    display: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with away(display, tmp_path, monkeypatch) as gone:
        window, app, port = gone.window, gone.window.app, gone.port
        with gone.server():
            window.login(port, "alice")
            app.chat.join_entry.insert(0, "dev")
            app.chat.join_button.invoke()
            window.until(lambda: app.vm.current == "#dev", "#dev")
        gone.until_lost()
        app.chat.leave_button.invoke()
        window.until(lambda: app.vm.error, "the error")
        assert app.vm.error == "Not connected; the client is reconnecting"  # under the banner
        assert "#dev" in app.chat.conversation_buttons  # still in it, as the server knows

        app.chat.logout_button.invoke()
        window.until(app.login_form.winfo_ismapped, "the login form")
        assert window.login_error() == "You are logged out."
        window.pump(0.5)
        assert app.login_form.winfo_ismapped()  # no reconnect behind the form


# --- the password ---------------------------------------------------------------------------

NEW_PASSWORD = "a brand new password"


def _password_dialog(window: Window) -> PasswordDialog:
    """Open the "Change password" dialog from the sidebar."""
    app = window.app
    app.chat.password_button.invoke()
    window.until(lambda: app.controller.password_dialog is not None, "the password dialog")
    dialog: PasswordDialog = app.controller.password_dialog
    return dialog


def _fill(dialog: PasswordDialog, current: str, new: str, again: str) -> None:
    for entry, text in ((dialog.current, current), (dialog.new, new), (dialog.again, again)):
        entry.delete(0, "end")
        entry.insert(0, text)


def test_the_password_is_changed_from_the_sidebar_and_the_other_sessions_end(
    window: Window, server: Running
) -> None:
    app = window.app
    window.login(server.port, "alice")
    with server.login("alice") as other:
        dialog = _password_dialog(window)
        _fill(dialog, PASSWORD, NEW_PASSWORD, NEW_PASSWORD)
        dialog.change_button.invoke()
        window.until(lambda: window.dialogs[-1].kind == "showinfo", "the change")
        assert window.dialogs[-1] == Dialog(
            "showinfo",
            "Password changed",
            "Your password was changed. Your other sessions were logged out: log in there "
            "with the new password.",
        )
        assert app.controller.password_dialog is None
        assert not dialog.winfo_exists()
        closed = window.receive(other, ConnectionClosed, "the other session's end")
        assert closed.reason == PASSWORD_CHANGED
    assert app.chat.winfo_ismapped()  # this session stays
    server.login("alice", NEW_PASSWORD).close()


def test_the_chat_goes_on_while_the_box_saying_the_password_changed_is_open(
    window: Window, server: Running, bob: BlockingClient
) -> None:
    app = window.app
    window.login(server.port, "alice")

    def chat_on(box: Dialog) -> None:
        assert box.title == "Password changed"
        bob.send_message("said while the box is open", room="general")
        window.until_shown("said while the box is open")

    window.while_next_dialog_open = chat_on
    dialog = _password_dialog(window)
    _fill(dialog, PASSWORD, NEW_PASSWORD, NEW_PASSWORD)
    dialog.change_button.invoke()
    window.until(lambda: window.dialogs[-1].kind == "showinfo", "the change")
    window.pump()  # the box was answered (or why not, raised)
    assert app.chat.winfo_ismapped()


def test_the_password_dialog_says_what_is_wrong_and_takes_another_try(
    window: Window, server: Running
) -> None:
    window.login(server.port, "alice")
    dialog = _password_dialog(window)
    _fill(dialog, PASSWORD, NEW_PASSWORD, "another one")
    dialog.change_button.invoke()  # refused before asking the server
    assert dialog.error.cget("text") == "The new passwords differ: type the same one twice."
    for current, new, said in (
        ("not it", NEW_PASSWORD, "The current password is wrong"),
        (PASSWORD, "short", "A password needs at least 8 characters"),
    ):
        _fill(dialog, current, new, new)
        dialog.change_button.invoke()
        window.until(lambda: dialog.error.cget("text"), "the server's answer")
        assert dialog.error.cget("text") == said
    window.pump(0.2)  # the refusal came as an event too
    assert not window.app.chat.banner.winfo_ismapped(), window.app.chat.banner.cget("text")
    assert [d.kind for d in window.dialogs] == ["askyesno"]  # the key's question only
    server.login("alice").close()  # the password is unchanged


def test_a_server_that_does_not_let_users_change_it_is_not_asked(
    window: Window, server: Running
) -> None:
    app = window.app
    window.login(server.port, "alice")
    app.controller.client.features = ()  # as an older server's login says
    app.chat.password_button.invoke()
    assert window.dialogs[-1] == Dialog(
        "showerror",
        "Change password",
        "This server does not let users change their password; ask its operator",
    )
    assert app.controller.password_dialog is None


def test_the_password_dialog_closes_with_the_session(window: Window, server: Running) -> None:
    app = window.app
    window.login(server.port, "alice")
    dialog = _password_dialog(window)
    app.chat.logout_button.invoke()
    window.until(app.login_form.winfo_ismapped, "the login form")
    assert not dialog.winfo_exists()
    assert app.controller.password_dialog is None


def test_the_password_dialog_follows_a_theme_switch(window: Window, server: Running) -> None:
    app = window.app
    window.login(server.port, "alice")
    dialog = _password_dialog(window)
    for theme in ("light", "dark"):
        app.chat.theme_switch.toggle()
        assert app.vm.theme == theme
        palette = PALETTES[theme]
        assert dialog.cget("fg_color") == palette["window"]
        for entry in (dialog.current, dialog.new, dialog.again):
            assert entry.cget("fg_color") == palette["entry"]
            assert entry.cget("text_color") == palette["fg"]
        assert dialog.change_button.cget("fg_color") == palette["accent"]
        assert dialog.cancel_button.cget("text_color") == palette["fg"]
        assert dialog.error.cget("text_color") == palette["error"]
    dialog.cancel_button.invoke()
    app.chat.theme_switch.toggle()  # with the dialog gone
    assert app.vm.theme == "light"
    assert app.chat.cget("fg_color") == PALETTES["light"]["window"]
