"""Checks made on this computer before anything goes to the server: ports that are none,
names longer than the protocol allows, room names that cannot be one, text that cannot go
in a message, and files that cannot be shared."""

from __future__ import annotations

import argparse
import os
import re
from fractions import Fraction
from pathlib import Path

from sealchat.cli.exit_codes import USAGE
from sealchat.core import LocalProtocolError, Message
from sealchat.core.codec import encode_record
from sealchat.core.hub.names import room_problem
from sealchat.core.limits import MAX_ROOM, MAX_UINT, MAX_USERNAME
from sealchat.transports.pinning import is_port


def port(text: str) -> int:
    """The TCP port of a server to connect to, given on the command line (argparse's type)."""
    return _port(text, any_free=False)


def listening_port(text: str) -> int:
    """The TCP port a server listens on, given on the command line (argparse's type); 0
    means any free one."""
    return _port(text, any_free=True)


def _port(text: str, *, any_free: bool) -> int:
    """``text`` as a port from 1 to 65535 (or 0, if ``any_free``); else argparse's error,
    which says what to give."""
    if is_port(text) or (any_free and text == "0"):
        return int(text)
    also = " (or 0 for any free one)" if any_free else ""
    raise argparse.ArgumentTypeError(f"{text!r} is not a port: give a number from 1 to 65535{also}")


MAX_COUNT = 10**9
"""The largest count a limit takes on the command line: far beyond any server's needs, and
within what a rate (a float) holds exactly."""
_COUNT = re.compile(r"[0-9]{1,20}")


def positive(text: str) -> int:
    """A count from 1 to MAX_COUNT given on the command line (argparse's type): a limit of 0
    would turn everyone away."""
    count = int(text.strip()) if _COUNT.fullmatch(text.strip()) else 0
    if 1 <= count <= MAX_COUNT:
        return count
    raise argparse.ArgumentTypeError(
        f"{text!r} is not a count: give a whole number from 1 to {MAX_COUNT:,}"
    )


_SIZE = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([KMGT]?)(?:I?B)?", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def byte_size(text: str) -> int:
    """A size of at least one byte given on the command line (argparse's type): a whole
    number of bytes, or a number of KiB, MiB, GiB or TiB ("500M", "2G", "1.5GiB"; K, M, G and
    T count in 1024s, down to a whole byte), at most the largest size the protocol carries."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a size: give bytes, or a number with K, M, G or T (like 500M or 2G)"
        )
    try:
        exact = Fraction(match[1]) * _UNITS[match[2].upper()]
    except ValueError:  # more digits than Python converts: far out of range
        exact = Fraction(MAX_UINT + 1)
    if not match[2] and exact.denominator != 1:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a whole number of bytes: give bytes, or a number with K, M, G or T"
        )
    if not 1 <= exact <= MAX_UINT:
        raise argparse.ArgumentTypeError(
            f"{text!r} is out of range: give from 1 byte to {MAX_UINT:,} bytes (8 EiB)"
        )
    return int(exact)


class CommandError(Exception):
    """A chat command that cannot run as typed; the message says why and what to do."""

    code = USAGE
    """The exit code it makes ``sealchat chat`` end with, where it counts (a file transfer)."""


def home_expanded(written: str) -> Path:
    """``written`` with a leading ``~`` or ``~user`` expanded; as written if that cannot be
    done but a file has that name (as a shell does); else CommandError."""
    try:
        return Path(written).expanduser()
    except RuntimeError:  # no such user, or no home folder at all
        if os.path.lexists(written):
            return Path(written)
        head = re.split(r"[\\/]", written, maxsplit=1)[0]
        if head == "~":
            raise CommandError(
                f"cannot find your home folder for {written}; give the full path"
            ) from None
        raise CommandError(
            f"there is no user {head[1:]!r} whose home folder {head} could be; "
            f"for your own, write ~/ (as in ~/{written[1:]})"
        ) from None


def path_argument(text: str) -> Path:
    """A path given on the command line (argparse's type), ``~`` expanded as by
    ``home_expanded``: the shell leaves ``--downloads=~/chat`` as written."""
    try:
        return home_expanded(text)
    except CommandError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _check_length(what: str, name: str, limit: int) -> None:
    """CommandError if ``name`` is longer than the protocol allows ``what`` to be."""
    if len(name) > limit:
        raise CommandError(f"{what} is at most {limit} characters; this one has {len(name)}")


def check_names(room: str = "", user: str = "") -> None:
    """CommandError if a room name cannot be one, or a user name is too long to be one (a
    user name that is none is "no such user" to the server)."""
    _check_length("a room name", room, MAX_ROOM)
    _check_length("a user name", user, MAX_USERNAME)
    problem = room_problem(room) if room else None
    if problem is not None:
        raise CommandError(problem)


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be sent as a message, or None: the bytes of a command line that
    are not UTF-8 (Python hands them over as lone surrogates), or anything else that keeps
    the message from being encoded (its length is ``check_text``'s to say)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"the message is not UTF-8 text (at character {exc.start + 1}); write it in UTF-8"
    try:
        encode_record(Message(text=text))
    except LocalProtocolError as exc:
        return f"cannot send this message: {exc}"
    return None


def file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be shared, or None."""
    try:
        if path.is_dir():
            return f"{path} is a folder; only files can be shared"
        if path.is_file():
            with path.open("rb"):  # as the upload will, so that it cannot fail at that
                return None
    except OSError as exc:
        return unreadable(path, exc)
    if os.path.lexists(path):
        return f"{path} is not a regular file (a pipe, a device…); only regular files can be shared"
    return f"no such file: {path}"


def unreadable(path: Path, exc: OSError) -> str:
    """Why the file at ``path`` cannot be shared: reading it failed with ``exc``."""
    return f"cannot read {path}: {exc.strerror or exc}"
