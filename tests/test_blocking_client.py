"""The blocking client when things go wrong: a server that stops reading or goes silent, a
slow or failing answer about the server's key, abandoned transfers, refused requests."""

from __future__ import annotations

import errno
import functools
import hashlib
import itertools
import os
import resource
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest

from sealchat.core import (
    NEED_DATA,
    Bye,
    Connection,
    ConnectionClosed,
    Delivered,
    FileChunk,
    FileOffer,
    FileReject,
    FileRequest,
    HistoryRequest,
    ListReadMarkers,
    ListRooms,
    Message,
    PeerKeyReceived,
    Presence,
    ReadMarkers,
    ReadUpTo,
    RoomLeft,
    RoomList,
    Typing,
)
from sealchat.core.hub import HubConfig
from sealchat.core.limits import MAX_CHUNK
from sealchat.core.records import CHANGE_PASSWORD, READ_MARKERS
from sealchat.transports import blocking_client, blocking_link, blocking_transfers, requests
from sealchat.transports.blocking import MessageTooLong
from sealchat.transports.blocking_client import BlockingClient
from sealchat.transports.pinning import KnownServers, UnsafePinFile, pinned, server_name
from sealchat.transports.requests import (
    MAX_REPLY_ITEMS,
    MAX_REPLY_RECORDS,
    TRANSFER_BLOCK,
    ClientError,
    ConnectionLost,
    PasswordNotChanged,
    TransferFailed,
    Unreachable,
)
from tests.servers import (
    ANNOUNCED,
    ENDLESS,
    KINDS,
    PASSWORD,
    TWO_PAGES,
    Endless,
    Running,
    accept_all,
    answers,
    answers_late,
    drain,
    file_to_send,
    full_disk,
    logs_in_then,
    offers_other_file,
    room_pages,
    running_server,
    scripted_server,
    stays_silent,
    upload_begun,
)

LIVENESS = 10.0
"""Seconds after which a call that should have returned counts as hung (not a speed limit)."""


def in_background(call: Callable[[], object]) -> threading.Thread:
    thread = threading.Thread(target=lambda: _ignoring_errors(call), daemon=True)
    thread.start()
    return thread


def _ignoring_errors(call: Callable[[], object]) -> None:
    with suppress(ClientError, OSError):
        call()


def test_a_server_that_stops_reading_blocks_no_other_call() -> None:
    with scripted_server(logs_in_then(stays_silent)) as port:
        client = BlockingClient("127.0.0.1", port, trust=accept_all)
        client.login("alice", PASSWORD)
        burst = [Message(text="x" * 7000, room="general", client_id=f"{n}") for n in range(3000)]
        flooding = in_background(lambda: client.send_all(burst))  # ~21 MB nobody reads
        asking = in_background(lambda: client.ask(requests.rooms(), timeout=1))
        asking.join(LIVENESS)
        assert not asking.is_alive()  # its own timeout, not the stuck write, decides
        closing = in_background(client.close)
        closing.join(LIVENESS)
        assert not closing.is_alive()
        flooding.join(LIVENESS)
        assert not flooding.is_alive()  # the flood learns that the connection is closed
        with pytest.raises(ClientError, match="closed"):
            client.typing()


