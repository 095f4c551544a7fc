"""What the servers log of a full disk: the chunks of uploads it loses, throttled."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
from pathlib import Path

import pytest

from sealchat.core.hub.store import DISK_FULL_ERRNOS
from sealchat.transports import sqlite_uploads
from sealchat.transports.hub_failures import DiskFullLog, disk_full
from sealchat.transports.server_limits import REPORT_INTERVAL
from sealchat.transports.sqlite_store import SqliteStore

ADVICE = "free space in {0}; uploads resume when there is room"


def lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records]


def test_chunks_lost_to_a_full_disk_are_logged_at_most_once_a_minute_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sealchat.server")
    now = 1000.0
    log = DiskFullLog(tmp_path, clock=lambda: now)
    for _ in range(500):  # every chunk of every upload, for the rest of the minute
        log.chunk_lost()
        now += 0.1
    full = f"the disk of the data folder {tmp_path} is full"
    advice = ADVICE.format(tmp_path)
    assert lines(caplog) == [
        (logging.WARNING, f"{full}: 1 upload chunk not stored; {advice}"),
    ]
    now = 1000.0 + REPORT_INTERVAL  # a minute after the first line
    log.chunk_lost()
    since = "500 upload chunks not stored since the last such line"
    assert lines(caplog)[1:] == [(logging.WARNING, f"{full}: {since}; {advice}")]
    log.chunk_lost()  # held back again
    assert len(caplog.records) == 2


def test_the_store_logs_a_chunk_its_disk_has_no_room_for(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The hub refuses the chunk to its client, saying why; the operator learns it from the log.
    caplog.set_level(logging.INFO, logger="sealchat.server")
    data_dir = tmp_path / "data"
    with SqliteStore(data_dir, database=":memory:") as store:
        data = b"0123456789"
        f = store.create_file(
            owner_key="esha",
            name="notes.txt",
            size=len(data),
            sha256=hashlib.sha256(data).digest(),
            room="lobby",
            to_key="",
            ts=3.0,
        )

        def full(_fd: int, _data: object) -> int:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        with monkeypatch.context() as patched:
            patched.setattr(sqlite_uploads.os, "write", full)
            with pytest.raises(OSError, match="No space left") as refused:
                store.write_chunk(f.file_id, 0, data)
        assert refused.value.errno == errno.ENOSPC  # for the hub to refuse the chunk
        assert store.write_chunk(f.file_id, 0, data) == len(data)  # room again
    assert lines(caplog) == [
        (
            logging.WARNING,
            f"the disk of the data folder {data_dir} is full: 1 upload chunk not stored; "
            + ADVICE.format(data_dir),
        )
    ]


@pytest.mark.parametrize("code", sorted(DISK_FULL_ERRNOS))
def test_a_full_disk_is_told_by_the_errnos_the_hub_knows(code: int) -> None:
    assert disk_full(OSError(code, os.strerror(code)))
    assert not disk_full(OSError(errno.EIO, os.strerror(errno.EIO)))
