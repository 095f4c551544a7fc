"""The desktop client telling the server how far the user has read (``Controller._tell_reads``),
without a display or a server: a fake client takes the markers."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import trio
import trio.testing

from sealchat.core import Message, RoomJoined, RoomLeft
from sealchat.gui.controller import Controller
from sealchat.gui.viewmodel import ViewModel
from sealchat.transports.requests import ClientError

NOW = 1_700_000_000.0


def said(message_id: int, sender: str, *, room: str = "", to: str = "") -> Message:
    """A message as the server relays it."""
    return Message(
        text=f"message {message_id}", room=room, to=to, id=message_id, sender=sender, ts=NOW
    )


def controller_with_three_reads() -> Controller:
    """A controller whose view-model has three conversations read and not told yet: #general
    up to 1, #random up to 2 and @carol up to 3, in that order."""
    vm = ViewModel()
    vm.logged_in("alice")
    vm.apply(RoomJoined(room="random"), NOW)
    vm.apply(said(1, "bob", room="general"), NOW)  # shown: read
    vm.apply(said(2, "bob", room="random"), NOW)
    vm.select("#random")
    vm.apply(said(3, "carol", to="alice"), NOW)
    vm.select("@carol")
    assert vm.reads_to_tell == {"#general": 1, "#random": 2, "@carol": 3}
    return Controller(cast("Any", SimpleNamespace(vm=vm)))


class FakeClient:
    """Takes markers as ``ChatClient.mark_read`` does, into ``told``; the call for the
    conversation ``stuck_at`` (if any) waits until cancelled, as one over a link that stopped
    moving would; ``failing_at`` raises ClientError, as one that lost its link."""

    def __init__(self, stuck_at: str = "", failing_at: str = "") -> None:
        self.told: list[tuple[int, str, str]] = []
        self.stuck_at = stuck_at
        self.failing_at = failing_at
        self.stuck = trio.Event()

    async def mark_read(self, up_to: int, *, room: str = "", peer: str = "") -> bool:
        await trio.lowlevel.checkpoint()
        if self.stuck_at and self.stuck_at in (room, peer):
            self.stuck.set()
            await trio.sleep_forever()
        self.told.append((up_to, room, peer))
        if self.failing_at and self.failing_at in (room, peer):
            raise ClientError("the connection was lost")
        return True


async def tell(controller: Controller, client: FakeClient) -> None:
    await controller._tell_reads(cast("Any", client))


async def test_a_telling_cancelled_midway_leaves_the_rest_for_the_next() -> None:
    controller = controller_with_three_reads()
    cut_short = FakeClient(stuck_at="random")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(tell, controller, cut_short)
        await cut_short.stuck.wait()
        nursery.cancel_scope.cancel()  # the window closed, or the session ended
    assert cut_short.told == [(1, "general", "")]
    assert controller.vm.reads_to_tell == {"@carol": 3}  # not told yet: still to tell
    final = FakeClient()
    await tell(controller, final)
    assert final.told == [(3, "", "carol")]
    assert controller.vm.reads_to_tell == {}


async def test_a_telling_tells_every_conversation_once() -> None:
    controller = controller_with_three_reads()
    client = FakeClient(failing_at="general")  # lost with the link: the client resends it
    await tell(controller, client)
    assert client.told == [(1, "general", ""), (2, "random", ""), (3, "", "carol")]
    assert controller.vm.reads_to_tell == {}
    await tell(controller, client)
    assert len(client.told) == 3


async def test_a_conversation_read_while_telling_is_told_too() -> None:
    controller = controller_with_three_reads()
    vm = controller.vm
    client = FakeClient()

    async def read_more_as_general_is_told(up_to: int, *, room: str = "", peer: str = "") -> bool:
        if room == "general":
            vm.apply(said(4, "carol", to="alice"), NOW)  # @carol is shown: read up to 4
        return await FakeClient.mark_read(client, up_to, room=room, peer=peer)

    client.mark_read = read_more_as_general_is_told  # type: ignore[method-assign]
    await tell(controller, client)
    assert client.told == [(1, "general", ""), (2, "random", ""), (4, "", "carol")]
    assert vm.reads_to_tell == {}


async def test_a_room_left_before_its_telling_is_not_told() -> None:
    controller = controller_with_three_reads()
    controller.vm.apply(RoomLeft(room="random"), NOW)
    assert "#random" not in controller.vm.conversations
    controller.vm.reads_to_tell["#random"] = 2  # as if still pending: never told for a room left
    client = FakeClient()
    await tell(controller, client)
    assert client.told == [(1, "general", ""), (3, "", "carol")]
