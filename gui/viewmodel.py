"""What the desktop client shows, as plain data: rooms, transcript, typing, transfers, theme.

The view-model consumes client events and user actions and says what changed; the widgets
only draw it. It has no tkinter, no trio and no clock (``now`` is passed in), so every feature
is tested without a display.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Collection, Iterable, Mapping
from enum import Enum

from sealchat.core import (
    Error,
    FileInfo,
    HistoryEnd,
    MemberInfo,
    Membership,
    Message,
    MessageAck,
    OnlineUsers,
    Presence,
    ReadMarker,
    ReadMarkers,
    ReadUpTo,
    RoomInfo,
    RoomJoined,
    RoomLeft,
    Typing,
)
from sealchat.core.limits import MAX_PASSWORD
from sealchat.core.records import PASSWORD_REF, READ_REF, TYPING_REF
from sealchat.core.sizes import counted
from sealchat.gui.conversation import (
    Conversation,
    Remembered,
    Row,
    TranscriptUpdate,
    direct_key,
    room_key,
)
from sealchat.gui.text_helpers import friendly
from sealchat.gui.transfer_state import Transfer, TransferState
from sealchat.transports.requests import MessageTooLong, check_text, ends_replay
from sealchat.transports.shown_text import escaped
from sealchat.transports.trio_client import LinkState

TYPING_SHOWN_FOR = 300.0
"""A safety net: a typing notice disappears this long after it started even if its stop never
came. The server relays a notice only when it starts and when it ends (also when it expires
or the typist goes offline), never its refreshes, so the stop is what normally ends it."""


class Change(Enum):
    """Parts of the window to redraw."""

    CONVERSATIONS = "conversations"
    TRANSCRIPT = "transcript"
    TYPING = "typing"
    PEOPLE = "people"
    TRANSFERS = "transfers"
    BANNER = "banner"
    THEME = "theme"
    TITLE = "title"
    BELL = "bell"
    """A message came unread while the window is not focused: the bell rings (never for the
    count in the title going down: messages read elsewhere, a room left)."""
    ERROR = "error"
    INPUT = "input"
    """Texts that did not go (``ViewModel.returned``) go back into the input box."""


class ViewModel:
    """The state of the main window."""

    def __init__(self, *, theme: str = "dark") -> None:
        self.theme = theme if theme in ("dark", "light") else "dark"
        self.transfers: dict[int, Transfer] = {}
        self.focused = True
        self._next_transfer = 1
        self.unconfirmed: dict[str, str] = {}
        """The text of each message sent but not yet stored by the server, by client id."""
        self.returned: list[str] = []
        """Texts that did not go, for the input box."""
        self._start_session()

    def _start_session(self) -> None:
        """What one login's session shows, as before it starts."""
        self.me = ""
        self.conversations: dict[str, Conversation] = {}
        self.current = room_key("general")
        self.online: set[str] = set()
        self.connected = True
        """Whether the link is up: while it is down, nobody's presence is known (not even
        this user's, to the others), so nobody is shown online."""
        self._online_listed = True
        """Whether the last ``OnlineUsers`` record ended its list (the next one starts anew)."""
        self.members: dict[str, list[MemberInfo]] = {}
        self.typing: dict[str, dict[str, float]] = {}
        self.banner = ""
        self._retry_at: float | None = None
        """When the client tries to reconnect next, while the banner counts down to it."""
        self.error = ""
        self._link_error = ""
        """The error shown, if it says the connection was lost: it goes when the link is back."""
        self.leaving: set[str] = set()
        """The rooms (keys) the user asked to leave, until the server answers: they cannot
        be left again meanwhile (a second leave would be refused, as not in the room)."""
        self._missed: dict[str, set[int]] = {}
        """The ids of the messages that came unread while the window was not focused, by
        conversation key: the count in the window's title."""
        self._caught_up = False
        """Whether the replay of what was missed since the last session (or the link lost)
        has ended: before, a message may have been read on another device (its read marker
        comes after the replay), so it rings no bell."""
        self._markers: dict[str, int] = {}
        """How far the user read each conversation on any of its devices, as the server said
        (a conversation not in the sidebar yet takes its marker when it appears)."""
        self.reads_to_tell: dict[str, int] = {}
        """How far the user read each conversation here since the server was last told (the
        controller tells it now and then, so a replay read as it comes is told once)."""
        self.updates: list[TranscriptUpdate] = []
        self._remembered: dict[str, Remembered] = {}
        """What the last run left of the conversations not in the sidebar yet: each takes
        its part when it appears (see :meth:`restore_unread`)."""
        self.unread_changed = False
        """Whether what is unread changed since it was last saved (the saver resets it)."""
        self.conversation(room_key("general"))

    # --- conversations --------------------------------------------------------------------

    def conversation(self, key: str) -> Conversation:
        found = self.conversations.get(key)
        if found is None:
            title = key[1:]
            found = self.conversations[key] = Conversation(key, title)
            self._take_remembered(found)
            self._read(found, self._markers.get(key, 0), tell=False)
        return found

    def _take_remembered(self, conversation: Conversation) -> None:
        """Give ``conversation`` what the last run left of it, if anything (once)."""
        remembered = self._remembered.pop(conversation.key, None)
        if remembered is not None:
            conversation.title = remembered.title
            conversation.read_up_to = max(conversation.read_up_to, remembered.read_up_to)
            conversation.unread_ids |= remembered.unread
            conversation.remembered_newest = max(remembered.unread, default=0)

    def restore_unread(self, remembered: Mapping[str, Remembered]) -> set[Change]:
        """At login, what the last run of this account left: each conversation with unread
        messages shows its count (those arriving again are not counted twice, by id); the
        others take how far they were read when they appear."""
        self._remembered = dict(remembered)
        for key in [k for k in self.conversations if k in remembered]:  # #general, at least
            self._take_remembered(self.conversations[key])
        for key in [k for k, r in remembered.items() if r.unread]:
            self.conversation(key)
        return {Change.CONVERSATIONS}

    def unread_to_remember(self) -> dict[str, Remembered]:
        """What to keep for the next run: each conversation's read position and the ids of
        the messages of others still unread there (also those not shown yet)."""
        kept = dict(self._remembered)
        for key, conversation in self.conversations.items():
            unread = self._unread_above(conversation, conversation.read_up_to)
            if unread or conversation.read_up_to:
                kept[key] = Remembered(conversation.title, conversation.read_up_to, unread)
        return kept

    def logged_in(self, username: str) -> set[Change]:
        self.me = username
        self.error = ""
        self._caught_up = False
        return {Change.TITLE, Change.CONVERSATIONS, Change.ERROR}

    def logged_out(self, *, by_user: bool = False) -> set[Change]:
        """The session ended: its conversations, people and banners go, as before a login.
        If it ended by itself (the client gave up reconnecting), the theme and the transfers
        stay, and the messages the server never stored go back into the input box. If the
        user logged out (``by_user``), nothing of theirs stays for the next user: the
        transfers go (those still running were cancelled) and so do those messages (the
        user was warned, see :meth:`logout_warning`)."""
        self._start_session()
        self.updates.append(TranscriptUpdate(redraw=True))
        changes = {
            Change.INPUT,
            Change.TITLE,
            Change.CONVERSATIONS,
            Change.TRANSCRIPT,
            Change.PEOPLE,
            Change.TYPING,
            Change.BANNER,
            Change.ERROR,
        }
        if by_user:
            self.returned.clear()
            self.transfers.clear()
            changes.add(Change.TRANSFERS)
        else:
            self.returned += self.unconfirmed.values()
        self.unconfirmed.clear()
        return changes

    def logout_warning(self, doing: str = "log out") -> str:
        """What ending the session now (``doing`` it: logging out, closing the window) would
        lose, as a question to confirm it ("" if nothing: no transfer is running and every
        message sent has reached the server)."""
        running = sum(t.state is TransferState.RUNNING for t in self.transfers.values())
        lost = []
        if running:
            lost.append(f"{counted(running, 'file transfer')} still running will be stopped")
        if self.unconfirmed:
            messages = counted(len(self.unconfirmed), "message")
            lost.append(f"{messages} not yet received by the server will be lost")
        if not lost:
            return ""
        return f"If you {doing} now, {' and '.join(lost)}. {doing.capitalize()} anyway?"

    def rooms_listed(
        self, rooms: list[RoomInfo], *, known: Collection[str] | None = None
    ) -> set[Change]:
        """The server's full room list (asked for after login and each reconnect): the rooms
        this user is in, also those joined in earlier sessions or from elsewhere, appear in
        the sidebar; those it left meanwhile (from another device) go, as after a RoomLeft.
        Only the conversations of ``known`` (default: all) can go: those there when the list
        was asked for, not a room joined while it came."""
        joined = {room_key(info.name) for info in rooms if info.joined}
        for key in joined:
            self.conversation(key)
        self._forget_remembered(lambda key: key.startswith("#"))  # rooms no longer joined
        changes = {Change.CONVERSATIONS}
        known = self.conversations.keys() if known is None else known
        left = [c.title for c in self.conversations.values() if c.is_room and c.key in known]
        for room in left:
            if room_key(room) not in joined:
                changes |= self.room_left(room)
        return changes

    def select(self, key: str) -> set[Change]:
        """Show conversation ``key``: it is read up to its newest message if the window is
        focused (else when the user comes back to it: one shown at login, or instead of a
        room left elsewhere, is not read by a user who is away)."""
        conversation = self.conversation(key)
        self.current = key
        if self.focused:
            self._read(conversation, conversation.latest)
        self.updates.append(TranscriptUpdate(redraw=True))
        return {Change.CONVERSATIONS, Change.TRANSCRIPT, Change.TYPING, Change.PEOPLE}

    def _direct(self, user: str) -> Conversation:
        """The direct conversation with ``user``, named as ``user`` spells it."""
        conversation = self.conversation(direct_key(user))
        conversation.title = user
        return conversation

    def open_direct(self, user: str) -> set[Change]:
        return self.select(self._direct(user).key)

    def directs_listed(self, users: Iterable[str]) -> set[Change]:
        """The users this user has direct conversations with, as the server lists them at
        login (the most recent first): each one not in the sidebar yet appears there, after
        those that are, with nothing unread; shown, it loads its history as one opened from
        the People list does."""
        new = [user for user in users if direct_key(user) not in self.conversations]
        for user in new:
            self._direct(user)
        return {Change.CONVERSATIONS} if new else set()

    def sorted_conversations(self) -> list[Conversation]:
        """Rooms first, by name; then direct conversations, the latest first (by their newest
        message, also one remembered unread: ids grow with time), those with none yet in the
        order they came, which for those named at login is the server's, the latest first."""
        rooms = [c for c in self.conversations.values() if c.is_room]
        rooms.sort(key=lambda c: c.title.lower())
        return rooms + sorted(self._directs(), key=lambda c: -c.latest)

    def _directs(self) -> list[Conversation]:
        return [c for c in self.conversations.values() if not c.is_room]

    def _latest_direct(self) -> str:
        """The key of the direct conversation at the top of the sidebar ("" if none)."""
        latest = max(self._directs(), key=lambda c: c.latest, default=None)
        return "" if latest is None else latest.key

    def current_messages(self) -> list[Message]:
        conversation = self.conversation(self.current)
        return [conversation.messages[i] for i in conversation.ids]

    def current_rows(self) -> list[Row]:
        """The transcript shown: its messages, and a separator above the first of each day."""
        return self.conversation(self.current).rows()

    # --- events ---------------------------------------------------------------------------

    def apply(self, event: object, now: float) -> set[Change]:
        """Take in one client event; returns what to redraw."""
        match event:
            case Message():
                return self._message(event)
            case Typing():
                return self._typing(event, now)
            case Presence(user=user, online=online):
                (self.online.add if online else self.online.discard)(user)
                if not online:
                    for typists in self.typing.values():
                        typists.pop(user, None)
                return {Change.PEOPLE, Change.TYPING}
            case OnlineUsers(users=users, more=more):
                # Each login lists who is online afresh: whoever left meanwhile is not.
                if self._online_listed:
                    self.online.clear()
                self.online.update(users)
                self._online_listed = not more
                return {Change.PEOPLE}
            case RoomJoined(room=room):
                self.conversation(room_key(room))
                return {Change.CONVERSATIONS}
            case RoomLeft(room=room):
                return self.room_left(room)
            case Membership(room=room, user=user, joined=joined):
                people = self.members.setdefault(room, [])
                people[:] = [m for m in people if m.name != user]
                if joined:
                    people.append(MemberInfo(name=user, online=user in self.online))
                return {Change.PEOPLE}
            case LinkState(connected=False, retry_in=wait, reason=reason):
                self._retry_at = now + wait if wait else None
                self.banner = "" if wait else f"Disconnected: {reason}"
                self.count_down(now)
                self.typing.clear()  # their stops cannot reach us any more
                self._presence_unknown()
                self._caught_up = False  # the reconnect's login replays what was missed
                for conversation in self.conversations.values():
                    conversation.link_lost()
                return {Change.BANNER, Change.TYPING, Change.PEOPLE, *self._transfers_wait(True)}
            case LinkState(connected=True):
                # Who is online comes again with the login (OnlineUsers), and the members of
                # the room shown are asked for again (the controller's catch-up).
                self.connected = True
                self.banner = ""
                self._retry_at = None
                changes = {Change.BANNER, Change.PEOPLE, *self._transfers_wait(False)}
                if self.error and self.error == self._link_error:
                    self.error = ""
                    changes.add(Change.ERROR)
                return changes
            case Error(ref=ref) if ref in (TYPING_REF, READ_REF, PASSWORD_REF):
                # Typing notices and read markers are best effort; a password change
                # refused is said in its dialog.
                return set()
            case Error(code="not_member", ref=ref) if ref not in self.unconfirmed:
                # A page or the members of a room, asked for as it was shown and answered
                # after it was left: news of nothing (the controller shows a page refused for
                # a room still in the sidebar).
                return set()
            case ReadUpTo():
                return self._read_elsewhere((event,))
            case ReadMarkers(markers=markers):
                return self._read_elsewhere(markers)
            case Error(ref=ref, detail=detail, code=code):
                return self.not_sent(ref, detail or code)  # just shown, if not a message's
            case MessageAck(client_id=client_id):
                self.unconfirmed.pop(client_id, None)
                return set()
            case HistoryEnd(more=False) if ends_replay(event):  # the login's replay has ended
                self._caught_up = True
                return set()
        return set()

    def count_down(self, now: float) -> set[Change]:
        """While the link is down, the banner says in how many seconds the client tries to
        reconnect, as of ``now`` (then that it is trying), and how many messages typed wait
        to be sent."""
        if self._retry_at is None:
            return set()
        left = self._retry_at - now
        banner = "Connection lost — reconnecting" + (f" in {left:.0f} s…" if left >= 0.5 else "…")
        if self.unconfirmed:
            banner += f" ({counted(len(self.unconfirmed), 'message')} waiting to be sent)"
        if banner == self.banner:
            return set()
        self.banner = banner
        return {Change.BANNER}

    def _presence_unknown(self) -> None:
        """The link is down: who is online is unknown until the next login lists them."""
        self.connected = False
        self.online.clear()
        self._online_listed = True  # a list cut short by the drop is not continued

    def room_left(self, room: str) -> set[Change]:
        """This user is no longer in ``room`` (never #general, which everyone stays in), left
        in this window or elsewhere: its conversation goes with its unread count, members
        and typists, and if it was shown, #general is. Told twice (the answer to our leave,
        then its event), the second time changes nothing."""
        key = room_key(room)
        if key == room_key("general"):
            return set()
        self.members.pop(room, None)
        self.typing.pop(key, None)
        self.conversations.pop(key, None)
        self._markers.pop(key, None)  # the server forgets it too (protocol §9.14)
        self.reads_to_tell.pop(key, None)
        self._forget_remembered(lambda other: other == key)
        self.unread_changed = True
        changes = {Change.TITLE} if self._missed.pop(key, None) else set()
        if self.current == key:
            return changes | self.select(room_key("general"))
        return changes | {Change.CONVERSATIONS}

    @property
    def can_leave(self) -> bool:
        """Whether the conversation shown is a room, which the user can ask to leave (the
        server refuses #general, saying why), unless already asked and not yet answered."""
        return self.conversation(self.current).is_room and self.current not in self.leaving

    def asked_to_leave(self, key: str, *, asked: bool = True) -> set[Change]:
        """The user asked to leave the room ``key``; with ``asked`` False, the server
        answered (whatever it said)."""
        if asked:
            self.leaving.add(key)
        else:
            self.leaving.discard(key)
        return {Change.CONVERSATIONS}

    def _mine(self, message: Message) -> bool:
        return message.sender.lower() == self.me.lower()

    def _forget_remembered(self, which: Callable[[str], bool]) -> None:
        """Drop what the last run left of the conversations whose keys are ``which``."""
        self._remembered = {k: r for k, r in self._remembered.items() if not which(k)}

    def _read(self, conversation: Conversation, up_to: int, *, tell: bool = True) -> None:
        """The user has seen ``conversation`` up to id ``up_to`` (here, to be told to the
        server if ``tell``; or on another device): what others wrote above it is unread."""
        if up_to > conversation.read_up_to:
            conversation.read_up_to = up_to
            self._set_unread(conversation, self._unread_above(conversation, up_to))
            if tell:
                self.reads_to_tell[conversation.key] = up_to

    def _read_elsewhere(self, markers: Iterable[ReadMarker | ReadUpTo]) -> set[Change]:
        """The user read these conversations up to these ids on another device (or before
        this login): what others wrote up to there is read here too, in the sidebar and in
        the window's title."""
        changes: set[Change] = set()
        for marker in markers:
            if bool(marker.room) == bool(marker.peer):
                continue  # names no conversation (a server's mistake)
            key = room_key(marker.room) if marker.room else direct_key(marker.peer)
            if marker.up_to <= self._markers.get(key, 0):
                continue
            self._markers[key] = marker.up_to
            conversation = self.conversations.get(key)
            if conversation is not None:
                unread = conversation.unread
                self._read(conversation, marker.up_to, tell=False)
                if conversation.unread != unread:
                    changes.add(Change.CONVERSATIONS)
            missed = self._missed.get(key, set())
            read = {i for i in missed if i <= marker.up_to}
            if read:
                missed -= read
                if not missed:
                    del self._missed[key]
                changes.add(Change.TITLE)
        return changes

    def _new_unread(self, conversation: Conversation, message: Message) -> bool:
        """Whether ``message`` is unread in ``conversation`` and not counted yet: another's,
        above where the user read (a message remembered unread may come again)."""
        return not (
            self._mine(message)
            or message.id <= conversation.read_up_to
            or message.id in conversation.unread_ids
        )

    def _unread_above(self, conversation: Conversation, up_to: int) -> frozenset[int]:
        """The ids of the messages of others above ``up_to``: shown, or remembered unread."""
        above = conversation.ids[bisect.bisect_right(conversation.ids, up_to) :]
        shown = (i for i in above if not self._mine(conversation.messages[i]))
        return frozenset(shown).union(i for i in conversation.unread_ids if i > up_to)

    def _set_unread(self, conversation: Conversation, unread: frozenset[int]) -> None:
        if unread != conversation.unread_ids:
            conversation.unread_ids = set(unread)
            self.unread_changed = True

    def _message(self, message: Message) -> set[Change]:
        mine = self._mine(message)
        if message.room:
            key = room_key(message.room)
            title = message.room
        else:
            title = message.to if mine else message.sender
            key = direct_key(title)
        # The sidebar changes only when a conversation appears, is renamed, counts unread
        # messages or goes to the top: not for each message of a replayed backlog.
        new = key not in self.conversations
        latest_direct = "" if message.room else self._latest_direct()
        conversation = self.conversation(key)
        updates = conversation.add(message)
        if updates is None:
            return set()
        moved = not message.room and latest_direct != key and message.id == conversation.newest
        changes = {Change.CONVERSATIONS} if new or moved or conversation.title != title else set()
        conversation.title = title
        unread = self._new_unread(conversation, message)
        self.typing.get(key, {}).pop(message.sender, None)
        if key == self.current:
            self.updates += updates
            changes |= {Change.TRANSCRIPT, Change.TYPING}
            if self.focused:
                self._read(conversation, message.id)
        elif unread:
            conversation.unread_ids.add(message.id)
            self.unread_changed = True
            changes.add(Change.CONVERSATIONS)
        if unread and not self.focused:
            self._missed.setdefault(key, set()).add(message.id)
            changes |= {Change.TITLE, Change.BELL} if self._caught_up else {Change.TITLE}
        return changes

    def history_loaded(self, key: str, messages: list[Message], more: bool) -> set[Change]:
        """A page of the history of ``key`` arrived (oldest first), inserted by id. As a live
        message, it is read (up to its newest message) only if it is the conversation shown
        and the window is focused; otherwise what others wrote there above where the user
        read stays unread, counted in the sidebar if it is not shown, until the user shows
        it or comes back to the window. Only a page that reaches its oldest message shown
        (or finds none) says whether there are older ones: one after a link drop may fill a
        gap above them."""
        conversation = self.conversation(key)
        if not (messages and conversation.ids) or messages[0].id <= conversation.oldest:
            conversation.more_history = more
            conversation.first_page_loaded = True
        changes: set[Change] = set()
        unread = conversation.unread
        shown = key == self.current
        for message in messages:
            new_unread = self._new_unread(conversation, message)
            updates = conversation.add(message)
            if updates is None:
                continue
            if shown:
                # Inserted, not redrawn: the view stays where the reader scrolled to.
                self.updates += updates
                changes.add(Change.TRANSCRIPT)
            elif new_unread:
                conversation.unread_ids.add(message.id)
                self.unread_changed = True
        if messages and shown and self.focused:
            self._read(conversation, messages[-1].id)
        if conversation.unread != unread:
            changes.add(Change.CONVERSATIONS)
        return changes

    def caught_up(self, key: str) -> None:
        """The history of ``key`` missed while the link was down has been fetched."""
        conversation = self.conversations.get(key)
        if conversation is not None:
            conversation.missing_after = None

    # --- typing ---------------------------------------------------------------------------

    def _typing(self, notice: Typing, now: float) -> set[Change]:
        key = room_key(notice.room) if notice.room else direct_key(notice.user)
        people = self.typing.setdefault(key, {})
        if notice.active:
            people[notice.user] = now + TYPING_SHOWN_FOR
        else:
            people.pop(notice.user, None)
        return {Change.TYPING}

    def typing_text(self, now: float) -> str:
        """ "alice is typing…", "alice and bob are typing…", or several; the names escaped
        (see :func:`escaped`: they come from the server)."""
        people = self.typing.get(self.current, {})
        names = [escaped(n) for n in sorted(n for n, until in people.items() if until > now)]
        if not names:
            return ""
        if len(names) == 1:
            return f"{names[0]} is typing…"
        if len(names) == 2:
            return f"{names[0]} and {names[1]} are typing…"
        return f"{', '.join(names[:-1])} and {names[-1]} are typing…"

    def expire_typing(self, now: float) -> set[Change]:
        changed = False
        for people in self.typing.values():
            for name in [n for n, until in people.items() if until <= now]:
                del people[name]
                changed = True
        return {Change.TYPING} if changed else set()

    # --- errors and the input box -----------------------------------------------------------

    def sending(self, client_id: str, text: str) -> None:
        """``text`` is being sent as ``client_id``: kept until the server stores it, so that
        it can go back into the input box if it is refused or the session ends first."""
        self.unconfirmed[client_id] = text

    def not_sent(self, client_id: str, reason: str) -> set[Change]:
        """The server refused something (the message ``client_id``, if it is one of ours
        not yet stored), or it could not be sent: the error says why (in the window's words,
        see :func:`friendly`), and a message's text goes back into the input box (unless the
        end of the session has put it there)."""
        reason = friendly(reason)
        text = self.unconfirmed.pop(client_id, None)
        if text is None:
            self.error = reason
            return {Change.ERROR}
        self.returned.append(text)
        self.error = f"{reason} (your message is back in the input box)"
        return {Change.ERROR, Change.INPUT}

    def failed(self, text: str, *, link_lost: bool = False) -> set[Change]:
        """Show the error ``text``; if it says the connection was lost (``link_lost``), it
        goes by itself when the link is back."""
        self.error = text
        self._link_error = text if link_lost else ""
        return {Change.ERROR}

    def fits(self, text: str, limit: int = 0) -> bool:
        """Whether ``text`` fits in one message of a server that takes ``limit`` characters
        (as it said at the last login; 0: not said, the protocol's limit). If not, the error
        says why, and the text is to stay in the input box."""
        try:
            check_text(text, limit)
        except MessageTooLong as exc:
            self.error = (
                f"This message has {exc.length} characters; at most {exc.limit} fit in one "
                "message. Shorten it, or send it as a file."
            )
            return False
        return True

    def dismiss_error(self) -> set[Change]:
        """The user acted again (sent, joined, switched conversation): the last error goes."""
        if not self.error:
            return set()
        self.error = ""
        return {Change.ERROR}

    # --- window ---------------------------------------------------------------------------

    def set_focus(self, focused: bool) -> set[Change]:
        """The user came back to the window (``focused``; the conversation shown is read up
        to its newest message), or left it."""
        self.focused = focused
        changes: set[Change] = set()
        if focused:
            shown = self.conversation(self.current)
            unread = shown.unread
            self._read(shown, shown.latest)
            if shown.unread != unread:  # shown while away (at login, or for a room left)
                changes.add(Change.CONVERSATIONS)
        if focused and self._missed:
            self._missed.clear()
            changes.add(Change.TITLE)
        return changes

    @property
    def missed_while_away(self) -> int:
        """Messages that came unread while the window was not focused, not read since."""
        return sum(len(ids) for ids in self._missed.values())

    def title(self) -> str:
        """The window's title: the user's name (escaped: the server says it), and how many
        messages came unread while the window was not focused."""
        base = f"sealchat — {escaped(self.me)}" if self.me else "sealchat"
        return f"({self.missed_while_away}) {base}" if self.missed_while_away else base

    def toggle_theme(self) -> set[Change]:
        self.theme = "light" if self.theme == "dark" else "dark"
        return {Change.THEME}

    def people_in_current(self) -> list[MemberInfo]:
        """Members of the current room with presence (or the peer of a direct chat); while
        the link is down, none is online (see :attr:`connected`)."""
        conversation = self.conversation(self.current)
        if not conversation.is_room:
            peer = conversation.title
            return [MemberInfo(name=peer, online=peer in self.online)]
        return [
            MemberInfo(
                name=m.name, online=m.name in self.online or (m.name == self.me and self.connected)
            )
            for m in sorted(self.members.get(conversation.title, []), key=lambda m: m.name.lower())
        ]

    def set_members(self, room: str, members: list[MemberInfo]) -> set[Change]:
        self.members[room] = list(members)
        self.online.update(m.name for m in members if m.online)
        return {Change.PEOPLE}

    # --- transfers ------------------------------------------------------------------------

    def start_transfer(self, name: str, *, upload: bool, file_id: str = "") -> Transfer:
        transfer = Transfer(self._next_transfer, name, upload, file_id, waiting=not self.connected)
        self._next_transfer += 1
        self.transfers[transfer.id] = transfer
        return transfer

    def downloading(self, file_id: str) -> bool:
        """Whether a download of ``file_id`` is under way."""
        return any(
            t.file_id == file_id and t.state is TransferState.RUNNING
            for t in self.transfers.values()
        )

    def _transfers_wait(self, waiting: bool) -> set[Change]:
        """Mark the running transfers as waiting for the link (or no longer)."""
        running = [t for t in self.transfers.values() if t.state is TransferState.RUNNING]
        for transfer in running:
            transfer.waiting = waiting
        return {Change.TRANSFERS} if running else set()

    def transfer_progress(self, transfer_id: int, done: int, total: int) -> set[Change]:
        """A transfer moved on (one forgotten at a logout changes nothing)."""
        transfer = self.transfers.get(transfer_id)
        if transfer is None:
            return set()
        transfer.done, transfer.total = done, total
        return {Change.TRANSFERS}

    def transfer_finished(
        self, transfer_id: int, state: TransferState, detail: str = ""
    ) -> set[Change]:
        """A transfer ended as ``state`` says (one forgotten at a logout changes nothing)."""
        transfer = self.transfers.get(transfer_id)
        if transfer is None:
            return set()
        transfer.state, transfer.detail = state, detail
        if state is TransferState.DONE:
            transfer.done = transfer.total
        return {Change.TRANSFERS}

    def dismiss_transfer(self, transfer_id: int) -> set[Change]:
        """The user put away a finished transfer's row."""
        transfer = self.transfers.get(transfer_id)
        if transfer is None or transfer.state is TransferState.RUNNING:
            return set()
        del self.transfers[transfer_id]
        return {Change.TRANSFERS}

    def file_of(self, message_id: int) -> FileInfo | None:
        message = self.conversation(self.current).messages.get(message_id)
        return None if message is None else message.file


def password_change_problem(current: str, new: str, again: str) -> str:
    """What keeps the "Change password" dialog's fields from being sent, in words for the
    user; "" if nothing does (the server judges the rest: the current password, the new
    one's length)."""
    if not current:
        return "Type your current password."
    if not new:
        return "Type the new password."
    if new != again:
        return "The new passwords differ: type the same one twice."
    if max(len(current), len(new)) > MAX_PASSWORD:
        return f"A password has at most {MAX_PASSWORD} characters."
    return ""
