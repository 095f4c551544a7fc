"""What both servers share to stay up under too many connections: the connection counts per
address and their caps, log lines that cannot flood the log, and the line that says a peer
was dropped."""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from sealchat.core.hub.ratelimit import Allowances
from sealchat.transports.server_config import ServerConfig

log = logging.getLogger("sealchat.server")

REPORT_INTERVAL = 60.0
"""Seconds between two lines of one ``ThrottledLog``."""


class Throttle:
    """Lets one occurrence through at most once per ``interval`` seconds (the first at once)
    and counts those held back in between."""

    __slots__ = ("_clock", "_interval", "_next", "_skipped")

    def __init__(self, interval: float, clock: Callable[[], float]) -> None:
        self._interval = interval
        self._clock = clock
        self._next = float("-inf")
        self._skipped = 0

    def passes(self) -> int | None:
        """None if this occurrence is held back; else how many were since the last one
        let through."""
        now = self._clock()
        if now < self._next:
            self._skipped += 1
            return None
        self._next = now + self._interval
        skipped, self._skipped = self._skipped, 0
        return skipped


class ThrottledLog:
    """A log line for something that may happen thousands of times a second (a refused
    connection, a failed accept): the first time it is logged at once, then at most once per
    ``interval`` seconds; the times in between are counted, and the count goes with the next
    line. Not thread-safe: call it under a lock in threads."""

    __slots__ = ("_level", "_throttle")

    def __init__(
        self,
        level: int,
        *,
        interval: float = REPORT_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._level = level
        self._throttle = Throttle(interval, clock)

    def __call__(self, message: str, *args: object) -> None:
        """Log ``message % args``, unless a line went out less than ``interval`` ago."""
        skipped = self._throttle.passes()
        if skipped is None:
            return
        if skipped:
            message += " (and %d times more since the last such line)"
            args = (*args, skipped)
        log.log(self._level, message, *args)


class OncePerInterval(logging.Filter):
    """A filter that lets a logger's records through at most once per ``interval`` seconds,
    counting the others into the next: for a library's logger that reports each retry of a
    failing accept (trio's, ten times a second, each with a traceback)."""

    def __init__(
        self, *, interval: float = REPORT_INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self._throttle = Throttle(interval, clock)

    def filter(self, record: logging.LogRecord) -> bool:
        skipped = self._throttle.passes()
        if skipped is None:
            return False
        if skipped:
            record.msg = f"{record.getMessage()} (and {skipped} times more since the last)"
            record.args = ()
        return True


TRIO_ACCEPT_LOG = logging.getLogger("trio.serve_listeners")
"""trio's accept loop logs here, with a traceback, every time it retries an accept that
failed for want of descriptors or memory: ten times a second."""


def quiet_trio_accept_log() -> None:
    """Let trio's accept-retry lines through once a minute (idempotent)."""
    if not any(isinstance(f, OncePerInterval) for f in TRIO_ACCEPT_LOG.filters):
        TRIO_ACCEPT_LOG.addFilter(OncePerInterval())


def address_key(host: str) -> str:
    """What the limits per address count by: an IPv4 address as it is, an IPv6 address by
    its /64 network (one host usually has a whole /64 to itself: counted address by address,
    it would pass every such limit), an IPv4-mapped IPv6 address as its IPv4 address.
    Anything else (``unknown``) as it is."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv4Address):
        return host  # as the socket spells it: canonical, and no new string per connection
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))


STOPPED_READING = "stopped reading: it took nothing we wrote for write_timeout"
"""Why a peer is dropped whose write waited longer than ``write_timeout``."""
OUTPUT_PILED_UP = "stopped reading: its unread output passed max_outgoing_bytes"
"""Why a peer is dropped that holds more output than ``max_outgoing_bytes``."""
WENT_AWAY = "went away while we were writing"
"""Why a peer is dropped whose connection failed under a write (reset, or closed)."""


class _Socket(Protocol):
    def getpeername(self) -> Any: ...


def peer_name(sock: _Socket) -> str:
    """The address and port of the peer ``sock`` is connected to, as the log names it
    (``192.0.2.7:40000``, ``[2001:db8::1]:40000``); ``unknown`` if the socket no longer
    knows."""
    try:
        host, port = sock.getpeername()[:2]
    except (OSError, TypeError, ValueError):  # gone already, or not an IP socket
        return "unknown"
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def log_dropped(peer: str, user: str, why: str) -> None:
    """Say in one info line that the server dropped the connection of ``peer`` (its
    ``peer_name``), logged in as ``user`` ("" before the login), because it ``why`` (one
    of STOPPED_READING, OUTPUT_PILED_UP, WENT_AWAY, or the output budget's OVER_BUDGET)."""
    who = f"{peer} (user {user})" if user else peer
    log.info("peer %s %s; connection dropped", who, why)


class ConnectionSlots:
    """The connections a server has open, per address (``address_key``), and of those the
    ones that have not logged in yet: each count capped by its ``ServerConfig`` setting
    (``max_connections_per_address``, ``max_unauthenticated_per_address``), besides
    ``max_connections`` for all of them; and the rate at which an address opens new ones
    (``address_connections_per_second``). A connection over a cap or the rate is to be
    closed at once; that is logged at info, at most once a minute per limit. Not
    thread-safe."""

    __slots__ = (
        "_clock",
        "_config",
        "_full",
        "_new",
        "_next_sweep",
        "_open",
        "_over_address",
        "_over_rate",
        "_over_unauthenticated",
        "_unauth",
    )

    def __init__(
        self, config: ServerConfig, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._config = config
        self._clock = clock
        self._open: dict[str, int] = {}
        self._unauth: dict[str, int] = {}
        self._new = Allowances(
            config.address_connections_per_second, config.address_connection_burst
        )
        self._next_sweep = clock() + REPORT_INTERVAL
        self._full = ThrottledLog(logging.INFO)
        self._over_address = ThrottledLog(logging.INFO)
        self._over_unauthenticated = ThrottledLog(logging.INFO)
        self._over_rate = ThrottledLog(logging.INFO)

    def admit(self, host: str, open_now: int) -> str | None:
        """A new connection from ``host`` while ``open_now`` are open: its address key,
        counted (for ``logged_in`` and ``release``), or None if it is to be closed at once."""
        config = self._config
        key = address_key(host)
        if open_now >= config.max_connections:
            self._full(
                "closed a connection from %s at once: %d connections are open, the most "
                "max_connections allows (raise it, and the limit on open files, if the "
                "server has room for more)",
                host,
                open_now,
            )
            return None
        count = self._open.get(key, 0)
        if count >= config.max_connections_per_address:
            self._over_address(
                "closed a connection from %s at once: %s has %d connections open, the most "
                "max_connections_per_address allows (raise it if that many people really "
                "share the address, behind a NAT or a proxy)",
                host,
                key,
                count,
            )
            return None
        unauth = self._unauth.get(key, 0)
        if unauth >= config.max_unauthenticated_per_address:
            self._over_unauthenticated(
                "closed a connection from %s at once: %s has %d connections that have not "
                "logged in, the most max_unauthenticated_per_address allows (raise it if "
                "that many people really log in at once from the address)",
                host,
                key,
                unauth,
            )
            return None
        if not self._took_new(key):
            self._over_rate(
                "closed a connection from %s at once: %s opens new connections faster than "
                "address_connections_per_second allows (%g a second, %d at once)",
                host,
                key,
                config.address_connections_per_second,
                config.address_connection_burst,
            )
            return None
        self._open[key] = count + 1
        self._unauth[key] = unauth + 1
        return key

    def _took_new(self, key: str) -> bool:
        """Take a new connection from ``key``'s allowance, if it has one; the allowances
        that have refilled are forgotten once a minute (memory stays bounded by the
        addresses seen in the last few minutes)."""
        now = self._clock()
        if now >= self._next_sweep:
            self._new.forget_full(now)
            self._next_sweep = now + REPORT_INTERVAL
        return self._new.of(key, now).take(now)

    def logged_in(self, key: str) -> None:
        """A connection from ``key`` has logged in (once per connection)."""
        _decrement(self._unauth, key)

    def release(self, key: str, *, logged_in: bool) -> None:
        """A connection from ``key`` that ``admit`` counted is closed."""
        _decrement(self._open, key)
        if not logged_in:
            _decrement(self._unauth, key)

    def counts(self, host: str) -> tuple[int, int]:
        """Connections open from ``host``'s address, and of those not logged in."""
        key = address_key(host)
        return self._open.get(key, 0), self._unauth.get(key, 0)


def _decrement(counts: dict[str, int], key: str) -> None:
    """One less for ``key``; a count of 0 is forgotten (memory stays bounded by the
    connections open)."""
    left = counts[key] - 1
    if left:
        counts[key] = left
    else:
        del counts[key]
