"""The sealchat desktop client: customtkinter widgets over the view-model, trio in guest mode.

Everything runs on the Tk thread: widget callbacks start trio tasks, and trio tasks update the
view-model and redraw. The widgets hold no state of their own beyond what they display.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import tkinter as tk
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from tkinter import filedialog, messagebox
from typing import NamedTuple

import customtkinter as ctk
import trio

from sealchat.gui.chat_view import ChatView
from sealchat.gui.guest import TkGuest
from sealchat.gui.logfile import log_to_file
from sealchat.gui.login_form import LoginForm
from sealchat.gui.settings import Server, Settings
from sealchat.gui.text_helpers import friendly, refusal
from sealchat.gui.theme import PALETTES
from sealchat.gui.viewmodel import (
    Change,
    TransferState,
    ViewModel,
    room_key,
)
from sealchat.transports.pinning import ServerKeyChanged, ServerKeyUnknown
from sealchat.transports.requests import ClientError, LoginFailed, new_client_id
from sealchat.transports.shown_text import escaped
from sealchat.transports.trio_client import ChatClient, ConnectionLost, LinkState, connect

TYPING_REFRESH = 3.0
TYPING_IDLE = 4.0

log = logging.getLogger("sealchat.gui")


class _Outgoing(NamedTuple):
    """A message typed, waiting for its turn to be handed to the client."""

    text: str
    room: str
    user: str
    client_id: str


class App(ctk.CTk):
    """The window. ``run_gui()`` creates it and runs trio in guest mode inside it."""

    def __init__(self, settings: Settings | None = None, *, log_file: Path | None = None) -> None:
        self.settings = settings or Settings.load()
        self.log_file = log_file
        """Where unexpected errors are written (None: standard error only)."""
        self.vm = ViewModel(theme=self.settings.theme)
        ctk.set_appearance_mode(self.vm.theme)
        super().__init__()
        self.title("sealchat")
        self.geometry("1000x680")
        self.minsize(760, 520)
        self.palette = PALETTES[self.vm.theme]
        self.client: ChatClient | None = None
        self._session_user = ""
        """Who logged in last (a different user next time clears what they left)."""
        self.nursery: trio.Nursery | None = None
        self.cancel_scope: trio.CancelScope | None = None
        self._typing_sent = 0.0
        self._typing_deadline = 0.0
        self._typing_to: tuple[str, str] | None = None
        """(room, user) our typing notice went to, while it is on."""
        self._loading_history: set[str] = set()
        """The conversations whose history is being fetched (a page at a time each)."""
        self._transfer_scopes: dict[int, trio.CancelScope] = {}
        self._outgoing: trio.MemorySendChannel[_Outgoing] | None = None
        """The messages typed, in order, for the session's sender (see :meth:`_sending`)."""
        self.login_form = LoginForm(self, self.settings)
        self.chat = ChatView(self)
        self.login_form.place(relx=0.5, rely=0.5, anchor="center")
        self.guest = TkGuest(self)
        self.guest.on_done = lambda _result: self._destroy()
        self.protocol("WM_DELETE_WINDOW", self.close)
        self.bind_focus(self)
        self._apply({Change.THEME})

    def bind_focus(self, window: tk.Misc) -> None:
        """Whether the user is here (no bell, no count in the title) follows the focus in
        and out of ``window``: the main window, and the app's own others (the emoji picker)."""
        window.bind("<FocusIn>", lambda _e: self._apply(self.vm.set_focus(True)))
        window.bind("<FocusOut>", lambda _e: self._apply(self.vm.set_focus(False)))

    # --- trio lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Begin the trio run inside the Tk loop (call before ``mainloop``)."""
        self.guest.start(self._main)

    async def _main(self) -> None:
        with trio.CancelScope() as scope:
            self.cancel_scope = scope
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                self.spawn(self._tick)
                await trio.sleep_forever()

    def close(self) -> None:
        """Closing the window cancels trio and lets it finish; Tk goes after it."""
        if self.guest.running and self.cancel_scope is not None:
            self.cancel_scope.cancel()
        elif not self.guest.running:
            self._destroy()

    def _destroy(self) -> None:
        """Destroy the window without leaving Tk callbacks that outlive their widgets."""
        for job in self.tk.splitlist(self.tk.call("after", "info")):
            self.tk.call("after", "cancel", job)  # their commands go with their widgets
        self.destroy()

    def spawn(self, fn: Callable[..., Awaitable[object]], *args: object) -> None:
        """Run ``fn(*args)`` as a trio task, guarded: an exception it does not handle is
        logged and shown in the window instead of ending trio's run, and the app with it."""
        if self.nursery is not None:
            self.nursery.start_soon(self._guarded, fn, *args)

    async def _guarded(self, fn: Callable[..., Awaitable[object]], *args: object) -> None:
        try:
            await fn(*args)
        except Exception as exc:
            log.exception("unexpected error in %s", getattr(fn, "__qualname__", fn))
            text = f"Something went wrong ({type(exc).__name__}: {exc})."
            if self.log_file is not None:
                text += f" The details are in {self.log_file}."
            if self.login_form.winfo_manager():  # the login form is where the user looks
                self.login_form.show_error(text)
            else:
                self._apply(self._error(text))

    async def _tick(self) -> None:
        """Expire typing notices and stop our own typing notice after a pause."""
        while True:
            await trio.sleep(0.5)
            now = time.time()
            self._apply(self.vm.expire_typing(now))
            if self._typing_deadline and now >= self._typing_deadline:
                self._stop_typing()

    # --- login ----------------------------------------------------------------------------

    def start_login(
        self, host: str, port: int, user: str, password: str, *, remember: bool
    ) -> None:
        self.settings.server = Server(host, port, user) if remember else None
        self._save_settings()
        self.spawn(self._session, host, port, user, password)

    async def _session(self, host: str, port: int, user: str, password: str) -> None:
        try:
            async with connect(host, port, confirm_new_key=self._confirm_key) as client:
                name = await client.login(user, password)
                self.client = client
                with self._sending(client):
                    self._show_chat(name)
                    self.spawn(self._load_rooms)
                    async for event in client.events():
                        shown = self.vm.current
                        self._apply(self.vm.apply(event, time.time()))
                        self._follow_current(shown)
                        if isinstance(event, LinkState) and event.connected:
                            self.spawn(self._catch_up)
                        if client.gave_up_on is not None:  # no more reconnecting: say why
                            raise client.gave_up_on
        except ServerKeyChanged as exc:
            messagebox.showerror("Server key changed", str(exc), parent=self)
            self.login_form.show_error("The server's key changed; the connection was refused.")
        except ServerKeyUnknown:
            self.login_form.show_error("You did not trust the server's key; not connected.")
        except LoginFailed as exc:
            self.login_form.show_error(refusal(exc))
        except (ClientError, OSError, trio.TooSlowError) as exc:
            self.login_form.show_error(friendly(str(exc)))
        finally:
            self.client = None
            if self.chat.winfo_manager():  # it had logged in: back to the login form
                self._show_login()

    @contextlib.contextmanager
    def _sending(self, client: ChatClient) -> Iterator[None]:
        """While the session lasts, one task hands the messages typed to ``client``, in the
        order typed (a task each could run in any order, and so store them out of order).
        When it ends, the texts of those not yet stored go back into the input box with the
        rest of the session (:meth:`ViewModel.logged_out`)."""
        outgoing, typed = trio.open_memory_channel[_Outgoing](math.inf)  # none is dropped
        scope = trio.CancelScope()
        self._outgoing = outgoing
        self.spawn(self._send_in_order, client, typed, scope)
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
                    self._apply(self.vm.not_sent(client_id, str(exc)))

    def _follow_current(self, shown: str) -> None:
        """If the server's word took away the conversation ``shown`` (a room left from
        elsewhere: #general is shown instead), our typing notice to it ends unsaid (the
        server refuses notices to a room we are not in), and the one shown now is shown as
        :meth:`select` shows it."""
        if self.vm.current != shown:
            self._stop_typing(tell=False)
            self._shown()

    async def _catch_up(self) -> None:
        """The link is back. Which rooms this user is in and who joined the current room may
        have changed while it was down, and the server replays neither, so both are asked
        for again: the rooms first (the room shown may be one left meanwhile), then the
        members of whichever is shown; so is the first page of its history, if it could not
        load (asked for while reconnecting, or lost with the link)."""
        shown = self.vm.current
        await self._load_rooms()
        if self.vm.current == shown:  # otherwise, the one shown now was shown afresh
            self._shown()

    async def _confirm_key(self, server: str, fingerprint: str) -> bool:
        answer = messagebox.askyesno(
            "Trust this server?",
            f"{server} is new to this computer. Its key fingerprint is\n\n{fingerprint}\n\n"
            "Compare it with the one the server's operator gave you. Trust it and remember it?",
            parent=self,
        )
        return bool(answer)

    def _show_chat(self, name: str) -> None:
        if self._session_user and name.lower() != self._session_user.lower():
            self._forget_user()  # someone else at the keyboard: nothing of theirs shows
        self._session_user = name
        self.login_form.place_forget()
        self.chat.pack(fill="both", expand=True)
        self._apply(self.vm.logged_in(name) | self.vm.select(self.vm.current))
        self._shown()

    def _forget_user(self) -> None:
        """Clear what the last user left behind: a draft, a room name, the emoji picker,
        finished transfers (where their files were saved)."""
        self.chat.input.delete("1.0", "end")
        self.chat.join_entry.delete(0, "end")
        self.chat.close_emoji_picker()
        changes: set[Change] = set()
        for transfer_id in list(self.vm.transfers):
            changes |= self.vm.dismiss_transfer(transfer_id)
        self._apply(changes)

    def _show_login(self) -> None:
        """The login form again, with the reason the session ended on it; the session's
        conversations and people are gone."""
        self.chat.pack_forget()
        self.login_form.place(relx=0.5, rely=0.5, anchor="center")
        self.login_form.button.configure(state="normal", text="Log in")
        self._apply(self.vm.logged_out())

    # --- actions --------------------------------------------------------------------------

    def send_text(self, text: str) -> bool:
        """Send ``text`` to the conversation shown; False, saying why, if it cannot go."""
        if self._outgoing is None:
            self._apply(self.vm.failed("not connected"))
            return False
        if not self.vm.fits(text):
            self._apply({Change.ERROR})
            return False
        self._apply(self.vm.dismiss_error())
        room, user = self.vm.conversation(self.vm.current).target
        self._stop_typing(tell=False)  # the message ends the notice at the server
        client_id = new_client_id()
        self.vm.sending(client_id, text)  # before any reply can arrive
        self._outgoing.send_nowait(_Outgoing(text, room, user, client_id))
        return True

    def user_is_typing(self) -> None:
        """A key changed the draft: the conversation shown hears we are typing (refreshed
        every TYPING_REFRESH s), until a pause of TYPING_IDLE s."""
        self._typing_follows()
        now = time.time()
        self._typing_deadline = now + TYPING_IDLE
        if now - self._typing_sent > TYPING_REFRESH:
            self._typing_sent = now
            self._typing_to = self.vm.conversation(self.vm.current).target
            self.spawn(self._typing, True, self._typing_to)

    def _typing_follows(self) -> None:
        """Stop our typing notice if it went to a conversation no longer shown."""
        if self._typing_to not in (None, self.vm.conversation(self.vm.current).target):
            self._stop_typing()

    def _stop_typing(self, *, tell: bool = True) -> None:
        """End our typing notice, telling the conversation it went to (if ``tell``)."""
        if tell and self._typing_to is not None:
            self.spawn(self._typing, False, self._typing_to)
        self._typing_to = None
        self._typing_deadline = 0.0
        self._typing_sent = 0.0

    async def _typing(self, active: bool, target: tuple[str, str]) -> None:
        """Tell conversation ``target`` (room, user) whether we are typing: best effort, a
        notice that cannot go (while reconnecting) is no error to show."""
        room, user = target
        if self.client is not None:
            with contextlib.suppress(ClientError):
                await self.client.typing(active, room=room, to=user)

    def join_room(self, room: str) -> None:
        self._apply(self.vm.dismiss_error())

        async def join() -> None:
            if self.client is None:
                return
            try:
                members = await self.client.join(room)
            except ClientError as exc:
                self._apply(self._error(exc))
                return
            self._apply(self.vm.set_members(room, members) | self.vm.select(room_key(room)))
            self._shown(members=False)  # the join's answer listed them

        self.spawn(join)

    def select(self, key: str) -> None:
        self._apply(self.vm.dismiss_error() | self.vm.select(key))
        self._shown()

    def open_direct(self, user: str) -> None:
        if user.lower() != self.vm.me.lower():
            self._apply(self.vm.dismiss_error() | self.vm.open_direct(user))
            self._shown()

    def _shown(self, *, members: bool = True) -> None:
        """The current conversation was just selected: a room's members are asked for
        afresh (with ``members``), our typing notice follows, and its history comes as
        :meth:`_load_first_page` says."""
        self._typing_follows()
        if members:
            self._load_current_members()
        self._load_first_page()

    def _load_current_members(self) -> None:
        """Ask for the members of the current conversation, if it is a room."""
        conversation = self.vm.conversation(self.vm.current)
        if conversation.is_room:
            self.spawn(self._load_members, conversation.title)

    def _load_first_page(self) -> None:
        """The latest page of the current conversation's history, unless one came in this
        session: what was missed since the last one, or arrived live, is not all there is."""
        if not self.vm.conversation(self.vm.current).first_page_loaded:
            self.load_older()

    async def _load_rooms(self) -> None:
        """Ask for the rooms this user is in; if the one shown is one it left meanwhile,
        #general is shown instead (as :meth:`_follow_current` says)."""
        if self.client is not None:
            known = set(self.vm.conversations)
            with contextlib.suppress(ClientError):
                rooms = await self.client.rooms()
                shown = self.vm.current
                self._apply(self.vm.rooms_listed(rooms, known=known))
                self._follow_current(shown)

    async def _load_members(self, room: str) -> None:
        if self.client is not None:
            with contextlib.suppress(ClientError):
                self._apply(self.vm.set_members(room, await self.client.members(room)))

    def load_older(self) -> None:
        """Ask for the page of the current conversation's history before its oldest message
        shown; one page at a time per conversation, however often scrolling asks."""
        conversation = self.vm.conversation(self.vm.current)
        key = conversation.key
        if key in self._loading_history or not conversation.more_history or self.client is None:
            return
        self._loading_history.add(key)

        async def load() -> None:
            try:
                room, user = conversation.target
                if self.client is not None:
                    messages, more = await self.client.history(
                        room=room, peer=user, before=conversation.oldest, limit=50
                    )
                    self._apply(self.vm.history_loaded(key, messages, more))
            except ClientError as exc:
                self._apply(self._error(exc))
            finally:
                self._loading_history.discard(key)

        self.spawn(load)

    def choose_file(self) -> None:
        path = filedialog.askopenfilename(parent=self, title="Send a file")
        if path:
            self.send_file(Path(path))

    def send_file(self, path: Path) -> None:
        room, user = self.vm.conversation(self.vm.current).target

        async def upload(client: ChatClient, progress: Callable[[int, int], None]) -> str:
            try:
                await client.send_file(path, room=room, to=user, progress=progress)
            except OSError as exc:  # gone, or unreadable, since the file dialog chose it
                raise ClientError(f"cannot read it: {exc.strerror or exc}") from exc
            return ""

        self._apply(self.vm.dismiss_error())
        self._transfer(path.name, upload, upload=True)

    def download(self, file_id: str) -> None:
        """Download ``file_id``, unless it is being downloaded (a double click on its link)."""
        if self.vm.downloading(file_id):
            return
        info = next(
            (m.file for m in self.vm.current_messages() if m.file and m.file.file_id == file_id),
            None,
        )

        async def fetch(client: ChatClient, progress: Callable[[int, int], None]) -> str:
            return str(await client.download(file_id, progress=progress))

        name = info.name if info else file_id  # shown escaped
        self._transfer(name, fetch, upload=False, file_id=file_id)

    def _transfer(
        self,
        name: str,
        run: Callable[[ChatClient, Callable[[int, int], None]], Awaitable[str]],
        *,
        upload: bool,
        file_id: str = "",
    ) -> None:
        """Start a transfer row for ``name`` (a download: of ``file_id``) and
        ``run(client, progress)`` (which returns the row's detail) in a task; a failure or a
        cancel ends the row saying so."""
        transfer = self.vm.start_transfer(name, upload=upload, file_id=file_id)

        async def go() -> None:
            if self.client is None:
                return
            with trio.CancelScope() as scope:
                self._transfer_scopes[transfer.id] = scope
                try:
                    detail = await run(self.client, self._progress(transfer.id))
                    state = TransferState.DONE
                except ClientError as exc:
                    state, detail = TransferState.FAILED, str(exc)
                except Exception as exc:  # a bug: the row ends, the guard reports it
                    failed = TransferState.FAILED
                    reason = f"{type(exc).__name__}: {exc}"
                    self._apply(self.vm.transfer_finished(transfer.id, failed, reason))
                    raise
                finally:
                    self._transfer_scopes.pop(transfer.id, None)
                self._apply(self.vm.transfer_finished(transfer.id, state, detail))
            if scope.cancelled_caught:
                self._apply(self.vm.transfer_finished(transfer.id, TransferState.CANCELLED))

        self._apply(self.vm.dismiss_error() | {Change.TRANSFERS})
        self.spawn(go)

    def cancel_transfer(self, transfer_id: int) -> None:
        scope = self._transfer_scopes.get(transfer_id)
        if scope is not None:
            scope.cancel()

    def dismiss_transfer(self, transfer_id: int) -> None:
        self._apply(self.vm.dismiss_transfer(transfer_id))

    def _progress(self, transfer_id: int) -> Callable[[int, int], None]:
        return lambda done, total: self._apply(self.vm.transfer_progress(transfer_id, done, total))

    def toggle_theme(self) -> None:
        self._apply(self.vm.toggle_theme())
        self.settings.theme = self.vm.theme
        self._save_settings()

    def _save_settings(self) -> None:
        """Save the settings; a disk that refuses (read-only, full) costs only remembering
        them, never the login or the theme switch."""
        try:
            self.settings.save()
        except OSError as exc:
            log.warning("cannot save the settings to %s: %s", self.settings.path, exc)

    def _error(self, error: str | ClientError) -> set[Change]:
        """Show ``error``; one saying the connection was lost goes when the link is back."""
        return self.vm.failed(str(error), link_lost=isinstance(error, ConnectionLost))

    # --- drawing --------------------------------------------------------------------------

    def _apply(self, changes: set[Change]) -> None:
        """Redraw what changed."""
        vm, chat = self.vm, self.chat
        if Change.THEME in changes:
            self.palette = PALETTES[vm.theme]
            ctk.set_appearance_mode(vm.theme)
            self.configure(fg_color=self.palette["window"])
            chat.apply_theme(self.palette, vm.theme == "dark")
            self.login_form.apply_theme(self.palette)
            changes |= {
                Change.CONVERSATIONS,
                Change.PEOPLE,
                Change.BANNER,
                Change.TYPING,
                Change.TRANSFERS,
            }
        if Change.CONVERSATIONS in changes:
            chat.draw_conversations(vm, self.palette)
        if Change.PEOPLE in changes:
            chat.draw_people(vm, self.palette)
        if Change.TRANSCRIPT in changes and vm.updates:
            updates, vm.updates = vm.updates, []
            chat.draw_transcript(vm, updates)
        if Change.TYPING in changes:
            chat.typing_label.configure(
                text=vm.typing_text(time.time()), text_color=self.palette["dim"]
            )
        if Change.TRANSFERS in changes:
            chat.draw_transfers(vm, self.palette)
        if Change.INPUT in changes and vm.returned:
            chat.give_back("\n".join(vm.returned))
            vm.returned.clear()
        if Change.BANNER in changes or Change.ERROR in changes:
            text = vm.banner or vm.error
            chat.banner.configure(
                text=escaped(text),  # errors and disconnect reasons may quote the server
                fg_color=self.palette["system"] if vm.banner else self.palette["error"],
                text_color="#000000",
            )
            if text:
                chat.banner.grid(row=0, column=1, sticky="ew", padx=8, pady=(8, 0))
            else:
                chat.banner.grid_forget()
        if Change.TITLE in changes:
            if vm.missed_while_away and not vm.focused:
                self.bell()
            self.title(vm.title())


def run_gui(settings: Settings | None = None, *, log_dir: Path | None = None) -> int:
    """Open the window and run until it is closed; unexpected errors are logged to
    ``gui.log`` in ``log_dir`` (default: the user's log folder)."""
    app = App(settings, log_file=log_to_file(log_dir))
    app.start()
    app.mainloop()
    result = app.guest.result
    if result is not None:
        try:
            result.unwrap()
        except Exception:
            log.exception("the desktop client stopped on an unexpected error")
            raise
    return 0
