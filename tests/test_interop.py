"""Interop: each client library against each server, and mixed clients in one room."""

from __future__ import annotations

import hashlib
import os
import queue
from pathlib import Path

import pytest
import trio

from sealchat.core import FileChunk, FileReject, Message, Record
from sealchat.core.limits import MAX_CHUNK
from sealchat.transports.blocking_client import BlockingClient, _put_even_if_full
from sealchat.transports.pinning import (
    KnownServers,
    ServerKeyChanged,
    ServerKeyUnknown,
    pinned,
    server_name,
)
from sealchat.transports.requests import TRANSFER_BLOCK, TRANSFER_QUEUE, ClientError, LoginFailed
from sealchat.transports.trio_client import connect
from tests.servers import KINDS, PASSWORD, running_server, trio_options


@pytest.mark.parametrize("kind", KINDS)
async def test_trio_and_blocking_clients_share_a_room(kind: str, tmp_path: Path) -> None:
    data = os.urandom(250_000)
    (tmp_path / "up.bin").write_bytes(data)
    with running_server(kind, tmp_path / "server") as server:
        blocking = server.login("bob")
        try:
            blocking.join("mixed")
            async with connect("127.0.0.1", server.port, **trio_options(tmp_path, "alice")) as a:
                await a.login("alice", PASSWORD)
                await a.join("mixed")
                await a.send_message("from trio", room="mixed")
                got = await trio.to_thread.run_sync(blocking.next, Message)
                assert (got.text, got.sender) == ("from trio", "alice")
                ack = await trio.to_thread.run_sync(
                    lambda: blocking.send_message("from blocking", room="mixed")
                )
                async for event in a.events():
                    if isinstance(event, Message) and event.id == ack.id:
                        assert event.text == "from blocking"
                        break
                info = await a.send_file(tmp_path / "up.bin", room="mixed")
                saved = await trio.to_thread.run_sync(
                    lambda: blocking.download(info.file_id, tmp_path / "bob-downloads")
                )
                assert saved.read_bytes() == data
                blocking_info = await trio.to_thread.run_sync(
                    lambda: blocking.send_file(tmp_path / "up.bin", room="mixed")
                )
                fetched = await a.download(blocking_info.file_id)
                assert hashlib.sha256(fetched.read_bytes()).digest() == blocking_info.sha256
                messages, _ = await trio.to_thread.run_sync(lambda: blocking.history(room="mixed"))
                assert [m.text for m in messages][:2] == ["from trio", "from blocking"]
        finally:
            blocking.close()


@pytest.mark.parametrize("kind", KINDS)
def test_blocking_client_operations(kind: str, tmp_path: Path) -> None:
    with running_server(kind, tmp_path / "server") as server:
        with server.login("carol") as carol:
            assert [m.name for m in carol.join("books")] == ["carol"]
            assert {r.name for r in carol.rooms()} >= {"general", "books"}
            assert [m.name for m in carol.members("books")] == ["carol"]
            ack = carol.send_message("note to self", to="carol")
            assert ack.id > 0
            with pytest.raises(ClientError, match="no user nobody"):
                carol.send_message("hello?", to="nobody")
            carol.leave("books")
            with pytest.raises(ClientError, match="everyone stays in general"):
                carol.leave("general")
            assert carol.files(room="general") == []
        with pytest.raises(LoginFailed, match="invalid username or password"):
            server.login("carol", "wrong")


def test_blocking_client_moves_files_bigger_than_its_queues(tmp_path: Path) -> None:
    data = os.urandom(3 * TRANSFER_BLOCK + TRANSFER_QUEUE * MAX_CHUNK + 99)
    source = tmp_path / "archive.tar"
    source.write_bytes(data)
    with running_server("trio", tmp_path / "server") as server, server.login("dave") as dave:
        sent: list[int] = []
        info = dave.send_file(source, room="general", progress=lambda d, t: sent.append(d))
        assert sent[-1] == len(data)
        got: list[int] = []
        path = dave.download(info.file_id, tmp_path / "in", progress=lambda d, t: got.append(d))
        assert path.read_bytes() == data
        assert got == sorted(got)
        assert got[-1] == len(data)


def test_blocking_client_pins_like_the_trio_client(tmp_path: Path) -> None:
    with running_server("threads", tmp_path / "server") as server:
        known = KnownServers(tmp_path / "known")
        name = server_name("127.0.0.1", server.port)
        with pytest.raises(ServerKeyUnknown, match="sealchat trust"):
            BlockingClient("127.0.0.1", server.port, trust=pinned(known, name))
        asked: list[str] = []

        def confirm(_server: str, fp: str) -> bool:
            asked.append(fp)
            return True

        with BlockingClient("127.0.0.1", server.port, trust=pinned(known, name, confirm)):
            pass
        assert asked == [server.fingerprint]
        assert known.lookup(name) == server.fingerprint
        known.pin(name, "SHA256:" + "C" * 43)
        with pytest.raises(ServerKeyChanged, match="CHANGED"):
            BlockingClient("127.0.0.1", server.port, trust=pinned(known, name, confirm))


def test_public_modules_offer_each_transport_whole() -> None:
    from sealchat.transports import blocking
    from sealchat.transports import trio as trio_transport
    from sealchat.transports.blocking_server import ThreadedServer
    from sealchat.transports.trio_server import TrioServer

    assert (trio_transport.connect, trio_transport.TrioServer) == (connect, TrioServer)
    assert (blocking.BlockingClient, blocking.ThreadedServer) == (BlockingClient, ThreadedServer)
    assert blocking.MessageTooLong is trio_transport.MessageTooLong
    assert issubclass(blocking.MessageTooLong, blocking.ClientError)


def test_blocking_client_mistakes_are_client_errors(tmp_path: Path) -> None:
    with running_server("threads", tmp_path / "server") as server:
        client = server.login("carol")
        with pytest.raises(ClientError, match="at most 4000 fit in one message"):
            client.send_message("x" * 8001, room="general")
        with pytest.raises(ClientError, match="cannot send this"):
            client.send_message("hi", room="r" * 65)
        client.close()
        with pytest.raises(ClientError, match="connection is closed"):
            client.send_message("after the end", room="general")


def test_a_lost_link_is_reported_after_the_chunks_that_came_before_it() -> None:
    chunks: queue.Queue[Record] = queue.Queue(3)
    for n in range(3):
        chunks.put(FileChunk(transfer=1, offset=n, data=b"x"))
    _put_even_if_full(chunks, FileReject(transfer=0, reason="lost"))
    got = [chunks.get_nowait() for _ in range(4)]
    assert [type(r).__name__ for r in got] == ["FileChunk"] * 3 + ["FileReject"]
    assert [r.offset for r in got[:3] if isinstance(r, FileChunk)] == [0, 1, 2]
