"""The client's partial download files: resumable, hashed as they grow, verified at the end."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from sealchat.transports.downloads import PartialDownload, safe_name

FILE_ID = "f0123456789abcdef"


def test_chunks_append_and_the_file_lands_under_its_name(tmp_path: Path) -> None:
    data = os.urandom(3 * (1 << 20) + 17)  # more than one hashing block
    with PartialDownload(tmp_path, FILE_ID) as part:
        assert part.size == 0
        assert stat.S_IMODE(part.path.stat().st_mode) == 0o600
        part.write_all([(0, data[:1000]), (1000, data[1000:])])
        assert part.size == len(data)
        path = part.finish("report.pdf", hashlib.sha256(data).digest())
    assert path == tmp_path / "report.pdf"
    assert path.read_bytes() == data
    assert not part.path.exists()


def test_a_partial_file_resumes_where_it_ends_and_counts_in_the_hash(tmp_path: Path) -> None:
    data = os.urandom(2 * (1 << 20) + 5)
    (tmp_path / f".{FILE_ID}.part").write_bytes(data[: (1 << 20) + 3])
    with PartialDownload(tmp_path, FILE_ID) as part:
        assert part.size == (1 << 20) + 3
        part.write(part.size, data[part.size :])
        assert part.finish("x.bin", hashlib.sha256(data).digest()).read_bytes() == data


def test_a_chunk_out_of_place_is_refused(tmp_path: Path) -> None:
    with PartialDownload(tmp_path, FILE_ID) as part:
        part.write(0, b"abc")
        with pytest.raises(ValueError, match="offset 10, but 3 bytes"):
            part.write(10, b"def")
        assert part.size == 3
    assert (tmp_path / f".{FILE_ID}.part").read_bytes() == b"abc"  # kept for a later resume


def test_wrong_bytes_are_deleted_not_delivered(tmp_path: Path) -> None:
    with PartialDownload(tmp_path, FILE_ID) as part:
        part.write(0, b"not what was offered")
        with pytest.raises(ValueError, match="SHA-256 does not match"):
            part.finish("x.bin", hashlib.sha256(b"the real thing").digest())
    assert list(tmp_path.iterdir()) == []


def test_names_never_clobber_or_escape(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_bytes(b"mine")
    digest = hashlib.sha256(b"theirs").digest()
    for name, landed in [("notes.txt", "notes (1).txt"), ("../../etc/passwd", "_.._etc_passwd")]:
        with PartialDownload(tmp_path, FILE_ID) as part:
            part.write(0, b"theirs")
            assert part.finish(name, digest) == tmp_path / landed
    assert (tmp_path / "notes.txt").read_bytes() == b"mine"
    assert safe_name("") == "download"


def test_file_ids_are_checked_before_any_path_is_made(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a file id"):
        PartialDownload(tmp_path, "../escape")


def test_a_file_is_downloaded_by_one_writer_at_a_time(tmp_path: Path) -> None:
    with PartialDownload(tmp_path, FILE_ID) as first:
        with pytest.raises(ValueError, match="already being downloaded"):
            PartialDownload(tmp_path, FILE_ID)  # another task or process
        first.write(0, b"mine")
    with PartialDownload(tmp_path, FILE_ID) as again:  # free once the first is closed
        assert again.size == 4
