"""File transfers of the blocking client (uploads and downloads), and what its reader needs
to know of them: which records belong to a download (handed to its queue) or to a transfer
that ended here (dropped)."""

from __future__ import annotations

import contextlib
import itertools
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar

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
from sealchat.transports.blocking_handoff import CallWaiter as _Waiter
from sealchat.transports.blocking_handoff import put_while as _put_while
from sealchat.transports.downloads import PartialDownload, sha256_of
from sealchat.transports.requests import (
    REQUEST_TIMEOUT,
    TRANSFER_BLOCK,
    TRANSFER_QUEUE,
    ClientError,
    Reply,
    Request,
    TransferFailed,
    UploadBusy,
)

T = TypeVar("T")
ABANDONED_MEMORY: Final = 64
"""Downloads given up, and uploads ended, whose late records are recognised and dropped."""
Progress = Callable[[int, int], None]


class Client(Protocol):
    """What transfers use of the client: its lock (which guards their state too), whether it
    is stopping, the server's file size limit, its calls and its sending."""

    _lock: threading.Lock
    _stopping: bool
    max_file_size: int

    def ask(self, request: Request[T], timeout: float = ...) -> T: ...

    def send(self, record: Record) -> None: ...

    def send_all(self, records: Iterable[Record], *, wait: bool = True) -> None: ...

    def files(self, *, room: str = "", peer: str = "") -> list[FileInfo]: ...

    def _expect(self, reply: Reply[T]) -> _Waiter: ...

    def _forget(self, waiter: _Waiter) -> None: ...

    def _wait(self, waiter: _Waiter, timeout: float = ...) -> Any: ...


