"""The desktop client's log file: private, bounded, and optional."""

from __future__ import annotations

import logging
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sealchat.gui import logfile
from sealchat.gui.logfile import log_to_file


@pytest.fixture(autouse=True)
def _own_handlers() -> Iterator[None]:
    """Each test's handlers are removed (and closed) after it."""
    logger = logging.getLogger("sealchat")
    before, level = list(logger.handlers), logger.level
    yield
    for handler in logger.handlers:
        if handler not in before:
            logger.removeHandler(handler)
            handler.close()
    logger.setLevel(level)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.skipif(os.name != "posix", reason="file modes")
def test_errors_are_written_to_a_file_only_its_owner_can_read(tmp_path: Path) -> None:
    old_umask = os.umask(0)  # the loosest: the modes must not depend on it
    try:
        path = log_to_file(tmp_path / "log")
        assert path == tmp_path / "log" / "gui.log"
        logging.getLogger("sealchat.gui").error("the emoji picker failed")
    finally:
        os.umask(old_umask)
    assert "ERROR sealchat.gui: the emoji picker failed" in path.read_text(encoding="utf-8")
    assert _mode(path) == 0o600
    assert _mode(path.parent) == 0o700


@pytest.mark.skipif(os.name != "posix", reason="file modes")
def test_a_log_left_readable_by_others_is_made_private(tmp_path: Path) -> None:
    (tmp_path / "gui.log").write_text("an old line\n", encoding="utf-8")
    (tmp_path / "gui.log").chmod(0o644)
    path = log_to_file(tmp_path)
    assert path is not None
    assert _mode(path) == 0o600
    assert path.read_text(encoding="utf-8") == "an old line\n"  # appended to, not replaced


def test_the_log_starts_again_past_its_limit_keeping_one_older_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logfile, "LOG_LIMIT", 1000)
    path = log_to_file(tmp_path)
    assert path is not None
    for n in range(100):
        logging.getLogger("sealchat.gui").warning("problem %d", n)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["gui.log", "gui.log.1"]
    assert all((tmp_path / name).stat().st_size <= 1000 for name in files)
    assert "problem 99" in path.read_text(encoding="utf-8")
    if os.name == "posix":
        assert _mode(tmp_path / "gui.log.1") == 0o600
        assert _mode(path) == 0o600


def test_without_a_writable_folder_the_client_runs_without_a_log_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "log").write_text("a file where the folder should be", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="sealchat"):
        assert log_to_file(tmp_path / "log") is None
    assert "cannot keep a log file in" in caplog.text


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="XDG folders")
def test_the_default_folder_is_the_users_log_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", "/home/alice/.state")
    assert logfile.default_log_dir() == Path("/home/alice/.state/sealchat/log")
