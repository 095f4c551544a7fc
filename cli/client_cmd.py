"""``sealchat chat``, ``sealchat send``, ``sealchat passwd``, ``sealchat fingerprint`` and
``sealchat trust``."""

from __future__ import annotations

import argparse

from sealchat.cli import passwd_cmd
from sealchat.cli.chat_cmd import CHAT_HELP, run_chat
from sealchat.cli.checks import path_argument
from sealchat.cli.exit_codes import EXIT_CODES_HELP, OK, USAGE, error, guarded
from sealchat.cli.login import connection_options
from sealchat.cli.send_cmd import SEND_HELP, run_send
from sealchat.core import fingerprint
from sealchat.transports.keyfile import public_bytes
from sealchat.transports.pinning import KnownServers, is_port, server_name
from sealchat.transports.requests import typed_room
from sealchat.transports.trio_client import client_key


def add_client_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    chat = commands.add_parser(
        "chat",
        help="chat in the terminal",
        description=CHAT_HELP,
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    connection_options(chat)
    chat.add_argument(
        "--downloads", type=path_argument, default=None, help="where /get saves files"
    )
    chat.add_argument(
        "--register",
        action="store_true",
        help="create the account first, then chat as usual (on a server that lets anyone "
        "create one: sealchat server --open-registration); a password typed in is asked twice",
    )
    chat.set_defaults(handler=guarded(run_chat))

    send = commands.add_parser(
        "send",
        help="send one message or file (for scripts and bots)",
        description=SEND_HELP,
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    connection_options(send)
    where = send.add_mutually_exclusive_group()
    where.add_argument(
        "--room", type=typed_room, default="general", help="room to send to (default general)"
    )
    where.add_argument("--to", metavar="USER", help="send a direct message to USER instead")
    send.add_argument(
        "--join",
        action="store_true",
        help="join the room first (creating it if there is none); changes nothing if you are in it",
    )
    what = send.add_mutually_exclusive_group(required=True)
    what.add_argument("text", nargs="?", help="the message")
    what.add_argument("--file", type=path_argument, help="share this file instead of a message")
    send.set_defaults(handler=guarded(run_send))

    passwd = commands.add_parser(
        "passwd",
        help="change your password on a server",
        description=passwd_cmd.DESCRIPTION,
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    connection_options(passwd)
    passwd_cmd.add_options(passwd)
    passwd.set_defaults(handler=guarded(passwd_cmd.run_passwd))

    fp = commands.add_parser("fingerprint", help="print this installation's client key")
    fp.set_defaults(handler=guarded(run_fingerprint))

    trust = commands.add_parser("trust", help="pin a server key given to you out of band")
    trust.add_argument("server", metavar="HOST:PORT")
    trust.add_argument("fingerprint", metavar="SHA256:…")
    trust.set_defaults(handler=guarded(run_trust))


def run_fingerprint(_args: argparse.Namespace) -> int:
    print(fingerprint(public_bytes(client_key())))
    return OK


def run_trust(args: argparse.Namespace) -> int:
    host, sep, port = args.server.rpartition(":")
    if not sep or not host:
        error("give the server as HOST:PORT, e.g. chat.example.org:7878")
        return USAGE
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        # 2001:db8::1 would be host 2001:db8: and port 1, a server no connection names
        error("write an IPv6 address as [ADDR]:PORT, e.g. [2001:db8::1]:7878")
        return USAGE
    # A bad port is left for pin() to explain.
    name = server_name(host.strip("[]"), int(port)) if is_port(port) else args.server
    try:
        KnownServers().pin(name, args.fingerprint)
    except ValueError as exc:  # says what is malformed, and how it should look
        error(str(exc))
        return USAGE
    except OSError as exc:  # the pin file cannot be used as it is
        error(f"cannot pin {name}: {exc}")
        return USAGE
    print(f"pinned {name} to {args.fingerprint}")
    return OK
