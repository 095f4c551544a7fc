"""sealchat over trio: the default server and the async client library.

``TrioServer`` serves a hub with a task per connection; ``connect`` / ``ChatClient`` are the
client library the desktop and terminal clients use (see ``docs/client.md``). The code lives
in ``trio_server`` and ``trio_client`` (whose parts are the other ``trio_*`` modules: the link,
the reader, delivery, the outbox, transfers, reconnecting); this module is the public face of
both.
"""

from __future__ import annotations

from sealchat.transports.requests import (
    ClientError,
    LoginFailed,
    MessageTooLong,
    PasswordNotChanged,
    TransferFailed,
    UploadBusy,
)
from sealchat.transports.trio_client import (
    ChatClient,
    ConnectionLost,
    Disconnected,
    LinkState,
    Unreachable,
    client_key,
    connect,
)
from sealchat.transports.trio_server import TrioServer

__all__ = [
    "ChatClient",
    "ClientError",
    "ConnectionLost",
    "Disconnected",
    "LinkState",
    "LoginFailed",
    "MessageTooLong",
    "PasswordNotChanged",
    "TransferFailed",
    "TrioServer",
    "Unreachable",
    "UploadBusy",
    "client_key",
    "connect",
]
