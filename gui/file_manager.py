"""Showing a folder in the desktop's file manager (where a download was saved)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def show_folder(folder: Path) -> None:
    """Open ``folder`` in the file manager, without waiting for it. The folder, never a file
    in it: opening what a peer sent could run it. Raises ``OSError`` if no file manager can
    be started (``xdg-open`` missing, say)."""
    if sys.platform == "win32":
        os.startfile(folder)  # noqa: S606  (a folder: Explorer shows it)
        return
    opener = "open" if sys.platform == "darwin" else "xdg-open"
    subprocess.Popen(  # noqa: S603  (a fixed program, an absolute path, no shell)
        [opener, str(folder.resolve())],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
