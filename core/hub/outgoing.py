"""The records the hub sends, built: replies, errors, pages of lists, stored messages."""

from __future__ import annotations

from typing import Generic, TypeVar

import msgspec

from sealchat.core import limits
from sealchat.core.hub.effects import Deliver
from sealchat.core.hub.session import Session
from sealchat.core.hub.store import Store, StoredFile, StoredMessage
from sealchat.core.records import Error, FileInfo, Message, Record

_PAGE_BYTES = limits.MAX_RECORD - 1024  # leaves room for the record's other fields
_encoder = msgspec.msgpack.Encoder()
T = TypeVar("T")


def reply(state: Session, record: Record) -> Deliver:
    """``record`` to the session ``state`` only."""
    return Deliver((state.id,), record)


def error(state: Session, code: str, detail: str, ref: str) -> Deliver:
    """An Error record to the session ``state``, ``ref`` cut to the longest id."""
    return Deliver((state.id,), Error(code=code, detail=detail, ref=ref[: limits.MAX_ID]))


def file_info(file: StoredFile) -> FileInfo:
    return FileInfo(file_id=file.file_id, name=file.name, size=file.size, sha256=file.sha256)


def message_record(store: Store, stored: StoredMessage) -> Message:
    """The Message record of a stored message (with its file's details, if it has one)."""
    info = None
    if stored.file_id:
        file = store.get_file(stored.file_id)
        if file is not None:
            info = file_info(file)
    return Message(
        text=stored.text,
        room=stored.room,
        to=stored.to,
        client_id=stored.client_id,
        id=stored.id,
        sender=stored.sender,
        ts=stored.ts,
        file=info,
    )


class Page(Generic[T]):
    """The items of one list-carrying record: at most MAX_LIST and, encoded, well under
    MAX_RECORD bytes together."""

    def __init__(self) -> None:
        self.items: list[T] = []
        self._size = 0

    def add(self, item: T) -> bool:
        """Add ``item`` if it fits (the first one always does); whether it did."""
        size = len(_encoder.encode(item))
        if self.items and (len(self.items) == limits.MAX_LIST or self._size + size > _PAGE_BYTES):
            return False
        self.items.append(item)
        self._size += size
        return True


def encoded_size(record: Record) -> int:
    """Bytes of ``record``'s encoding (its frame adds a few more)."""
    return len(_encoder.encode(record))


def pages(items: list[T]) -> list[tuple[list[T], bool]]:
    """``items`` cut into pages that each fit one record (see ``Page``), each with whether
    more follow; one empty page for none."""
    cut: list[Page[T]] = [Page()]
    for item in items:
        if not cut[-1].add(item):
            cut.append(Page())
            cut[-1].add(item)
    return [(p.items, i < len(cut) - 1) for i, p in enumerate(cut)]
