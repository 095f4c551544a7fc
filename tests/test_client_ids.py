"""Client message ids: unique, growing per sender, within the protocol's limit."""

from __future__ import annotations

import os
import random

from sealchat.core.limits import MAX_ID
from sealchat.transports.requests import new_client_id


def test_ids_are_unique_and_grow_with_time() -> None:
    ids = [new_client_id() for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) <= MAX_ID for i in ids)
    stamps = [int(i[:12], 16) for i in ids]  # milliseconds first, so the index grows at its end
    assert stamps == sorted(stamps)


def test_a_forked_child_draws_other_ids_than_its_parent() -> None:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its ids' random parts, then out without pytest's clean-up
        os.write(write_end, " ".join(new_client_id()[12:] for _ in range(20)).encode())
        os._exit(0)
    os.close(write_end)
    mine = [new_client_id()[12:] for _ in range(20)]
    with os.fdopen(read_end, "rb") as pipe:
        theirs = pipe.read().decode().split()
    os.waitpid(pid, 0)
    assert len(theirs) == 20
    assert not set(mine) & set(theirs)


def test_ids_neither_follow_nor_reveal_the_programs_own_random() -> None:
    random.seed(42)
    first = [new_client_id()[12:] for _ in range(5)]
    random.seed(42)
    again = [new_client_id()[12:] for _ in range(5)]
    assert first != again  # a bot that seeds random does not repeat its ids
    random.seed(7)
    expected = random.getrandbits(32)
    random.seed(7)
    new_client_id()
    assert random.getrandbits(32) == expected  # ids draw nothing from the shared generator
