"""The hub's state per connection, and where a record is going."""

from __future__ import annotations

from dataclasses import dataclass, field

from sealchat.core.hub.effects import SessionId
from sealchat.core.hub.store import StoredFile


@dataclass(slots=True)
class Upload:
    """An upload in progress on one session. ``active`` is when it was accepted or last
    took a chunk: once it has been quiet for ``upload_takeover_after``, a resume from
    another session of its user takes it over."""

    file: StoredFile
    received: int
    active: float = 0.0


@dataclass(slots=True)
class Verifying:
    """An upload whose FileComplete is being checked: its file is read back and hashed off
    the hub's thread (``VerifyUpload``). ``repeats`` counts the records for its transfer that
    came meanwhile (a chunk, FileComplete again): each is refused after the outcome, as it
    would have been had the check been done at once."""

    file: StoredFile
    repeats: int = 0


@dataclass(slots=True)
class PendingChange:
    """A ChangePassword being carried out: its old password is being checked (``hashing``
    false), then its new one hashed."""

    new_password: str = field(repr=False)
    hashing: bool = False


@dataclass(slots=True)
class Session:
    """One authenticated or authenticating connection."""

    id: SessionId
    address: str
    opened: float = 0.0
    device: str = ""
    """The fingerprint of the client's static key, which names its install (its device):
    the replay after login starts from what this device acknowledged (§9.6)."""
    key: str = ""
    name: str = ""
    login_pending: bool = False
    announce: bool = True
    """Whether the session makes its user appear online (Login.announce): a quiet one gets
    what the user's sessions get, but sends no Presence and is not counted online."""
    account_check: bool = False
    """Whether the login being checked took a check from its account's allowance: given back
    if the password was wrong (guesses are the back-off's business, not the allowance's)."""
    password_generation: int = 0
    """The account's password generation when its hash was read for this login: a session
    whose account has another one now logged in with a password that was changed since."""
    change: PendingChange | None = None
    """The password change in progress on this (logged-in) session, if any: it tells the
    outcomes of its password checks from those of a login."""
    uploads: dict[int, Upload] = field(default_factory=dict)
    verifying: dict[int, Verifying] = field(default_factory=dict)
    """Uploads whose FileComplete is being checked (``Verifying``): their numbers and slots
    stay in use until the outcome is sent."""
    downloads: set[int] = field(default_factory=set)
    stopping: set[int] = field(default_factory=set)
    """Downloads the client cancelled whose stream the driver has not yet ended: their
    numbers stay in use (late chunks must not pass for a new transfer's) though their slots
    are free."""
    read_markers: bool = False
    """Whether the session asked for the user's read markers (ListReadMarkers): only such a
    session knows ReadUpTo, and gets those of the user's other sessions."""
    replay_from: int = 0
    """The replay after login has sent every missed message up to this id."""
    acknowledged: int = 0
    """The highest id this session acknowledged (Delivered) since its login: its device's
    cursor is at least this."""
    replay_until: int = 0
    """The replay covers ids up to this one (the newest at login: later ones arrive live);
    0 once the replay is over."""


@dataclass(frozen=True, slots=True)
class Conversation:
    """Where a message, typing notice or file goes: a room, or the direct conversation
    between two users (``peer_key``/``peer`` is the other user)."""

    room: str = ""
    peer_key: str = ""
    peer: str = ""
