"""The chat view of the desktop client: conversations, people, transcript, typing line,
transfers and input box, drawn from the view-model."""

from __future__ import annotations

import collections
import time
import tkinter as tk
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import customtkinter as ctk

from sealchat.core import Message
from sealchat.gui.conversation import Conversation, DayBreak, Row, TranscriptUpdate
from sealchat.gui.text_helpers import file_label, fitted, shown_line, without_blank_ends
from sealchat.gui.theme import EMOTICONS, accented, quiet
from sealchat.gui.transfer_state import TransferState
from sealchat.gui.viewmodel import ViewModel
from sealchat.transports.requests import typed_room
from sealchat.transports.shown_text import escaped, names_user
from sealchat.transports.shown_time import clock_time, day_label, local_day

if TYPE_CHECKING:
    from sealchat.gui.app import App

JOIN_HINT = "room name"
"""What the empty Join box shows."""
GIVEN_BACK = "given_back"
"""The input box's tag on the messages given back (gone with them once they are sent)."""
CONTINUATION_INDENT = 28
"""Pixels by which a message's further lines (and wrapped ones) are indented, so that no line
of a message can pass for a message of its own."""
TRANSFER_LABEL_MARGIN = 8
"""Pixels of a transfer row's label kept clear of text (the label's own padding)."""
BANNER_MARGIN = 24
"""Pixels of the banner kept clear of text (its rounded ends)."""
SIDEBAR_LIST_WIDTH = 200
"""Pixels of the sidebar's lists (conversations, people), whose buttons fill them."""
SIDEBAR_TEXT_ROOM = SIDEBAR_LIST_WIDTH - 16
"""Pixels a sidebar button leaves its text (its rounded ends take the rest)."""


_0H = datetime.min.time()


def _day_line(row: DayBreak, now: float) -> str:
    """A separator's text: its day as seen at ``now``, between rules."""
    return f"\u2500\u2500 {day_label(row.ts, now)} \u2500\u2500"


@dataclass(slots=True)
class TransferRow:
    """The widgets of one transfer's row."""

    label: ctk.CTkLabel
    bar: ctk.CTkProgressBar
    button: ctk.CTkButton
    """Cancel while the transfer runs, Dismiss once it has ended."""
    folder: ctk.CTkButton | None = None
    """Show folder, once a download is saved."""


