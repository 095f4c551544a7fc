"""Trio in guest mode on the Tk main loop: network code is plain trio, and no thread but
Tk's ever touches a widget.

Trio hands us callbacks to run "soon", some from its I/O thread. We queue them and wake Tk
through a pipe that Tk watches (``createfilehandler``): the other thread only writes a byte,
never calls into Tcl, so this works whether Tk runs ``mainloop()`` or is pumped with
``update()`` (as tests do). Signals wake Tk through the same pipe, so that their Python
handlers run at once. Each wake-up runs only the callbacks queued before it, so that
while trio is busy (each of its steps queues the next) Tk handles its own events in between
and the window stays responsive. When the trio run ends, ``on_done`` gets its outcome.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import threading
import tkinter as tk
from collections.abc import Awaitable, Callable
from typing import Any

import outcome
import trio


class TkGuest:
    """Runs one trio program inside ``root``'s event loop (POSIX: Tk watches a pipe)."""

    def __init__(self, root: tk.Misc) -> None:
        self.root = root
        self._pending: collections.deque[Callable[[], object]] = collections.deque()
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        root.tk.createfilehandler(self._wake_read, tk.READABLE, self._run_pending)
        self.result: outcome.Outcome[Any] | None = None
        self.on_done: Callable[[outcome.Outcome[Any]], None] = lambda _result: None
        self._old_wakeup_fd: int | None = None
        """The signal wake-up fd before :meth:`start` set the pipe (None: it did not)."""

    def _run_pending(self, _fd: int, _mask: int) -> None:
        """Run the callbacks queued so far; those they queue wait for the next wake-up, after
        Tk has handled what came meanwhile (input, redraws, its timers)."""
        with contextlib.suppress(BlockingIOError):
            os.read(self._wake_read, 4096)
        for _ in range(len(self._pending)):
            self._pending.popleft()()
        if self._pending and self.running:  # once trio is done, the pipe is closed
            self._wake()

    def call_soon(self, fn: Callable[[], object]) -> None:
        """Queue ``fn`` for the Tk thread; safe to call from any thread, and from a signal
        handler."""
        self._pending.append(fn)
        self._wake()

    def _wake(self) -> None:
        """Make Tk call :meth:`_run_pending`; safe to call from any thread."""
        with contextlib.suppress(BlockingIOError):  # a full pipe already means "wake up"
            os.write(self._wake_write, b"\0")

    def start(self, main: Callable[[], Awaitable[object]]) -> None:
        """Start ``main`` as the trio run. In the main thread, a signal also wakes Tk (through
        the same pipe), so that its Python handler runs at once, not at Tk's next event."""
        on_signals = threading.current_thread() is threading.main_thread()
        if on_signals:
            self._old_wakeup_fd = signal.set_wakeup_fd(self._wake_write, warn_on_full_buffer=False)
        trio.lowlevel.start_guest_run(
            main,
            run_sync_soon_threadsafe=self.call_soon,
            done_callback=self._done,
            host_uses_signal_set_wakeup_fd=on_signals,
        )

    @property
    def running(self) -> bool:
        return self.result is None

    def _restore_wakeup_fd(self, old: int) -> None:
        """Put back the signal wake-up fd there was before :meth:`start`, unless another
        has been set since (that stays); if the old one is closed meanwhile, none."""
        try:
            current = signal.set_wakeup_fd(old)
        except (OSError, ValueError):  # closed since (another guest's pipe, gone)
            current = signal.set_wakeup_fd(-1)
        if current != self._wake_write:  # not ours any more: left as it was
            signal.set_wakeup_fd(current)

    def _done(self, result: outcome.Outcome[Any]) -> None:
        self.result = result
        if self._old_wakeup_fd is not None:
            self._restore_wakeup_fd(self._old_wakeup_fd)
        self.root.tk.deletefilehandler(self._wake_read)
        os.close(self._wake_read)
        os.close(self._wake_write)
        self.on_done(result)
