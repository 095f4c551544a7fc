"""The messages typed in a ``sealchat chat`` session, sent in order while the next lines
are read."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import trio

from sealchat.cli.chat_terminal import Terminal
from sealchat.cli.exit_codes import LOST, OK, REFUSED, error
from sealchat.cli.terminal_text import safe
from sealchat.core import Error as ServerError
from sealchat.core import Event, MessageAck
from sealchat.core.sizes import counted
from sealchat.transports.requests import ClientError, MessageTooLong, check_text, new_client_id
from sealchat.transports.trio_client import ChatClient, Disconnected, LinkState

REPLY_WAIT = 30.0
"""Seconds the sender waits for the server to store a message before going on to the next
(it stays in the client's outbox, and the end of the session waits for it again)."""
QUIET_WAIT = 10.0
"""Seconds the end of a session waits, while connected, for the server to store one more
of the messages still unstored; or, while reconnecting, for the connection to come back."""


@dataclass(frozen=True)
class _Typed:
    """A message typed in this session, not yet stored by the server."""

    text: str
    room: str
    to: str

    def __repr__(self) -> str:
        """Never the text (a log line or a traceback's locals may show this)."""
        return f"_Typed(text=<{len(self.text)} chars>, room={self.room!r}, to={self.to!r})"


class Outgoing:
    """The messages typed in this session, sent in order by a task of their own, so that
    reading the next line never waits for the server.

    The sender hands one message at a time to the client and, while connected, waits until
    it is stored. The client keeps the order itself: one the server finds too fast stays in
    its outbox and goes again a little later, before anything sent after it, and those sent
    while disconnected go after the reconnect. A message refused is reported. The end of the
    session waits for what is still queued or unstored, and says which never made it."""

    def __init__(self, term: Terminal) -> None:
        self.term = term
        self.queued: deque[_Typed] = deque()
        """Typed, not yet handed to the client, oldest first."""
        self.current: _Typed | None = None
        """The message the sender works on."""
        self.unstored: dict[str, _Typed] = {}
        """Client id → the messages handed to the client, neither stored nor refused yet."""
        self.refused: list[str] = []
        self._waited: set[str] = set()
        """Client ids of messages already waited for (REPLY_WAIT once each: a stalled server
        does not hold up every later command)."""
        self._changed = trio.Event()
        self._offline_said = False
        """Whether this outage was said (once: not for every message typed during it)."""

    def _note_change(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def note(self, event: Event | LinkState) -> bool:
        """Take what ``event`` says about a message sent; True if it is shown here (a
        refusal), not as an event."""
        match event:
            case MessageAck(client_id=ref) if ref in self.unstored:
                del self.unstored[ref]
            case ServerError(ref=ref) if ref in self.unstored:
                typed = self.unstored.pop(ref)
                self._refused_for_good(typed.text, event.detail or event.code)
            case LinkState():  # a waiting sender sees whether it is still connected
                if event.connected:
                    self._offline_said = False  # the next outage is said again
            case _:
                return False
        self._note_change()
        return isinstance(event, ServerError)

    def add(self, text: str, *, room: str = "", to: str = "", limit: int = 0) -> None:
        """Queue a message; MessageTooLong, and counted as refused, if it has more characters
        than the server takes (``limit``: as it said at the login, 0 if not)."""
        try:
            check_text(text, limit)
        except MessageTooLong:
            self.refused.append(text)
            raise
        self.queued.append(_Typed(text, room, to))
        self._note_change()

    def refuse(self, text: str) -> None:
        """A message that could not even be queued (a name too long to exist)."""
        self.refused.append(text)

    async def run(self, client: ChatClient) -> None:
        """The sender: the queued messages, one at a time, for the whole session."""
        while True:
            while not self.queued:
                await self._changed.wait()
            typed = self.current = self.queued.popleft()
            try:
                await self._send(client, typed)
            except ClientError as exc:  # given up, or over a lower limit said since it was typed
                self._refused_for_good(typed.text, str(exc))
            finally:
                self.current = None
                self._note_change()

    async def drained(self, client: ChatClient) -> None:
        """Wait until the messages typed so far are handed to the client (and, while
        connected, stored or refused): a command typed after them runs after them."""
        while self.queued or self.current is not None:
            await self._changed.wait()
        await self._stored(client, set(self.unstored))

    async def _send(self, client: ChatClient, typed: _Typed) -> None:
        """Send one message and, while connected, wait until the server has stored or
        refused it (a refusal is reported by ``note``)."""
        client_id = new_client_id()
        self.unstored[client_id] = typed
        try:
            await client.send_message(typed.text, room=typed.room, to=typed.to, client_id=client_id)
        except ClientError:  # nothing was queued
            self.unstored.pop(client_id, None)
            raise
        await self._stored(client, {client_id})
        if client_id in self.unstored and not client.online and not self._offline_said:
            self._offline_said = True
            self.term.say("* not connected: what you send goes after the reconnect")

    async def _stored(self, client: ChatClient, ids: set[str]) -> None:
        """While connected, wait (REPLY_WAIT at most, once for each) until the messages
        ``ids`` are stored or refused."""
        ids -= self._waited
        with trio.move_on_after(REPLY_WAIT):
            while ids & self.unstored.keys() and client.online:
                await self._changed.wait()
        self._waited = (self._waited | ids) & self.unstored.keys()  # a stored one never comes back

    def _refused_for_good(self, text: str, reason: str) -> None:
        self.refused.append(text)
        self.term.say(f"! not sent ({safe(reason)}): {_start(text)}")

    async def finish(self, client: ChatClient) -> None:
        """Wait for the messages still queued or unstored: while connected, as long as
        something changes at least every QUIET_WAIT seconds; while reconnecting, up to
        QUIET_WAIT seconds for the connection to come back."""
        while self._unsent() and client.gave_up_on is None:
            if not client.online:
                left = counted(len(self._unsent()), "message")
                self.term.say(
                    f"* {left} to send: "
                    f"waiting up to {QUIET_WAIT:g} s for the connection (Ctrl-C ends now)"
                )
                with trio.move_on_after(QUIET_WAIT) as reconnecting:
                    try:
                        await client.wait_online()
                    except Disconnected:  # given up: the event reader says why
                        return
                if reconnecting.cancelled_caught:
                    return
                continue
            with trio.move_on_after(QUIET_WAIT) as waiting:
                await self._changed.wait()
            if waiting.cancelled_caught:
                return

    def _unsent(self) -> list[_Typed]:
        """Every message typed and neither stored nor refused yet (the sender hands a message
        to the client, and notes it unstored, at once after taking it from ``queued``)."""
        return [*self.unstored.values(), *self.queued]

    def report(self) -> int:
        """Say on standard error which messages never made it; the exit code that says so."""
        unsent = [t.text for t in self._unsent()]
        if unsent:
            them = "it" if len(unsent) == 1 else "them"
            error(
                f"{_may(len(unsent))} not have been delivered (the server never confirmed {them}; "
                "look before sending again): " + ", ".join(_start(text) for text in unsent)
            )
        if self.refused:
            error(
                f"{_messages(len(self.refused))} refused (by the server, or as impossible to "
                "send): " + ", ".join(_start(text) for text in self.refused)
            )
        return LOST if unsent else REFUSED if self.refused else OK


def _may(n: int) -> str:
    return "1 message may" if n == 1 else f"{n} messages may"


def _messages(n: int) -> str:
    return "1 message was" if n == 1 else f"{n} messages were"


def _start(text: str, length: int = 30) -> str:
    """The start of a message, quoted, to say which one is meant."""
    return f"'{safe(text[:length])}{'…' if len(text) > length else ''}'"
