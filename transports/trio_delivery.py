"""What the trio client hands to ``events()``: messages once each, those that calls took held
back (without replies) until their answers are known and released in order, and the
acknowledgements (``Delivered``) of the messages the user was shown: those the events reader
took, not those still queued for it."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from sealchat.core import Delivered, Event, HistoryEnd, Message, Record, State
from sealchat.transports import requests
from sealchat.transports.requests import EVENT_BUFFER, ClientError, Reply
from sealchat.transports.trio_burst import BurstChannel
from sealchat.transports.trio_link import Link

SEEN_MEMORY = 50_000


@dataclass(frozen=True, slots=True)
class LinkState:
    """Emitted on ``events()`` when the connection drops or comes back."""

    connected: bool
    reason: str = ""
    retry_in: float = 0.0


class CallWaiter(requests.Waiter[trio.Event]):
    """Someone waiting for the records of a reply."""

    def __init__(self, reply: Reply[Any]) -> None:
        super().__init__(reply, trio.Event())
        self.release_by = math.inf
        """When it stops holding back the messages it took (once its call is given up)."""


def _holds(waiter: CallWaiter, event: Event | LinkState) -> bool:
    """Whether the answer ``waiter`` got holds ``event``, a message (or one of the same id:
    a history page may repeat a message that came before it, live or replayed). That of a
    call given up, which no caller shows, holds only what came as its page (see ``_page``):
    a message that came before it goes on, even if the page repeats it."""
    answered = waiter.finished.is_set() and not (waiter.lost or waiter.failure)
    if not answered or not isinstance(event, Message):
        return False
    if waiter.abandoned:
        return any(message is event for message in _page(waiter.records))
    return any(isinstance(r, Message) and r.id == event.id for r in waiter.records)


def _page(records: list[Record]) -> list[Message]:
    """The messages of a reply that are in id order right before its end, as a history page
    is: without a live one that came just before the page."""
    messages = [r for r in records if isinstance(r, Message)]
    start = len(messages) - 1
    while start > 0 and messages[start - 1].id < messages[start].id:
        start -= 1
    return messages[max(start, 0) :]


class Session(Protocol):
    """What delivery uses of the client: its link, to acknowledge on."""

    _link: Link | None


class EventChannel(BurstChannel[Event | LinkState]):
    """The channel of ``events()``, which tells ``taken`` each event its reader takes: only
    then has the user been shown it (what is still queued when the client closes was not)."""

    def __init__(self, capacity: int, taken: Callable[[Event | LinkState], None]) -> None:
        super().__init__(capacity)
        self.taken = taken
        """Told of each event the reader takes (``Delivery`` changes it while it counts
        them, see ``Delivery._answered``)."""

    def _take(self) -> Event | LinkState:
        item = BurstChannel._take(self)  # cheaper than super() for every event
        self.taken(item)
        return item

    def _drop(self, items: deque[Event | LinkState]) -> None:
        """What was queued when the reader closed the stream counts as taken, in order, as
        what comes after the close does (see ``Delivery._emit``): a client that acknowledges
        without a reader (``acknowledge=True``) acknowledges it, and the end of a replay page
        among it asks for the next page (else the replay would stop there for good). Another
        acknowledges nothing once the stream is closed."""
        for item in items:
            self.taken(item)


class Delivery:
    """The events of one client (across its links), fed by its reader, taken by ``events()``."""

    def __init__(self, session: Session, *, events: bool, acknowledge: bool | None) -> None:
        self._session = session
        self.waiters: list[CallWaiter] = []
        """The calls waiting for replies (the client adds them and routes records to them):
        without replies, what they took waits for their answers."""
        self.events = EventChannel(EVENT_BUFFER, self._note_shown)
        self.keeping_events = events
        """Whether the client passes on what the server sends (``events()``)."""
        self.acknowledging = events if acknowledge is None else acknowledge
        """Whether to tell the server what arrived; by default only a client that keeps its
        events does (one that shows nothing must not mark the user's messages read), and only
        until its events stream is closed."""
        self._acknowledge_given = acknowledge is not None
        self.withheld: deque[tuple[Event | LinkState, list[CallWaiter]]] = deque()
        """Without replies: a message that calls took (with those calls) waits here, and the
        events after it (LinkState too) wait behind it, until the calls are over, to learn
        whether their answers hold it (a history page is only the messages right before its
        end). Only the releaser (``keep_releasing``) takes them out, so they keep their
        order: it waits for ``_releasable`` (set when an event is withheld, or a waiter
        leaves), or for the end of a hold (see ``abandon``), and sets (and replaces)
        ``_released`` as it takes each out."""
        self._releasable, self._released = trio.Event(), trio.Event()
        self._seen: set[int] = set()
        self._seen_order: deque[int] = deque()
        self._delivered = self._shown = 0
        """The newest message id acknowledged since the login (outside a replay: during one,
        the server takes no more than the page it sent), and the newest that the reader of
        ``events()`` took (or a call's answer held, once all queued before it was taken):
        only what the user was shown is acknowledged, not all that arrived, nor what waits
        in the events queue."""
        self._answered: deque[tuple[int, Message]] = deque()
        """Messages that calls' answers held (without replies) while events were queued on
        ``events()``, in order, each with the count of ``_handed`` at which all of those
        were taken: only then does it count as shown, as Delivered means all up to it (its
        caller shows it at once, but an older message may wait in the queue). Only while
        one waits here does ``events()`` tell ``_note_taken`` (which counts) instead of
        ``_note_shown`` of each event taken: the usual path costs no more."""
        self._handed = 0
        """The events the reader of ``events()`` took since ``_answered`` was last empty."""
        self.replaying = False
        self._page_ends: deque[HistoryEnd] = deque()
        """The ends of the replay's pages that came since the login, in order, not yet shown:
        each, once shown, acknowledges its page and so asks for the next. One that came
        before the login, on a link since lost, is shown without either (the new replay asks
        again, and its acknowledgement could cover a page of the new replay not yet shown)."""

    def start_replay(self) -> None:
        """A login starts the server's replay of what it has not seen acknowledged. What an
        earlier link acknowledged may never have reached the server (a Delivered queued as the
        link died), so from the login on, only what goes on the new link counts: the end of
        the replay acknowledges again all that was shown."""
        self.replaying = True
        self._delivered = 0
        self._page_ends.clear()

    async def pass_on(self, event: Event | LinkState, took: list[CallWaiter] | None = None) -> None:
        """Emit ``event`` after those withheld; hold it back while calls that ``took`` it wait
        (without replies, see ``withheld``). Waits while more than EVENT_BUFFER are withheld
        (the events reader is that far behind)."""
        if requests.ends_replay(event):
            self._page_ends.append(event)  # it came on the link of the latest login
        if not (took or self.withheld):
            await self._emit(event)
            return
        self.withheld.append((event, took or []))
        self._releasable.set()
        while len(self.withheld) > EVENT_BUFFER:
            await self._released.wait()

    def wake_releaser(self) -> None:
        """Let the releaser look again at the withheld events: a waiter has left."""
        if self.withheld:
            self._releasable.set()

    def forget(self, waiter: CallWaiter) -> None:
        """``waiter`` waits no more: the events it held back may go."""
        if waiter in self.waiters:
            self.waiters.remove(waiter)
            self.wake_releaser()

    def abandon(self, waiter: CallWaiter, hold: float) -> None:
        """The call of ``waiter`` is over: if its reply is still to come, the waiter stays to
        take it (see ``requests.abandon``), and holds back what it took until then (its page,
        which no one asked for any more, is then dropped) or for ``hold`` seconds at most."""
        requests.abandon(self.waiters, waiter)
        if waiter.abandoned:
            waiter.release_by = trio.current_time() + hold
        self.wake_releaser()

    def _holding(self, waiter: CallWaiter) -> bool:
        """Whether ``waiter`` holds back the messages it took: it waits for its reply (if its
        call was given up, until its ``release_by``), which has not failed (past a bound, it
        only drops the rest of its reply)."""
        return (
            waiter in self.waiters
            and not waiter.failure
            and trio.current_time() < waiter.release_by
        )

    async def keep_releasing(self) -> None:
        """The releaser: emits withheld events as the calls that took them end, or stop
        holding them (see ``_release``). One task for all, since emitting may wait for the
        events reader."""
        while True:
            now = trio.current_time()
            due = min((w.release_by for w in self.waiters if w.release_by > now), default=math.inf)
            with trio.move_on_at(due):
                await self._releasable.wait()
            self._releasable = trio.Event()
            await self._release()

    async def _release(self) -> None:
        """Emit the withheld events up to the first that a call still waiting took (past it
        too while more than EVENT_BUFFER wait), except each message that a call's answer
        holds (or the late page of calls given up: dropped). Each leaves the queue once
        emitted, so nothing overtakes it meanwhile."""
        while self.withheld:
            event, took = self.withheld[0]
            if any(map(self._holding, took)) and len(self.withheld) <= EVENT_BUFFER:
                return
            answers = [waiter for waiter in took if _holds(waiter, event)]
            if not answers:
                await self._emit(event)
            elif not all(waiter.abandoned for waiter in answers):
                self._note_answered(event)  # its call has given it to the caller
            elif isinstance(event, Message):
                # The late page of calls given up: dropped unshown, so a later copy (replayed)
                # is shown. (Its id stays in _seen_order: at worst it is forgotten early.)
                self._seen.discard(event.id)
            self.withheld.popleft()
            self._released.set()
            self._released = trio.Event()

    async def _emit(self, event: Event | LinkState) -> None:
        """Queue ``event`` on ``events()`` (waiting while its reader is EVENT_BUFFER behind):
        it counts as shown once the reader takes it (see ``EventChannel``). Unless the client
        was made with ``events=False``, or the reader closed the stream: then at once."""
        if not (self.keeping_events and await self.events.put(event)):
            self._note_shown(event)

    def _note_answered(self, event: Event | LinkState) -> None:
        """A call's answer gave ``event`` (a message) to its caller: it counts as shown once
        the reader of ``events()`` has taken what is queued there now (see ``_answered``)."""
        queued = self.events.queued
        if not (queued and isinstance(event, Message)):
            self._note_shown(event)
            return
        if not self._answered:
            self._handed = 0
            self.events.taken = self._note_taken
        self._answered.append((self._handed + queued, event))

    def _note_taken(self, event: Event | LinkState) -> None:
        """The reader of ``events()`` took ``event`` while messages of answers wait for what
        is queued before them (see ``_answered``): it was shown, and so is each of those
        that waited for it."""
        self._handed += 1
        self._note_shown(event)
        answered = self._answered
        while answered and answered[0][0] <= self._handed:
            self._note_shown(answered.popleft()[1])
        if not answered:
            self.events.taken = self._note_shown

    def _note_shown(self, event: Event | LinkState) -> None:
        """``event`` reached the user (and all before it): a message may now be acknowledged,
        and the end of a replay page of this login asks for the next page."""
        if isinstance(event, Message):
            self._shown = max(self._shown, event.id)
        elif self._page_ends and event is self._page_ends[0]:
            self.replaying = self._page_ends.popleft().more
            self.acknowledge(page_end=True)  # all of the page was shown: the next, please

    def remember(self, message_id: int) -> bool:
        """Note a message id; False if it was already shown."""
        if message_id in self._seen:
            return False
        self._seen.add(message_id)
        self._seen_order.append(message_id)
        if len(self._seen_order) > SEEN_MEMORY:
            self._seen.discard(self._seen_order.popleft())
        return True

    @property
    def acknowledges(self) -> bool:
        """Whether to tell the server what arrived now (see ``acknowledging``)."""
        return self.acknowledging and (self._acknowledge_given or not self.events.closed)

    def due(self, *, page_end: bool = False) -> int | None:
        """What a Delivered should say now (every message up to it was shown), or None if
        none is due. Delivered means all up to it, so it stops short of the oldest message
        held back. While the replay runs, one goes only as a page's end is emitted (``page_end``):
        the server takes it no further than the page it sent last (with it, all before that end
        was shown; what is held back came after it, newer than the page or no message a replay
        brings), and sends the next page; any other would cover a page under way."""
        if self.replaying:
            return self._shown if page_end else None
        held = [event.id for event, _ in self.withheld if isinstance(event, Message)]
        up_to = min(self._shown, min(held) - 1) if held else self._shown
        return up_to if up_to > self._delivered else None

    def acknowledge(self, *, page_end: bool = False) -> None:
        """Tell the server which messages reached the user (see ``due``; at a replay page's
        ``page_end`` this also asks for the next page). Not while there is no session (the
        next login's replay asks again); it counts as acknowledged once it went on the link.
        Queued for the link's writer without waiting: the events reader calls this as it
        takes a page's end."""
        link = self._session._link
        up_to = self.due(page_end=page_end)
        if (
            not self.acknowledges
            or up_to is None
            or link is None
            or link.closed.is_set()
            or link.conn.state is not State.READY  # a reconnect's login: its replay asks
        ):
            return
        counts = not self.replaying
        with suppress(ClientError):  # the link is going down: the next login replays the rest
            link.put(requests.checked((Delivered(up_to=up_to),)))
            if counts:
                self._delivered = max(self._delivered, up_to)

    async def keep_acknowledging(self) -> None:
        while True:
            await trio.sleep(2)
            self.acknowledge()
