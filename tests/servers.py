"""Run either server in-process on a loopback port for a test, with ready-made accounts."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import os
import socket
import struct
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from functools import partial
from itertools import repeat
from pathlib import Path
from typing import Any

import trio
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from sealchat.core import (
    NEED_DATA,
    Authenticated,
    Connection,
    ConnectionClosed,
    FileAccept,
    FileChunk,
    FileComplete,
    FileInfo,
    FileOffer,
    FileReject,
    FileRequest,
    HistoryEnd,
    HistoryRequest,
    KeysEstablished,
    ListRooms,
    Login,
    Message,
    PeerKeyReceived,
    Record,
    Role,
    RoomInfo,
    RoomList,
    fingerprint,
)
from sealchat.core.hub import Hub, HubConfig
from sealchat.core.hub.names import user_key
from sealchat.core.limits import MAX_CHUNK, MAX_FILE_NAME, MAX_LIST
from sealchat.core.records import file_chunks
from sealchat.transports import requests
from sealchat.transports.blocking_client import BlockingClient
from sealchat.transports.blocking_server import ThreadedServer
from sealchat.transports.keyfile import public_bytes
from sealchat.transports.passwords import CHEAP, hash_password
from sealchat.transports.pinning import KnownServers
from sealchat.transports.requests import MAX_REPLY_ITEMS, MAX_REPLY_RECORDS, Request
from sealchat.transports.server_config import ServerConfig
from sealchat.transports.sqlite_store import SqliteStore
from sealchat.transports.trio_server import TrioServer

PASSWORD = "correct horse battery"
USERS = ("alice", "bob", "carol", "dave")
KINDS = ("trio", "threads")


@dataclasses.dataclass
class Running:
    """A server running for a test."""

    kind: str
    port: int
    fingerprint: str
    hub: Hub
    stop: Callable[[], None]

    def client(self, **options: Any) -> BlockingClient:
        """A connected client that trusts this server's key."""
        expected = self.fingerprint
        return BlockingClient(
            "127.0.0.1",
            self.port,
            trust=lambda event: event.fingerprint == expected,
            **options,
        )

    def login(self, username: str, password: str = PASSWORD) -> BlockingClient:
        client = self.client()
        try:
            client.login(username, password)
        except BaseException:
            client.close()
            raise
        return client


def accept_all(_event: PeerKeyReceived) -> bool:
    return True


def trio_options(tmp_path: Path, who: str, **extra: Any) -> dict[str, Any]:
    """Trio client options with this test's own pin file, key and downloads folder, saying
    yes to a new server key."""

    async def yes(_server: str, _fingerprint: str) -> bool:
        return True

    return {
        "static_key": X25519PrivateKey.generate(),
        "known_servers": KnownServers(tmp_path / f"{who}-known"),
        "confirm_new_key": yes,
        "downloads_dir": tmp_path / f"{who}-downloads",
        **extra,
    }


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def running_server(
    kind: str,
    data_dir: Path,
    *,
    hub: HubConfig | None = None,
    users: tuple[str, ...] = USERS,
    key: X25519PrivateKey | None = None,
    **options: Any,
) -> Iterator[Running]:
    """Start a ``kind`` server ("trio" or "threads") on a free port; stop it afterwards."""
    store = SqliteStore(data_dir)
    for name in users:
        if store.get_user(user_key(name)) is None:
            store.add_user(name, user_key(name), hash_password(PASSWORD, params=CHEAP))
    hub_config = hub or HubConfig()
    config = ServerConfig(**{"port": 0, "argon2": CHEAP, "hub": hub_config, **options})
    the_hub = Hub(store, hub_config)
    key = key or X25519PrivateKey.generate()
    print_fp = fingerprint(public_bytes(key))
    if kind == "threads":
        threaded = ThreadedServer(the_hub, key, config)
        _, port = threaded.start()
        try:
            yield Running(kind, port, print_fp, the_hub, threaded.stop)
        finally:
            threaded.stop()
        return
    server = TrioServer(the_hub, key, config)
    ready = threading.Event()
    box: dict[str, Any] = {}

    def run() -> None:
        async def main() -> None:
            async with trio.open_nursery() as nursery:
                listeners = await nursery.start(server.serve)
                box["port"] = listeners[0].socket.getsockname()[1]
                box["token"] = trio.lowlevel.current_trio_token()
                ready.set()

        try:
            trio.run(main)
        finally:
            ready.set()

    thread = threading.Thread(target=run, name="trio-server", daemon=True)
    thread.start()
    ready.wait(10)
    stopped = threading.Event()

    def stop() -> None:
        if not stopped.is_set():
            stopped.set()
            box["token"].run_sync_soon(server.stop)  # safe from any thread, even a trio one
            thread.join(10)

    try:
        yield Running(kind, box["port"], print_fp, the_hub, stop)
    finally:
        stop()


