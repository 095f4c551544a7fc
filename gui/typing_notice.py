"""Our typing notice: the conversation shown hears that we are typing while keys change the
draft, and that we stopped after a pause; the notices of others expire."""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING

import trio

from sealchat.transports.requests import ClientError

if TYPE_CHECKING:
    from sealchat.gui.app import App

TYPING_REFRESH = 3.0
TYPING_IDLE = 4.0


class TypingNotice:
    """Where our typing notice went, and until when it lasts."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.vm = app.vm
        self._sent = 0.0
        self._deadline = 0.0
        self._to: tuple[str, str] | None = None
        """(room, user) our typing notice went to, while it is on."""

    async def tick(self) -> None:
        """Expire typing notices and stop our own typing notice after a pause."""
        while True:
            await trio.sleep(0.5)
            now = time.time()
            self.app.redraw(self.vm.expire_typing(now))
            if self._deadline and now >= self._deadline:
                self.stop()

    def user_is_typing(self) -> None:
        """A key changed the draft: the conversation shown hears we are typing (refreshed
        every TYPING_REFRESH s), until a pause of TYPING_IDLE s."""
        self.follow()
        now = time.time()
        self._deadline = now + TYPING_IDLE
        if now - self._sent > TYPING_REFRESH:
            self._sent = now
            self._to = self.vm.conversation(self.vm.current).target
            self.app.spawn(self._tell, True, self._to)

    def follow(self) -> None:
        """Stop our typing notice if it went to a conversation no longer shown."""
        if self._to not in (None, self.vm.conversation(self.vm.current).target):
            self.stop()

    def stop(self, *, tell: bool = True) -> None:
        """End our typing notice, telling the conversation it went to (if ``tell``)."""
        if tell and self._to is not None:
            self.app.spawn(self._tell, False, self._to)
        self._to = None
        self._deadline = 0.0
        self._sent = 0.0

    async def _tell(self, active: bool, target: tuple[str, str]) -> None:
        """Tell conversation ``target`` (room, user) whether we are typing: best effort, a
        notice that cannot go (while reconnecting) is no error to show."""
        room, user = target
        if self.app.controller.client is not None:
            with contextlib.suppress(ClientError):
                await self.app.controller.client.typing(active, room=room, to=user)
