"""An upload or a download of the desktop client, as plain data: what its row shows."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class TransferState(Enum):
    """Where a transfer is: under way, or how it ended."""

    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass
class Transfer:
    """An upload or a download the user started."""

    id: int
    name: str
    upload: bool
    file_id: str = ""
    """The file a download fetches."""
    done: int = 0
    total: int = 0
    state: TransferState = TransferState.RUNNING
    detail: str = ""

    @property
    def fraction(self) -> float:
        if self.total == 0:
            return 1.0 if self.state is TransferState.DONE else 0.0
        return min(1.0, self.done / self.total)

    @property
    def label(self) -> str:
        verb = "Sending" if self.upload else "Receiving"
        if self.state is TransferState.RUNNING:
            return f"{verb} {self.name} — {self.fraction:.0%}"
        if self.state is TransferState.DONE:
            return f"{'Sent' if self.upload else 'Saved'} {self.name}" + (
                f" to {self.detail}" if self.detail else ""
            )
        return f"{self.name}: {self.state.value}" + (f" ({self.detail})" if self.detail else "")