Behaviour = Callable[[socket.socket, Connection], None]


@contextmanager
def scripted_server(
    behaviour: Behaviour, key: X25519PrivateKey | None = None, *, then: Iterable[Behaviour] = ()
) -> Iterator[int]:
    """A server (with ``key``, or a new one) that takes one connection for ``behaviour``, and
    one more for each of ``then`` in turn: the handshake, then ``behaviour(sock, conn)``;
    yields its port. The last connection stays open until the test ends; one before it ends
    with its behaviour."""
    listener = socket.create_server(("127.0.0.1", 0))
    finished = threading.Event()
    key = key or X25519PrivateKey.generate()
    behaviours = [behaviour, *then]

    def run() -> None:
        for number, each in enumerate(behaviours, 1):
            try:
                sock, _ = listener.accept()
            except OSError:  # closed: the test is over
                return
            conn = Connection(Role.SERVER, static_key=key)
            try:
                while not isinstance(event := conn.next_event(), KeysEstablished):
                    sock.sendall(conn.data_to_send())
                    if event is NEED_DATA:
                        conn.receive_data(sock.recv(65536))
                each(sock, conn)
                if number == len(behaviours):
                    finished.wait()
            except OSError:
                pass
            finally:
                sock.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        finished.set()
        with suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)  # wakes an accept still waiting (on Linux)
        listener.close()
        thread.join(10.0)


@dataclasses.dataclass
class Resetting:
    """A server that resets each connection halfway through the handshake."""

    port: int
    key_read: threading.Semaphore
    """Released by the test once the client has read the server's key: the server resets."""
    reset: threading.Semaphore
    """Released by the server after each reset."""


@contextmanager
def resetting_server(key: X25519PrivateKey, port: int = 0) -> Iterator[Resetting]:
    """A server (on ``port``, or a free one) that answers each handshake with ``key``, then
    waits for ``key_read`` and resets the connection (RST) before the client's last
    handshake message."""
    listener = socket.create_server(("127.0.0.1", port))
    resetting = Resetting(listener.getsockname()[1], threading.Semaphore(0), threading.Semaphore(0))

    def run() -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:  # closed: the test is over
                return
            with sock:
                conn = Connection(Role.SERVER, static_key=key)
                out = b""
                try:
                    while not out and (data := sock.recv(65536)):
                        conn.receive_data(data)
                        conn.next_event()  # NEED_DATA, once it has written its answer
                        out = conn.data_to_send()
                    sock.sendall(out)  # the preamble and the server's handshake message
                except OSError:
                    continue
                if not out:  # the client hung up first
                    continue
                resetting.key_read.acquire(timeout=10)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            resetting.reset.release()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield resetting
    finally:
        with suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)  # wakes the accept (on Linux)
        listener.close()
        resetting.key_read.release()  # a connection still waiting is let go
        thread.join(10.0)


def logs_in_then(
    after: Behaviour, *, features: tuple[str, ...] = (), max_message_chars: int = 0
) -> Behaviour:
    """Accept the login (listing ``features`` and saying ``max_message_chars``: none and 0,
    as an older server), then ``after``."""

    def behaviour(sock: socket.socket, conn: Connection) -> None:
        while not isinstance(event := conn.next_event(), Login):
            if event is NEED_DATA:
                conn.receive_data(sock.recv(65536))
        said = Authenticated(
            username=event.username, features=features, max_message_chars=max_message_chars
        )
        conn.send(said)
        sock.sendall(conn.data_to_send())
        after(sock, conn)

    return behaviour


