"""An upload or a download of the desktop client, as plain data: what its row shows."""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path


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
    waiting: bool = False
    """The link is down: a running transfer goes on once the client has reconnected."""

    @property
    def fraction(self) -> float:
        if self.total == 0:
            return 1.0 if self.state is TransferState.DONE else 0.0
        return min(1.0, self.done / self.total)

    @property
    def saved_to(self) -> Path | None:
        """Where a finished download was saved (None for anything else)."""
        if self.upload or self.state is not TransferState.DONE or not self.detail:
            return None
        return Path(self.detail)

    @property
    def label(self) -> str:
        """What the transfer's row says: "Sending notes.txt — 40%", "Saved to …/notes.txt"."""
        return "".join(self.label_parts)

    @property
    def label_parts(self) -> tuple[str, str, str]:
        """The :attr:`label` as what comes before a file name, the name, and what comes
        after it (a row too narrow for the label shortens the name first)."""
        if self.state is TransferState.RUNNING:
            verb = "Sending" if self.upload else "Receiving"
            waiting = ", waiting for the connection" if self.waiting else ""
            return f"{verb} ", self.name, f" — {self.fraction:.0%}{waiting}"
        if self.state is TransferState.DONE and self.upload:
            return "Sent ", self.name, ""
        if self.saved_to is not None:  # the folder, then the name it was saved under
            saved_as = os.path.basename(self.detail)
            return f"Saved to {self.detail[: len(self.detail) - len(saved_as)]}", saved_as, ""
        if self.state is TransferState.DONE:
            return "Saved ", self.name, ""
        return "", self.name, f": {self.state.value}" + (f" ({self.detail})" if self.detail else "")
