"""Timing helpers shared by the benchmarks: medians over repeated runs, and one table."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


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


def interleaved(
    ours: Callable[[], int], ceiling: Callable[[], int], repeats: int = 7
) -> tuple[float, float]:
    """Medians of both, measured alternately so that machine noise hits them alike."""
    a, b = [], []
    for _ in range(repeats):
        a.append(rate(ours, repeats=1))
        b.append(rate(ceiling, repeats=1))
    return statistics.median(a), statistics.median(b)


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