def answers(asked: type[Record], *replies: Iterable[Record]) -> Behaviour:
    """Answer each ``asked`` record with the next of ``replies``, a record at a time (until
    the client hangs up); then read what comes."""

    def behaviour(sock: socket.socket, conn: Connection) -> None:
        for reply in replies:
            while not isinstance(event := conn.next_event(), asked):
                if isinstance(event, ConnectionClosed):
                    return
                if event is NEED_DATA:
                    conn.receive_data(sock.recv(65536))
            for record in reply:
                conn.send(record)
                sock.sendall(conn.data_to_send())
        while sock.recv(65536):
            pass

    return behaviour


def hangs_up_at(asked: type[Record]) -> Behaviour:
    """Read until the client sends an ``asked`` record, then close the connection without a
    goodbye (as a server that dies, or a network that drops, would)."""

    def behaviour(sock: socket.socket, conn: Connection) -> None:
        while not isinstance(event := conn.next_event(), asked):
            if event is NEED_DATA:
                conn.receive_data(sock.recv(65536))
        sock.close()

    return behaviour


def answers_late(asked: type[Record], *replies: Iterable[Record]) -> Behaviour:
    """Answer nothing until the client has sent one ``asked`` record per reply (it gave up
    on each but the last), then send all ``replies`` in order; then read what comes."""

    def behaviour(sock: socket.socket, conn: Connection) -> None:
        waiting = len(replies)
        while waiting:
            event = conn.next_event()
            if isinstance(event, ConnectionClosed):
                return
            if event is NEED_DATA:
                conn.receive_data(sock.recv(65536))
            waiting -= isinstance(event, asked)
        for record in (r for reply in replies for r in reply):
            conn.send(record)
        sock.sendall(conn.data_to_send())
        while sock.recv(65536):
            pass

    return behaviour


TWO_PAGES = tuple(
    (
        Message(text=f"page {n}", room="general", id=n, sender="bob", ts=1.0),
        HistoryEnd(room="general"),
    )
    for n in (1, 2)
)
"""Two pages of general's history, a message each (for two requests)."""


def room_pages(rooms: int, per_page: int) -> list[RoomList]:
    """A listing of ``rooms`` rooms in pages of ``per_page``, the last one ending it."""
    infos = [RoomInfo(name=f"room-{n}", members=1) for n in range(rooms)]
    starts = range(0, rooms, per_page)
    return [RoomList(rooms=infos[i : i + per_page], more=i + per_page < rooms) for i in starts]


@dataclasses.dataclass(frozen=True)
class Endless:
    """A request that a server answers with ``record`` again and again: ``times`` times,
    twice what it takes to pass the bound the client's error names; then ``end`` ends that
    reply (or, with ``endless``, never), and ``then`` answers the next request of the kind,
    whose result is ``answer``."""

    request: Callable[[], Request[Any]]
    asked: type[Record]
    record: Record
    times: int
    bound: str
    end: Record
    then: tuple[Record, ...]
    answer: Any

    def server(self, *, endless: bool = False) -> Behaviour:
        """Accept the login, then answer the request with too much (without end, with
        ``endless``), and the next one with ``then``."""
        too_much = repeat(self.record, self.times)
        if endless:
            return logs_in_then(answers(self.asked, too_much))
        return logs_in_then(answers(self.asked, [*too_much, self.end], self.then))


_PAGE_2 = Message(text="page 2", room="general", id=2, sender="bob", ts=1.0)
ENDLESS = (
    Endless(
        requests.rooms,
        ListRooms,
        room_pages(MAX_LIST + 1, MAX_LIST)[0],  # a full page, and more to come
        2 * MAX_REPLY_ITEMS // MAX_LIST,
        f"{MAX_REPLY_ITEMS:,} items",
        RoomList(rooms=[], more=False),
        tuple(room_pages(1, MAX_LIST)),
        [RoomInfo(name="room-0", members=1)],
    ),
    Endless(
        partial(requests.history, room="general"),
        HistoryRequest,
        Message(text="again", room="general", id=1, sender="bob", ts=1.0),  # no HistoryEnd
        2 * MAX_REPLY_RECORDS,
        f"{MAX_REPLY_RECORDS:,} records",
        HistoryEnd(room="general"),
        (_PAGE_2, HistoryEnd(room="general")),
        ([_PAGE_2], False),
    ),
)


ANNOUNCED = FileInfo(file_id="a" * 32, name="notes.txt", size=10, sha256=bytes(32))
"""A file as a lying server announces it (see ``offers_other_file``)."""


