"""Read markers: how far each user has read each of its conversations, shared by its sessions
(protocol §9.14)."""

from __future__ import annotations

from sealchat.core import limits
from sealchat.core.hub.effects import Deliver, Effect
from sealchat.core.hub.outgoing import pages, reply
from sealchat.core.hub.ratelimit import Allowances
from sealchat.core.hub.roster import Roster
from sealchat.core.hub.session import Session
from sealchat.core.hub.store import Store
from sealchat.core.records import READ_REF, Error, ReadMarker, ReadMarkers, ReadUpTo


class ReadMarkersKept:
    """The ReadUpTo and ListReadMarkers records of sessions."""

    def __init__(self, store: Store, roster: Roster, allowances: Allowances) -> None:
        self.store = store
        self._roster = roster
        self._allowances = allowances
        """Each user's allowance of ReadUpTo records."""

    def read_up_to(self, state: Session, record: ReadUpTo, now: float) -> list[Effect]:
        """Raise the user's marker in a conversation it is in (never beyond the newest message
        on the server: later ones are not read yet), and tell its other sessions that asked."""
        if not self._allowances.of(state.key, now).take(now):
            return []  # a client sends a higher marker at its next read
        where = self._roster.conversation(state, record.room, record.peer, READ_REF)
        if isinstance(where, Error):
            return [reply(state, where)]
        if where.peer_key and not self.store.direct_history(state.key, where.peer_key, 0, 1):
            # Nothing to read there: else one user could store a marker (a row) for every
            # account on the server, naming users it never wrote with.
            return []
        up_to = min(record.up_to, self.store.last_message_id())
        if not self.store.raise_read_marker(state.key, where.room, where.peer_key, up_to):
            return []
        notice = ReadUpTo(up_to=up_to, room=where.room, peer=where.peer)
        sessions = self._roster.sessions
        others = tuple(
            s
            for s in self._roster.online.get(state.key, ())
            if s != state.id and sessions[s].read_markers
        )
        return [Deliver(others, notice)] if others else []

    def list_markers(self, state: Session) -> list[Effect]:
        """The user's markers, in pages; the session gets its other sessions' from now on."""
        state.read_markers = True
        markers = [
            ReadMarker(up_to=up_to, room=room, peer=peer)
            for room, peer, up_to in self.store.read_markers(state.key, limits.MAX_LIST)
        ]
        return [reply(state, ReadMarkers(markers=page, more=more)) for page, more in pages(markers)]