def reads_slowly(sock: socket.socket, _conn: Connection) -> None:
    """Take what comes steadily but slowly (at most ~1.5 MB/s), like a far-away server."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
    while sock.recv(32768):
        time.sleep(0.02)


def test_a_slow_but_steady_server_is_not_taken_for_a_stuck_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(blocking_client, "REQUEST_TIMEOUT", 1.0)  # "took nothing for 1 s"
    with scripted_server(logs_in_then(reads_slowly)) as port:
        client = BlockingClient("127.0.0.1", port, trust=accept_all)
        client.login("alice", PASSWORD)
        client._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        burst = [Message(text="x" * 7000, room="general", client_id=f"{n}") for n in range(400)]
        client.send_all(burst)  # ~2.8 MB: seconds in all, but never a second without progress
        client.close()


def test_a_server_that_goes_silent_is_noticed(monkeypatch: pytest.MonkeyPatch) -> None:
    quick = functools.partial(Connection, keepalive_interval=0.2, handshake_timeout=1.0)
    monkeypatch.setattr(blocking_link, "Connection", quick)
    with (
        scripted_server(stays_silent) as port,
        BlockingClient("127.0.0.1", port, trust=accept_all) as client,
    ):
        closed = client.next(ConnectionClosed, timeout=LIVENESS)
    assert "stopped responding" in closed.reason


@pytest.mark.parametrize("policy", ["pinned", "own"])
def test_a_slow_yes_to_a_new_key_connects_again_and_asks_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policy: str
) -> None:
    monkeypatch.setattr(blocking_link, "SLOW_TRUST", 0.2)
    asked: list[str] = []

    def thoughtful(_server: str, fingerprint: str) -> bool:
        asked.append(fingerprint)
        time.sleep(0.6)  # longer than the server waits for the handshake
        return True

    with running_server("threads", tmp_path / "s", handshake_timeout=0.3) as server:
        name = server_name("127.0.0.1", server.port)
        if policy == "pinned":
            trust = pinned(KnownServers(tmp_path / "known"), name, thoughtful)
        else:  # a script's own policy, which pins nothing

            def trust(event: PeerKeyReceived) -> bool:
                return thoughtful(name, event.fingerprint)

        with BlockingClient("127.0.0.1", server.port, trust=trust) as client:
            assert client.login("alice", PASSWORD) == "alice"
    assert asked == [server.fingerprint]


def test_a_process_with_many_files_open_can_connect(tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"the descriptor limit ({hard}) is below 1,200")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]  # the socket gets fd > 1023
    try:
        with running_server("threads", tmp_path / "s") as server, server.login("alice") as alice:
            assert alice.rooms()
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_client_without_a_descriptor_for_its_selector_fails_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_descriptor_left() -> selectors.BaseSelector:
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    made: list[socket.socket] = []
    connect = blocking_client._connect

    def recording(*args: Any, **kwargs: Any) -> Any:
        made.append((opened := connect(*args, **kwargs))[0])
        return opened

    monkeypatch.setattr(blocking_client, "_connect", recording)
    with scripted_server(stays_silent) as port, monkeypatch.context() as patched:
        patched.setattr(selectors, "DefaultSelector", no_descriptor_left)
        with pytest.raises(ClientError, match=os.strerror(errno.EMFILE)):
            BlockingClient("127.0.0.1", port, trust=accept_all)
    (sock,) = made  # connected, then closed: no client is left to close it
    assert sock.fileno() == -1


def test_an_unreachable_server_or_one_that_never_answers_says_what_to_check() -> None:
    with socket.socket() as silent:  # takes connections (the kernel does), says nothing
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        with pytest.raises(
            Unreachable,
            match=rf"^127.0.0.1:{port} did not answer the handshake; is it a sealchat server",
        ):
            BlockingClient("127.0.0.1", port, trust=accept_all, timeout=0.5)
    with pytest.raises(
        Unreachable,
        match=rf"^cannot reach 127.0.0.1:{port}: .*; is the server running and the address right",
    ):
        BlockingClient("127.0.0.1", port, trust=accept_all, timeout=0.5)


@pytest.mark.parametrize("host", ["chat..example.org", "x" * 64 + ".example.org"])
def test_a_host_name_that_cannot_be_looked_up_is_unreachable_not_a_crash(host: str) -> None:
    with pytest.raises(Unreachable, match=rf"^cannot reach {host}:7878: not a valid host name;"):
        BlockingClient(host, 7878, trust=accept_all, timeout=0.5)


def test_a_failing_key_policy_fails_the_constructor_with_its_own_error(tmp_path: Path) -> None:
    def no_terminal(_event: PeerKeyReceived) -> bool:
        raise EOFError  # input() without a terminal

    unsafe = KnownServers(tmp_path / "known")
    unsafe.path.write_text("")
    unsafe.path.chmod(0o666)
    with running_server("threads", tmp_path / "s") as server:
        with pytest.raises(EOFError):
            BlockingClient("127.0.0.1", server.port, trust=no_terminal)
        name = server_name("127.0.0.1", server.port)
        with pytest.raises(UnsafePinFile):
            BlockingClient("127.0.0.1", server.port, trust=pinned(unsafe, name))
        with server.login("alice") as alice:  # the server is none the worse
            assert alice.rooms()


def _cancel(_done: int, _total: int) -> None:
    raise KeyboardInterrupt  # how a script's user stops a transfer


def test_an_abandoned_download_stops_the_stream_and_frees_its_slot(tmp_path: Path) -> None:
    (tmp_path / "big.bin").write_bytes(os.urandom(8 << 20))
    hub = HubConfig(max_transfers=1)
    with (
        running_server("threads", tmp_path / "s", hub=hub) as server,
        server.login("alice") as alice,
    ):
        info = alice.send_file(tmp_path / "big.bin", room="general")
        with pytest.raises(KeyboardInterrupt):
            alice.download(info.file_id, tmp_path / "in", progress=_cancel)
        path = alice.download(info.file_id, tmp_path / "in")  # the one slot is free again
        assert path.read_bytes() == (tmp_path / "big.bin").read_bytes()
        alice.rooms()  # a round trip: whatever was in flight has arrived
        leftovers = []
        while not alice.events.empty():
            leftovers.append(alice.events.get_nowait())
        assert not [e for e in leftovers if isinstance(e, FileChunk)]


@pytest.mark.parametrize(
    ("size", "sha256", "refusal"),
    [
        (64 * MAX_CHUNK, ANNOUNCED.sha256, "as 3,932,160 bytes, not the 10 bytes it announced"),
        (ANNOUNCED.size, b"\x01" * 32, "with another SHA-256 than it announced"),
    ],
    ids=["size", "sha256"],
)
def test_a_download_offered_as_other_than_the_file_shown_is_refused(
    tmp_path: Path, size: int, sha256: bytes, refusal: str
) -> None:
    # A malicious server announces 10 bytes, then offers (and streams) megabytes, or other
    # bytes: given the file the user was shown, the client refuses the offer and writes
    # nothing; the link stays.
    folder = tmp_path / "in"
    with scripted_server(offers_other_file(size, sha256)) as port:
        client = BlockingClient("127.0.0.1", port, trust=accept_all, events=False)
        client.login("alice", PASSWORD)
        with pytest.raises(TransferFailed, match=f"offered 'notes.txt' .* {refusal}"):
            client.download(ANNOUNCED.file_id, folder, expected=ANNOUNCED)
        assert list(folder.iterdir()) == []  # not a byte kept
        with pytest.raises(ValueError, match="not 'bbbb"):  # a caller's slip, not the server's
            client.download("b" * 32, folder, expected=ANNOUNCED)
        client.close()


def test_a_download_offered_as_the_file_shown_arrives(tmp_path: Path) -> None:
    (tmp_path / "f.bin").write_bytes(os.urandom(100_000))
    with running_server("threads", tmp_path / "s") as server, server.login("alice") as alice:
        info = alice.send_file(tmp_path / "f.bin", room="general")
        saved = alice.download(info.file_id, tmp_path / "in", expected=info)
        assert saved.read_bytes() == (tmp_path / "f.bin").read_bytes()


def test_paths_may_be_given_as_strings(tmp_path: Path) -> None:
    (tmp_path / "f.bin").write_bytes(os.urandom(1000))
    with running_server("threads", tmp_path / "s") as server, server.login("alice") as alice:
        info = alice.send_file(str(tmp_path / "f.bin"), room="general")
        saved = alice.download(info.file_id, str(tmp_path / "in"), expected=info)
    assert saved.read_bytes() == (tmp_path / "f.bin").read_bytes()


def test_only_the_latest_abandoned_downloads_are_remembered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(blocking_transfers, "ABANDONED_MEMORY", 2)
    (tmp_path / "big.bin").write_bytes(os.urandom(8 << 20))
    with running_server("threads", tmp_path / "s") as server, server.login("alice") as alice:
        info = alice.send_file(tmp_path / "big.bin", room="general")
        for _ in range(5):
            with pytest.raises(KeyboardInterrupt):
                alice.download(info.file_id, tmp_path / "in", progress=_cancel)
        # Nothing public shows the memory it holds: the two latest, and no more.
        assert len(alice._transfers._abandoned) == 2
        assert max(alice._transfers._abandoned) == next(alice._transfers._ids) - 1


def streams_small_chunks(sock: socket.socket, conn: Connection) -> None:
    """Answer a download request with 3,000 small (legal) chunks, then keep reading."""
    while not isinstance(event := conn.next_event(), FileRequest):
        if event is NEED_DATA:
            conn.receive_data(sock.recv(65536))
    size = 3000 * 100
    name, file_id = "f", event.file_id
    conn.send(
        FileOffer(transfer=event.transfer, name=name, size=size, sha256=bytes(32), file_id=file_id)
    )
    for n in range(3000):
        conn.send(FileChunk(transfer=event.transfer, offset=n * 100, data=b"x" * 100))
    sock.sendall(conn.data_to_send())
    while sock.recv(65536):
        pass


def test_a_download_abandoned_amid_many_chunks_leaves_the_reader_free(tmp_path: Path) -> None:
    with scripted_server(logs_in_then(streams_small_chunks)) as port:
        client = BlockingClient("127.0.0.1", port, trust=accept_all)
        client.login("alice", PASSWORD)
        with pytest.raises(KeyboardInterrupt):
            client.download("f" * 32, tmp_path / "in", progress=_cancel)
        client.close()
        client.next(ConnectionClosed, timeout=LIVENESS)
        assert not client._reader.is_alive()  # it was not left waiting on a dropped queue


def test_closing_from_a_download_progress_ends_everything_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    crashed: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: crashed.append(args.exc_value))
    (tmp_path / "big.bin").write_bytes(os.urandom(8 << 20))
    with running_server("threads", tmp_path / "s") as server, server.login("alice") as alice:
        info = alice.send_file(tmp_path / "big.bin", room="general")
        closed = threading.Event()

        def close_midway(_done: int, _total: int) -> None:
            if not closed.is_set():
                closed.set()
                time.sleep(0.5)  # meanwhile the reader fills the download's queue and waits
                alice.close()

        with pytest.raises(ClientError):
            alice.download(info.file_id, tmp_path / "in", progress=close_midway)
        last = alice.next(ConnectionClosed, timeout=LIVENESS)
        assert "failed" not in last.reason
        assert alice.events.empty()  # ConnectionClosed came last, and once
        assert not alice._reader.is_alive()
        assert not alice._writer.is_alive()
    assert crashed == []


def test_an_abandoned_upload_can_be_sent_again(tmp_path: Path) -> None:
    source = tmp_path / "up.bin"
    source.write_bytes(os.urandom(4 << 20))
    with running_server("threads", tmp_path / "s") as server, server.login("alice") as alice:
        with pytest.raises(KeyboardInterrupt):
            alice.send_file(source, room="general", progress=_cancel)
        info = alice.send_file(source, room="general")
        assert info.size == source.stat().st_size


def test_an_upload_refused_midway_stops_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "up.bin"
    source.write_bytes(os.urandom(8 * TRANSFER_BLOCK))

    with running_server("threads", tmp_path / "s") as server, server.login("alice") as alice:
        monkeypatch.setattr(server.hub.store, "write_chunk", full_disk)
        seen: list[object] = []
        sent: list[int] = []

        def until_refused(done: int, _total: int) -> None:
            sent.append(done)
            while not any(isinstance(event, FileReject) for event in seen):
                seen.append(alice.next_event(LIVENESS))

        with pytest.raises(TransferFailed, match="could not store the chunk"):
            alice.send_file(source, room="general", progress=until_refused)
        assert sent == [TRANSFER_BLOCK]  # nothing more once the refusal was here
        alice.rooms()  # a round trip: the answers to the chunks still on their way came first
        while not isinstance(seen[-1], RoomList):
            seen.append(alice.next_event(LIVENESS))
    refusals = [event for event in seen if isinstance(event, FileReject)]
    assert len(refusals) == 1  # not one more per chunk ("no upload 1 in progress")
    assert "could not store the chunk" in refusals[0].reason


def test_an_offer_given_up_on_is_withdrawn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "up.bin"
    source.write_bytes(os.urandom(100_000))
    with running_server("threads", tmp_path / "s") as server, server.login("alice") as alice:
        offer = server.hub._offer
        answer = threading.Event()

        def held(*args: Any) -> Any:
            answer.wait(LIVENESS)  # a busy server: the answer comes after the client gave up
            return offer(*args)

        with monkeypatch.context() as patched:
            patched.setattr(server.hub, "_offer", held)
            patched.setattr(alice, "ask", functools.partial(alice.ask, timeout=0.2))
            with pytest.raises(ClientError, match="did not answer"):
                alice.send_file(source, room="general")
        answer.set()
        info = alice.send_file(source, room="general")  # the late offer freed its slot
        assert info.size == source.stat().st_size


def _recording_sent(client: BlockingClient, monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The records ``client`` sends from now on (sent as ever)."""
    sent: list[object] = []
    send_all = client._send_all

    def sending(records: Any, **options: Any) -> None:
        records = list(records)
        sent.extend(records)
        send_all(records, **options)

    monkeypatch.setattr(client, "_send_all", sending)
    return sent


