"""The client's partial download files: resumable, hashed as they grow, verified at the end."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
import threading
import unicodedata
from pathlib import Path
from typing import Any

import pytest

from sealchat.transports import downloads
from sealchat.transports.downloads import PartialDownload, safe_name, sha256_of
from sealchat.transports.requests import TransferFailed

FILE_ID = "f0123456789abcdef"


def test_a_file_is_hashed_whole_unless_told_to_stop(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    data = os.urandom(2 * (1 << 20) + 5)  # more than one block
    path.write_bytes(data)
    stop = threading.Event()
    assert sha256_of(path, stop) == sha256_of(path) == hashlib.sha256(data).digest()
    stop.set()
    with pytest.raises(InterruptedError, match="stopped hashing"):
        sha256_of(path, stop)


def test_a_file_that_does_not_hold_the_size_it_was_measured_at_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_bytes(b"x" * 3000)
    assert sha256_of(path, size=3000) == hashlib.sha256(b"x" * 3000).digest()
    with pytest.raises(TransferFailed) as grew:
        sha256_of(path, size=1000)  # it grew after it was measured
    assert str(grew.value) == (
        "app.log changed while it was read: its size said 1000 B, but it held more; send it "
        "once it no longer changes (or send a copy of it)"
    )
    with pytest.raises(TransferFailed, match=r"its size said 4\.9 KiB, but it held 2\.9 KiB;"):
        sha256_of(path, size=5000)  # it shrank


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


def test_a_long_peer_name_fits_the_filesystem_and_keeps_its_extension(tmp_path: Path) -> None:
    data = b"photo"
    digest = hashlib.sha256(data).digest()
    name = "写真" * 100 + ".jpeg"  # 205 characters, 605 UTF-8 bytes
    landed = []
    for _ in range(2):  # the second one gets a " (1)" suffix and must fit too
        with PartialDownload(tmp_path, FILE_ID) as part:
            part.write(0, data)
            landed.append(part.finish(name, digest))
    for path in landed:
        assert path.read_bytes() == data
        assert len(path.name.encode()) <= 255
        assert path.name.startswith("写真写真")
        assert path.name.endswith(".jpeg")
    assert landed[1].name == landed[0].name.removesuffix(".jpeg") + " (1).jpeg"
    assert not (tmp_path / f".{FILE_ID}.part").exists()


@pytest.mark.parametrize(
    "name", ["é" * 300, "a" + "🙂" * 100 + ".txt", "x" * 300], ids=["accents", "emoji", "ascii"]
)
def test_truncation_never_splits_a_character(name: str) -> None:
    cleaned = safe_name(name)
    assert 200 <= len(cleaned.encode()) <= 255 - len(" (9999)")
    assert unicodedata.normalize("NFC", name).startswith(cleaned.removesuffix(".txt"))


def test_a_name_the_filesystem_refuses_falls_back_to_the_file_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open

    def short_names_only(path: str | os.PathLike[str], flags: int, mode: int = 0o777) -> int:
        if len(os.path.basename(path)) > 20:  # e.g. eCryptfs: 143 bytes at most
            raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), str(path))
        return real_open(path, flags, mode)

    data = b"content"
    with PartialDownload(tmp_path, "f1") as part:
        part.write(0, data)
        monkeypatch.setattr(os, "open", short_names_only)
        path = part.finish("a rather long file name.txt", hashlib.sha256(data).digest())
    assert path == tmp_path / "download-f1"
    assert path.read_bytes() == data
    assert not part.path.exists()


@pytest.mark.parametrize(
    ("name", "cleaned"),
    [
        ("invoice\u202egpj.exe", "invoice_gpj.exe"),  # would show as invoiceexe.jpg
        ("a\u200fb\u2066c\ufeffd.txt", "a_b_c_d.txt"),
        ("c1\x85\x9b\x80.txt", "c1___.txt"),
        ("two\u2028lines.txt", "two_lines.txt"),
    ],
)
def test_invisible_and_reordering_characters_are_replaced(name: str, cleaned: str) -> None:
    assert safe_name(name) == cleaned


@pytest.mark.parametrize(
    "name", ["\u0645\u06cc\u200c\u062e\u0648\u0627\u0645.txt", "\U0001f469\u200d\U0001f4bb.png"]
)
def test_joiners_that_words_and_emoji_need_are_kept(name: str) -> None:
    assert safe_name(name) == name


@pytest.mark.parametrize(
    ("name", "cleaned"),
    [
        ("CON", "_CON"),
        ("con.txt", "_con.txt"),
        ("Nul.tar.gz", "_Nul.tar.gz"),
        ("aux", "_aux"),
        ("PRN.pdf", "_PRN.pdf"),
        ("com1", "_com1"),
        ("LPT9.doc", "_LPT9.doc"),
        ("CON .txt", "_CON .txt"),
        ("console.txt", "console.txt"),
        ("com10.txt", "com10.txt"),
        ("lpt0", "lpt0"),
        ("my con.txt", "my con.txt"),
    ],
)
def test_windows_device_names_are_made_ordinary(name: str, cleaned: str) -> None:
    assert safe_name(name) == cleaned


@pytest.mark.skipif(os.name != "posix", reason="POSIX modes")
def test_the_downloads_folder_is_created_private(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        with PartialDownload(tmp_path / "new" / "downloads", FILE_ID):
            pass
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new" / "downloads").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700


@pytest.mark.skipif(os.name != "posix", reason="POSIX owners, FIFOs and symlinks")
def test_a_part_file_planted_by_someone_else_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    part = tmp_path / f".{FILE_ID}.part"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(b"theirs")
    plants = {
        "symlink": lambda: part.symlink_to(elsewhere),
        "FIFO": lambda: os.mkfifo(part, 0o666),  # reading it would hang the download
        "hard link": lambda: os.link(elsewhere, part),
        "other owner": lambda: part.write_bytes(b"theirs"),
    }
    for kind, plant in plants.items():
        plant()
        if kind == "other owner":
            monkeypatch.setattr(os, "geteuid", lambda: part.stat().st_uid + 1)
        with pytest.raises(ValueError, match=r"not a file this user created.*remove it"):
            PartialDownload(tmp_path, FILE_ID)
        assert elsewhere.read_bytes() == b"theirs", kind
        part.unlink()


def test_bytes_beyond_the_announced_size_fail_and_are_discarded(tmp_path: Path) -> None:
    with PartialDownload(tmp_path, FILE_ID) as part:
        part.expect(10)
        part.write(0, b"0123456789")  # exactly the size is fine
        assert part.size == 10
        with pytest.raises(ValueError, match="more than the 10 bytes it announced"):
            part.write(10, b"x")
    assert list(tmp_path.iterdir()) == []
    with PartialDownload(tmp_path, FILE_ID) as part:  # size learnt from the server's reply
        part.write(0, b"01234")
        part.expect(8)
        with pytest.raises(ValueError, match="more than the 8 bytes"):
            part.write_all([(5, b"567"), (8, b"8")])
    assert list(tmp_path.iterdir()) == []


def test_a_partial_file_bigger_than_announced_is_discarded(tmp_path: Path) -> None:
    (tmp_path / f".{FILE_ID}.part").write_bytes(b"0123456789")
    part = PartialDownload(tmp_path, FILE_ID)
    with part, pytest.raises(ValueError, match="more than the 4 bytes"):
        part.expect(4)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / f".{FILE_ID}.part").write_bytes(b"0123")
    with PartialDownload(tmp_path, FILE_ID) as part:  # complete: kept
        part.expect(4)
        assert part.finish("x", hashlib.sha256(b"0123").digest()).read_bytes() == b"0123"


def test_a_part_file_still_empty_is_removed_and_one_with_bytes_kept(tmp_path: Path) -> None:
    with PartialDownload(tmp_path, FILE_ID) as part:
        pass  # refused before any byte came (a mistyped id)
    assert not part.path.exists()
    with PartialDownload(tmp_path, FILE_ID) as part:
        part.write(0, b"abc")
    assert part.path.read_bytes() == b"abc"  # kept for a later resume


@pytest.mark.skipif(os.name != "posix", reason="flock")
def test_a_second_download_of_the_same_file_leaves_the_first_ones_part(tmp_path: Path) -> None:
    with PartialDownload(tmp_path, FILE_ID) as first:
        with pytest.raises(ValueError, match="already being downloaded"):
            PartialDownload(tmp_path, FILE_ID)
        first.write(0, b"abc")
    assert first.path.read_bytes() == b"abc"


def test_an_empty_file_downloads(tmp_path: Path) -> None:
    with PartialDownload(tmp_path, FILE_ID) as part:
        path = part.finish("empty.txt", hashlib.sha256(b"").digest())
    assert path.read_bytes() == b""


@pytest.mark.skipif(os.name != "posix", reason="flock")
def test_a_download_never_locks_a_part_file_another_one_removed_or_moved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = PartialDownload(tmp_path, "abc")  # refused: it will leave nothing behind
    real_lock = downloads._lock
    later: list[PartialDownload] = []
    locks = 0

    def meanwhile(fd: int, path: Path) -> None:
        nonlocal locks
        locks += 1
        if locks == 1:  # between the second download's open and its lock:
            first.close()  # the first one removes its empty file...
            later.append(PartialDownload(tmp_path, "abc"))  # ...and a third one starts anew
        real_lock(fd, path)

    monkeypatch.setattr(downloads, "_lock", meanwhile)
    with pytest.raises(ValueError, match="already being downloaded"):
        PartialDownload(tmp_path, "abc")  # not the removed file, which nobody could find
    data = b"the whole file"
    third = later[0]
    third.expect(len(data))
    third.write(0, data)
    saved = third.finish("report.txt", hashlib.sha256(data).digest())
    assert saved.read_bytes() == data


def test_without_flock_the_file_is_closed_before_it_is_moved_or_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Windows has no flock, and cannot rename or remove a file that is open.
    monkeypatch.setattr(downloads, "fcntl", None)
    open_when: list[bool] = []
    real_replace, real_unlink = os.replace, Path.unlink

    def replace(source: Any, target: Any) -> None:
        open_when.append(download._fd >= 0)
        real_replace(source, target)

    def unlink(path: Path, missing_ok: bool = False) -> None:
        open_when.append(download._fd >= 0)
        real_unlink(path, missing_ok=missing_ok)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(Path, "unlink", unlink)
    data = b"the whole file"
    download = PartialDownload(tmp_path, "abc")
    download.write(0, data)
    saved = download.finish("report.txt", hashlib.sha256(data).digest())
    assert saved.read_bytes() == data
    download = PartialDownload(tmp_path, "def")
    download.close()  # refused: removed, being empty
    download = PartialDownload(tmp_path, "ghi")
    download.write(0, data)
    with pytest.raises(ValueError, match="does not match"):
        download.finish("report.txt", b"\0" * 32)
    assert open_when == [False, False, False]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.txt"]


def test_a_download_the_disk_has_no_room_for_stops_before_filling_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Else it fills the disk and fails with "[Errno 28] No space left on device", leaving
    # the user's disk full; the part here stays, to resume once there is room.
    (tmp_path / f".{FILE_ID}.part").write_bytes(b"x" * 100)
    room = shutil.disk_usage(tmp_path)._replace(free=899)
    monkeypatch.setattr(downloads.shutil, "disk_usage", lambda _path: room)
    with PartialDownload(tmp_path, FILE_ID) as part:
        with pytest.raises(downloads.NoRoom) as refused:
            part.expect(1000)
        assert refused.value.errno == errno.ENOSPC
        assert "900 B more is needed" in str(refused.value)
        assert "free some space" in str(refused.value)
    assert (tmp_path / f".{FILE_ID}.part").stat().st_size == 100
    with PartialDownload(tmp_path, FILE_ID) as part:
        part.expect(999)  # the rest fits
