"""One valid instance of every record type, and helpers to run sessions through a pair."""

from __future__ import annotations

import hashlib

from sealchat.core import (
    RECORD_TYPES,
    Authenticated,
    Bye,
    ChangePassword,
    Delivered,
    Error,
    FileAccept,
    FileChunk,
    FileComplete,
    FileInfo,
    FileList,
    FileOffer,
    FileReject,
    FileRequest,
    HistoryEnd,
    HistoryRequest,
    JoinRoom,
    LeaveRoom,
    ListFiles,
    ListMembers,
    ListReadMarkers,
    ListRooms,
    Login,
    LoginRejected,
    MemberInfo,
    Members,
    Membership,
    Message,
    MessageAck,
    OnlineUsers,
    PasswordChanged,
    Ping,
    Pong,
    Presence,
    ReadMarker,
    ReadMarkers,
    ReadUpTo,
    Record,
    Register,
    Role,
    RoomInfo,
    RoomJoined,
    RoomLeft,
    RoomList,
    Typing,
)

DIGEST = hashlib.sha256(b"hello file").digest()
INFO = FileInfo(file_id="f1", name="r\u00e9sum\u00e9 \U0001f600.pdf", size=10, sha256=DIGEST)

SAMPLES: dict[type[Record], Record] = {
    Login: Login(username="esha", password="s3cret-pass"),
    Register: Register(username="newbie", password="another-secret"),
    Authenticated: Authenticated(
        username="esha",
        conversations=("carol", "bob"),
        max_file_size=2 << 30,
        features=("change-password",),
        max_message_chars=4000,
    ),
    LoginRejected: LoginRejected(retry_after=1.5),
    Ping: Ping(nonce=7),
    Pong: Pong(nonce=7),
    Bye: Bye(reason="see you"),
    Error: Error(code="rate_limited", detail="slow down", ref="c-1"),
    ChangePassword: ChangePassword(old_password="s3cret-pass", new_password="n3w-pass"),
    PasswordChanged: PasswordChanged(),
    JoinRoom: JoinRoom(room="general"),
    LeaveRoom: LeaveRoom(room="random"),
    RoomJoined: RoomJoined(room="general"),
    RoomLeft: RoomLeft(room="random"),
    ListRooms: ListRooms(),
    RoomList: RoomList(rooms=[RoomInfo(name="general", members=3, joined=True)]),
    ListMembers: ListMembers(room="general"),
    Members: Members(room="general", members=[MemberInfo(name="bob", online=True)]),
    Membership: Membership(room="general", user="bob", joined=True),
    Presence: Presence(user="bob", online=False),
    OnlineUsers: OnlineUsers(users=["bob", "carol"]),
    Typing: Typing(room="general", user="bob"),
    Message: Message(text="top secret plaintext \u2603", room="general", client_id="c-1"),
    MessageAck: MessageAck(client_id="c-1", id=42, ts=1_700_000_000.25),
    Delivered: Delivered(up_to=42),
    HistoryRequest: HistoryRequest(room="general", before=42, limit=20),
    HistoryEnd: HistoryEnd(room="general", more=True),
    ReadUpTo: ReadUpTo(up_to=42, room="general"),
    ListReadMarkers: ListReadMarkers(),
    ReadMarkers: ReadMarkers(markers=[ReadMarker(up_to=42, peer="bob")]),
    FileOffer: FileOffer(transfer=1, name="notes.txt", size=10, sha256=DIGEST, room="general"),
    FileAccept: FileAccept(transfer=1, file_id="f1", offset=4),
    FileReject: FileReject(transfer=1, reason="over quota"),
    FileRequest: FileRequest(transfer=2, file_id="f1"),
    FileChunk: FileChunk(transfer=1, offset=0, data=b"hello file"),
    FileComplete: FileComplete(transfer=1, sha256=DIGEST),
    ListFiles: ListFiles(room="general", after=41),
    FileList: FileList(room="general", files=[INFO], last=42),
}
assert set(SAMPLES) == set(RECORD_TYPES), "every record type needs a sample"


def session_records(role: Role) -> tuple[list[Record], list[Record]]:
    """What ``role`` sends in a full session: (before authentication, after it).

    The server's list ends with Authenticated, which moves both sides to READY.
    """
    login = [
        r
        for t, r in SAMPLES.items()
        if t.in_login and role in t.sent_by and t not in (Authenticated, Bye, Ping)
    ]
    if role is Role.SERVER:
        login.append(SAMPLES[Authenticated])
    ready = [r for t, r in SAMPLES.items() if not t.in_login and role in t.sent_by]
    return login, ready
