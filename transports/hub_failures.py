"""What both servers say when the hub (or its store) fails on a connection's request: the
goodbye that ends that connection, and the log line; and the log of the uploaded chunks a
full disk loses.

A full disk fails every write until the operator frees space, for every user at each message:
it is said to the user as what it is (their client resends once it can), and in the log in one
line at most once a minute; any other failure (a bug, a database locked for too long) is
logged each time with its traceback."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from sealchat.core.hub.store import DISK_FULL_ERRNOS
from sealchat.core.sizes import counted
from sealchat.transports.server_limits import REPORT_INTERVAL, Throttle, ThrottledLog

log = logging.getLogger("sealchat.server")

FAILED: Final = "the server failed on your request; please reconnect"
"""The goodbye of a connection whose request the hub (or its store) failed on."""

DISK_FULL: Final = (
    "the server's disk is full: what you sent last was not stored; "
    "it can be sent again once the server's operator has freed some space"
)
"""The goodbye of a connection whose request failed for want of disk space."""


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc``, or an exception it was raised from or while handling, says that the
    disk is full: SQLite's SQLITE_FULL ("database or disk is full"), or ENOSPC or EDQUOT."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, sqlite3.Error):
            if getattr(cause, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_FULL:  # primary code
                return True
        elif isinstance(cause, OSError) and cause.errno in DISK_FULL_ERRNOS:
            return True
        cause = cause.__cause__ or cause.__context__
    return False


class HubFailures:
    """Logs the hub's failures on connections' requests and names the goodbye for each
    (thread-safe)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._disk_full = ThrottledLog(logging.ERROR, clock=clock)

    def report(self, exc: BaseException, what: str, peer: object) -> str:
        """Log that the hub failed on ``what`` ``peer`` ("a record from", "the password
        check of"...) with ``exc``; return the goodbye for that connection."""
        if disk_full(exc):
            with self._lock:
                self._disk_full(
                    "the disk of the data folder is full: the hub failed on %s %s; "
                    "nothing is stored until some space is freed",
                    what,
                    peer,
                )
            return DISK_FULL
        log.error("the hub failed on %s %s", what, peer, exc_info=exc)
        return FAILED


class DiskFullLog:
    """The log of the chunks of uploads that the disk of the data folder ``data_dir`` had no
    room for (each is refused, and its client told to resume later): a WARNING naming the
    folder and what to do, the first at once, then at most once per ``interval`` seconds,
    counting the chunks lost since the line before. Chunks lost after the last line are
    counted in the next, when one more is lost. Thread-safe."""

    def __init__(
        self,
        data_dir: Path,
        *,
        interval: float = REPORT_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._data_dir = data_dir
        self._throttle = Throttle(interval, clock)
        self._lock = threading.Lock()
        self._said = False
        """Whether a line was logged already (the next counts since that one)."""

    def chunk_lost(self) -> None:
        """A chunk of an upload was not stored: the disk is full (or the quota used up)."""
        with self._lock:
            held_back = self._throttle.passes()
            if held_back is None:
                return
            since = " since the last such line" if self._said else ""
            self._said = True
        log.warning(
            "the disk of the data folder %s is full: %s not stored%s; free space in %s; "
            "uploads resume when there is room",
            self._data_dir,
            counted(held_back + 1, "upload chunk"),
            since,
            self._data_dir,
        )
