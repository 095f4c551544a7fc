"""The desktop client's log file: what went wrong, for the user to read or to send in.

``gui.log`` in the user's log folder (made 0700), mode 0600 whatever the umask, rotated at
LOG_LIMIT bytes with one older file kept. What is logged carries no message text, password
or key: the code that logs never passes them.
"""

from __future__ import annotations

import logging
import os
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Final, TextIO

import platformdirs

from sealchat.transports.keyfile import KEY_FILE_MODE, ensure_private_dir

LOG_LIMIT: Final = 1 << 20
"""Bytes after which the log starts again (the previous one kept as ``gui.log.1``)."""
LOGGER: Final = "sealchat"
"""The logger whose records go to the file (the GUI's and the library's)."""


class _PrivateRotatingFile(RotatingFileHandler):
    """A rotating log whose files only their owner can read."""

    def _open(self) -> TextIO:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(self.baseFilename, flags, KEY_FILE_MODE)
        if os.name == "posix":
            os.fchmod(fd, KEY_FILE_MODE)  # also a file made earlier under a looser umask
        return os.fdopen(fd, "a", encoding="utf-8")


def default_log_dir() -> Path:
    return Path(platformdirs.user_log_dir("sealchat", appauthor=False))


def log_to_file(folder: Path | None = None) -> Path | None:
    """Send records of level INFO and above from the ``sealchat`` loggers to ``gui.log`` in
    ``folder`` (default: the user's log folder); returns the file's path, or None if it cannot
    be written there (the records then go to standard error, as without a log file)."""
    folder = folder or default_log_dir()
    try:
        ensure_private_dir(folder)
        handler = _PrivateRotatingFile(folder / "gui.log", maxBytes=LOG_LIMIT, backupCount=1)
    except OSError as exc:
        logging.getLogger(LOGGER).warning("cannot keep a log file in %s: %s", folder, exc)
        return None
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger(LOGGER)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return Path(handler.baseFilename)