class ChatView(ctk.CTkFrame):
    """The main window: conversations, people, transcript, typing line, transfers, input."""

    def __init__(self, app: App) -> None:
        super().__init__(app, corner_radius=0)
        self.app = app
        self.grid_columnconfigure(1, weight=1)
        self.grid_rowconfigure(1, weight=1)

        self.banner = ctk.CTkLabel(self, text="", height=28)
        # On the banner itself: CTkLabel.bind would also bind its text, whose width follows.
        tk.Misc.bind(self.banner, "<Configure>", self._wrap_banner, add="+")
        self._build_sidebar()
        self._build_transcript()
        self.typing_label = ctk.CTkLabel(self, text="", anchor="w", height=20)
        self.typing_label.grid(row=2, column=1, sticky="ew", padx=14)
        self.transfers = ctk.CTkFrame(self, fg_color="transparent", height=1)
        self.transfers.grid(row=3, column=1, sticky="ew", padx=8)
        self.transfer_rows: dict[int, TransferRow] = {}
        self._transfer_labels: dict[int, tuple[str, str, str]] = {}
        """Each transfer row's whole label, as :attr:`Transfer.label_parts` (escaped)."""
        self._transfer_font = ctk.CTkFont()

        self._build_input()
        self.conversation_buttons: dict[str, ctk.CTkButton] = {}
        self._conversation_looks: dict[str, dict[str, str]] = {}
        """What each sidebar button shows (text, colours), to update only what changed."""
        self.people_buttons: dict[str, ctk.CTkButton] = {}
        """The people list's button of each member shown, by name."""
        self._people_looks: dict[str, dict[str, str]] = {}
        """What each people button shows (text, colours), by name in the order shown."""
        self._spare_people: list[ctk.CTkButton] = []
        """People buttons no longer shown, hidden to show other names: switching from a
        direct conversation back to a big room makes none anew (as many as the longest list
        shown at once)."""
        self._people_texts: dict[str, str] = {}
        """Each people button's text as fitted to the list, by its text unfitted (measuring
        is a Tk call per name: a big room's list would take it hundreds of times a change)."""
        self.emoji_window: ctk.CTkToplevel | None = None
        self._draft = ""
        """The input box's text as of the last key (a key that changes it is typing)."""
        self._lines: list[int] = []
        """How many text lines each row drawn in the transcript takes, in order (see
        :meth:`ViewModel.current_rows`)."""
        self._named_on: date | None = None
        """The day as of which the separators name their days ("Today")."""
        self._name_days_at_midnight()
        self.following = True
        """Whether the transcript keeps its newest line in view: true until the user scrolls
        away from the end, and again once they scroll back to it (or another conversation
        is shown). A layout change (a banner, a transfer row) never changes it."""

    def _wrap_banner(self, event: tk.Event[Any]) -> None:
        """Wrap the banner's text to its width: a long error shows whole, on more lines."""
        scaling = ctk.ScalingTracker.get_widget_scaling(self.banner)
        self.banner.configure(wraplength=max(1, int(event.width / scaling) - BANNER_MARGIN))

    def _build_sidebar(self) -> None:
        app = self.app
        side = self.side = ctk.CTkFrame(self, width=220, corner_radius=0)
        side.grid(row=0, column=0, rowspan=5, sticky="nsw")
        header = ctk.CTkFrame(side, fg_color="transparent")
        header.pack(padx=(12, 8), pady=(12, 4), fill="x")
        ctk.CTkLabel(header, text="Conversations", font=ctk.CTkFont(weight="bold")).pack(
            side="left"
        )
        self.leave_button = ctk.CTkButton(
            header, text="Leave room", width=84, height=24, command=app.controller.leave_current
        )
        self.leave_button.pack(side="right")
        self._sidebar_font = ctk.CTkFont()
        self.conversation_list = ctk.CTkScrollableFrame(side, width=SIDEBAR_LIST_WIDTH, height=220)
        self.conversation_list.pack(padx=8, fill="x")
        join_row = ctk.CTkFrame(side, fg_color="transparent")
        join_row.pack(padx=8, pady=6, fill="x")
        self.join_entry = ctk.CTkEntry(join_row, placeholder_text=JOIN_HINT, width=130)
        self.join_entry.pack(side="left")
        self.join_entry.bind("<Return>", lambda _e: self._join())
        self.join_button = ctk.CTkButton(join_row, text="Join", width=56, command=self._join)
        self.join_button.pack(side="left", padx=(6, 0))
        ctk.CTkLabel(side, text="People", font=ctk.CTkFont(weight="bold")).pack(
            padx=12, pady=(10, 4), anchor="w"
        )
        # The footer is packed before the People list, so that the list gives up its room
        # first in a short window: the theme switch and "Log out" always show.
        footer = ctk.CTkFrame(side, fg_color="transparent")
        footer.pack(side="bottom", padx=(12, 8), pady=12, fill="x")
        self.theme_switch = ctk.CTkSwitch(footer, text="Dark theme", command=app.toggle_theme)
        self.theme_switch.pack(side="left")
        self.logout_button = ctk.CTkButton(
            footer, text="Log out", width=72, height=24, command=app.controller.log_out
        )
        self.logout_button.pack(side="right")
        account = ctk.CTkFrame(side, fg_color="transparent")  # above the footer, as sure to show
        account.pack(side="bottom", padx=(12, 8), pady=(8, 0), fill="x")
        self.password_button = ctk.CTkButton(
            account,
            text="Change password…",
            width=120,
            height=24,
            command=app.controller.open_password_dialog,
        )
        self.password_button.pack(side="right")
        self.people_list = ctk.CTkScrollableFrame(side, width=SIDEBAR_LIST_WIDTH, height=200)
        self.people_list.pack(padx=8, fill="both", expand=True)

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
        scrollbar = ctk.CTkScrollbar(middle, command=self.scroll_by_user)
        scrollbar.grid(row=0, column=1, sticky="ns")
        self.transcript.configure(yscrollcommand=lambda a, b: self._scrolled(scrollbar, a, b))
        self._watch_user_scrolling()
        self.transcript.tag_configure("time", font=("DejaVu Sans", 9))
        self.transcript.tag_configure(
            "day", font=("DejaVu Sans", 9), justify="center", spacing1=6, spacing3=4
        )
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
        self.file_button = ctk.CTkButton(
            bottom, text="File…", width=56, command=app.transfers.choose_file
        )
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
        if text and self.app.controller.send_text(text):
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
            self.app.typing_notice.user_is_typing()

    def _join(self) -> None:
        room = self._room_typed()
        if room:
            self.app.controller.join_room(room)

    def _room_typed(self) -> str:
        return typed_room(str(self.join_entry.get()))

    def joined(self, room: str) -> None:
        """``room`` was joined: the Join box is emptied, unless it names another by now."""
        if self._room_typed() == room:
            self.clear_join_box()

    def clear_join_box(self) -> None:
        """Empty the Join box, its hint shown again unless the user is typing in it (as
        CTkEntry does when it loses the focus: its delete() takes the hint itself away from
        a box that never had the focus, for good)."""
        box = self.join_entry
        if box.get():  # "" while the hint shows
            box.delete(0, "end")
        typing_there = str(self.focus_get() or "").startswith(str(box))
        if not typing_there:
            box.configure(placeholder_text=JOIN_HINT)

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
                self.app.transfers.download(tag[5:])

    def _watch_user_scrolling(self) -> None:
        """Whether the view follows the end is decided by what the user does: the scrollbar
        (:meth:`scroll_by_user`), and the wheel, keys and mouse drags over the transcript,
        seen after the Text class's own bindings have scrolled it. When the transcript's
        size changes, a view that follows the end is put back at the end."""
        text = self.transcript
        tag = "TranscriptFollow"
        tags = list(text.bindtags())
        tags.insert(tags.index("Text") + 1, tag)
        text.bindtags(tuple(tags))
        for sequence in ("<Button-4>", "<Button-5>", "<MouseWheel>", "<KeyPress>"):
            text.bind_class(tag, sequence, lambda _e: self._user_moved_view())
        text.bind_class(tag, "<ButtonRelease>", lambda _e: self._user_moved_view())
        text.bind("<Configure>", lambda _e: self._keep_following())

    def scroll_by_user(self, *args: str) -> None:
        """The scrollbar moved the view (its ``yview`` arguments): to the end or away."""
        self.transcript.yview(*args)
        self._user_moved_view()

    def _user_moved_view(self) -> None:
        """The user scrolled: the view follows the end if they left it at the end."""
        self.following = self.transcript.yview()[1] >= 0.999

    def _keep_following(self) -> None:
        """Show the end, if the view follows it."""
        if self.following:
            self.transcript.see("end")

    def _scrolled(self, scrollbar: ctk.CTkScrollbar, first: str, last: str) -> None:
        """The view moved, or what it shows changed: the scrollbar follows it, and with the
        top of the transcript in view (scrolled to, or all of it fits), older messages are
        asked for."""
        scrollbar.set(first, last)
        if float(first) <= 0.0:
            self.app.controller.load_older()

    def fill_view(self) -> None:
        """Once what was just drawn is laid out: if the top of the transcript is in view (all
        of it fits), older messages are asked for, page after page until the view can scroll
        or there are none (Tk tells :meth:`_scrolled` only when the view changes: one that
        fitted before a page and still does would never ask)."""
        self.after_idle(self._load_older_if_top_shown)

    def _load_older_if_top_shown(self) -> None:
        if self.transcript.yview()[0] <= 0.0:
            self.app.controller.load_older()

    # --- drawing --------------------------------------------------------------------------

    def draw_conversations(self, vm: ViewModel, palette: dict[str, str]) -> None:
        """The sidebar's buttons are made anew only when the list of conversations changes;
        otherwise those whose text or colours changed are updated in place."""
        looks = {
            c.key: _conversation_look(c, vm.current, palette, self._sidebar_text)
            for c in vm.sorted_conversations()
        }
        if list(looks) != list(self._conversation_looks):
            for button in self.conversation_buttons.values():
                button.destroy()
            self.conversation_buttons = {}
            for key, look in looks.items():
                button = ctk.CTkButton(
                    self.conversation_list,
                    anchor="w",
                    font=self._sidebar_font,
                    command=lambda key=key: self.app.controller.select(key),
                    **look,
                )
                button.pack(fill="x", pady=1)
                self.conversation_buttons[key] = button
        else:
            for key, look in looks.items():
                if look != self._conversation_looks[key]:
                    self.conversation_buttons[key].configure(**look)
        self._conversation_looks = looks
        self.leave_button.configure(state="normal" if vm.can_leave else "disabled")

    def _sidebar_text(self, before: str, name: str, after: str) -> str:
        """``before + name + after`` as a sidebar button shows it: a name too long for the
        button shortened in its middle, so that what comes after it (an unread count) shows."""
        font = self._sidebar_font
        return fitted(before, name, after, lambda text: font.measure(text) <= SIDEBAR_TEXT_ROOM)

    def draw_people(self, vm: ViewModel, palette: dict[str, str]) -> None:
        """Show the members of the current conversation, online ones marked and in the
        accent; a click opens a direct conversation. The buttons are kept by name: only those
        whose text or colours changed are updated, a name gone hides its button, a new one
        takes a hidden button (or a new one), and buttons move only where the order changed
        (a presence in a big room costs one button, not the whole list)."""
        texts: dict[str, str] = {}
        looks: dict[str, dict[str, str]] = {}
        for member in vm.people_in_current():
            dot = "\u25cf" if member.online else "\u25cb"
            whole = f"{dot} {member.name}"
            text = self._people_texts.get(whole)
            if text is None:  # escaped: names come from the server (as in the transcript)
                text = self._sidebar_text(f"{dot} ", escaped(member.name), "")
            texts[whole] = text
            looks[member.name] = {
                "text": text,
                "text_color": palette["accent"] if member.online else palette["dim"],
                "fg_color": "transparent",
                "hover_color": palette["panel"],
            }
        self._people_texts = texts  # only those shown: the cache never outgrows the list
        buttons = self.people_buttons
        for name in [n for n in buttons if n not in looks]:
            spare = buttons.pop(name)
            spare.pack_forget()
            self._spare_people.append(spare)
        packed = [n for n in self._people_looks if n in looks]
        for name, look in looks.items():
            button = buttons.get(name)
            if button is not None:
                if look != self._people_looks[name]:
                    button.configure(**look)
                continue
            command = lambda name=name: self.app.controller.open_direct(name)  # noqa: E731
            if self._spare_people:
                button = self._spare_people.pop()
                button.configure(command=command, **look)
            else:
                button = ctk.CTkButton(
                    self.people_list,
                    anchor="w",
                    font=self._sidebar_font,
                    command=command,
                    **look,
                )
            buttons[name] = button
        _pack_in_order([buttons[n] for n in looks], [buttons[n] for n in packed])
        self._people_looks = looks

    def draw_transcript(self, vm: ViewModel, updates: list[TranscriptUpdate], now: float) -> None:
        """Draw the transcript's ``updates``: a conversation afresh (following its end), or
        rows inserted or removed where they are; the view follows the end if it did (see
        :attr:`following`), else stays on the line the user was reading.

        Days are named as seen at ``now`` ("Today", "Yesterday"): past a midnight, every
        separator is named again (see also :meth:`name_days`)."""
        text = self.transcript
        text.configure(state="normal")
        if any(u.redraw for u in updates):
            self._named_on = local_day(now)
            text.delete("1.0", "end")
            self._lines = [self._insert(row, "end", vm.me, now) for row in vm.current_rows()]
            self.following = True
        else:
            # The line at the top stays there when older messages go in above it (Tk would
            # keep showing line 1, which would load the next page, and the next...). When
            # the separator it is on goes, the mark moves to the message that was below it.
            text.mark_set("view_top", "@0,0")
            for update in updates:
                index = update.index
                # A row may span several lines: count them rather than assume one each.
                start = f"{sum(self._lines[:index]) + 1}.0"
                if update.removed:
                    text.delete(start, f"{start} + {self._lines.pop(index)} lines")
                    continue
                assert update.row is not None
                where = "end" if index >= len(self._lines) else start
                self._lines.insert(index, self._insert(update.row, where, vm.me, now))
            if not self.following:
                text.yview("view_top")
        text.configure(state="disabled")
        if local_day(now) != self._named_on:
            self.name_days(vm, now)
        self._keep_following()
        self.fill_view()

    def name_days(self, vm: ViewModel, now: float) -> None:
        """Name every day's separator again as seen at ``now``, each in its line: the view
        does not move. Called past a midnight, by :meth:`draw_transcript` and by a timer
        (:meth:`_name_days_at_midnight`), so that yesterday is never still "Today"."""
        rows = vm.current_rows()
        if len(rows) != len(self._lines):  # not drawn yet: it will be, as of then
            return
        text = self.transcript
        text.configure(state="normal")
        line = 1
        for row, lines in zip(rows, self._lines, strict=True):
            if isinstance(row, DayBreak):
                text.delete(f"{line}.0", f"{line}.0 lineend")
                text.insert(f"{line}.0", _day_line(row, now), ("day",))
            line += lines
        text.configure(state="disabled")
        self._named_on = local_day(now)

    def _name_days_at_midnight(self) -> None:
        """Name the days again just after each local midnight, even if no message comes."""
        now = time.time()
        if not self.app.vm.updates:  # else the drawing of those will
            self.name_days(self.app.vm, now)
        tomorrow = datetime.combine(datetime.fromtimestamp(now).date() + timedelta(days=1), _0H)
        self.after(int((tomorrow.timestamp() - now) * 1000) + 1000, self._name_days_at_midnight)

    def _insert(self, row: Row, where: str, me: str, now: float) -> int:
        """Draw ``row`` at ``where``: a message, or the separator above the first of a day,
        which names it as seen at ``now``; returns the number of lines it took."""
        if isinstance(row, DayBreak):
            self.transcript.insert(where, _day_line(row, now) + "\n", ("day",))
            return 1
        return self._insert_message(row, where, me)

    def _insert_message(self, message: Message, where: str, me: str) -> int:
        """Draw ``message`` at ``where``; returns the number of lines it took.

        What a peer wrote is escaped (control, bidi and other invisible characters shown as
        ``\\u202e``…), and its further lines are indented: no line can pose as a message."""
        text = self.transcript
        mine = message.sender.lower() == me.lower()
        body: tuple[str, ...] = ("body", "message")
        if names_user(message, me):
            body += ("mention",)
        parts: list[tuple[str, tuple[str, ...]]] = [
            (f"{clock_time(message.ts)}  ", ("time", "message")),
            (f"{escaped(message.sender)}: ", ("sender", "me" if mine else "other", "message")),
        ]
        if message.file is not None:
            file_tags = ("file", f"file:{message.file.file_id}", "message")
            parts.append((file_label(message.file), file_tags))
        else:
            first, *rest = message.text.replace("\r\n", "\n").split("\n")
            parts.append((shown_line(first), body))
            for line in rest:
                parts.append(("\n" + shown_line(line), (*body, "continued")))
        parts.append(("\n", ("message", "continued", *body[2:])))  # a mention's to the edge
        for chunk, tags in reversed(parts) if where != "end" else parts:
            text.insert(where, chunk, tags)
        return sum(chunk.count("\n") for chunk, _ in parts)

    def draw_transfers(self, vm: ViewModel, palette: dict[str, str]) -> None:
        """A row per transfer: its progress, and Cancel, or Dismiss once it has ended; a saved
        download shows Show folder in its full bar's place. The bar and the buttons always
        show; the label takes the room left (see :meth:`_fit_transfer_label`)."""
        for gone in [tid for tid in self.transfer_rows if tid not in vm.transfers]:
            self.transfer_rows.pop(gone).label.master.destroy()  # the row's frame
            self._transfer_labels.pop(gone, None)
        if not self.transfer_rows:
            self.transfers.configure(height=1)  # pack leaves an emptied frame its old height
        for transfer in vm.transfers.values():
            row = self.transfer_rows.get(transfer.id)
            if row is None:
                row = self.transfer_rows[transfer.id] = self._transfer_row(transfer.id, palette)
            # Escaped part by part: reasons may quote the server, and names are the sender's.
            before, name, after = (escaped(part) for part in transfer.label_parts)
            self._transfer_labels[transfer.id] = (before, name, after)
            self._fit_transfer_label(transfer.id)
            row.bar.set(transfer.fraction)
            # Colours are set when a row is made and by apply_theme, not at each progress step.
            if transfer.state is not TransferState.RUNNING and row.button.cget("text") == "Cancel":
                row.button.configure(
                    text="Dismiss",
                    command=lambda tid=transfer.id: self.app.transfers.dismiss_transfer(tid),
                )
                if transfer.saved_to is not None:
                    row.folder = ctk.CTkButton(
                        row.label.master,
                        text="Show folder",
                        width=96,
                        command=lambda tid=transfer.id: self.app.transfers.show_folder(tid),
                        **quiet(palette),
                    )
                    # In the full bar's place: the label keeps its room.
                    row.folder.pack(side="right", padx=6, before=row.bar)
                    row.bar.pack_forget()

    def _transfer_row(self, transfer_id: int, palette: dict[str, str]) -> TransferRow:
        """A new row for transfer ``transfer_id``: the button and the bar are packed first, at
        the right, so that a long label can never push them out of the window."""
        frame = ctk.CTkFrame(self.transfers, fg_color="transparent")
        frame.pack(fill="x")
        cancel = ctk.CTkButton(
            frame,
            text="Cancel",
            width=64,
            command=lambda: self.app.transfers.cancel_transfer(transfer_id),
            **accented(palette),
        )
        cancel.pack(side="right")
        bar = ctk.CTkProgressBar(frame, width=200, progress_color=palette["accent"])
        bar.pack(side="right", padx=6)
        label = ctk.CTkLabel(frame, text="", anchor="w", font=self._transfer_font)
        label.pack(side="left", padx=4, fill="x", expand=True)
        label.bind("<Configure>", lambda _e: self._fit_transfer_label(transfer_id))
        return TransferRow(label, bar, cancel)

    def _fit_transfer_label(self, transfer_id: int) -> None:
        """Show transfer ``transfer_id``'s label in the room its row leaves it, the file name
        shortened in its middle if it has to be (the folder it went to stays whole)."""
        row, parts = self.transfer_rows.get(transfer_id), self._transfer_labels.get(transfer_id)
        if row is None or parts is None:
            return
        label = row.label
        room = label.winfo_width() - TRANSFER_LABEL_MARGIN
        scaling = ctk.ScalingTracker.get_widget_scaling(label)
        font = self._transfer_font
        shown = fitted(*parts, lambda text: room <= 0 or font.measure(text) * scaling <= room)
        if label.cget("text") != shown:
            label.configure(text=shown)

    def apply_theme(self, palette: dict[str, str], dark: bool) -> None:
        self.configure(fg_color=palette["window"])
        self.side.configure(fg_color=palette["panel"])
        for frame in (self.conversation_list, self.people_list):
            frame.configure(fg_color=palette["window"])
        for button in (self.join_button, self.file_button, self.send_button, self.emoji_button):
            button.configure(**accented(palette))
        for button in (self.leave_button, self.logout_button, self.password_button):
            button.configure(**quiet(palette))
        for row in self.transfer_rows.values():
            row.bar.configure(progress_color=palette["accent"])
            row.button.configure(**accented(palette))
            if row.folder is not None:
                row.folder.configure(**quiet(palette))
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
            selectforeground=palette["window"],  # light: white on black, not black on black
        )
        self.transcript.tag_configure("time", foreground=palette["dim"])
        self.transcript.tag_configure("day", foreground=palette["dim"])
        self.transcript.tag_configure("me", foreground=palette["me"])
        self.transcript.tag_configure("other", foreground=palette["sender"])
        self.transcript.tag_configure("file", foreground=palette["file"])
        self.transcript.tag_configure("mention", background=palette["mention"])
        self.transcript.tag_raise("sel")  # above the tags made after it: a selection shows
        if dark:
            self.theme_switch.select()
        else:
            self.theme_switch.deselect()


