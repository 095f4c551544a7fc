"""The hub's limits: every one configurable, every default safe."""

from __future__ import annotations

from dataclasses import dataclass

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
    max_pending_logins: int = 32
    """Password checks in progress at once for one address (each costs the server Argon2)."""
    login_timeout: float = 60.0
    """A connection that has not logged in this long after its handshake is closed, so idle
    unauthenticated connections cannot fill the server."""
    open_registration: bool = False
    min_password_chars: int = 8
    max_file_size: int = 2 * GiB
    user_quota: int = 10 * GiB
    max_transfers: int = 4
    """Concurrent uploads plus downloads per session."""
    max_unfinished_uploads: int = 16
    """Incomplete uploads a user keeps for resuming; a new upload beyond this discards the
    one idle longest (not one in progress)."""
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
    history_page: int = 50
    replay_page: int = 200
    """Missed messages sent per page after login; the next page follows the client's
    Delivered acknowledgement of the last one."""
    presence_room_limit: int = 500
    """Rooms with more members than this do not broadcast joins, leaves and presence (a
    client asks for Members instead): keeps a login O(1) in a room of 10,000."""
    default_room: str = "general"
