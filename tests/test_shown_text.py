"""What is never shown or saved as it is: controls, bidi and other format characters, lone
surrogates, line separators — while everything a language or an emoji needs stays."""

from __future__ import annotations

import pytest

from sealchat.transports.shown_text import escaped, hidden


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("\x1b]0;owned\x07", "\\x1b]0;owned\\x07"),  # would retitle a terminal
        ("invoice\u202egpj.exe", "invoice\\u202egpj.exe"),  # would read as invoiceexe.jpg
        ("a\u2066b\u200fc\ufeff", "a\\u2066b\\u200fc\\ufeff"),
        ("c1\x9b\x85", "c1\\x9b\\x85"),
        ("line\u2028break", "line\\u2028break"),
        ("\ud800", "\\ud800"),
        ("\U000e0001tag", "\\U000e0001tag"),
    ],
)
def test_hidden_characters_are_written_as_escapes(text: str, shown: str) -> None:
    assert escaped(text) == shown


@pytest.mark.parametrize(
    "text",
    [
        "plain text, with punctuation: 100% (ok)",
        "\u0645\u06cc\u200c\u062e\u0648\u0627\u0645",  # Persian, with a zero-width non-joiner
        "\U0001f469\u200d\U0001f4bb",  # an emoji sequence, with a zero-width joiner
        "\u05e9\u05dc\u05d5\u05dd and \u4f60\u597d",  # right-to-left and CJK letters
    ],
)
def test_what_languages_and_emoji_need_is_kept(text: str) -> None:
    assert escaped(text) == text
    assert not any(hidden(c) for c in text)


def test_no_hidden_character_counts_as_printable() -> None:
    # escaped() returns printable text untouched: this must hold for every code point.
    printable_hidden = [
        hex(code) for code in range(0x110000) if hidden(chr(code)) and chr(code).isprintable()
    ]
    assert printable_hidden == []
