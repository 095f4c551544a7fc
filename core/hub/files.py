"""File transfers: offers, chunks, completion, refusals, downloads, listings, visibility."""

from __future__ import annotations

import math

from sealchat.core import limits
from sealchat.core.hub.config import HubConfig
from sealchat.core.hub.effects import (
    CancelStream,
    Effect,
    ReadBackFailed,
    SessionId,
    StreamFile,
    VerifyUpload,
)
from sealchat.core.hub.outgoing import Page, file_info, message_record, reply
from sealchat.core.hub.ratelimit import Allowances
from sealchat.core.hub.roster import Roster
from sealchat.core.hub.session import Conversation, Session, Upload, Verifying
from sealchat.core.hub.store import DISK_FULL_ERRNOS, Digest, Store, StoredFile
from sealchat.core.records import (
    FILES_REF,
    Error,
    FileAccept,
    FileChunk,
    FileComplete,
    FileInfo,
    FileList,
    FileOffer,
    FileReject,
    FileRequest,
    ListFiles,
)
from sealchat.core.sizes import shown_size, too_large

_FIRST_BATCH = 32
"""Files a page first asks the store for: more than most conversations have, and some more
than a page of the longest names holds (a 4096-character name takes up to 16 KiB)."""


SHORT_OF_SPACE = "the server is short of disk space for this file; ask its operator"
"""Why an upload is refused when it would fill the server's disk."""

READ_BACK_GONE = "the server could not read the stored file back; send it again"
"""Why a complete upload is refused when its file is gone from the server's disk
(``ReadBackFailed.GONE``): it is lost, to be sent again from the start."""

NOT_CHECKED_NOW = (
    "the server could not read the file back to check it just now; send it again later: "
    "what it received is kept, and nothing is sent twice"
)
"""Why a complete upload is refused when the server could not read it back to check it, for
a reason that may pass (``ReadBackFailed.NOT_NOW``, off the hub or from the store's own check):
the same offer resumes it at its end."""

UPLOAD_BUSY = "this file is already being sent in another transfer"
"""How the refusal of a resume begins when another session of the user is sending the file:
``upload_busy`` adds when to try again."""

BEING_CHECKED = (
    "this file has just been sent in another transfer and is being checked: it is shared in "
    "a moment if it arrived whole (see the file list), else send it again"
)
"""The refusal of a resume while another session's FileComplete is checked: not a wait to
try again after (by then the file is complete: an offer would upload and share it twice)."""

TAKEN_OVER = "this upload was continued on another connection"
"""Why an upload that went quiet ends when a resume from another session takes it over."""


def upload_busy(seconds: int) -> str:
    """The refusal of a resume while another session holds the upload: try again in
    ``seconds`` (a whole number, at least 1), when it may be taken over (docs/protocol.md
    §9.9, step 6)."""
    return f"{UPLOAD_BUSY}; try again in {seconds} s"


_MAX_REPEATS = 256
"""Records for a transfer being checked (``Verifying.repeats``) refused after its outcome;
more are dropped unanswered (a client that sends chunks after FileComplete is broken)."""


