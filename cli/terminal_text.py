"""Text that came from the network, made safe to print on a terminal.

A peer chooses message texts, user, room and file names, error details and disconnect reasons.
Printed raw, control characters in them would drive the terminal (ESC sequences set the window
title, recolour or clear the screen), bidi and other format characters would reorder what is
shown, and a line break would let a peer print a line that looks like someone else's message.
"""

from __future__ import annotations

import sys
import unicodedata

_UNSAFE = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
"""C0, DEL and C1 controls; format characters (bidi overrides, zero-width ones); lone
surrogates; the Unicode line and paragraph separators."""


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _escaped(line: str) -> str:
    return "".join(_escape(c) if unicodedata.category(c) in _UNSAFE else c for c in line)


def safe(text: str, *, indent: str | None = None) -> str:
    """``text`` with every control, format (bidi), surrogate and line-separator character
    shown as an escape such as ``\\x1b`` or ``\\u202e``.

    With ``indent``, line breaks (``\\n``, ``\\r\\n``) are kept for multi-line text, and each
    line after the first starts with ``indent``, so it cannot pass for a line of its own."""
    if indent is None:
        return _escaped(text)
    lines = text.replace("\r\n", "\n").split("\n")
    return f"\n{indent}".join(_escaped(line) for line in lines)


def tolerant_streams() -> None:
    """Make standard output and error replace what their encoding cannot show (an emoji on a
    cp1252 console), and standard input what it cannot read (bytes that are not text in its
    encoding), instead of raising UnicodeError and ending the program."""
    for stream in (sys.stdin, sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="replace")
