"""The login form of the desktop client: server, user name, password, errors inline."""

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
        host, port = self.host.get().strip(), self.port.get().strip()
        user, password = self.username.get().strip(), self.password.get()
        if not host or not is_port(port) or not user:
            self.show_error("Fill in the server, a port (1 to 65535) and your user name.")
            return
        problem = too_long("user name", user, MAX_USERNAME)
        problem = problem or too_long("password", password, MAX_PASSWORD)
        if problem:
            self.show_error(problem)
            return
        self.show_error("")
        self.button.configure(state="disabled", text="Connecting…")
        self.app.controller.start_login(
            host, int(port), user, password, remember=bool(self.remember.get())
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
