"""The ``sealchat`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sealchat import __version__
from sealchat.cli.client_cmd import add_client_commands
from sealchat.cli.server_cmd import add_server_commands


def _demo(_args: argparse.Namespace) -> int:
    from sealchat.cli.demo import run_demo

    return run_demo()


def _gui(_args: argparse.Namespace) -> int:
    from sealchat.gui.app import run_gui

    return run_gui()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sealchat", description="sealchat: a small self-hosted secure chat"
    )
    parser.add_argument("--version", action="version", version=f"sealchat {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser(
        "demo", help="run a Noise XX handshake and a short session between two in-memory peers"
    )
    demo.set_defaults(handler=_demo)
    add_server_commands(commands)
    add_client_commands(commands)
    gui = commands.add_parser("gui", help="open the desktop client")
    gui.set_defaults(handler=_gui)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = args.handler
    return int(handler(args))


if __name__ == "__main__":
    sys.exit(main())
