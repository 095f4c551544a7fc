"""The records the hub sends, built: replies, errors, pages of lists, stored messages."""

from __future__ import annotations

from typing import TypeVar

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


def pages(items: list[T]) -> list[tuple[list[T], bool]]:
    """``items`` cut into pages that each fit one record (at most MAX_LIST items and, encoded,
    well under MAX_RECORD bytes), each with whether more follow; one empty page for none."""
    cut: list[list[T]] = []
    page: list[T] = []
    size = 0
    for item in items:
        item_size = len(_encoder.encode(item))
        if page and (len(page) == limits.MAX_LIST or size + item_size > _PAGE_BYTES):
            cut.append(page)
            page, size = [], 0
        page.append(item)
        size += item_size
    cut.append(page)
    return [(p, i < len(cut) - 1) for i, p in enumerate(cut)]
