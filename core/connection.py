"""The sans-I/O sealchat connection: bytes in, events out; records in, bytes out.

One ``Connection`` serves one TCP connection, on either side. It never touches a socket, a
clock or the system's randomness: the transport feeds it bytes with ``receive_data``, asks for
events with ``next_event``, writes whatever ``data_to_send`` returns, passes the time to
``handle_timer`` and reports write failures with ``send_failed``. A transport that bounds
every write with a timeout of its own also tells ``handle_timer`` whether output is still on
its way to the peer, so that the keepalive does not take a peer still reading what was sent to
it for a silent one.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from typing import Final, NoReturn

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from sealchat.core import limits
from sealchat.core.codec import DECODE_ERRORS, PREFIXES, decode_record, encode_record
from sealchat.core.errors import LocalProtocolError, RemoteProtocolError
from sealchat.core.events import (
    NEED_DATA,
    ConnectionClosed,
    Event,
    KeysEstablished,
    NeedData,
    PeerKeyReceived,
)
from sealchat.core.fingerprint import fingerprint
from sealchat.core.noise import CipherState, HandshakeState, NoiseError
from sealchat.core.preamble import encode_preamble, parse_preamble
from sealchat.core.records import Bye, Login, LoginRejected, Ping, Pong, Record, Register
from sealchat.core.role import Role
from sealchat.core.state import OPEN_STATES, SENDABLE, State

NOISE_PROTOCOL: Final = "Noise_XX_25519_AESGCM_SHA256"
HANDSHAKE_TIMEOUT: Final = 10.0
KEEPALIVE_INTERVAL: Final = 30.0
MAX_RECEIVE_BUFFER: Final = 1 << 20

_BEFORE_PREAMBLE: Final = "before sending its preamble"
CLOSED_BEFORE_PREAMBLE: Final = f"the peer closed the connection {_BEFORE_PREAMBLE}"
"""The error when the peer hangs up before its first byte: what a client sees of a server
that turns its connection away at once (full, shutting down, or at its limit of connections
from the client's address: docs/protocol.md 9.12)."""

_HEADER: Final = struct.Struct(">I")
_HEADER_SIZE: Final = _HEADER.size
_MAX_FRAME: Final = limits.MAX_FRAME
_MAX_RECORD: Final = limits.MAX_RECORD
_TAG_SIZE: Final = limits.TAG_SIZE
_VIEW_AT: Final = 2048

_LOGIN: Final = State.LOGIN
_LOGIN_REQUESTS: Final = frozenset({Login, Register})
"""What a client may have only one of in flight (docs/protocol.md 6.6.1)."""

_CLIENT_HINTS: Final = {State.LOGIN: "; log in first", State.READY: "; logged in already"}
"""What a client is told when a record is refused in these states, after the refusal."""


def _not_encoding_of(event: Record, encoded: bytes) -> str:
    """Why ``encoded`` cannot be sent as ``event``."""
    name = type(event).__name__
    if len(encoded) > _MAX_RECORD:
        return f"encoded {name} of {len(encoded)} bytes; at most {_MAX_RECORD} fit in one message"
    try:
        found = f"a {type(decode_record(encoded)).__name__}"
    except DECODE_ERRORS:
        found = "no record"
    return f"cannot send {name}: what is given as its encoding holds {found}"


class Connection:
    """One end of a sealchat connection (see docs/protocol.md for the wire format).

    ``now`` is the creation time on the transport's monotonic clock; the handshake must finish
    within ``handshake_timeout`` seconds of it. Once open, a peer silent for a whole
    ``keepalive_interval`` is pinged, and one silent for two is dropped, unless the transport
    is still sending to it (``handle_timer``). ``generate_keypair``
    supplies ephemeral keys (inject a deterministic one in tests). ``rekey_interval`` is part of
    the wire contract; change it only to exercise rekeying in tests, on both sides.
    """

    def __init__(
        self,
        role: Role,
        *,
        static_key: X25519PrivateKey,
        now: float = 0.0,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        keepalive_interval: float = KEEPALIVE_INTERVAL,
        max_receive_buffer: int = MAX_RECEIVE_BUFFER,
        rekey_interval: int = limits.REKEY_INTERVAL,
        generate_keypair: Callable[[], X25519PrivateKey] = X25519PrivateKey.generate,
    ) -> None:
        if rekey_interval < 1:
            raise ValueError("rekey_interval must be at least 1")
        self.role: Final = role
        self._state = State.START
        self._may_send: dict[type[Record], State] = {}
        self._may_receive: dict[type[Record], State] = {}
        self._login_sent: type[Record] | None = None
        """Client: the Login or Register sent and not answered yet (Authenticated or
        LoginRejected): until the answer, another is refused (docs/protocol.md 6.6.1)."""
        self._preamble = encode_preamble()
        self._generate_keypair = generate_keypair
        self._static_key = static_key
        self._handshake: HandshakeState | None = None
        """The Noise handshake while it runs; dropped once it is over (Noise 5.3), with the
        ephemeral key and chaining key it holds."""
        self._peer_key: bytes | None = None
        self._send_cipher: CipherState | None = None
        self._recv_cipher: CipherState | None = None
        self._rekey_interval = rekey_interval
        self._sends_before_rekey = rekey_interval
        self._receipts_before_rekey = rekey_interval
        self._peer_preamble_seen = False

        self._in = b""
        self._in_pos = 0
        self._next_in = b""
        self._next_pos = 0
        """Bytes that arrived after those completing a frame begun in ``_in`` (``_in`` then
        ends with that frame); read from ``_next_pos`` once ``_in`` is: completing a frame
        copies that frame only, not everything that arrived with its end."""
        self._eof = False
        self._max_receive_buffer = max_receive_buffer
        self._out: list[bytes | bytearray] = []
        self._bytes_queued = 0
        self._pending: deque[Event] = deque()
        self._closed: ConnectionClosed | None = None
        self._error: str | None = None

        self._handshake_deadline = now + handshake_timeout
        self._keepalive_interval = keepalive_interval
        self._next_keepalive: float | None = None
        self._heard_since_tick = False
        self._ping_outstanding = False

    def __repr__(self) -> str:
        return f"<Connection {self.role.value} {self._state.value}>"

    def _enter(self, state: State) -> None:
        self._state = state
        self._login_sent = None  # answered (Authenticated), or the session is over
        self._may_send = SENDABLE[state, self.role]
        self._may_receive = SENDABLE[state, self.role.peer]

    # --- inspection ---------------------------------------------------------------------

    @property
    def state(self) -> State:
        """The current state."""
        return self._state

    @property
    def bytes_to_send(self) -> int:
        """Bytes queued and not yet taken by ``data_to_send`` (for backpressure)."""
        return self._bytes_queued

    @property
    def peer_public_key(self) -> bytes | None:
        """The peer's static public key, once message 2 (client) or 3 (server) is read."""
        return self._peer_key

    # --- handshake ----------------------------------------------------------------------

    def initiate(self) -> None:
        """Client: queue the preamble and handshake message 1."""
        if self.role is not Role.CLIENT:
            raise LocalProtocolError("only the client initiates")
        if self._state is not State.START:
            raise LocalProtocolError(f"initiate() in state {self._state.value}")
        self._start_handshake(initiator=True, prologue=self._preamble)
        self._queue(self._preamble)
        self._write_handshake()

    def accept_peer(self) -> None:
        """Client: the server's key is trusted; queue message 3 and open the channel."""
        if self._state is not State.VERIFY_PEER:
            raise LocalProtocolError(f"accept_peer() in state {self._state.value}")
        self._write_handshake()
        self._finish_handshake()

    def reject_peer(self, reason: str) -> None:
        """Client: the server's key is not trusted. Nothing more is sent; the connection closes."""
        if self._state is not State.VERIFY_PEER:
            raise LocalProtocolError(f"reject_peer() in state {self._state.value}")
        self._close(reason, clean=False)

    def _start_handshake(self, *, initiator: bool, prologue: bytes) -> None:
        self._handshake = HandshakeState(
            NOISE_PROTOCOL,
            initiator=initiator,
            prologue=prologue,
            s=self._static_key,
            generate_keypair=self._generate_keypair,
        )
        self._enter(State.HANDSHAKE)

    def _write_handshake(self) -> None:
        assert self._handshake is not None
        message = self._handshake.write_message(b"")
        self._queue(_HEADER.pack(len(message)))
        self._queue(message)

    def _finish_handshake(self) -> None:
        handshake = self._handshake
        assert handshake is not None
        assert handshake.finished
        initiator_cipher, responder_cipher = handshake.split()
        self._handshake = None  # Noise 5.3: nothing of the handshake is kept after Split
        if self.role is Role.CLIENT:
            self._send_cipher, self._recv_cipher = initiator_cipher, responder_cipher
        else:
            self._send_cipher, self._recv_cipher = responder_cipher, initiator_cipher
        peer_key = self._peer_key
        assert peer_key is not None
        self._enter(State.LOGIN)
        self._next_keepalive = self._handshake_deadline + self._keepalive_interval
        self._pending.append(
            KeysEstablished(
                peer_key=peer_key,
                fingerprint=fingerprint(peer_key),
                handshake_hash=handshake.handshake_hash,
            )
        )

    # --- sending ------------------------------------------------------------------------

    def send(self, event: Record, *, encoded: bytes | None = None) -> None:
        """Queue ``event`` as one encrypted record. Raises ``LocalProtocolError`` if the record
        is invalid, not ours to send, or not allowed in the current state.

        ``encoded``, if given, must be ``encode_record(event)``: a broadcast encodes once and
        encrypts per recipient. It is checked only cheaply (``LocalProtocolError`` if it is not
        the encoding of a record of ``event``'s type, or larger than a record may be): what the
        state changes by is ``event``, what is sent is ``encoded``."""
        record_type = type(event)
        next_state = self._may_send.get(record_type)
        if next_state is None:
            name = record_type.__name__
            if isinstance(event, Record) and self.role not in event.sent_by:
                raise LocalProtocolError(f"a {self.role.value} cannot send {name}")
            hint = _CLIENT_HINTS.get(self._state, "") if self.role is Role.CLIENT else ""
            raise LocalProtocolError(f"cannot send {name} in state {self._state.value}{hint}")
        if encoded is None:
            payload = encode_record(event)
        elif encoded.startswith(PREFIXES[record_type]) and len(encoded) <= _MAX_RECORD:
            payload = encoded
        else:
            raise LocalProtocolError(_not_encoding_of(event, encoded))
        if next_state is _LOGIN and record_type in _LOGIN_REQUESTS:
            if self._login_sent is not None:
                raise LocalProtocolError(
                    f"cannot send {record_type.__name__}: the {self._login_sent.__name__} "
                    "sent before is not answered yet (Authenticated or LoginRejected)"
                )
            self._login_sent = record_type
        # Encrypted and framed here, not in a helper: this runs once per record sent.
        cipher = self._send_cipher
        assert cipher is not None
        ciphertext = cipher.encrypt_with_ad(None, payload)  # no ad: None is the cheaper spelling
        out = self._out
        out.append(_HEADER.pack(len(ciphertext)))
        out.append(ciphertext)
        self._bytes_queued += _HEADER_SIZE + len(ciphertext)
        self._sends_before_rekey -= 1
        if not self._sends_before_rekey:
            cipher.rekey()
            self._sends_before_rekey = self._rekey_interval
        if next_state is not self._state:
            self._enter(next_state)
            if next_state is State.CLOSED:
                assert isinstance(event, Bye)
                self._closed = ConnectionClosed(reason=event.reason, clean=True)

    def _queue(self, data: bytes) -> None:
        self._out.append(data)
        self._bytes_queued += len(data)

    def data_to_send(self) -> bytes:
        """All bytes queued since the last call; the transport writes them in one call."""
        out = b"".join(self._out)
        self._out.clear()
        self._bytes_queued = 0
        return out

    def send_failed(self) -> None:
        """The transport could not write: the connection is unusable from now on, and
        ``next_event`` raises (an event queued before, such as KeysEstablished, is dropped)."""
        self._out.clear()
        self._bytes_queued = 0
        self._pending.clear()
        if self._state is not State.ERROR:
            self._enter(State.ERROR)
            self._error = "the transport failed to send"

    # --- receiving ----------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the peer; ``b""`` means the peer closed its side (EOF)."""
        if self._eof:
            raise LocalProtocolError("receive_data() after EOF")
        if not data:
            self._eof = True
            return
        if self._state in (State.CLOSED, State.ERROR):
            return  # the session is over: late bytes are not read
        self._heard_since_tick = True
        if type(data) is not bytes:
            data = bytes(data)  # kept (not copied) below: it must not change
        left = len(self._in) - self._in_pos
        if self._next_in:  # fed again before everything was read: one buffer again
            self._in = b"".join(
                (
                    memoryview(self._in)[self._in_pos :],
                    memoryview(self._next_in)[self._next_pos :],
                    data,
                )
            )
            self._next_in = b""
            self._next_pos = 0
        elif not left:  # all read: adopt the bytes without copying them
            self._in = data
        elif 0 < (missing := self._frame_missing(left)) < len(data):
            # Complete the frame begun, and keep the rest as it is.
            self._in = b"".join((memoryview(self._in)[self._in_pos :], memoryview(data)[:missing]))
            self._next_in, self._next_pos = data, missing
        else:
            self._in = b"".join((memoryview(self._in)[self._in_pos :], data))
        self._in_pos = 0
        if len(self._in) + len(self._next_in) - self._next_pos > self._max_receive_buffer:
            self._fail("the peer sent more than the receive buffer holds")

    def _frame_missing(self, left: int) -> int:
        """How many bytes the record frame begun in the ``left`` unread bytes of ``_in``
        still lacks; 0 if that is not known (no frame header yet, a bad length, the channel
        not open) or nothing is missing."""
        if left < _HEADER_SIZE or not self._may_receive:
            return 0
        size: int = _HEADER.unpack_from(self._in, self._in_pos)[0]
        if not 0 < size <= _MAX_FRAME:
            return 0  # rejected when the frame is read
        return max(0, _HEADER_SIZE + size - left)

    def next_event(self) -> Event | NeedData:
        """The next event, or ``NEED_DATA``. Peer misbehaviour raises ``RemoteProtocolError``
        (after queueing a Bye where the channel still works); the connection is then in
        ``State.ERROR`` and every later call raises the same error."""
        if self._pending:
            return self._pending.popleft()
        if not self._may_receive:  # the channel is not open
            return self._next_event_without_channel()
        # Read one record here, not in helpers: this runs once per record received.
        try:
            buf, pos = self._in, self._in_pos
            size = _HEADER.unpack_from(buf, pos)[0] if len(buf) - pos >= _HEADER_SIZE else 0
            start = pos + _HEADER_SIZE
            end = start + size
            if not _TAG_SIZE <= size <= _MAX_FRAME or end > len(buf):
                # Not a whole frame of a good size in this buffer: the general path.
                end = self._frame_end()
                if not end:
                    return self._need_data(None)
                buf, start = self._in, self._in_pos + _HEADER_SIZE
                if end - start < _TAG_SIZE:
                    raise RemoteProtocolError("a frame shorter than its authentication tag")
            cipher = self._recv_cipher
            assert cipher is not None
            # A small frame is cheaper to copy than to view; a large one is viewed.
            frame = buf[start:end] if end - start < _VIEW_AT else memoryview(buf)[start:end]
            plaintext = cipher.decrypt_with_ad(None, frame)
            self._in_pos = end
            self._receipts_before_rekey -= 1
            if not self._receipts_before_rekey:
                cipher.rekey()
                self._receipts_before_rekey = self._rekey_interval
            record = decode_record(plaintext)
            next_state = self._may_receive.get(type(record))
            if next_state is None:
                name, peer = type(record).__name__, self.role.peer
                if peer not in record.sent_by:
                    raise RemoteProtocolError(f"a {peer.value} may not send {name}")
                raise RemoteProtocolError(f"the peer sent {name} in state {self._state.value}")
        except NoiseError as exc:
            self._fail(f"decryption failed: {exc}")
        except DECODE_ERRORS as exc:
            self._fail(f"undecodable record: {exc}")
        except RemoteProtocolError as exc:
            self._fail(str(exc))
        if next_state is not self._state:
            self._enter(next_state)
            if next_state is State.CLOSED:
                assert isinstance(record, Bye)
                self._closed = ConnectionClosed(reason=record.reason, clean=True)
        if type(record) is Ping:
            self.send(Pong(nonce=record.nonce))
        elif type(record) is Pong:
            self._ping_outstanding = False
        elif next_state is _LOGIN and type(record) is LoginRejected:
            self._login_sent = None  # the client may try again
        return record

    def _next_event_without_channel(self) -> Event | NeedData:
        """``next_event`` before the channel opens and after it ends."""
        state = self._state
        if state is State.CLOSED:
            assert self._closed is not None
            return self._closed
        if state is State.ERROR:
            raise RemoteProtocolError(self._error or "the connection failed")
        if state is State.VERIFY_PEER:
            return NEED_DATA
        if state is State.START and self.role is Role.CLIENT:
            raise LocalProtocolError("call initiate() before next_event()")
        try:
            return self._next_handshake_event()
        except NoiseError as exc:
            self._fail(f"handshake failed: {exc}")
        except RemoteProtocolError as exc:
            self._fail(str(exc))

    def _next_handshake_event(self) -> Event | NeedData:
        """Read the peer's preamble and handshake messages as far as the buffer allows."""
        while True:
            if not self._peer_preamble_seen:
                preamble = self._take(limits.PREAMBLE_SIZE)
                if preamble is None:
                    return self._need_data(_BEFORE_PREAMBLE)
                self._peer_preamble_seen = True
                if self.role is Role.SERVER:
                    # Sent even on a version mismatch: it tells the client our version.
                    self._queue(self._preamble)
                parse_preamble(preamble, peer=self.role.peer.value)
                if self.role is Role.SERVER:
                    self._start_handshake(initiator=False, prologue=preamble)
                continue
            end = self._frame_end()
            if not end:
                return self._need_data("during the handshake")
            message = self._in[self._in_pos + _HEADER_SIZE : end]
            self._in_pos = end
            handshake = self._handshake
            assert handshake is not None
            handshake.read_message(message)  # v1 payloads are empty; others are ignored
            self._peer_key = handshake.remote_static
            if self.role is Role.CLIENT:
                peer_key = self._peer_key
                assert peer_key is not None
                self._enter(State.VERIFY_PEER)
                return PeerKeyReceived(public_key=peer_key, fingerprint=fingerprint(peer_key))
            if handshake.finished:
                self._finish_handshake()
                return self._pending.popleft()
            self._write_handshake()

    def _need_data(self, phase: str | None) -> NeedData | ConnectionClosed:
        """NEED_DATA, or the end of the connection if the peer has sent EOF."""
        if not self._eof:
            return NEED_DATA
        if phase is not None:
            raise RemoteProtocolError(f"the peer closed the connection {phase}")
        if len(self._in) > self._in_pos:
            raise RemoteProtocolError("the peer closed the connection in the middle of a frame")
        return self._close("the peer closed the connection without saying goodbye", clean=False)

    def _take(self, size: int) -> bytes | None:
        """Remove and return exactly ``size`` buffered bytes, or None if fewer are buffered."""
        start = self._in_pos
        end = start + size
        if len(self._in) < end:
            return None
        self._in_pos = end
        return self._in[start:end]

    def _frame_end(self) -> int:
        """Where the next frame ends in the buffer (its Noise message starts 4 bytes after
        ``_in_pos``), or 0 while it is incomplete. A bad length is rejected as soon as its 4
        bytes are buffered."""
        if self._next_in and self._in_pos == len(self._in):  # on to what came after
            self._in, self._in_pos = self._next_in, self._next_pos
            self._next_in = b""
            self._next_pos = 0
        buf = self._in
        start = self._in_pos
        if len(buf) - start < _HEADER_SIZE:
            return 0
        (size,) = _HEADER.unpack_from(buf, start)
        if not 0 < size <= _MAX_FRAME:
            raise RemoteProtocolError(f"frame length {size} is outside 1..{_MAX_FRAME}")
        end = start + _HEADER_SIZE + size
        return end if len(buf) >= end else 0

    # --- ending -------------------------------------------------------------------------

    def _close(self, reason: str, *, clean: bool) -> ConnectionClosed:
        self._enter(State.CLOSED)
        self._handshake = None  # one that ended here (rejected key, timeout) is not needed
        self._closed = ConnectionClosed(reason=reason, clean=clean)
        return self._closed

    def _fail(self, reason: str) -> NoReturn:
        """Enter ERROR, queue a Bye if the channel still works, and raise. Events queued
        before are dropped: from now on ``next_event`` raises."""
        if self._state in OPEN_STATES:
            with suppress(NoiseError):  # an exhausted nonce: nothing more can be said
                self.send(Bye(reason=reason[: limits.MAX_REASON]))
        self._enter(State.ERROR)
        self._error = reason
        self._pending.clear()
        self._handshake = None
        self._in = self._next_in = b""
        self._next_pos = 0
        self._in_pos = 0
        raise RemoteProtocolError(reason)

    # --- timers -------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """When ``handle_timer`` must next be called, on the clock given as ``now``."""
        if self._state in (State.START, State.HANDSHAKE, State.VERIFY_PEER):
            return self._handshake_deadline
        if self._state in OPEN_STATES:
            return self._next_keepalive
        return None

    def handle_timer(self, now: float, *, sending: bool = False) -> None:
        """Run what is due at ``now``: the handshake deadline or a keepalive tick. At a tick,
        a peer heard since the last one is left alone; a silent one is pinged, and dropped if
        the Ping of the last tick is still unanswered (docs/protocol.md, 8.5).

        ``sending`` says that output is still on its way to the peer, and the peer is taking
        it: queued or being written by the transport, or held by the socket and acknowledged
        by the peer since the last tick. Such a tick counts as one at which the peer was
        heard: a Ping queued behind that output could not even reach it yet. Only a
        transport that drops a peer which stops taking its output (a write timeout) may say
        so; one that never does keeps the plain keepalive, which counts bytes received."""
        timer = self.get_timer()
        if timer is None or now < timer:
            return
        if self._state not in OPEN_STATES:
            self._close("the handshake timed out", clean=False)
            return
        self._next_keepalive = now + self._keepalive_interval
        if self._heard_since_tick or sending:
            self._heard_since_tick = False
            self._ping_outstanding = False
        elif self._ping_outstanding:
            reason = "the peer stopped responding"
            self.send(Bye(reason=reason))
            self._close(reason, clean=False)
        else:
            self.send(Ping())
            self._ping_outstanding = True