class Transfers:
    """The uploads and downloads of one client. Its reader hands the records of a download
    to the queue in ``chunks`` (by transfer id); all this is changed under the client's lock."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._lock = client._lock
        self._ids = itertools.count(1)
        self.chunks: dict[int, queue.Queue[Record]] = {}
        self._abandoned: deque[int] = deque(maxlen=ABANDONED_MEMORY)
        """Downloads given up here: the rest of their stream is dropped as it arrives (the
        server marks the end of a stream it was told to stop with nothing, so only the most
        recent are remembered)."""
        self._uploads: set[int] = set()
        """Uploads under way: the first FileReject of one is the server's refusal."""
        self._ended_uploads: deque[int] = deque(maxlen=ABANDONED_MEMORY)
        """Uploads refused, or given up here: the server answers each record of one still on
        its way with a FileReject ("no upload N in progress"), dropped here. Nothing marks the
        last, so only the most recent are remembered."""

    def send_file(
        self, path: Path, *, room: str = "", to: str = "", progress: Progress | None = None
    ) -> FileInfo:
        """``BlockingClient.send_file``."""
        client = self._client
        data_size = path.stat().st_size
        requests.check_file_size(data_size, client.max_file_size)
        digest = sha256_of(path, size=data_size)
        tries, before = 1, None  # before: the ids of the files there before the first wait
        while True:
            try:
                return self._send_file(path, data_size, digest, room=room, to=to, progress=progress)
            except UploadBusy as busy:  # another connection of ours holds it: it may be dead
                if tries >= requests.UPLOAD_BUSY_TRIES:
                    raise
                tries += 1
                with contextlib.suppress(ClientError):  # not listed: offered again all the same
                    if before is None:
                        before = {f.file_id for f in client.files(room=room, peer=to)}
                time.sleep(requests.busy_wait(busy))
                with contextlib.suppress(ClientError):
                    listed = client.files(room=room, peer=to)
                    done = requests.shared_meanwhile(listed, before or (), data_size, digest)
                    if done is not None:  # the other connection finished it meanwhile
                        if progress is not None:
                            progress(data_size, data_size)
                        return done

    def _send_file(
        self,
        path: Path,
        data_size: int,
        digest: bytes,
        *,
        room: str,
        to: str,
        progress: Progress | None,
    ) -> FileInfo:
        """One offer of ``path`` and, if accepted, its chunks from where the server's copy
        stops, and its completion."""
        client = self._client
        transfer = next(self._ids)
        offer = FileOffer(
            transfer=transfer, name=path.name, size=data_size, sha256=digest, room=room, to=to
        )
        waiter: _Waiter | None = None
        with self._lock:
            self._uploads.add(transfer)
        try:
            accept = client.ask(requests.upload(offer))
            waiter = client._expect(requests.announced(accept.file_id, transfer))
            over = waiter.finished.is_set  # refused midway (or the connection ended)
            offset = accept.offset
            with open(path, "rb") as source:
                source.seek(offset)
                while offset < data_size and not over():
                    block = source.read(min(TRANSFER_BLOCK, data_size - offset))
                    if not block:
                        raise TransferFailed(f"{path} shrank while it was being sent")
                    client.send_all(file_chunks(transfer, offset, block))
                    offset += len(block)
                    if progress is not None:
                        progress(offset, data_size)
            if not over():
                client.send(FileComplete(transfer=transfer, sha256=digest))
        except BaseException:  # no answer in time, a failed read, progress raising to cancel it
            if waiter is not None:
                client._forget(waiter)
            with self._lock:
                self._end_upload(transfer)
            # The server frees the transfer (an offer answered late too) and discards its part.
            self._abandon(transfer, "upload abandoned")
            raise
        try:
            info: FileInfo = client._wait(waiter)
        finally:
            with self._lock:
                self._uploads.discard(transfer)
        return info

    def download(
        self,
        file_id: str,
        folder: Path,
        *,
        progress: Progress | None = None,
        expected: FileInfo | None = None,
    ) -> Path:
        """``BlockingClient.download``."""
        requests.check_expected(file_id, expected)
        client = self._client
        transfer = next(self._ids)
        chunks: queue.Queue[Record] = queue.Queue(TRANSFER_QUEUE)
        with self._lock:  # the reader may be going through the downloads
            self.chunks[transfer] = chunks
        streaming = False
        try:
            with PartialDownload(folder, file_id) as target:
                streaming = True  # from the request on, the server may be sending
                offer = client.ask(requests.download(transfer, file_id, target.size))
                requests.check_offer(offer, expected)
                target.expect(offer.size)  # no byte beyond it
                while True:
                    try:
                        record = chunks.get(timeout=REQUEST_TIMEOUT)
                    except queue.Empty:
                        raise TransferFailed(
                            "the download stalled; try again to resume it"
                        ) from None
                    if isinstance(record, FileComplete | FileReject):
                        streaming = False  # the server ended it
                    if isinstance(record, FileComplete):
                        return target.finish(offer.name, offer.sha256)
                    if isinstance(record, FileReject):
                        raise TransferFailed(record.reason)
                    assert isinstance(record, FileChunk)
                    target.write(record.offset, record.data)
                    if progress is not None:
                        progress(target.size, offer.size)
        except (ValueError, OSError) as exc:  # a bad id, a chunk out of place, a wrong hash
            raise TransferFailed(str(exc)) from None
        finally:
            with self._lock:
                del self.chunks[transfer]
                if streaming:  # given up here: the rest of its stream is dropped
                    self._abandoned.append(transfer)
            with contextlib.suppress(queue.Empty):  # let a reader waiting on a full queue on
                while True:
                    chunks.get_nowait()
            if streaming:  # the server stops sending it
                self._abandon(transfer, "download abandoned")

    def _abandon(self, transfer: int, reason: str) -> None:
        """Tell the server that ``transfer`` is given up here, if the connection still works."""
        with contextlib.suppress(ClientError):
            self._client.send_all((FileReject(transfer=transfer, reason=reason),), wait=False)

    # --- for the reader ------------------------------------------------------------------

    def hand_over(self, transfer: int, chunks: queue.Queue[Record], record: Record) -> None:
        """Put ``record`` in its download's queue, waiting while the queue is full, unless
        the download is given up or the client closes meanwhile (then it is dropped)."""

        def wanted() -> bool:
            with self._lock:
                return not self._client._stopping and self.chunks.get(transfer) is chunks

        _put_while(chunks, record, wanted)

    def not_for_events(self, record: FileChunk | FileComplete | FileReject) -> bool:
        """Whether ``record`` belongs to a download (handed to it), to one abandoned here
        (dropped; its end forgets the transfer), or to an upload that ended (dropped). An
        upload's refusal goes on, and ends it."""
        transfer = record.transfer
        if transfer in self.chunks:
            return not isinstance(record, FileReject)
        if transfer in self._abandoned:
            if not isinstance(record, FileChunk):
                self._abandoned.remove(transfer)
            return True
        if transfer in self._ended_uploads:
            return True
        if isinstance(record, FileReject):
            self._end_upload(transfer)
        return False

    def _end_upload(self, transfer: int) -> None:
        """Upload ``transfer`` (if under way) is over: what the server still says about it
        is dropped (called under the lock)."""
        if transfer in self._uploads:
            self._uploads.remove(transfer)
            self._ended_uploads.append(transfer)
