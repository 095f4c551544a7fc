"""Every (state, record type) pair, sent and received, for both roles."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from sealchat.core import (
    RECORD_TYPES,
    Authenticated,
    Bye,
    Connection,
    ConnectionClosed,
    LocalProtocolError,
    Login,
    LoginRejected,
    Pong,
    Record,
    Register,
    RemoteProtocolError,
    Role,
    State,
)
from sealchat.core.codec import encode_record
from sealchat.core.state import TRANSITIONS
from sealchat.transports.memory import MemoryPair
from tests.pairs import events_from, forge, open_pair, ready_pair
from tests.samples import SAMPLES


def _side(pair: MemoryPair, role: Role) -> Connection:
    return pair.client.conn if role is Role.CLIENT else pair.server.conn


def _start(role: Role) -> Connection:
    return Connection(role, static_key=X25519PrivateKey.generate())


def _handshake(role: Role) -> Connection:
    pair = MemoryPair(seed=1)
    pair.client.conn.initiate()
    if role is Role.SERVER:
        events_from(pair.server.conn, pair.client.conn.data_to_send())
    return _side(pair, role)


def _verify_peer(role: Role) -> Connection:
    pair = MemoryPair(seed=1, on_peer_key=lambda conn, event: None)
    pair.handshake()
    return _side(pair, role)


def _closed(role: Role) -> Connection:
    conn = _side(ready_pair(), role)
    conn.send(Bye(reason="done"))
    return conn


def _error(role: Role) -> Connection:
    conn = _side(ready_pair(), role)
    conn.receive_data(b"\xff\xff\xff\xff")
    with pytest.raises(RemoteProtocolError):
        conn.next_event()
    return conn


BUILDERS: dict[State, Callable[[Role], Connection]] = {
    State.START: _start,
    State.HANDSHAKE: _handshake,
    State.VERIFY_PEER: _verify_peer,
    State.LOGIN: lambda role: _side(open_pair(), role),
    State.READY: lambda role: _side(ready_pair(), role),
    State.CLOSED: _closed,
    State.ERROR: _error,
}


def _cases() -> list[tuple[State, Role, type[Record]]]:
    cases = []
    for state in State:
        for role in Role:
            if state is State.VERIFY_PEER and role is Role.SERVER:
                continue  # only clients verify the peer's key
            cases += [(state, role, record_type) for record_type in RECORD_TYPES]
    return cases


def _id(case: object) -> str:
    return getattr(case, "value", getattr(case, "__name__", str(case)))


@pytest.mark.parametrize(("state", "role", "record_type"), _cases(), ids=_id)
def test_send(state: State, role: Role, record_type: type[Record]) -> None:
    conn = BUILDERS[state](role)
    assert conn.state is state
    allowed = TRANSITIONS.get((state, record_type))
    if allowed is not None and role in record_type.sent_by:
        conn.send(SAMPLES[record_type])
        assert conn.state is allowed
        assert conn.data_to_send()
    else:
        conn.data_to_send()
        with pytest.raises(LocalProtocolError):
            conn.send(SAMPLES[record_type])
        assert conn.state is state
        assert conn.data_to_send() == b""


OPEN_CASES = [
    (state, role, record_type)
    for state in (State.LOGIN, State.READY)
    for role in Role
    for record_type in RECORD_TYPES
]


@pytest.mark.parametrize(("state", "role", "record_type"), OPEN_CASES, ids=_id)
def test_receive(state: State, role: Role, record_type: type[Record]) -> None:
    """``role`` receives ``record_type`` from a peer that forges it regardless of the rules."""
    pair = open_pair() if state is State.LOGIN else ready_pair()
    receiver, sender = _side(pair, role), _side(pair, role.peer)
    record = SAMPLES[record_type]
    forge(sender, encode_record(record))
    data = sender.data_to_send()
    allowed = TRANSITIONS.get((state, record_type))
    if allowed is not None and role.peer in record_type.sent_by:
        events = events_from(receiver, data)
        assert events[0] == record
        assert receiver.state is allowed
        if record_type is Bye:
            assert events[1:] == [ConnectionClosed(reason="see you", clean=True)]
        if record_type.__name__ == "Ping":
            assert events_from(sender, receiver.data_to_send()) == [Pong(nonce=7)]
    else:
        with pytest.raises(RemoteProtocolError, match=record_type.__name__):
            events_from(receiver, data)
        assert receiver.state is State.ERROR
        bye = events_from(sender, receiver.data_to_send())[0]
        assert isinstance(bye, Bye)
        assert record_type.__name__ in bye.reason


# --- a client's login awaiting its answer ----------------------------------------------------
# Not a state of its own (the connection stays in LOGIN): while a Login or Register awaits
# Authenticated or LoginRejected, the client sends what LOGIN allows except another one.


def _awaiting(first: type[Login | Register]) -> MemoryPair:
    pair = open_pair()
    pair.client.conn.send(first(username="esha", password="pw"))
    events_from(pair.server.conn, pair.client.conn.data_to_send())
    return pair


@pytest.mark.parametrize("first", [Login, Register], ids=_id)
@pytest.mark.parametrize("record_type", RECORD_TYPES, ids=_id)
def test_send_while_a_login_awaits_its_answer(
    first: type[Login | Register], record_type: type[Record]
) -> None:
    client = _awaiting(first).client.conn
    assert client.state is State.LOGIN
    allowed = TRANSITIONS.get((State.LOGIN, record_type))
    another = record_type in {Login, Register}
    if allowed is not None and Role.CLIENT in record_type.sent_by and not another:
        client.send(SAMPLES[record_type])
        assert client.state is allowed
        assert client.data_to_send()
    else:
        with pytest.raises(LocalProtocolError) as refused:
            client.send(SAMPLES[record_type])
        if another:
            assert str(refused.value) == (
                f"cannot send {record_type.__name__}: the {first.__name__} sent before is "
                "not answered yet (Authenticated or LoginRejected)"
            )
        assert client.state is State.LOGIN
        assert client.data_to_send() == b""


@pytest.mark.parametrize("again", [Login, Register], ids=_id)
def test_a_login_refused_may_be_tried_again(again: type[Login | Register]) -> None:
    pair = _awaiting(Login)
    pair.server.conn.send(LoginRejected())
    assert events_from(pair.client.conn, pair.server.conn.data_to_send()) == [LoginRejected()]
    pair.client.conn.send(again(username="esha", password="pw2"))
    with pytest.raises(LocalProtocolError, match="not answered yet"):
        pair.client.conn.send(Login(username="esha", password="pw3"))
    (received,) = events_from(pair.server.conn, pair.client.conn.data_to_send())
    assert isinstance(received, again)


def test_a_login_answered_by_authenticated_leaves_login_behind() -> None:
    pair = _awaiting(Register)
    pair.server.conn.send(Authenticated(username="esha"))
    events_from(pair.client.conn, pair.server.conn.data_to_send())
    assert pair.client.conn.state is State.READY
    with pytest.raises(LocalProtocolError, match="in state ready; logged in already"):
        pair.client.conn.send(Login(username="esha", password="pw"))


def test_a_server_still_takes_a_second_login_in_flight() -> None:
    """The rule binds the client; a server answers each Login it gets in LOGIN, as before."""
    pair = _awaiting(Login)
    forge(pair.client.conn, encode_record(Login(username="esha", password="pw2")))
    (second,) = events_from(pair.server.conn, pair.client.conn.data_to_send())
    assert second == Login(username="esha", password="pw2")
    assert pair.server.conn.state is State.LOGIN


def test_the_table_covers_every_record_in_ready_except_login_ones() -> None:
    login_only = {"Login", "Register", "LoginRejected", "Authenticated"}
    ready = {t.__name__ for (s, t) in TRANSITIONS if s is State.READY}
    assert ready == {t.__name__ for t in RECORD_TYPES} - login_only