def _unread(path: Path, **_: object) -> bytes:
    raise AssertionError(f"{path} was read to hash it")


def test_a_file_over_the_servers_limit_is_refused_before_it_is_read_or_offered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(bytes(5000))
    limit = HubConfig(max_file_size=1000)
    with (
        running_server("threads", tmp_path / "s", hub=limit) as server,
        server.login("alice") as alice,
    ):
        assert alice.max_file_size == 1000
        sent = _recording_sent(alice, monkeypatch)
        monkeypatch.setattr(blocking_transfers, "sha256_of", _unread)
        with pytest.raises(
            TransferFailed, match=r"^file too large: 4\.9 KiB; the limit is 1000 B$"
        ):
            alice.send_file(source, room="general")
        assert sent == []


def test_the_direct_conversations_are_said_at_the_login(tmp_path: Path) -> None:
    with running_server("threads", tmp_path / "s") as server:
        with server.login("alice") as alice:
            assert (alice.conversations, alice.max_file_size) == ((), HubConfig().max_file_size)
            alice.send_message("hi", to="Bob")
            alice.send_message("hi", to="carol")
        with server.login("alice") as alice:
            assert alice.conversations == ("carol", "bob")


def test_refused_requests_leave_nothing_waiting(tmp_path: Path) -> None:
    with running_server("threads", tmp_path / "s") as server, server.login("alice") as alice:
        for _ in range(100):
            with pytest.raises(ClientError, match="cannot send this"):
                alice.send_message("hi", room="r" * 65)  # longer than a room name can be
        assert not alice._waiters  # nothing public shows the leak


