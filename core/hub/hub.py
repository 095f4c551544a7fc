"""The chat hub: the server's logic, free of I/O.

The driver (a trio or a threaded server) reports what happens — a session opened, a record
arrived, a password was checked, an upload was read back and hashed, time passed — and carries
out the effects returned; slow work (Argon2id, reading a whole file) is such an effect, done by
the driver off the hub's thread. The hub owns no socket, thread or clock; durable state goes
through the injected ``Store``. Calls must not overlap (one thread at a time).

The work is shared out among collaborators over one ``Roster`` (the sessions, who is online, who is
in which room): ``Logins``, ``Rooms``, ``Messages``, ``TypingNotices``, ``ReadMarkersKept``,
``Files`` and ``AccountChanges``. The hub dispatches each record straight to the one that handles
it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial

from sealchat.core.hub.accounts import AccountChanges
from sealchat.core.hub.config import HubConfig
from sealchat.core.hub.effects import Disconnect, Effect, ReadBackFailed, SessionId
from sealchat.core.hub.files import Files
from sealchat.core.hub.logins import Logins
from sealchat.core.hub.messages import Messages
from sealchat.core.hub.names import user_key
from sealchat.core.hub.outgoing import error
from sealchat.core.hub.password_changes import PasswordChanges
from sealchat.core.hub.ratelimit import Allowances
from sealchat.core.hub.read_markers import ReadMarkersKept
from sealchat.core.hub.rooms import Rooms
from sealchat.core.hub.roster import Roster
from sealchat.core.hub.session import Session
from sealchat.core.hub.store import Digest, Store
from sealchat.core.hub.typing_notices import TypingNotices
from sealchat.core.records import (
    FILES_REF,
    HISTORY_REF,
    READ_REF,
    ROOMS_REF,
    Bye,
    ChangePassword,
    Delivered,
    FileChunk,
    FileComplete,
    FileOffer,
    FileReject,
    FileRequest,
    HistoryRequest,
    JoinRoom,
    LeaveRoom,
    ListFiles,
    ListMembers,
    ListReadMarkers,
    ListRooms,
    Login,
    Message,
    Ping,
    Pong,
    Presence,
    ReadUpTo,
    Record,
    Register,
    Typing,
)

__all__ = ["HandlingFailed", "Hub"]

_LOGINS = (Login, Register)
_CONNECTION_LEVEL = (Ping, Pong, Bye)


class HandlingFailed(Exception):
    """Handling a record, or committing what it wrote, raised (the cause is chained).
    ``effects`` are those that stand: of the records handled before it in the same call
    (stored), or only the logouts of removed or changed accounts if the commit failed. The
    driver runs them, then ends the session."""

    def __init__(self, effects: list[Effect]) -> None:
        super().__init__("the hub failed to handle a record")
        self.effects = effects


class Hub:
    """Rooms, direct messages, presence, typing, history and files for every session."""

    def __init__(self, store: Store, config: HubConfig | None = None) -> None:
        self.store = store
        self.config = config = config or HubConfig()
        roster = self._roster = Roster(store, config)
        self._sessions = roster.sessions
        self._online = roster.online
        self._announcing = roster.announcing
        # Each user's allowance of messages, joins, leaves and new uploads.
        allowances = Allowances(config.messages_per_second, config.message_burst)
        typing_allowances = Allowances(config.typing_per_second, config.typing_burst)
        typing = self._typing_notices = TypingNotices(roster, config, typing_allowances)
        day = 24 * 3600.0
        text_allowances = Allowances(config.message_text_per_day / day, config.message_text_per_day)
        messages = Messages(
            store,
            config,
            roster,
            allowances=allowances,
            text_allowances=text_allowances,
            typing=typing.slots,
        )
        files = self._files = Files(store, config, roster, allowances)
        rooms = Rooms(store, config, roster, allowances, typing.end)
        read_allowances = Allowances(config.read_markers_per_second, config.read_marker_burst)
        reads = ReadMarkersKept(store, roster, read_allowances)
        logins = self._logins = Logins(store, config, roster, messages.replay)
        self._requests = Allowances(config.requests_per_second, config.request_burst)
        self._per_user = (
            allowances,
            text_allowances,
            typing_allowances,
            read_allowances,
            self._requests,
        )
        """The allowances per user (of messages, their text, typing notices, read markers,
        requests), whose full buckets each tick forgets."""
        self._accounts = AccountChanges(store, roster, self._close)
        changes = self._changes = PasswordChanges(store, config, logins, self._accounts.log_out)
        # What handles each record, bound once: ``_handle`` calls it directly.
        self._login = logins.login
        self._message = messages.message
        self._typing_notice = typing.notice
        self._delivered = messages.delivered
        self._history = messages.history
        self._join = rooms.join
        self._leave = rooms.leave
        self._list_rooms = rooms.list_rooms
        self._list_members = rooms.list_members
        self._offer = files.offer
        self._chunk = files.chunk
        self._complete = files.complete
        self._refuse = files.refuse
        self._download = files.download
        self._list_files = files.list_files
        self._read_up_to = reads.read_up_to
        self._list_read_markers = reads.list_markers
        self._change_password = changes.request
        self.store.ensure_room(config.default_room)

    # --- sessions ---------------------------------------------------------------------------

    def open_session(self, session: SessionId, address: str, now: float, device: str = "") -> None:
        """A connection completed its handshake; it may now log in, for ``login_timeout``.
        ``device`` names the client's install: the fingerprint of its static key."""
        self._roster.add_session(Session(id=session, address=address, opened=now, device=device))

    def close_session(self, session: SessionId, now: float) -> list[Effect]:
        """The connection is gone. Uploads stay resumable; presence may change.

        The session is forgotten even if the store fails; ``HandlingFailed`` then carries
        the effects to run (the user going offline)."""
        try:
            effects = self._accounts.log_out()  # room-mates are told while it is known
        except Exception:  # the store failed the check: the next tick checks again (and logs)
            effects = []  # the session is forgotten all the same
        try:
            return effects + self._close(session, self._roster.presence_audience)
        except HandlingFailed as failed:
            failed.effects[:0] = effects
            raise

    def _close(self, session: SessionId, audience: Callable[[str], set[str]]) -> list[Effect]:
        """Forget ``session``; if it was its user's last, stop its typing and tell
        ``audience(key)`` that the user went offline.

        The checks of its completed uploads are forgotten (each upload stays, all its bytes
        received: an offer resumes it at its end). Its uploads are released last, each
        whatever became of the others: if the store fails at that, the session is forgotten
        and its uploads are free to resume all the same, and ``HandlingFailed`` carries the
        effects (the user going offline)."""
        state = self._roster.remove_session(session)
        if state is None:
            return []
        effects = self._went_offline(state, audience) if state.key else []
        for transfer in list(state.verifying):  # the outcome of a check is not awaited
            self._files.end_verification(state, transfer)
        failure: Exception | None = None
        for transfer in list(state.uploads):
            try:
                self._files.end_upload(state, transfer)
            except Exception as exc:
                failure = failure or exc
        if failure is not None:
            raise HandlingFailed(effects) from failure
        return effects

    def _went_offline(self, state: Session, audience: Callable[[str], set[str]]) -> list[Effect]:
        """``state`` (logged in) is closed. If it was its user's last announcing session (a
        quiet one never is), ``audience(key)`` is told that the user went offline; then, or if
        it was the user's last session of any kind, the user's typing stops (a notice kept past
        the offline notice, which clients take as its end, would make the user's next ones
        look like refreshes of it, and pass nothing on)."""
        key = state.key
        sessions = self._online[key]
        sessions.discard(state.id)
        logged_out = not sessions
        if logged_out:
            del self._online[key]
        announcing = self._announcing.get(key)
        offline = announcing is not None and state.id in announcing and len(announcing) == 1
        if announcing is not None:
            announcing.discard(state.id)
            if not announcing:
                del self._announcing[key]
        effects: list[Effect] = []
        if logged_out or offline:
            effects += self._typing_notices.stop_of(key)
        if offline:
            notice = Presence(user=state.name, online=False)
            effects += self._roster.to_keys(audience(key) - {key}, notice)
        return effects

    def is_online(self, username: str) -> bool:
        """Whether ``username`` is online: has a session logged in that announced it (quiet
        sessions, Login.announce=False, do not count)."""
        return user_key(username) in self._announcing

    def is_logged_in(self, username: str) -> bool:
        """Whether any session of ``username`` is logged in, quiet ones included."""
        return user_key(username) in self._online

    # --- records ----------------------------------------------------------------------------

    def handle(self, session: SessionId, record: Record, now: float) -> list[Effect]:
        """React to a record received on ``session``.

        Its writes are committed before the effects are returned: anything that acknowledges
        them comes after they are stored. Raises ``HandlingFailed`` if handling it failed."""
        return self.handle_all(session, [record], now)

    def handle_all(self, session: SessionId, records: list[Record], now: float) -> list[Effect]:
        """``handle`` for records that arrived together, effects in order; the writes of all
        of them are committed as one, before the effects are returned. Accounts removed or
        whose password changed are checked first, in the same transaction.

        If a record fails, the ones after it are not handled, what was written is committed
        (the hub's state in memory has moved on with it) and ``HandlingFailed`` carries the
        effects of the records before it: stored, so they are to be run. If the commit itself
        fails, ``HandlingFailed`` carries only the logouts of accounts removed or whose
        password changed meanwhile (which write nothing): nothing else is to be
        acknowledged."""
        handle = self._handle
        return self._in_batch(partial(handle, session, record, now) for record in records)

    def _in_batch(self, steps: Iterable[Callable[[], list[Effect]]]) -> list[Effect]:
        """Run ``steps`` in one store batch, after logging out the sessions whose account was
        removed or whose password changed meanwhile; their effects in order (``handle_all``
        says what a failure raises)."""
        logouts: list[Effect] = []
        effects: list[Effect] = []
        try:
            with self.store.batch():  # commits also when the block raises
                # Checked inside the batch, before a step is taken: its write lock keeps out
                # a change committing between the check and the steps.
                logouts = self._accounts.log_out()
                effects += logouts
                for step in steps:
                    try:
                        effects += step()
                    except Exception as exc:
                        raise HandlingFailed(effects) from exc
        except HandlingFailed:
            self._roster.reload_members()
            raise
        except Exception as exc:  # the check or the commit failed: no step's effects stand
            self._roster.reload_members()
            raise HandlingFailed(logouts) from exc
        return effects

    def _handle(self, session: SessionId, record: Record, now: float) -> list[Effect]:
        state = self._sessions.get(session)
        if state is None:
            return []
        if isinstance(record, _LOGINS):
            return self._login(state, record, now)
        if isinstance(record, _CONNECTION_LEVEL):
            return []  # answered or handled by the connection itself
        if not state.key:
            return [Disconnect(session, "log in first")]
        match record:
            case Message():
                return self._message(state, record, now)
            case Typing():
                return self._typing_notice(state, record, now)
            case Delivered():
                return self._delivered(state, record)
            case HistoryRequest():
                return self._slowed(state, HISTORY_REF, now) or self._history(state, record)
            case JoinRoom():
                return self._slowed(state, record.room, now) or self._join(state, record, now)
            case LeaveRoom():
                return self._leave(state, record, now)
            case ListRooms():
                return self._slowed(state, ROOMS_REF, now) or self._list_rooms(state)
            case ListMembers():
                return self._slowed(state, record.room, now) or self._list_members(state, record)
            case FileOffer():
                return self._offer(state, record, now)
            case FileChunk():
                return self._chunk(state, record, now)
            case FileComplete():
                return self._complete(state, record, now)
            case FileReject():
                return self._refuse(state, record)
            case FileRequest():
                return self._download(state, record)
            case ListFiles():
                return self._slowed(state, FILES_REF, now) or self._list_files(state, record)
            case ChangePassword():
                return self._change_password(state, record, now)
            case ReadUpTo():
                return self._read_up_to(state, record, now)
            case ListReadMarkers():
                # The session's first one (a client asks once after each login) is not
                # charged: refused, the session would never get the user's other sessions'
                # markers. Logins are limited; a listing asked again is a request.
                slowed = self._slowed(state, READ_REF, now) if state.read_markers else []
                return slowed or self._list_read_markers(state)
        return [Disconnect(session, f"a client may not send {type(record).__name__}")]

    def _slowed(self, state: Session, ref: str, now: float) -> list[Effect]:
        """The refusal of a request beyond the user's allowance of requests (``ref`` names
        it, as its other errors do), or nothing if it is within it."""
        if self._requests.of(state.key, now).take(now):
            return []
        rate = self.config.requests_per_second
        return [error(state, "rate_limited", f"slow down: at most {rate:g} requests a second", ref)]

    def password_hashed(
        self, session: SessionId, username: str, password_hash: str, now: float
    ) -> list[Effect]:
        """The outcome of a HashPassword effect: create the account and log in, or store the
        new password of a change."""
        if self._changing(session, hashing=True):
            return self._change_step(session, lambda s: self._changes.hashed(s, password_hash))
        return self._logins.password_hashed(session, username, password_hash, now)

    def password_verified(
        self, session: SessionId, username: str, ok: bool, now: float
    ) -> list[Effect]:
        """The outcome of a VerifyPassword effect for ``username``: of a login, or of the old
        password of a change."""
        if self._changing(session, hashing=False):
            return self._change_step(session, lambda s: self._changes.verified(s, ok, now))
        return self._logins.password_verified(session, username, ok, now)

    def _changing(self, session: SessionId, *, hashing: bool) -> bool:
        """Whether ``session``'s password check is that of a password change (at the step
        ``hashing`` or not), rather than of a login: a logged-in session has no login."""
        state = self._sessions.get(session)
        return state is not None and state.change is not None and state.change.hashing is hashing

    def _change_step(
        self, session: SessionId, step: Callable[[Session], list[Effect]]
    ) -> list[Effect]:
        """Run ``step`` of ``session``'s password change in a batch of its own, as
        ``handle_all`` runs records: if the session was logged out meanwhile (its account
        changed or removed), its change is dropped."""

        def run() -> list[Effect]:
            state = self._sessions.get(session)
            return [] if state is None or state.change is None else step(state)

        return self._in_batch((run,))

    def stream_finished(self, session: SessionId, transfer: int) -> None:
        """The driver finished (or abandoned) a StreamFile."""
        self._files.stream_finished(session, transfer)

    def upload_verified(
        self, session: SessionId, transfer: int, digest: Digest | ReadBackFailed, now: float
    ) -> list[Effect]:
        """The outcome of a VerifyUpload: the ``Digest`` its file was read back with, or why
        it could not be read. The file is shared or refused, as a FileComplete is when the
        store can check it at once, in a batch of its own (as ``handle_all`` runs records);
        nothing if the session ended meanwhile."""
        return self._in_batch((partial(self._files.verified, session, transfer, digest, now),))

    def tick(self, now: float) -> list[Effect]:
        """Expire typing notices not refreshed in time, close connections that never logged
        in, log out the sessions of accounts removed or whose password changed meanwhile,
        and forget old login failures and the allowances full again."""
        effects = self._accounts.log_out()  # first: if its query fails, nothing is lost
        effects += self._logins.expire(now)
        effects += self._typing_notices.expire(now)
        for allowances in self._per_user:
            allowances.forget_full(now)
        return effects

    def next_deadline(self) -> float | None:
        """When the next typing notice expires, if one is running: ``tick`` is due then.
        Its other work (logins timing out, accounts changed, allowances to forget) is not
        timed to the second, so a driver also calls ``tick`` at a steady pace (TICK)."""
        return self._typing_notices.next_deadline()
