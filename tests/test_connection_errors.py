"""Peer misbehaviour, API misuse, EOF handling and timers."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from sealchat.core import (
    NEED_DATA,
    Authenticated,
    Bye,
    Connection,
    ConnectionClosed,
    Event,
    FileChunk,
    LocalProtocolError,
    Login,
    Message,
    PeerKeyReceived,
    Ping,
    Pong,
    RemoteProtocolError,
    Role,
    State,
)
from sealchat.core.codec import encode_record
from sealchat.core.connection import CLOSED_BEFORE_PREAMBLE, MAX_RECEIVE_BUFFER
from sealchat.core.limits import MAX_RECORD
from sealchat.core.preamble import Version, encode_preamble
from sealchat.transports.memory import MemoryPair
from tests.pairs import events_from, forge, open_pair, ready_pair


def server() -> Connection:
    return Connection(Role.SERVER, static_key=X25519PrivateKey.generate())


def client() -> Connection:
    return Connection(Role.CLIENT, static_key=X25519PrivateKey.generate())


# --- framing ------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [0, 65536, 2**32 - 1])
def test_bad_frame_length_rejected_after_exactly_four_bytes_in_handshake(length: int) -> None:
    conn = server()
    conn.receive_data(encode_preamble() + length.to_bytes(4, "big")[:3])
    assert conn.next_event() is NEED_DATA
    conn.receive_data(length.to_bytes(4, "big")[3:])
    with pytest.raises(RemoteProtocolError, match=f"frame length {length} is outside"):
        conn.next_event()
    assert conn.state is State.ERROR


@pytest.mark.parametrize("length", [0, 65536])
def test_bad_frame_length_on_open_channel_queues_bye(length: int) -> None:
    pair = ready_pair()
    pair.server.conn.receive_data(length.to_bytes(4, "big"))
    with pytest.raises(RemoteProtocolError, match="frame length"):
        pair.server.conn.next_event()
    assert pair.server.conn.state is State.ERROR
    # The Bye is readable by the client: the channel still worked.
    events = events_from(pair.client.conn, pair.server.conn.data_to_send())
    reason = f"frame length {length} is outside 1..65535"
    assert events == [Bye(reason=reason), ConnectionClosed(reason=reason, clean=True)]
    # The error is sticky.
    with pytest.raises(RemoteProtocolError):
        pair.server.conn.next_event()


def test_largest_frame_is_accepted() -> None:
    pair = ready_pair()
    text = "x" * 8000
    pair.client.conn.send(Message(text=text, room="general"))
    pair.pump()
    assert pair.server.take_events() == [Message(text=text, room="general")]


def test_frame_shorter_than_tag_is_rejected() -> None:
    pair = ready_pair()
    pair.server.conn.receive_data(b"\x00\x00\x00\x05hello")
    with pytest.raises(RemoteProtocolError, match="shorter than its authentication tag"):
        pair.server.conn.next_event()


def test_flipped_ciphertext_bit_is_rejected_with_bye() -> None:
    pair = ready_pair()
    pair.client.conn.send(Message(text="hi", room="general"))
    data = bytearray(pair.client.conn.data_to_send())
    data[-1] ^= 1
    with pytest.raises(RemoteProtocolError, match="decryption failed"):
        events_from(pair.server.conn, bytes(data))
    bye = events_from(pair.client.conn, pair.server.conn.data_to_send())[0]
    assert isinstance(bye, Bye)
    assert bye.reason.startswith("decryption failed")


def test_replayed_frame_is_rejected() -> None:
    pair = ready_pair()
    pair.client.conn.send(Message(text="pay bob 5", room="general"))
    frame = pair.client.conn.data_to_send()
    assert events_from(pair.server.conn, frame) == [Message(text="pay bob 5", room="general")]
    with pytest.raises(RemoteProtocolError, match="decryption failed"):
        events_from(pair.server.conn, frame)


def test_undecodable_record_is_rejected() -> None:
    pair = ready_pair()
    forge(pair.client.conn, b"\x92\xa3msg\xc1")  # 0xc1 is never valid MessagePack
    with pytest.raises(RemoteProtocolError, match="undecodable record"):
        events_from(pair.server.conn, pair.client.conn.data_to_send())


def test_deeply_nested_trailing_element_is_rejected() -> None:
    """Extra trailing elements are allowed; one nested past the decoder's depth limit must
    still end in a RemoteProtocolError (it was a RecursionError, which stopped the server)."""
    pair = ready_pair()
    forge(pair.client.conn, b"\x93\xa4ping\x00" + b"\x91" * 3000 + b"\xc0")
    with pytest.raises(RemoteProtocolError, match="undecodable record"):
        events_from(pair.server.conn, pair.client.conn.data_to_send())
    assert pair.server.conn.state is State.ERROR
    assert pair.server.conn.data_to_send()  # a Bye, with the reason


def test_unknown_record_tag_is_rejected() -> None:
    pair = ready_pair()
    forge(pair.client.conn, b"\x91\xa7unknown")
    with pytest.raises(RemoteProtocolError, match="undecodable record"):
        events_from(pair.server.conn, pair.client.conn.data_to_send())


def test_field_over_its_limit_is_rejected_on_receipt() -> None:
    pair = ready_pair()
    too_long = "x" * 8001
    forge(
        pair.client.conn, b"\x92\xa3msg\xda" + len(too_long).to_bytes(2, "big") + too_long.encode()
    )
    with pytest.raises(RemoteProtocolError, match="length <= 8000"):
        events_from(pair.server.conn, pair.client.conn.data_to_send())


def test_receive_buffer_is_bounded() -> None:
    pair = open_pair(max_receive_buffer=1000)
    with pytest.raises(RemoteProtocolError, match="receive buffer"):
        pair.server.conn.receive_data(b"\x00\x00\x03\xe8" + bytes(1000))
    assert pair.server.conn.state is State.ERROR


def _accepted_client(max_receive_buffer: int = MAX_RECEIVE_BUFFER) -> Connection:
    """A client that has accepted the server's key: KeysEstablished is queued, unread."""
    key = X25519PrivateKey.generate()
    conn = Connection(Role.CLIENT, static_key=key, max_receive_buffer=max_receive_buffer)
    peer = server()
    conn.initiate()
    assert events_from(peer, conn.data_to_send()) == []
    (event,) = events_from(conn, peer.data_to_send())
    assert isinstance(event, PeerKeyReceived)
    conn.accept_peer()
    return conn


