"""The output of ``sealchat chat``: events, one line each, and transfers' progress in whole
lines at milestones (several run at once, among the messages that arrive)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from sealchat.cli.checks import CommandError
from sealchat.cli.exit_codes import explain_failure
from sealchat.cli.terminal_text import safe, safe_message
from sealchat.core import Error as ServerError
from sealchat.core import Event, FileInfo, Membership, Message, Presence, RoomLeft, Typing
from sealchat.core.sizes import shown_size
from sealchat.transports.requests import ClientError
from sealchat.transports.shown_text import names_user
from sealchat.transports.shown_time import clock_time, day_label, same_day
from sealchat.transports.trio_client import LinkState

SHOWN_FILES = 10_000
"""Files shown (announced, listed, shared) whose size and SHA-256 the terminal keeps, so that
/get takes no other (the oldest are forgotten first)."""
START_ROOM = "general"
"""The current room at the start, and again once the current one is left: the server's
default room, which everyone stays in."""
INDENT = " " * len("00:00 ")
"""Where the second and later lines of a message start (under its header, never at the left
edge where a line of its own would start)."""


_BOLD, _PLAIN, _BELL = "\x1b[1m", "\x1b[0m", "\a"
"""How a terminal shows a message that names the user: in bold, with the bell (the text
inside is escaped, so it cannot end the bold early or drive the terminal)."""
MILESTONE = 25
"""A transfer's progress is said each time it passes a multiple of this percentage."""
BELL_QUIET = 10.0
"""Seconds after a bell in which mentions ring no other: a replay or a /history of many
rings once."""


def _shows_bold() -> bool:
    """Whether the terminal takes ANSI bold: not one that asks for none (``NO_COLOR``, ``TERM
    =dumb``), nor the Windows console, which prints the codes unless a program enables them."""
    return (
        sys.platform != "win32"
        and "NO_COLOR" not in os.environ
        and os.environ.get("TERM", "") != "dumb"
    )


