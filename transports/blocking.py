"""sealchat on plain blocking sockets: the one-thread-per-client server and the client for
scripts that do not use trio.

The code lives in ``blocking_server`` and ``blocking_client`` (built on ``blocking_link``,
``blocking_reader``, ``blocking_transfers`` and ``blocking_handoff``); this module is the
public face of both.
"""

from __future__ import annotations

from sealchat.transports.blocking_client import BlockingClient
from sealchat.transports.blocking_server import ThreadedServer
from sealchat.transports.requests import (
    ClientError,
    ConnectionLost,
    LoginFailed,
    MessageTooLong,
    PasswordNotChanged,
    TransferFailed,
    Unreachable,
    UploadBusy,
)

__all__ = [
    "BlockingClient",
    "ClientError",
    "ConnectionLost",
    "LoginFailed",
    "MessageTooLong",
    "PasswordNotChanged",
    "ThreadedServer",
    "TransferFailed",
    "Unreachable",
    "UploadBusy",
]
