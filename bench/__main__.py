"""Run the benchmarks and print one Markdown table: ``python -m bench [section ...]``."""

from __future__ import annotations

import os
import platform
import sys

from bench import client, core, gui, server
from bench.harness import table

SECTIONS = {"core": core.run, "server": server.run, "gui": gui.run, "client": client.run}


def main(argv: list[str]) -> int:
    chosen = argv or list(SECTIONS)
    unknown = [name for name in chosen if name not in SECTIONS]
    if unknown:
        print(f"unknown section(s) {unknown}; choose from {sorted(SECTIONS)}", file=sys.stderr)
        return 2
    rows = [row for name in chosen for row in SECTIONS[name]()]
    print(
        f"Python {platform.python_version()} on {platform.machine()} ({os.cpu_count()} cores); "
        "each row names how it was measured; every ratio compares two measurements of this run\n"
    )
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