def test_an_event_queued_before_an_error_is_not_returned_after_it() -> None:
    conn = _accepted_client(max_receive_buffer=4096)
    with pytest.raises(RemoteProtocolError, match="receive buffer"):
        conn.receive_data(bytes(5000))
    assert conn.state is State.ERROR
    for _ in range(2):  # every later call raises the same error, the first one included
        with pytest.raises(RemoteProtocolError, match="receive buffer"):
            conn.next_event()


def test_an_event_queued_before_a_failed_write_is_not_returned_after_it() -> None:
    conn = _accepted_client()
    conn.send_failed()
    with pytest.raises(RemoteProtocolError, match="failed to send"):
        conn.next_event()


def chunk_frames(pair: MemoryPair, count: int, size: int = 60_000) -> list[bytes]:
    """``count`` FileChunk frames from the client, each as it goes on the wire."""
    frames = []
    for n in range(count):
        pair.client.conn.send(FileChunk(transfer=1, offset=n * size, data=bytes([n]) * size))
        frames.append(pair.client.conn.data_to_send())
    return frames


def chunks_read(events: list[Event]) -> list[int]:
    return [e.data[0] for e in events if isinstance(e, FileChunk)]


def test_a_frame_completed_by_a_large_read_is_the_only_bytes_copied() -> None:
    pair = ready_pair()
    first, *rest = chunk_frames(pair, 4)
    server = pair.server.conn
    assert events_from(server, first[:1000]) == []
    server.receive_data(bytearray(first[1000:] + b"".join(rest)))  # one read brings the rest
    assert len(server._in) == len(first)  # the frame it completes, not the whole read
    events = events_from(server, b"")
    assert chunks_read(events) == [0, 1, 2, 3]
    assert isinstance(events[-1], ConnectionClosed)


def test_bytes_fed_twice_before_reading_are_read_in_order() -> None:
    pair = ready_pair()
    frames = chunk_frames(pair, 5)
    wire = b"".join(frames)
    server = pair.server.conn
    cut = len(frames[0]) // 2
    assert events_from(server, wire[:cut]) == []
    server.receive_data(wire[cut : cut + 100_000])  # completes frame 0, starts frame 2
    server.receive_data(wire[cut + 100_000 : cut + 150_000])  # not read in between
    assert chunks_read(events_from(server, wire[cut + 150_000 :])) == [0, 1, 2, 3, 4]


