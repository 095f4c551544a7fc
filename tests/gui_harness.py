"""Drive the real desktop client window in tests: a private Xvfb, an ``App`` pumped with
``update()``, login through the widgets, screenshots, and a clean close.

The window runs exactly as for a user (trio in guest mode on Tk), except that the test pumps
Tk's events itself instead of calling ``mainloop()``, and answers the modal dialogs.
"""

from __future__ import annotations

import contextlib
import gc
import os
import shutil
import subprocess
import time
import tkinter as tk
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from tkinter import messagebox
from typing import Any, TypeVar
from unittest import mock

import pytest

from sealchat.core import ConnectionClosed, Event
from sealchat.gui.transfer_state import Transfer, TransferState
from sealchat.transports.blocking_client import BlockingClient
from tests.servers import PASSWORD

E = TypeVar("E", bound=Event)

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "artifacts"
DISPLAYS = range(90, 100)
SCREEN = "1280x800x24"
KEYS = {" ": "space", "\n": "Return"}
"""The keys :meth:`Window.press_keys` presses for the characters that are not their own."""
XVFB_MISSING = (
    "Xvfb is not installed, and the real-window tests of the desktop client need it. "
    ".ci/run installs it (the Debian package 'xvfb'): run 'apt-get install xvfb'."
)


# --- the display ----------------------------------------------------------------------------


def _display_taken(number: int) -> bool:
    return Path(f"/tmp/.X11-unix/X{number}").exists() or Path(f"/tmp/.X{number}-lock").exists()


