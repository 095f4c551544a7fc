"""The sealchat desktop client: customtkinter widgets over the view-model, trio in guest mode.

Everything runs on the Tk thread: widget callbacks start trio tasks, and trio tasks update the
view-model and redraw. The widgets hold no state of their own beyond what they display.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time
import tkinter as tk
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from tkinter import messagebox

import customtkinter as ctk
import trio

from sealchat.gui.chat_view import ChatView
from sealchat.gui.controller import Controller
from sealchat.gui.file_manager import show_folder
from sealchat.gui.guest import TkGuest
from sealchat.gui.logfile import log_to_file
from sealchat.gui.login_form import LoginForm
from sealchat.gui.settings import Settings
from sealchat.gui.text_helpers import friendly
from sealchat.gui.theme import PALETTES
from sealchat.gui.transfers import Transfers
from sealchat.gui.typing_notice import TypingNotice
from sealchat.gui.unread_store import UnreadStore
from sealchat.gui.viewmodel import Change, ViewModel
from sealchat.transports.requests import ClientError
from sealchat.transports.shown_text import escaped
from sealchat.transports.trio_client import ConnectionLost

log = logging.getLogger("sealchat.gui")

LEAVE_WAIT = 5.0
"""How long closing the window waits for the session to end as a logout does (seconds): it
tells what was read and says goodbye, each within 2 s."""


class App(ctk.CTk):
    """The window. ``run_gui()`` creates it and runs trio in guest mode inside it."""

    def __init__(self, settings: Settings | None = None, *, log_file: Path | None = None) -> None:
        self.settings = settings or Settings.load()
        self.unread_store = UnreadStore.beside(self.settings.path)
        """Where each account's unread messages are remembered from one run to the next."""
        self.log_file = log_file
        """Where unexpected errors are written (None: standard error only)."""
        self.show_folder: Callable[[Path], None] = show_folder
        """Opens a folder in the file manager (Show folder of a saved download)."""
        self.vm = ViewModel(theme=self.settings.theme)
        ctk.set_appearance_mode(self.vm.theme)
        super().__init__()
        self.title("sealchat")
        self.geometry("1000x680")
        self.minsize(760, 520)
        self.palette = PALETTES[self.vm.theme]
        self.nursery: trio.Nursery | None = None
        self.cancel_scope: trio.CancelScope | None = None
        self.closing = False
        """The window is closing, once the session has ended."""
        self._close_asked_early = False
        """Whether closing was asked (by a signal) before trio ran: done once it runs."""
        self.controller = Controller(self)
        self.transfers = Transfers(self)
        self.typing_notice = TypingNotice(self)
        self.login_form = LoginForm(self, self.settings)
        self.chat = ChatView(self)
        self.login_form.place(relx=0.5, rely=0.5, anchor="center")
        self.guest = TkGuest(self)
        self.guest.on_done = lambda _result: self._destroy()
        self.protocol("WM_DELETE_WINDOW", self.close_asked)
        self.bind_focus(self)
        self.redraw({Change.THEME})

    def bind_focus(self, window: tk.Misc) -> None:
        """Whether the user is here (no bell, no count in the title) follows the focus in
        and out of ``window``: the main window, and the app's own others (the emoji picker)."""
        window.bind("<FocusIn>", lambda _e: self.redraw(self.vm.set_focus(True)))
        window.bind("<FocusOut>", lambda _e: self.redraw(self.vm.set_focus(False)))

    # --- trio lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Begin the trio run inside the Tk loop (call before ``mainloop``)."""
        self.guest.start(self._main)

    async def _main(self) -> None:
        with trio.CancelScope() as scope:
            self.cancel_scope = scope
            if self._close_asked_early:  # a signal before trio ran: closed now
                self.close()
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                self.spawn(self.typing_notice.tick)
                self.spawn(self._count_down)
                await trio.sleep_forever()

    async def _count_down(self) -> None:
        """Keep the reconnect banner's count of seconds current."""
        while True:
            await trio.sleep(0.5)
            self.redraw(self.vm.count_down(time.time()))

    def close_asked(self) -> None:
        """The window's close button: close, once the user confirms it if that would stop
        transfers or lose messages not yet received by the server."""
        warning = self.vm.logout_warning("close the window")
        if warning and not messagebox.askyesno("Close sealchat?", warning, parent=self):
            return
        self.close()

    def close(self) -> None:
        """Closing the window ends the session as a logout does (the server hears what was
        read and a goodbye), then cancels trio and lets it finish; Tk goes after it."""
        if not self.guest.running:
            self._destroy()
        elif self.cancel_scope is None:  # trio has not run yet
            self._close_asked_early = True
        elif not self.closing and self.controller.leave():  # back here when it has ended
            self.closing = True
            self.spawn(self._cancel_after, LEAVE_WAIT)
        else:
            self.cancel_scope.cancel()

    async def _cancel_after(self, seconds: float) -> None:
        """Cancel trio if the session has not ended by then (a server that stopped reading)."""
        await trio.sleep(seconds)
        if self.cancel_scope is not None:
            self.cancel_scope.cancel()

    def window_open(self) -> bool:
        """Whether the window is still there (not yet destroyed)."""
        try:
            return bool(self.winfo_exists())
        except tk.TclError:  # "application has been destroyed"
            return False

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
                self.redraw(self.failed(text))

    def toggle_theme(self) -> None:
        self.redraw(self.vm.toggle_theme())
        self.settings.theme = self.vm.theme
        self.save_settings()

    def save_settings(self) -> None:
        """Save the settings; a disk that refuses (read-only, full) costs only remembering
        them, never the login or the theme switch."""
        try:
            self.settings.save()
        except OSError as exc:
            log.warning("cannot save the settings to %s: %s", self.settings.path, exc)

    def failed(self, error: str | ClientError) -> set[Change]:
        """Show ``error`` in plain words; one saying the connection was lost goes when the
        link is back."""
        return self.vm.failed(friendly(str(error)), link_lost=isinstance(error, ConnectionLost))

    # --- drawing --------------------------------------------------------------------------

    def redraw(self, changes: set[Change]) -> None:
        """Redraw what changed."""
        vm, chat = self.vm, self.chat
        if Change.THEME in changes:
            self.palette = PALETTES[vm.theme]
            ctk.set_appearance_mode(vm.theme)
            self.configure(fg_color=self.palette["window"])
            chat.apply_theme(self.palette, vm.theme == "dark")
            self.login_form.apply_theme(self.palette)
            dialog = self.controller.password_dialog
            if dialog is not None and dialog.winfo_exists():  # Cancel destroys it, no more
                dialog.apply_theme(self.palette)
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
            chat.draw_transcript(vm, updates, time.time())
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
                text_color=self.palette["banner_fg"],
            )
            if text:
                chat.banner.grid(row=0, column=1, sticky="ew", padx=8, pady=(8, 0))
            else:
                chat.banner.grid_forget()
        if Change.BELL in changes:
            self.bell()
        if Change.TITLE in changes:
            self.title(vm.title())


@contextlib.contextmanager
def closed_on_signals(app: App) -> Iterator[None]:
    """While in the block, Ctrl-C in the terminal that started the window (SIGINT), or a
    SIGTERM (the desktop session ending), closes it as its close button does, without the
    question: the session ends as a logout does. Another one closes it at once."""

    def close(_signum: int, _frame: object) -> None:
        if app.guest.running:  # else its pipe is closed, and the window going
            app.guest.call_soon(app.close)

    old = {signum: signal.signal(signum, close) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in old.items():
            signal.signal(signum, handler)


def run_gui(settings: Settings | None = None, *, log_dir: Path | None = None) -> int:
    """Open the window and run until it is closed; unexpected errors are logged to
    ``gui.log`` in ``log_dir`` (default: the user's log folder)."""
    app = App(settings, log_file=log_to_file(log_dir))
    with closed_on_signals(app):
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
