"""The async client library against a real server on loopback."""

from __future__ import annotations

import errno
import hashlib
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from sealchat.core import (
    NEED_DATA,
    Authenticated,
    Bye,
    Connection,
    ConnectionClosed,
    Delivered,
    FileAccept,
    FileChunk,
    FileComplete,
    FileInfo,
    FileList,
    FileOffer,
    FileReject,
    HistoryEnd,
    HistoryRequest,
    ListFiles,
    ListReadMarkers,
    ListRooms,
    Login,
    LoginRejected,
    Message,
    Presence,
    ReadMarker,
    ReadMarkers,
    ReadUpTo,
    Record,
    RoomLeft,
    State,
    Typing,
    fingerprint,
)
from sealchat.core import Error as ServerError
from sealchat.core.hub import ACCOUNT_REMOVED, GENERIC_LOGIN_FAILURE, PASSWORD_CHANGED, HubConfig
from sealchat.core.hub.names import user_key
from sealchat.core.limits import MAX_CHUNK, MAX_LIST, MAX_ROOM, MAX_UINT, MAX_USERNAME
from sealchat.core.records import CHANGE_PASSWORD, READ_MARKERS
from sealchat.transports import requests, trio_client, trio_delivery, trio_transfers
from sealchat.transports.downloads import PartialDownload
from sealchat.transports.keyfile import public_bytes
from sealchat.transports.passwords import CHEAP, hash_password
from sealchat.transports.pinning import (
    KnownServers,
    ServerKeyChanged,
    ServerKeyUnknown,
    server_name,
)
from sealchat.transports.requests import (
    MAX_REPLY_ITEMS,
    MAX_REPLY_RECORDS,
    TRANSFER_BLOCK,
    TRANSFER_QUEUE,
)
from sealchat.transports.sqlite_store import SqliteStore
from sealchat.transports.trio import MessageTooLong
from sealchat.transports.trio_client import (
    EVENT_BUFFER,
    ChatClient,
    ClientError,
    ConnectionLost,
    Disconnected,
    LinkState,
    LoginFailed,
    PasswordNotChanged,
    TransferFailed,
    Unreachable,
    connect,
)
from sealchat.transports.trio_link import SEND_BUFFER, Link
from tests.servers import (
    ANNOUNCED,
    ENDLESS,
    FILES_OF_MEGABYTES,
    KINDS,
    PASSWORD,
    TWO_PAGES,
    Behaviour,
    Endless,
    Resetting,
    Running,
    answers,
    answers_late,
    file_to_send,
    free_port,
    full_disk,
    logs_in_then,
    long_name,
    offers_other_file,
    resetting_server,
    room_pages,
    running_server,
    scripted_server,
    share_empty_files,
    stays_silent,
    trio_options,
    upload_begun,
)

UNLIMITED = HubConfig(messages_per_second=1e9, message_burst=10**9)
"""A hub without a rate limit, for bursts of messages."""
SLOW = HubConfig(messages_per_second=10, message_burst=5)
"""A hub that takes a burst of 5 messages, then 10 a second."""


@pytest.fixture
def server(tmp_path: Path) -> Any:
    with running_server("trio", tmp_path / "server") as running:
        yield running


@pytest.fixture
def brief_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    """A call given up holds back what it took for a moment only (see ABANDONED_HOLD)."""
    monkeypatch.setattr(trio_client, "ABANDONED_HOLD", 0.1)


@asynccontextmanager
async def logged_in(
    server: Running, tmp_path: Path, who: str, *, announce: bool = True, **extra: Any
) -> AsyncIterator[ChatClient]:
    async with connect("127.0.0.1", server.port, **trio_options(tmp_path, who, **extra)) as client:
        await client.login(who, PASSWORD, announce=announce)
        yield client


async def next_of(client: ChatClient, kind: type, timeout: float = 10) -> Any:
    with trio.fail_after(timeout):
        async for event in client.events():
            if isinstance(event, kind):
                return event
    raise AssertionError("the event stream ended")


async def all_acknowledged(client: ChatClient, timeout: float = 10) -> None:
    """Wait until the server has acknowledged every message ``client`` sent."""
    with trio.fail_after(timeout):
        while client.unacknowledged:
            await trio.sleep(0.01)


def queued_events(client: ChatClient) -> list[object]:
    """The events waiting on ``client``'s stream (taken from it)."""
    events: list[object] = []
    while True:
        try:
            events.append(client.events().receive_nowait())
        except trio.WouldBlock:
            return events


@asynccontextmanager
async def stranded(
    tmp_path: Path,
    data_dir: Path,
    port: int,
    backoff: tuple[float, float],
    key: X25519PrivateKey | None = None,
    **options: Any,
) -> AsyncIterator[ChatClient]:
    """alice (with client ``options``), logged in to a server (``data_dir``, ``port``, ``key``
    or a new one) that then stopped; she has seen her link go and retries with ``backoff``."""
    async with AsyncExitStack() as stack:
        with running_server("trio", data_dir, port=port, key=key) as server:
            alice = await stack.enter_async_context(
                logged_in(server, tmp_path, "alice", backoff=backoff, **options)
            )
        assert isinstance(await next_of(alice, LinkState), LinkState)
        yield alice


@asynccontextmanager
async def wrote_while_down(
    tmp_path: Path, texts: list[str], hub: HubConfig
) -> AsyncIterator[ChatClient]:
    """alice, who wrote ``texts`` to general while her server was down, back online once it
    is restarted with ``hub``'s limits."""
    port, key, data_dir = free_port(), X25519PrivateKey.generate(), tmp_path / "server"
    async with stranded(tmp_path, data_dir, port, backoff=(0.05, 0.2), key=key) as alice:
        for text in texts:
            await alice.send_message(text, room="general")
        with running_server("trio", data_dir, port=port, key=key, hub=hub):
            with trio.fail_after(20):
                await alice.wait_online()
            yield alice


@asynccontextmanager
async def scripted(
    tmp_path: Path, behaviour: Behaviour, *then: Behaviour, **extra: Any
) -> AsyncIterator[ChatClient]:
    """alice (with client options ``extra``), logged in to a scripted server (``behaviour``,
    then one of ``then`` for each reconnect) whose key she has pinned already."""
    key = X25519PrivateKey.generate()
    with scripted_server(behaviour, key=key, then=then) as port:
        options = trio_options(tmp_path, "alice", **extra)
        server = server_name("127.0.0.1", port)
        options["known_servers"].pin(server, fingerprint(public_bytes(key)))
        async with connect("127.0.0.1", port, **options) as alice:
            await alice.login("alice", PASSWORD)
            yield alice


def leave_partial(client: ChatClient, file_id: str, data: bytes) -> Path:
    """Leave ``data`` where an interrupted download of ``file_id`` would have left it."""
    part = client.downloads_dir / f".{file_id}.part"
    part.parent.mkdir(parents=True, exist_ok=True)
    part.write_bytes(data)
    return part


# --- pinning ------------------------------------------------------------------------------


async def test_first_contact_asks_and_pins(server: Running, tmp_path: Path) -> None:
    asked: list[tuple[str, str]] = []

    async def ask(name: str, fp: str) -> bool:
        asked.append((name, fp))
        return True

    known = KnownServers(tmp_path / "known")
    opts = trio_options(tmp_path, "alice", known_servers=known, confirm_new_key=ask)
    async with connect("127.0.0.1", server.port, **opts) as client:
        assert client.fingerprint == server.fingerprint
    assert asked == [(f"127.0.0.1:{server.port}", server.fingerprint)]
    assert known.lookup(f"127.0.0.1:{server.port}") == server.fingerprint
    assert oct(known.path.stat().st_mode & 0o777) == "0o600"
    async with connect("127.0.0.1", server.port, **opts):
        pass
    assert len(asked) == 1  # pinned: not asked again


async def test_a_slow_answer_to_the_key_question_still_connects(tmp_path: Path) -> None:
    # The user checks the fingerprint with the operator for longer than the server waits for
    # a handshake: the key is pinned and the client connects again, without asking twice.
    asked: list[str] = []

    async def slow(_name: str, fp: str) -> bool:
        asked.append(fp)
        await trio.sleep(1.0)
        return True

    with running_server("trio", tmp_path / "s", handshake_timeout=0.3) as server:
        opts = trio_options(tmp_path, "alice", confirm_new_key=slow)
        async with connect("127.0.0.1", server.port, **opts) as alice:
            assert await alice.login("alice", PASSWORD) == "alice"
    assert asked == [server.fingerprint]
    assert opts["known_servers"].lookup(f"127.0.0.1:{server.port}") == server.fingerprint


async def test_a_connection_turned_away_at_once_says_to_try_again_later(tmp_path: Path) -> None:
    with running_server("trio", tmp_path / "s", max_connections_per_address=1) as server:
        opts = trio_options(tmp_path, "alice")  # pinned: first contact would connect twice
        opts["known_servers"].pin(f"127.0.0.1:{server.port}", server.fingerprint)
        async with connect("127.0.0.1", server.port, **opts):  # the address's one connection
            with pytest.raises(ClientError) as refused:
                async with connect("127.0.0.1", server.port, **opts):
                    pass
    assert str(refused.value) == (
        "the server closed the connection at once: it may be full or shutting down, "
        "or allow no more connections from your address; try again later"
    )


async def test_a_host_name_in_other_case_names_the_same_server(
    server: Running, tmp_path: Path
) -> None:
    known = KnownServers(tmp_path / "known")
    known.pin(f"localhost:{server.port}", "SHA256:" + "A" * 43)  # the real server's key

    async def never(_name: str, _fp: str) -> bool:
        raise AssertionError("asked about a new server")

    opts = trio_options(tmp_path, "alice", known_servers=known, confirm_new_key=never)
    with pytest.raises(ServerKeyChanged):
        async with connect("LOCALHOST", server.port, **opts):
            pass


async def test_declined_or_unasked_key_is_refused(server: Running, tmp_path: Path) -> None:
    async def no(_name: str, _fp: str) -> bool:
        return False

    for confirm in (no, None):
        opts = trio_options(tmp_path, "alice", confirm_new_key=confirm)
        with pytest.raises(ServerKeyUnknown, match="sealchat trust"):
            async with connect("127.0.0.1", server.port, **opts):
                pass
        assert opts["known_servers"].lookup(f"127.0.0.1:{server.port}") is None


async def test_changed_key_is_a_hard_failure_naming_both(server: Running, tmp_path: Path) -> None:
    known = KnownServers(tmp_path / "known")
    old = "SHA256:" + "A" * 43
    known.pin(f"127.0.0.1:{server.port}", old)
    with pytest.raises(ServerKeyChanged) as info:
        async with connect(
            "127.0.0.1", server.port, **trio_options(tmp_path, "a", known_servers=known)
        ):
            pass
    text = str(info.value)
    assert old in text
    assert server.fingerprint in text
    assert "sealchat trust" in text
    assert known.lookup(f"127.0.0.1:{server.port}") == old  # nothing was overwritten


async def test_unreachable_server_says_so(tmp_path: Path) -> None:
    with pytest.raises(ClientError, match="cannot reach"):
        async with connect("127.0.0.1", free_port(), **trio_options(tmp_path, "a")):
            pass


@pytest.mark.parametrize("host", ["chat..example.org", "x" * 64 + ".example.org"])
async def test_a_host_name_that_cannot_be_looked_up_is_unreachable_not_a_crash(
    tmp_path: Path, host: str
) -> None:
    with pytest.raises(Unreachable, match="not a valid host name; is the server running and"):
        async with connect(host, 7878, **trio_options(tmp_path, "a")):
            pass


async def test_a_server_that_never_answers_the_handshake_is_unreachable(tmp_path: Path) -> None:
    with socket.socket() as silent:  # takes connections (the kernel does), says nothing
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        with pytest.raises(Unreachable, match="did not answer the handshake; is it a sealchat"):
            async with connect(
                "127.0.0.1", port, **trio_options(tmp_path, "a", connect_timeout=0.5)
            ):
                pass


# --- chatting -----------------------------------------------------------------------------


class PinsReadDuringAReset(KnownServers):
    """Pins whose check of a key waits while ``resetting`` (once set) resets the connection,
    as if the pin file were on a slow disk."""

    resetting: Resetting | None = None

    def require(self, server: str, fingerprint: str) -> bool:
        if self.resetting is not None:
            self.resetting.key_read.release()
            self.resetting.reset.acquire(timeout=10)
        return super().require(server, fingerprint)


async def test_a_connection_reset_during_the_handshake_is_a_client_error(tmp_path: Path) -> None:
    key = X25519PrivateKey.generate()
    with resetting_server(key) as resetting:
        pins = PinsReadDuringAReset(tmp_path / "known")
        pins.pin(server_name("127.0.0.1", resetting.port), fingerprint(public_bytes(key)))
        pins.resetting = resetting
        options = trio_options(tmp_path, "alice", known_servers=pins)
        with pytest.raises(ConnectionLost, match="during the handshake"):
            async with connect("127.0.0.1", resetting.port, **options):
                pass


async def test_a_connection_reset_during_a_reconnect_is_retried(tmp_path: Path) -> None:
    port, key, data_dir = free_port(), X25519PrivateKey.generate(), tmp_path / "server"
    pins = PinsReadDuringAReset(tmp_path / "known")
    async with stranded(tmp_path, data_dir, port, (0.05, 0.05), key, known_servers=pins) as alice:
        with resetting_server(key, port) as resetting:
            pins.resetting = resetting
            with trio.fail_after(10):
                while "during the handshake" not in (await next_of(alice, LinkState)).reason:
                    pass
            assert (await next_of(alice, LinkState)).retry_in  # and it tries again
        pins.resetting = None
        with running_server("trio", data_dir, port=port, key=key):
            with trio.fail_after(20):
                await alice.wait_online()
        assert alice.gave_up_on is None


async def test_wrong_password(server: Running, tmp_path: Path) -> None:
    async with connect("127.0.0.1", server.port, **trio_options(tmp_path, "alice")) as client:
        with pytest.raises(LoginFailed, match=GENERIC_LOGIN_FAILURE):
            await client.login("alice", "nope")


async def test_rooms_messages_presence_typing_history(server: Running, tmp_path: Path) -> None:
    async with (
        logged_in(server, tmp_path, "alice") as alice,
        logged_in(server, tmp_path, "bob") as bob,
    ):
        presence = await next_of(alice, Presence)
        assert (presence.user, presence.online) == ("bob", True)
        members = await alice.join("random")
        assert [m.name for m in members] == ["alice"]
        await bob.join("random")
        assert {r.name for r in await bob.rooms()} >= {"general", "random"}
        for i in range(5):
            await alice.send_message(f"m{i}", room="random")
        received = [await next_of(bob, Message) for _ in range(5)]
        assert [m.text for m in received] == [f"m{i}" for i in range(5)]
        await bob.typing(room="random")
        notice = await next_of(alice, Typing)
        assert (notice.user, notice.room, notice.active) == ("bob", "random", True)
        page, more = await bob.history(room="random", limit=3)
        assert [m.text for m in page] == ["m2", "m3", "m4"]
        assert more
        older, more = await bob.history(room="random", before=page[0].id, limit=3)
        assert [m.text for m in older] == ["m0", "m1"]
        assert not more
        await bob.send_message("just us", to="alice")
        dm = await next_of(alice, Message)
        assert (dm.text, dm.sender) == ("just us", "bob")
        assert alice.unacknowledged == 0


