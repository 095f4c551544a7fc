"""Characters that must not reach a reader as they are: text from the network (names, messages,
reasons) is shown, and file names are saved, without them.

Control characters (C0, DEL, C1) drive terminals; format characters (bidi overrides, isolates,
invisible marks) reorder or hide what is shown, so that ``invoice\\u202egpj.exe`` reads as
``invoiceexe.jpg``; lone surrogates cannot be encoded; line and paragraph separators start a
line a peer could dress up as someone else's. The zero-width joiner and non-joiner are format
characters that words (Persian, Indic scripts) and emoji sequences need, and harmless: kept.
"""

from __future__ import annotations

import unicodedata

_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_JOINERS = frozenset("\u200c\u200d")


def hidden(char: str) -> bool:
    """Whether ``char`` must not be shown or saved as it is."""
    return unicodedata.category(char) in _HIDDEN_CATEGORIES and char not in _JOINERS


def escaped(text: str) -> str:
    """``text`` with every such character written as an escape (``\\x1b``, ``\\u202e``)."""
    if text.isprintable():  # none of them is printable: most text is done in one C call
        return text
    return "".join(_escape(c) if hidden(c) else c for c in text)


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"