def test_a_bad_length_fed_with_more_bytes_is_still_rejected() -> None:
    pair = ready_pair()
    (frame,) = chunk_frames(pair, 1)
    pair.server.conn.receive_data(b"\x00\x00\x00\x00")  # not read before more arrives
    with pytest.raises(RemoteProtocolError, match="frame length 0 is outside"):
        events_from(pair.server.conn, frame)


def test_receive_buffer_counts_what_a_completed_frame_leaves() -> None:
    pair = ready_pair(max_receive_buffer=150_000)
    frames = chunk_frames(pair, 3)
    server = pair.server.conn
    assert events_from(server, frames[0][:10_000]) == []
    with pytest.raises(RemoteProtocolError, match="receive buffer"):
        server.receive_data(frames[0][10_000:] + frames[1] + frames[2])
    assert server.state is State.ERROR


def test_receive_buffer_limit_holds_after_a_split_frame_was_read() -> None:
    """Once the bytes after a completed frame are being read, what was left of the earlier
    read must not count against the limit any more, nor be subtracted from it."""
    pair = ready_pair(max_receive_buffer=100_000)
    (frame,) = chunk_frames(pair, 1)
    for n in range(6000):
        pair.client.conn.send(Ping(nonce=n))
    pings = pair.client.conn.data_to_send()
    assert len(pings) > 150_000
    server = pair.server.conn
    assert events_from(server, frame[:10]) == []
    server.receive_data(frame[10:] + pings[:100])  # completes the chunk, starts the pings
    assert isinstance(server.next_event(), FileChunk)
    buffered: list[int] = []

    def feed_without_reading() -> None:
        for at in range(100, len(pings), 10_000):
            server.receive_data(pings[at : at + 10_000])
            buffered.append(len(server._in) - server._in_pos)

    with pytest.raises(RemoteProtocolError, match="receive buffer"):
        feed_without_reading()
    assert max(buffered) <= 100_000
    assert server.state is State.ERROR


# --- preamble and version -----------------------------------------------------------------


def test_client_with_other_major_version_gets_a_clear_error_naming_both() -> None:
    conn = server()
    conn.receive_data(encode_preamble(Version(2, 3)))
    with pytest.raises(RemoteProtocolError) as info:
        conn.next_event()
    message = str(info.value)
    assert "the client speaks sealchat 2.3" in message
    assert "this side speaks sealchat 1.0" in message
    # The server still tells the client its own version.
    assert conn.data_to_send() == encode_preamble()


def test_server_with_other_major_version_gets_a_clear_error_naming_both() -> None:
    conn = client()
    conn.initiate()
    conn.data_to_send()
    conn.receive_data(encode_preamble(Version(7, 0)))
    with pytest.raises(RemoteProtocolError, match=r"the server speaks sealchat 7\.0.*1\.0"):
        conn.next_event()


def test_other_minor_version_is_accepted() -> None:
    conn = server()
    conn.receive_data(encode_preamble(Version(1, 9)))
    assert conn.next_event() is NEED_DATA
    assert conn.state is State.HANDSHAKE


def test_not_sealchat_at_all() -> None:
    conn = server()
    conn.receive_data(b"GET / HTTP/1.1\r\n")
    with pytest.raises(RemoteProtocolError, match="does not speak the sealchat protocol"):
        conn.next_event()


# --- handshake ----------------------------------------------------------------------------


def test_reject_peer_sends_nothing_further() -> None:
    rejected: list[str] = []

    def refuse(conn: Connection, event: object) -> None:
        conn.reject_peer("the server key changed")
        rejected.append("yes")

    pair = MemoryPair(seed=1, on_peer_key=refuse)
    pair.client.conn.initiate()
    sent_before = pair.client.conn.data_to_send()
    pair.server.inbox += sent_before
    pair.pump()
    assert rejected == ["yes"]
    assert pair.client.conn.data_to_send() == b""
    assert pair.client.conn.state is State.CLOSED
    assert pair.client.events[-1] == ConnectionClosed(reason="the server key changed")
    with pytest.raises(LocalProtocolError):
        pair.client.conn.send(Login(username="esha", password="pw"))
    assert pair.server.conn.state is State.HANDSHAKE


def test_records_cannot_be_sent_before_the_handshake_completes() -> None:
    conn = client()
    with pytest.raises(LocalProtocolError, match="cannot send Login in state start"):
        conn.send(Login(username="esha", password="pw"))
    conn.initiate()
    with pytest.raises(LocalProtocolError, match="in state handshake"):
        conn.send(Login(username="esha", password="pw"))