@contextlib.contextmanager
def xvfb(displays: range = DISPLAYS, startup: float = 30.0) -> Iterator[str]:
    """Start a private Xvfb on the first free display of ``displays``; yields ``":N"``.

    Fails the test (never skips it) when Xvfb is not installed."""
    binary = shutil.which("Xvfb")
    if binary is None:
        pytest.fail(XVFB_MISSING, pytrace=False)
    tried = []
    for number in displays:
        if _display_taken(number):
            continue
        process = subprocess.Popen(
            [binary, f":{number}", "-screen", "0", SCREEN, "-nolisten", "tcp"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + startup
        while process.poll() is None and time.monotonic() < deadline:
            if Path(f"/tmp/.X11-unix/X{number}").exists():
                break
            time.sleep(0.05)
        if process.poll() is None and Path(f"/tmp/.X11-unix/X{number}").exists():
            break
        _stop(process)
        stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
        tried.append(f":{number}: {stderr.strip()[-300:] or 'did not start'}")
    else:
        pytest.fail(f"Xvfb did not start on any of :{displays[0]}..:{displays[-1]}: {tried}")
    try:
        yield f":{number}"
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    if process.stderr is not None:
        process.stderr.close()


# --- the window -----------------------------------------------------------------------------


@dataclass
class Dialog:
    """A modal dialog the app opened (answered by the harness instead of a person)."""

    kind: str
    title: str
    message: str


@dataclass
class Window:
    """One ``App`` under test. Create it with :func:`open_window`."""

    app: Any
    display: str
    trust: bool = True
    """The answer to a yes-or-no question (trusting a server's key)."""
    dialogs: list[Dialog] = field(default_factory=list)
    bells: int = 0
    errors: list[str] = field(default_factory=list)
    collected: float = field(default_factory=time.monotonic)
    while_next_dialog_open: Callable[[Dialog], None] | None = None
    """Called with the next dialog while it is open, before it is answered (as a person
    would look at the window first): it may pump events, as the dialog's own loop does."""

    def opened(self, dialog: Dialog) -> None:
        """A modal dialog opened: record it, and run :attr:`while_next_dialog_open`."""
        self.dialogs.append(dialog)
        meanwhile, self.while_next_dialog_open = self.while_next_dialog_open, None
        if meanwhile is not None:
            try:
                meanwhile(dialog)
            except Exception:  # raised by the next step of the test, whoever opened it
                self.errors.append(traceback.format_exc())

    # --- pumping ----------------------------------------------------------------------

    def pump(self, seconds: float = 0.0) -> None:
        """Process Tk events (and so trio's callbacks) for ``seconds``, at least once."""
        deadline = time.monotonic() + seconds
        while True:
            self._step()
            if time.monotonic() >= deadline:
                return
            time.sleep(0.01)

    def until(self, condition: Callable[[], object], what: str, timeout: float = 30.0) -> None:
        """Pump events until ``condition()`` is true; fail clearly after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            self._step()
            if condition():
                return
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"timed out after {timeout:g} s waiting for {what}\n{self.describe()}"
                )
            time.sleep(0.01)

    def until_shown(self, text: str) -> None:
        """Pump events until ``text`` is in the transcript."""
        self.until(lambda: text in self.transcript(), f"{text!r} in the transcript")

    def until_transferred(self, what: str, timeout: float = 60.0) -> Transfer:
        """Pump events until the window's one transfer has ended; fail unless it succeeded."""
        (transfer,) = self.app.vm.transfers.values()
        self.until(lambda: transfer.state is not TransferState.RUNNING, what, timeout)
        assert transfer.state is TransferState.DONE, transfer.label
        return transfer

    def receive(self, client: BlockingClient, kind: type[E], what: str, timeout: float = 30.0) -> E:
        """The next ``kind`` event at ``client``, pumping the window while waiting (blocking on
        the client alone would stall the window's trio run); events before it are dropped."""
        deadline = time.monotonic() + timeout
        while True:
            self._step()
            with contextlib.suppress(TimeoutError):
                event = client.next_event(timeout=0.02)
                if isinstance(event, kind):
                    return event
                if isinstance(event, ConnectionClosed):
                    raise AssertionError(f"{what}: the other client's connection closed")
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"timed out after {timeout:g} s waiting for {what}\n{self.describe()}"
                )

    def _step(self) -> None:
        if time.monotonic() - self.collected > 0.5:
            _collect_garbage()
            self.collected = time.monotonic()
        self._raise_errors()
        result = self.app.guest.result
        if result is not None:
            result.unwrap()  # the trio run ended on its own: show why
            raise AssertionError("the trio run ended before the test closed the window")
        self.app.update()
        self._raise_errors()

    def _raise_errors(self) -> None:
        if self.errors:
            raise AssertionError("a Tk callback raised:\n" + "\n".join(self.errors))

    def describe(self) -> str:
        """What the window shows now, for failure messages."""
        app = self.app
        try:
            return (
                f"  title={app.title()!r} user={app.vm.me!r} current={app.vm.current!r}\n"
                f"  login error={app.login_form.error.cget('text')!r} "
                f"banner={app.chat.banner.cget('text')!r} vm.error={app.vm.error!r}\n"
                f"  typing={app.chat.typing_label.cget('text')!r} "
                f"transfers={[t.label for t in app.vm.transfers.values()]!r}\n"
                f"  dialogs={self.dialogs!r}\n"
                f"  transcript={self.transcript()[-500:]!r}"
            )
        except tk.TclError as exc:
            return f"  (the window is gone: {exc})"

    # --- reading the window -----------------------------------------------------------

    def transcript(self) -> str:
        return str(self.app.chat.transcript.get("1.0", "end"))

    def transcript_lines(self, *, days: bool = False) -> list[str]:
        """The transcript's lines without their times, and without the separators above
        each day's first message unless ``days``."""
        return [line for line, day in self._tagged_lines() if days or not day]

    def days(self) -> list[str]:
        """The separators above each day's first message, in order."""
        return [line for line, day in self._tagged_lines() if day]

    def _tagged_lines(self) -> list[tuple[str, bool]]:
        """Each line of the transcript without its time, and whether it is a day's separator."""
        transcript = self.app.chat.transcript
        lines = self.transcript().strip("\n").split("\n")
        return [
            (line.split("  ", 1)[-1], "day" in transcript.tag_names(f"{number}.0"))
            for number, line in enumerate(lines, 1)
        ]

    def typing(self) -> str:
        return str(self.app.chat.typing_label.cget("text"))

    def login_error(self) -> str:
        return str(self.app.login_form.error.cget("text"))

    def screenshot(self, name: str, folder: Path = ARTIFACTS) -> Path:
        """Save the window as ``folder/name`` (PNG) and return its path."""
        from PIL import ImageGrab

        self.pump(0.3)
        app = self.app
        x, y = app.winfo_rootx(), app.winfo_rooty()
        box = (x, y, x + app.winfo_width(), y + app.winfo_height())
        image = ImageGrab.grab(bbox=box, xdisplay=self.display)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        image.save(path)
        return path

    def pixel(self, widget: tk.Misc, dx: int = 2, dy: int = 2) -> str:
        """The colour on screen at (dx, dy) inside ``widget``, as ``#rrggbb``."""
        from PIL import ImageGrab

        x, y = widget.winfo_rootx() + dx, widget.winfo_rooty() + dy
        image = ImageGrab.grab(bbox=(x, y, x + 1, y + 1), xdisplay=self.display)
        red, green, blue = image.convert("RGB").getpixel((0, 0))  # type: ignore[misc]
        return f"#{red:02x}{green:02x}{blue:02x}"

    # --- acting through the widgets ---------------------------------------------------

    def fill_login(self, port: int, user: str, password: str, host: str = "127.0.0.1") -> None:
        form = self.app.login_form
        for entry, value in (
            (form.host, host),
            (form.port, str(port)),
            (form.username, user),
            (form.password, password),
        ):
            entry.delete(0, "end")
            entry.insert(0, value)
        self.pump()

    def submit_login(self) -> None:
        """Click "Log in"."""
        self.app.login_form.button.invoke()

    def login(self, port: int, user: str, password: str = PASSWORD, timeout: float = 30.0) -> None:
        """Log in through the form and wait for the chat view with the room's members."""
        self.fill_login(port, user, password)
        self.submit_login()
        self.until(
            lambda: (
                self.app.controller.client is not None
                and self.app.vm.me
                and self.app.chat.winfo_ismapped()
                and self.app.vm.people_in_current()
            ),
            f"{user} to be logged in",
            timeout,
        )

    def press_keys(self, text: str) -> None:
        """Press the keys of ``text`` (lowercase letters, digits, spaces; a newline is Enter)
        as the keyboard does: each goes to whichever widget has the keyboard focus."""
        for char in text:
            if char not in KEYS and not (char.isascii() and (char.isdigit() or char.islower())):
                raise ValueError(f"no key typed here for {char!r}")
            key = KEYS.get(char, char)
            self.app.event_generate("<KeyPress>", keysym=key)  # Tk hands it to the focus
            self.app.event_generate("<KeyRelease>", keysym=key)
        self.pump()

    def type_and_enter(self, text: str) -> None:
        """Type ``text`` into the message box and press Enter."""
        box = self.app.chat.input._textbox  # the tk.Text inside the CTkTextbox
        box.focus_force()
        self.pump()
        box.insert("end", text)
        box.event_generate("<KeyRelease>", keysym="a")
        box.event_generate("<Return>")
        self.pump()

    # --- closing ----------------------------------------------------------------------

    def close(self, timeout: float = 30.0) -> None:
        """Close the window as its close button does; wait until trio finished and the window
        is gone."""
        app = self.app
        if app.guest.result is None:
            app.close()
            self.until_finished(timeout)
        if not destroyed(app):
            app.destroy()

    def until_finished(self, timeout: float = 30.0) -> None:
        """Pump events until the trio run has finished (after a close)."""
        app = self.app
        deadline = time.monotonic() + timeout
        while app.guest.result is None:
            if time.monotonic() >= deadline:
                raise AssertionError(f"trio did not finish within {timeout:g} s of the close")
            with contextlib.suppress(tk.TclError):  # the window goes when trio is done
                app.update()
            time.sleep(0.01)


def _collect_garbage() -> None:
    """Collect garbage here, on the Tk thread.

    Destroyed widgets leave ``tkinter.font.Font`` objects in reference cycles, and
    ``Font.__del__`` calls into Tcl. Collected on another thread (the in-process server's, a
    trio worker), that call waits up to 1 s per font for a ``mainloop()`` that tests never run
    (they pump ``update()``), stalling that thread. So while a window is open the cyclic
    collector is off and the harness collects on the Tk thread instead."""
    gc.collect()


def destroyed(app: tk.Misc) -> bool:
    try:
        app.winfo_exists()
    except tk.TclError:
        return True
    return False


@contextlib.contextmanager
def open_window(settings_path: Path, display: str, *, trust: bool = True) -> Iterator[Window]:
    """An ``App`` with its settings at ``settings_path`` and its trio run started; closed
    afterwards. Modal dialogs are answered (``trust``) and recorded; the bell is counted."""
    from sealchat.gui.app import App
    from sealchat.gui.settings import Settings

    holder: list[Window] = []

    def ask(title: str, message: str, **_options: object) -> bool:
        holder[0].opened(Dialog("askyesno", title, message))
        return holder[0].trust

    def show(title: str, message: str, **_options: object) -> str:
        holder[0].opened(Dialog("showerror", title, message))
        return "ok"

    def inform(title: str, message: str, **_options: object) -> str:
        holder[0].opened(Dialog("showinfo", title, message))
        return "ok"

    collecting = gc.isenabled()
    gc.disable()  # see _collect_garbage
    with (
        mock.patch.object(messagebox, "askyesno", ask),
        mock.patch.object(messagebox, "showerror", show),
        mock.patch.object(messagebox, "showinfo", inform),
    ):
        app = App(Settings.load(settings_path))
        window = Window(app, display, trust=trust)
        holder.append(window)

        def report(kind: type[BaseException], value: BaseException, tb: Any) -> None:
            window.errors.append("".join(traceback.format_exception(kind, value, tb)))

        def bell(*_args: object) -> None:
            window.bells += 1

        app.report_callback_exception = report
        app.bell = bell
        app.start()
        try:
            window.pump(0.2)
            yield window
        finally:
            try:
                window.close()
            finally:
                _collect_garbage()
                if collecting:
                    gc.enable()


def environment(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the client's config (pins, key) and downloads at this test's own folders."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(folder / "config"))
    monkeypatch.setenv("XDG_DOWNLOAD_DIR", str(folder / "downloads"))
    os.makedirs(folder / "downloads", exist_ok=True)