def test_a_message_over_the_servers_limit_is_refused_before_anything_is_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The limit is the one said at the login: the server's next run takes shorter messages.
    for limit in (100, 50):
        hub = HubConfig(max_message_chars=limit)
        with (
            running_server("threads", tmp_path / "s", hub=hub) as server,
            server.login("alice") as alice,
        ):
            assert alice.max_message_chars == limit
            sent = _recording_sent(alice, monkeypatch)
            with pytest.raises(MessageTooLong) as refused:
                alice.send_message("\u00e9" * (limit + 1), room="general")
            assert str(refused.value) == (
                f"the message has {limit + 1} characters; at most {limit} fit in one message"
            )
            assert sent == []
            alice.send_message("\u00e9" * limit, room="general")  # as the server counts
            messages, _ = alice.history(room="general")
    assert [m.text for m in messages] == ["\u00e9" * 100, "\u00e9" * 50]


def test_a_batch_with_a_record_beyond_a_limit_sends_nothing(tmp_path: Path) -> None:
    with running_server("threads", tmp_path / "s") as server, server.login("alice") as alice:
        alice.join("general")
        fine = Message(text="deploy started", room="general", client_id="a1")
        too_long = Message(text="x" * 9000, room="general", client_id="a2")
        with pytest.raises(ClientError, match="cannot send this"):
            alice.send_all([fine, too_long])
        messages, _ = alice.history(room="general")  # a round trip: it follows anything sent
        assert messages == []


def test_a_connection_the_server_ended_says_so_in_client_errors(tmp_path: Path) -> None:
    with running_server("threads", tmp_path / "s") as server:
        alice = server.login("alice")
        server.stop()
        with pytest.raises(ConnectionLost, match="connection closed"):
            alice.next(Message, timeout=LIVENESS)  # the end came first
        with pytest.raises(ConnectionLost, match="connection is closed"):
            alice.typing()
        with pytest.raises(ConnectionLost, match="connection is closed"):
            alice.rooms()
        alice.close()


def test_a_message_sent_again_with_its_client_id_from_a_new_client_is_stored_once(
    tmp_path: Path,
) -> None:
    # What a script does after a lost connection (docs/client.md): a new client, the same id.
    with running_server("threads", tmp_path / "s") as server, server.login("bob") as bob:
        client_id = requests.new_client_id()
        with server.login("alice") as alice:
            first = alice.send_message("deploy finished", room="general", client_id=client_id)
        with server.login("alice") as again:
            second = again.send_message("deploy finished", room="general", client_id=client_id)
            other = again.send_message("and verified", room="general")
        assert (second.id, second.ts) == (first.id, first.ts)
        assert other.id > first.id
        arrived = [e for e in drain(bob, 0.5) if isinstance(e, Message)]
        assert [(m.id, m.text) for m in arrived] == [
            (first.id, "deploy finished"),
            (other.id, "and verified"),
        ]