class Files:
    """Uploads and downloads of every session, the files stored and who may see them."""

    def __init__(
        self, store: Store, config: HubConfig, roster: Roster, allowances: Allowances
    ) -> None:
        self.store = store
        self.config = config
        self._roster = roster
        self._allowances = allowances
        self._uploading: dict[str, tuple[Session, int]] = {}
        """Files that a transfer is writing right now, or whose completion is being checked
        (``VerifyUpload``), with the session and transfer that hold them: one writer per
        partial file, and none while it is checked."""
        self._to_come = 0
        """Bytes the uploads in progress (of every session) have still to send: the disk must
        have room for them as well as for a new upload."""

    def offer(self, state: Session, record: FileOffer, now: float) -> list[Effect]:
        """A FileOffer: an upload starts (or resumes), or is refused."""
        transfer = record.transfer

        def reject(reason: str) -> list[Effect]:
            return [reply(state, FileReject(transfer=transfer, reason=reason))]

        where = self._roster.conversation(state, record.room, record.to, str(transfer))
        if isinstance(where, Error):
            return reject(where.detail)
        if not record.name:
            return reject("a file needs a name")
        if _in_use(state, transfer):
            return reject(f"transfer {transfer} is already in use")
        if (busy := _too_busy(state, self.config.max_transfers)) is not None:
            return reject(busy)
        if record.size > self.config.max_file_size:
            return reject(too_large(record.size, self.config.max_file_size))
        partial = self.store.find_partial_upload(
            state.key, record.sha256, record.size, where.room, where.peer_key
        )
        taken: list[Effect] = []
        if partial is not None:
            holder = self._uploading.get(partial.file_id)
            if holder is not None and (busy := self._held(state, *holder, now)) is not None:
                return reject(busy)
            # Taken over, its bytes still to come are already counted: they count once.
            still = partial.size - partial.received
            if not self._room_on_disk_for(0 if holder is not None else still):
                return reject(SHORT_OF_SPACE)
            if holder is not None:
                taken = self._take_over(*holder)
        else:
            # A refused offer changes nothing: the checks first, then the token, then room.
            displaced = self._displaced_by_an_upload(state.key)
            used = self.store.usage(state.key)
            if used - sum(f.size for f in displaced) + record.size > self.config.user_quota:
                return reject(
                    f"over quota: you use {shown_size(used)} of "
                    f"{shown_size(self.config.user_quota)}; "
                    f"this file needs {shown_size(record.size)} (the server's operator can "
                    "raise the quota)"
                )
            if not self._room_on_disk_for(record.size):
                return reject(SHORT_OF_SPACE)
            if not self._allowances.of(state.key, now).take(now):
                return reject("slow down: too many new files; try again in a moment")
            for file in displaced:
                self._discard_partial(file)
            partial = self.store.create_file(
                owner_key=state.key,
                name=record.name,
                size=record.size,
                sha256=record.sha256,
                room=where.room,
                to_key=where.peer_key,
                ts=now,
            )
        state.uploads[transfer] = Upload(file=partial, received=partial.received, active=now)
        self._uploading[partial.file_id] = (state, transfer)
        self._to_come += partial.size - partial.received
        accept = FileAccept(transfer=transfer, file_id=partial.file_id, offset=partial.received)
        return [*taken, reply(state, accept)]

    def _held(self, state: Session, holder: Session, transfer: int, now: float) -> str | None:
        """Why ``state`` may not resume the upload that ``holder`` holds as ``transfer``, or
        None if it may take it over: ``holder`` is another session (of the same user: only
        the user's own uploads are resumed) whose upload has had no chunk for
        ``upload_takeover_after`` (its connection is most likely dead, though still open
        here). One whose end is being checked is never taken over."""
        if holder is state:
            return f"this file is already being sent in transfer {transfer} of this connection"
        grace = self.config.upload_takeover_after
        upload = holder.uploads.get(transfer)
        if upload is None:  # its FileComplete is being checked: done within moments
            return BEING_CHECKED
        quiet = now - upload.active
        if quiet >= grace:
            return None
        return upload_busy(max(1, math.ceil(grace - quiet)))

    def _take_over(self, holder: Session, transfer: int) -> list[Effect]:
        """End the quiet upload ``transfer`` of ``holder`` for another session to resume: its
        slot and number are free, its late chunks are refused as for any transfer not in
        progress (none is written), and it is told why, if it is still there to hear."""
        self.end_upload(holder, transfer)
        return [reply(holder, FileReject(transfer=transfer, reason=TAKEN_OVER))]

    def _room_on_disk_for(self, size: int) -> bool:
        """Whether ``size`` more bytes of files, besides those the uploads in progress have
        still to send, leave the store's disk ``min_free_space`` (for the database, which
        cannot store what it is sent on a full disk)."""
        free = self.store.free_space()
        return free is None or free - self._to_come - size >= self.config.min_free_space

    def _displaced_by_an_upload(self, key: str) -> list[StoredFile]:
        """The unfinished uploads of the user that a new one displaces: the longest idle not
        in progress, down to one less than the limit (each keeps a row and a partial file
        for a resume that may never come)."""
        unfinished = self.store.unfinished_uploads(key)
        idle = [f for f in unfinished if f.file_id not in self._uploading]
        return idle[: max(0, len(unfinished) - self.config.max_unfinished_uploads + 1)]

    def chunk(self, state: Session, record: FileChunk, now: float) -> list[Effect]:
        """A FileChunk of an upload in progress: stored, or the upload ends."""
        upload = state.uploads.get(record.transfer)
        if upload is None:
            if self._repeated(state, record.transfer):
                return []  # refused after the outcome of the check
            reason = f"no upload {record.transfer} in progress"
            return [reply(state, FileReject(transfer=record.transfer, reason=reason))]
        if record.offset != upload.received:
            reason = f"chunk at {record.offset}, expected {upload.received}; resume to continue"
        elif upload.received + len(record.data) > upload.file.size:
            reason = f"more data than the {upload.file.size} bytes offered"
        else:
            try:
                received = self.store.write_chunk(upload.file.file_id, record.offset, record.data)
            except (OSError, ValueError) as exc:
                reason = _unstored_chunk(exc)
            else:
                self._to_come -= received - upload.received
                upload.received = received
                upload.active = now
                return []
        self.end_upload(state, record.transfer)  # the stored part stays: resume from there
        return [reply(state, FileReject(transfer=record.transfer, reason=reason))]

    def end_upload(self, state: Session, transfer: int) -> Upload | None:
        """Stop the upload ``transfer`` of ``state`` (its stored part stays, to resume)."""
        upload = state.uploads.pop(transfer, None)
        if upload is not None:
            self._uploading.pop(upload.file.file_id, None)
            self._to_come -= upload.file.size - upload.received
            self.store.release_upload(upload.file.file_id)
        return upload

    def _discard_partial(self, file: StoredFile) -> None:
        """Delete an upload that will not be resumed (never a complete file)."""
        current = self.store.get_file(file.file_id)
        if current is not None and not current.complete:
            self.store.delete_file(file.file_id)
            if file.room:
                self._roster.drop_room_if_unused(file.room)

    def complete(self, state: Session, record: FileComplete, now: float) -> list[Effect]:
        """A FileComplete: the file is checked, stored and announced, or refused. If the
        store must read the file back to check it, the driver does that (``VerifyUpload``)
        and the hub finishes in ``verified``."""
        transfer = record.transfer
        if self._repeated(state, transfer):
            return []  # refused after the outcome of the check
        upload = self.end_upload(state, transfer)
        if upload is None:
            reason = f"no upload {transfer} in progress"
            return [reply(state, FileReject(transfer=transfer, reason=reason))]
        file = upload.file
        if upload.received != file.size or record.sha256 != file.sha256:
            self._discard_partial(file)
            reason = "the file did not arrive intact (size or SHA-256 differs); send it again"
            return [reply(state, FileReject(transfer=transfer, reason=reason))]
        peer = self._target(state, transfer, file)
        if not isinstance(peer, str):
            return peer
        hasher = self.store.upload_hasher(file.file_id)
        if hasher is None:  # the store kept its SHA-256: checked at once
            return self._share(state, transfer, file, peer, digest=None, now=now)
        state.verifying[transfer] = Verifying(file)
        self._uploading[file.file_id] = (state, transfer)  # not resumed, displaced or discarded
        return [VerifyUpload(state.id, transfer, file.file_id, hasher)]

    def verified(
        self, session: SessionId, transfer: int, digest: Digest | ReadBackFailed, now: float
    ) -> list[Effect]:
        """The outcome of a VerifyUpload: what the file read back holds, or why it could not
        be read. The file is shared, or refused, as ``complete`` does it at once; one gone
        from the disk is forgotten; one unreadable for now is kept with all its bytes, for
        the same offer to resume at its end and complete again. Then the records for the
        transfer that came meanwhile are refused. Nothing if the session ended meanwhile
        (the upload stays, to be completed again)."""
        state = self._roster.sessions.get(session)
        if state is None:
            return []
        checking = state.verifying.pop(transfer, None)
        if checking is None:
            return []
        file = checking.file
        self._uploading.pop(file.file_id, None)
        effects: list[Effect]
        if isinstance(digest, ReadBackFailed):
            effects = self._unchecked(state, transfer, file, digest)
        else:  # checked again: the recipient may have been removed, the room left
            peer = self._target(state, transfer, file)
            if isinstance(peer, str):
                effects = self._share(state, transfer, file, peer, digest=digest, now=now)
            else:
                effects = peer
        reason = f"no upload {transfer} in progress"
        for _ in range(checking.repeats):
            effects.append(reply(state, FileReject(transfer=transfer, reason=reason)))
        return effects

    def _unchecked(
        self, state: Session, transfer: int, file: StoredFile, failure: ReadBackFailed
    ) -> list[Effect]:
        """The refusal of a complete upload whose file could not be checked (read back off
        the hub, or looked at by the store itself): one gone from the disk is forgotten;
        one unreadable for now is kept with all its bytes, for the same offer to resume at
        its end and complete again."""
        if failure is ReadBackFailed.GONE:
            self._discard_partial(file)
            return [reply(state, FileReject(transfer=transfer, reason=READ_BACK_GONE))]
        return [reply(state, FileReject(transfer=transfer, reason=NOT_CHECKED_NOW))]

    def end_verification(self, state: Session, transfer: int) -> None:
        """Forget the check of upload ``transfer`` (its session is closing): the upload stays,
        all its bytes received, and an offer of it resumes it at its end."""
        checking = state.verifying.pop(transfer, None)
        if checking is not None:
            self._uploading.pop(checking.file.file_id, None)

    def _repeated(self, state: Session, transfer: int) -> bool:
        """Whether ``transfer`` is an upload being checked; if so, a record for it counts
        as a repeat, refused after the outcome."""
        checking = state.verifying.get(transfer)
        if checking is None:
            return False
        checking.repeats = min(checking.repeats + 1, _MAX_REPEATS)
        return True

    def _target(self, state: Session, transfer: int, file: StoredFile) -> str | list[Effect]:
        """The display name of the recipient of a complete upload ("" for a room's), or its
        refusal if its target is gone: its recipient was removed (the file is deleted:
        nobody can have it) or its uploader left its room (the file is kept, to be resumed
        at its end and shared after joining again)."""
        if not file.to_key:
            if state.key in self._roster.member_set(file.room):
                return ""
            reason = (
                f"you left {file.room}; join it again and send the file again to share it "
                "there (it is kept: nothing is sent twice)"
            )
            return [reply(state, FileReject(transfer=transfer, reason=reason))]
        recipient = self.store.get_user(file.to_key)
        if recipient is not None:
            return recipient.name
        self._discard_partial(file)  # removed meanwhile: its name is retired for good
        reason = f"there is no user {file.to_key} any more; the file was not sent"
        return [reply(state, FileReject(transfer=transfer, reason=reason))]

    def _share(
        self,
        state: Session,
        transfer: int,
        file: StoredFile,
        peer: str,
        *,
        digest: Digest | None,
        now: float,
    ) -> list[Effect]:
        """Complete ``file`` in the store (checked with ``digest``, or with the SHA-256 the
        store kept) and announce it (to ``peer`` for a direct file), or refuse it if its
        bytes differ."""
        completed = self.store.complete_file(file.file_id, digest)
        if isinstance(completed, ReadBackFailed):  # as if a VerifyUpload had failed so
            return self._unchecked(state, transfer, file, completed)
        if not completed:
            reason = "the stored file's SHA-256 differs from the offer; send it again"
            return [reply(state, FileReject(transfer=transfer, reason=reason))]
        stored = self.store.append_message(
            ts=now,
            sender_key=state.key,
            sender=state.name,
            room=file.room,
            to_key=file.to_key,
            to=peer,
            text="",
            client_id="",
            file_id=file.file_id,
        )
        announcement = message_record(self.store, stored)
        where = Conversation(room=file.room, peer_key=file.to_key, peer=peer)
        effects: list[Effect] = [reply(state, announcement)]
        effects += self._roster.to_conversation(state, where, announcement)
        return effects

    def refuse(self, state: Session, record: FileReject) -> list[Effect]:
        """A FileReject: the client cancels an upload or refuses a download."""
        upload = self.end_upload(state, record.transfer)
        if upload is not None:  # the client cancelled its upload
            self._discard_partial(upload.file)
            return []
        if record.transfer in state.downloads:
            state.downloads.discard(record.transfer)
            state.stopping.add(record.transfer)
            return [CancelStream(state.id, record.transfer)]
        return []

    def download(self, state: Session, record: FileRequest) -> list[Effect]:
        """A FileRequest: the file is streamed to the session, or refused."""
        transfer = record.transfer

        def reject(reason: str) -> list[Effect]:
            return [reply(state, FileReject(transfer=transfer, reason=reason))]

        file = self.store.get_file(record.file_id)
        if file is None or not file.complete or not self._may_see(state.key, file):
            return reject(f"there is no file {record.file_id} that you can see")
        if _in_use(state, transfer):
            return reject(f"transfer {transfer} is already in use")
        if (busy := _too_busy(state, self.config.max_transfers)) is not None:
            return reject(busy)
        if record.offset > file.size:
            return reject(f"offset {record.offset} is past the end ({file.size} bytes)")
        state.downloads.add(transfer)
        offer = FileOffer(
            transfer=transfer,
            name=file.name,
            size=file.size,
            sha256=file.sha256,
            room=file.room,
            file_id=file.file_id,
            offset=record.offset,
        )
        return [
            reply(state, offer),
            StreamFile(state.id, transfer, file.file_id, record.offset, file.size, file.sha256),
        ]

    def stream_finished(self, session: SessionId, transfer: int) -> None:
        """The driver finished (or abandoned) a StreamFile."""
        state = self._roster.sessions.get(session)
        if state is not None:
            state.downloads.discard(transfer)
            state.stopping.discard(transfer)

    def list_files(self, state: Session, record: ListFiles) -> list[Effect]:
        """A ListFiles: one page of the files of a conversation shared after ``after``, in
        the order they were shared, with whether more follow. The store is asked for a few
        at a time, more each time, until the page is full and one more is seen (or none is
        left): a page of the longest names holds only a few of them."""
        where = self._roster.conversation(state, record.room, record.peer, FILES_REF)
        if isinstance(where, Error):
            return [reply(state, where)]
        room, key, peer_key = where.room, state.key, where.peer_key

        def shared(after: int, limit: int) -> list[tuple[int, StoredFile]]:
            if room:
                return self.store.files_for_room(room, after, limit)
            return self.store.files_between(key, peer_key, after, limit)

        def answer(page: Page[FileInfo], more: bool, last: int) -> list[Effect]:
            listed = FileList(
                files=page.items, room=record.room, peer=record.peer, more=more, last=last
            )
            return [reply(state, listed)]

        page: Page[FileInfo] = Page()
        last, batch = record.after, _FIRST_BATCH
        while True:
            found = shared(last, batch)
            for position, file in found:
                if not page.add(file_info(file)):
                    return answer(page, True, last)
                last = position
            if len(found) < batch:
                return answer(page, False, last)
            batch = min(2 * batch, limits.MAX_LIST + 1)

    def _may_see(self, key: str, file: StoredFile) -> bool:
        if file.room:
            return key in self._roster.member_set(file.room)
        return key in (file.owner_key, file.to_key)


