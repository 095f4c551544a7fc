"""The desktop client's "Change password…" dialog: the current password and the new one
twice, what went wrong shown inline; the controller makes the change."""

from __future__ import annotations

from typing import TYPE_CHECKING

import customtkinter as ctk

from sealchat.gui.theme import accented, quiet
from sealchat.transports.shown_text import escaped

if TYPE_CHECKING:
    from sealchat.gui.app import App


class PasswordDialog(ctk.CTkToplevel):
    """Three password fields, Change and Cancel."""

    def __init__(self, app: App) -> None:
        super().__init__(app)
        self.app = app
        self.title("Change password")
        self.transient(app)
        app.bind_focus(self)  # typing here is not leaving the window
        self._labels: list[ctk.CTkLabel] = []
        self.current = self._field("Current password")
        self.new = self._field("New password")
        self.again = self._field("New password again")
        self.error = ctk.CTkLabel(self, text="", wraplength=280, justify="left")
        self.error.pack(padx=16, pady=(6, 0), anchor="w")
        row = ctk.CTkFrame(self, fg_color="transparent")
        row.pack(padx=16, pady=12, fill="x")
        self.cancel_button = ctk.CTkButton(row, text="Cancel", width=80, command=self.destroy)
        self.cancel_button.pack(side="right")
        self.change_button = ctk.CTkButton(row, text="Change", width=80, command=self.submit)
        self.change_button.pack(side="right", padx=(0, 8))
        for entry in (self.current, self.new, self.again):
            entry.bind("<Return>", lambda _e: self.submit())
        self.apply_theme(app.palette)
        self.current.focus_set()

    def _field(self, label: str) -> ctk.CTkEntry:
        text = ctk.CTkLabel(self, text=label, anchor="w")
        text.pack(padx=16, pady=(10, 0), fill="x")
        self._labels.append(text)
        entry = ctk.CTkEntry(self, show="•", width=280)
        entry.pack(padx=16, fill="x")
        return entry

    def apply_theme(self, palette: dict[str, str]) -> None:
        """Colour the dialog in ``palette`` (also when the theme is switched while it is
        open)."""
        self.configure(fg_color=palette["window"])
        for label in self._labels:
            label.configure(text_color=palette["fg"])
        for entry in (self.current, self.new, self.again):
            entry.configure(fg_color=palette["entry"], text_color=palette["fg"])
        self.error.configure(text_color=palette["error"])
        self.cancel_button.configure(**quiet(palette))
        self.change_button.configure(**accented(palette))

    def submit(self) -> None:
        if str(self.change_button.cget("state")) == "normal":
            self.app.controller.change_password(
                self, self.current.get(), self.new.get(), self.again.get()
            )

    def show_error(self, text: str) -> None:
        """Show ``text`` (which may quote the server) with hidden characters escaped; the
        dialog takes another try."""
        self.error.configure(text=escaped(text))
        self.change_button.configure(state="normal")

    def busy(self) -> None:
        """The change is under way: no second one."""
        self.error.configure(text="")
        self.change_button.configure(state="disabled")
