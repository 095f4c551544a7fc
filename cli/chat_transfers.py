"""The file commands of ``sealchat chat``, /send and /get: each runs in the background while
the next lines are read; paths as typed, transfers that stop when the connection drops,
uploads such a drop cut, and the commands that failed (for the exit code)."""

from __future__ import annotations

import os
import shlex
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TypeVar

import trio

from sealchat.cli.chat_terminal import Terminal, failures_said
from sealchat.cli.checks import CommandError, file_problem, home_expanded, unreadable
from sealchat.cli.exit_codes import LOST, OK, error
from sealchat.cli.terminal_text import safe
from sealchat.core import FileInfo
from sealchat.core.sizes import counted
from sealchat.transports.trio_client import ChatClient
from sealchat.transports.trio_transfers import file_sha256

T = TypeVar("T")


class NotConnected(CommandError):
    """A transfer was not started: the session is reconnecting."""

    code = LOST


class TransferCut(CommandError):
    """A transfer stopped because the connection dropped (the server may have all of it)."""

    code = LOST


@dataclass(frozen=True, slots=True)
class Command:
    """A /send or /get typed in a session."""

    verb: str
    written: str
    """What follows the verb, as typed."""
    names: str
    """The file's full path, or its id: the same however the command is written."""

    @property
    def typed(self) -> str:
        return f"{self.verb} {self.written}"


@dataclass(frozen=True, slots=True)
class _Failure:
    """How a command failed: as it was typed, the exit code it calls for, and why."""

    typed: str
    code: int
    why: str


class TransferFailures:
    """The /send and /get commands of a session that failed, each as it last failed: the
    same command succeeding later (once it can, as after a reconnect) clears its failure.
    ``report`` names those left, with the exit code they call for."""

    def __init__(self) -> None:
        self._failed: dict[tuple[str, str], _Failure] = {}
        """(verb, what it names) → how the command last failed, in the order they did."""

    def failed(self, command: Command, code: int, why: str) -> None:
        """``command`` failed, for ``why``, calling for the exit code ``code``."""
        key = command.verb, command.names
        self._failed.pop(key, None)  # named where it failed last
        self._failed[key] = _Failure(command.typed, code, why)

    def succeeded(self, command: Command) -> None:
        self._failed.pop((command.verb, command.names), None)

    def report(self) -> int:
        """Say on standard error which transfer commands failed; the exit code that says so
        (the highest theirs call for: a lost connection over a refusal, over a file that
        cannot be shared, over one that could not be saved)."""
        if not self._failed:
            return OK
        failures = self._failed.values()
        error(
            f"{counted(len(failures), 'file transfer')} failed: "
            + ", ".join(f"{failure.typed} ({failure.why})" for failure in failures)
        )
        return max(failure.code for failure in failures)


class Transfers:
    """The transfers of a session, each run by a task of its own in ``nursery``, so that the
    next lines are read, and messages sent, meanwhile. Each says how it ended, when it does:
    the line its work returns, or why it failed (naming it); ``failures`` keeps which
    commands failed."""

    def __init__(
        self, term: Terminal, nursery: trio.Nursery, failures: TransferFailures | None = None
    ) -> None:
        self.term = term
        self._nursery = nursery
        self.failures = failures if failures is not None else TransferFailures()
        self.running: list[str] = []
        """What each transfer under way does ("sending notes.txt"), in the order started."""
        self._changed = trio.Event()

    @contextmanager
    def starting(self, command: Command) -> Iterator[None]:
        """Start ``command``: a failure to start it is said, and counted as its failure."""
        with failures_said(self.term, noted=partial(self.failures.failed, command)):
            yield

    def start(self, command: Command, label: str, work: Callable[[], Awaitable[str]]) -> None:
        """Say that the transfer ``label`` started, and run ``work`` in the background."""
        self.term.say(f"* {label} in the background")
        self.running.append(label)
        self._nursery.start_soon(self._run, command, label, work)

    async def _run(self, command: Command, label: str, work: Callable[[], Awaitable[str]]) -> None:
        failed = partial(self.failures.failed, command)
        try:
            with failures_said(self.term, f" ({label})", failed):
                self.term.say(await work())
                self.failures.succeeded(command)
        finally:
            self.running.remove(label)
            self._changed.set()
            self._changed = trio.Event()

    async def finish(self) -> None:
        """Wait for the transfers under way to end (each stops if the connection drops),
        saying which they are."""
        if self.running:
            self.term.say(
                f"* waiting for {counted(len(self.running), 'transfer')} to end: "
                f"{', '.join(self.running)} (Ctrl-C ends now)"
            )
        while self.running:
            await self._changed.wait()


