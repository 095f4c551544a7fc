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
from datetime import datetime
from pathlib import Path
from tkinter import filedialog, messagebox
from typing import Any, NamedTuple

import customtkinter as ctk
import trio

from sealchat.core import Message
from sealchat.gui.guest import TkGuest
from sealchat.gui.logfile import log_to_file
from sealchat.gui.settings import Server, Settings
from sealchat.gui.text_helpers import file_label, friendly, refusal, shown_line, without_blank_ends
from sealchat.gui.theme import EMOTICONS, PALETTES, accented
from sealchat.gui.viewmodel import (
    Change,
    Conversation,
    TranscriptUpdate,
    TransferState,
    ViewModel,
    room_key,
)
from sealchat.transports.pinning import ServerKeyChanged, ServerKeyUnknown, is_port
from sealchat.transports.requests import ClientError, LoginFailed, new_client_id
from sealchat.transports.shown_text import escaped
from sealchat.transports.trio_client import ChatClient, ConnectionLost, LinkState, connect

TYPING_REFRESH = 3.0
GIVEN_BACK = "given_back"
"""The input box's tag on the messages given back (gone with them once they are sent)."""
TYPING_IDLE = 4.0
CONTINUATION_INDENT = 28
"""Pixels by which a message's further lines (and wrapped ones) are indented, so that no line
of a message can pass for a message of its own."""

log = logging.getLogger("sealchat.gui")


class _Outgoing(NamedTuple):
    """A message typed, waiting for its turn to be handed to the client."""

    text: str
    room: str
    user: str
    client_id: str


class LoginForm(ctk.CTkFrame):
    """Server, user name, password; errors shown inline."""

    def __init__(self, app: App, settings: Settings) -> None:
        super().__init__(app, corner_radius=12)
        self.app = app
        ctk.CTkLabel(self, text="sealchat", font=ctk.CTkFont(size=28, weight="bold")).pack(
            pady=(24, 4)
        )
        ctk.CTkLabel(self, text="secure chat on your own server").pack(pady=(0, 16))
        remembered = settings.server or Server()
        self.host = self._field("Server", remembered.host)
        self.port = self._field("Port", str(remembered.port))
        self.username = self._field("User name", remembered.username)
        self.password = self._field("Password", "", show="•")
        self.remember = ctk.CTkCheckBox(self, text="Remember this server (never the password)")
        if settings.server is not None:
            self.remember.select()
        self.remember.pack(padx=24, pady=8, anchor="w")
        self.button = ctk.CTkButton(self, text="Log in", command=self.submit)
        self.button.pack(padx=24, pady=(8, 4), fill="x")
        self.error = ctk.CTkLabel(self, text="", wraplength=320, justify="left")
        self.error.pack(padx=24, pady=(4, 20))
        for entry in (self.host, self.port, self.username, self.password):
            entry.bind("<Return>", lambda _e: self.submit())

    def _field(self, label: str, value: str, show: str = "") -> ctk.CTkEntry:
        ctk.CTkLabel(self, text=label, anchor="w").pack(padx=24, fill="x")
        entry = ctk.CTkEntry(self, width=320, show=show)
        entry.insert(0, value)
        entry.pack(padx=24, pady=(0, 8))
        return entry

    def submit(self) -> None:
        """Log in with what the form says; ignored while a login is under way (Enter
        pressed again while the button says "Connecting…")."""
        if self.button.cget("state") == "disabled":
            return
        host, port, user = self.host.get().strip(), self.port.get().strip(), self.username.get()
        if not host or not is_port(port) or not user.strip():
            self.show_error("Fill in the server, a port (1 to 65535) and your user name.")
            return
        self.show_error("")
        self.button.configure(state="disabled", text="Connecting…")
        self.app.start_login(
            host, int(port), user.strip(), self.password.get(), remember=bool(self.remember.get())
        )

    def apply_theme(self, palette: dict[str, str]) -> None:
        self.configure(fg_color=palette["panel"])
        self.button.configure(**accented(palette))
        self.remember.configure(
            fg_color=palette["accent"],
            hover_color=palette["accent_hover"],
            checkmark_color=palette["window"],
            border_color=palette["dim"],
            text_color=palette["fg"],
        )
        for entry in (self.host, self.port, self.username, self.password):
            entry.configure(fg_color=palette["entry"], text_color=palette["fg"])

    def show_error(self, text: str) -> None:
        """Show ``text`` (which may quote the server) with hidden characters escaped."""
        self.error.configure(text=escaped(text), text_color=self.app.palette["error"])
        self.button.configure(state="normal", text="Log in")


