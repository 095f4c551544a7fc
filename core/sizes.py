"""Amounts as people read them (sizes in bytes, counts of things, waits): in the server's
refusals and in both clients."""

from __future__ import annotations

import math


def shown_size(size: int, *, byte_unit: str = "B") -> str:
    """``size`` bytes as people read it: whole bytes below 1 KiB, then KiB, MiB or GiB with one
    decimal ("5 B", "2.0 KiB", "1.5 GiB")."""
    if size < 1024:
        return f"{size} {byte_unit}"
    amount = size / 1024
    for unit in ("KiB", "MiB"):
        if round(amount, 1) < 1024:  # 1,048,575 bytes are "1.0 MiB", not "1024.0 KiB"
            return f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{amount:.1f} GiB"


def too_large(size: int, limit: int) -> str:
    """Why a file of ``size`` bytes is refused over the server's ``limit``: both as people
    read them ("3.0 GiB"), or in bytes where the rounding would show them the same. The
    server's refusal says it, and so do the clients that know the limit beforehand."""
    shown, most = shown_size(size), shown_size(limit)
    if shown == most:
        shown, most = f"{size:,} bytes", f"{limit:,} bytes"
    return f"file too large: {shown}; the limit is {most}"


def counted(count: int, noun: str) -> str:
    """``count`` and ``noun``, plural unless there is exactly one ("1 member", "2 members")."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def shown_wait(seconds: float) -> str:
    """A wait as people read it, rounded up: seconds up to 90, then minutes up to 90, then
    hours ("45 s", "12 min", "3 h")."""
    if seconds <= 90:
        return f"{math.ceil(seconds)} s"
    if seconds <= 90 * 60:
        return f"{math.ceil(seconds / 60)} min"
    return f"{math.ceil(seconds / 3600)} h"
