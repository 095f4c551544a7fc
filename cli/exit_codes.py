"""How the client commands end: their exit codes, failures explained on standard error,
and the guard that turns what is no bug (Ctrl-C, a closed output, a bad settings file)
into a quiet exit code."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from functools import wraps
from math import ceil

from sealchat.cli.terminal_text import safe, tolerant_streams
from sealchat.core.records import ACCOUNT_REMOVED, NAME_TAKEN
from sealchat.transports.keyfile import KeyFileError
from sealchat.transports.pinning import ServerKeyChanged, ServerKeyUnknown, UnsafePinFile
from sealchat.transports.requests import (
    LoginFailed,
    MessageTooLong,
    PasswordNotChanged,
    TransferFailed,
)
from sealchat.transports.trio_client import ConnectionLost, Unreachable

# Exit codes (chat uses them too, when it cannot start or the session ends on a failure).
OK, FAILED, USAGE, UNREACHABLE, UNTRUSTED, LOGIN_FAILED, REFUSED, LOST = 0, 1, 2, 3, 4, 5, 6, 7
INTERRUPTED, OUTPUT_CLOSED = 130, 141
EXIT_CODES = {
    OK: "done",
    FAILED: "something else failed, as saving a download (the message says what)",
    USAGE: "wrong arguments, or a local problem (password, key file, known_servers, file)",
    UNREACHABLE: "the server cannot be reached",
    UNTRUSTED: "the server's key is unknown or has changed (see 'sealchat trust')",
    LOGIN_FAILED: "the login was refused",
    REFUSED: "the message, the file or the new password was refused: by the server, or as too "
    "long for one message or too big for the server's limit",
    LOST: "the connection was lost",
    INTERRUPTED: "interrupted (Ctrl-C)",
    OUTPUT_CLOSED: "the output was closed (as by '| head'); like a program ended by SIGPIPE",
}
EXIT_CODES_HELP = "exit codes:\n" + "\n".join(f"  {c:<3} {what}" for c, what in EXIT_CODES.items())


class RegistrationRefused(LoginFailed):
    """The server would not create the account (``sealchat chat --register``)."""


def guarded(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """``handler`` with output that never fails on encoding, a quiet exit on Ctrl-C or when
    the output is closed, and local configuration problems explained instead of shown as
    tracebacks."""

    @wraps(handler)
    def run(args: argparse.Namespace) -> int:
        tolerant_streams()
        try:
            return handler(args)
        except KeyboardInterrupt:
            return INTERRUPTED
        except BrokenPipeError:
            return _output_closed()
        except BaseExceptionGroup as group:
            if group.subgroup(KeyboardInterrupt) is not None:
                return INTERRUPTED
            if group.subgroup(BrokenPipeError) is not None:
                return _output_closed()
            raise
        except KeyFileError as exc:
            error(str(exc))
        except OSError as exc:  # a settings file this user cannot use (the key, the pins)
            error(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc))
        return USAGE

    return run


def _output_closed() -> int:
    """Whoever read standard output went away (``sealchat chat | head -1``): point it at
    the null device, so that the flush when Python exits fails no more, and end quietly."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return OUTPUT_CLOSED


def error(message: str) -> None:
    """Say on standard error what went wrong (``message`` may hold text from the network)."""
    print(f"sealchat: {safe(message)}", file=sys.stderr, flush=True)


def explain_failure(exc: BaseException, password_from: str = "") -> tuple[int, str]:
    """An exit code and a message saying what went wrong and what to do (``password_from``:
    where the password came from, if not typed in)."""
    if isinstance(exc, ServerKeyChanged | ServerKeyUnknown):
        return UNTRUSTED, str(exc)
    if isinstance(exc, RegistrationRefused):
        yours = (
            " (if it is yours, leave out --register to log in)" if str(exc) == NAME_TAKEN else ""
        )
        return LOGIN_FAILED, f"the account was not created: {exc}{yours}{_when(exc)}"
    if isinstance(exc, LoginFailed):
        if exc.retry_after:
            return LOGIN_FAILED, f"login refused: {exc}{_when(exc)}"
        # No password helps a removed account: where it came from would only mislead.
        helps = password_from and str(exc) != ACCOUNT_REMOVED
        hint = f" (the password came from {password_from})" if helps else ""
        return LOGIN_FAILED, f"login refused: {exc}{hint}"
    if isinstance(exc, PasswordNotChanged):
        return REFUSED, f"the password was not changed: {exc}"
    if isinstance(exc, TransferFailed) and isinstance(exc.__context__, OSError | ValueError):
        return FAILED, f"failed on this computer: {exc}"  # the disk or a check, not the server
    if isinstance(exc, TransferFailed | MessageTooLong):
        return REFUSED, f"refused: {exc}"
    if isinstance(exc, Unreachable):
        return UNREACHABLE, str(exc)
    if isinstance(exc, ConnectionLost):
        return LOST, str(exc)
    if isinstance(exc, UnsafePinFile):
        return USAGE, str(exc)
    return FAILED, str(exc)


def _when(exc: LoginFailed) -> str:
    """When to try again after ``exc``, if the server said (once: its reason may say when
    already), to go after the reason."""
    if not exc.retry_after or "try again" in str(exc).lower():
        return ""
    return f"; try again in {ceil(exc.retry_after)} s"
