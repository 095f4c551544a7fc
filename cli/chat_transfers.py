"""The file commands of ``sealchat chat``, /send and /get: paths as typed, transfers that
stop when the connection drops, and uploads such a drop cut."""

from __future__ import annotations

import os
import shlex
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

import trio

from sealchat.cli.chat_terminal import Terminal
from sealchat.cli.checks import CommandError, file_problem, home_expanded
from sealchat.cli.terminal_text import safe
from sealchat.core import FileInfo
from sealchat.transports.downloads import sha256_of
from sealchat.transports.trio_client import ChatClient

T = TypeVar("T")


async def share(client: ChatClient, term: Terminal, written: str) -> None:
    """/send: share the file at the path ``written`` in the current room."""
    path = _typed_path(written)
    problem = file_problem(path)
    if problem is not None:
        raise CommandError(problem)
    _require_online(client)  # not tried at all: nothing was cut
    cut = (path.resolve(), term.room)
    if cut in term.cut_uploads:  # the server may have stored it before the link went
        done = await _already_shared(client, path, term.room)
        if done is not None:
            term.cut_uploads.discard(cut)
            term.remember_file(done)
            term.say(f"* {safe(path.name)} was shared already, as {safe(done.file_id)}")
            return
    progress = term.progress(f"sending {path.name}")
    try:
        info = await while_online(
            client, partial(client.send_file, path, room=term.room, progress=progress)
        )
    except CommandError:
        term.cut_uploads.add(cut)
        raise
    term.cut_uploads.discard(cut)
    term.remember_file(info)
    term.say(f"* shared {safe(path.name)} as {safe(info.file_id)}")


async def _already_shared(client: ChatClient, path: Path, room: str) -> FileInfo | None:
    """The file shared in ``room`` with the name, size and SHA-256 of ``path``, if any (the
    file is read only if one has its name and size)."""
    size = path.stat().st_size
    alike = [f for f in await client.files(room=room) if (f.name, f.size) == (path.name, size)]
    if not alike:
        return None
    digest = await trio.to_thread.run_sync(sha256_of, path)
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
    (CommandError) instead of waiting for a reconnect while no later line is read."""
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
        raise CommandError(
            "the connection was lost during the transfer; once '* reconnected' shows, the "
            "same command resumes it"
        )
    return result[0]


def _require_online(client: ChatClient) -> None:
    """CommandError unless the session is logged in: a transfer started now would wait for
    the reconnect, and no later line would be read meanwhile."""
    if not client.online:
        raise CommandError(
            "not connected; the client is reconnecting (try again after '* reconnected')"
        )
