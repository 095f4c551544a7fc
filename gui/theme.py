"""The two themes: dark (dark blue and green) and light (white and black)."""

from __future__ import annotations

from typing import Final

PALETTES: Final[dict[str, dict[str, str]]] = {
    "dark": {
        "window": "#0b1929",
        "panel": "#112a45",
        "text_bg": "#0d2137",
        "fg": "#e6f1f8",
        "dim": "#8fa7bd",
        "accent": "#27ae60",
        "accent_hover": "#2fbf6b",
        "me": "#5ee39a",
        "sender": "#7cc4ff",
        "file": "#2ecc71",
        "system": "#d4b44a",
        "error": "#ff8080",
        "banner_fg": "#000000",
        "entry": "#163353",
        "mention": "#1d4a35",
    },
    "light": {
        "window": "#ffffff",
        "panel": "#f4f4f4",
        "text_bg": "#ffffff",
        "fg": "#000000",
        "dim": "#555555",
        "accent": "#000000",
        "accent_hover": "#333333",
        "me": "#000000",
        "sender": "#000000",
        "file": "#000000",
        "system": "#444444",
        "error": "#b00020",
        "banner_fg": "#ffffff",
        "entry": "#ffffff",
        "mention": "#e8e8e8",
    },
}
"""Colours by role. Dark is dark blue with green accents; light is white with black. The
banners ("system": reconnecting, "error") have text in "banner_fg", at least 4.5:1 apart; a
message that names the user has the "mention" background, under text still 4.5:1 apart."""

EMOTICONS: Final = (
    ":)",
    ":D",
    ";)",
    ":(",
    ":P",
    ":O",
    "<3",
    "^_^",
    "o_O",
    ":|",
    "B)",
    ":'(",
    "\u263a",
    "\u2639",
    "\u2665",
    "\u2605",
    "\u2600",
    "\u2601",
    "\u2602",
    "\u2603",
    "\u2714",
    "\u2718",
    "\u266a",
    "\u2615",
    "\u26a1",
    "\u270c",
    "\u260e",
    "\u2708",
    "\u263c",
    "\u2764",
    "\u2713",
    "\u2022",
)
"""The emoji picker's choices: text emoticons and Basic Multilingual Plane symbols, which
Tk renders on every platform (characters beyond it can crash Tk 8.6 on X11)."""


def accented(palette: dict[str, str]) -> dict[str, str]:
    """The colours of a button in ``palette``'s accent."""
    return {
        "fg_color": palette["accent"],
        "hover_color": palette["accent_hover"],
        "text_color": palette["window"],
    }


def quiet(palette: dict[str, str]) -> dict[str, str | int]:
    """The colours of a button that ends something (leaving a room, logging out): outlined,
    less prominent than the accented ones that send or join."""
    return {
        "fg_color": "transparent",
        "hover_color": palette["window"],
        "text_color": palette["fg"],
        "text_color_disabled": palette["dim"],
        "border_color": palette["dim"],
        "border_width": 1,
    }