def test_a_client_is_told_to_log_in_first_or_that_it_is_logged_in() -> None:
    pair = open_pair()
    with pytest.raises(
        LocalProtocolError, match=r"^cannot send Message in state login; log in first$"
    ):
        pair.client.conn.send(Message(text="hi", room="general"))
    pair.server.conn.send(Authenticated(username="esha"))
    pair.pump()
    with pytest.raises(LocalProtocolError, match=r"in state ready; logged in already$"):
        pair.client.conn.send(Login(username="esha", password="pw"))


def test_record_in_place_of_handshake_message_is_rejected() -> None:
    # A full session's transport frame arrives where the server expects message 3.
    other = ready_pair(seed=3)
    other.client.conn.send(Message(text="early", room="general"))
    record_frame = other.client.conn.data_to_send()
    fresh = MemoryPair(seed=2)
    fresh.client.conn.initiate()
    fresh.server.conn.receive_data(fresh.client.conn.data_to_send())
    assert fresh.server.conn.next_event() is NEED_DATA  # message 2 queued
    with pytest.raises(RemoteProtocolError, match="handshake failed"):
        events_from(fresh.server.conn, record_frame)


def test_only_the_client_initiates_and_only_once() -> None:
    with pytest.raises(LocalProtocolError):
        server().initiate()
    conn = client()
    conn.initiate()
    with pytest.raises(LocalProtocolError):
        conn.initiate()


def test_next_event_before_initiate_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError, match="initiate"):
        client().next_event()


def test_accept_or_reject_only_when_verifying() -> None:
    conn = client()
    with pytest.raises(LocalProtocolError):
        conn.accept_peer()
    with pytest.raises(LocalProtocolError):
        conn.reject_peer("no")


def test_client_sends_message_three_only_after_accept() -> None:
    decided: list[Connection] = []
    pair = MemoryPair(seed=4, on_peer_key=lambda conn, _event: decided.append(conn))
    pair.client.conn.initiate()
    pair.pump()
    assert decided == [pair.client.conn]
    assert pair.client.conn.state is State.VERIFY_PEER
    assert pair.client.conn.data_to_send() == b""
    assert pair.client.conn.next_event() is NEED_DATA
    pair.client.conn.accept_peer()
    pair.pump()
    assert pair.client.conn.state is State.LOGIN
    assert pair.server.conn.state is State.LOGIN


# --- sending rules ------------------------------------------------------------------------


def test_invalid_record_is_refused_before_any_byte_is_queued() -> None:
    pair = ready_pair()
    with pytest.raises(LocalProtocolError, match="invalid Message"):
        pair.client.conn.send(Message(text="x" * 8001, room="general"))
    with pytest.raises(LocalProtocolError, match="invalid Message"):
        pair.client.conn.send(Message(text=12, room="general"))  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError, match="cannot send str"):
        pair.client.conn.send("hello")  # type: ignore[arg-type]
    assert pair.client.conn.data_to_send() == b""
    assert pair.client.conn.state is State.READY


def test_an_encoding_given_must_be_one_of_the_record_sent() -> None:
    """The state follows the record, the bytes sent are the encoding: they must agree."""
    pair = open_pair()
    client = pair.client.conn
    bye = encode_record(Bye(reason="x"))
    with pytest.raises(LocalProtocolError, match=r"cannot send Login: .* holds a Bye"):
        client.send(Login(username="esha", password="pw"), encoded=bye)
    with pytest.raises(LocalProtocolError, match=r"cannot send Ping: .* holds no record"):
        client.send(Ping(), encoded=b"\x92\xa4pin")
    assert client.data_to_send() == b""
    assert client.state is State.LOGIN
    client.send(Ping(nonce=3), encoded=encode_record(Ping(nonce=3)))
    assert events_from(pair.server.conn, client.data_to_send()) == [Ping(nonce=3)]

    ready = ready_pair().server.conn
    message = encode_record(Message(text="hi", room="general"))
    with pytest.raises(LocalProtocolError, match=r"cannot send Pong: .* holds a Message"):
        ready.send(Pong(), encoded=message)
    huge = message + bytes(MAX_RECORD)  # a prefix that fits, and too many bytes after it
    with pytest.raises(LocalProtocolError, match=f"at most {MAX_RECORD} fit"):
        ready.send(Message(text="hi", room="general"), encoded=huge)
    assert ready.data_to_send() == b""


