"""One budget for the output a server holds for all its peers together.

Each peer may hold up to ``max_outgoing_bytes`` before it counts as not reading; with
thousands of peers that alone could take more memory than the machine has (10,000 peers at
8 MiB: 80 GiB). The budget keeps the sum within ``max_outgoing_total``: when a peer's output
grows past it, the peers holding the most are dropped until the sum is back under seven
eighths of the budget (so that the next drop is a while away, and each scan pays for many
records). They are the ones furthest behind; a peer that keeps up holds little.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable
from typing import Generic, TypeVar

H = TypeVar("H", bound=Hashable)
OVER_BUDGET = "holds the most output while the server holds more than max_outgoing_total"
"""What the log says of a peer the budget drops."""


class OutputBudget(Generic[H]):
    """The bytes each holder (a peer) holds, their sum, and who goes when it is too much.
    Thread-safe: the threaded server's peers update it from their own threads."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.total = 0
        self._held: dict[H, int] = {}
        self._shed: set[H] = set()
        """Holders dropped for the budget: what they still report is not counted again."""
        self._lock = threading.Lock()

    def update(self, holder: H, held: int) -> list[H]:
        """``holder`` now holds ``held`` bytes. If that grew it and the sum is past the
        limit, the holders to drop (perhaps ``holder`` itself), largest first: they no longer
        count. The caller drops them (outside any lock of its own that they need)."""
        with self._lock:
            if holder in self._shed:
                return []
            before = self._held.pop(holder, 0)
            if held:
                self._held[holder] = held
            self.total += held - before
            if held <= before or self.total <= self.limit:
                return []
            target = self.limit - self.limit // 8
            victims: list[H] = []
            for victim, size in sorted(self._held.items(), key=lambda item: -item[1]):
                if self.total <= target:
                    break
                victims.append(victim)
                self.total -= size
                del self._held[victim]
                self._shed.add(victim)
            return victims

    def forget(self, holder: H) -> None:
        """``holder`` is gone: nothing it held counts any more."""
        with self._lock:
            self.total -= self._held.pop(holder, 0)
            self._shed.discard(holder)
