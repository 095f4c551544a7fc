"""Both servers: log in, chat in a room, direct messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from sealchat.core import Message, MessageAck
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
