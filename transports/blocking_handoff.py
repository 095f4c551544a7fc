"""What the threads of the blocking client hand each other: a reply to the call waiting for
it (``CallWaiter``), items on bounded queues (``put_while``, ``put_even_if_full``), and the
events, on a queue that says what was taken from it (``TakenQueue``)."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from sealchat.transports import requests
from sealchat.transports.requests import Reply

T = TypeVar("T")


def put_while(items: queue.Queue[T], item: T, wanted: Callable[[], bool]) -> bool:
    """Put ``item`` on ``items``, waiting while it is full as long as ``wanted()``; whether
    it was put."""
    while wanted():
        with contextlib.suppress(queue.Full):
            items.put(item, timeout=0.1)
            return True
    return False


def put_even_if_full(items: queue.Queue[T], item: T) -> None:
    """Put ``item`` last on ``items`` without waiting, one beyond its size if it is full (the
    end of a stream, which its reader must see after what came before)."""
    with items.mutex:  # the queue's own lock: nothing else changes it meanwhile
        items.queue.append(item)
        items.unfinished_tasks += 1
        items.not_empty.notify()


class TakenQueue(queue.Queue[T]):
    """A ``queue.Queue`` that calls ``on_take`` with each item taken from it (by ``get`` or
    ``get_nowait``), once its own lock is released."""

    def __init__(self, on_take: Callable[[T], None], maxsize: int = 0) -> None:
        super().__init__(maxsize)
        self._on_take = on_take

    def get(self, block: bool = True, timeout: float | None = None) -> T:
        item = super().get(block, timeout)
        self._on_take(item)
        return item


class CallWaiter(requests.Waiter[threading.Event]):
    """A ``Waiter`` on a ``threading.Event``: what a call of the blocking client waits on."""

    def __init__(self, reply: Reply[Any]) -> None:
        super().__init__(reply, threading.Event())