# --- files --------------------------------------------------------------------------------


async def test_upload_and_download_with_progress(server: Running, tmp_path: Path) -> None:
    data = os.urandom(300_000)
    source = tmp_path / "report.pdf"
    source.write_bytes(data)
    seen: list[tuple[int, int]] = []
    async with (
        logged_in(server, tmp_path, "alice") as alice,
        logged_in(server, tmp_path, "bob") as bob,
    ):
        info = await alice.send_file(
            source, room="general", progress=lambda d, t: seen.append((d, t))
        )
        assert seen[-1] == (len(data), len(data))
        assert info.sha256 == hashlib.sha256(data).digest()
        announced = await next_of(bob, Message)
        assert announced.file is not None
        assert announced.file.file_id == info.file_id
        path = await bob.download(info.file_id, expected=announced.file)  # as shown: fine
        assert path.read_bytes() == data
        assert path.name == "report.pdf"
        again = await bob.download(info.file_id)  # never clobbers
        assert again.name == "report (1).pdf"


@pytest.mark.parametrize(
    ("size", "sha256", "refusal"),
    [
        (64 * MAX_CHUNK, ANNOUNCED.sha256, "as 3,932,160 bytes, not the 10 bytes it announced"),
        (ANNOUNCED.size, b"\x01" * 32, "with another SHA-256 than it announced"),
    ],
    ids=["size", "sha256"],
)
async def test_a_download_offered_as_other_than_the_file_shown_is_refused(
    tmp_path: Path, size: int, sha256: bytes, refusal: str
) -> None:
    # A malicious server announces 10 bytes, then offers (and streams) megabytes, or other
    # bytes: given the file the user was shown, the client refuses the offer and writes
    # nothing (the repro wrote 300 MiB and kept them); the link stays.
    async with scripted(tmp_path, offers_other_file(size, sha256), reconnect=False) as alice:
        with (
            trio.fail_after(10),
            pytest.raises(TransferFailed, match=f"offered 'notes.txt' .* {refusal}"),
        ):
            await alice.download(ANNOUNCED.file_id, expected=ANNOUNCED)
        assert list(alice.downloads_dir.iterdir()) == []  # not a byte kept
        assert alice.online
        with pytest.raises(ValueError, match="not 'bbbb"):  # a caller's slip, not the server's
            await alice.download("b" * 32, expected=ANNOUNCED)