def test_record_too_large_for_one_message_is_refused() -> None:
    from sealchat.core import FileInfo, FileList

    info = FileInfo(file_id="f", name="n" * 4096, size=1, sha256=bytes(32))
    pair = ready_pair()
    with pytest.raises(LocalProtocolError, match="at most 65519 fit"):
        pair.server.conn.send(FileList(files=[info] * 20))


def test_direction_is_enforced_both_ways() -> None:
    pair = open_pair()
    with pytest.raises(LocalProtocolError, match="a client cannot send Authenticated"):
        pair.client.conn.send(Authenticated(username="me"))
    # A client that forges the record anyway is cut off by the server.
    forge(pair.client.conn, encode_record(Authenticated(username="me")))
    with pytest.raises(RemoteProtocolError, match="a client may not send Authenticated"):
        events_from(pair.server.conn, pair.client.conn.data_to_send())


def test_send_failed_leaves_the_connection_unusable() -> None:
    pair = ready_pair()
    pair.client.conn.send(Message(text="lost", room="general"))
    pair.client.conn.send_failed()
    assert pair.client.conn.state is State.ERROR
    assert pair.client.conn.data_to_send() == b""
    with pytest.raises(LocalProtocolError):
        pair.client.conn.send(Message(text="again", room="general"))
    with pytest.raises(RemoteProtocolError, match="failed to send"):
        pair.client.conn.next_event()


# --- ping, bye and EOF --------------------------------------------------------------------


def test_ping_is_answered_automatically() -> None:
    pair = open_pair()
    pair.server.conn.send(Ping(nonce=12345))
    pair.pump()
    assert pair.client.take_events() == [Ping(nonce=12345)]
    assert pair.server.take_events() == [Pong(nonce=12345)]


def test_bye_ends_the_session_for_both() -> None:
    pair = ready_pair()
    pair.server.conn.send(Bye(reason="server shutting down"))
    assert pair.server.conn.state is State.CLOSED
    pair.pump()
    assert pair.client.take_events() == [
        Bye(reason="server shutting down"),
        ConnectionClosed(reason="server shutting down", clean=True),
    ]
    with pytest.raises(LocalProtocolError):
        pair.client.conn.send(Message(text="too late", room="general"))
    # Late bytes after the end are not read.
    pair.client.conn.receive_data(b"\x00\x00\x00\x00")
    assert pair.client.conn.next_event() == ConnectionClosed(
        reason="server shutting down", clean=True
    )


def test_eof_between_frames_closes_uncleanly() -> None:
    pair = ready_pair()
    pair.client.conn.receive_data(b"")
    assert pair.client.conn.next_event() == ConnectionClosed(
        reason="the peer closed the connection without saying goodbye", clean=False
    )
    with pytest.raises(LocalProtocolError):
        pair.client.conn.receive_data(b"more")


def test_eof_mid_frame_is_an_error() -> None:
    pair = ready_pair()
    pair.client.conn.send(Message(text="cut", room="general"))
    data = pair.client.conn.data_to_send()
    pair.server.conn.receive_data(data[:-1])
    assert pair.server.conn.next_event() is NEED_DATA
    pair.server.conn.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="middle of a frame"):
        pair.server.conn.next_event()


def test_eof_before_the_peers_first_byte_says_so() -> None:
    conn = Connection(Role.CLIENT, static_key=X25519PrivateKey.generate())
    conn.initiate()
    conn.receive_data(b"")  # a server that turns the connection away at once
    with pytest.raises(RemoteProtocolError) as closed:
        conn.next_event()
    assert str(closed.value) == CLOSED_BEFORE_PREAMBLE
    assert conn.state is State.ERROR


def test_eof_during_handshake_is_an_error() -> None:
    conn = server()
    conn.receive_data(encode_preamble())
    conn.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="during the handshake"):
        conn.next_event()


# --- timers -------------------------------------------------------------------------------


def test_handshake_times_out_at_the_injected_deadline() -> None:
    conn = Connection(
        Role.SERVER, static_key=X25519PrivateKey.generate(), now=100.0, handshake_timeout=5.0
    )
    assert conn.get_timer() == 105.0
    conn.handle_timer(104.9)
    assert conn.state is State.START
    conn.handle_timer(105.0)
    assert conn.next_event() == ConnectionClosed(reason="the handshake timed out")
    assert conn.get_timer() is None
    assert conn.data_to_send() == b""


