"""Hypothesis: however a valid session is cut, the events are the same; whatever bytes arrive,
only RemoteProtocolError escapes, nothing hangs and no buffer outgrows its limit."""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from itertools import pairwise

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealchat.core import (
    NEED_DATA,
    Connection,
    ConnectionClosed,
    Event,
    PeerKeyReceived,
    RemoteProtocolError,
    Role,
    State,
    limits,
)
from sealchat.transports.memory import MemoryPair
from tests.samples import session_records
from tests.test_session import run_full_session

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MAX_BUFFER = 200_000


def _key(byte: int) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(bytes([byte]) * 32)


def fresh(role: Role, *, initiate: bool = True) -> Connection:
    """A connection with the fixed keys of the reference session (a client has initiated and
    its first bytes, identical to the reference's, are discarded)."""
    static, ephemeral = (_key(1), _key(2)) if role is Role.CLIENT else (_key(3), _key(4))
    conn = Connection(
        role, static_key=static, generate_keypair=lambda: ephemeral, max_receive_buffer=MAX_BUFFER
    )
    if role is Role.CLIENT and initiate:
        conn.initiate()
        conn.data_to_send()
    return conn


@cache
def reference() -> tuple[bytes, bytes, tuple[Event, ...], tuple[Event, ...]]:
    """A full session's two byte streams and the events each side saw."""
    pair = MemoryPair(seed=0, client=fresh(Role.CLIENT, initiate=False), server=fresh(Role.SERVER))
    run_full_session(pair)
    return (
        bytes(pair.client.sent),
        bytes(pair.server.sent),
        tuple(pair.client.events),
        tuple(pair.server.events),
    )


def frames(stream: bytes) -> list[bytes]:
    """Split a stream into its preamble and its length-prefixed frames."""
    parts, pos = [stream[: limits.PREAMBLE_SIZE]], limits.PREAMBLE_SIZE
    while pos < len(stream):
        size = int.from_bytes(stream[pos : pos + 4], "big")
        parts.append(stream[pos : pos + 4 + size])
        pos += 4 + size
    return parts


def act_as_reference(conn: Connection, event: Event) -> None:
    """Do what the applications did in the reference session when ``event`` arrived: the
    client trusts the server's key; the server logs the client in after its last login
    record."""
    if isinstance(event, PeerKeyReceived):
        conn.accept_peer()
    elif conn.role is Role.SERVER and event == session_records(Role.CLIENT)[0][-1]:
        for record in session_records(Role.SERVER)[0]:
            conn.send(record)


def feed(conn: Connection, chunks: Iterable[bytes], *, eof: bool = True) -> list[Event]:
    """Deliver chunks (then EOF), collecting events; only RemoteProtocolError may escape."""
    events: list[Event] = []
    for chunk in [*chunks, b""] if eof else chunks:
        conn.receive_data(chunk)
        assert len(conn._in) <= MAX_BUFFER
        for _ in range(10_000):
            event = conn.next_event()
            if event is NEED_DATA:
                break
            events.append(event)
            if isinstance(event, ConnectionClosed):
                return events
            act_as_reference(conn, event)
        else:
            raise AssertionError("next_event() never returned NEED_DATA")
    return events


def cut(data: bytes, points: list[int]) -> list[bytes]:
    bounds = sorted({p % (len(data) + 1) for p in points})
    edges = [0, *bounds, len(data)]
    return [data[a:b] for a, b in pairwise(edges) if b > a]


def test_reference_session_is_complete() -> None:
    to_server, _, _, server_events = reference()
    assert isinstance(server_events[-1], ConnectionClosed)
    assert server_events[-1].clean
    login, ready = session_records(Role.CLIENT)
    # preamble, handshake messages 1 and 3, the records, Ping and Bye
    assert len(frames(to_server)) == 3 + len(login) + len(ready) + 2


@FUZZ
@given(st.lists(st.integers(min_value=0), max_size=40))
def test_any_split_of_the_client_stream_gives_the_same_server_events(points: list[int]) -> None:
    to_server, _, _, server_events = reference()
    assert feed(fresh(Role.SERVER), cut(to_server, points)) == list(server_events)


@FUZZ
@given(st.lists(st.integers(min_value=0), max_size=40))
def test_any_split_of_the_server_stream_gives_the_same_client_events(points: list[int]) -> None:
    _, to_client, client_events, _ = reference()
    # The reference client ended the session itself; here the server's stream just stops.
    assert feed(fresh(Role.CLIENT), cut(to_client, points)) == [
        *client_events[:-1],
        ConnectionClosed(reason="the peer closed the connection without saying goodbye"),
    ]


def _survives(conn: Connection, chunks: list[bytes]) -> None:
    try:
        feed(conn, chunks)
    except RemoteProtocolError:
        assert conn.state is State.ERROR
        assert len(conn._in) == 0


@FUZZ
@given(st.binary(max_size=4096), st.sampled_from(Role))
def test_arbitrary_bytes_only_raise_remote_protocol_error(data: bytes, role: Role) -> None:
    _survives(fresh(role), [data])


@FUZZ
@given(st.binary(min_size=1, max_size=4096), st.sampled_from(Role), st.integers(0, 40))
def test_arbitrary_bytes_after_a_valid_prefix(data: bytes, role: Role, keep: int) -> None:
    to_server, to_client, _, _ = reference()
    stream = to_server if role is Role.SERVER else to_client
    prefix = b"".join(frames(stream)[: keep + 1])
    _survives(fresh(role), [prefix, data])


@FUZZ
@given(st.integers(min_value=0), st.integers(1, 255), st.sampled_from(Role))
def test_one_flipped_byte_is_caught(index: int, mask: int, role: Role) -> None:
    to_server, to_client, _, _ = reference()
    stream = bytearray(to_server if role is Role.SERVER else to_client)
    index %= len(stream)
    if role is Role.CLIENT and 5 <= index < limits.PREAMBLE_SIZE:
        # The server's minor version and reserved bytes are advisory and not authenticated
        # in v1 (the prologue is the client's preamble alone): see docs/protocol.md.
        return
    stream[index] ^= mask
    conn = fresh(role)
    try:
        feed(conn, [bytes(stream)])
    except RemoteProtocolError:
        return
    raise AssertionError("a flipped byte went unnoticed")


@FUZZ
@given(st.integers(min_value=0), st.sampled_from(Role))
def test_truncated_stream(length: int, role: Role) -> None:
    to_server, to_client, _, _ = reference()
    stream = to_server if role is Role.SERVER else to_client
    _survives(fresh(role), [stream[: length % len(stream)]])


@FUZZ
@given(st.data(), st.sampled_from(Role), st.sampled_from(["duplicate", "swap", "drop"]))
def test_duplicated_reordered_or_dropped_frames_are_caught(
    data: st.DataObject, role: Role, how: str
) -> None:
    to_server, to_client, _, _ = reference()
    parts = frames(to_server if role is Role.SERVER else to_client)
    i = data.draw(st.integers(1, len(parts) - 2))
    if how == "duplicate":
        parts.insert(i, parts[i])
    elif how == "swap":
        if parts[i] == parts[i + 1]:
            return
        parts[i], parts[i + 1] = parts[i + 1], parts[i]
    else:
        del parts[i]
    conn = fresh(role)
    try:
        feed(conn, [b"".join(parts)])
    except RemoteProtocolError:
        assert conn.state is State.ERROR
        return
    raise AssertionError(f"a {how} frame went unnoticed")
