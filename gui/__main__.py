"""``python -m sealchat.gui``: the desktop client."""

import sys

from sealchat.gui.app import run_gui

sys.exit(run_gui())
