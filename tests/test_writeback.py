"""Large files are flushed to disk in steps while they are written, not all at the end."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from sealchat.transports import writeback
from sealchat.transports.downloads import PartialDownload
from sealchat.transports.sqlite_store import SqliteStore
from sealchat.transports.writeback import FLUSH_EVERY, START_EVERY, WriteBehind

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


def test_writeback_starts_every_mebibyte_and_the_flush_lets_the_pages_go(
    tmp_path: Path, flushes: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[tuple[int, int]] = []
    dropped: list[tuple[int, int]] = []
    monkeypatch.setattr(writeback, "_start", lambda fd, at, size: started.append((at, size)))
    monkeypatch.setattr(writeback, "_drop", lambda fd, at, size: dropped.append((at, size)))
    behind = WriteBehind()
    chunk = 60 * 1024  # the size of a file chunk, not a divisor of a mebibyte
    with open(tmp_path / "f", "wb", buffering=0) as out:
        while out.tell() < FLUSH_EVERY + 2 * START_EVERY:
            out.write(bytes(chunk))
            behind.wrote(out.fileno(), out.tell())
        written = out.tell()
    # One flush, at the first chunk that takes the file to 8 MiB; then its pages go.
    flushed = -(-FLUSH_EVERY // chunk) * chunk
    assert flushes == [flushed]
    assert dropped == [(0, flushed)]
    # Every other byte's writeback started once, in order, a mebibyte (and at most one
    # chunk more) at a time; those after the last start wait for the next one.
    before = [(at, size) for at, size in started if at < flushed]
    after = [(at, size) for at, size in started if at >= flushed]
    assert [at for at, _ in before] == [0] + [at + size for at, size in before[:-1]]
    assert before[-1][0] + before[-1][1] <= flushed
    assert [at for at, _ in after] == [flushed] + [at + size for at, size in after[:-1]]
    assert all(START_EVERY <= size < START_EVERY + chunk for _, size in started)
    assert written - (after[-1][0] + after[-1][1]) < START_EVERY


def test_chunks_are_flushed_every_8_mib_where_no_writeback_can_be_started(
    tmp_path: Path, flushes: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # macOS and Windows: only the flushes send the bytes, and they come every 8 MiB.
    monkeypatch.setattr(writeback, "_start", lambda fd, at, size: None)
    behind = WriteBehind()
    chunk = 60 * 1024
    with open(tmp_path / "f", "wb", buffering=0) as out:
        while out.tell() < 3 * FLUSH_EVERY:
            out.write(bytes(chunk))
            behind.wrote(out.fileno(), out.tell())
    gaps = [b - a for a, b in zip([0, *flushes], flushes, strict=False)]
    assert len(flushes) == 2
    assert all(FLUSH_EVERY <= gap < FLUSH_EVERY + chunk for gap in gaps)


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