def _messages_from(sender: BlockingClient, count: int) -> list[str]:
    texts = [f"message {n}" for n in range(count)]
    for text in texts:
        sender.send_message(text, room="general")
    return texts


@contextmanager
def sender(server: Running) -> Iterator[BlockingClient]:
    """Alice, in general, keeping no events (the tests below shrink the events buffer)."""
    with server.client(events=False) as alice:
        alice.login("alice", PASSWORD)
        alice.join("general")
        yield alice


def _texts(events: list[object]) -> list[str]:
    return [event.text for event in events if isinstance(event, Message)]


def test_unread_events_are_bounded_and_none_is_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(blocking_client, "EVENT_BUFFER", 10)
    with running_server("threads", tmp_path / "s") as server, server.login("bob") as bob:
        drain(bob, 0.5)
        bob.join("general")
        drain(bob, 0.5)
        with sender(server) as alice:
            texts = _messages_from(alice, 20)
            with pytest.raises(ClientError, match="events are waiting on `events`"):
                bob.ask(requests.rooms(), timeout=1)
            assert bob.events.qsize() <= 10
            got: list[object] = []
            while len(_texts(got)) < len(texts):
                got.append(bob.next_event(LIVENESS))
            assert _texts(got) == texts  # the reader went on once there was room
            assert bob.rooms()  # and replies arrive again


def test_a_client_that_keeps_no_events_only_learns_the_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(blocking_client, "EVENT_BUFFER", 5)
    with running_server("threads", tmp_path / "s") as server:
        bot = server.client(events=False)
        bot.login("bob", PASSWORD)
        bot.join("general")
        with sender(server) as alice:
            _messages_from(alice, 20)
            _messages_from(bot, 20)  # never held up by events nobody takes
            assert bot.events.empty()
            bot.close()
            assert isinstance(bot.next_event(LIVENESS), ConnectionClosed)
    monkeypatch.setattr(blocking_client, "EVENT_BUFFER", 1000)
    with running_server("threads", tmp_path / "s") as server, server.login("bob") as bob:
        replayed = [e for e in drain(bob, 0.5) if isinstance(e, Message)]
    # The bot showed nobody alice's messages, so it did not mark them read for bob.
    assert [m.text for m in replayed if m.sender == "alice"] == [f"message {n}" for n in range(20)]


def test_closing_a_client_whose_events_are_full_is_prompt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(blocking_client, "EVENT_BUFFER", 10)
    with running_server("threads", tmp_path / "s") as server:
        bob = server.login("bob")
        drain(bob, 0.5)
        bob.join("general")
        drain(bob, 0.5)
        with sender(server) as alice:
            texts = _messages_from(alice, 20)
            closing = in_background(bob.close)
            closing.join(LIVENESS)
            assert not closing.is_alive()
            events = [bob.events.get_nowait() for _ in range(bob.events.qsize())]
            assert isinstance(events[-1], ConnectionClosed)
        with server.login("bob") as again:  # what he had not taken when he closed comes back
            replayed = drain(again, 0.5)
    assert texts[: len(_texts(events))] == _texts(events)  # taken only after the close
    assert _texts(replayed) == texts  # so all of it comes again, each once


def test_a_users_own_last_messages_are_not_replayed_at_the_next_login(tmp_path: Path) -> None:
    with running_server("threads", tmp_path / "s") as server:
        with server.login("alice") as alice:
            alice.send_message("the last word", room="general")
        with server.login("alice") as again:
            replayed = [e for e in drain(again, 0.5) if isinstance(e, Message)]
        assert replayed == []  # her session had it (as an acknowledgement) and said so


def test_a_refused_download_leaves_no_partial_file(tmp_path: Path) -> None:
    with (
        running_server("threads", tmp_path / "s") as server,
        server.login("alice") as alice,
        pytest.raises(ClientError, match="there is no file deadbeef"),
    ):
        alice.download("deadbeef", tmp_path / "downloads")
    assert list((tmp_path / "downloads").iterdir()) == []


def test_a_downloads_folder_that_cannot_be_written_fails_the_transfer(tmp_path: Path) -> None:
    (tmp_path / "f.bin").write_bytes(os.urandom(1000))
    (tmp_path / "a-file").write_text("")
    with running_server("threads", tmp_path / "s") as server, server.login("alice") as alice:
        info = alice.send_file(tmp_path / "f.bin", room="general")
        with pytest.raises(TransferFailed, match=os.strerror(errno.ENOTDIR)):  # as the trio client
            alice.download(info.file_id, tmp_path / "a-file" / "in")


