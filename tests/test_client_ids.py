"""Client message ids: unique, growing per sender, within the protocol's limit."""

from __future__ import annotations

from sealchat.core.limits import MAX_ID
from sealchat.transports.requests import new_client_id


def test_ids_are_unique_and_grow_with_time() -> None:
    ids = [new_client_id() for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) <= MAX_ID for i in ids)
    stamps = [int(i[:12], 16) for i in ids]  # milliseconds first, so the index grows at its end
    assert stamps == sorted(stamps)
