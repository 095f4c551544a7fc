"""What the hub asks its driver to do: the only way the hub acts on the world."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sealchat.core.hub.store import Digest, ReadBackFailed
from sealchat.core.records import Record

__all__ = [
    "CancelStream",
    "Deliver",
    "Disconnect",
    "Effect",
    "HashPassword",
    "ReadBackFailed",
    "SessionId",
    "StreamFile",
    "VerifyPassword",
    "VerifyUpload",
]

SessionId = int


@dataclass(frozen=True, slots=True)
class Deliver:
    """Send ``record`` to each session in ``sessions`` (encode once, encrypt per session)."""

    sessions: tuple[SessionId, ...]
    record: Record


@dataclass(frozen=True, slots=True)
class Disconnect:
    """Say Bye(``reason``) to ``session`` and close it."""

    session: SessionId
    reason: str


@dataclass(frozen=True, slots=True)
class VerifyPassword:
    """Check ``password`` against ``password_hash`` (None: unknown user; verify against a dummy
    hash so that timing tells nothing) off the event loop, then call
    ``Hub.password_verified``."""

    session: SessionId
    username: str
    password: str = field(repr=False)
    password_hash: str | None = field(repr=False)


@dataclass(frozen=True, slots=True)
class HashPassword:
    """Hash ``password`` for a new account off the event loop, then call
    ``Hub.password_hashed``."""

    session: SessionId
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class StreamFile:
    """Send FileChunks of stored file ``file_id`` from ``offset`` as ``transfer``, then
    FileComplete with ``sha256``; call ``Hub.stream_finished`` when done or abandoned."""

    session: SessionId
    transfer: int
    file_id: str
    offset: int
    size: int
    sha256: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class VerifyUpload:
    """Read back and hash the upload ``file_id`` that ``session`` completed as ``transfer``
    (the store kept no SHA-256 of it: the server restarted during the upload, say): call
    ``hasher`` off the hub's thread (it reads that one file, touching nothing else of the
    store), then ``Hub.upload_verified`` with the ``Digest`` it returns, or, if it raised
    ``OSError``, with ``ReadBackFailed.of`` that error. If the session has ended meanwhile,
    the call may be left out."""

    session: SessionId
    transfer: int
    file_id: str
    hasher: Callable[[], Digest] = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class CancelStream:
    """Stop streaming ``transfer`` to ``session`` (the client refused it)."""

    session: SessionId
    transfer: int


Effect = (
    Deliver | Disconnect | VerifyPassword | HashPassword | StreamFile | VerifyUpload | CancelStream
)