def share(client: ChatClient, term: Terminal, transfers: Transfers, written: str) -> None:
    """/send: share the file at the path ``written`` in the current room, in the background
    (said at once, and counted as failed, if it cannot start)."""
    command = _sending(written)
    with transfers.starting(command):
        path = _typed_path(written)
        problem = file_problem(path)
        if problem is not None:
            raise CommandError(problem)
        _require_online(client)  # not tried at all: nothing was cut
        label = f"sending {safe(path.name)}"
        transfers.start(command, label, partial(_upload, client, term, path, term.room, label))


def _sending(written: str) -> Command:
    """/send ``written``: the same command as any other /send of that path."""
    try:
        names = os.path.abspath(_typed_path(written))
    except CommandError:  # a ~user that names nobody: no path to compare
        names = written
    return Command("/send", written, names)


async def _upload(client: ChatClient, term: Terminal, path: Path, room: str, label: str) -> str:
    """Share ``path`` in ``room`` (unless an upload of it that a drop cut got there), its
    progress said as ``label``; the line that says it did."""
    cut = (path.resolve(), room)
    if cut in term.cut_uploads:  # the server may have stored it before the link went
        done = await _already_shared(client, path, room)
        if done is not None:
            term.cut_uploads.discard(cut)
            term.remember_file(done)
            return f"* {safe(path.name)} was shared already, as {safe(done.file_id)}"
    progress = term.progress(label)
    try:
        info = await while_online(
            client, partial(client.send_file, path, room=room, progress=progress)
        )
    except TransferCut:
        term.cut_uploads.add(cut)
        raise
    except OSError as exc:  # the file, gone or unreadable since the command was typed
        raise CommandError(unreadable(path, exc)) from None
    term.cut_uploads.discard(cut)
    term.remember_file(info)
    return f"* shared {safe(path.name)} as {safe(info.file_id)}"


def get(client: ChatClient, term: Terminal, transfers: Transfers, file_id: str) -> None:
    """/get: download the file ``file_id`` in the background (said at once, and counted as
    failed, if it cannot start). The server's offer must be that file as it was shown, if it
    was."""
    command = Command("/get", file_id, file_id)
    with transfers.starting(command):
        _require_online(client)
        shown = term.file_shown(file_id)
        label = f"getting {safe(shown.name if shown is not None else file_id[:8])}"
        progress = term.progress(label)
        download = partial(client.download, file_id, progress=progress, expected=shown)
        transfers.start(command, label, partial(_saved, client, download))


async def _saved(client: ChatClient, download: Callable[[], Awaitable[Path]]) -> str:
    """Run ``download`` while online; the line that says where the file was saved."""
    return f"* saved {safe(str(await while_online(client, download)))}"


async def _already_shared(client: ChatClient, path: Path, room: str) -> FileInfo | None:
    """The file shared in ``room`` with the name, size and SHA-256 of ``path``, if any (the
    file is read only if one has its name and size)."""
    size = path.stat().st_size
    alike = [f for f in await client.files(room=room) if (f.name, f.size) == (path.name, size)]
    if not alike:
        return None
    digest = await file_sha256(path)
    return next((f for f in alike if f.sha256 == digest), None)


def _typed_path(written: str) -> Path:
    """The path typed after /send, ``~`` expanded: as written or, if nothing is there, unquoted
    as a shell would (terminals paste a dropped file quoted, or with its spaces escaped).
    CommandError if a ``~user`` names nobody."""
    path = home_expanded(written)
    if not os.path.lexists(path):
        try:
            words = shlex.split(written)
        except ValueError:  # an unclosed quote: not shell quoting after all
            words = []
        if len(words) == 1 and words[0] != written:
            path = home_expanded(words[0])
    return path


async def while_online(client: ChatClient, transfer: Callable[[], Awaitable[T]]) -> T:
    """Run a transfer while the session stays connected: if the connection drops, it stops
    (TransferCut) instead of waiting for a reconnect that may never come (and the end of the
    session with it); the same command resumes it."""
    _require_online(client)
    result: list[T] = []
    failure: list[Exception] = []

    async def run() -> None:
        try:
            result.append(await transfer())
        except Exception as exc:  # raised as itself below, not inside an exception group
            failure.append(exc)
        finally:
            nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        while client.online:
            await trio.sleep(0.2)
        nursery.cancel_scope.cancel()
    if failure:
        raise failure[0]
    if not result:
        raise TransferCut(
            "the connection was lost during the transfer; once '* reconnected' shows, the "
            "same command resumes it"
        )
    return result[0]


def _require_online(client: ChatClient) -> None:
    """NotConnected unless the session is logged in: a transfer started now would only
    wait for the reconnect."""
    if not client.online:
        raise NotConnected(
            "not connected; the client is reconnecting (try again after '* reconnected')"
        )