class ChatView(ctk.CTkFrame):
    """The main window: conversations, people, transcript, typing line, transfers, input."""

    def __init__(self, app: App) -> None:
        super().__init__(app, corner_radius=0)
        self.app = app
        self.grid_columnconfigure(1, weight=1)
        self.grid_rowconfigure(1, weight=1)

        self.banner = ctk.CTkLabel(self, text="", height=28)
        self._build_sidebar()
        self._build_transcript()
        self.typing_label = ctk.CTkLabel(self, text="", anchor="w", height=20)
        self.typing_label.grid(row=2, column=1, sticky="ew", padx=14)
        self.transfers = ctk.CTkFrame(self, fg_color="transparent", height=1)
        self.transfers.grid(row=3, column=1, sticky="ew", padx=8)
        self.transfer_rows: dict[int, tuple[ctk.CTkLabel, ctk.CTkProgressBar, ctk.CTkButton]] = {}

        self._build_input()
        self.conversation_buttons: dict[str, ctk.CTkButton] = {}
        self._conversation_looks: dict[str, dict[str, str]] = {}
        """What each sidebar button shows (text, colours), to update only what changed."""
        self.emoji_window: ctk.CTkToplevel | None = None
        self._draft = ""
        """The input box's text as of the last key (a key that changes it is typing)."""
        self._lines: list[int] = []
        """How many text lines each message drawn in the transcript takes, in order."""

    def _build_sidebar(self) -> None:
        app = self.app
        side = self.side = ctk.CTkFrame(self, width=220, corner_radius=0)
        side.grid(row=0, column=0, rowspan=5, sticky="nsw")
        ctk.CTkLabel(side, text="Conversations", font=ctk.CTkFont(weight="bold")).pack(
            padx=12, pady=(12, 4), anchor="w"
        )
        self.conversation_list = ctk.CTkScrollableFrame(side, width=200, height=220)
        self.conversation_list.pack(padx=8, fill="x")
        join_row = ctk.CTkFrame(side, fg_color="transparent")
        join_row.pack(padx=8, pady=6, fill="x")
        self.join_entry = ctk.CTkEntry(join_row, placeholder_text="room name", width=130)
        self.join_entry.pack(side="left")
        self.join_entry.bind("<Return>", lambda _e: self._join())
        self.join_button = ctk.CTkButton(join_row, text="Join", width=56, command=self._join)
        self.join_button.pack(side="left", padx=(6, 0))
        ctk.CTkLabel(side, text="People", font=ctk.CTkFont(weight="bold")).pack(
            padx=12, pady=(10, 4), anchor="w"
        )
        self.people_list = ctk.CTkScrollableFrame(side, width=200, height=200)
        self.people_list.pack(padx=8, fill="both", expand=True)
        self.theme_switch = ctk.CTkSwitch(side, text="Dark theme", command=app.toggle_theme)
        self.theme_switch.pack(padx=12, pady=12, anchor="w")

    def _build_transcript(self) -> None:
        middle = ctk.CTkFrame(self, fg_color="transparent")
        middle.grid(row=1, column=1, sticky="nsew", padx=8, pady=(8, 0))
        middle.grid_columnconfigure(0, weight=1)
        middle.grid_rowconfigure(0, weight=1)
        self.transcript = tk.Text(
            middle,
            wrap="word",
            state="disabled",
            borderwidth=0,
            highlightthickness=0,
            padx=10,
            pady=8,
            font=("DejaVu Sans", 11),
            cursor="arrow",
        )
        self.transcript.grid(row=0, column=0, sticky="nsew")
        scrollbar = ctk.CTkScrollbar(middle, command=self.transcript.yview)
        scrollbar.grid(row=0, column=1, sticky="ns")
        self.transcript.configure(yscrollcommand=lambda a, b: self._scrolled(scrollbar, a, b))
        self.transcript.tag_configure("time", font=("DejaVu Sans", 9))
        self.transcript.tag_configure("sender", font=("DejaVu Sans", 11, "bold"))
        self.transcript.tag_configure("file", underline=True)
        self.transcript.tag_configure("message", lmargin2=CONTINUATION_INDENT)
        self.transcript.tag_configure(
            "continued", lmargin1=CONTINUATION_INDENT, lmargin2=CONTINUATION_INDENT
        )
        self.transcript.tag_bind("file", "<Button-1>", self._clicked_file)
        self.transcript.tag_bind(
            "file", "<Enter>", lambda _e: self.transcript.configure(cursor="hand2")
        )
        self.transcript.tag_bind(
            "file", "<Leave>", lambda _e: self.transcript.configure(cursor="arrow")
        )

    def _build_input(self) -> None:
        app = self.app
        bottom = ctk.CTkFrame(self, fg_color="transparent")
        bottom.grid(row=4, column=1, sticky="ew", padx=8, pady=8)
        bottom.grid_columnconfigure(2, weight=1)
        self.emoji_button = ctk.CTkButton(bottom, text="\u263a", width=36, command=self.pick_emoji)
        self.emoji_button.grid(row=0, column=0, padx=(0, 4))
        self.file_button = ctk.CTkButton(bottom, text="File…", width=56, command=app.choose_file)
        self.file_button.grid(row=0, column=1, padx=(0, 4))
        self.input = ctk.CTkTextbox(bottom, height=56, wrap="word")
        self.input.grid(row=0, column=2, sticky="ew")
        self.input.bind("<Return>", self._enter)
        self.input.bind("<Shift-Return>", lambda _e: None)
        self.input.bind("<KeyRelease>", self._key)
        self.send_button = ctk.CTkButton(bottom, text="Send", width=64, command=self.send)
        self.send_button.grid(row=0, column=3, padx=(4, 0))

    # --- user actions ---------------------------------------------------------------------

    def _enter(self, event: tk.Event[Any]) -> str | None:
        if event.state & 0x1:  # Shift: a new line
            return None
        self.send()
        return "break"

    def send(self) -> None:
        """Send what is in the input box; a text that cannot go stays there."""
        text = without_blank_ends(self.input.get("1.0", "end-1c"))
        if text and self.app.send_text(text):
            self.input.delete("1.0", "end")
            self._draft = ""

    def give_back(self, text: str) -> None:
        """Put ``text`` that did not go back into the input box: after what came back before
        it (so several come back in the order typed), before anything typed since."""
        box = self.input
        earlier = box.tag_ranges(GIVEN_BACK)  # what came back and is still there, tagged
        if earlier:
            box.insert(earlier[-1], "\n" + text, GIVEN_BACK)
            return
        if box.get("1.0", "end-1c").strip():  # a draft: it goes on the line after
            box.insert("1.0", "\n")
        box.insert("1.0", text, GIVEN_BACK)

    def _key(self, _event: tk.Event[Any]) -> None:
        """A key was released: typing, if it changed the draft (not an arrow, not Ctrl)."""
        draft = self.input.get("1.0", "end-1c")
        if draft != self._draft:
            self._draft = draft
            self.app.user_is_typing()

    def _join(self) -> None:
        room = self.join_entry.get().strip().lower()
        if room:
            self.join_entry.delete(0, "end")
            self.app.join_room(room)

    def pick_emoji(self) -> None:
        self.close_emoji_picker()
        window = self.emoji_window = ctk.CTkToplevel(self)
        window.title("Emoji")
        window.transient(self.app)
        self.app.bind_focus(window)  # picking an emoji is not leaving
        for n, text in enumerate(EMOTICONS):
            ctk.CTkButton(
                window,
                text=text,
                width=44,
                font=("DejaVu Sans", 14),
                command=lambda t=text: self.insert_emoji(t),
            ).grid(row=n // 8, column=n % 8, padx=2, pady=2)
        self._theme_emoji_picker(self.app.palette)

    def _theme_emoji_picker(self, palette: dict[str, str]) -> None:
        """Colour the emoji picker, if it is open, and its buttons as ``palette`` says."""
        window = self.emoji_window
        if window is not None and window.winfo_exists():
            window.configure(fg_color=palette["window"])
            for button in window.winfo_children():
                button.configure(**accented(palette))

    def insert_emoji(self, text: str) -> None:
        self.input.insert("insert", text)
        self.input.focus_set()
        self.close_emoji_picker()

    def close_emoji_picker(self) -> None:
        if self.emoji_window is not None:
            if self.emoji_window.winfo_exists():
                self.emoji_window.destroy()
            self.emoji_window = None

    def _clicked_file(self, event: tk.Event[Any]) -> None:
        index = self.transcript.index(f"@{event.x},{event.y}")
        for tag in self.transcript.tag_names(index):
            if tag.startswith("file:"):
                self.app.download(tag[5:])

    def _scrolled(self, scrollbar: ctk.CTkScrollbar, first: str, last: str) -> None:
        scrollbar.set(first, last)
        if float(first) <= 0.0 and float(last) < 1.0:
            self.app.load_older()

    # --- drawing --------------------------------------------------------------------------

    def draw_conversations(self, vm: ViewModel, palette: dict[str, str]) -> None:
        """The sidebar's buttons are made anew only when the list of conversations changes;
        otherwise those whose text or colours changed are updated in place."""
        looks = {
            c.key: _conversation_look(c, vm.current, palette) for c in vm.sorted_conversations()
        }
        if list(looks) != list(self._conversation_looks):
            for button in self.conversation_buttons.values():
                button.destroy()
            self.conversation_buttons = {}
            for key, look in looks.items():
                button = ctk.CTkButton(
                    self.conversation_list,
                    anchor="w",
                    command=lambda key=key: self.app.select(key),
                    **look,
                )
                button.pack(fill="x", pady=1)
                self.conversation_buttons[key] = button
        else:
            for key, look in looks.items():
                if look != self._conversation_looks[key]:
                    self.conversation_buttons[key].configure(**look)
        self._conversation_looks = looks

    def draw_people(self, vm: ViewModel, palette: dict[str, str]) -> None:
        for child in self.people_list.winfo_children():
            child.destroy()
        for member in vm.people_in_current():
            dot = "\u25cf" if member.online else "\u25cb"
            ctk.CTkButton(
                self.people_list,
                text=f"{dot} {member.name}",
                anchor="w",
                fg_color="transparent",
                text_color=palette["accent"] if member.online else palette["dim"],
                hover_color=palette["panel"],
                command=lambda name=member.name: self.app.open_direct(name),
            ).pack(fill="x", pady=1)

    def draw_transcript(self, vm: ViewModel, updates: list[TranscriptUpdate]) -> None:
        text = self.transcript
        at_bottom = text.yview()[1] >= 0.999
        text.configure(state="normal")
        if any(u.redraw for u in updates):
            text.delete("1.0", "end")
            self._lines = [self._insert(m, "end", vm.me) for m in vm.current_messages()]
            at_bottom = True
        else:
            # The line at the top stays there when older messages go in above it (Tk would
            # keep showing line 1, which would load the next page, and the next...).
            text.mark_set("view_top", "@0,0")
            for update in updates:
                assert update.message is not None
                index = update.index
                # A message may span several lines: count them rather than assume one each.
                where = "end" if index >= len(self._lines) else f"{sum(self._lines[:index]) + 1}.0"
                self._lines.insert(index, self._insert(update.message, where, vm.me))
            if not at_bottom:
                text.yview("view_top")
        text.configure(state="disabled")
        if at_bottom:
            text.see("end")

    def _insert(self, message: Message, where: str, me: str) -> int:
        """Draw ``message`` at ``where``; returns the number of lines it took.

        What a peer wrote is escaped (control, bidi and other invisible characters shown as
        ``\\u202e``…), and its further lines are indented: no line can pose as a message."""
        text = self.transcript
        mine = message.sender.lower() == me.lower()
        stamp = datetime.fromtimestamp(message.ts).strftime("%H:%M") if message.ts else ""
        parts: list[tuple[str, tuple[str, ...]]] = [
            (f"{stamp}  ", ("time", "message")),
            (f"{escaped(message.sender)}: ", ("sender", "me" if mine else "other", "message")),
        ]
        if message.file is not None:
            file_tags = ("file", f"file:{message.file.file_id}", "message")
            parts.append((file_label(message.file), file_tags))
        else:
            first, *rest = message.text.replace("\r\n", "\n").split("\n")
            parts.append((shown_line(first), ("body", "message")))
            for line in rest:
                parts.append(("\n" + shown_line(line), ("body", "message", "continued")))
        parts.append(("\n", ("message", "continued")))
        for chunk, tags in reversed(parts) if where != "end" else parts:
            text.insert(where, chunk, tags)
        return sum(chunk.count("\n") for chunk, _ in parts)

    def draw_transfers(self, vm: ViewModel, palette: dict[str, str]) -> None:
        """A row per transfer: its progress, and Cancel, or Dismiss once it has ended."""
        for gone in [tid for tid in self.transfer_rows if tid not in vm.transfers]:
            label, _bar, _button = self.transfer_rows.pop(gone)
            label.master.destroy()  # the row's frame
        if not self.transfer_rows:
            self.transfers.configure(height=1)  # pack leaves an emptied frame its old height
        for transfer in vm.transfers.values():
            row = self.transfer_rows.get(transfer.id)
            if row is None:
                frame = ctk.CTkFrame(self.transfers, fg_color="transparent")
                frame.pack(fill="x")
                label = ctk.CTkLabel(frame, text="", anchor="w")
                label.pack(side="left", padx=4)
                bar = ctk.CTkProgressBar(frame, width=200, progress_color=palette["accent"])
                bar.pack(side="left", padx=6)
                cancel = ctk.CTkButton(
                    frame,
                    text="Cancel",
                    width=64,
                    command=lambda tid=transfer.id: self.app.cancel_transfer(tid),
                )
                cancel.pack(side="left")
                row = self.transfer_rows[transfer.id] = (label, bar, cancel)
            label, bar, cancel = row
            label.configure(text=escaped(transfer.label))  # reasons may quote the server
            bar.configure(progress_color=palette["accent"])
            bar.set(transfer.fraction)
            cancel.configure(**accented(palette))
            if transfer.state is not TransferState.RUNNING:
                cancel.configure(
                    text="Dismiss",
                    command=lambda tid=transfer.id: self.app.dismiss_transfer(tid),
                )

    def apply_theme(self, palette: dict[str, str], dark: bool) -> None:
        self.configure(fg_color=palette["window"])
        self.side.configure(fg_color=palette["panel"])
        for frame in (self.conversation_list, self.people_list):
            frame.configure(fg_color=palette["window"])
        for button in (self.join_button, self.file_button, self.send_button, self.emoji_button):
            button.configure(**accented(palette))
        self._theme_emoji_picker(palette)
        self.input.configure(
            fg_color=palette["entry"],
            text_color=palette["fg"],
            border_width=1,  # in the light theme, the box would not show on white otherwise
            border_color=palette["dim"],
        )
        self.join_entry.configure(fg_color=palette["entry"], text_color=palette["fg"])
        self.theme_switch.configure(progress_color=palette["accent"], text_color=palette["fg"])
        self.transcript.configure(
            background=palette["text_bg"],
            foreground=palette["fg"],
            insertbackground=palette["fg"],
            selectbackground=palette["accent"],
        )
        self.transcript.tag_configure("time", foreground=palette["dim"])
        self.transcript.tag_configure("me", foreground=palette["me"])
        self.transcript.tag_configure("other", foreground=palette["sender"])
        self.transcript.tag_configure("file", foreground=palette["file"])
        if dark:
            self.theme_switch.select()
        else:
            self.theme_switch.deselect()


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


def _conversation_look(
    conversation: Conversation, current: str, palette: dict[str, str]
) -> dict[str, str]:
    """What the sidebar button of ``conversation`` shows: its name, unread count, colours."""
    mark = "#" if conversation.is_room else "@"
    unread = f"  ({conversation.unread})" if conversation.unread else ""
    shown = conversation.key == current
    return {
        "text": f"{mark} {conversation.title}{unread}",
        "fg_color": palette["accent"] if shown else "transparent",
        "text_color": palette["window"] if shown else palette["fg"],
        "hover_color": palette["accent_hover"],
    }


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