class Terminal:
    """What ``sealchat chat`` prints: one line per event, transfers' progress at milestones. All
    text from the network goes through ``safe``. A message's line has its time of day, and
    a line such as ``-- Yesterday --`` comes first when its day is not the last one shown."""

    def __init__(self, out: TextIO, me: str, *, clock: Callable[[], float] = time.time) -> None:
        self.out = out
        self.me = me
        self.clock = clock
        """What time it is (days are named as seen then: "Today", "Yesterday")."""
        self.room = START_ROOM
        self.cut_uploads: set[tuple[Path, str]] = set()
        """Files (and rooms) whose upload a lost connection cut: the server may have stored
        them all the same."""
        self.tty = out.isatty()
        self._bold = self.tty and _shows_bold()
        self._last_bell = -BELL_QUIET
        self._files: dict[str, FileInfo] = {}
        """The files shown, by id, the latest last (see ``file_shown``)."""
        self._outage: set[str] | None = None
        """While reconnecting, the reasons said so far (each is said once); None while
        connected."""
        self._last_ts = 0.0
        """The time of the last message printed whose time is known (0: none yet)."""

    def remember_file(self, info: FileInfo) -> None:
        """The user was shown ``info`` (its name, size, id): /get of it takes no other file."""
        self._files.pop(info.file_id, None)
        self._files[info.file_id] = info
        if len(self._files) > SHOWN_FILES:
            del self._files[next(iter(self._files))]

    def file_shown(self, file_id: str) -> FileInfo | None:
        """The file of that id as last shown, if it was."""
        return self._files.get(file_id)

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def follow_link(self, event: Event | LinkState) -> bool:
        """Say what ``event`` tells of the connection: that it was lost, once, with the
        reason (and while reconnecting each other reason once, briefly), and that it is back.
        It is back at the first record after a loss, which comes from the new session: the
        client reports the reconnect only after the server's replay of what was missed.
        Whether it is back with this event."""
        match event:
            case LinkState(connected=False, retry_in=wait) if wait:
                self._lost(event.reason, wait)
            case LinkState(connected=False):
                pass  # given up: the session ends, saying why
            case _ if self._outage is not None:
                self._outage = None
                self.say("* reconnected")
                return True
        return False

    def _lost(self, reason: str, wait: float) -> None:
        """One more attempt to reconnect, in ``wait`` seconds, after the connection was lost
        or the last attempt failed (for ``reason``)."""
        if self._outage is None:
            self._outage = {reason}
            self.say(f"! connection lost ({safe(reason)}); reconnecting in {wait:.1f} s…")
        elif reason not in self._outage:
            self._outage.add(reason)
            self.say(f"! still reconnecting: {safe(reason)}")

    def show(self, event: Event | LinkState) -> None:
        """Print ``event``, if it is one a person wants to see (LinkState: see
        ``follow_link``)."""
        if isinstance(event, Message):
            self._day_of(event.ts)
        match event:
            case Message(file=FileInfo() as info):
                self.remember_file(info)
                where = f"[{safe(event.room)}]" if event.room else "[direct]"
                self.say(
                    f"{_time(event.ts)} {where} {safe(event.sender)} shared '{safe(info.name)}' "
                    f"({shown_size(info.size)}) — /get {safe(info.file_id)}"
                )
            case Message():
                where = (
                    f"[{safe(event.room)}]"
                    if event.room
                    else f"[{safe(event.sender)} → {safe(event.to)}]"
                )
                text = safe_message(event.text, indent=INDENT)
                line = f"{_time(event.ts)} {where} {safe(event.sender)}: {text}"
                if self.tty and names_user(event, self.me):
                    line = self._standing_out(line)
                self.say(line)
            case Typing(active=True):
                where = safe(event.room) or "you"
                self.say(f"* {safe(event.user)} is typing… ({where})")
            case Presence():
                self.say(f"* {safe(event.user)} is {'online' if event.online else 'offline'}")
            case Membership():
                action = "joined" if event.joined else "left"
                self.say(f"* {safe(event.user)} {action} {safe(event.room)}")
            case RoomLeft(room=room):  # on another device: this one's /leave answers its own
                if self.room == room:
                    self.room = START_ROOM
                self.say(f"* you left {safe(room)} on another device; now in {safe(self.room)}")
            case ServerError():
                self.say(f"! {safe(event.detail or event.code)}")

    def _standing_out(self, line: str) -> str:
        """``line`` of a message that names the user, as it stands out: in bold where the
        terminal takes it, and with the bell unless one rang in the last BELL_QUIET s."""
        if self._bold:
            line = f"{_BOLD}{line}{_PLAIN}"
        now = self.clock()
        if now - self._last_bell >= BELL_QUIET:
            self._last_bell = now
            line += _BELL
        return line

    def _day_of(self, ts: float) -> None:
        """Say the day of a message about to be printed, at ``ts``, unless it is that of
        the message printed before it (of those whose time is known), or unknown itself:
        live, replayed or listed by /history, the lines show which day they are from."""
        if not ts:
            return
        if not same_day(ts, self._last_ts):
            self.say(f"-- {day_label(ts, self.clock())} --")
        self._last_ts = ts

    def progress(self, label: str) -> Callable[[int, int], None]:
        """The progress of one transfer, said in a line of its own at 0, 25, 50, 75 and 100 %
        (whole lines: several transfers, the messages arriving and what is typed meanwhile
        never land on one another); on a terminal with a bar, as ``label [#####     ]  25%``."""
        label = safe(label)
        said = -1  # the last milestone said (100: the transfer is done)

        def update(done: int, total: int) -> None:
            nonlocal said
            percent = 100 if total <= 0 else max(0, min(100, done * 100 // total))
            milestone = percent // MILESTONE * MILESTONE
            if milestone <= said:
                return
            said = milestone
            if self.tty:
                self.say(f"{label} [{'#' * (percent // 5):<20}] {percent:3d}%")
            else:
                self.say(f"{label} {percent}%")

        return update


def _time(ts: float) -> str:
    return clock_time(ts) or "--:--"


@contextmanager
def failures_said(
    term: Terminal, of: str = "", noted: Callable[[int, str], None] | None = None
) -> Iterator[None]:
    """Say why what runs inside failed (a command, a transfer: ``of`` names it), as a line
    starting with ``!``, and hand ``noted`` the exit code the failure calls for and why;
    the session goes on. A closed output is no such failure: nothing more can be shown."""
    try:
        yield
    except CommandError as exc:
        code, why = exc.code, str(exc)
    except BrokenPipeError:
        raise
    except (ClientError, OSError) as exc:
        code, why = explain_failure(exc)
    else:
        return
    term.say(f"! {safe(why)}{of}")
    if noted is not None:
        noted(code, why)
