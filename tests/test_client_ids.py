"""Client message ids: unique, growing per sender, within the protocol's limit."""

from __future__ import annotations

import os

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
