"""The chat hub: the server's logic, pure, driven by the trio and the threaded servers."""

from sealchat.core.hub.batching import ends_batch
from sealchat.core.hub.config import HubConfig
from sealchat.core.hub.effects import (
    CancelStream,
    Deliver,
    Disconnect,
    Effect,
    HashPassword,
    ReadBackFailed,
    SessionId,
    StreamFile,
    VerifyPassword,
    VerifyUpload,
)
from sealchat.core.hub.hub import HandlingFailed, Hub
from sealchat.core.hub.store import (
    Digest,
    DuplicateMessage,
    Store,
    StoredFile,
    StoredMessage,
    UserRow,
)
from sealchat.core.records import ACCOUNT_REMOVED, GENERIC_LOGIN_FAILURE, PASSWORD_CHANGED

__all__ = [
    "ACCOUNT_REMOVED",
    "GENERIC_LOGIN_FAILURE",
    "PASSWORD_CHANGED",
    "CancelStream",
    "Deliver",
    "Digest",
    "Disconnect",
    "DuplicateMessage",
    "Effect",
    "HandlingFailed",
    "HashPassword",
    "Hub",
    "HubConfig",
    "ReadBackFailed",
    "SessionId",
    "Store",
    "StoredFile",
    "StoredMessage",
    "StreamFile",
    "UserRow",
    "VerifyPassword",
    "VerifyUpload",
    "ends_batch",
]
