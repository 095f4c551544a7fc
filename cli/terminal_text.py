"""Text that came from the network, made safe to print on a terminal.

A peer chooses message texts, user, room and file names, error details and disconnect reasons.
Printed raw, control characters in them would drive the terminal (ESC sequences set the window
title, recolour or clear the screen), bidi and other format characters would reorder what is
shown, and a line break would let a peer print a line that looks like someone else's message.
"""

from __future__ import annotations

import sys

from sealchat.transports.shown_text import escaped, escaped_message


def safe(text: str) -> str:
    """``text`` with every control, format (bidi), surrogate and line-separator character
    shown as an escape such as ``\\x1b`` or ``\\u202e``."""
    return escaped(text)


def safe_message(text: str, *, indent: str) -> str:
    """A message's ``text`` as printed: escaped as by ``safe``, except what writing needs and
    cannot drive the terminal (see ``escaped_message``: the soft hyphen, the directional marks,
    subdivision flags), and tabs (pasted code). Line breaks (``\\n``, ``\\r\\n``) are kept,
    and each line after the first starts with ``indent``, so it cannot pass for a line of its
    own."""
    if text.isprintable():  # most messages: one line, nothing to escape
        return text
    lines = text.replace("\r\n", "\n").split("\n")
    return f"\n{indent}".join(
        "\t".join(escaped_message(part) for part in line.split("\t")) for line in lines
    )


def tolerant_streams() -> None:
    """Make standard output and error replace what their encoding cannot show (an emoji on a
    cp1252 console), and standard input what it cannot read (bytes that are not text in its
    encoding), instead of raising UnicodeError and ending the program."""
    for stream in (sys.stdin, sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="replace")
