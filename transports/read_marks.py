"""A client's view of its user's read markers (protocol §9.14): the highest position known in
each conversation, from the server or set here, and those set here that the server may not
have yet (a connection lost as they went): sent once more, after the next login's listing
if it does not have them."""

from __future__ import annotations

from sealchat.core import LocalProtocolError, ReadMarkers, ReadUpTo
from sealchat.core.codec import encode_record
from sealchat.core.hub.names import user_key
from sealchat.core.records import READ_MARKERS
from sealchat.transports.requests import MAX_REPLY_ITEMS, ClientError

MAX_KNOWN = MAX_REPLY_ITEMS
"""Conversations whose markers the server may tell a client of (100,000): a real user is in
far fewer, and a server that names more (a broken or hostile one) would otherwise grow the
client without end. The markers of any more are ignored; those the user sets here are not."""

Key = tuple[str, str]
"""A conversation: (room, "") or ("", the peer's case-folded name)."""


def conversation_key(room: str, peer: str) -> Key:
    """The key of ``room`` or of the direct conversation with ``peer`` (exactly one set)."""
    if bool(room) == bool(peer):
        raise ClientError("name exactly one of a room or a peer")
    return (room, "") if room else ("", user_key(peer))


def read_up_to(up_to: int, room: str = "", peer: str = "") -> ReadUpTo:
    """The ReadUpTo saying the user read ``room`` (or the conversation with ``peer``) up to
    ``up_to``, checked as every receiver checks it: ClientError for one no server could take
    (an id out of bounds, a name too long). A marker kept to be sent again must be one that
    can go: one that could not would fail every later login's resending."""
    conversation_key(room, peer)
    record = ReadUpTo(up_to=up_to, room=room, peer=peer)
    try:
        encode_record(record)
    except LocalProtocolError as exc:
        raise ClientError(f"cannot mark this read: {exc}") from None
    return record


class ReadMarks:
    """Read markers known to one client, over all its links."""

    def __init__(self) -> None:
        self.known: dict[Key, int] = {}
        """The highest marker known in each conversation."""
        self._unconfirmed: dict[Key, ReadUpTo] = {}
        """Markers set here that no word of the server has covered since."""
        self._pending: dict[Key, ReadUpTo] = {}
        """Those of them kept at the last login, to be sent again once the listing asked for
        then has come, if it does not cover them."""
        self._resent: dict[Key, ReadUpTo] = {}
        """Those sent again after a login's listing: sent once again at most (a marker the
        server refused would otherwise go after every login)."""
        self._listed: set[Key] | None = None
        """The conversations the pages of a login's listing named so far (None: no listing
        under way)."""

    def get(self, room: str = "", peer: str = "") -> int:
        """The marker known in ``room`` or with ``peer`` (0: nothing read there)."""
        return self.known.get(conversation_key(room, peer), 0)

    def mark(
        self, up_to: int, room: str = "", peer: str = "", *, features: tuple[str, ...]
    ) -> ReadUpTo | None:
        """The user read the conversation up to ``up_to``: the ReadUpTo to send, or None if
        the server (its ``features``) keeps no read markers, or the marker known is there
        already. ClientError, keeping nothing, if no server could take it (see
        ``read_up_to``), whatever the server."""
        record = read_up_to(up_to, room, peer)
        if READ_MARKERS not in features:
            return None
        key = conversation_key(room, peer)
        if up_to <= self.known.get(key, 0):
            return None
        self.known[key] = up_to
        self._unconfirmed[key] = record
        return record

    def heard(self, record: ReadUpTo | ReadMarkers) -> list[ReadUpTo]:
        """The server said where markers are (another session's, or the listing); one that
        names no conversation, or two, is ignored. What to send now: after the last page of
        a login's listing, the markers kept at that login that the server does not have."""
        markers = record.markers if isinstance(record, ReadMarkers) else (record,)
        for marker in markers:
            if bool(marker.room) == bool(marker.peer):
                continue
            key = conversation_key(marker.room, marker.peer)
            if key not in self.known and len(self.known) >= MAX_KNOWN:
                continue
            if isinstance(record, ReadMarkers) and self._listed is not None:
                self._listed.add(key)
            if marker.up_to > self.known.get(key, 0):
                self.known[key] = marker.up_to
            sent = self._unconfirmed.get(key)
            if sent is not None and sent.up_to <= marker.up_to:
                del self._unconfirmed[key]
        if not isinstance(record, ReadMarkers) or record.more:
            return []
        self._forget_rooms_unlisted()
        due = {k: r for k, r in self._pending.items() if self._unconfirmed.get(k) is r}
        self._pending = {}
        for key, sent in self._resent.items():  # sent again once already: given up
            if due.get(key) is sent:
                del due[key], self._unconfirmed[key]
        self._resent = due
        return list(due.values())

    def _forget_rooms_unlisted(self) -> None:
        """At the end of a login's listing, which holds the user's marker in every room it is
        in (protocol §9.14): a room with a marker here that it does not name has none on the
        server (left on another device while this client was offline, which never saw the
        RoomLeft), unless the marker was set here and the server has not had it yet. Direct
        conversations are not checked: a listing holds only the most recent ones."""
        listed, self._listed = self._listed, None
        if listed is None:
            return
        for key in [k for k in self.known if k[0] and k not in listed]:
            if key not in self._unconfirmed:
                del self.known[key]

    def refused_as_not_a_member(self) -> None:
        """The server refused a marker for a room the user is not in (``not_member``): one
        of those sent again after a login's listing, which did not name them (left on
        another device while this client was offline, which never saw the RoomLeft). The
        refusal does not say which room: all of them are forgotten, so none stays here
        above the server's (one the server took is told again at the next read there)."""
        for key in [k for k in self._resent if k[0]]:
            self.known.pop(key, None)
            self._unconfirmed.pop(key, None)
            del self._resent[key]

    def left(self, room: str) -> None:
        """The user left ``room``: the server deleted its marker there (protocol §9.14), so
        none is known any more, and none is sent again."""
        key = (room, "")
        self.known.pop(key, None)
        self._unconfirmed.pop(key, None)
        self._pending.pop(key, None)
        self._resent.pop(key, None)

    def after_login(self, *, listing: bool = True) -> list[ReadUpTo]:
        """What to send after a login: with a ``listing`` of the markers asked for, nothing
        yet: the markers set here that the server may not have are kept, and those it has
        not (``heard``) go after the listing, so that a reconnect does not spend the user's
        allowance of markers (protocol §9.14) on those it has. Without a listing to follow
        (a client that does not ask for the markers), nothing would ever cover them: they go
        now, this once, and are forgotten."""
        if not listing:
            sent, self._unconfirmed, self._resent = self._unconfirmed, {}, {}
            return list(sent.values())
        self._pending = dict(self._unconfirmed)
        self._listed = set()
        return []