def test_keepalive_pings_a_silent_peer_then_drops_it() -> None:
    pair = open_pair(keepalive_interval=30.0, handshake_timeout=10.0)
    server = pair.server.conn
    first = server.get_timer()
    assert first == 40.0
    server.handle_timer(40.0)  # heard the handshake in this interval: no ping
    assert server.data_to_send() == b""
    server.handle_timer(70.0)  # silent for a whole interval: ping
    assert events_from(pair.client.conn, server.data_to_send()) == [Ping(nonce=0)]
    server.handle_timer(100.0)  # still silent (the pong was not delivered): give up
    assert server.state is State.CLOSED
    assert server.next_event() == ConnectionClosed(reason="the peer stopped responding")
    assert events_from(pair.client.conn, server.data_to_send()) == [
        Bye(reason="the peer stopped responding"),
        ConnectionClosed(reason="the peer stopped responding", clean=True),
    ]


def test_keepalive_is_satisfied_by_a_pong() -> None:
    pair = open_pair(keepalive_interval=30.0, handshake_timeout=10.0)
    server = pair.server.conn
    server.handle_timer(40.0)
    server.handle_timer(70.0)
    pair.pump()  # ping out, pong back
    assert pair.server.take_events() == [Pong(nonce=0)]
    server.handle_timer(100.0)
    server.handle_timer(130.0)
    assert server.state is State.LOGIN
    assert server.get_timer() == 160.0


def test_keepalive_leaves_a_peer_alone_while_output_is_on_its_way_to_it() -> None:
    # A Ping queued behind output still on its way cannot reach the peer before that output:
    # at a tick while the transport is still sending, the peer is neither pinged nor dropped
    # (one that stops taking the output is the transport's to drop).
    pair = open_pair(keepalive_interval=30.0, handshake_timeout=10.0)
    server = pair.server.conn
    server.handle_timer(40.0)  # heard the handshake
    for tick in (70.0, 100.0, 130.0):
        server.handle_timer(tick, sending=True)
        assert server.data_to_send() == b""
    assert server.state is State.LOGIN
    server.handle_timer(160.0)  # all sent: silent and idle, so pinged, then dropped
    assert events_from(pair.client.conn, server.data_to_send()) == [Ping(nonce=0)]
    server.handle_timer(190.0)
    assert server.next_event() == ConnectionClosed(reason="the peer stopped responding")


def test_a_ping_sent_before_output_piled_up_is_forgotten_while_it_is_on_its_way() -> None:
    # The Ping went out behind nothing; then output piled up behind it. A tick while that is
    # on its way does not drop the peer for the unanswered Ping; the wait starts again once
    # all is sent.
    pair = open_pair(keepalive_interval=30.0, handshake_timeout=10.0)
    server = pair.server.conn
    server.handle_timer(40.0)
    server.handle_timer(70.0)
    assert events_from(pair.client.conn, server.data_to_send()) == [Ping(nonce=0)]
    server.handle_timer(100.0, sending=True)
    assert server.state is State.LOGIN
    server.handle_timer(130.0)
    assert events_from(pair.client.conn, server.data_to_send()) == [Ping(nonce=0)]
    assert server.state is State.LOGIN
    server.handle_timer(160.0)
    assert server.state is State.CLOSED


def test_timer_before_deadline_does_nothing() -> None:
    pair = open_pair()
    timer = pair.client.conn.get_timer()
    assert timer is not None
    pair.client.conn.handle_timer(timer - 1)
    assert pair.client.conn.data_to_send() == b""
    assert pair.client.conn.get_timer() == timer


def test_invalid_utf8_in_a_record_is_a_protocol_error() -> None:
    pair = ready_pair()
    forge(pair.client.conn, b"\x92\xa4join\xa2\xff\xfe")  # ["join", <bad UTF-8>]
    with pytest.raises(RemoteProtocolError, match="undecodable record"):
        events_from(pair.server.conn, pair.client.conn.data_to_send())
    assert pair.server.conn.state is State.ERROR
    bye = events_from(pair.client.conn, pair.server.conn.data_to_send())[0]
    assert isinstance(bye, Bye)


def test_unencodable_text_is_a_local_error() -> None:
    pair = ready_pair()
    with pytest.raises(LocalProtocolError, match="surrogates"):
        pair.client.conn.send(Message(text="\ud800", room="general"))
    assert pair.client.conn.state is State.READY