def _in_use(state: Session, transfer: int) -> bool:
    """Whether ``transfer`` names an upload or download of ``state`` that has not ended."""
    return (
        transfer in state.uploads
        or transfer in state.verifying
        or transfer in state.downloads
        or transfer in state.stopping
    )


def _too_busy(state: Session, most: int) -> str | None:
    """Why ``state`` may not begin another transfer, if it may not: ``most`` are in progress
    (uploads being checked count too), or, with the downloads it cancelled whose streams have
    not stopped yet, twice that. A cancelled download frees its place at once, but its stream
    (a task or a thread) runs on until it notices: without the second bound, requests
    cancelled as soon as they are made would start streams without end."""
    busy = len(state.uploads) + len(state.verifying) + len(state.downloads)
    if busy >= most:
        return f"at most {most} transfers at a time"
    if busy + len(state.stopping) >= 2 * most:
        return (
            f"at most {most} transfers at a time, and {len(state.stopping)} cancelled "
            "downloads are still stopping; try again in a moment"
        )
    return None


def _unstored_chunk(exc: OSError | ValueError) -> str:
    """Why a chunk the store failed to write is refused, and when to resume: at once, or,
    if the disk is full, once the operator has freed space (at once would fail again)."""
    if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
        return (
            "the server could not store the chunk: its disk is full; resume once the "
            "server's operator has freed some space"
        )
    return "the server could not store the chunk; resume to continue"
