"""The hub's limits: every one configurable, every default safe."""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1 << 20
GiB = 1 << 30


@dataclass(frozen=True, slots=True)
class HubConfig:
    """Limits the hub enforces on top of the wire limits (``sealchat.core.limits``)."""

    max_message_chars: int = 4000
    messages_per_second: float = 5.0
    message_burst: int = 20
    free_login_failures: int = 5
    """Failed logins (per user and per address) before back-off starts: the failure that
    reaches this count blocks further attempts for ``login_backoff_base`` seconds, and each
    later one doubles the wait (up to ``login_backoff_max``)."""
    login_backoff_base: float = 1.0
    login_backoff_max: float = 300.0
    max_pending_logins: int = 16
    """Password checks in progress at once for one address (each costs the server Argon2):
    below the server's cap on connections of an address not logged in yet (32), so that it
    can bind."""
    address_logins_per_minute: float = 60.0
    """Rate at which an address's allowance of password checks refills. Every Login and
    Register that gets as far as a password check takes one, whether it succeeds or not: an
    Argon2id check costs tens of milliseconds of a core, so logging in and out in a loop must
    be throttled as much as guessing. One a second is about 1/80 of what the two password
    threads check on two cores: one address cannot keep them busy, yet an office behind one
    NAT logs in on it all day."""
    address_login_burst: int = 128
    """Password checks an address may make at once after a quiet spell: as many as the
    connections it may hold (the servers' ``max_connections_per_address``, 128), so a whole
    office behind one NAT can log in at 9:00, and all its clients at once after a server
    restart. A login refused for want of it gets a ``retry_after``."""
    user_logins_per_minute: float = 6.0
    """Rate at which an account's allowance of password checks refills: the logins to one
    user name (existing or not) from anywhere, and its registration. One every 10 s: an
    account logged in and out in a loop from many addresses costs the server little."""
    user_login_burst: int = 10
    """Password checks for one account at once after a quiet spell: a user's devices (desktop,
    laptop, phone, a terminal or two) all logging in again at once after a server restart,
    with room for a few mistyped passwords. Guesses cannot use it up to lock the user out: a
    wrong password gives its check back (guesses are the back-off's business), and at an
    address the user logged in from before it is not asked at all."""
    registrations_per_hour: float = 5.0
    """Rate at which an address's allowance of new accounts refills (with
    ``open_registration``); only a registration that gets as far as hashing the password
    takes from it, not one refused for its name or password. Accounts are for people, who
    register once: this keeps one address from making thousands of them."""
    registration_burst: int = 5
    """New accounts an address may register at once: a family or a small team behind one NAT
    signing up together. An operator who opens registration for a larger group at one
    address raises it (or makes their accounts with ``sealchat user add``)."""
    login_timeout: float = 60.0
    """A connection that has not logged in this long after its handshake is closed, so idle
    unauthenticated connections cannot fill the server."""
    open_registration: bool = False
    min_password_chars: int = 8
    requests_per_second: float = 20.0
    request_burst: int = 200
    """Requests that read much on the hub's one thread (``ListRooms``, ``ListMembers``,
    ``JoinRoom``, ``HistoryRequest``, ``ListFiles``, and ``ListReadMarkers`` but a session's first)
    a user may make at once, refilled at ``requests_per_second``; one beyond is refused
    (``rate_limited``). A client catching up after a reconnect, or paging through a long file list,
    stays well within it; a script asking in a loop cannot keep the hub from everyone else."""
    message_text_per_day: int = 32 * MiB
    """Bytes of message text (UTF-8) a user may have stored in a day, all its messages
    together, refilled evenly over 24 hours (``over_quota``): about 300,000 messages of 100
    characters, or 2,000 of the longest. The rate limit alone lets one account store some
    7 GB a day; this bounds the disk one account can fill with messages."""
    max_file_size: int = 2 * GiB
    user_quota: int = 10 * GiB
    min_free_space: int = 256 * MiB
    """Disk space an upload must leave free on the store's disk, when it starts or resumes
    (its bytes still to come counted, and those the uploads in progress have still to send):
    the database must have room for messages."""
    max_transfers: int = 4
    """Concurrent uploads plus downloads per session."""
    max_unfinished_uploads: int = 16
    """Incomplete uploads a user keeps for resuming; a new upload beyond this discards the
    one idle longest (not one in progress)."""
    upload_takeover_after: float = 10.0
    """Seconds without a chunk after which an upload in progress on one session may be taken
    over by a resume of the same file from another session of its user (docs/protocol.md
    §9.9, step 6): a connection that died on the client's side (a network change, NAT
    rebinding) can stay open on the server's for minutes, holding the upload. Long enough
    for a slow link to bring a whole chunk (60 KiB in 10 s is 48 kbit/s), so that two devices
    really sending the same file at once are not cut off; short, because the device that
    reconnected waits that long at most."""
    max_rooms_per_user: int = 100
    max_rooms: int = 10_000
    """Rooms on the server: a join that would create one more is refused (the rooms there
    stay). Well below what a client takes in one listing (100,000), so that ListRooms always
    answers."""
    room_creations_per_hour: float = 6.0
    room_creation_burst: int = 10
    """New rooms a user may create at once, refilled at ``room_creations_per_hour``: a room
    with a message in it stays for good, so creating them must be slow."""
    typing_expiry: float = 5.0
    typing_per_second: float = 2.0
    typing_burst: int = 10
    """Typing records a user may send at once, refilled at ``typing_per_second``; excess
    ones are dropped quietly (typing notices are a courtesy)."""
    read_markers_per_second: float = 5.0
    read_marker_burst: int = 600
    """ReadUpTo records a user may send at once, refilled at ``read_markers_per_second``;
    excess ones are dropped quietly (a client sends a higher marker at its next read). Each
    one that raises a marker is a write and goes to the user's other sessions. As many as a
    listing holds (``MAX_LIST`` direct conversations and ``max_rooms_per_user`` rooms): a client
    sending again after a reconnect every marker its link lost is never cut short, while a loop
    is held to the rate."""
    history_page: int = 50
    replay_page: int = 200
    """Missed messages sent per page after login; the next page follows the client's
    Delivered acknowledgement of the last one."""
    page_bytes: int = 256 * 1024
    """Encoded bytes of messages after which a replay or history page ends early (with
    ``more``), whatever ``replay_page`` or ``history_page`` allow: a page of long messages
    is written quickly even to a slow reader. A page holds at least one message."""
    presence_room_limit: int = 500
    """Rooms with more members than this do not broadcast joins, leaves and presence (a
    client asks for Members instead): keeps a login O(1) in a room of 10,000."""
    default_room: str = "general"

    def __post_init__(self) -> None:
        for name in _RATES:  # a bucket's wait divides by its rate
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be more than 0, not {getattr(self, name)}")
        for name in _AT_LEAST_ONE:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.max_message_chars < 1:  # Authenticated would say 0: "not said" (§6.6.3)
            raise ValueError(f"max_message_chars must be at least 1, not {self.max_message_chars}")
        if self.message_text_per_day < 4 * self.max_message_chars:  # UTF-8: 4 bytes at most
            raise ValueError(
                "message_text_per_day must hold the longest message: at least "
                f"{4 * self.max_message_chars} bytes (4 x max_message_chars)"
            )


_RATES = (
    "messages_per_second",
    "address_logins_per_minute",
    "user_logins_per_minute",
    "registrations_per_hour",
    "requests_per_second",
    "typing_per_second",
    "read_markers_per_second",
    "login_timeout",
    "typing_expiry",
    "login_backoff_base",
    "login_backoff_max",
    "upload_takeover_after",
)
"""Rates and times that must be positive (``room_creations_per_hour`` may be 0: after its
burst, only the operator makes rooms)."""
_AT_LEAST_ONE = (
    "message_burst",
    "address_login_burst",
    "user_login_burst",
    "registration_burst",
    "request_burst",
    "typing_burst",
    "read_marker_burst",
    "max_pending_logins",
    "history_page",
    "replay_page",
    "page_bytes",
)
"""Bursts and sizes of which one at least is needed for anything to happen."""