async def test_big_transfers_with_a_slow_disk_keep_the_download_queue_bounded(
    server: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(5 * TRANSFER_BLOCK + 12_345)  # several read blocks, many queues full
    source = tmp_path / "video.bin"
    source.write_bytes(data)
    queued: list[int] = []
    write_all = PartialDownload.write_all

    def slow_write_all(self: PartialDownload, chunks: Any) -> None:
        queued.extend(c.statistics().current_buffer_used for c in bob._chunks.values())
        time.sleep(0.05)  # a disk much slower than the network
        write_all(self, chunks)

    monkeypatch.setattr(PartialDownload, "write_all", slow_write_all)
    async with (
        logged_in(server, tmp_path, "alice") as alice,
        logged_in(server, tmp_path, "bob") as bob,
    ):
        sent: list[int] = []
        info = await alice.send_file(source, room="general", progress=lambda d, t: sent.append(d))
        assert sent == sorted(sent)
        assert sent[-1] == len(data)
        got: list[int] = []
        path = await bob.download(info.file_id, progress=lambda d, t: got.append(d))
    assert path.read_bytes() == data
    assert got == sorted(got)
    assert got[-1] == len(data)
    assert queued
    assert max(queued) <= TRANSFER_QUEUE


@pytest.mark.parametrize("kind", KINDS)
async def test_send_file_takes_over_the_upload_a_dead_connection_still_holds(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The connection that sent the first part died on the client's side only: the server
    # keeps it open, silent, holding the upload (for up to ~100 s, until its keepalive gives
    # up). send_file from a new connection is refused until that upload has been quiet for
    # upload_takeover_after, tries again when the server says, takes it over and finishes it.
    source, data = file_to_send(tmp_path)
    digest = hashlib.sha256(data).digest()
    sent = 2 * MAX_CHUNK
    waits: list[float] = []
    busy_wait = requests.busy_wait

    def waiting(busy: requests.UploadBusy) -> float:
        waits.append(busy_wait(busy))
        return waits[-1]

    monkeypatch.setattr(requests, "busy_wait", waiting)
    hub = HubConfig(upload_takeover_after=1.0)
    with running_server(kind, tmp_path / "server", hub=hub) as server:
        old = server.login("alice")
        try:
            accept, _ = upload_begun(old, data, source.name)  # then its connection goes silent
            async with logged_in(server, tmp_path, "alice") as alice:
                done: list[int] = []
                info = await alice.send_file(
                    source, room="general", progress=lambda d, _t: done.append(d)
                )
                assert (info.file_id, info.sha256) == (accept.file_id, digest)
                assert done[0] == sent  # resumed where the server's copy stopped
                assert done[-1] == len(data)
                path = await alice.download(info.file_id)
            assert path.read_bytes() == data
        finally:
            old.close()
    # However long it took to log in, each wait was what the server said, with a margin.
    assert len(waits) < requests.UPLOAD_BUSY_TRIES
    assert all(0 < wait <= 1.0 + requests.UPLOAD_BUSY_MARGIN for wait in waits)


@pytest.mark.parametrize("kind", KINDS)
async def test_send_file_of_a_file_another_connection_finishes_meanwhile_shares_it_once(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two devices of alice's send the same file at once: the second is told to wait, and the
    # first finishes meanwhile. The second offered it again and uploaded and shared it whole
    # a second time; it now finds it shared and returns it.
    source, data = file_to_send(tmp_path)
    digest = hashlib.sha256(data).digest()
    hub = HubConfig(upload_takeover_after=30.0)
    with running_server(kind, tmp_path / "server", hub=hub) as server:
        first = server.login("alice")
        try:
            accept, finish = upload_begun(first, data, source.name)  # the first's, active

            def first_finishes(_busy: requests.UploadBusy) -> float:
                finish()
                return 0.0

            monkeypatch.setattr(requests, "busy_wait", first_finishes)
            async with logged_in(server, tmp_path, "alice") as alice:
                done: list[int] = []
                info = await alice.send_file(
                    source, room="general", progress=lambda d, _t: done.append(d)
                )
                assert (info.file_id, info.sha256, done[-1]) == (accept.file_id, digest, len(data))
                assert [f.file_id for f in await alice.files(room="general")] == [info.file_id]
        finally:
            first.close()


async def test_an_upload_whose_answer_was_lost_is_not_stored_twice(
    server: Running, tmp_path: Path
) -> None:
    source = tmp_path / "report.pdf"
    source.write_bytes(os.urandom(300_000))
    async with (
        logged_in(server, tmp_path, "alice", backoff=(0.05, 0.2)) as alice,
        logged_in(server, tmp_path, "bob") as bob,
    ):
        real_await = alice._await
        waits: list[object] = []

        async def lose_the_first_announcement(waiter: Any, reply: Any, timeout: float) -> Any:
            waits.append(waiter)
            if len(waits) == 2:  # after the offer's FileAccept: the upload's announcement
                alice._waiters.remove(waiter)  # its answer is not read: the link drops first
                await next_of(bob, Message)  # the server has stored and announced the file
                link = alice._link
                assert link is not None
                await link.stream.aclose()
                waiter.lost = True
                waiter.finished.set()
                cut.set()
            return await real_await(waiter, reply, timeout)

        cut = trio.Event()
        alice._await = lose_the_first_announcement  # type: ignore[method-assign]
        info = await alice.send_file(source, room="general")
        assert cut.is_set()
        assert [f.file_id for f in await alice.files(room="general")] == [info.file_id]
        with trio.move_on_after(0.5):  # nothing is announced a second time
            extra = await next_of(bob, Message)
            raise AssertionError(f"announced again: {extra!r}")


async def test_download_resumes_a_partial_file(server: Running, tmp_path: Path) -> None:
    data = os.urandom(200_000)
    source = tmp_path / "big.bin"
    source.write_bytes(data)
    async with logged_in(server, tmp_path, "alice") as alice:
        info = await alice.send_file(source, room="general")
        leave_partial(alice, info.file_id, data[:70_000])
        first: list[int] = []
        path = await alice.download(info.file_id, progress=lambda d, t: first.append(d))
        assert first[0] == 70_000  # it asked from where the partial file ends
        assert path.read_bytes() == data


async def test_a_partial_file_longer_than_the_file_says_what_to_delete(
    server: Running, tmp_path: Path
) -> None:
    source = tmp_path / "short.txt"
    source.write_bytes(b"short")
    async with logged_in(server, tmp_path, "alice") as alice:
        info = await alice.send_file(source, room="general")
        leave_partial(alice, info.file_id, b"longer than the file")
        with pytest.raises(TransferFailed, match=rf"past the end.*delete \.{info.file_id}\.part"):
            await alice.download(info.file_id)


async def test_a_downloads_folder_that_cannot_be_written_fails_the_transfer(
    server: Running, tmp_path: Path
) -> None:
    source = tmp_path / "f.bin"
    source.write_bytes(os.urandom(1000))
    (tmp_path / "a-file").write_text("")
    downloads = tmp_path / "a-file" / "in"
    async with logged_in(server, tmp_path, "alice", downloads_dir=downloads) as alice:
        info = await alice.send_file(source, room="general")
        with pytest.raises(TransferFailed, match=os.strerror(errno.ENOTDIR)):  # shown in a GUI row
            await alice.download(info.file_id)


async def test_paths_may_be_given_as_strings(server: Running, tmp_path: Path) -> None:
    source = tmp_path / "f.bin"
    source.write_bytes(os.urandom(1000))
    downloads = str(tmp_path / "in")
    async with logged_in(server, tmp_path, "alice", downloads_dir=downloads) as alice:
        info = await alice.send_file(str(source), room="general")
        saved = await alice.download(info.file_id, expected=info)
    assert saved == tmp_path / "in" / "f.bin"
    assert saved.read_bytes() == source.read_bytes()


async def test_corrupt_partial_download_is_detected(server: Running, tmp_path: Path) -> None:
    source = tmp_path / "x.bin"
    source.write_bytes(b"real contents" * 1000)
    async with logged_in(server, tmp_path, "alice") as alice:
        info = await alice.send_file(source, room="general")
        part = leave_partial(alice, info.file_id, b"garbage!" * 10)
        with pytest.raises(TransferFailed, match="SHA-256"):
            await alice.download(info.file_id)
        assert not part.exists()
        assert (await alice.download(info.file_id)).read_bytes() == source.read_bytes()


async def test_a_cancelled_or_failed_upload_frees_its_transfer(tmp_path: Path) -> None:
    data = os.urandom(3 * TRANSFER_BLOCK)
    source = tmp_path / "report.pdf"
    source.write_bytes(data)

    def shrink(done: int, total: int) -> None:
        if 0 < done < total:  # another program truncates the file meanwhile
            with open(source, "r+b") as file:
                file.truncate(done)

    def breaks(done: int, _total: int) -> None:
        if done:
            raise RuntimeError("the progress bar broke")

    with running_server("trio", tmp_path / "s", hub=HubConfig(max_transfers=1)) as server:
        async with logged_in(server, tmp_path, "alice") as alice:
            with trio.CancelScope() as scope:  # while the offer waits for its answer
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(partial(alice.send_file, source, room="general"))
                    while not alice._waiters:
                        await trio.sleep(0)
                    scope.cancel()
            with pytest.raises(TransferFailed, match="shrank"):
                await alice.send_file(source, room="general", progress=shrink)
            source.write_bytes(data)
            with pytest.raises(RuntimeError, match="progress bar"):
                await alice.send_file(source, room="general", progress=breaks)
            with trio.fail_after(10):
                info = await alice.send_file(source, room="general")  # its slot is free
    assert info.size == len(data)


async def test_an_upload_refused_midway_stops_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "up.bin"
    source.write_bytes(os.urandom(8 * TRANSFER_BLOCK))

    with running_server("trio", tmp_path / "s") as server:
        monkeypatch.setattr(server.hub.store, "write_chunk", full_disk)
        async with logged_in(server, tmp_path, "alice") as alice:
            refused = trio.Event()
            dispatch, send_all = alice._dispatch, alice._send_all
            blocks = 0

            async def watching(record: Any) -> None:
                if isinstance(record, FileReject):
                    refused.set()
                await dispatch(record)

            async def sending(records: Any, **options: Any) -> None:
                nonlocal blocks
                records = list(records)
                if any(isinstance(r, FileChunk) for r in records):
                    blocks += 1
                    if blocks == 2:  # the refusal of the first is here before the second goes
                        await refused.wait()
                await send_all(records, **options)

            monkeypatch.setattr(alice, "_dispatch", watching)
            monkeypatch.setattr(alice, "_send_all", sending)
            with trio.fail_after(10), pytest.raises(TransferFailed, match="could not store"):
                await alice.send_file(source, room="general")
    assert blocks <= 2  # not the 8 of the whole file


def says_bye_after_accepting(stalled: threading.Event) -> Behaviour:
    """Accept the upload offered, then say goodbye once ``stalled`` is set (the connection,
    the server's last, stays open until the test ends)."""

    def behaviour(sock: socket.socket, conn: Connection) -> None:
        while not isinstance(event := conn.next_event(), FileOffer):
            if event is NEED_DATA:
                conn.receive_data(sock.recv(65536))
        conn.send(FileAccept(transfer=event.transfer, file_id="f1"))
        sock.sendall(conn.data_to_send())
        stalled.wait(10)
        conn.send(Bye(reason="shutting down"))
        sock.sendall(conn.data_to_send())

    return behaviour


async def test_an_upload_waiting_for_the_writer_ends_with_the_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The socket takes no more of the upload (a server that stopped reading), then the link
    # ends: the upload, waiting for the writer to take its chunks, must see the link is gone.
    # It spun instead (the link's last "wrote" stays set and its queue never drains), taking
    # a core and never resuming: the window showed "Sending… 66%" for good.
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(4 * TRANSFER_BLOCK))
    flush = Link.flush

    async def stuck_on_chunks(link: Link) -> None:
        if link.conn.bytes_to_send > SEND_BUFFER:  # the upload's: the socket is full
            await trio.sleep_forever()
        await flush(link)

    monkeypatch.setattr(Link, "flush", stuck_on_chunks)
    stalled = threading.Event()
    failed: list[BaseException] = []
    behaviour = logs_in_then(says_bye_after_accepting(stalled))
    async with scripted(tmp_path, behaviour, reconnect=False) as alice:

        async def upload() -> None:
            try:
                await alice.send_file(source, room="general")
            except ConnectionLost as exc:
                failed.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(upload)
            with trio.fail_after(10):
                while not (alice._link and alice._link.conn.bytes_to_send > SEND_BUFFER):
                    await trio.sleep(0.01)  # the upload waits for the stuck writer
                stalled.set()  # the server says goodbye
                while not failed:
                    await trio.sleep(0.01)
    assert isinstance(failed[0], Disconnected)


def _unread(path: Path, stop: threading.Event | None = None, **_: object) -> bytes:
    raise AssertionError(f"{path} was read to hash it")


async def test_a_file_over_the_servers_limit_is_refused_before_it_is_read_or_offered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running_server("trio", tmp_path / "s", hub=HubConfig(max_file_size=1000)) as server:
        source = tmp_path / "big.bin"
        source.write_bytes(bytes(5000))
        async with logged_in(server, tmp_path, "alice") as alice:
            assert alice.max_file_size == 1000
            sent: list[Record] = []
            send_all = alice._send_all

            async def sending(records: Any, **options: Any) -> None:
                records = list(records)
                sent.extend(records)
                await send_all(records, **options)

            monkeypatch.setattr(alice, "_send_all", sending)
            with monkeypatch.context() as unread:
                unread.setattr(trio_transfers, "sha256_of", _unread)
                with pytest.raises(TransferFailed) as refused_here:
                    await alice.send_file(source, room="general")
            assert sent == []
            alice.max_file_size = 0  # as from an older server, which does not say
            with pytest.raises(TransferFailed) as refused_there:
                await alice.send_file(source, room="general")
            assert isinstance(sent[0], FileOffer)  # then refused by the server
    reason = "file too large: 4.9 KiB; the limit is 1000 B"
    assert str(refused_here.value) == str(refused_there.value) == reason


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux's /proc")
async def test_a_file_whose_size_says_nothing_is_refused_before_it_is_offered(
    server: Running, tmp_path: Path
) -> None:
    status = Path("/proc/self/status")  # its size says 0 B, but it holds text
    async with logged_in(server, tmp_path, "alice") as alice:
        with pytest.raises(TransferFailed, match=r"^status changed while it was read: its size"):
            await alice.send_file(status, room="general")
        assert await alice.files(room="general") == []


async def test_cancelling_an_upload_while_its_file_is_hashed_ends_it_at_once(
    server: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Hashing a large file takes seconds; a cancel (or closing the window) must not wait.
    hashing, stopped = threading.Event(), threading.Event()

    def endless(path: Path, stop: threading.Event | None = None, **_: object) -> bytes:
        assert stop is not None
        hashing.set()
        if stop.wait(30):  # a block at a time, until told to stop
            stopped.set()
            raise InterruptedError(f"stopped hashing {path}")
        return b"\0" * 32

    monkeypatch.setattr(trio_transfers, "sha256_of", endless)
    source = tmp_path / "big.bin"
    source.write_bytes(b"x" * 5000)
    async with logged_in(server, tmp_path, "alice") as alice:
        with trio.CancelScope() as upload:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(partial(alice.send_file, source, room="general"))
                await trio.to_thread.run_sync(hashing.wait)
                upload.cancel()
        assert upload.cancelled_caught
        assert stopped.wait(10)  # the thread stopped reading, not only the caller waiting
        assert await alice.files(room="general") == []


async def test_the_direct_conversations_are_those_said_at_the_last_login(tmp_path: Path) -> None:
    with running_server("trio", tmp_path / "s") as server:
        async with logged_in(server, tmp_path, "alice", backoff=(0.05, 0.2)) as alice:
            assert (alice.conversations, alice.max_file_size) == ((), HubConfig().max_file_size)
            with server.login("bob") as bob:
                await trio.to_thread.run_sync(partial(bob.send_message, "hi", to="alice"))
            assert alice._link is not None
            await alice._link.stream.aclose()  # lost: the client logs in again
            with trio.fail_after(10):
                while not (await next_of(alice, LinkState)).connected:
                    pass
            assert alice.conversations == ("bob",)


# --- read markers -------------------------------------------------------------------------


async def test_a_conversation_read_on_one_device_is_read_on_the_others(
    server: Running, tmp_path: Path
) -> None:
    async with (
        logged_in(server, tmp_path, "alice") as laptop,
        logged_in(server, tmp_path / "desktop", "alice") as desktop,
    ):
        assert await next_of(desktop, ReadMarkers) == ReadMarkers(markers=[])  # asked at login
        with server.login("bob") as bob:
            ack = await trio.to_thread.run_sync(partial(bob.send_message, "hi", to="alice"))
        assert await laptop.mark_read(ack.id, peer="bob")
        assert not await laptop.mark_read(ack.id, peer="Bob")  # no higher: nothing sent
        assert not await laptop.mark_read(ack.id - 1, peer="bob")
        assert await next_of(desktop, ReadUpTo) == ReadUpTo(up_to=ack.id, peer="bob")
        assert desktop.read_marker(peer="BOB") == ack.id
        assert not await desktop.mark_read(ack.id, peer="bob")  # known already: not sent back
        async with logged_in(server, tmp_path / "phone", "alice") as phone:
            listed = await next_of(phone, ReadMarkers)
            assert listed == ReadMarkers(markers=[ReadMarker(up_to=ack.id, peer="bob")])
            assert phone.read_marker(peer="bob") == ack.id
            assert phone.read_marker(room="general") == 0


@asynccontextmanager
async def two_devices(
    server: Running, tmp_path: Path
) -> AsyncIterator[tuple[ChatClient, ChatClient]]:
    """alice on a laptop that reconnects quickly and on a desktop, each past its login's
    listing of read markers."""
    async with (
        logged_in(server, tmp_path, "alice", backoff=(0.05, 0.2)) as laptop,
        logged_in(server, tmp_path / "desktop", "alice") as desktop,
    ):
        await next_of(laptop, ReadMarkers)
        await next_of(desktop, ReadMarkers)
        yield laptop, desktop


async def test_a_marker_set_while_the_link_is_down_goes_after_the_reconnect(
    server: Running, tmp_path: Path
) -> None:
    async with two_devices(server, tmp_path) as (alice, desktop):
        ack = await alice_posts(server)
        assert alice._link is not None
        await alice._link.stream.aclose()  # lost: the client logs in again
        assert await alice.mark_read(ack, room="general")  # kept until then
        # After the login, the listing does not have it: it is sent again.
        assert (await next_of(alice, ReadMarkers)).markers == []
        assert await next_of(desktop, ReadUpTo) == ReadUpTo(up_to=ack, room="general")
        assert alice.read_marker(room="general") == ack


async def test_a_marker_set_as_a_reconnect_logs_in_goes_in_that_session(
    server: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Between the login's answer and the client saying it is online, the session is there:
    # a marker set then must go, not wait for the next reconnect (which may never come).
    async with two_devices(server, tmp_path) as (laptop, desktop):
        ack = await alice_posts(server)
        marked: list[bool] = []
        send_all = laptop._send_all

        async def then_read(records: Any, **options: Any) -> None:
            records = list(records)
            await send_all(records, **options)
            if any(isinstance(r, ListReadMarkers) for r in records) and not marked:
                assert not laptop.online  # still logging in
                marked.append(await laptop.mark_read(ack, room="general"))

        monkeypatch.setattr(laptop, "_send_all", then_read)
        assert laptop._link is not None
        await laptop._link.stream.aclose()  # lost: the client logs in again
        assert await next_of(desktop, ReadUpTo) == ReadUpTo(up_to=ack, room="general")
        assert marked == [True]


async def test_a_reconnect_sends_again_only_the_markers_the_server_lacks(tmp_path: Path) -> None:
    # Markers the server has already are not sent again: with many conversations, sending
    # them all used up the user's allowance of markers, and those that followed were dropped.
    no_refill = HubConfig(read_marker_burst=6, read_markers_per_second=1e-9)
    with running_server("trio", tmp_path / "server", hub=no_refill) as server:
        async with two_devices(server, tmp_path) as (laptop, desktop):
            await alice_writes_to(server, "carol", "dave", "alice", "bob")
            ack = await alice_posts(server)
            for peer in ("carol", "dave", "alice"):  # 3 of the 6
                assert await laptop.mark_read(ack, peer=peer)
                assert (await next_of(desktop, ReadUpTo)).peer == peer
            assert laptop._link is not None
            await laptop._link.stream.aclose()  # lost: the client logs in again
            listed = await next_of(laptop, ReadMarkers)
            assert len(listed.markers) == 3
            assert await laptop.mark_read(ack, peer="bob")
            assert await next_of(desktop, ReadUpTo) == ReadUpTo(up_to=ack, peer="bob")


UNCARRIABLE_MARKERS = [
    (MAX_UINT + 1, {"room": "general"}),
    (-1, {"room": "general"}),
    (1, {"room": "r" * (MAX_ROOM + 1)}),
    (1, {"peer": "b" * (MAX_USERNAME + 1)}),
    (1, {"room": "general", "peer": "bob"}),
]
"""Markers no server could take (mark_read's bad arguments), with where they would be."""


async def test_a_marker_no_server_could_take_is_refused_and_kept_nowhere(
    server: Running, tmp_path: Path
) -> None:
    # Kept to be resent, such a marker failed every later login's resending: the client
    # could never log in again.
    async with two_devices(server, tmp_path) as (alice, desktop):
        assert alice._link is not None
        await alice._link.stream.aclose()  # lost: what is set now is kept for the next login
        for up_to, where in UNCARRIABLE_MARKERS:
            with pytest.raises(ClientError, match=r"room or a peer|cannot mark this read"):
                await alice.mark_read(up_to, **where)
        ack = await alice_posts(server)
        assert await alice.mark_read(ack, room="general")
        await next_of(alice, ReadMarkers)  # logged in again
        assert await next_of(desktop, ReadUpTo) == ReadUpTo(up_to=ack, room="general")
        assert alice.read_marker(peer="b" * (MAX_USERNAME + 1)) == 0


async def test_a_marker_no_server_could_take_is_refused_by_a_client_of_an_older_server(
    tmp_path: Path,
) -> None:
    received: list[Record] = []
    async with scripted(tmp_path, logs_in_then(records_what_comes(received))) as alice:
        for up_to, where in UNCARRIABLE_MARKERS:
            with pytest.raises(ClientError, match=r"room or a peer|cannot mark this read"):
                await alice.mark_read(up_to, **where)


async def test_a_room_left_forgets_its_marker_as_the_server_does(
    server: Running, tmp_path: Path
) -> None:
    # The server deletes the marker of a room left: after joining again nothing is read
    # there, and a marker at or below the old one must reach the user's other devices.
    async with two_devices(server, tmp_path) as (laptop, desktop):
        await laptop.join("ops")
        with server.login("bob") as bob:
            await trio.to_thread.run_sync(bob.join, "ops")
            ack = await trio.to_thread.run_sync(partial(bob.send_message, "hi", room="ops"))
        assert await laptop.mark_read(ack.id, room="ops")
        assert await next_of(desktop, ReadUpTo) == ReadUpTo(up_to=ack.id, room="ops")
        await laptop.leave("ops")
        assert laptop.read_marker(room="ops") == 0
        await next_of(desktop, RoomLeft)  # left on another device: forgotten there too
        assert desktop.read_marker(room="ops") == 0
        await laptop.join("ops")
        assert await laptop.mark_read(ack.id, room="ops")  # not known any more: sent
        assert await next_of(desktop, ReadUpTo) == ReadUpTo(up_to=ack.id, room="ops")


async def alice_writes_to(server: Running, *peers: str) -> None:
    """alice sends a direct message to each of ``peers``: a conversation without any takes
    no read marker."""
    with server.login("alice") as alice:
        for peer in peers:
            await trio.to_thread.run_sync(partial(alice.send_message, "hi", to=peer))


async def alice_posts(server: Running) -> int:
    """bob posts to general; its id."""
    with server.login("bob") as bob:
        ack = await trio.to_thread.run_sync(partial(bob.send_message, "hi", room="general"))
    return int(ack.id)


async def test_a_marker_that_names_no_conversation_is_ignored(tmp_path: Path) -> None:
    # From a server with a bug: the client stays up, and its markers as they were.
    markers = [ReadMarker(up_to=9), ReadMarker(up_to=9, room="general", peer="bob")]
    behaviour = logs_in_then(
        answers(ListReadMarkers, [ReadMarkers(markers=markers)]), features=(READ_MARKERS,)
    )
    async with scripted(tmp_path, behaviour) as alice:
        assert (await next_of(alice, ReadMarkers)).markers == markers
        assert alice.read_marker(room="general") == alice.read_marker(peer="bob") == 0
        assert alice.online


async def test_a_room_left_elsewhere_while_offline_loses_its_marker_at_the_next_listing(
    tmp_path: Path,
) -> None:
    # Left on another device while this one was offline, the room's marker is gone on the
    # server, and this client never saw the RoomLeft: the next login's listing, which holds
    # every room of the user with a marker, is what says so.
    ops, bob = ReadMarker(up_to=5, room="ops"), ReadMarker(up_to=4, peer="bob")
    first = answers(ListReadMarkers, [ReadMarkers(markers=[ops, bob])])
    # Then ops was left; the direct conversations of a listing are only the most recent ones.
    second = answers(ListReadMarkers, [ReadMarkers(markers=[], more=True), ReadMarkers(markers=[])])
    behaviours = [logs_in_then(b, features=(READ_MARKERS,)) for b in (first, second)]
    async with scripted(tmp_path, *behaviours, backoff=(0.05, 0.2)) as alice:
        await next_of(alice, ReadMarkers)
        assert alice.read_marker(room="ops") == 5
        assert alice._link is not None
        await alice._link.stream.aclose()  # lost: the client logs in again
        assert await alice.mark_read(9, room="general")  # set here, not on the server yet
        with trio.fail_after(10):
            while (await next_of(alice, ReadMarkers)).more:
                pass
        assert alice.read_marker(room="ops") == 0
        assert alice.read_marker(room="general") == 9  # sent again, not forgotten
        assert alice.read_marker(peer="bob") == 4


def records_what_comes(received: list[Record]) -> Behaviour:
    """Read what the client sends, into ``received`` (until it hangs up)."""

    def behaviour(sock: socket.socket, conn: Connection) -> None:
        while not isinstance(event := conn.next_event(), ConnectionClosed):
            if event is NEED_DATA:
                conn.receive_data(sock.recv(65536))
            elif isinstance(event, Record):
                received.append(event)

    return behaviour


async def test_an_older_server_is_told_no_read_markers(tmp_path: Path) -> None:
    # An older server lists no read-markers: both records would break the protocol there.
    received: list[Record] = []
    async with scripted(tmp_path, logs_in_then(records_what_comes(received))) as alice:
        assert not await alice.mark_read(7, room="general")
        await alice.typing(room="general")
        with trio.fail_after(10):
            while not any(isinstance(r, Typing) for r in received):
                await trio.sleep(0.01)
    assert not [r for r in received if isinstance(r, ReadUpTo | ListReadMarkers)]


async def test_a_client_without_events_does_not_ask_for_the_markers(tmp_path: Path) -> None:
    # A bot (events=False) never looks at them: the listing and every marker the user's other
    # devices raise would be sent to it for nothing. Its own markers still go.
    received: list[Record] = []
    behaviour = logs_in_then(records_what_comes(received), features=(READ_MARKERS,))
    async with scripted(tmp_path, behaviour, events=False) as bot:
        assert await bot.mark_read(7, room="general")
        with trio.fail_after(10):
            while not any(isinstance(r, ReadUpTo) for r in received):
                await trio.sleep(0.01)
    assert [r for r in received if isinstance(r, ReadUpTo | ListReadMarkers)] == [
        ReadUpTo(up_to=7, room="general")
    ]


# --- reconnecting -------------------------------------------------------------------------


def restartable(tmp_path: Path) -> Callable[[], Any]:
    """A trio server on a fixed port, key and data folder: each call gives it afresh (a
    restart), to be entered and exited by hand."""
    port, key, data_dir = free_port(), X25519PrivateKey.generate(), tmp_path / "server"
    return lambda: running_server("trio", data_dir, port=port, key=key)


async def test_reconnect_delivers_everything_exactly_once(tmp_path: Path) -> None:
    start, fast = restartable(tmp_path), {"backoff": (0.05, 0.2)}
    first = start()
    server = first.__enter__()
    async with (
        logged_in(server, tmp_path, "alice", **fast) as alice,
        logged_in(server, tmp_path, "bob", **fast) as bob,
    ):
        await alice.send_message("before", room="general")
        assert (await next_of(bob, Message)).text == "before"
        await trio.to_thread.run_sync(first.__exit__, None, None, None)
        assert isinstance(await next_of(alice, LinkState), LinkState)
        await alice.send_message("while down", room="general")  # queued
        second = start()
        await trio.to_thread.run_sync(second.__enter__)
        try:
            with trio.fail_after(20):
                await alice.wait_online()
                await bob.wait_online()
            texts = []
            with trio.move_on_after(3):
                while True:
                    texts.append((await next_of(bob, Message)).text)
            assert texts == ["while down"]
            page, _ = await bob.history(room="general")
            assert [m.text for m in page].count("while down") == 1
            assert alice.unacknowledged == 0
        finally:
            await trio.to_thread.run_sync(second.__exit__, None, None, None)


async def test_a_quiet_login_stays_quiet_when_the_client_logs_in_again(tmp_path: Path) -> None:
    start, fast = restartable(tmp_path), {"backoff": (0.05, 0.2)}
    first = start()
    server = first.__enter__()
    async with (
        logged_in(server, tmp_path, "bob", **fast) as bob,
        logged_in(server, tmp_path, "alice", announce=False, **fast) as alice,
    ):
        assert server.hub.is_logged_in("alice")
        assert not server.hub.is_online("alice")
        await alice.send_message("quietly", room="general")
        assert (await next_of(bob, Message)).text == "quietly"
        await trio.to_thread.run_sync(first.__exit__, None, None, None)
        second = start()
        again = await trio.to_thread.run_sync(second.__enter__)
        try:
            with trio.fail_after(20):
                await alice.wait_online()
                await bob.wait_online()
            assert again.hub.is_logged_in("alice")
            assert not again.hub.is_online("alice")  # the reconnect's login was quiet too
            assert again.hub.is_online("bob")
            await alice.send_message("still quiet", room="general")
            assert (await next_of(bob, Message)).text == "still quiet"
            presence = [e for e in queued_events(bob) if isinstance(e, Presence)]
            assert all(e.user != "alice" for e in presence)
        finally:
            await trio.to_thread.run_sync(second.__exit__, None, None, None)


async def test_messages_written_offline_beyond_the_burst_all_arrive_once(tmp_path: Path) -> None:
    texts = [f"line {i}" for i in range(15)]  # three times the server's burst
    async with wrote_while_down(tmp_path, texts, SLOW) as alice:
        await all_acknowledged(alice)
        page, _ = await alice.history(room="general")
    assert [m.text for m in page] == texts
    assert not any(isinstance(e, ServerError) for e in queued_events(alice))  # none refused


async def test_leaving_the_block_waits_for_the_messages_sent_to_be_stored(tmp_path: Path) -> None:
    texts = [f"notice {i}" for i in range(12)]  # beyond the burst: some wait for the pacer
    with running_server("trio", tmp_path / "s", hub=SLOW) as server:
        async with logged_in(server, tmp_path, "alice", announce=False) as alice:
            for text in texts:
                await alice.send_message(text, room="general")  # fire and forget
            assert alice.unacknowledged
        assert alice.unacknowledged == 0
        with server.login("bob") as bob:
            page, _ = bob.history(room="general")
    assert [m.text for m in page] == texts


async def test_leaving_the_block_waits_for_no_answer_an_unread_event_stream_holds_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With events() full (nobody reads it), the reader waits, and no acknowledgement can come.
    monkeypatch.setattr(trio_delivery, "EVENT_BUFFER", 20)
    monkeypatch.setattr(trio_client, "EVENT_BUFFER", 20)
    with running_server("trio", tmp_path / "s", hub=UNLIMITED) as server:
        with trio.fail_after(20):  # not the 60 s it may wait otherwise
            async with logged_in(server, tmp_path, "alice", sent_wait=60) as alice:
                for n in range(60):  # each comes back: a Message and its MessageAck
                    await alice.send_message(f"m{n}", room="general")
                while alice._delivery.events.queued < 20:
                    await trio.sleep(0.01)
                assert alice.unacknowledged


async def test_messages_the_server_could_not_store_before_the_close_are_said_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    async with stranded(
        tmp_path, tmp_path / "s", port, backoff=(0.05, 0.2), sent_wait=0.5
    ) as alice:
        await alice.send_message("into the void", room="general")
        assert await alice.wait_sent(0.2) == 1  # still reconnecting: bounded
    assert alice.unacknowledged == 1
    assert f"1 messages sent were not confirmed by 127.0.0.1:{port} before the client closed" in (
        caplog.text
    )


async def test_messages_written_offline_go_before_those_sent_after_the_reconnect(
    tmp_path: Path,
) -> None:
    texts = [f"old {i:02d} " + "x" * 3900 for i in range(40)]  # more than the writer's 64 KiB
    async with wrote_while_down(tmp_path, texts, UNLIMITED) as alice:
        await alice.send_message("new", room="general")
        await all_acknowledged(alice)
        page, _ = await alice.history(room="general", limit=50)
    assert [m.text for m in page] == [*texts, "new"]


async def test_messages_paced_when_the_link_drops_all_arrive_once_in_order(
    tmp_path: Path,
) -> None:
    texts = [f"line {i}" for i in range(15)]
    port, key, data_dir = free_port(), X25519PrivateKey.generate(), tmp_path / "server"
    async with AsyncExitStack() as stack:
        with running_server("trio", data_dir, port=port, key=key, hub=SLOW) as server:
            alice = await stack.enter_async_context(
                logged_in(server, tmp_path, "alice", backoff=(0.05, 0.2))
            )
            for text in texts:
                await alice.send_message(text, room="general")
            with trio.fail_after(10):
                while not alice._pacing:  # the server found some too fast
                    await trio.sleep(0.01)
        assert isinstance(await next_of(alice, LinkState), LinkState)
        with running_server("trio", data_dir, port=port, key=key, hub=SLOW):
            with trio.fail_after(20):
                await alice.wait_online()
            await all_acknowledged(alice)
            page, _ = await alice.history(room="general")
    assert [m.text for m in page] == texts


async def test_messages_sent_too_fast_go_again_after_a_pause_in_order(tmp_path: Path) -> None:
    texts = [f"line {i}" for i in range(15)]
    with running_server("trio", tmp_path / "s", hub=SLOW) as server:
        async with logged_in(server, tmp_path, "alice") as alice:
            for text in texts:
                await alice.send_message(text, room="general")
            await all_acknowledged(alice)
            await alice.send_message(" ", room="general")  # refused for good
            with trio.fail_after(10):
                while alice.unacknowledged:
                    await trio.sleep(0.01)
            page, _ = await alice.history(room="general")
            refusals = [e for e in queued_events(alice) if isinstance(e, ServerError)]
    assert [m.text for m in page] == texts
    assert [e.code for e in refusals] == ["empty"]


async def test_giving_up_on_a_changed_key_fails_waiting_calls(tmp_path: Path) -> None:
    port, data_dir = free_port(), tmp_path / "server"
    async with stranded(tmp_path, data_dir, port, backoff=(0.05, 0.2)) as alice:
        with running_server("trio", data_dir, port=port, key=X25519PrivateKey.generate()):
            with trio.fail_after(20), pytest.raises(Disconnected, match="key"):
                await alice.download("f0")  # waits for the reconnect, which fails for good
            with pytest.raises(Disconnected, match="key"):
                await alice.history(room="general")
            with pytest.raises(Disconnected):
                await alice.wait_online()
            with pytest.raises(Disconnected):  # not queued for a reconnect that never comes
                await alice.send_message("into the void", room="general")
            assert isinstance(alice.gave_up_on, ServerKeyChanged)  # why, for the caller


NEW_PASSWORD = "a brand new password"


def change_password(data_dir: Path, who: str) -> None:
    """Change ``who``'s password as ``sealchat user passwd`` does (another connection)."""
    with SqliteStore(data_dir, beside_server=True) as store:
        assert store.set_password(user_key(who), hash_password(NEW_PASSWORD, params=CHEAP))


@pytest.mark.parametrize("change", ["passwd", "remove"])
async def test_an_account_changed_elsewhere_ends_the_session_for_good(
    tmp_path: Path, change: str
) -> None:
    # The server logs the session out saying why; the client gives up with that reason and
    # does not try the old password (which would fail, and count against its address: with
    # one free failure, the user's own new login from there would be refused for a while).
    data_dir = tmp_path / "server"
    hub = HubConfig(free_login_failures=1)
    with running_server("trio", data_dir, hub=hub) as server:
        async with logged_in(server, tmp_path, "alice", backoff=(0.05, 0.05)) as alice:
            if change == "passwd":
                change_password(data_dir, "alice")
            else:
                with SqliteStore(data_dir, beside_server=True) as store:
                    assert store.remove_user(user_key("alice"))
            with trio.fail_after(20):
                while alice.gave_up_on is None:
                    await next_of(alice, LinkState)
            said = PASSWORD_CHANGED if change == "passwd" else ACCOUNT_REMOVED
            assert isinstance(alice.gave_up_on, LoginFailed)
            assert str(alice.gave_up_on) == said
            with pytest.raises(Disconnected, match=said):
                await alice.wait_online()
        if change == "passwd":
            options = trio_options(tmp_path, "alice-again")
            async with connect("127.0.0.1", server.port, **options) as again:
                assert await again.login("alice", NEW_PASSWORD) == "alice"  # no block


def says_goodbye(reason: str) -> Behaviour:
    """Say goodbye (a Bye with ``reason``), then read what comes until the client hangs up
    (so that no reset can eat the goodbye)."""

    def behaviour(sock: socket.socket, conn: Connection) -> None:
        conn.send(Bye(reason=reason))
        sock.sendall(conn.data_to_send())
        while sock.recv(65536):
            pass

    return behaviour


def notes_login(passwords: list[str]) -> Behaviour:
    """Note the password the client logs in with, and accept it."""

    def behaviour(sock: socket.socket, conn: Connection) -> None:
        while not isinstance(event := conn.next_event(), Login):
            if event is NEED_DATA:
                conn.receive_data(sock.recv(65536))
        passwords.append(event.password)
        conn.send(Authenticated(username=event.username))
        sock.sendall(conn.data_to_send())

    return behaviour


@pytest.mark.parametrize(
    ("first", "queued"), [("reader", True), ("reader", False), ("reconnect", True)]
)
async def test_a_goodbye_for_good_right_after_a_reconnect_login_is_final(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, first: str, queued: bool
) -> None:
    # The server accepts the reconnect's login, then at once says the password was changed,
    # while the reconnect resends the outbox (a message never acknowledged, if ``queued``).
    # Who sees first that the link is gone, its reader or the reconnect, is forced here. The
    # reconnect had gone round and logged in with the old password, its reader's recovery
    # having given up meanwhile (or had said it was connected after that give-up); or it had
    # abandoned the link before the reader's end of it counted, farewell and all.
    drop, passwords = threading.Event(), list[str]()
    behaviours = (
        logs_in_then(until_set(drop)),
        logs_in_then(says_goodbye(PASSWORD_CHANGED)),
        notes_login(passwords),
    )
    async with scripted(tmp_path, *behaviours, backoff=(0.05, 0.05)) as alice:
        reconnector = alice._reconnector
        resend, link_ended, recover = alice._outbox.resend, alice._link_ended, reconnector.recover
        recovered = trio.Event()  # the recover() of the reader of the reconnect's link is over
        held: list[Link] = []

        async def recover_noted(reason: str, farewell: str | None = None) -> None:
            await recover(reason, farewell)
            recovered.set()

        async def resend_in_order() -> None:
            link = alice._link
            if reconnector._recovering and link is not None and not held:  # the reconnect's
                held.append(link)
                if first == "reader":
                    await recovered.wait()  # the reader has ended the link
                else:
                    await link.closed.wait()  # the goodbye is read (the link's end waits)
            await resend()

        def link_ended_in_order(link: Link, reason: str) -> None:
            if first == "reader" or not reconnector._recovering:
                link_ended(link, reason)
                return

            async def once_abandoned() -> None:  # by the reconnect
                while alice._link is link:
                    await trio.sleep(0.01)
                link_ended(link, reason)

            alice._nursery.start_soon(once_abandoned)

        monkeypatch.setattr(reconnector, "recover", recover_noted)
        monkeypatch.setattr(alice._outbox, "resend", resend_in_order)
        monkeypatch.setattr(alice, "_link_ended", link_ended_in_order)
        if queued:
            await alice.send_message("never acknowledged", room="general")
        drop.set()
        with trio.fail_after(10):
            while reconnector._recovering or not (alice.gave_up_on or passwords):
                await trio.sleep(0.01)
        states = [e for e in queued_events(alice) if isinstance(e, LinkState)]
        assert passwords == []  # the old password was not tried again
        assert isinstance(alice.gave_up_on, LoginFailed)
        assert str(alice.gave_up_on) == PASSWORD_CHANGED
        gave_up = [i for i, s in enumerate(states) if not s.connected and not s.retry_in]
        assert [states[i].reason for i in gave_up] == [PASSWORD_CHANGED]  # once
        assert not any(s.connected for s in states[gave_up[0] :])
        assert not alice.online


async def test_a_wrong_password_at_a_reconnect_is_final_even_when_it_brings_a_block(
    tmp_path: Path,
) -> None:
    # The password was changed while the server was down: no goodbye said why. The refusal
    # of the old password carries the block it brought about (one free failure): the client
    # had taken it for "busy" and kept trying, each failure lengthening the block on the
    # user's own address.
    port, key, data_dir = free_port(), X25519PrivateKey.generate(), tmp_path / "server"
    async with stranded(tmp_path, data_dir, port, (0.05, 0.05), key) as alice:
        change_password(data_dir, "alice")
        hub = HubConfig(free_login_failures=1)
        with running_server("trio", data_dir, port=port, key=key, hub=hub):
            with trio.fail_after(20):
                while alice.gave_up_on is None:
                    await next_of(alice, LinkState)
            assert isinstance(alice.gave_up_on, LoginFailed)
            assert str(alice.gave_up_on) == GENERIC_LOGIN_FAILURE


THROTTLED = "too many failed attempts; try again later"


def refuses_for(retry_after: float) -> Behaviour:
    """Refuse the login as a server that throttles logins does (try again in ``retry_after``
    seconds), then read what comes until the client hangs up."""

    def behaviour(sock: socket.socket, conn: Connection) -> None:
        while not isinstance(event := conn.next_event(), Login):
            if event is NEED_DATA:
                conn.receive_data(sock.recv(65536))
        conn.send(LoginRejected(reason=THROTTLED, retry_after=retry_after))
        sock.sendall(conn.data_to_send())
        while sock.recv(65536):
            pass

    return behaviour


async def test_a_throttled_reconnect_waits_at_least_retry_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The jitter goes on top of the back-off, never below a throttled login's retry_after:
    # coming back sooner would only be refused again (and it was, at half of it).
    behaviours = (logs_in_then(hangs_up), refuses_for(0.5), logs_in_then(stays_silent))
    async with scripted(tmp_path, *behaviours, backoff=(0.05, 0.05)) as alice:
        lowest = lambda low, _high: low  # noqa: E731  (the jitter at its lowest)
        monkeypatch.setattr(alice._reconnector._rng, "uniform", lowest)
        states: list[LinkState] = []
        with trio.fail_after(10):
            while not (states and states[-1].connected):
                states.append(await next_of(alice, LinkState))
    assert [s.retry_in for s in states if s.reason == THROTTLED] == [0.5]


# --- what the client refuses, and what it leaves out -------------------------------------


async def test_an_over_long_message_is_refused_and_never_queued(
    server: Running, tmp_path: Path
) -> None:
    async with logged_in(server, tmp_path, "alice") as alice:
        alice.max_message_chars = 0  # not said, as by an older server: the protocol's limit
        with pytest.raises(MessageTooLong, match="8001 characters; at most 8000"):
            await alice.send_message("x" * 8001, room="general")
        with pytest.raises(ClientError, match="cannot send this message"):
            await alice.send_message("hi", room="r" * 65)  # longer than a room name can be
        assert alice.unacknowledged == 0
        await alice.send_message("x" * 8000, room="general")  # the limit itself goes
        assert (await next_of(alice, ServerError)).code == "too_long"  # over the server's
        await all_acknowledged(alice)


async def test_a_message_over_the_servers_limit_is_refused_here_saying_so(tmp_path: Path) -> None:
    with running_server("trio", tmp_path / "s", hub=HubConfig(max_message_chars=100)) as server:
        async with logged_in(server, tmp_path, "alice") as alice:
            assert alice.max_message_chars == 100
            with pytest.raises(MessageTooLong) as refused:
                await alice.send_message("\u00e9" * 101, room="general")
            assert str(refused.value) == (
                "the message has 101 characters; at most 100 fit in one message"
            )
            assert alice.unacknowledged == 0
            await alice.send_message("\u00e9" * 100, room="general")  # as the server counts
            await all_acknowledged(alice)
            page, _ = await alice.history(room="general")
    assert [m.text for m in page] == ["\u00e9" * 100]
    assert not [e for e in queued_events(alice) if isinstance(e, ServerError)]


async def test_the_message_limit_is_the_one_said_at_the_last_login_and_nothing_goes_over_it(
    tmp_path: Path,
) -> None:
    # Two servers in turn: the one the client logs in to again after the link is lost takes
    # shorter messages. Each one hears only the typing notices sent after each refusal.
    received: list[Record] = []

    def says(limit: int) -> Behaviour:
        return logs_in_then(records_what_comes(received), max_message_chars=limit)

    def typed() -> int:
        return sum(isinstance(r, Typing) for r in received)

    async def refused_then_typing(alice: ChatClient, text: str) -> MessageTooLong:
        with pytest.raises(MessageTooLong) as refused:
            await alice.send_message(text, room="general")
        before = typed()
        await alice.typing(room="general")  # after anything the call could have sent
        with trio.fail_after(10):
            while typed() == before:
                await trio.sleep(0.01)
        return refused.value

    async with scripted(tmp_path, says(100), says(50), backoff=(0.05, 0.2)) as alice:
        assert alice.max_message_chars == 100
        assert (await refused_then_typing(alice, "x" * 101)).limit == 100
        assert alice._link is not None
        await alice._link.stream.aclose()  # lost: the client logs in again, to the second
        with trio.fail_after(10):
            while not (await next_of(alice, LinkState)).connected:
                pass
        assert alice.max_message_chars == 50
        refused = await refused_then_typing(alice, "x" * 51)
        assert (refused.length, refused.limit) == (51, 50)
        assert alice.unacknowledged == 0
    assert [type(r) for r in received if isinstance(r, Message | Typing)] == [Typing, Typing]


@asynccontextmanager
async def one_transfer_at_a_time(
    tmp_path: Path, size: int
) -> AsyncIterator[tuple[ChatClient, FileInfo, bytes]]:
    """alice on a server that allows one transfer at a time, with a file of ``size`` random
    bytes she shared in general."""
    data = os.urandom(size)
    source = tmp_path / "big.bin"
    source.write_bytes(data)
    with running_server("trio", tmp_path / "s", hub=HubConfig(max_transfers=1)) as server:
        async with logged_in(server, tmp_path, "alice") as alice:
            yield alice, await alice.send_file(source, room="general"), data


async def test_a_cancelled_download_stops_the_stream_and_frees_its_slot(tmp_path: Path) -> None:
    async with one_transfer_at_a_time(tmp_path, 8 << 20) as (alice, info, data):
        with trio.move_on_after(30) as waited:
            async with trio.open_nursery() as nursery:

                def stop_early(done: int, total: int) -> None:
                    if done > 0:
                        nursery.cancel_scope.cancel()

                nursery.start_soon(partial(alice.download, info.file_id, progress=stop_early))
        assert not waited.cancelled_caught
        # The one transfer slot is free again, and what was already on the wire for the
        # cancelled download is not passed on as events.
        path = await alice.download(info.file_id)
        assert path.read_bytes() == data
        leaked: list[object] = []
        with trio.move_on_after(0.5):
            async for event in alice.events():
                leaked.append(event)
        assert not any(isinstance(e, FileChunk | FileComplete) for e in leaked)


async def test_closing_acknowledges_what_arrived(server: Running, tmp_path: Path) -> None:
    async with logged_in(server, tmp_path, "alice") as alice:
        async with logged_in(server, tmp_path, "bob") as bob:
            await alice.send_message("seen once", room="general")
            assert (await next_of(bob, Message)).text == "seen once"
        # bob closed within the periodic acknowledgement's interval; logging in again must not
        # replay what he already had.
        async with logged_in(server, tmp_path, "bob") as bob:
            assert "seen once" not in await replayed(bob)


async def test_a_second_login_is_refused_and_leaves_acknowledging_as_it_was(
    server: Running, tmp_path: Path
) -> None:
    async with logged_in(server, tmp_path, "alice") as alice:
        async with logged_in(server, tmp_path, "bob") as bob:
            assert await replayed(bob) == []
            with pytest.raises(ClientError, match="already logged in as bob"):
                await bob.login("bob", PASSWORD)
            await alice.send_message("seen once", room="general")
            assert (await next_of(bob, Message)).text == "seen once"
        async with logged_in(server, tmp_path, "bob") as bob:
            assert "seen once" not in await replayed(bob)


async def test_what_arrived_is_acknowledged_while_the_session_runs(
    server: Running, tmp_path: Path
) -> None:
    async with (
        logged_in(server, tmp_path, "alice") as alice,
        logged_in(server, tmp_path, "bob") as bob,
    ):
        assert await replayed(bob) == []
        await alice.send_message("lunch at noon?", room="general")
        shown = await next_of(bob, Message)
        with trio.fail_after(10):  # the periodic acknowledgement, not the goodbye's
            while server.hub.store.get_cursor("bob") < shown.id:
                await trio.sleep(0.05)


@pytest.mark.parametrize("replies", [True, False])
async def test_an_acknowledgement_lost_with_the_link_shows_nothing_twice(
    replies: bool, server: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A Delivered counts as sent once queued. If the link dies before it is written, the
    # server keeps its older cursor and replays those messages at the next login: the client
    # drops them (it showed them already), and acknowledges them again.
    options = {"acknowledge": True, "replies": replies, "backoff": (0.05, 0.2)}
    async with logged_in(server, tmp_path, "alice", **options) as alice:
        assert await replayed(alice) == []  # alice is a member of general from now on
        link = alice._link
        assert link is not None
        writing, release = trio.Event(), trio.Event()

        async def stalls_then_resets(data: bytes) -> None:
            writing.set()
            await release.wait()
            raise trio.BrokenResourceError("connection reset by peer")

        monkeypatch.setattr(link.stream, "send_all", stalls_then_resets)  # nothing goes out
        with server.login("bob") as bob:
            for text in ("one", "two", "three"):
                bob.send_message(text, room="general")
        shown = [(await next_of(alice, Message)).text for _ in range(3)]
        newest = server.hub.store.last_message_id()
        with trio.fail_after(10):  # the periodic acknowledgement of all three is queued
            while not writing.is_set() or alice._delivery.due() is not None:
                await trio.sleep(0.01)
        assert server.hub.store.get_cursor("alice") < newest  # the next login replays them
        release.set()  # the write fails: the server never gets it
        assert not (await next_of(alice, LinkState)).connected
        assert await replayed(alice) == []  # after the reconnect: nothing shown twice
    assert shown == ["one", "two", "three"]
    async with logged_in(server, tmp_path, "alice", **options) as alice:
        assert await replayed(alice) == []  # nor at the next login: they were acknowledged


async def test_a_session_that_does_not_acknowledge_leaves_messages_unread(
    server: Running, tmp_path: Path
) -> None:
    # As `sealchat send` logs in: what arrives meanwhile is not shown to anyone, so the
    # user's next session must still get it.
    async with logged_in(server, tmp_path, "bob") as bob:
        assert await replayed(bob) == []  # bob is a member of general from now on
    async with logged_in(server, tmp_path, "alice") as alice:
        await alice.send_message("sent while bob was away", room="general")
        await all_acknowledged(alice)
        async with logged_in(server, tmp_path, "bob", acknowledge=False) as bot:
            assert await replayed(bot) == ["sent while bob was away"]
            await alice.send_message("sent during bob's script", room="general")
            assert (await next_of(bot, Message)).text == "sent during bob's script"
            await trio.sleep(2.5)  # past the interval of the periodic acknowledgement
    async with logged_in(server, tmp_path, "bob") as bob:
        assert await replayed(bob) == ["sent while bob was away", "sent during bob's script"]


async def test_without_acknowledging_only_the_first_page_is_replayed(tmp_path: Path) -> None:
    # As docs/client.md says: the next page is sent only once the last is acknowledged.
    with running_server("trio", tmp_path / "s", hub=HubConfig(replay_page=3)) as server:
        async with logged_in(server, tmp_path, "alice") as alice:
            assert await replayed(alice) == []  # alice is a member of general from now on
        with server.login("bob") as bob:
            for i in range(5):
                bob.send_message(f"m{i}", room="general")
        async with logged_in(server, tmp_path, "alice", acknowledge=False) as alice:
            assert await replayed(alice) == ["m0", "m1", "m2"]
            await alice.send_message("after the replay", room="general")  # a live one comes
            assert (await next_of(alice, Message)).text == "after the replay"
        async with logged_in(server, tmp_path, "alice") as alice:
            assert await replayed(alice) == ["m0", "m1", "m2"]  # and the rest after it
            assert await replayed(alice) == ["m3", "m4", "after the replay"]


async def test_closing_the_events_stream_stops_acknowledging(
    server: Running, tmp_path: Path
) -> None:
    async with logged_in(server, tmp_path, "alice") as alice:
        assert await replayed(alice) == []  # alice is a member of general from now on
        await alice.events().aclose()  # this session shows nothing from now on
        with server.login("bob") as bob:
            bob.send_message("did you see this?", room="general")
        await alice.send_message("after it", room="general")
        await all_acknowledged(alice)  # so bob's message has reached alice's client too
    async with logged_in(server, tmp_path, "alice") as alice:
        assert "did you see this?" in await replayed(alice)  # still unread


async def replayed(client: ChatClient) -> list[str]:
    """The texts of the messages replayed after ``client`` logged in."""
    texts: list[str] = []
    with trio.fail_after(10):
        async for event in client.events():
            if isinstance(event, Message):
                texts.append(event.text)
            if isinstance(event, HistoryEnd) and not event.room and not event.peer:
                return texts
    raise AssertionError("the event stream ended")


async def test_a_device_offline_while_another_was_online_gets_what_it_missed(
    server: Running, tmp_path: Path
) -> None:
    # alice's phone goes offline while her laptop stays on: the laptop acknowledges bob's
    # messages meanwhile. The phone (the same client key) got none of them when it came back.
    phone = X25519PrivateKey.generate()
    async with logged_in(server, tmp_path, "alice", static_key=phone) as alice:
        assert await replayed(alice) == []
    async with logged_in(server, tmp_path, "alice") as laptop:
        assert await replayed(laptop) == []
        with server.login("bob") as bob:
            for text in ("one", "two", "three"):
                bob.send_message(text, room="general")
        shown = [(await next_of(laptop, Message)).text for _ in range(3)]
        newest = server.hub.store.last_message_id()
        with trio.fail_after(10):  # the laptop's periodic acknowledgement
            while server.hub.store.get_cursor("alice") < newest:
                await trio.sleep(0.05)
    async with logged_in(server, tmp_path, "alice", static_key=phone) as alice:
        assert await replayed(alice) == shown == ["one", "two", "three"]


async def test_a_marker_set_offline_in_a_room_left_elsewhere_meanwhile_is_forgotten(
    tmp_path: Path,
) -> None:
    # Read here while offline, in a room left meanwhile on another device: the marker went
    # again after the reconnect, the server refused it (not a member), and this client kept
    # it above the server's, also once the user was in the room again.
    port, key, data_dir = free_port(), X25519PrivateKey.generate(), tmp_path / "server"
    async with AsyncExitStack() as stack:
        with running_server("trio", data_dir, port=port, key=key) as server:
            options = {"backoff": (0.05, 0.2)}
            alice = await stack.enter_async_context(logged_in(server, tmp_path, "alice", **options))
            await alice.join("ops")
            with server.login("bob") as bob:
                bob.join("ops")
                sent = bob.send_message("in ops", room="ops")
            assert (await next_of(alice, Message)).id == sent.id
        assert not (await next_of(alice, LinkState)).connected
        with SqliteStore(data_dir) as store:  # her laptop's leave
            assert store.remove_member("ops", user_key("alice"))
        assert await alice.mark_read(sent.id, room="ops")  # read here, offline
        with running_server("trio", data_dir, port=port, key=key):
            with trio.fail_after(20):
                await alice.wait_online()
                while alice.read_marker(room="ops"):  # the refusal of the one sent again
                    await trio.sleep(0.05)


async def test_a_send_only_client_can_turn_events_off(tmp_path: Path) -> None:
    count = EVENT_BUFFER // 2 + 500  # more than the events buffer holds (2 events each)
    with running_server("trio", tmp_path / "s", hub=UNLIMITED) as server:
        await _send_only(server, tmp_path, count)


async def _send_only(server: Running, tmp_path: Path, count: int) -> None:
    async with (
        logged_in(server, tmp_path, "alice", events=False) as bot,
        logged_in(server, tmp_path, "bob") as bob,
    ):
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:

                async def read() -> None:
                    got = 0
                    async for event in bob.events():
                        got += isinstance(event, Message)
                        if got == count:
                            return

                nursery.start_soon(read)
                for i in range(count):
                    await bot.send_message(f"tick {i}", room="general")
            await all_acknowledged(bot)


async def test_closing_the_events_stream_drops_events_and_keeps_the_link(tmp_path: Path) -> None:
    count = EVENT_BUFFER + 100  # more than the stream would keep for a reader
    with running_server("trio", tmp_path / "s", hub=UNLIMITED) as server:
        async with (
            logged_in(server, tmp_path, "alice") as alice,
            logged_in(server, tmp_path, "bob", events=False) as bot,
        ):
            link = alice._link
            await alice.events().aclose()
            for i in range(count):
                await bot.send_message(f"tick {i}", room="general")
            await all_acknowledged(bot)
            with trio.fail_after(10):
                await alice.send_message("still here", room="general")
                await all_acknowledged(alice)
            assert alice._link is link  # never dropped (a closed stream is not a lost link)
            with pytest.raises(trio.ClosedResourceError):
                alice.events().receive_nowait()


async def test_without_replies_an_answer_goes_only_to_its_call(
    server: Running, tmp_path: Path
) -> None:
    async with logged_in(server, tmp_path, "bob") as bob:
        await bob.send_message("older", room="general")
        assert (await next_of(bob, Message)).text == "older"  # shown: not replayed next time
    async with logged_in(server, tmp_path, "bob", replies=False) as bob:
        assert await replayed(bob) == []
        with pytest.raises(ClientError, match="everyone stays in general"):
            await bob.leave("general")
        page, _ = await bob.history(room="general")
        assert [m.text for m in page] == ["older"]
        await bob.send_message("last", room="general")  # not an answer to a call: an event
        events = [await next_of(bob, Message | ServerError)]
        assert [type(e).__name__ for e in events] == ["Message"]  # no Error, no "older"
        assert events[0].text == "last"


def logs_in_once_set(answer: threading.Event, after: Behaviour) -> Behaviour:
    """Accept the login once ``answer`` is set (10 s at most), then ``after``."""

    def behaviour(sock: socket.socket, conn: Connection) -> None:
        answer.wait(10)
        logs_in_then(after)(sock, conn)

    return behaviour


def until_offered(offered: threading.Event) -> Behaviour:
    """Read until the client offers a file, then set ``offered``."""

    def behaviour(sock: socket.socket, conn: Connection) -> None:
        while not isinstance(event := conn.next_event(), FileOffer):
            if event is NEED_DATA:
                conn.receive_data(sock.recv(65536))
        offered.set()

    return behaviour


async def test_calls_while_a_reconnect_logs_in_wait_for_it_or_say_it_reconnects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The reconnect's link is up, its login not answered yet (a slow password check): an
    # upload waits for the login and goes on, another call says the client reconnects. Both
    # had failed with the connection's "cannot send … in state login".
    drop, answer, offered = threading.Event(), threading.Event(), threading.Event()
    behaviours = (logs_in_then(until_set(drop)), logs_in_once_set(answer, until_offered(offered)))
    async with scripted(tmp_path, *behaviours, backoff=(0.05, 0.05)) as alice:
        drop.set()
        with trio.fail_after(10):
            while alice._link is None or alice._link.conn.state is not State.LOGIN:
                await trio.sleep(0.01)  # the reconnect's link is up; its login unanswered
        with pytest.raises(ConnectionLost, match="the client is reconnecting"):
            await alice.history(room="general")
        waiting, wait_online = trio.Event(), alice.wait_online

        async def wait_online_noted() -> None:
            waiting.set()
            await wait_online()

        monkeypatch.setattr(alice, "wait_online", wait_online_noted)
        path = tmp_path / "f.txt"
        path.write_bytes(b"hello")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(alice.send_file, path, room="general"))
            with trio.fail_after(10):
                await waiting.wait()  # the upload waits for the reconnect
                answer.set()
                while not offered.is_set():  # and goes on once it is logged in
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()


async def test_a_link_dropped_right_after_the_login_is_not_online(
    server: Running, tmp_path: Path
) -> None:
    async with logged_in(server, tmp_path, "alice") as alice:
        await alice._abandon_link()  # as the recovery does when resending the outbox fails
        assert not alice.online
        with trio.move_on_after(0.2) as waiting:  # a waiter waits, instead of spinning
            await alice.wait_online()
        assert waiting.cancelled_caught


def test_a_file_list_answers_only_the_call_for_its_conversation() -> None:
    reply = requests.files(room="team").reply
    assert reply.match(FileList(room="team", files=[]))
    assert not reply.match(FileList(room="general", files=[]))
    assert not requests.files(peer="bob").reply.match(FileList(peer="carol", files=[]))


def _infos(first: int, count: int) -> list[FileInfo]:
    return [
        FileInfo(file_id=f"f{n}", name=f"{n}.txt", size=n, sha256=bytes(32))
        for n in range(first, first + count)
    ]


def test_a_file_listing_asks_for_each_page_after_the_last_one() -> None:
    infos = _infos(0, 5)
    pages = {  # by the position each is asked from
        0: FileList(files=infos[:2], room="general", more=True, last=7),
        7: FileList(files=infos[2:4], room="general", more=True, last=9),
        9: FileList(files=infos[4:], room="general", more=False, last=12),
    }
    listing = requests.FileListing(room="general")
    asked = []
    while listing.request is not None:
        ask = listing.request.record
        assert isinstance(ask, ListFiles)
        assert (ask.room, ask.peer) == ("general", "")
        asked.append(ask.after)
        listing.take(pages[ask.after])
    assert asked == [0, 7, 9]
    assert listing.files == infos


@pytest.mark.parametrize(
    "stuck",
    [
        FileList(files=[], room="general", more=True, last=8),  # empty, more to come
        FileList(files=_infos(2, 1), room="general", more=True, last=5),  # back
        FileList(files=_infos(2, 1), room="general", more=True, last=7),  # where it was
    ],
    ids=["empty", "back", "still"],
)
def test_a_file_listing_that_does_not_move_on_fails(stuck: FileList) -> None:
    listing = requests.FileListing(room="general")
    listing.take(FileList(files=_infos(0, 2), room="general", more=True, last=7))
    with pytest.raises(ClientError, match="does not move on"):
        listing.take(stuck)


def test_a_file_listing_longer_than_a_reply_may_hold_fails() -> None:
    """A server that says more follow for ever makes the listing fail, holding no more
    than a reply may."""
    listing = requests.FileListing(room="general")
    full = _infos(0, MAX_LIST)
    for page in range(1, MAX_REPLY_ITEMS // MAX_LIST + 1):
        listing.take(FileList(files=full, room="general", more=True, last=page))
    assert len(listing.files) == MAX_REPLY_ITEMS  # as many as a reply may hold: taken
    with pytest.raises(ClientError, match=f"more than {MAX_REPLY_ITEMS:,} files"):
        listing.take(FileList(files=full[:1], room="general", more=True, last=page + 1))
    assert len(listing.files) == MAX_REPLY_ITEMS


async def test_a_file_list_of_megabytes_of_names_comes_back_whole(tmp_path: Path) -> None:
    """More than a server queues for a client at once: asked for a page at a time."""
    with running_server("trio", tmp_path / "server", hub=HubConfig(message_burst=1000)) as server:
        with server.login("alice") as alice:
            names = [long_name(n) for n in range(FILES_OF_MEGABYTES)]
            shared = share_empty_files(alice, names)
        async with logged_in(server, tmp_path, "bob") as bob:
            listed = await bob.files(room="general")
            assert [(f.file_id, f.name) for f in listed] == list(zip(shared, names, strict=True))
            assert bob.online
            assert (await bob.history(room="general", limit=1))[0][0].file is not None


async def test_file_lists_of_two_conversations_at_once(server: Running, tmp_path: Path) -> None:
    for name in ("notes.txt", "plans.txt"):
        (tmp_path / name).write_text(name)
    async with logged_in(server, tmp_path, "alice") as alice:
        await alice.join("team")
        await alice.send_file(tmp_path / "notes.txt", room="general")
        await alice.send_file(tmp_path / "plans.txt", room="team")
        found: dict[str, list[str]] = {}

        async def fetch(room: str) -> None:
            found[room] = [f.name for f in await alice.files(room=room)]

        async with trio.open_nursery() as nursery:  # two file panels opening at once
            nursery.start_soon(fetch, "general")
            while not alice._waiters:  # its request is under way
                await trio.sleep(0)
            nursery.start_soon(fetch, "team")
    assert found == {"general": ["notes.txt"], "team": ["plans.txt"]}


@pytest.mark.parametrize("call", ["history", "files"])
async def test_a_refusal_fails_only_the_call_it_answers(
    call: str, server: Running, tmp_path: Path
) -> None:
    async with logged_in(server, tmp_path, "alice") as alice:
        outcomes: dict[str, str] = {}

        async def fetch(room: str) -> None:
            try:
                await getattr(alice, call)(room=room)
                outcomes[room] = "answered"
            except ClientError as exc:
                outcomes[room] = str(exc)

        async with trio.open_nursery() as nursery:  # two chat tabs opening at once
            nursery.start_soon(fetch, "secret")
            while not alice._waiters:  # its request is under way
                await trio.sleep(0)
            nursery.start_soon(fetch, "general")
    assert outcomes == {"secret": "join secret first", "general": "answered"}


@pytest.mark.parametrize("newest_first", [True, False])
async def test_two_pages_of_one_conversation_at_once(newest_first: bool, tmp_path: Path) -> None:
    with running_server("trio", tmp_path / "s", hub=UNLIMITED) as server:
        async with logged_in(server, tmp_path, "alice") as alice:
            for i in range(20):
                await alice.send_message(f"m{i}", room="general")
            await all_acknowledged(alice)
            newest, _ = await alice.history(room="general", limit=5)
            older, _ = await alice.history(room="general", before=newest[0].id, limit=5)
            pages: dict[int, list[Message]] = {}

            async def fetch(before: int) -> None:
                pages[before] = (await alice.history(room="general", before=before, limit=5))[0]

            first, second = (0, newest[0].id) if newest_first else (newest[0].id, 0)
            async with trio.open_nursery() as nursery:  # scrolling up while the room opens
                nursery.start_soon(fetch, first)
                while not alice._waiters:  # its request is under way
                    await trio.sleep(0)
                nursery.start_soon(fetch, second)
    assert pages == {0: newest, newest[0].id: older}
    assert [m.text for m in older] == [f"m{i}" for i in range(10, 15)]


def test_a_history_page_is_the_run_of_messages_right_before_its_end() -> None:
    def said(n: int) -> Message:
        return Message(text=f"m{n}", room="general", id=n, sender="bob", ts=1.0)

    request = requests.history(room="general", limit=2)
    waiter = requests.Waiter(request.reply, threading.Event())
    waiters = [waiter]
    stream = [
        *(said(1), said(2), HistoryEnd(more=True)),  # a page of the replay after login
        *(said(3), Presence(user="carol", online=True)),  # live traffic
        *(said(4), said(5), HistoryEnd(room="general", more=True)),  # the page
    ]
    for position, record in enumerate(stream, 1):
        requests.route(waiters, record, position)
    assert waiter.finished.is_set()
    messages, more = request.reply.result(waiter.collected())
    assert ([m.id for m in messages], more) == ([4, 5], True)


async def test_without_replies_a_page_fetched_during_the_replay_loses_no_replayed_message(
    tmp_path: Path,
) -> None:
    texts = [f"message {n}" for n in range(300)]  # more than one replay page
    with running_server("trio", tmp_path / "s", hub=UNLIMITED) as server:
        async with logged_in(server, tmp_path, "bob"):
            pass  # bob has seen all there is
        async with logged_in(server, tmp_path, "alice", events=False) as alice:
            for text in texts:
                await alice.send_message(text, room="general")
            await all_acknowledged(alice)
        async with logged_in(server, tmp_path, "bob", replies=False) as bob:
            page, _ = await bob.history(room="general", limit=5)
            shown = [m.text for m in page]
            with trio.fail_after(10):
                async for event in bob.events():
                    if isinstance(event, Message):
                        shown.append(event.text)
                    elif isinstance(event, HistoryEnd) and not event.more:
                        break  # the end of the replay, after all its messages
    assert [m.text for m in page] == texts[-5:]
    assert sorted(shown) == sorted(texts)  # each once: in the page, or as an event


LIVE = Message(text="just now", room="general", id=7, sender="bob", ts=1.0)
"""A live message that a page of general's newest messages takes (it may be in the page)."""


def at_history(sock: socket.socket, conn: Connection, *records: Record) -> None:
    """Wait for the first HistoryRequest and answer it with ``records`` (no page)."""
    while not isinstance(event := conn.next_event(), HistoryRequest):
        if event is NEED_DATA:
            conn.receive_data(sock.recv(65536))
    for record in records:
        conn.send(record)
    sock.sendall(conn.data_to_send())


def hangs_up_at_history(*records: Record) -> Behaviour:
    """At the first HistoryRequest, send ``records``, then end the connection (no page)."""

    def behaviour(sock: socket.socket, conn: Connection) -> None:
        at_history(sock, conn, *records)
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(65536):
            pass

    return behaviour


@pytest.mark.usefixtures("brief_hold")
async def test_without_replies_a_message_held_for_a_call_given_up_goes_on(
    tmp_path: Path,
) -> None:
    silent_after_live = logs_in_then(answers(HistoryRequest, [LIVE]))
    async with scripted(tmp_path, silent_after_live, replies=False) as alice:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(alice.history, room="general"))
            with trio.fail_after(10):
                while not alice._withheld:  # the page under way took LIVE: held back
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()  # the user gives up on the page, which never comes
        assert await next_of(alice, Message) == LIVE  # once the hold is over


async def test_without_replies_a_message_held_for_a_call_goes_on_when_the_link_ends(
    tmp_path: Path,
) -> None:
    behaviour = logs_in_then(hangs_up_at_history(LIVE))
    async with scripted(tmp_path, behaviour, replies=False, reconnect=False) as alice:
        with pytest.raises(ConnectionLost):
            await alice.history(room="general")
        events: list[object] = []
        with trio.fail_after(10):
            async for event in alice.events():
                events.append(event)
                if isinstance(event, LinkState):
                    break
    assert events[:1] == [LIVE]  # before the client gives up, not lost behind it
    assert [type(e) for e in events] == [Message, LinkState]


def notes_delivered(delivered: list[int], sock: socket.socket, conn: Connection) -> None:
    """Note in ``delivered`` what each Delivered acknowledges, until the client hangs up."""
    while not isinstance(event := conn.next_event(), ConnectionClosed):
        if isinstance(event, Delivered):
            delivered.append(event.up_to)
        elif event is NEED_DATA:
            conn.receive_data(sock.recv(65536))


def at_history_then_note(delivered: list[int], *records: Record) -> Behaviour:
    """Accept the login; at the first HistoryRequest, send ``records`` (and no page), then
    note what each Delivered acknowledges (see ``notes_delivered``)."""

    def behaviour(sock: socket.socket, conn: Connection) -> None:
        at_history(sock, conn, *records)
        notes_delivered(delivered, sock, conn)

    return logs_in_then(behaviour)


def replays_then_notes(delivered: list[int], *records: Record) -> Behaviour:
    """Accept the login, send ``records`` (a replay), then note what each Delivered
    acknowledges (see ``notes_delivered``)."""

    def behaviour(sock: socket.socket, conn: Connection) -> None:
        for record in records:
            conn.send(record)
        sock.sendall(conn.data_to_send())
        notes_delivered(delivered, sock, conn)

    return logs_in_then(behaviour)


@pytest.mark.usefixtures("brief_hold")
@pytest.mark.parametrize("shown", [False, True])
async def test_without_replies_a_held_message_is_acknowledged_once_shown(
    shown: bool, tmp_path: Path
) -> None:
    delivered: list[int] = []
    behaviour = at_history_then_note(delivered, HistoryEnd(), LIVE)  # the replay is over
    async with scripted(tmp_path, behaviour, replies=False) as alice:
        give_up = trio.CancelScope()

        async def fetch() -> None:
            with give_up, suppress(ClientError):  # or the close ends the link under it
                await alice.history(room="general")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(fetch)
            with trio.fail_after(10):
                while not alice._withheld:  # the page under way took LIVE: held back
                    await trio.sleep(0.01)
            if shown:  # the user gives up on the page: LIVE is shown once the hold is over
                give_up.cancel()
                assert await next_of(alice, Message) == LIVE
            await alice.aclose()  # acknowledges what arrived, then says bye
    assert (LIVE.id in delivered) == shown  # held back, so not shown: still unread


MISSED = Message(text="missed while away", room="general", id=5, sender="bob", ts=1.0)
"""A message replayed after the login, which a page of general's newest messages takes."""


async def test_an_acknowledgement_due_while_the_link_is_down_goes_after_the_reconnect(
    tmp_path: Path,
) -> None:
    delivered: list[int] = []
    # The link drops under the page: MISSED, held back for it, and the replay's end go on
    # once it is gone. The server's cursor stays put, so the next login replays MISSED again.
    drops = logs_in_then(hangs_up_at_history(MISSED, HistoryEnd()))
    replays = replays_then_notes(delivered, MISSED, HistoryEnd())
    async with scripted(tmp_path, drops, replays, replies=False, backoff=(0.05, 0.1)) as alice:
        with pytest.raises(ConnectionLost):
            await alice.history(room="general")
        assert await next_of(alice, Message) == MISSED
        with trio.fail_after(10):
            while MISSED.id not in delivered:  # acknowledged on the new link
                queued_events(alice)  # as the end of its replay is shown
                await trio.sleep(0.01)


FIRST = Message(text="first", room="general", id=3, sender="bob", ts=1.0)
SECOND = Message(text="second", room="general", id=4, sender="bob", ts=1.0)


async def until_queued(client: ChatClient, records: tuple[Record, ...]) -> None:
    """Wait until ``records``, sent by a scripted server right after the login, all wait on
    ``client``'s events stream (after the login's answer, an event too)."""
    with trio.fail_after(10):
        while client.events().queued < 1 + len(records):
            await trio.sleep(0.01)


@pytest.mark.parametrize("page_shown", [False, True])
async def test_a_replay_page_is_acknowledged_once_the_events_reader_took_all_of_it(
    page_shown: bool, tmp_path: Path
) -> None:
    delivered: list[int] = []
    # The replay's first page arrives whole, but the application takes only FIRST (or the
    # whole page) before it closes: what is still queued was never shown, so the server
    # must send it again at the next login, and must not send the next page for it.
    page = (FIRST, SECOND, HistoryEnd(more=True))
    async with scripted(tmp_path, replays_then_notes(delivered, *page)) as alice:
        await until_queued(alice, page)
        assert await next_of(alice, Message) == FIRST
        if page_shown:
            assert await next_of(alice, Message) == SECOND
            assert await next_of(alice, HistoryEnd) == HistoryEnd(more=True)
    assert delivered == ([SECOND.id] if page_shown else [])


async def test_closing_acknowledges_no_live_message_still_queued(tmp_path: Path) -> None:
    delivered: list[int] = []
    records = (HistoryEnd(), FIRST, SECOND)  # the replay is over; two live messages
    async with scripted(tmp_path, replays_then_notes(delivered, *records)) as alice:
        await until_queued(alice, records)
        assert await next_of(alice, Message) == FIRST  # SECOND is left on the stream
    assert max(delivered) == FIRST.id  # so the next login replays SECOND


def sends_then_hangs_up(*records: Record) -> Behaviour:
    """Accept the login, send ``records``, then end the connection."""

    def behaviour(sock: socket.socket, conn: Connection) -> None:
        for record in records:
            conn.send(record)
        sock.sendall(conn.data_to_send())
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(65536):
            pass

    return logs_in_then(behaviour)


@pytest.mark.parametrize("new_page_shown", [False, True])
async def test_a_page_end_of_a_lost_link_shown_late_acknowledges_nothing_on_the_new_one(
    new_page_shown: bool, tmp_path: Path
) -> None:
    delivered: list[int] = []
    # The first link brings a page and drops; the reconnect's replay brings SECOND. The
    # application takes the first page (its end too) only after that: the end of a page of
    # the lost link must not stand for the new replay's page, which it has not shown yet.
    drops = sends_then_hangs_up(FIRST, HistoryEnd(more=True))
    replays = replays_then_notes(delivered, SECOND, HistoryEnd())
    async with scripted(tmp_path, drops, replays, backoff=(0.05, 0.1)) as alice:
        with trio.fail_after(10):
            while SECOND.id not in alice._delivery._seen:  # the new replay has arrived
                await trio.sleep(0.01)
        assert await next_of(alice, Message) == FIRST
        assert await next_of(alice, HistoryEnd) == HistoryEnd(more=True)
        if new_page_shown:
            assert await next_of(alice, Message) == SECOND
            assert await next_of(alice, HistoryEnd) == HistoryEnd()
    assert delivered == ([SECOND.id] if new_page_shown else [])


def replays_in_pages(delivered: list[int], *pages: tuple[Record, ...]) -> Behaviour:
    """Accept the login and send the first of ``pages`` (a replay), each next one once a
    Delivered covers the last message sent, as a server does; note what each Delivered
    acknowledges (see ``notes_delivered``)."""

    def behaviour(sock: socket.socket, conn: Connection) -> None:
        last = 0
        for page in pages:
            while last and not (delivered and delivered[-1] >= last):
                event = conn.next_event()
                if isinstance(event, ConnectionClosed):
                    return
                if isinstance(event, Delivered):
                    delivered.append(event.up_to)
                elif event is NEED_DATA:
                    conn.receive_data(sock.recv(65536))
            for record in page:
                conn.send(record)
            sock.sendall(conn.data_to_send())
            last = max(r.id for r in page if isinstance(r, Message))
        notes_delivered(delivered, sock, conn)

    return logs_in_then(behaviour)


THIRD = Message(text="third", room="general", id=6, sender="bob", ts=1.0)
PAGES = ((FIRST, SECOND, HistoryEnd(more=True)), (THIRD, HistoryEnd()))
"""A replay in two pages."""


@pytest.mark.parametrize("link_lost", [False, True])
async def test_with_acknowledge_closing_the_stream_on_a_replay_page_lets_the_replay_go_on(
    link_lost: bool, tmp_path: Path
) -> None:
    delivered: list[int] = []
    # With acknowledge=True the client acknowledges without a reader (docs/client.md): what
    # the stream held when it was closed counts as shown, as what comes after, so the end of
    # the page asks for the next. With link_lost, the page came on a link lost since, and the
    # new replay brings it again, whose copies are dropped as seen: the end of the new page
    # asks for the next all the same.
    first = sends_then_hangs_up(*PAGES[0]) if link_lost else replays_in_pages(delivered, *PAGES)
    then = (replays_in_pages(delivered, *PAGES),) if link_lost else ()
    async with scripted(tmp_path, first, *then, acknowledge=True, backoff=(0.05, 0.1)) as alice:
        await until_queued(alice, PAGES[0])
        await alice.events().aclose()  # shows nothing from now on
        with trio.fail_after(10):
            while THIRD.id not in delivered:  # the next page came, and was acknowledged
                await trio.sleep(0.01)
    assert delivered == [SECOND.id, THIRD.id]  # the whole replay: none of it comes again


@pytest.mark.parametrize("replay_over", [False, True])
async def test_without_replies_closing_acknowledges_no_older_message_held_back(
    replay_over: bool, tmp_path: Path
) -> None:
    delivered: list[int] = []
    newer = Message(text="in another room", room="dev", id=9, sender="bob", ts=2.0)
    # newer is shown at once; MISSED, older, is held back for the page under way.
    records = (HistoryEnd(),) * replay_over + (newer, MISSED)
    behaviour = at_history_then_note(delivered, *records)
    async with scripted(tmp_path, behaviour, replies=False) as alice:

        async def fetch() -> None:
            with suppress(ClientError):  # the close ends the link under it
                await alice.history(room="general")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(fetch)
            assert await next_of(alice, Message) == newer
            with trio.fail_after(10):
                while not alice._withheld:
                    await trio.sleep(0.01)
            await alice.aclose()  # acknowledges what was shown, then says bye
    assert all(up_to < MISSED.id for up_to in delivered)  # MISSED is still unread


@pytest.mark.parametrize("first_taken", [False, True])
async def test_without_replies_an_answer_acknowledges_no_message_still_queued(
    first_taken: bool, tmp_path: Path
) -> None:
    delivered: list[int] = []
    newer = Message(text="in dev", room="dev", id=9, sender="bob", ts=2.0)
    # FIRST goes on events(), where it waits; newer, live, comes in the page of dev under way,
    # which gives it to its caller: that is no reason to acknowledge FIRST, never taken.
    behaviour = at_history_then_note(delivered, HistoryEnd(), FIRST, newer, HistoryEnd(room="dev"))
    async with scripted(tmp_path, behaviour, replies=False) as alice:
        page, _ = await alice.history(room="dev")
        assert page == [newer]
        with trio.fail_after(10):
            while alice._withheld:  # newer is released (as answered: not on events())
                await trio.sleep(0.01)
        assert await next_of(alice, HistoryEnd) == HistoryEnd()  # the replay is over
        if first_taken:
            assert await next_of(alice, Message) == FIRST
        await alice.aclose()  # acknowledges what was shown, then says bye
    if first_taken:
        assert max(delivered) == newer.id  # neither is replayed at the next login
    else:
        assert all(up_to < FIRST.id for up_to in delivered)  # FIRST is replayed: not lost


async def history_given_up(alice: ChatClient) -> None:
    """alice asks for general's history, and gives up once the request is under way."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(alice.history, room="general"))
        with trio.fail_after(10):
            while not alice._waiters:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()


async def test_the_reply_to_a_call_given_up_answers_no_other(tmp_path: Path) -> None:
    behaviour = logs_in_then(answers_late(HistoryRequest, *TWO_PAGES))
    async with scripted(tmp_path, behaviour) as alice:
        await history_given_up(alice)
        with trio.fail_after(10):
            page, _ = await alice.history(room="general")
    assert [m.text for m in page] == ["page 2"]  # not the page asked for first


@pytest.mark.parametrize("repeated", [False, True])
async def test_without_replies_the_late_page_of_a_call_given_up_is_not_shown(
    repeated: bool, tmp_path: Path
) -> None:
    message, end = TWO_PAGES[0]
    late = (LIVE, message, *(LIVE,) * repeated, end)  # LIVE right before the page (in it too)
    behaviour = logs_in_then(answers_late(HistoryRequest, late, TWO_PAGES[1]))
    async with scripted(tmp_path, behaviour, replies=False) as alice:
        await history_given_up(alice)
        with trio.fail_after(10):
            page, _ = await alice.history(room="general")
            while alice._withheld:
                await trio.sleep(0.01)
        shown = [e for e in queued_events(alice) if isinstance(e, Message)]
    assert [m.text for m in page] == ["page 2"]
    assert shown == [LIVE]  # not "page 1", which no one asked for any more


def test_a_page_of_older_messages_never_takes_a_live_one() -> None:
    reply = requests.history(room="general", before=10).reply
    live = Message(text="just now", room="general", id=12, sender="bob", ts=1.0)
    older = Message(text="before", room="general", id=9, sender="bob", ts=1.0)
    assert (reply.match(live), reply.match(older)) == (False, True)


async def test_a_request_beyond_a_protocol_limit_says_so(server: Running, tmp_path: Path) -> None:
    async with logged_in(server, tmp_path, "alice") as alice:
        with pytest.raises(ClientError, match="cannot send this"):
            await alice.history(room="general", limit=100_000)
        assert (await alice.history(room="general"))[0] == []  # the link is fine


async def test_one_download_per_file_and_failures_stop_the_stream(tmp_path: Path) -> None:
    async with one_transfer_at_a_time(tmp_path, 6 << 20) as (alice, info, data):
        results: list[object] = []

        async def fetch() -> None:
            try:
                results.append(await alice.download(info.file_id))
            except TransferFailed as exc:
                results.append(exc)

        async with trio.open_nursery() as nursery:  # a double click
            nursery.start_soon(fetch)
            nursery.start_soon(fetch)
        paths = [r for r in results if isinstance(r, Path)]
        errors = [str(r) for r in results if isinstance(r, TransferFailed)]
        assert len(paths) == 1
        assert paths[0].read_bytes() == data
        assert len(errors) == 1
        assert "already being downloaded" in errors[0]

        def boom(done: int, total: int) -> None:
            if done:
                raise RuntimeError("the progress bar broke")

        with pytest.raises(RuntimeError, match="progress bar"):
            await alice.download(info.file_id, progress=boom)
        # The server stopped that stream: its one transfer slot is free again.
        assert (await alice.download(info.file_id)).read_bytes() == data
        with pytest.raises(TransferFailed, match="not a file id"):
            await alice.download("../../etc/passwd")


async def test_online_says_whether_the_session_is_logged_in(tmp_path: Path) -> None:
    key, data_dir = X25519PrivateKey.generate(), tmp_path / "s"
    async with AsyncExitStack() as stack:
        with running_server("trio", data_dir, key=key) as server:
            port = server.port
            alice = await stack.enter_async_context(
                logged_in(server, tmp_path, "alice", backoff=(0.05, 0.05))
            )
            assert alice.online
        assert isinstance(await next_of(alice, LinkState), LinkState)
        assert not alice.online  # reconnecting
        with running_server("trio", data_dir, key=key, port=port):
            await alice.wait_online()
            assert alice.online
        await alice.aclose()
        assert not alice.online


def until_set(event: threading.Event) -> Behaviour:
    """Keep the connection until ``event`` is set (10 s at most), then end it."""

    def behaviour(_sock: socket.socket, _conn: Connection) -> None:
        event.wait(10)

    return behaviour


def answers_login_when(answer: threading.Event, *, accept: bool) -> Behaviour:
    """Answer the login (accept or refuse it) once ``answer`` is set; then keep reading."""

    def behaviour(sock: socket.socket, conn: Connection) -> None:
        while not isinstance(event := conn.next_event(), Login):
            if event is NEED_DATA:
                conn.receive_data(sock.recv(65536))
        answer.wait(10)
        if accept:
            conn.send(Authenticated(username=event.username))
        else:
            conn.send(LoginRejected(reason=GENERIC_LOGIN_FAILURE))
        sock.sendall(conn.data_to_send())
        while sock.recv(65536):
            pass

    return behaviour


@pytest.mark.parametrize("accept", [True, False])
async def test_a_client_closed_while_its_reconnect_login_is_answered_stays_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, accept: bool
) -> None:
    # The answer arrives while aclose() writes its Bye: the closed client had then said it was
    # connected (accepted), or given up again with the refusal instead of "closed" (refused).
    drop, answer = threading.Event(), threading.Event()
    behaviours = (logs_in_then(until_set(drop)), answers_login_when(answer, accept=accept))
    async with scripted(tmp_path, *behaviours, backoff=(0.05, 0.05)) as alice:
        drop.set()
        with trio.fail_after(10):
            while not (alice._link is not None and alice._reconnector._recovering):
                await trio.sleep(0.01)
            while not alice._waiters:  # the reconnect's Login is out, unanswered
                await trio.sleep(0.01)
        queued_events(alice)  # the LinkStates so far
        say_bye = alice._say_bye

        async def answered_during_the_bye(link: Any, reason: str, **options: Any) -> None:
            answer.set()
            await trio.sleep(0.5)  # a slow write: the answer is read meanwhile
            await say_bye(link, reason, **options)

        monkeypatch.setattr(alice, "_say_bye", answered_during_the_bye)
        await alice.aclose()
        with trio.fail_after(10):
            while alice._reconnector._recovering:
                await trio.sleep(0.01)
        assert [e for e in queued_events(alice) if isinstance(e, LinkState)] == []
        with pytest.raises(Disconnected, match="closed"):
            await alice.wait_online()


def hangs_up(_sock: socket.socket, _conn: Connection) -> None:
    """End the connection as soon as the handshake is done."""


async def test_wait_online_returns_after_a_reconnect_whose_first_link_failed(
    tmp_path: Path,
) -> None:
    # The second link is lost before its login is answered: the waiter, already waiting
    # for the first reconnect, must still see the third link come online.
    drop = threading.Event()
    behaviours = (logs_in_then(until_set(drop)), hangs_up, logs_in_then(stays_silent))
    async with scripted(tmp_path, *behaviours, backoff=(0.5, 0.5)) as alice:
        drop.set()
        assert (await next_of(alice, LinkState)).retry_in  # it waits out its back-off
        with trio.fail_after(10):
            await alice.wait_online()
        assert alice.online


async def test_links_lost_soon_after_each_login_back_off_further(tmp_path: Path) -> None:
    # A server that ends each session right after its login (as one whose disk is full
    # fails the first write): the client must not log in again at the first delay each
    # time, or its clients make it check a password (and tell everyone a Presence) twice a
    # second each, for as long as it fails.
    drops = [logs_in_then(hangs_up) for _ in range(5)]
    async with scripted(tmp_path, *drops, logs_in_then(stays_silent), backoff=(0.05, 10)) as alice:
        waits = []
        while len(waits) < 5:
            state = await next_of(alice, LinkState)
            if not state.connected:
                waits.append(state.retry_in)
    assert waits[-1] > 0.05 * 1.5  # past the first delay (with its jitter): it doubled


async def test_a_link_lost_while_the_reconnect_says_so_is_made_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The second link is lost right after its login, while nobody reads the events: the
    # reconnect waits to say it is connected. Its recovery must go on to a third link.
    monkeypatch.setattr(trio_delivery, "EVENT_BUFFER", 1)  # full at the first LinkState
    drop, lost = threading.Event(), threading.Event()

    def sets_lost(_sock: socket.socket, _conn: Connection) -> None:
        lost.set()  # and the connection ends

    behaviours = (logs_in_then(until_set(drop)), logs_in_then(sets_lost))
    options: dict[str, Any] = {"backoff": (0.05, 0.05), "replies": False}
    async with scripted(tmp_path, *behaviours, logs_in_then(stays_silent), **options) as alice:
        drop.set()
        with trio.fail_after(10):
            while not lost.is_set() or alice._link is not None:  # the second link is gone
                await trio.sleep(0.01)
        with trio.fail_after(20):
            while not alice.online:  # reading the events lets the reconnect go on
                await next_of(alice, LinkState)


async def test_closing_wakes_calls_waiting_for_a_reconnect(tmp_path: Path) -> None:
    async with stranded(tmp_path, tmp_path / "s", free_port(), backoff=(30.0, 30.0)) as alice:
        failures: list[BaseException] = []  # the next try is ~30 s away
        async with trio.open_nursery() as nursery:

            async def waits() -> None:
                try:
                    await alice.download("f0")
                except Disconnected as exc:
                    failures.append(exc)

            nursery.start_soon(waits)
            await trio.sleep(0.2)
            await alice.aclose()
        assert len(failures) == 1


class PinsForgottenOnce(KnownServers):
    """Pins that, once ``forget`` is set, do not know the next key shown (so the client asks
    about it)."""

    forget = False

    def require(self, server: str, fingerprint: str) -> bool:
        if self.forget:
            self.forget = False
            return False
        return super().require(server, fingerprint)


@pytest.mark.parametrize("when", ["backing off", "connecting"])
async def test_a_client_closed_while_it_reconnects_stays_closed(
    server: Running, tmp_path: Path, when: str
) -> None:
    # Closed while it waits out its back-off, or while it makes a new link (asked about the
    # server's key): it neither logs in again nor keeps that link.
    pins, closed = PinsForgottenOnce(tmp_path / "known"), trio.Event()
    to_close: list[ChatClient] = []

    async def closes(_server: str, _fingerprint: str) -> bool:
        for client in to_close:  # asked about the key of a new link: it is connecting
            await client.aclose()
            closed.set()
        return True

    options = {"known_servers": pins, "confirm_new_key": closes}
    async with logged_in(server, tmp_path, "alice", backoff=(0.5, 0.5), **options) as alice:
        if when == "connecting":
            pins.forget = True
            to_close.append(alice)
        assert alice._link is not None
        await alice._link.stream.aclose()  # the link is lost
        if when == "backing off":
            assert (await next_of(alice, LinkState)).retry_in
            await alice.aclose()
            closed.set()
        with trio.fail_after(10):
            await closed.wait()
            while alice._reconnector._recovering:  # the recovery ends, without a link
                await trio.sleep(0.01)
        assert alice._link is None
        assert not alice.online
        assert not any(isinstance(e, LinkState) and e.connected for e in queued_events(alice))
        with trio.fail_after(10), pytest.raises(Disconnected, match="closed"):
            await alice.wait_online()


async def test_a_write_failing_mid_burst_hangs_nothing_and_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = [f"burst {i}" for i in range(1000)]  # far more than the writer's 64 KiB
    with running_server("trio", tmp_path / "s", hub=UNLIMITED) as server:
        async with (
            logged_in(server, tmp_path, "alice", backoff=(0.05, 0.2)) as alice,
            logged_in(server, tmp_path, "bob") as bob,
        ):
            assert alice._link is not None
            release = trio.Event()

            async def stalls_then_resets(data: bytes) -> None:
                await release.wait()
                raise trio.BrokenResourceError("connection reset by peer")

            monkeypatch.setattr(alice._link.stream, "send_all", stalls_then_resets)
            with trio.fail_after(20):
                async with trio.open_nursery() as nursery:

                    async def burst() -> None:
                        for text in texts:
                            await alice.send_message(text, room="general")

                    nursery.start_soon(burst)  # soon waits for room: the write is stuck
                    await trio.sleep(0.2)
                    release.set()  # the write fails; the burst goes on into the outbox
                seen: list[str] = []
                async for event in bob.events():
                    if isinstance(event, Message) and event.text.startswith("burst "):
                        seen.append(event.text)
                        if len(seen) == len(texts):
                            break
            assert sorted(seen) == sorted(texts)  # each once, after alice reconnected
            await all_acknowledged(alice)


@pytest.mark.parametrize("endless", ENDLESS, ids=lambda endless: endless.asked.__name__)
async def test_a_reply_longer_than_a_client_takes_fails_its_request_and_the_link_stays(
    tmp_path: Path, endless: Endless, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A server flooded with rooms is no broken peer: the call fails at once, holding no more
    # than a reply may hold; the rest of its reply is dropped as it comes (it would answer
    # the next request), and the next request gets its own answer on the same link (the
    # window asks for the rooms after each reconnect: ending the link looped).
    async with scripted(tmp_path, endless.server(), reconnect=False) as alice:
        waiters: list[Any] = []
        real_await = alice._await

        async def kept(waiter: Any, reply: Any, timeout: float) -> Any:
            waiters.append(waiter)
            return await real_await(waiter, reply, timeout)

        monkeypatch.setattr(alice, "_await", kept)
        with (
            trio.fail_after(10),
            pytest.raises(ClientError, match=f"sent more than {endless.bound} .* one request"),
        ):
            await alice._ask(endless.request())
        with trio.fail_after(10):
            assert await alice._ask(endless.request()) == endless.answer
        first, _ = waiters
        assert first.records == []  # what it held went once it failed, and the rest unheld
        assert first not in alice._waiters
        assert alice.online


async def test_a_listing_as_long_as_a_reply_may_hold_arrives_whole(tmp_path: Path) -> None:
    per_page = MAX_REPLY_ITEMS // MAX_REPLY_RECORDS  # each bound reached exactly
    whole = room_pages(MAX_REPLY_ITEMS, per_page)
    one_more = room_pages(MAX_REPLY_ITEMS + 1, per_page)
    async with scripted(tmp_path, logs_in_then(answers(ListRooms, whole, one_more))) as alice:
        assert len(await alice.rooms()) == MAX_REPLY_ITEMS
        with pytest.raises(ClientError, match=f"sent more than {MAX_REPLY_ITEMS:,} items"):
            await alice.rooms()


# --- password changes ---------------------------------------------------------------------


async def test_after_a_password_change_the_reconnect_logs_in_with_the_new_one(
    tmp_path: Path,
) -> None:
    with running_server("trio", tmp_path / "s") as server:
        async with logged_in(server, tmp_path, "alice", backoff=(0.05, 0.2)) as alice:
            await alice.change_password(PASSWORD, "a brand new password")
            assert alice._link is not None
            await alice._link.stream.aclose()  # lost: the client logs in again
            with trio.fail_after(10):
                while not (await next_of(alice, LinkState)).connected:
                    pass  # a login with the old password would be refused for good
            assert alice.online


async def test_a_refused_password_change_says_why_and_keeps_the_password(
    server: Running, tmp_path: Path
) -> None:
    async with logged_in(server, tmp_path, "alice") as alice:
        with pytest.raises(PasswordNotChanged, match="the current password is wrong") as refused:
            await alice.change_password("not it", "a brand new password")
        assert refused.value.code == "wrong_password"
        assert alice.online
    with server.login("alice"):  # the old password still works
        pass


async def test_marking_read_once_the_client_gave_up_is_disconnected_not_sent(
    tmp_path: Path,
) -> None:
    port = free_port()
    async with stranded(tmp_path, tmp_path / "s", port, (0.05, 0.2), reconnect=False) as alice:
        assert alice.gave_up_on is not None
        with pytest.raises(Disconnected):
            await alice.mark_read(5, room="general")
        assert alice.read_marker(room="general") == 0  # nothing kept to send either


async def test_a_password_change_before_the_login_says_to_log_in_first(
    server: Running, tmp_path: Path
) -> None:
    async with connect("127.0.0.1", server.port, **trio_options(tmp_path, "alice")) as alice:
        with pytest.raises(PasswordNotChanged, match=r"^log in first") as refused:
            await alice.change_password(PASSWORD, "a brand new password")
        assert refused.value.code == "not_logged_in"


async def test_a_server_that_does_not_list_password_changes_is_not_asked(
    tmp_path: Path,
) -> None:
    # An older server: its Authenticated has no features, and a ChangePassword would break
    # the protocol there. It answers nothing: the refusal can only be the client's own.
    async with scripted(tmp_path, logs_in_then(stays_silent)) as alice:
        assert alice.features == ()
        with pytest.raises(PasswordNotChanged, match="ask its operator") as refused:
            await alice.change_password(PASSWORD, "a brand new password")
        assert refused.value.code == "unsupported"
        assert alice.online


async def test_one_password_change_at_a_time(tmp_path: Path) -> None:
    # The server would refuse a second change at once, before it answers the first: its
    # refusal would then be taken for the first one's answer (replies match by order).
    behaviour = logs_in_then(stays_silent, features=(CHANGE_PASSWORD,))
    async with scripted(tmp_path, behaviour) as alice, trio.open_nursery() as nursery:
        nursery.start_soon(alice.change_password, PASSWORD, "a brand new password")
        await trio.testing.wait_all_tasks_blocked()  # the first waits for its answer
        with pytest.raises(PasswordNotChanged, match="already in progress") as refused:
            await alice.change_password(PASSWORD, "another new password")
        assert refused.value.code == "in_progress"
        nursery.cancel_scope.cancel()
