"""What ``sealchat chat`` and ``sealchat send`` share: the connection options, the password
and where it came from, the question on first contact with a server, and running a
session with its failures explained."""

from __future__ import annotations

import argparse
import getpass
import os
import shlex
import stat
import sys
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import NamedTuple, TypeVar

import trio

from sealchat.cli.checks import CommandError, check_names, path_argument, port
from sealchat.cli.exit_codes import FAILED, error, explain_failure
from sealchat.cli.prompts import typed_twice
from sealchat.core.limits import MAX_PASSWORD
from sealchat.transports.pinning import ServerKeyChanged, ServerKeyUnknown
from sealchat.transports.requests import ClientError
from sealchat.transports.trio_client import ChatClient, connect

T = TypeVar("T")


def connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--port", type=port, default=7878, help="the server's TCP port (default 7878)"
    )
    parser.add_argument("--user", default=_login_name(), help="user name (default: yours here)")
    parser.add_argument(
        "--password-file",
        type=path_argument,
        help="read the password from this file (or set SEALCHAT_PASSWORD; "
        "otherwise you are asked without echo)",
    )


def _login_name() -> str:
    """This computer's name for the user running the command (on every platform), or ""."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return ""


class Credentials(NamedTuple):
    password: str
    password_from: str
    """Where the password came from, "" if typed in (a refused login names it)."""
    interactive: bool
    """Whether a person can be asked things."""

    def __repr__(self) -> str:
        """Never the password (a log line or a traceback's locals may show this)."""
        return (
            "Credentials(password=<hidden>, "
            f"password_from={self.password_from!r}, interactive={self.interactive!r})"
        )


def credentials_from(args: argparse.Namespace, *, new_account: bool = False) -> Credentials | None:
    """The password, where it came from, and whether a person can be asked things; or None
    (already explained). For a ``new_account``, a password typed in is typed twice."""
    if not args.user:
        error("give --user")
        return None
    try:
        check_names(user=args.user)  # before a password is asked for a name that cannot be
    except CommandError as exc:
        error(str(exc))
        return None
    interactive = sys.stdin is not None and sys.stdin.isatty()  # None: started with it closed
    given = _password(args, interactive, new_account)
    if given is None:
        return None
    if len(given[0]) > MAX_PASSWORD:
        error(f"the password is longer than {MAX_PASSWORD} characters")
        return None
    return Credentials(*given, interactive)


def _password(
    args: argparse.Namespace, interactive: bool, new_account: bool
) -> tuple[str, str] | None:
    """The password and where it came from ("" if typed in), or None (already explained)."""
    if args.password_file is not None:
        try:
            path = Path(args.password_file)
            text = path.read_text(encoding="utf-8-sig")  # as Windows Notepad saves UTF-8, too
            _warn_if_others_can_read(path)
            return text.rstrip("\n"), f"--password-file {args.password_file}"
        except OSError as exc:
            error(f"cannot read {args.password_file}: {exc.strerror}")
        except UnicodeDecodeError:
            error(f"{args.password_file} is not UTF-8 text; save the password in UTF-8")
        return None
    if "SEALCHAT_PASSWORD" in os.environ:
        return os.environ["SEALCHAT_PASSWORD"], "SEALCHAT_PASSWORD"
    if interactive:
        try:
            typed = _typed(args.user, new_account)
        except EOFError:
            error("no password given (the input ended)")
            return None
        return None if typed is None else (typed, "")
    error(
        "no password: use --password-file or SEALCHAT_PASSWORD "
        "(standard input is not a terminal, so nobody can be asked)"
    )
    return None


def _typed(user: str, new_account: bool) -> str | None:
    """The password typed in without echo: twice for a new account (None, said, if the two
    differ)."""
    if not new_account:
        return getpass.getpass(f"password for {user}: ")
    password = typed_twice(f"new password for {user}: ")
    if password is None:
        error("the passwords differ; no account was created")
    return password


def _warn_if_others_can_read(path: Path) -> None:
    """Warn, as ssh does for a key, when users other than its owner may read the password
    file (it is still used: nothing is lost by going on)."""
    mode = path.stat().st_mode
    if os.name == "posix" and stat.S_ISREG(mode) and mode & 0o044:
        error(
            f"warning: others on this computer can read {path}; "
            f"make it private with: chmod 600 {shlex.quote(str(path))}"
        )


def asker(
    interactive: bool, until: trio.Event | None = None
) -> Callable[[str, str], Awaitable[bool]] | None:
    """On first contact, ask on the terminal (never when standard input is not one), until
    ``until`` is set: from then on (the chat reads its commands from standard input, which
    would take the answer as a message) a new key is not trusted."""
    if not interactive:
        return None

    async def ask(server: str, fp: str) -> bool:
        if until is not None and until.is_set():
            return False

        def prompt() -> str:
            """Ask on standard error, so that the question never ends up in the output;
            the answer is "" at the end of input, which means no."""
            sys.stderr.write(
                f"The server {server} is new to this computer. Its key fingerprint is\n"
                f"    {fp}\n"
                "Check it with the server's operator before you trust it.\n"
                "Trust this server and remember it? [y/N] "
            )
            sys.stderr.flush()
            return sys.stdin.readline()

        answer = await trio.to_thread.run_sync(prompt, abandon_on_cancel=True)
        return answer.strip().lower() in ("y", "yes")

    return ask


def one_shot(
    args: argparse.Namespace, interactive: bool
) -> AbstractAsyncContextManager[ChatClient]:
    """The connection of a command that does one thing and shows nothing that arrives
    (``sealchat send``, ``sealchat passwd``): no reconnecting, and what arrives stays unread
    for the user's own client."""
    return connect(
        args.host,
        args.port,
        confirm_new_key=asker(interactive),
        reconnect=False,
        acknowledge=False,
    )


def run_session(main: Callable[[], Awaitable[int]], credentials: Credentials) -> int:
    """Run ``main`` under trio, its failures explained; Ctrl-C raises KeyboardInterrupt (see
    ``run_trio``)."""
    try:
        return run_trio(main)
    except BrokenPipeError:
        raise  # the output was closed, not a failure to explain: guarded ends quietly
    except (ClientError, ServerKeyChanged, ServerKeyUnknown, OSError) as exc:
        code, message = explain_failure(exc, credentials.password_from)
        error(message)
        return code
    except trio.TooSlowError:
        error("the server did not answer in time")
        return FAILED


def run_trio(main: Callable[[], Awaitable[T]]) -> T:
    """``trio.run(main)`` with Ctrl-C raised in the main task at its next checkpoint, as a
    cancellation is. By default trio raises it in whatever code runs when it comes, even
    inside trio's own bookkeeping: in ``nursery.start_soon`` it can leave the nursery a
    child that never runs, so that leaving the nursery waits forever (a chat interrupted
    right after logging in hung so), and in a task of the client it can cut an update in
    two. The commands wait only at checkpoints (a blocking read or hash runs in a thread
    abandoned on cancel), so Ctrl-C still ends them at once."""
    return trio.run(main, restrict_keyboard_interrupt_to_checkpoints=True)
