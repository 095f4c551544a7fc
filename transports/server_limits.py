"""What both servers share to stay up under too many connections: log lines that cannot flood
the log."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger("sealchat.server")

REPORT_INTERVAL = 60.0
"""Seconds between two lines of one ``ThrottledLog``."""


class ThrottledLog:
    """A log line for something that may happen thousands of times a second (a refused
    connection, a failed accept): the first time it is logged at once, then at most once per
    ``interval`` seconds; the times in between are counted, and the count goes with the next
    line. Not thread-safe: call it under a lock in threads."""

    __slots__ = ("_clock", "_interval", "_level", "_next", "_skipped")

    def __init__(
        self,
        level: int,
        *,
        interval: float = REPORT_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._level = level
        self._interval = interval
        self._clock = clock
        self._next = float("-inf")
        self._skipped = 0

    def __call__(self, message: str, *args: object) -> None:
        """Log ``message % args``, unless a line went out less than ``interval`` ago."""
        now = self._clock()
        if now < self._next:
            self._skipped += 1
            return
        self._next = now + self._interval
        if self._skipped:
            message += " (and %d times more since the last such line)"
            args = (*args, self._skipped)
            self._skipped = 0
        log.log(self._level, message, *args)
