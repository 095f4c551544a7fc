"""Reconnecting the trio client once its link is lost: new links with exponential back-off and
jitter, each logging in again, until one does or trying again cannot help."""

from __future__ import annotations

import math
import random
from typing import Final, Protocol

import trio

from sealchat.core.records import ACCOUNT_REMOVED, GENERIC_LOGIN_FAILURE, PASSWORD_CHANGED
from sealchat.transports.pinning import ServerKeyChanged, ServerKeyUnknown
from sealchat.transports.requests import ClientError, LoginFailed
from sealchat.transports.trio_delivery import Delivery, LinkState
from sealchat.transports.trio_link import Link

ENDED_FOR_GOOD: Final = frozenset({PASSWORD_CHANGED, ACCOUNT_REMOVED})
"""The server's goodbyes after which the client does not log in again by itself."""

STABLE_LINK: Final = 60.0
"""Seconds a link must have been logged in for its loss to start the back-off afresh. One lost
sooner (a server that ends each session soon after the login: a full disk, a failing store)
goes on from the delay before it, doubled: else every client would log in again at once, each
time, and every login costs the server a password check and the others a Presence."""


class Session(Protocol):
    """What reconnecting uses of the client: making a link and logging in on it, closing one
    that failed, and giving up (and whether it has: ``gave_up_on``, set on closing too)."""

    _closing: bool
    gave_up_on: Exception | None

    async def _open_link(self) -> Link: ...

    async def _log_in(
        self, username: str, password: str, *, register: bool, announce: bool = True
    ) -> str: ...

    async def _abandon_link(self) -> None: ...

    async def _give_up(self, reason: str, error: Exception | None = None) -> None: ...


class Reconnector:
    """Brings the session of one client back after each lost link (with ``reconnect``),
    telling ``events()`` how it goes (LinkState)."""

    def __init__(
        self,
        session: Session,
        delivery: Delivery,
        *,
        reconnect: bool,
        backoff: tuple[float, float],
    ) -> None:
        self._session = session
        self._delivery = delivery
        self.enabled = reconnect
        self._backoff = backoff
        self._rng = random.Random()  # noqa: S311  (jitter, not secrets)
        self.credentials: tuple[str, str] | None = None
        """What the session logged in with (it logs in again with them)."""
        self.announce = True
        """Whether the session announced itself when it logged in (Login.announce): it logs in
        again the same way, so a quiet session stays quiet after a reconnect."""
        self._delay = backoff[0]
        """The delay the next recovery starts from."""
        self._logged_in_at = -math.inf
        """When the session last logged in (trio's clock)."""
        self._recovering = False
        self._lost_again: tuple[str, str | None] | None = None
        """Why the link of a recovery under way was lost (and its farewell), if it was."""

    def logged_in(self, username: str, password: str, *, announce: bool) -> None:
        """The session has logged in (first or again) with these: remember them and when."""
        self.credentials = (username, password)
        self.announce = announce
        self._logged_in_at = trio.current_time()

    async def recover(self, reason: str, farewell: str | None = None) -> None:
        """Reconnect with exponential back-off and jitter, then log in again (the server
        replays what was missed; the outbox is resent). ``farewell``: why the server ended
        the session, if it said goodbye."""
        if self._recovering:  # a link lost during a recovery: that recovery decides what next
            self._lost_again = (reason, farewell)  # (it may be still using the link: giving
            return  # up here would not stop it logging in again)
        if self._session.gave_up_on is not None:  # a recovery ended for good meanwhile
            return
        if await self._gave_up_on_the_account(farewell):
            return
        if not self.enabled or self.credentials is None:
            await self._session._give_up(reason)
            return
        if trio.current_time() - self._logged_in_at >= STABLE_LINK:
            self._delay = self._backoff[0]
        self._recovering = True
        try:
            await self._reconnect_loop(reason, self.credentials)
        finally:
            self._recovering = False

    async def _reconnect_loop(self, reason: str, credentials: tuple[str, str]) -> None:
        session = self._session
        delay, cap = self._delay, self._backoff[1]
        floor = 0.0  # a throttled login's retry_after: the jitter never brings the wait below it
        while not session._closing and session.gave_up_on is None:
            wait = max(floor, delay * self._rng.uniform(0.5, 1.5))
            await self._delivery.pass_on(LinkState(connected=False, reason=reason, retry_in=wait))
            await trio.sleep(wait)
            if session._closing:  # closed during the back-off
                return
            self._lost_again = None
            link: Link | None = None
            try:
                link = await session._open_link()
                if session._closing:  # closed while connecting: that link is not wanted
                    await session._abandon_link()
                    return
                await session._log_in(*credentials, register=False, announce=self.announce)
            except (
                ClientError,
                OSError,
                trio.TooSlowError,
                ServerKeyChanged,
                ServerKeyUnknown,
            ) as exc:
                await session._abandon_link()
                if session._closing:  # closed while logging in: whatever the answer was
                    return
                # The server may have said goodbye on this link: its reader notes the farewell
                # as it reads it, before the calls on the link fail (no need to wait for the
                # reader), but the link's end is ignored once abandoned: so it is seen here.
                if link is not None and await self._gave_up_on_the_account(link.farewell):
                    return
                reason = str(exc)
                floor = 0.0
                wrong = isinstance(exc, LoginFailed) and str(exc) == GENERIC_LOGIN_FAILURE
                if isinstance(exc, LoginFailed) and exc.retry_after and not wrong:
                    # Throttled: come back later. (A wrong password can carry the block it
                    # brought about: trying it again would only lengthen that block.)
                    floor = exc.retry_after
                    delay = max(delay, floor)
                elif isinstance(exc, LoginFailed | ServerKeyChanged | ServerKeyUnknown):
                    await session._give_up(reason, exc)  # trying again won't help
                    return
                else:
                    delay = min(cap, delay * 2)
                continue
            if session._closing:  # closed while the login was answered: aclose() ends the link
                return
            delay = self._delay = min(cap, delay * 2)  # the next loss may come soon
            await self._delivery.pass_on(LinkState(connected=True))
            if self._lost_again is None:
                return
            # The new link is lost already (maybe while LinkState waited for room on events()),
            # and its reader's recover() left it to this loop: round again.
            reason, farewell = self._lost_again
            if await self._gave_up_on_the_account(farewell):
                return

    async def _gave_up_on_the_account(self, farewell: str | None) -> bool:
        """Give up if the server ended the session because the account was removed or its
        password changed (protocol §9.12): logging in again could only fail, and count as a
        failed login of this address. Whether it did."""
        if farewell not in ENDED_FOR_GOOD:
            return False
        await self._session._give_up(farewell, LoginFailed(farewell))
        return True
