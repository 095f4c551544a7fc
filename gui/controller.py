"""What the desktop client asks of the client library: a login and its session (events,
catch-up after a reconnect, messages sent in the order typed), the conversations shown with
their members and history.

It runs on the Tk thread like the window (:class:`~sealchat.gui.app.App`), whose view-model it
updates and redraws.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import tkinter as tk
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from tkinter import messagebox
from typing import TYPE_CHECKING, NamedTuple

import trio

from sealchat.core import Message
from sealchat.core.records import CHANGE_PASSWORD
from sealchat.gui.conversation import Conversation, room_key
from sealchat.gui.password_dialog import PasswordDialog
from sealchat.gui.settings import Server
from sealchat.gui.text_helpers import friendly, refusal, room_name_problem
from sealchat.gui.unread_store import account_name
from sealchat.gui.viewmodel import Change, password_change_problem
from sealchat.transports.pinning import ServerKeyChanged, ServerKeyUnknown
from sealchat.transports.requests import (
    CANNOT_CHANGE_PASSWORD,
    ClientError,
    LoginFailed,
    new_client_id,
)
from sealchat.transports.trio_client import ChatClient, LinkState, connect

if TYPE_CHECKING:
    from sealchat.gui.app import App

log = logging.getLogger("sealchat.gui")

UNREAD_SAVED_EVERY = 5.0
"""How often, at most, what is unread is saved while a session changes it (seconds): a replay
of thousands of messages writes it once, not for each. It is saved when the session ends too."""
READS_TOLD_EVERY = 1.0
"""How often, at most, the server is told how far the user has read (seconds), for the user's
other devices: a replay read as it comes is told once, not for each message."""
LAST_READS_WAIT = 2.0
"""How long the end of a session may wait to tell the server what was read last (seconds)."""


class _Outgoing(NamedTuple):
    """A message typed, waiting for its turn to be handed to the client."""

    text: str
    room: str
    user: str
    client_id: str

    def __repr__(self) -> str:  # the length of the text, never the text (as core's Message)
        return (
            f"_Outgoing(text=<{len(self.text)} chars>, room={self.room!r}, user={self.user!r}, "
            f"client_id={self.client_id!r})"
        )


class Controller:
    """The window's dealings with the server, one login after another."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.vm = app.vm
        self.client: ChatClient | None = None
        self._session_user = ""
        """Who logged in last (a different user next time clears what they left)."""
        self._loading_history: set[str] = set()
        """The conversations whose history is being fetched (a page at a time each)."""
        self._outgoing: trio.MemorySendChannel[_Outgoing] | None = None
        """The messages typed, in order, for the session's sender (see :meth:`_sending`)."""
        self._leaving: trio.CancelScope | None = None
        """Cancelled to log out (or close the window) once logged in: the session ends as the
        user leaves it, telling the server what was read and saying goodbye."""
        self.password_dialog: PasswordDialog | None = None
        """The "Change password" dialog, while it is open (it closes with the session)."""
        self._unread_save_failing = False
        """The last save of what is unread failed (warned about once until one succeeds)."""

    # --- login ----------------------------------------------------------------------------

    def start_login(
        self,
        host: str,
        port: int,
        user: str,
        password: str,
        *,
        remember: bool,
        register: bool = False,
    ) -> None:
        """Log in as ``user``; with ``register``, create the account first (a server that
        does not allow it says so, and the form shows it)."""
        self.app.settings.server = Server(host, port, user) if remember else None
        self.app.save_settings()
        self.app.spawn(self._session, host, port, user, password, register)

    async def _session(
        self, host: str, port: int, user: str, password: str, register: bool = False
    ) -> None:
        try:
            await self._connected(host, port, user, password, register)
        except ServerKeyChanged as exc:
            self._show_box(messagebox.showerror, "Server key changed", friendly(str(exc)))
            self.app.login_form.show_error("The server's key changed; the connection was refused.")
        except ServerKeyUnknown:
            self.app.login_form.show_error("You did not trust the server's key; not connected.")
        except LoginFailed as exc:
            self.app.login_form.show_error(refusal(exc))
        except (ClientError, OSError, trio.TooSlowError) as exc:
            self.app.login_form.show_error(friendly(str(exc)))
        finally:
            left = self._leaving is not None and self._leaving.cancel_called
            self.client = self._leaving = None
            self._close_password_dialog()
            if self.app.chat.winfo_manager():  # it had logged in: back to the login form
                self._show_login(by_user=left)
            if self.app.closing:  # the window waited for the goodbye
                self.app.close()

    async def _connected(
        self, host: str, port: int, user: str, password: str, register: bool
    ) -> None:
        """Connect, log in (or create the account) and show the session's events until it
        ends or the user leaves it (``leave``); then what was read last is told, and the
        client says goodbye to the server (see :func:`connect`)."""
        # No wait for unstored messages at the end: a logout or a close has asked the user.
        async with connect(host, port, confirm_new_key=self._confirm_key, sent_wait=0) as client:
            log_in = client.register if register else client.login
            name = await log_in(user, password)
            self.client = client
            self._leaving = leaving = trio.CancelScope()
            account = account_name(host, port, name)
            with self._sending(client), self._remembering_unread(account):
                async with self._telling(client):
                    with leaving:
                        await self._show_session(client, name)

    async def _show_session(self, client: ChatClient, name: str) -> None:
        """Show the session of ``name`` and its events until it ends."""
        self._show_chat(name)
        self._show_directs(client)
        self.app.spawn(self._load_rooms)
        async for event in client.events():
            shown = self.vm.current
            self.app.redraw(self.vm.apply(event, time.time()))
            self._follow_current(shown)
            if isinstance(event, LinkState) and event.connected:
                self.app.spawn(self._catch_up)
            if client.gave_up_on is not None:  # no more reconnecting: say why
                raise client.gave_up_on

    @contextlib.contextmanager
    def _remembering_unread(self, account: str) -> Iterator[None]:
        """For the session of ``account``: what was unread when its last one ended shows
        again, and what is unread is saved now and then while it changes, and at the end."""
        self.app.redraw(self.vm.restore_unread(self.app.unread_store.load(account)))
        scope = trio.CancelScope()
        self.app.spawn(self._save_unread_while_changing, account, scope)
        try:
            yield
        finally:
            scope.cancel()
            self._save_unread(account)

    @contextlib.asynccontextmanager
    async def _telling(self, client: ChatClient) -> AsyncIterator[None]:
        """While the session lasts, how far the user has read each conversation goes to the
        server now and then when it moved (see :meth:`_tell_reads`), and at its end (a
        logout, the window closed), before the client says goodbye."""
        scope = trio.CancelScope()
        self.app.spawn(self._tell_reads_while_reading, client, scope)
        try:
            yield
        finally:
            scope.cancel()
            if client.online:
                with trio.move_on_after(LAST_READS_WAIT):
                    await self._tell_reads(client)

    async def _tell_reads_while_reading(self, client: ChatClient, scope: trio.CancelScope) -> None:
        with scope:
            while True:
                await trio.sleep(READS_TOLD_EVERY)
                await self._tell_reads(client)

    async def _tell_reads(self, client: ChatClient) -> None:
        """Tell the server how far the user has read the conversations read since it was last
        told (a server without read markers is told nothing: see ``mark_read``). One
        conversation at a time leaves those still to tell: a telling cancelled midway (the
        session ending, the window closing) leaves the rest to the next (the last one, at
        the end of the session). The one being told is the client's once the call is made
        (``mark_read`` keeps it before its first checkpoint, to be sent again after a
        reconnect). Those read meanwhile are told too."""
        while self.vm.reads_to_tell:
            key = next(iter(self.vm.reads_to_tell))
            up_to = self.vm.reads_to_tell.pop(key)
            conversation = self.vm.conversations.get(key)
            if conversation is None:  # gone meanwhile (a room left)
                continue
            room, user = conversation.target
            with contextlib.suppress(ClientError):  # sent after the reconnect, if it was lost
                await client.mark_read(up_to, room=room, peer=user)

    async def _save_unread_while_changing(self, account: str, scope: trio.CancelScope) -> None:
        with scope:
            while True:
                await trio.sleep(UNREAD_SAVED_EVERY)
                if self.vm.unread_changed:
                    self._save_unread(account)

    def _save_unread(self, account: str) -> None:
        """Save what is unread; a disk that refuses (read-only, full) costs only remembering
        it, never the session, and the save is tried again at the next tick until it works."""
        try:
            self.app.unread_store.save(account, self.vm.unread_to_remember())
        except OSError as exc:
            if not self._unread_save_failing:
                log.warning(
                    "cannot save the unread messages to %s (trying again every %g s): %s",
                    self.app.unread_store.path,
                    UNREAD_SAVED_EVERY,
                    exc,
                )
            self._unread_save_failing = True
            return
        self.vm.unread_changed = False
        self._unread_save_failing = False

    def log_out(self) -> None:
        """End the session and show the login form, for this user or another; if that would
        stop transfers or lose messages, only once the user confirms it."""
        if self._leaving is None:
            return
        warning = self.vm.logout_warning()
        if warning and not messagebox.askyesno("Log out?", warning, parent=self.app):
            return
        self.leave()

    def leave(self) -> bool:
        """End the session as the user leaves it (its transfers stop, the server hears what
        was read and a goodbye); False if there is none."""
        if self._leaving is None:
            return False
        self.app.transfers.cancel_all()
        self._leaving.cancel()
        return True

    # --- the password -------------------------------------------------------------------

    def open_password_dialog(self) -> None:
        """Show the "Change password" dialog (one at a time), or say at once that the server
        does not let users change their password."""
        client = self.client
        if client is None:
            return
        if CHANGE_PASSWORD not in client.features:
            messagebox.showerror(
                "Change password", friendly(CANNOT_CHANGE_PASSWORD), parent=self.app
            )
            return
        dialog = self.password_dialog
        if dialog is not None and dialog.winfo_exists():
            dialog.lift()
            dialog.current.focus_set()
            return
        self.password_dialog = PasswordDialog(self.app)

    def change_password(self, dialog: PasswordDialog, current: str, new: str, again: str) -> None:
        """The dialog's Change: what keeps it from going is said there; otherwise the server
        is asked, and the dialog closes once it has changed the password."""
        problem = password_change_problem(current, new, again)
        if problem:
            dialog.show_error(problem)
            return
        dialog.busy()
        self.app.spawn(self._change_password, dialog, current, new)

    async def _change_password(self, dialog: PasswordDialog, current: str, new: str) -> None:
        client = self.client
        try:
            if client is None:
                raise ClientError("You are not logged in.")
            await client.change_password(current, new)
        except ClientError as exc:
            if dialog.winfo_exists():
                dialog.show_error(friendly(str(exc)))
            return
        self._close_password_dialog()
        self._show_box(
            messagebox.showinfo,
            "Password changed",
            "Your password was changed. Your other sessions were logged out: log in there "
            "with the new password.",
        )

    def _close_password_dialog(self) -> None:
        dialog, self.password_dialog = self.password_dialog, None
        if dialog is not None and dialog.winfo_exists():
            dialog.destroy()

    @contextlib.contextmanager
    def _sending(self, client: ChatClient) -> Iterator[None]:
        """While the session lasts, one task hands the messages typed to ``client``, in the
        order typed (a task each could run in any order, and so store them out of order).
        When it ends, the texts of those not yet stored go back into the input box with the
        rest of the session (:meth:`ViewModel.logged_out`)."""
        outgoing, typed = trio.open_memory_channel[_Outgoing](math.inf)  # none is dropped
        scope = trio.CancelScope()
        self._outgoing = outgoing
        self.app.spawn(self._send_in_order, client, typed, scope)
        try:
            yield
        finally:
            self._outgoing = None
            outgoing.close()
            scope.cancel()

    async def _send_in_order(
        self,
        client: ChatClient,
        typed: trio.MemoryReceiveChannel[_Outgoing],
        scope: trio.CancelScope,
    ) -> None:
        """Hand each message typed to ``client`` after the one before it; a refused one
        goes back into the input box, saying why."""
        with scope, typed:
            async for text, room, user, client_id in typed:
                try:
                    await client.send_message(text, room=room, to=user, client_id=client_id)
                except ClientError as exc:
                    self.app.redraw(self.vm.not_sent(client_id, str(exc)))

    def _follow_current(self, shown: str) -> None:
        """If the server's word took away the conversation ``shown`` (a room left from
        elsewhere: #general is shown instead), our typing notice to it ends unsaid (the
        server refuses notices to a room we are not in), and the one shown now is shown as
        :meth:`select` shows it."""
        if self.vm.current != shown:
            self.app.typing_notice.stop(tell=False)
            self._shown()

    async def _catch_up(self) -> None:
        """The link is back. The direct conversations the login named are shown (one whose
        messages this device had all before may not come in the replay). Which rooms this user
        is in and who joined the current room may have changed while it was down, and the
        server replays neither, so both are asked for again: the rooms first (the room shown
        may be one left meanwhile), then the members of whichever is shown; so is its history
        since the drop (the others' when they are shown next, see :meth:`_latest_pages`), and
        its first page, if it could not load (asked for while reconnecting, or lost with the
        link)."""
        shown = self.vm.current
        if self.client is not None:
            self._show_directs(self.client)
        await self._load_rooms()
        if self.vm.current == shown:  # otherwise, the one shown now was shown afresh
            self._shown()

    def _show_directs(self, client: ChatClient) -> None:
        """The direct conversations the server named at the (last) login, in the sidebar."""
        self.app.redraw(self.vm.directs_listed(client.conversations))

    async def _confirm_key(self, server: str, fingerprint: str) -> bool:
        return await self._ask(
            "Trust this server?",
            f"{server} is new to this computer. Its key fingerprint is\n\n{fingerprint}\n\n"
            "Compare it with the one the server's operator gave you. Trust it and remember it?",
        )

    # --- message boxes ------------------------------------------------------------------
    # A message box is modal: Tk runs a loop of its own until it is answered. Trio, a guest
    # on Tk's loop, takes its steps there too, but only if the box was not opened within one
    # of them: a box opened by a task would stop all networking until it is answered (no
    # messages, no reconnecting, a server dropping a client that does not read). So a task
    # never opens one itself: it has Tk open it (and awaits the answer to a question).

    def _show_box(self, show: Callable[..., object], title: str, message: str) -> None:
        """Have Tk show a message box (``messagebox.showinfo``, ``showerror``) as soon as
        it is idle, out of trio's steps; the caller goes on at once."""

        def box() -> None:
            with self._unless_window_gone():
                show(title, message, parent=self.app)

        self.app.after_idle(box)

    async def _ask(self, title: str, message: str) -> bool:
        """The user's answer to a yes-or-no question, asked (as :meth:`_show_box` shows a
        box) while trio goes on; False if the window closed meanwhile. Not asked at all if
        the caller is cancelled first (a login given up before Tk was idle)."""
        token = trio.lowlevel.current_trio_token()
        answered = trio.Event()
        answer = False
        wanted = True

        def ask() -> None:
            nonlocal answer
            try:
                if wanted:
                    with self._unless_window_gone():
                        answer = bool(messagebox.askyesno(title, message, parent=self.app))
            finally:
                with contextlib.suppress(trio.RunFinishedError):  # the window closed
                    token.run_sync_soon(answered.set)

        self.app.after_idle(ask)
        try:
            await answered.wait()
        finally:
            wanted = False
        return answer

    @contextlib.contextmanager
    def _unless_window_gone(self) -> Iterator[None]:
        """A message box fails when the window is closed while it is open: no error then."""
        try:
            yield
        except tk.TclError:
            if self.app.window_open():
                raise

    def _show_chat(self, name: str) -> None:
        if self._session_user and name.lower() != self._session_user.lower():
            self._forget_user()  # someone else at the keyboard: nothing of theirs shows
        self._session_user = name
        self.app.login_form.logged_in()
        self.app.login_form.place_forget()
        self.app.chat.pack(fill="both", expand=True)
        self.app.chat.input.focus_set()  # what the user types next is a message
        self.app.redraw(self.vm.logged_in(name) | self.vm.select(self.vm.current))
        self._shown()

    def _forget_user(self) -> None:
        """Clear what the last user left behind: a draft, a room name, the emoji picker,
        finished transfers (where their files were saved)."""
        self.app.chat.input.delete("1.0", "end")
        self.app.chat.clear_join_box()
        self.app.chat.close_emoji_picker()
        changes: set[Change] = set()
        for transfer_id in list(self.vm.transfers):
            changes |= self.vm.dismiss_transfer(transfer_id)
        self.app.redraw(changes)

    def _show_login(self, *, by_user: bool = False) -> None:
        """The login form again, with the keyboard focus: nothing typed (a password) goes
        into the hidden message box, to be a draft of the next session; the emoji picker goes
        with the chat. The session's conversations and people are gone. If the session ended
        by itself, the form says why, and the draft stays for the same user's next login; if
        the user logged out (``by_user``), nothing of theirs stays (see
        :meth:`ViewModel.logged_out`), and the form keeps the server and user name but not
        the password."""
        self.app.chat.pack_forget()
        self.app.chat.close_emoji_picker()
        self.app.login_form.place(relx=0.5, rely=0.5, anchor="center")
        self.app.typing_notice.stop(tell=False)
        if by_user:
            self._forget_user()
            self.app.login_form.logged_out()
        self.app.login_form.ready()
        self.app.login_form.take_focus()
        self.app.redraw(self.vm.logged_out(by_user=by_user))

    # --- actions --------------------------------------------------------------------------

    def send_text(self, text: str) -> bool:
        """Send ``text`` to the conversation shown; False, saying why, if it cannot go (too
        long for the server, as it said at the last login: the text stays in the box)."""
        client = self.client
        if self._outgoing is None or client is None:
            self.app.redraw(self.vm.failed("Not connected."))
            return False
        if not self.vm.fits(text, client.max_message_chars):
            self.app.redraw({Change.ERROR})
            return False
        self.app.redraw(self.vm.dismiss_error())
        room, user = self.vm.conversation(self.vm.current).target
        self.app.typing_notice.stop(tell=False)  # the message ends the notice at the server
        client_id = new_client_id()
        self.vm.sending(client_id, text)  # before any reply can arrive
        self._outgoing.send_nowait(_Outgoing(text, room, user, client_id))
        return True

    def join_room(self, room: str) -> None:
        """Join ``room`` and show it; the Join box keeps its name until then (a name the
        server would refuse is refused at once, saying what a room name can be)."""
        problem = room_name_problem(room)
        if problem:
            self.app.redraw(self.vm.failed(problem))
            return
        self.app.redraw(self.vm.dismiss_error())

        async def join() -> None:
            if self.client is None:
                return
            try:
                members = await self.client.join(room)
            except ClientError as exc:
                self.app.redraw(self.app.failed(exc))
                return
            self.app.chat.joined(room)
            self.app.redraw(self.vm.set_members(room, members) | self.vm.select(room_key(room)))
            self._shown(members=False)  # the join's answer listed them

        self.app.spawn(join)

    def leave_current(self) -> None:
        """Leave the room shown: it goes from the sidebar, and #general is shown instead
        (as when the server tells that it was left elsewhere); a refusal is shown. Until the
        server answers, the room cannot be left again (Leave room is disabled: the second
        click of a double click does nothing)."""
        if not self.vm.can_leave:
            return
        conversation = self.vm.conversation(self.vm.current)
        room, key = conversation.title, conversation.key
        self.app.redraw(self.vm.dismiss_error() | self.vm.asked_to_leave(key))

        async def leave() -> None:
            try:
                await leave_room()
            finally:
                self.app.redraw(self.vm.asked_to_leave(key, asked=False))

        async def leave_room() -> None:
            if self.client is None:
                return
            try:
                await self.client.leave(room)
            except ClientError as exc:
                self.app.redraw(self.app.failed(exc))
                return
            shown = self.vm.current
            self.app.redraw(self.vm.room_left(room))
            self._follow_current(shown)

        self.app.spawn(leave)

    def select(self, key: str) -> None:
        self.app.redraw(self.vm.dismiss_error() | self.vm.select(key))
        self._shown()

    def open_direct(self, user: str) -> None:
        if user.lower() != self.vm.me.lower():
            self.app.redraw(self.vm.dismiss_error() | self.vm.open_direct(user))
            self._shown()

    def _shown(self, *, members: bool = True) -> None:
        """The current conversation was just selected: a room's members are asked for
        afresh (with ``members``), our typing notice follows, and its history comes as
        :meth:`_load_first_page` says."""
        self.app.typing_notice.follow()
        if members:
            self._load_current_members()
        self._load_first_page()

    def _load_current_members(self) -> None:
        """Ask for the members of the current conversation, if it is a room."""
        conversation = self.vm.conversation(self.vm.current)
        if conversation.is_room:
            self.app.spawn(self._load_members, conversation.title)

    def _load_first_page(self) -> None:
        """What the current conversation lacks of its latest history (see
        :meth:`_latest_pages`), if anything."""
        conversation = self.vm.conversation(self.vm.current)
        if conversation.missing_after is not None or not conversation.first_page_loaded:
            self._load_history(conversation, self._latest_pages)

    async def _load_rooms(self) -> None:
        """Ask for the rooms this user is in; if the one shown is one it left meanwhile,
        #general is shown instead (as :meth:`_follow_current` says)."""
        if self.client is not None:
            known = set(self.vm.conversations)
            with contextlib.suppress(ClientError):
                rooms = await self.client.rooms()
                shown = self.vm.current
                self.app.redraw(self.vm.rooms_listed(rooms, known=known))
                self._follow_current(shown)

    async def _load_members(self, room: str) -> None:
        if self.client is not None:
            with contextlib.suppress(ClientError):
                self.app.redraw(self.vm.set_members(room, await self.client.members(room)))

    def load_older(self) -> None:
        """Ask for the page of the current conversation's history before its oldest message
        shown; one page at a time per conversation, however often scrolling asks, and not
        while what was missed during a link drop is still to fetch (that goes first, see
        :meth:`_latest_pages`)."""
        conversation = self.vm.conversation(self.vm.current)
        if conversation.more_history and conversation.missing_after is None:
            self._load_history(conversation, self._page_before_oldest)

    def _load_history(
        self,
        conversation: Conversation,
        load: Callable[[ChatClient, Conversation], Awaitable[object]],
    ) -> None:
        """Run ``load(client, conversation)`` in a task, unless the conversation's history
        is being loaded already; a failure is shown, unless the conversation is a room left
        meanwhile (its page, asked for as it was shown, may reach the server after the leave:
        "you are not in dev" would then be news of nothing)."""
        key, client = conversation.key, self.client
        if key in self._loading_history or client is None:
            return
        self._loading_history.add(key)

        async def load_it() -> None:
            try:
                await load(client, conversation)
            except ClientError as exc:
                if key in self.vm.conversations:
                    self.app.redraw(self.app.failed(exc))
                return
            finally:
                self._loading_history.discard(key)
            if self.vm.current == key:  # older pages, while the view has room for them
                self.app.chat.fill_view()

        self.app.spawn(load_it)

    async def _latest_pages(self, client: ChatClient, conversation: Conversation) -> None:
        """After a link drop, the pages from the newest back to the newest message shown
        before it (the replay brings what this device missed, docs/protocol.md §9.6, but a
        device the server forgot, or one of many sessions of a device, starts further on);
        then, unless one came in this session, the page before the
        oldest message shown (what was missed since the last one, or arrived live, is not
        all there is)."""
        since = conversation.missing_after
        if since is not None:
            before = 0
            while True:
                messages, more = await self._page(client, conversation, before)
                if not (more and messages and messages[0].id > since):
                    break
                before = messages[0].id
            if client.online:  # else the link dropped again at the end: fetched again later
                self.vm.caught_up(conversation.key)
        if not conversation.first_page_loaded:
            await self._page_before_oldest(client, conversation)

    async def _page_before_oldest(self, client: ChatClient, conversation: Conversation) -> None:
        await self._page(client, conversation, conversation.oldest)

    async def _page(
        self, client: ChatClient, conversation: Conversation, before: int
    ) -> tuple[list[Message], bool]:
        """Fetch and show the page of ``conversation``'s history before id ``before`` (0: the
        newest); returns it and whether older messages exist."""
        room, user = conversation.target
        messages, more = await client.history(room=room, peer=user, before=before, limit=50)
        self.app.redraw(self.vm.history_loaded(conversation.key, messages, more))
        return messages, more
