"""``sealchat passwd``: a user changes its own password on a server."""

from __future__ import annotations

import argparse
import sys

from sealchat.cli.exit_codes import OK, USAGE, error
from sealchat.cli.login import credentials_from, one_shot, run_session
from sealchat.cli.prompts import typed_twice
from sealchat.cli.terminal_text import safe
from sealchat.core.limits import MAX_PASSWORD

DESCRIPTION = """\
Change your password on a server. It logs in with your current password (typed in, or from
--password-file or SEALCHAT_PASSWORD), then asks for the new one twice without echo; a
script pipes the new one in with --new-password-stdin. Your other sessions are logged out;
log in there again with the new password."""


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--new-password-stdin",
        action="store_true",
        help="read the new password from the first line of standard input (for scripts)",
    )


def run_passwd(args: argparse.Namespace) -> int:
    """``sealchat passwd``: log in, change the password, say how it went."""
    if not args.new_password_stdin and not (sys.stdin is not None and sys.stdin.isatty()):
        error(
            "standard input is not a terminal, so no new password can be typed; "
            "pipe it in with --new-password-stdin"
        )
        return USAGE
    credentials = credentials_from(args)
    if credentials is None:
        return USAGE
    new = _new_password(args)
    if new is None:
        return USAGE
    password, _, interactive = credentials

    async def main() -> int:
        async with one_shot(args, interactive) as client:
            name = await client.login(args.user, password, announce=False)
            await client.change_password(password, new)
            print(f"changed the password of {safe(name)}; its other sessions were logged out")
            return OK

    return run_session(main, credentials)


def _new_password(args: argparse.Namespace) -> str | None:
    """The new password, from standard input or typed twice; None (said) if there is none."""
    if args.new_password_stdin:
        new = sys.stdin.readline().rstrip("\r\n")
        if not new:
            error("no new password came on standard input; nothing changed")
            return None
    else:
        try:
            typed = typed_twice(f"new password for {args.user}: ")
        except EOFError:
            error("no new password given (the input ended); nothing changed")
            return None
        if typed is None:
            error("the new passwords differ; nothing changed")
            return None
        new = typed
    if len(new) > MAX_PASSWORD:
        error(f"the new password is longer than {MAX_PASSWORD} characters")
        return None
    return new