def offers_other_file(size: int, sha256: bytes = bytes(32)) -> Behaviour:
    """Accept the login, then answer a request for ANNOUNCED with an offer of ``size`` bytes
    and that SHA-256 (of another file than announced, or the same), stream those bytes (a
    malicious server filling the disk), then read what comes."""

    def behaviour(sock: socket.socket, conn: Connection) -> None:
        while not isinstance(event := conn.next_event(), FileRequest):
            if event is NEED_DATA:
                conn.receive_data(sock.recv(65536))
        offer = FileOffer(
            transfer=event.transfer,
            name=ANNOUNCED.name,
            size=size,
            sha256=sha256,
            room="general",
            file_id=ANNOUNCED.file_id,
            offset=event.offset,
        )
        conn.send(offer)
        for offset in range(event.offset, size, MAX_CHUNK):
            conn.send(FileChunk(transfer=event.transfer, offset=offset, data=bytes(MAX_CHUNK)))
            with suppress(OSError):  # the client hung up meanwhile
                sock.sendall(conn.data_to_send())
        with suppress(OSError):
            while sock.recv(65536):
                pass

    return logs_in_then(behaviour)


FILES_OF_MEGABYTES = 600
"""Files whose names (``long_name``) take about 10 MB together: more than a server queues for
one client at once (``max_outgoing_bytes``, 8 MiB)."""


def long_name(n: int) -> str:
    """The ``n``-th of many file names of the longest kind (4096 code points, 16 KiB of
    UTF-8): a file list's page holds 3 of them."""
    return f"{n:04d}" + "\U0001f600" * (MAX_FILE_NAME - 4)


def share_empty_files(
    client: BlockingClient, names: Iterable[str], room: str = "general"
) -> list[str]:
    """Share an empty file under each of ``names`` in ``room`` from ``client`` (on a server
    whose ``message_burst`` allows that many new files at once); their ids, in order."""
    empty = hashlib.sha256(b"").digest()
    shared: list[str] = []
    for transfer, name in enumerate(names, start=1):
        offer = FileOffer(transfer=transfer, name=name, size=0, sha256=empty, room=room)
        client.send_all([offer, FileComplete(transfer=transfer, sha256=empty)])
        while True:
            event = client.next_event()
            if isinstance(event, FileReject):
                raise AssertionError(f"not shared: {event.reason}")
            if isinstance(event, FileAccept):
                shared.append(event.file_id)
            if isinstance(event, Message) and event.file is not None:
                assert event.file.file_id == shared[-1]
                break
    return shared


def stays_silent(_sock: socket.socket, _conn: Connection) -> None:
    """Read nothing and say nothing (until the test ends)."""


def drain(client: BlockingClient, quiet: float = 1.0) -> list[object]:
    """The events that have come to ``client``, until none comes for ``quiet`` seconds."""
    events: list[object] = []
    while True:
        try:
            events.append(client.next_event(timeout=quiet))
        except TimeoutError:
            return events


def full_disk(*_args: object) -> int:
    """A store's ``write_chunk`` on a full disk."""
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def upload_begun(
    client: BlockingClient, data: bytes, name: str, room: str = "general"
) -> tuple[FileAccept, Callable[[], None]]:
    """``client`` offers ``data`` as ``name`` in ``room`` (transfer 1) and sends its first two
    chunks, which the server has taken on return. Returns the acceptance, and a function that
    sends the rest and waits for the file's announcement."""
    digest = hashlib.sha256(data).digest()
    offer = FileOffer(transfer=1, name=name, size=len(data), sha256=digest, room=room)
    accept = client.ask(requests.upload(offer))
    client.send_all(file_chunks(1, 0, data[: 2 * MAX_CHUNK]))
    client.rooms()  # answered after the chunks were taken

    def finish() -> None:
        client.send_all(file_chunks(1, 2 * MAX_CHUNK, data[2 * MAX_CHUNK :]))
        client.send(FileComplete(transfer=1, sha256=digest))
        client.next(Message)  # its announcement

    return accept, finish


def file_to_send(folder: Path, name: str = "video.mp4", size: int = 300_000) -> tuple[Path, bytes]:
    """A file of ``size`` random bytes named ``name`` in ``folder``: its path and its bytes."""
    data = os.urandom(size)
    path = folder / name
    path.write_bytes(data)
    return path, data