@pytest.mark.parametrize("endless", ENDLESS, ids=lambda endless: endless.asked.__name__)
def test_a_reply_longer_than_a_client_takes_fails_its_request_and_the_connection_stays(
    endless: Endless, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A server flooded with rooms is no broken peer: the call fails at once, holding no more
    # than a reply may hold; the rest of its reply is dropped as it comes (it would answer
    # the next request), and the next request gets its own answer on the same connection.
    with scripted_server(endless.server()) as port:
        client = BlockingClient("127.0.0.1", port, trust=accept_all, events=False)
        client.login("alice", PASSWORD)
        waiters: list[blocking_client._Waiter] = []
        send_all = client._send_all

        def kept(
            records: Any, *, wait: bool, expecting: blocking_client._Waiter | None = None
        ) -> None:
            if expecting is not None:
                waiters.append(expecting)
            send_all(records, wait=wait, expecting=expecting)

        monkeypatch.setattr(client, "_send_all", kept)
        with pytest.raises(ClientError, match=f"sent more than {endless.bound} .* one request"):
            client.ask(endless.request(), timeout=LIVENESS)
        assert client.ask(endless.request(), timeout=LIVENESS) == endless.answer
        first, _ = waiters
        assert first.records == []  # what it held went once it failed, and the rest unheld
        assert first not in client._waiters
        client.close()


def _flood(client: BlockingClient, who: str) -> tuple[int, str]:
    """Join a new room, post one message and leave it, again and again, as the review's
    flood did; the rooms made, and why the server refused the next one."""
    for made in itertools.count():
        room = f"junk-{who}-{made}"
        try:
            client.join(room)
        except ClientError as exc:
            return made, str(exc)
        client.send_message(".", room=room)  # so the room stays for good
        client.leave(room)
    raise AssertionError("unreachable")


@pytest.mark.parametrize("kind", KINDS)
def test_a_room_flood_is_refused_saying_what_to_do(tmp_path: Path, kind: str) -> None:
    # Each room with a message stays, so the server lets each user make only so many, and
    # holds only so many in all: the listing stays within what a client takes.
    hub = HubConfig(max_rooms=8, room_creation_burst=3)
    with running_server(kind, tmp_path / "s", hub=hub) as server:
        for who in ("alice", "bob"):
            with server.login(who) as flooder:
                made, refusal = _flood(flooder, who)
                assert made == 3
                assert refusal.startswith("you are creating rooms faster than this server allows")
                assert "join one that exists" in refusal
        with server.login("carol") as carol:
            made, refusal = _flood(carol, "carol")
            assert made == 1  # general and seven made: as many as the server holds
            assert refusal.startswith("the server has 8 rooms and holds at most 8: join one")
            assert len(carol.rooms()) == 8
            assert carol.join("junk-alice-0")  # those there can be joined


def test_a_listing_as_long_as_a_reply_may_hold_arrives_whole() -> None:
    per_page = MAX_REPLY_ITEMS // MAX_REPLY_RECORDS  # each bound reached exactly
    whole = room_pages(MAX_REPLY_ITEMS, per_page)
    one_more = room_pages(MAX_REPLY_ITEMS + 1, per_page)
    with scripted_server(logs_in_then(answers(ListRooms, whole, one_more))) as port:
        client = BlockingClient("127.0.0.1", port, trust=accept_all, events=False)
        client.login("alice", PASSWORD)
        rooms = client.ask(requests.rooms(), timeout=LIVENESS)
        assert len(rooms) == MAX_REPLY_ITEMS
        with pytest.raises(ClientError, match=f"sent more than {MAX_REPLY_ITEMS:,} items"):
            client.ask(requests.rooms(), timeout=LIVENESS)
        client.close()


# --- matching replies to requests --------------------------------------------------------


def test_a_refused_typing_notice_does_not_fail_a_join_of_a_room_called_typing(
    tmp_path: Path,
) -> None:
    with running_server("threads", tmp_path / "s") as server, server.login("alice") as alice:
        alice.typing(room="ops")  # not a member: refused, and nothing waits for the refusal
        members = alice.join("typing")  # a valid room name: its refusals have it as ref
        assert [m.name for m in members] == ["alice"]


def test_a_page_of_history_right_after_login_is_not_the_replay(tmp_path: Path) -> None:
    texts = [f"message {n}" for n in range(300)]  # more than one replay page
    hub = HubConfig(messages_per_second=1e9, message_burst=10**9)
    with running_server("threads", tmp_path / "s", hub=hub) as server:
        server.login("bob").close()  # bob has seen all there is
        with server.client(events=False) as alice:
            alice.login("alice", PASSWORD)
            for text in texts:
                alice.send_message(text, room="general")
        with server.login("bob") as bob:  # while the server replays what bob missed
            page, more = bob.history(room="general", limit=5)
            again, _ = bob.history(room="general", limit=5)
    assert [m.text for m in page] == [m.text for m in again] == texts[-5:]
    assert more


def test_replies_go_to_the_threads_that_asked_in_the_order_they_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running_server("threads", tmp_path / "s") as server, server.login("alice") as alice:
        for n in range(3):
            alice.send_message(f"m{n}", room="general")
        checked = requests.checked
        first_is_waiting, second_asked = threading.Event(), threading.Event()

        def first_held_back(records: Any) -> Any:
            """The first thread is held between its call and its request going out, until
            the second thread's request has gone."""
            if threading.current_thread().name == "first":
                first_is_waiting.set()
                second_asked.wait(LIVENESS)
            else:
                threading.Timer(0.2, second_asked.set).start()
            return checked(records)

        monkeypatch.setattr(requests, "checked", first_held_back)
        pages: dict[str, list[str]] = {}

        def ask(name: str, limit: int) -> None:
            page, _ = alice.history(room="general", limit=limit)
            pages[name] = [m.text for m in page]

        first = threading.Thread(target=ask, args=("first", 1), name="first")
        first.start()
        first_is_waiting.wait(LIVENESS)
        ask("second", 3)
        first.join(LIVENESS)
    assert pages == {"first": ["m2"], "second": ["m0", "m1", "m2"]}


def test_the_reply_to_a_request_that_timed_out_answers_no_other() -> None:
    with (
        scripted_server(logs_in_then(answers_late(HistoryRequest, *TWO_PAGES))) as port,
        BlockingClient("127.0.0.1", port, trust=accept_all, events=False) as client,
    ):
        client.login("alice", PASSWORD)
        with pytest.raises(ClientError, match="did not answer"):  # answered after the next
            client.ask(requests.history(room="general"), timeout=0.2)
        page, _ = client.history(room="general")
    assert [m.text for m in page] == ["page 2"]  # not the page asked for first


def test_a_message_only_a_given_up_call_took_is_not_acknowledged_unless_taken() -> None:
    acknowledged: list[int] = []

    def late_pages_then_listen(sock: socket.socket, conn: Connection) -> None:
        """Answer the two history requests once both are in (the first was given up), then
        note what the client acknowledges until it says goodbye."""
        asked = 0
        while not isinstance(event := conn.next_event(), ConnectionClosed):
            if event is NEED_DATA:
                conn.receive_data(sock.recv(65536) or b"")
                continue
            if isinstance(event, Delivered):
                acknowledged.append(event.up_to)
            asked += isinstance(event, HistoryRequest)
            if asked == 2 and isinstance(event, HistoryRequest):
                for record in (r for page in TWO_PAGES for r in page):
                    conn.send(record)
                sock.sendall(conn.data_to_send())

    with (
        scripted_server(logs_in_then(late_pages_then_listen)) as port,
        BlockingClient("127.0.0.1", port, trust=accept_all) as client,
    ):
        client.login("alice", PASSWORD)
        with pytest.raises(ClientError, match="did not answer"):
            client.ask(requests.history(room="general"), timeout=0.2)
        page, _ = client.history(room="general")  # page 1 went to the call given up
        assert [m.text for m in page] == ["page 2"]
    # Page 1 waits on events, untaken: acknowledging page 2 would skip it at the next login.
    assert acknowledged == []


def test_a_quiet_login_shows_no_presence(tmp_path: Path) -> None:
    with running_server("threads", tmp_path / "s") as server:
        with server.login("alice"):
            pass  # alice is a member of general: bob shares a room with her
        with server.login("bob") as bob:
            drain(bob, quiet=0.3)
            with server.client() as alice:
                assert alice.login("alice", PASSWORD, announce=False) == "alice"
                assert not server.hub.is_online("alice")
                assert {m.name: m.online for m in bob.members("general")}["alice"] is False
                alice.send_message("quietly", room="general")
            deadline = time.monotonic() + LIVENESS
            while server.hub.is_logged_in("alice"):
                assert time.monotonic() < deadline, "alice's session is still open"
                time.sleep(0.02)
            events = drain(bob)
    assert [e.text for e in events if isinstance(e, Message)] == ["quietly"]
    assert [e for e in events if isinstance(e, Presence)] == []


def test_a_server_that_does_not_list_password_changes_is_not_asked() -> None:
    # An older server: its Authenticated has no features, and a ChangePassword would break
    # the protocol there. It answers nothing: the refusal can only be the client's own.
    with (
        scripted_server(logs_in_then(stays_silent)) as port,
        BlockingClient("127.0.0.1", port, trust=accept_all) as client,
    ):
        client.login("alice", PASSWORD)
        assert client.features == ()
        with pytest.raises(PasswordNotChanged, match="ask its operator") as refused:
            client.change_password(PASSWORD, "a brand new password")
        assert refused.value.code == "unsupported"
        client.typing()  # still connected: nothing was sent


def test_a_password_change_before_the_login_says_to_log_in_first(tmp_path: Path) -> None:
    with (
        running_server("threads", tmp_path / "s") as server,
        BlockingClient("127.0.0.1", server.port, trust=accept_all) as client,
    ):
        with pytest.raises(PasswordNotChanged, match=r"^log in first") as refused:
            client.change_password(PASSWORD, "a brand new password")
        assert refused.value.code == "not_logged_in"
        client.login("alice", PASSWORD)  # nothing was sent: the session goes on


def test_one_password_change_at_a_time() -> None:
    # The server would refuse a second change at once, before it answers the first: its
    # refusal would then be taken for the first one's answer (replies match by order).
    behaviour = logs_in_then(stays_silent, features=(CHANGE_PASSWORD,))
    with (
        scripted_server(behaviour) as port,
        BlockingClient("127.0.0.1", port, trust=accept_all) as client,
    ):
        client.login("alice", PASSWORD)
        first = in_background(lambda: client.change_password(PASSWORD, "a brand new password"))
        deadline = time.monotonic() + LIVENESS
        while not client._changing_password.locked():  # the first waits for its answer
            assert time.monotonic() < deadline, "the first change never started"
            time.sleep(0.01)
        with pytest.raises(PasswordNotChanged, match="already in progress") as refused:
            client.change_password(PASSWORD, "another new password")
        assert refused.value.code == "in_progress"
        client.close()
        first.join(LIVENESS)
        assert not first.is_alive()


def test_messages_never_taken_from_events_come_back_at_the_next_login(tmp_path: Path) -> None:
    texts = [f"message {n}" for n in range(300)]  # more than one replay page
    hub = HubConfig(messages_per_second=1e9, message_burst=10**9)
    with running_server("threads", tmp_path / "s", hub=hub) as server:
        server.login("bob").close()  # bob has seen all there is
        with sender(server) as alice:
            for text in texts:
                alice.send_message(text, room="general")
        with server.login("bob") as bob:  # a bot that answers one message, then stops
            first = bob.next(Message, LIVENESS)
            bob.send_message(f"got {first.text}", room="general")  # newer than those waiting
            time.sleep(0.5)  # the rest of the first replay page arrives meanwhile
        with server.login("bob") as again:
            replayed = _texts(drain(again, 0.5))
    assert [first.text, *replayed] == [*texts, "got message 0"]  # each once, none lost


def test_a_read_marker_set_on_one_device_is_learnt_by_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with (
        running_server("trio", tmp_path / "s") as server,
        server.login("alice") as phone,
        server.login("alice") as laptop,
        server.login("bob") as bob,
    ):
        assert READ_MARKERS in phone.features
        phone.next(ReadMarkers)  # the listing asked for at the login: nothing read yet
        laptop.next(ReadMarkers)
        first = bob.send_message("one", room="general").id
        second = bob.send_message("two", room="general").id
        direct = bob.send_message("psst", to="alice").id
        assert phone.mark_read(second, room="general")
        assert phone.read_marker(room="general") == second
        told = laptop.next(ReadUpTo)
        assert (told.up_to, told.room) == (second, "general")
        assert laptop.read_marker(room="general") == second
        assert not laptop.mark_read(first, room="general")  # known already: nothing sent
        assert not laptop.mark_read(second, room="general")
        assert laptop.mark_read(direct, peer="Bob")  # any spelling of the peer
        assert phone.next(ReadUpTo).up_to == direct
        assert phone.read_marker(peer="bob") == direct
        with server.login("alice") as tablet:  # a later login learns them from the listing
            listed = tablet.next(ReadMarkers)
            assert {(m.room, m.peer.lower(), m.up_to) for m in listed.markers} == {
                ("general", "", second),
                ("", "bob", direct),
            }
            assert tablet.read_marker(room="general") == second
            assert tablet.read_marker(peer="BOB") == direct
        phone.join("ops")
        said = phone.send_message("ops only", room="ops").id
        assert phone.mark_read(said, room="ops")
        assert laptop.next(ReadUpTo).up_to == said
        phone.leave("ops")  # the server forgets the marker of a room left, and so do they
        assert phone.read_marker(room="ops") == 0
        assert laptop.next(RoomLeft).room == "ops"
        assert laptop.read_marker(room="ops") == 0
        with server.client(events=False) as script:  # a script that only sends
            sent = _recording_sent(script, monkeypatch)
            script.login("alice", PASSWORD)
            assert not any(isinstance(r, ListReadMarkers) for r in sent)
            assert script.read_marker(room="general") == 0  # it asked for none


@pytest.mark.parametrize(
    ("up_to", "where"),
    [
        (-1, {"room": "general"}),
        (2**63, {"room": "general"}),
        (1, {}),
        (1, {"room": "general", "peer": "bob"}),
        (1, {"room": "r" * 65}),
    ],
    ids=["negative", "too-big", "neither", "both", "long-room"],
)
def test_a_read_marker_no_server_could_take_is_refused_with_any_server(
    tmp_path: Path, up_to: int, where: dict[str, str]
) -> None:
    with (
        scripted_server(logs_in_then(stays_silent)) as port,  # an older server
        BlockingClient("127.0.0.1", port, trust=accept_all) as old,
    ):
        old.login("alice", PASSWORD)
        with pytest.raises(ClientError):
            old.mark_read(up_to, **where)
    with running_server("trio", tmp_path / "s") as server, server.login("alice") as alice:
        with pytest.raises(ClientError):
            alice.mark_read(up_to, **where)
        assert alice.read_marker(room="general") == 0  # nothing kept


def test_nothing_about_read_markers_goes_to_an_older_server() -> None:
    received: list[object] = []
    ended = threading.Event()

    def takes_everything(sock: socket.socket, conn: Connection) -> None:
        try:
            while not isinstance(event := conn.next_event(), ConnectionClosed):
                if event is NEED_DATA:
                    conn.receive_data(sock.recv(65536))
                else:
                    received.append(event)
        finally:
            ended.set()

    with scripted_server(logs_in_then(takes_everything)) as port:  # no "read-markers"
        client = BlockingClient("127.0.0.1", port, trust=accept_all)
        client.login("alice", PASSWORD)
        assert client.features == ()
        assert client.mark_read(5, room="general") is False
        assert client.read_marker(room="general") == 0
        client.typing(room="general")  # what the server reads last
        client.close()
        assert ended.wait(LIVENESS)
    assert [type(r) for r in received] == [Typing, Bye]  # what came after the login
    assert not [r for r in received if isinstance(r, ReadUpTo | ListReadMarkers)]


@pytest.mark.parametrize("kind", KINDS)
def test_send_file_of_a_file_another_connection_finishes_meanwhile_shares_it_once(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two devices of alice's send the same file at once: the second is told to wait, and the
    # first finishes meanwhile. The second offered it again and shared it a second time.
    source, data = file_to_send(tmp_path)
    digest = hashlib.sha256(data).digest()
    hub = HubConfig(upload_takeover_after=30.0)
    with (
        running_server(kind, tmp_path / "server", hub=hub) as server,
        server.login("alice") as first,
        server.login("alice") as second,
    ):
        accept, finish = upload_begun(first, data, source.name)  # the first's, active

        def first_finishes(_busy: requests.UploadBusy) -> float:
            finish()
            return 0.0

        monkeypatch.setattr(requests, "busy_wait", first_finishes)
        info = second.send_file(source, room="general")
        assert (info.file_id, info.sha256) == (accept.file_id, digest)
        assert [f.file_id for f in second.files(room="general")] == [info.file_id]
