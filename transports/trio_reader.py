"""The trio client's reader: it reads a link until the link ends, and takes each record where
it belongs: to the calls waiting for replies, to a download, to the outbox (the server's
answers to messages), and on to ``events()``."""

from __future__ import annotations

from contextlib import suppress
from typing import Protocol

import msgspec
import trio

from sealchat.core import (
    ConnectionClosed,
    Event,
    FileChunk,
    FileComplete,
    FileReject,
    Message,
    MessageAck,
    ProtocolError,
    Record,
)
from sealchat.core import Error as ServerError
from sealchat.transports import requests
from sealchat.transports.trio_delivery import Delivery
from sealchat.transports.trio_link import Link, LinkLost
from sealchat.transports.trio_outbox import Outbox
from sealchat.transports.trio_transfers import Transfers


class Session(Protocol):
    """What the reader uses of the client: its user name (for its own messages once stored),
    where a record goes (``_dispatch``: ``Reader.dispatch``), and what to do when a link ends."""

    username: str

    async def _dispatch(self, record: Event) -> None: ...

    def _link_ended(self, link: Link, reason: str) -> None: ...


class Reader:
    """Reads the links of one client (one at a time), over all of which it counts records."""

    def __init__(
        self,
        session: Session,
        delivery: Delivery,
        outbox: Outbox,
        transfers: Transfers,
        *,
        replies: bool,
    ) -> None:
        self._session = session
        self._delivery = delivery
        self._waiters = delivery.waiters
        self._outbox = outbox
        self._chunks = transfers.chunks
        self._replies = replies
        """Whether what answers a call (a refusal, a page of history…) goes on events() too."""
        self._position = 0
        """Records read so far (over all links): the position in the stream of the latest
        (see ``route``)."""

    async def read(self, link: Link) -> None:
        """The reader task of ``link``: when the link ends, the calls waiting on it fail, the
        downloads see the end of their chunks, and the client learns why it ended."""
        reason = "the connection was lost"
        try:
            while True:
                event = await link.next_event()
                if isinstance(event, ConnectionClosed):
                    reason = event.reason or reason
                    if event.clean:  # the server said goodbye
                        link.farewell = reason
                    return
                await self._session._dispatch(event)
        except ProtocolError as exc:
            reason = str(exc)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, LinkLost):
            pass
        finally:
            link.reason = reason
            link.closed.set()
            link.writer.cancel()
            link.wrote.set()  # senders waiting for room see the link is gone
            self._outbox.note_answer()  # and the pacer stops waiting for answers
            with trio.CancelScope(shield=True):
                await link.stream.aclose()
            requests.lose(self._waiters)
            self._delivery.wake_releaser()
            for chunks in self._chunks.values():
                chunks.close()  # the download sees the end of its chunks: it resumes later
            self._session._link_ended(link, reason)

    async def dispatch(self, record: Event) -> None:
        """Take ``record`` where it belongs."""
        if not isinstance(record, Record):
            return
        self._position += 1
        took = requests.route(self._waiters, record, self._position)
        self._delivery.wake_releaser()  # for the events that calls it ended had held back
        match record:
            case FileChunk() | FileComplete() | FileReject() if record.transfer in self._chunks:
                # A full queue makes the reader wait: the socket backs up, the server pauses.
                with suppress(trio.BrokenResourceError):  # the download ended meanwhile
                    await self._chunks[record.transfer].send(record)
                return
            case FileChunk() | FileComplete() | FileReject():
                return  # the rest of an abandoned download, already on its way
            case Message():
                if not self._delivery.remember(record.id):
                    return
            case ServerError(code="rate_limited", ref=ref) if ref in self._outbox.messages:
                self._outbox.slow_down(ref)  # not refused: it goes again after a pause
                return
            case ServerError(ref=ref) if ref in self._outbox.messages:
                self._outbox.refused(ref)
            case MessageAck():
                sent = self._outbox.stored(record.client_id)
                if sent is not None and self._delivery.remember(record.id):
                    # Our own message, now stored: shown like anyone's, in id order.
                    await self._delivery.pass_on(
                        msgspec.structs.replace(
                            sent, id=record.id, ts=record.ts, sender=self._session.username
                        )
                    )
        if self._replies or not took:
            await self._delivery.pass_on(record)
        elif isinstance(record, Message):  # it may be an answer, or not: wait and see
            await self._delivery.pass_on(record, took)
