"""What ``sealchat chat`` shows on a terminal is read: it tells the server (protocol §9.14),
so that the user's other devices stop counting those messages as unread. Not the catch-up
after a login (or a reconnect): a backlog scrolls by faster than anyone reads it, and stays
unread where the user reads it later."""

from __future__ import annotations

from contextlib import suppress

import trio

from sealchat.core import Message
from sealchat.core.hub.names import user_key
from sealchat.transports.requests import ClientError, ends_replay
from sealchat.transports.trio_client import ChatClient, LinkState

READS_TOLD_EVERY = 1.0
"""Seconds between two tellings of what was read: one ReadUpTo per conversation read
meanwhile, however many messages it showed (the server takes a few a second)."""

Conversation = tuple[str, str]
"""A room ``(room, "")``, or the direct conversation with a user ``("", name)``."""


class ReadsShown:
    """The newest message shown in each conversation, to tell the server as read."""

    def __init__(self, me: str) -> None:
        self._me = user_key(me)
        self._to_tell: dict[Conversation, int] = {}
        self._caught_up = False
        """Whether the replay of what was missed has ended (until the link is lost)."""

    def follow(self, event: object) -> None:
        """Note where the catch-up stands from ``event``: it ends with the replay's last
        page, and starts again when the link is lost (the next login replays)."""
        if ends_replay(event) and not event.more:
            self._caught_up = True
        elif isinstance(event, LinkState) and not event.connected:
            self._caught_up = False

    def shown(self, message: Message) -> None:
        """``message`` was shown to the user (as read, if the catch-up has ended)."""
        if not self._caught_up:
            return
        if message.room:
            where = (message.room, "")
        else:  # with the other user: whom it went to if the user sent it
            mine = user_key(message.sender) == self._me
            where = ("", message.to if mine else message.sender)
        self._to_tell[where] = max(self._to_tell.get(where, 0), message.id)

    async def tell_every_while(self, client: ChatClient) -> None:
        """Tell what was read every READS_TOLD_EVERY seconds, until cancelled."""
        while True:
            await trio.sleep(READS_TOLD_EVERY)
            await self.tell(client)

    async def tell(self, client: ChatClient) -> None:
        """Tell the server how far each conversation shown since the last telling was read
        (only what raises the marker goes: see ``ChatClient.mark_read``)."""
        while self._to_tell:
            (room, peer), up_to = self._to_tell.popitem()
            with suppress(ClientError):  # lost with the link: sent again after the reconnect
                await client.mark_read(up_to, room=room, peer=peer)
