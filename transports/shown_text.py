"""Characters that must not reach a reader as they are: text from the network (names, messages,
reasons) is shown, and file names are saved, without them.

Control characters (C0, DEL, C1) drive terminals; format characters (bidi overrides, isolates,
invisible marks) reorder or hide what is shown, so that ``invoice\\u202egpj.exe`` reads as
``invoiceexe.jpg``; lone surrogates cannot be encoded; line and paragraph separators start a
line a peer could dress up as someone else's. The zero-width joiner and non-joiner are format
characters that words (Persian, Indic scripts) and emoji sequences need, and harmless: kept.

A message's text (:func:`escaped_message`) also keeps the few format characters that writing
needs and that reorder nothing: the soft hyphen, the directional marks (LRM, RLM, ALM), the
word joiner, and the tag characters of a subdivision flag. Names, file names above all, keep
the strict rule: there an invisible mark only makes one name pass for another.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

from sealchat.core import Message

_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_JOINERS = frozenset("\u200c\u200d")
_WRITING_MARKS = frozenset("\u00ad\u061c\u200e\u200f\u2060")
"""Soft hyphen, Arabic letter mark, left-to-right and right-to-left marks, word joiner."""
_SUBDIVISION_FLAG = re.compile(
    "(\U0001f3f4[\U000e0030-\U000e0039\U000e0061-\U000e007a]{2,6}\U000e007f)"
)
"""A subdivision flag (``gbsct``): the black flag, 2 to 6 tag letters or digits, and the
cancel tag that ends it. Its tag characters are the only ones a message shows as they are."""


def hidden(char: str) -> bool:
    """Whether ``char`` must not be shown or saved as it is."""
    return unicodedata.category(char) in _HIDDEN_CATEGORIES and char not in _JOINERS


def escaped(text: str) -> str:
    """``text`` with every such character written as an escape (``\\x1b``, ``\\u202e``)."""
    if text.isprintable():  # none of them is printable: most text is done in one C call
        return text
    return _escape_where(text, hidden)


def escaped_message(text: str) -> str:
    """A message's ``text`` as shown: like :func:`escaped`, but the marks that writing needs
    stay, and so do well-formed subdivision flags (any other tag character is escaped: after
    a black flag, invisible text could hide in them)."""
    if text.isprintable():
        return text
    parts = _SUBDIVISION_FLAG.split(text)  # the flags at odd indices (the pattern is a group)
    return "".join(
        part if n % 2 else _escape_where(part, _hidden_in_writing) for n, part in enumerate(parts)
    )


def _escape_where(text: str, escapes: Callable[[str], bool]) -> str:
    """``text`` with the characters for which ``escapes`` is true written as escapes."""
    return "".join(_escape(c) if escapes(c) else c for c in text)


def _hidden_in_writing(char: str) -> bool:
    """Whether a message escapes ``char`` (outside a subdivision flag)."""
    return hidden(char) and char not in _WRITING_MARKS


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def names_user(message: Message, user: str) -> bool:
    """Whether ``message`` is another's that names ``user`` (see :func:`mentions`): the
    messages both clients make stand out. One's own never does."""
    return message.sender.lower() != user.lower() and mentions(message.text, user)


def mentions(text: str, name: str) -> bool:
    """Whether the message ``text``, as shown (:func:`escaped_message`), names the user
    ``name`` (as "alice", "@Alice" or "ALICE:"): the whole name, in any case, not within a
    longer word or name ("malice", "alice.b", "alice..b"), nor joined to one by a soft
    hyphen or a combining mark that the reader would not see apart."""
    if not name:
        return False
    # A name is letters, digits, '.', '_' and '-': none of those may touch it, and a '.'
    # after it ends a sentence only if no other letter of a name follows.
    word = rf"(?<![\w.\-\u00ad]){re.escape(name)}(?![\w\-\u00ad\u0300-\u036f]|\.[.\-]*\w)"
    return re.search(word, escaped_message(text), re.IGNORECASE) is not None
