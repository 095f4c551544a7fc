"""Small text helpers of the desktop client: a typed text trimmed, a line of a message and a
file link as shown, and the wording for what went wrong."""

from __future__ import annotations

import math
import re
from collections.abc import Callable

from sealchat.core import FileInfo
from sealchat.core.hub.names import room_problem
from sealchat.core.limits import MAX_ROOM
from sealchat.core.sizes import shown_size
from sealchat.transports.requests import LoginFailed
from sealchat.transports.shown_text import escaped, escaped_message


def without_blank_ends(text: str) -> str:
    """``text`` without its blank first and last lines; the rest, and the indentation of
    its first line (pasted code), stay as typed. Blank text gives ""."""
    lines = text.split("\n")
    while lines and not lines[0].strip():
        del lines[0]
    while lines and not lines[-1].strip():
        del lines[-1]
    return "\n".join(lines)


def shown_line(line: str) -> str:
    """One line of a peer's message as shown: escaped, but tabs stay tabs (pasted code)."""
    return "\t".join(escaped_message(part) for part in line.split("\t"))


def file_label(info: FileInfo) -> str:
    shown = shown_size(info.size, byte_unit="bytes")
    return f"\u2913 {escaped(info.name)} ({shown}) — click to download"


ELLIPSIS = "\u2026"
SHORTEST_NAME = 12
"""Characters of a file name kept, at least, when a text is shortened in its name (with
fewer, the whole text is shortened instead)."""


def elided(text: str, keep: int) -> str:
    """``text`` with its middle replaced by "…", so that ``keep`` of its characters remain:
    its start and its end (a file name's extension). Whole if it has no more than ``keep``."""
    if len(text) <= keep:
        return text
    tail = keep // 2
    return text[: keep - tail] + ELLIPSIS + text[len(text) - tail :]


def fitted(before: str, name: str, after: str, fits: Callable[[str], bool]) -> str:
    """``before + name + after`` if it ``fits``; otherwise with as little of the middle of
    ``name`` taken out as makes it fit (what is around the name stays whole: a folder, a
    percentage); if the name cannot keep :data:`SHORTEST_NAME` characters, the whole text
    shortened in its middle."""
    whole = before + name + after
    if fits(whole):
        return whole
    kept = _most_kept(len(name), lambda keep: fits(before + elided(name, keep) + after))
    if kept >= min(SHORTEST_NAME, len(name) - 1):
        return before + elided(name, kept) + after
    return elided(whole, _most_kept(len(whole), lambda keep: fits(elided(whole, keep))))


def _most_kept(length: int, fits: Callable[[int], bool]) -> int:
    """The most characters, fewer than ``length``, for which ``fits`` holds (if it holds for
    some number, it holds for fewer); 0 if it holds for none."""
    low, high = 0, length - 1
    while low < high:
        middle = (low + high + 1) // 2
        if fits(middle):
            low = middle
        else:
            high = middle - 1
    return low


def too_long(what: str, text: str, limit: int) -> str:
    """What to tell a user whose ``what`` ("user name", "room name"…) ``text`` is over
    ``limit`` characters (a limit of the protocol, ``core.limits``); "" if it fits."""
    if len(text) <= limit:
        return ""
    return f"This {what} has {len(text)} characters; at most {limit} are allowed. Shorten it."


def room_name_problem(room: str) -> str:
    """What to tell a user whose room name ``room`` (lowercased already: the window does
    that, so case is never the problem) the server would refuse; "" if it would not."""
    problem = too_long("room name", room, MAX_ROOM)
    if not problem and room_problem(room):
        problem = (
            f"A room name is up to {MAX_ROOM} letters (a to z), digits, '.', '_' or '-', "
            "starting with a letter or digit."
        )
    return problem


def friendly(error: str) -> str:
    """Plain wording for what went wrong (on the login form and in the chat's banner)."""
    lowered = error.lower()
    if lowered.startswith("cannot send this"):  # refused before it went (core.codec's checks)
        if " in state " in lowered:
            return "The connection is not ready for this yet; try again in a moment."
        limit = re.search(r"length <= (\d+)", error)
        if limit:
            return (
                f"Something you entered is too long: at most {limit[1]} characters fit. Shorten it."
            )
        return "Something you entered cannot be sent as it is; change it and try again."
    if "invalid username or password" in lowered:
        return "Wrong user name or password."
    if "too many failed attempts" in lowered:
        return "Too many failed attempts."  # refusal says when to try again
    if "cannot reach" in lowered:
        return "The server cannot be reached. Check the address and port, and that it runs."
    stays = re.fullmatch(r"everyone stays in (\S+)", error)  # core.hub.rooms: cannot_leave
    if stays:
        return f"You cannot leave #{stays[1]}: everyone on this server stays in it."
    if "different protocol versions" in lowered or "version mismatch" in lowered:
        return f"This app and the server speak different protocol versions. ({error})"
    return error[:1].upper() + error[1:]


def refusal(refused: LoginFailed) -> str:
    """Login-screen wording for a refused login, saying once when to try again."""
    text = friendly(str(refused))
    if refused.retry_after and "try again" not in text.lower():
        text += f" Try again in {math.ceil(refused.retry_after)} s."
    return text
