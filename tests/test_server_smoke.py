"""Both servers: log in, chat in a room, direct messages."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from sealchat.core import ConnectionClosed, Message, MessageAck
from sealchat.core.hub import GENERIC_LOGIN_FAILURE
from sealchat.transports.blocking_client import ClientError
from tests.servers import KINDS, running_server


@pytest.mark.parametrize("kind", KINDS)
def test_two_users_chat(kind: str, tmp_path: Path) -> None:
    with running_server(kind, tmp_path) as server:
        alice = server.login("alice")
        bob = server.login("bob")
        alice.send(Message(text="hi bob", room="general", client_id="a1"))
        ack = alice.next(MessageAck)
        got = bob.next(Message)
        assert got.text == "hi bob"
        assert got.sender == "alice"
        assert got.id == ack.id
        bob.send(Message(text="psst", to="Alice", client_id="b1"))
        dm = alice.next(Message)
        assert (dm.text, dm.sender, dm.to) == ("psst", "bob", "alice")
        with pytest.raises(ClientError, match=GENERIC_LOGIN_FAILURE):
            server.login("alice", "wrong password")
        alice.close()
        bob.close()


@pytest.mark.parametrize("kind", KINDS)
def test_a_server_stopping_says_so_even_after_every_client_had_left(
    kind: str, tmp_path: Path
) -> None:
    with running_server(kind, tmp_path) as server:
        server.login("bob").close()
        while server.hub.is_logged_in("bob"):  # closed once its connection is gone
            time.sleep(0.01)  # so, for a moment, nobody was connected
        alice = server.login("alice")
        server.stop()
        closed = alice.next(ConnectionClosed)
        alice.close()
    assert (closed.reason, closed.clean) == ("the server is shutting down", True)
