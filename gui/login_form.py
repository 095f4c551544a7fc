"""The login form of the desktop client: server, user name, password, errors inline; or, on
a server that lets anyone create an account, the same form creating one."""

from __future__ import annotations

from typing import TYPE_CHECKING

import customtkinter as ctk

from sealchat.core.limits import MAX_PASSWORD, MAX_USERNAME
from sealchat.gui.settings import Server, Settings
from sealchat.gui.text_helpers import too_long
from sealchat.gui.theme import accented
from sealchat.transports.pinning import is_port
from sealchat.transports.shown_text import escaped

if TYPE_CHECKING:
    from sealchat.gui.app import App


LOG_IN, CREATE = "Log in", "Create account"
"""What the form's button says: logging in, or creating an account (and logging in)."""


class LoginForm(ctk.CTkFrame):
    """Server, user name, password; errors shown inline. With "Create a new account"
    ticked, the password is asked twice and the button creates the account."""

    def __init__(self, app: App, settings: Settings) -> None:
        super().__init__(app, corner_radius=12)
        self.app = app
        ctk.CTkLabel(self, text="sealchat", font=ctk.CTkFont(size=28, weight="bold")).pack(
            pady=(16, 2)
        )
        ctk.CTkLabel(self, text="secure chat on your own server").pack(pady=(0, 10))
        remembered = settings.server or Server()
        address = ctk.CTkFrame(self, fg_color="transparent")  # server and port side by side
        address.pack(padx=24, fill="x")
        self.host = self._field("Server", remembered.host, parent=address, width=226)
        self.port = self._field("Port", str(remembered.port), parent=address, width=86, right=True)
        self.username = self._field("User name", remembered.username)
        self.password = self._field("Password", "", show="•")
        self.repeat_row = ctk.CTkFrame(self, fg_color="transparent")
        """The password again, shown only while creating an account."""
        self.repeat = self._field("Password again", "", show="•", parent=self.repeat_row)
        self.create = ctk.CTkCheckBox(self, text="Create a new account", command=self._mode_changed)
        self.create.pack(padx=24, pady=(8, 0), anchor="w")
        self.remember = ctk.CTkCheckBox(self, text="Remember this server (never the password)")
        if settings.server is not None:
            self.remember.select()
        self.remember.pack(padx=24, pady=8, anchor="w")
        self.button = ctk.CTkButton(self, text=LOG_IN, command=self.submit)
        self.button.pack(padx=24, pady=(8, 4), fill="x")
        self.error = ctk.CTkLabel(self, text="", wraplength=320, justify="left")
        self.error.pack(padx=24, pady=(4, 12))
        for widget in (*self._entries(), self.create, self.remember):  # Enter, as in a form
            widget.bind("<Return>", lambda _e: self.submit())
        self.take_focus()

    def take_focus(self) -> None:
        """Put the keyboard focus where the user types next: the first of the server, the
        port and the user name left empty, else the password, its text (one kept from the
        last login) selected so that what is typed replaces it."""
        for entry in (self.host, self.port, self.username):
            if not entry.get():
                entry.focus_set()
                return
        self.password.focus_set()
        self.password.select_range(0, "end")
        self.password.icursor("end")

    def _field(
        self,
        label: str,
        value: str,
        show: str = "",
        *,
        parent: ctk.CTkFrame | None = None,
        width: int = 0,
        right: bool = False,
    ) -> ctk.CTkEntry:
        """A labelled entry holding ``value``: across the form, or (given its ``width``) one
        of the fields side by side in the row ``parent`` (``right``: the one at its right
        end, so that the row's edges line up with the fields across the form)."""
        column = parent or self
        if width:
            column = ctk.CTkFrame(column, fg_color="transparent")
            column.pack(side="right" if right else "left", padx=(0, 0 if right else 8))
        padx = 0 if width else 24
        ctk.CTkLabel(column, text=label, anchor="w").pack(padx=padx, fill="x")
        entry = ctk.CTkEntry(column, width=width or 320, show=show)
        entry.insert(0, value)
        entry.pack(padx=padx, pady=(0, 8), fill="x")
        return entry

    def _entries(self) -> tuple[ctk.CTkEntry, ...]:
        return (self.host, self.port, self.username, self.password, self.repeat)

    @property
    def creating(self) -> bool:
        """Whether the form creates an account ("Create a new account" is ticked)."""
        return bool(self.create.get())

    def _mode_changed(self) -> None:
        """Logging in or creating an account: the second password box and the button's
        words follow (unless a login is under way); an error about the other mode goes."""
        if self.creating:
            self.repeat_row.pack(after=self.password, fill="x")
        else:
            self.repeat_row.pack_forget()
            self.repeat.delete(0, "end")
        self.error.configure(text="")
        if self.button.cget("state") != "disabled":
            self.ready()

    def ready(self) -> None:
        """The button can be pressed again, saying what it does."""
        self.button.configure(state="normal", text=CREATE if self.creating else LOG_IN)

    def logged_in(self) -> None:
        """The session started: the account exists, so the next time is a login."""
        if self.creating:
            self.create.deselect()
            self._mode_changed()

    def logged_out(self) -> None:
        """The user logged out: the server and user name stay for the next login (theirs or
        someone else's), the password does not."""
        self.password.delete(0, "end")
        self.repeat.delete(0, "end")
        self.error.configure(text="You are logged out.", text_color=self.app.palette["dim"])

    def submit(self) -> None:
        """Log in (or create the account) with what the form says; ignored while a login is
        under way (Enter pressed again while the button says "Connecting…")."""
        if self.button.cget("state") == "disabled":
            return
        host, port = self.host.get().strip(), self.port.get().strip()
        user, password = self.username.get().strip(), self.password.get()
        if not host or not is_port(port) or not user:
            self.show_error("Fill in the server, a port (1 to 65535) and your user name.")
            return
        problem = too_long("user name", user, MAX_USERNAME)
        problem = problem or too_long("password", password, MAX_PASSWORD)
        if not problem and self.creating and self.repeat.get() != password:
            problem = "The two passwords differ. Type the same password in both boxes."
        if problem:
            self.show_error(problem)
            return
        self.show_error("")
        self.button.configure(state="disabled", text="Connecting…")
        self.app.controller.start_login(
            host,
            int(port),
            user,
            password,
            remember=bool(self.remember.get()),
            register=self.creating,
        )

    def apply_theme(self, palette: dict[str, str]) -> None:
        self.configure(fg_color=palette["panel"])
        self.button.configure(**accented(palette))
        for box in (self.create, self.remember):
            box.configure(
                fg_color=palette["accent"],
                hover_color=palette["accent_hover"],
                checkmark_color=palette["window"],
                border_color=palette["dim"],
                text_color=palette["fg"],
            )
        for entry in self._entries():
            entry.configure(fg_color=palette["entry"], text_color=palette["fg"])

    def show_error(self, text: str) -> None:
        """Show ``text`` (which may quote the server) with hidden characters escaped."""
        self.error.configure(text=escaped(text), text_color=self.app.palette["error"])
        self.ready()
