"""What the benchmarks share: their sizes and progress lines, medians over repeated runs, and
one table."""

from __future__ import annotations

import os
import statistics
import struct
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

HOST = "127.0.0.1"
"""The only address the client and server benchmarks touch."""
ROOM = "general"
PASSWORD = "correct horse battery"
TEXT = "benchmark " * 10
"""The 100-character message body."""
LENGTH = struct.Struct(">I")
"""The 4-byte length prefix of a frame (sealchat's, and the baselines' that imitate it)."""


def flag(name: str) -> bool:
    """Whether ``SEALCHAT_BENCH_<name>`` is set to anything but "" or "0"."""
    return os.environ.get(f"SEALCHAT_BENCH_{name}", "") not in ("", "0")


QUICK = flag("QUICK")
"""``SEALCHAT_BENCH_QUICK=1``: every size (see ``sizes``) takes its quick value."""


def sizes(table: Mapping[str, tuple[int, int]]) -> Callable[[str], int]:
    """The sizes of a section, ``table[name]`` a pair (full, quick): a function of ``name``
    giving ``SEALCHAT_BENCH_<name>`` if set, otherwise the full or quick value."""

    def size(name: str) -> int:
        full, quick = table[name]
        return int(os.environ.get(f"SEALCHAT_BENCH_{name}", quick if QUICK else full))

    return size


class Progress:
    """Prints progress lines to stderr, ``[<section> bench  12.3 s] message``, the time counted
    from this object's creation; with ``load``, the 1-minute load average follows the time:
    ``[server bench  12.3 s, load  0.8] message``."""

    def __init__(self, section: str, *, load: bool = False) -> None:
        self.section = section
        self.load = load
        self.start = time.monotonic()

    def __call__(self, message: str) -> None:
        when = f"{time.monotonic() - self.start:6.1f} s"
        if self.load:
            when += f", load {os.getloadavg()[0]:4.1f}"
        print(f"[{self.section} bench {when}] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Row:
    """One benchmark line: our rate next to the ceiling it is compared with."""

    name: str
    unit: str
    ours: float
    ceiling: float
    ceiling_name: str
    target: float | None = None

    @property
    def ratio(self) -> float:
        return self.ours / self.ceiling if self.ceiling else float("nan")

    @property
    def verdict(self) -> str:
        if self.target is None:
            return ""
        return "ok" if self.ratio >= self.target else "BELOW TARGET"


def rate(work: Callable[[], int], *, repeats: int = 7) -> float:
    """Median over ``repeats`` runs of (units of work done) / (seconds taken)."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        units = work()
        samples.append(units / (time.perf_counter() - start))
    return statistics.median(samples)


def interleaved(*works: Callable[[], int], repeats: int = 7) -> list[float]:
    """The median rate of each work, measured in turn so that machine noise hits them alike."""
    samples: list[list[float]] = [[] for _ in works]
    for _ in range(repeats):
        for work, rates in zip(works, samples, strict=True):
            rates.append(rate(work, repeats=1))
    return [statistics.median(rates) for rates in samples]


def table(rows: list[Row]) -> str:
    """A Markdown table of the rows."""
    lines = [
        "| benchmark | sealchat | ceiling | ceiling is | ratio | target |",
        "|---|---:|---:|---|---:|---|",
    ]
    for r in rows:
        target = f"≥ {r.target:.0%} {r.verdict}" if r.target is not None else ""
        lines.append(
            f"| {r.name} | {r.ours:,.0f} {r.unit} | {r.ceiling:,.0f} {r.unit} | "
            f"{r.ceiling_name} | {r.ratio:.0%} | {target} |"
        )
    return "\n".join(lines)
