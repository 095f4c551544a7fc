"""Connection states and the record transition table, kept apart from bytes and crypto.

The handshake moves a connection START → HANDSHAKE (→ VERIFY_PEER on the client) → LOGIN.
From LOGIN on, every record sent or received is looked up in ``TRANSITIONS``: a pair that is
not there is forbidden in that state (``LocalProtocolError`` when sent,
``RemoteProtocolError`` when received). Direction is checked separately with each record's
``sent_by``.
"""

from __future__ import annotations

import enum
from typing import Final

from sealchat.core.records import (
    RECORD_TYPES,
    Authenticated,
    Bye,
    Login,
    LoginRejected,
    Record,
    Register,
)
from sealchat.core.role import Role


class State(enum.Enum):
    """Where a connection is in its life."""

    START = "start"
    """Created; the client has not called initiate(), the server has heard nothing."""
    HANDSHAKE = "handshake"
    """Preambles and Noise handshake messages are being exchanged."""
    VERIFY_PEER = "verify-peer"
    """Client only: the server's key arrived; waiting for accept_peer() or reject_peer()."""
    LOGIN = "login"
    """The channel is secure; only login-phase records may flow until Authenticated."""
    READY = "ready"
    """Authenticated: every record of the session may flow."""
    CLOSED = "closed"
    """Ended by a Bye, a local decision (timeout, rejected key) or the peer's EOF."""
    ERROR = "error"
    """Ended by a protocol violation or a failed write; terminal."""


OPEN_STATES: Final = frozenset({State.LOGIN, State.READY})
"""States in which records may be sent and received."""

_LOGIN_ONLY: Final = frozenset({Login, Register, LoginRejected, Authenticated})


def _build() -> dict[tuple[State, type[Record]], State]:
    table: dict[tuple[State, type[Record]], State] = {}
    for record_type in RECORD_TYPES:
        if record_type.in_login:
            table[State.LOGIN, record_type] = State.LOGIN
        if record_type not in _LOGIN_ONLY:
            table[State.READY, record_type] = State.READY
    # The exceptions to "stay where you are":
    table[State.LOGIN, Authenticated] = State.READY
    table[State.LOGIN, Bye] = State.CLOSED
    table[State.READY, Bye] = State.CLOSED
    return table


TRANSITIONS: Final[dict[tuple[State, type[Record]], State]] = _build()
"""``(state, record type) -> next state`` for every allowed pair."""


def _allowed(state: State, sender: Role) -> dict[type[Record], State]:
    return {
        record_type: next_state
        for (from_state, record_type), next_state in TRANSITIONS.items()
        if from_state is state and sender in record_type.sent_by
    }


SENDABLE: Final[dict[tuple[State, Role], dict[type[Record], State]]] = {
    (state, sender): _allowed(state, sender) for state in State for sender in Role
}
"""``(state, sender) -> {record type: next state}``: TRANSITIONS with direction applied, the
form a connection looks records up in."""
