"""The queue between the client's reader and ``events()``: order, backpressure, closing,
cancellation, and bursts read without a scheduler pass per item."""

from __future__ import annotations

from collections import deque

import pytest
import trio
import trio.testing

from sealchat.transports.trio_burst import YIELD_EVERY, BurstChannel


class _Steps(trio.abc.Instrument):
    """Counts how often any task is run by the scheduler."""

    def __init__(self) -> None:
        self.count = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        del task
        self.count += 1


def test_capacity_must_hold_one() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        BurstChannel[int](0)


async def test_items_come_out_in_order_whether_queued_or_awaited() -> None:
    channel = BurstChannel[int](100)
    got: list[int] = []

    async def read(count: int) -> None:
        async for item in channel:
            got.append(item)
            if len(got) == count:
                return

    for i in range(10):
        await channel.put(i)
    with trio.fail_after(5):  # a lost wake-up would hang here
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read, 20)
            await trio.testing.wait_all_tasks_blocked()  # the reader has drained and waits
            for i in range(10, 20):
                await channel.put(i)
    assert got == list(range(20))
    with pytest.raises(trio.WouldBlock):
        channel.receive_nowait()


async def test_a_full_queue_makes_the_writer_wait_for_the_reader() -> None:
    channel = BurstChannel[int](2)
    await channel.put(1)
    await channel.put(2)
    third_queued = False

    async def put_third() -> None:
        nonlocal third_queued
        await channel.put(3)
        third_queued = True

    with trio.fail_after(5):  # a lost wake-up would hang here
        async with trio.open_nursery() as nursery:
            nursery.start_soon(put_third)
            await trio.testing.wait_all_tasks_blocked()
            assert not third_queued
            assert channel.queued == 2
            assert await channel.receive() == 1
            await trio.testing.wait_all_tasks_blocked()
            assert third_queued
    assert [channel.receive_nowait(), channel.receive_nowait()] == [2, 3]


async def test_a_cancelled_reader_takes_nothing() -> None:
    channel = BurstChannel[str](10)
    for item in ("a", "b"):
        await channel.put(item)
    for _ in range(2 * YIELD_EVERY):  # whether the receive would yield or not
        with trio.CancelScope() as scope:
            scope.cancel()
            await channel.receive()
        assert scope.cancelled_caught
    assert channel.queued == 2
    assert await channel.receive() == "a"


async def test_a_burst_is_read_without_a_scheduler_pass_per_item() -> None:
    count = 10 * YIELD_EVERY
    channel = BurstChannel[int](count)
    for i in range(count):
        await channel.put(i)
    steps = _Steps()
    trio.lowlevel.add_instrument(steps)
    try:
        got = [await channel.receive() for _ in range(count)]
    finally:
        trio.lowlevel.remove_instrument(steps)
    assert got == list(range(count))
    # One pass every YIELD_EVERY items (a memory channel needs one per item at least).
    assert steps.count <= 2 * count // YIELD_EVERY


async def test_other_tasks_run_while_a_long_burst_is_read() -> None:
    count = 10 * YIELD_EVERY
    channel = BurstChannel[int](count)
    for i in range(count):
        await channel.put(i)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(tick)
        await trio.lowlevel.checkpoint()  # the ticker has started
        before = ticks
        for _ in range(count):
            await channel.receive()
        assert ticks - before >= count // (2 * YIELD_EVERY)
        nursery.cancel_scope.cancel()


async def test_closing_wakes_the_reader_and_drops_what_comes_later() -> None:
    channel = BurstChannel[int](1)
    await channel.put(1)

    async def blocked_writer() -> None:
        await channel.put(2)  # full: waits until the channel closes, then drops it

    with trio.fail_after(5):  # the writer must be released
        async with trio.open_nursery() as nursery:
            nursery.start_soon(blocked_writer)
            await trio.testing.wait_all_tasks_blocked()
            await channel.aclose()
    await channel.put(3)  # no reader: dropped, and no waiting although "full"
    assert channel.queued == 0
    with pytest.raises(trio.ClosedResourceError):
        await channel.receive()
    with pytest.raises(trio.ClosedResourceError):
        channel.receive_nowait()


async def test_closing_tells_a_subclass_what_it_drops_in_order() -> None:
    dropped: list[int] = []

    class Counting(BurstChannel[int]):
        def _drop(self, items: deque[int]) -> None:
            dropped.extend(items)

    channel = Counting(10)
    for i in range(4):
        await channel.put(i)
    assert channel.receive_nowait() == 0
    await channel.aclose()
    assert dropped == [1, 2, 3]  # all it held, and nothing it handed over
    await channel.aclose()
    assert dropped == [1, 2, 3]  # once


async def test_a_waiting_reader_learns_that_the_channel_closed() -> None:
    channel = BurstChannel[int](1)

    async def read() -> None:
        with pytest.raises(trio.ClosedResourceError):
            await channel.receive()

    with trio.fail_after(5):  # the reader must be woken
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            await trio.testing.wait_all_tasks_blocked()
            await channel.aclose()


async def test_ctrl_c_cannot_come_between_the_queue_and_its_reader() -> None:
    protected: list[bool] = []

    class Watched(deque[int]):
        def append(self, item: int) -> None:
            protected.append(trio.lowlevel.currently_ki_protected())
            super().append(item)

        def popleft(self) -> int:
            protected.append(trio.lowlevel.currently_ki_protected())
            return super().popleft()

    channel = BurstChannel[int](4)
    channel._items = Watched()
    await channel.put(1)
    assert await channel.receive() == 1
    await channel.put(2)
    assert channel.receive_nowait() == 2
    assert protected == [True] * 4
