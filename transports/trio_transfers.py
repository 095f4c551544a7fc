"""File transfers of the trio client: one try of an upload or a download each (the client
tries again after a reconnect; each try resumes where the last stopped)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Protocol, TypeVar

import trio

from sealchat.core import (
    FileChunk,
    FileComplete,
    FileInfo,
    FileOffer,
    FileReject,
    Record,
)
from sealchat.core.records import file_chunks
from sealchat.transports import requests
from sealchat.transports.downloads import PartialDownload, sha256_of
from sealchat.transports.requests import (
    REQUEST_TIMEOUT,
    TRANSFER_BLOCK,
    TRANSFER_QUEUE,
    ClientError,
    Reply,
    Request,
    TransferFailed,
)
from sealchat.transports.trio_delivery import CallWaiter, Delivery
from sealchat.transports.trio_link import LinkLost

T = TypeVar("T")
Progress = Callable[[int, int], None]
"""Called with (bytes done, bytes in all) as a transfer advances."""


class Session(Protocol):
    """What transfers use of the client: its calls and its sending."""

    downloads_dir: Path

    async def files(self, *, room: str = "", peer: str = "") -> list[FileInfo]: ...

    async def _ask(self, request: Request[T], timeout: float = ...) -> T: ...

    async def _await(self, waiter: CallWaiter, reply: Reply[T], timeout: float) -> T: ...

    async def _send(self, record: Record) -> None: ...

    async def _send_all(self, records: Iterable[Record], *, wait: bool = True) -> None: ...


@dataclass(slots=True)
class Upload:
    """One ``send_file``, across the tries a lost connection makes it take."""

    path: Path
    size: int
    digest: bytes
    room: str
    to: str
    progress: Progress
    file_id: str = ""
    """The stored file's id, once the server has accepted an offer."""

    def offer(self, transfer: int) -> FileOffer:
        return FileOffer(
            transfer=transfer,
            name=self.path.name,
            size=self.size,
            sha256=self.digest,
            room=self.room,
            to=self.to,
        )


