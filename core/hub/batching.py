"""How many received records one hub call takes: enough to share a commit, never so many
that their replies pile up.

A server hands the hub the records one read brought, in batches. Most records are answered with a
few bytes (an acknowledgement, an error), but some with a page of history or a list (of rooms,
members, files, read markers), and an acknowledged replay page with the next page of missed
messages: a few kilobytes of such requests, sent without reading the answers, would make one call
build hundreds of megabytes. So a batch ends after such a record, and after MAX_BATCH
records; and a server hands over the next batch only once the peer has read its earlier
replies down to ``ServerConfig.reply_window``.
"""

from __future__ import annotations

from typing import Final

from sealchat.core.records import (
    Delivered,
    HistoryRequest,
    JoinRoom,
    ListFiles,
    ListMembers,
    ListReadMarkers,
    ListRooms,
    Record,
)

MAX_BATCH: Final = 256
"""Records per hub call at most (one commit for all of them)."""
_LARGE_REPLIES: Final = (
    HistoryRequest,
    ListRooms,
    ListMembers,
    ListFiles,
    ListReadMarkers,
    JoinRoom,
    Delivered,
)


def ends_batch(record: Record, size: int) -> bool:
    """Whether a batch of ``size`` records whose last is ``record`` goes to the hub now."""
    return size >= MAX_BATCH or isinstance(record, _LARGE_REPLIES)
