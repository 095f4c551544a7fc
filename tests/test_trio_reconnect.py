"""The trio client's reconnecting (``Reconnector``) on its own: a fake session whose links log in
at once, trio's MockClock for the back-off (nothing sleeps for real), and no jitter."""

from __future__ import annotations

from typing import Any, cast

import pytest
import trio
import trio.testing

from sealchat.transports.trio_delivery import LinkState
from sealchat.transports.trio_reconnect import STABLE_LINK, Reconnector

FIRST, CAP = 1.0, 100.0
"""The back-off: the first delay and the longest."""


class NoJitter:
    """The reconnector's random source, with the jitter factor always 1."""

    def uniform(self, _low: float, _high: float) -> float:
        return 1.0


class FakeSession:
    """A client whose every new link logs in at once (as ``ChatClient._log_in`` does, it tells
    the reconnector)."""

    def __init__(self) -> None:
        self._closing = False
        self.gave_up_on: Exception | None = None
        self.reconnector: Reconnector | None = None
        self.logins = 0

    async def _open_link(self) -> Any:
        await trio.lowlevel.checkpoint()
        return object()

    async def _log_in(
        self, username: str, password: str, *, register: bool, announce: bool = True
    ) -> str:
        await trio.lowlevel.checkpoint()
        assert self.reconnector is not None
        self.reconnector.logged_in(username, password, announce=announce)
        self.logins += 1
        return username

    async def _abandon_link(self) -> None:
        raise AssertionError("no link fails here")

    async def _give_up(self, reason: str, error: Exception | None = None) -> None:
        raise AssertionError(f"gave up: {reason}")


class FakeDelivery:
    """Keeps the LinkState the reconnector passes on."""

    def __init__(self) -> None:
        self.states: list[LinkState] = []

    async def pass_on(self, state: LinkState) -> None:
        await trio.lowlevel.checkpoint()
        self.states.append(state)


@pytest.fixture
def clock() -> trio.testing.MockClock:
    """Virtual time, jumping ahead whenever every task sleeps: no real waiting."""
    return trio.testing.MockClock(autojump_threshold=0)


class Client:
    """A session logged in with a reconnector: ``lose()`` loses its link and waits for the
    reconnect; ``waits`` are the back-offs it announced (``LinkState.retry_in``)."""

    def __init__(self) -> None:
        self.session = FakeSession()
        self.delivery = FakeDelivery()
        self.reconnector = Reconnector(
            cast("Any", self.session),
            cast("Any", self.delivery),
            reconnect=True,
            backoff=(FIRST, CAP),
        )
        self.reconnector._rng = cast("Any", NoJitter())
        self.session.reconnector = self.reconnector
        self.reconnector.logged_in("alice", "secret", announce=True)  # the first login

    async def lose(self) -> None:
        logins = self.session.logins
        await self.reconnector.recover("connection lost")
        assert self.session.logins == logins + 1
        assert self.delivery.states[-1] == LinkState(connected=True)

    @property
    def waits(self) -> list[float]:
        return [s.retry_in for s in self.delivery.states if not s.connected]


async def test_links_lost_soon_after_their_login_back_off_longer_each_time(
    clock: trio.testing.MockClock,
) -> None:
    client = Client()
    for _ in range(4):
        await client.lose()  # at once, each time
    assert client.waits == [FIRST, 2 * FIRST, 4 * FIRST, 8 * FIRST]


async def test_a_link_up_for_stable_link_seconds_starts_the_back_off_afresh(
    clock: trio.testing.MockClock,
) -> None:
    client = Client()
    for _ in range(3):
        await client.lose()
    assert client.waits == [FIRST, 2 * FIRST, 4 * FIRST]
    await trio.sleep(STABLE_LINK)  # the last link stays up that long
    await client.lose()
    assert client.waits[-1] == FIRST
    await client.lose()  # lost soon again: doubling from there
    assert client.waits[-1] == 2 * FIRST


async def test_a_link_lost_just_before_stable_link_seconds_goes_on_doubling(
    clock: trio.testing.MockClock,
) -> None:
    client = Client()
    for _ in range(3):
        await client.lose()
    await trio.sleep(STABLE_LINK - 1)
    await client.lose()
    assert client.waits[-1] == 8 * FIRST
