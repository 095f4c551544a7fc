"""The trio client's outbox pacer, alone: what it sends, and when it sends nothing."""

from __future__ import annotations

from collections.abc import Iterable

import trio
import trio.testing

from sealchat.core import Message, Record
from sealchat.transports.trio_outbox import Outbox


class _Link:
    def __init__(self) -> None:
        self.closed = trio.Event()


class _Session:
    """A logged-in client that records what the outbox sends."""

    def __init__(self) -> None:
        self._link = _Link()
        self._online = trio.Event()
        self._online.set()
        self.sent: list[str] = []

    async def _send(self, record: Record) -> None:
        await self._send_all([record])

    async def _send_all(self, records: Iterable[Record], *, wait: bool = True) -> None:
        self.sent += [r.client_id for r in records if isinstance(r, Message)]


def _message(client_id: str) -> Message:
    return Message(text=client_id, room="general", client_id=client_id)


async def test_a_message_found_too_fast_goes_again_after_a_pause(
    autojump_clock: trio.abc.Clock,
) -> None:
    session = _Session()
    outbox = Outbox(session)  # type: ignore[arg-type]
    outbox.messages["a"] = _message("a")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(outbox.keep_pacing)
        outbox.slow_down("a")
        assert outbox.pacing
        await trio.sleep(1)  # the pause
        assert session.sent == ["a"]
        outbox.stored("a")
        await trio.testing.wait_all_tasks_blocked()
        assert not outbox.pacing
        nursery.cancel_scope.cancel()


async def test_a_stale_wake_up_sends_nothing_again(autojump_clock: trio.abc.Clock) -> None:
    # The pacer's last rounds ended (all stored) with a refusal's wake-up still pending; the
    # client then sent "b" at once, as it does when not pacing: "b" must not go twice.
    session = _Session()
    outbox = Outbox(session)  # type: ignore[arg-type]
    outbox.messages["a"] = _message("a")
    outbox.slow_down("a")
    outbox.stored("a")  # answered before the pacer ran: nothing is too fast any more
    outbox.pacing = False
    outbox.messages["b"] = _message("b")  # on its way, sent by send_message
    async with trio.open_nursery() as nursery:
        nursery.start_soon(outbox.keep_pacing)
        await trio.sleep(10)
        assert session.sent == []
        assert not outbox.pacing
        nursery.cancel_scope.cancel()
