"""``python -m sealchat``: the same as the ``sealchat`` command."""

import sys

from sealchat.cli.main import main

sys.exit(main())
