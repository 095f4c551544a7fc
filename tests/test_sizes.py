"""Amounts as people read them (``core.sizes``)."""

from __future__ import annotations

import pytest

from sealchat.core.sizes import counted, shown_size, shown_wait


@pytest.mark.parametrize(
    ("size", "shown"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (1024 * 1024 - 1, "1.0 MiB"),  # rounds up to the next unit, not "1024.0 KiB"
        (5 * 1024 * 1024, "5.0 MiB"),
        (1024**3 - 1, "1.0 GiB"),
        (3 * 1024**3, "3.0 GiB"),
        (2048 * 1024**3, "2048.0 GiB"),
    ],
)
def test_sizes_are_shown_in_the_largest_unit_that_reads_below_1024(size: int, shown: str) -> None:
    assert shown_size(size) == shown


def test_small_sizes_may_be_named_in_bytes() -> None:
    assert shown_size(55, byte_unit="bytes") == "55 bytes"


def test_counts_are_singular_only_for_one() -> None:
    assert [counted(n, "member") for n in (0, 1, 2)] == ["0 members", "1 member", "2 members"]


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0.2, "1 s"), (90, "90 s"), (90.5, "2 min"), (5400, "90 min"), (5401, "2 h"), (86400, "24 h")],
)
def test_waits_are_rounded_up_in_the_unit_that_reads_best(seconds: float, shown: str) -> None:
    assert shown_wait(seconds) == shown