class Transfers:
    """The uploads and downloads of one client. The client's reader hands the records of a
    download to its queue in ``chunks`` (by transfer id) and closes them when the link ends."""

    def __init__(self, session: Session, delivery: Delivery) -> None:
        self._session = session
        self._delivery = delivery
        self._downloading: set[str] = set()
        self._transfers = iter(range(1, 2**62))
        self.chunks: dict[int, trio.MemorySendChannel[Record]] = {}

    async def upload(self, job: Upload) -> FileInfo:
        session = self._session
        path, size, digest, progress = job.path, job.size, job.digest, job.progress
        if job.file_id:  # again after a lost connection: the last try may have finished
            stored = await session.files(room=job.room, peer=job.to)
            done = [f for f in stored if f.file_id == job.file_id]
            if done:  # complete (only those are listed): offering it again would store it twice
                progress(size, size)
                return done[0]
        transfer = next(self._transfers)
        announced: CallWaiter | None = None
        settled = False  # stored, or the link was lost (the server keeps the part it has)
        try:
            reply = await session._ask(requests.upload(job.offer(transfer)))
            job.file_id = reply.file_id
            outcome = requests.announced(reply.file_id, transfer)
            announced = CallWaiter(outcome)
            self._delivery.waiters.append(announced)
            offset = reply.offset
            progress(offset, size)
            async with await trio.open_file(path, "rb") as source:
                await source.seek(offset)
                while offset < size and not announced.finished.is_set():  # refused: stop
                    block = await source.read(min(TRANSFER_BLOCK, size - offset))
                    if not block:
                        raise TransferFailed(f"{path} shrank while it was being sent")
                    await session._send_all(file_chunks(transfer, offset, block))
                    offset += len(block)
                    progress(offset, size)
            if announced.finished.is_set():
                settled = True  # refused midway: the server has ended the transfer
            else:
                await session._send(FileComplete(transfer=transfer, sha256=digest))
            info = await session._await(announced, outcome, REQUEST_TIMEOUT)
            settled = True
            return info
        except LinkLost:
            settled = True
            raise
        finally:
            if announced is not None:
                self._delivery.forget(announced)
            if not settled:  # cancelled or failed here: the server frees the transfer
                await self._stop_transfer(transfer, "upload abandoned")

    async def _stop_transfer(self, transfer: int, reason: str) -> None:
        """Tell the server to end ``transfer`` (it frees the slot), even while cancelled;
        within 2 s, and not at all if the link is down."""
        with trio.CancelScope(shield=True), trio.move_on_after(2), suppress(ClientError):
            await self._session._send(FileReject(transfer=transfer, reason=reason))

    async def download(
        self, file_id: str, progress: Progress, expected: FileInfo | None = None
    ) -> Path:
        requests.check_expected(file_id, expected)
        if file_id in self._downloading:
            raise TransferFailed(f"{file_id} is already being downloaded")
        self._downloading.add(file_id)
        transfer = next(self._transfers)
        send_chunks, receive_chunks = trio.open_memory_channel[Record](TRANSFER_QUEUE)
        target: PartialDownload | None = None
        asked = lost = False
        try:
            target = await trio.to_thread.run_sync(
                PartialDownload, self._session.downloads_dir, file_id
            )
            self.chunks[transfer] = send_chunks
            asked = True
            reply = await self._session._ask(requests.download(transfer, file_id, target.size))
            requests.check_offer(reply, expected)
            await trio.to_thread.run_sync(target.expect, reply.size)  # no byte beyond it
            progress(reply.offset, reply.size)
            while True:
                chunks, last = await _arrived(receive_chunks)
                if chunks:
                    await trio.to_thread.run_sync(
                        target.write_all, [(c.offset, c.data) for c in chunks]
                    )
                    progress(target.size, reply.size)
                if isinstance(last, FileComplete):
                    asked = False  # done: nothing to stop
                    return await trio.to_thread.run_sync(target.finish, reply.name, reply.sha256)
                if isinstance(last, FileReject):
                    asked = False  # the server stopped it
                    raise TransferFailed(last.reason)
        except (ValueError, OSError) as exc:  # a bad id, a chunk out of place, a wrong SHA-256
            raise TransferFailed(str(exc)) from None
        except trio.TooSlowError:
            raise TransferFailed("the download stalled; try again to resume it") from None
        except (trio.EndOfChannel, LinkLost):
            lost = True
            raise LinkLost("the connection was lost") from None
        finally:
            self._downloading.discard(file_id)
            self.chunks.pop(transfer, None)
            receive_chunks.close()
            if target is not None:
                target.close()
            if asked and not lost:  # failed or cancelled here: the server stops streaming
                await self._stop_transfer(transfer, "download abandoned")


async def _arrived(
    chunks: trio.MemoryReceiveChannel[Record],
) -> tuple[list[FileChunk], Record | None]:
    """The chunks of a download that are here (waiting for at least one record), and the
    record that ended the download if it came too. EndOfChannel if the link was lost."""
    with trio.fail_after(REQUEST_TIMEOUT):
        record: Record | None = await chunks.receive()
    got: list[FileChunk] = []
    while isinstance(record, FileChunk):
        got.append(record)
        try:
            record = chunks.receive_nowait() if len(got) < TRANSFER_QUEUE else None
        except (trio.WouldBlock, trio.EndOfChannel):  # the end shows at the next call
            record = None
    return got, record


async def file_sha256(path: Path, size: int | None = None) -> bytes:
    """``sha256_of`` on a worker thread. Cancelling the caller returns at once, and the
    thread stops within a block: a large file holds up no cancel or close."""
    stop = threading.Event()
    hashing = partial(sha256_of, path, stop, size=size)
    try:
        return await trio.to_thread.run_sync(hashing, abandon_on_cancel=True)
    finally:
        stop.set()


def no_progress(done: int, total: int) -> None:
    del done, total
