"""The trio client's outbox: messages sent and not yet stored by the server, resent after a
reconnect, and sent again in paced rounds while the server finds them too fast."""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import suppress
from typing import Protocol

import trio

from sealchat.core import Message, Record
from sealchat.transports.requests import REQUEST_TIMEOUT, ClientError
from sealchat.transports.trio_link import Link

PACE = (0.5, 4.0)
"""The first and the longest pause before messages the server found too fast go again."""
PACE_BATCH = 20
"""Most messages sent in one round while the client paces its outbox."""


class Session(Protocol):
    """What the outbox uses of the client: its link, whether it is logged in, and sending."""

    _link: Link | None
    _online: trio.Event

    async def _send(self, record: Record) -> None: ...

    async def _send_all(self, records: Iterable[Record], *, wait: bool = True) -> None: ...


class Outbox:
    """The messages of one client waiting for the server's answer, by client id, oldest
    first."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self.messages: dict[str, Message] = {}
        self._too_fast: set[str] = set()
        """Client ids of messages the server refused as rate_limited, not sent again yet."""
        self.pacing = False
        """Whether the outbox goes out in paced rounds (from a rate_limited refusal until it
        is empty); new messages then queue behind the older ones."""
        self._slowed = trio.Event()
        """Set by a rate_limited refusal: wakes the pacer."""
        self._answered = trio.Event()
        """Set (and replaced) when the server answers a message, and when a link ends."""

    def refused(self, client_id: str) -> None:
        """The server refused the message ``client_id`` for good (too long, not a member…)."""
        del self.messages[client_id]
        self._too_fast.discard(client_id)
        self.note_answer()

    def stored(self, client_id: str) -> Message | None:
        """The server stored the message ``client_id``: it leaves the outbox (returned, if it
        was there)."""
        self._too_fast.discard(client_id)
        self.note_answer()
        return self.messages.pop(client_id, None)

    def slow_down(self, client_id: str) -> None:
        """The server found the message ``client_id`` too fast: keep it for the pacer."""
        self._too_fast.add(client_id)
        self.pacing = True
        self._slowed.set()
        self.note_answer()

    def note_answer(self) -> None:
        self._answered.set()
        self._answered = trio.Event()

    async def next_answer(self) -> None:
        """Wait for the server's next answer to a message, the end of a link, or the client
        giving up."""
        await self._answered.wait()

    async def keep_pacing(self) -> None:
        """After each rate_limited refusal, send the outbox again in paced rounds."""
        while True:
            await self._slowed.wait()
            self._slowed = trio.Event()
            # A refusal that came while the last rounds went is answered already: pacing
            # now would send again the messages sent since, while they are on their way.
            if self._too_fast:
                await self._pace()
            self.pacing = False

    async def _pace(self) -> None:
        """Send the outbox, oldest first, a round at a time until it is empty or the link
        is lost (the next login resends it): each round waits for the server's answers to the
        last, and pauses first if the server found some too fast (twice as long if it stored
        none, up to PACE[1]). A round holds twice what the last one got stored (at least one,
        at most PACE_BATCH), so a slow server is not flooded with messages it must refuse."""
        pause, size = PACE[0], PACE_BATCH
        while self.messages:
            if self._too_fast:
                await trio.sleep(pause)
            link = self._session._link
            if link is None or link.closed.is_set() or not self._session._online.is_set():
                return
            batch = list(self.messages)[:size]
            self._too_fast.difference_update(batch)
            with suppress(ClientError):  # the link is lost: the loop ends
                await self._session._send_all([self.messages[c] for c in batch])
            with trio.move_on_after(REQUEST_TIMEOUT):
                while not link.closed.is_set() and any(
                    c in self.messages and c not in self._too_fast for c in batch
                ):
                    await self._answered.wait()
            stored = sum(c not in self.messages for c in batch)
            pause = PACE[0] if stored else min(2 * pause, PACE[1])
            size = max(1, min(PACE_BATCH, 2 * stored))

    async def resend(self) -> None:
        """Send what was queued while away (once, by client id), oldest first, including
        what is queued meanwhile; not while the pacer has the outbox."""
        resent: set[str] = set()
        while waiting := [m for c, m in self.messages.items() if c not in resent]:
            for message in waiting:
                if self.pacing:
                    return
                resent.add(message.client_id)
                await self._session._send(message)
