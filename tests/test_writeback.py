"""Large files are flushed to disk in steps while they are written, not all at the end."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from sealchat.transports import writeback
from sealchat.transports.downloads import PartialDownload
from sealchat.transports.sqlite_store import SqliteStore
from sealchat.transports.writeback import FLUSH_EVERY, WriteBehind

MiB = 1 << 20


@pytest.fixture
def flushes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The file sizes at which a flush happened."""
    seen: list[int] = []
    monkeypatch.setattr(writeback, "_datasync", lambda fd: seen.append(os.fstat(fd).st_size))
    return seen


def test_a_flush_every_step_and_none_between(tmp_path: Path, flushes: list[int]) -> None:
    behind = WriteBehind()
    with open(tmp_path / "f", "wb", buffering=0) as out:
        for _ in range(2 * FLUSH_EVERY // MiB + 3):
            out.write(bytes(MiB))
            behind.wrote(out.fileno(), out.tell())
    assert flushes == [FLUSH_EVERY, 2 * FLUSH_EVERY]


def test_a_resumed_download_counts_from_where_it_was(tmp_path: Path, flushes: list[int]) -> None:
    data = os.urandom(5 * MiB + FLUSH_EVERY + 2 * MiB)
    (tmp_path / ".f1.part").write_bytes(data[: 5 * MiB])  # 5 MiB from before
    with PartialDownload(tmp_path, "f1") as part:
        for at in range(part.size, len(data), MiB):
            part.write(at, data[at : at + MiB])
        assert flushes == [5 * MiB + FLUSH_EVERY]
        assert part.finish("f.bin", hashlib.sha256(data).digest()).read_bytes() == data


def test_the_server_flushes_uploads_as_they_come(tmp_path: Path, flushes: list[int]) -> None:
    data = os.urandom(FLUSH_EVERY + 2 * MiB)
    with SqliteStore(tmp_path / "data", database=":memory:") as store:
        f = store.create_file(
            owner_key="esha",
            name="big.bin",
            size=len(data),
            sha256=hashlib.sha256(data).digest(),
            room="general",
            to_key="",
            ts=1.0,
        )
        for at in range(0, len(data), MiB):
            store.write_chunk(f.file_id, at, data[at : at + MiB])
        assert flushes == [FLUSH_EVERY]
        assert store.complete_file(f.file_id)