def _pack_in_order(order: list[ctk.CTkButton], packed: list[ctk.CTkButton]) -> None:
    """Pack the buttons of a list in ``order``, given those ``packed`` now (in their order,
    all in ``order``): only those out of place are moved, each right after the one before it
    (new ones are packed where they belong)."""
    rest = collections.deque(packed)
    placed: set[ctk.CTkButton] = set()
    previous: ctk.CTkButton | None = None
    for button in order:
        while rest and rest[0] in placed:  # moved up already
            rest.popleft()
        if rest and rest[0] is button:  # already right after the one before it
            rest.popleft()
        elif previous is not None:
            button.pack(fill="x", pady=1, after=previous)
        elif rest:
            button.pack(fill="x", pady=1, before=rest[0])
        else:
            button.pack(fill="x", pady=1)
        placed.add(button)
        previous = button


def _conversation_look(
    conversation: Conversation,
    current: str,
    palette: dict[str, str],
    fit: Callable[[str, str, str], str],
) -> dict[str, str]:
    """What the sidebar button of ``conversation`` shows: its name (escaped), unread count,
    colours; ``fit`` makes the text fit the button (see :meth:`ChatView._sidebar_text`)."""
    mark = "#" if conversation.is_room else "@"
    unread = f"  ({conversation.unread})" if conversation.unread else ""
    shown = conversation.key == current
    return {
        "text": fit(f"{mark} ", escaped(conversation.title), unread),  # from the server
        "fg_color": palette["accent"] if shown else "transparent",
        "text_color": palette["window"] if shown else palette["fg"],
        # Under the pointer, the text stays readable (the accent's hover was black on dark
        # grey in the light theme), and only the conversation shown is in the accent.
        "hover_color": palette["accent"] if shown else palette["panel"],
    }
