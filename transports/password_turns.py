"""Fair turns at the servers' password checks: one account cannot hold up everyone's login.

Argon2id checks run on a few threads (``ServerConfig.password_threads``). First come, first
served, one account holder logging in from many addresses at once, each within its limits,
queued a hundred checks ahead of every other user's login (seconds of waiting). Here the
waiting checks queue per account, and a freed thread goes to the accounts in turn: a login
waits for the checks running and at most one more of each account queued before it.

:class:`TurnTaking` decides who goes next and does no waiting; :class:`TrioTurns` (the trio
server) and :class:`ThreadTurns` (the threaded server) wait on it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Hashable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Generic, TypeVar

import trio

__all__ = ["ThreadTurns", "TrioTurns", "TurnTaking"]

W = TypeVar("W")


class TurnTaking(Generic[W]):
    """Up to ``slots`` turns at once; the waiters queue per key, and a freed turn goes to the
    key at the head of the line, whose earliest waiter takes it, then to the back of the line
    if it has more waiting."""

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError("slots must be at least 1")
        self.slots = slots
        self.taken = 0
        """Turns taken now (never more than ``slots``)."""
        self._line: OrderedDict[Hashable, deque[W]] = OrderedDict()

    @property
    def waiting(self) -> int:
        """How many waiters wait for a turn."""
        return sum(len(queue) for queue in self._line.values())

    def ask(self, key: Hashable, waiter: W) -> bool:
        """True if ``waiter`` takes a turn now; else it waits, behind the other waiters of
        ``key``, until :meth:`done` returns it (or it is withdrawn)."""
        if self.taken < self.slots:  # then nobody waits: a freed turn goes to a waiter
            self.taken += 1
            return True
        queue = self._line.get(key)
        if queue is None:
            self._line[key] = queue = deque()
        queue.append(waiter)
        return False

    def withdraw(self, key: Hashable, waiter: W) -> None:
        """``waiter`` of ``key`` stops waiting (it was cancelled before its turn came)."""
        queue = self._line[key]
        queue.remove(waiter)
        if not queue:
            del self._line[key]

    def done(self) -> W | None:
        """A turn ended: the waiter it passes to (which now holds it), or None if nobody
        waits (the turn is free)."""
        if not self._line:
            self.taken -= 1
            return None
        key, queue = self._line.popitem(last=False)
        waiter = queue.popleft()
        if queue:
            self._line[key] = queue  # its next waiter goes after every other key's
        return waiter


class TrioTurns:
    """:class:`TurnTaking` for trio tasks: ``async with turns.turn(key): ...``."""

    def __init__(self, slots: int) -> None:
        self.taking: TurnTaking[trio.Event] = TurnTaking(slots)

    @asynccontextmanager
    async def turn(self, key: Hashable) -> AsyncIterator[None]:
        """Hold a turn for ``key`` while the block runs (waiting for it first, if need be)."""
        given = trio.Event()
        if not self.taking.ask(key, given):
            try:
                await given.wait()  # once set, the turn is ours: the finally below passes it on
            except BaseException:  # cancelled while waiting
                self.taking.withdraw(key, given)
                raise
        try:
            yield
        finally:
            self._pass_on()

    def _pass_on(self) -> None:
        waiter = self.taking.done()
        if waiter is not None:
            waiter.set()


class ThreadTurns:
    """:class:`TurnTaking` for threads: ``with turns.turn(key): ...``."""

    def __init__(self, slots: int) -> None:
        self.taking: TurnTaking[threading.Event] = TurnTaking(slots)
        self._lock = threading.Lock()

    @contextmanager
    def turn(self, key: Hashable) -> Iterator[None]:
        """Hold a turn for ``key`` while the block runs (waiting for it first, if need be)."""
        given = threading.Event()
        with self._lock:
            now = self.taking.ask(key, given)
        if not now:
            given.wait()
        try:
            yield
        finally:
            with self._lock:
                waiter = self.taking.done()
            if waiter is not None:
                waiter.set()
