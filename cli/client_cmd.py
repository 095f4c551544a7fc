"""``sealchat chat``, ``sealchat send``, ``sealchat fingerprint`` and ``sealchat trust``."""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import trio

from sealchat.cli.chat_outgoing import Outgoing
from sealchat.cli.chat_terminal import Terminal, shown_size
from sealchat.cli.checks import CommandError, check_names, file_problem
from sealchat.cli.exit_codes import EXIT_CODES_HELP, OK, USAGE, error, explain_failure, guarded
from sealchat.cli.login import asker, connection_options, credentials_from, run_session
from sealchat.cli.send_cmd import run_send
from sealchat.cli.terminal_text import safe
from sealchat.core import FileInfo, fingerprint
from sealchat.transports.downloads import sha256_of
from sealchat.transports.keyfile import public_bytes
from sealchat.transports.pinning import KnownServers, server_name
from sealchat.transports.requests import ClientError
from sealchat.transports.trio_client import ChatClient, LinkState, client_key, connect

T = TypeVar("T")


COMMANDS = {
    "/join": ("ROOM", "join (or create) ROOM and make it current"),
    "/leave": ("ROOM", "leave ROOM"),
    "/rooms": ("", "list rooms"),
    "/who": ("", "who is in the current room, and who is online"),
    "/msg": ("USER TEXT", "send a direct message"),
    "/send": ("PATH", "share a file in the current room"),
    "/files": ("", "files shared in the current room"),
    "/get": ("ID", "download a shared file"),
    "/history": ("", "recent messages of the current room"),
    "/help": ("", "this help"),
    "/quit": ("", "leave"),
}
"""Chat commands: their arguments and what they do."""
HELP = "\n".join(
    [
        "commands:",
        f"  {'TEXT':<18} send TEXT to the current room",
        f"  {'//TEXT':<18} send /TEXT (a message that starts with /)",
        *(f"  {f'{verb} {args}'.strip():<18} {what}" for verb, (args, what) in COMMANDS.items()),
    ]
)


CHAT_HELP = """\
Chat in the terminal: messages and commands (/help) come from standard input.
Messages go out in the order typed, each once the one before is stored, while the
next lines are read; a command runs after the messages typed before it. One the
server finds too fast is sent again a moment later, before those typed after it,
and those typed while disconnected go after the reconnect. A file transfer cut by a lost connection
stops: the same command resumes it later (or says the file got there). At the
end of input or /quit, the chat waits for the messages not yet stored (while they
keep going, or up to 10 s for a reconnect), then names any never delivered (exit 7)
or refused, by the server or as too long (exit 6)."""


def add_client_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    chat = commands.add_parser(
        "chat",
        help="chat in the terminal",
        description=CHAT_HELP,
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    connection_options(chat)
    chat.add_argument("--downloads", type=Path, default=None, help="where /get saves files")
    chat.set_defaults(handler=guarded(run_chat))

    send = commands.add_parser(
        "send",
        help="send one message or file (for scripts and bots)",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    connection_options(send)
    where = send.add_mutually_exclusive_group()
    where.add_argument("--room", default="general", help="room to send to (default general)")
    where.add_argument("--to", metavar="USER", help="send a direct message to USER instead")
    what = send.add_mutually_exclusive_group(required=True)
    what.add_argument("text", nargs="?", help="the message")
    what.add_argument("--file", type=Path, help="share this file instead of a message")
    send.set_defaults(handler=guarded(run_send))

    fp = commands.add_parser("fingerprint", help="print this installation's client key")
    fp.set_defaults(handler=guarded(run_fingerprint))

    trust = commands.add_parser("trust", help="pin a server key given to you out of band")
    trust.add_argument("server", metavar="HOST:PORT")
    trust.add_argument("fingerprint", metavar="SHA256:…")
    trust.set_defaults(handler=guarded(run_trust))


def run_fingerprint(_args: argparse.Namespace) -> int:
    print(fingerprint(public_bytes(client_key())))
    return OK


def run_trust(args: argparse.Namespace) -> int:
    host, sep, port = args.server.rpartition(":")
    if not sep or not port.isdigit() or not host:
        error("give the server as HOST:PORT, e.g. chat.example.org:7878")
        return USAGE
    name = server_name(host.strip("[]"), int(port))
    try:
        KnownServers().pin(name, args.fingerprint)
    except ValueError as exc:  # says what is malformed, and how it should look
        error(str(exc))
        return USAGE
    except OSError as exc:  # the pin file cannot be used as it is
        error(f"cannot pin {name}: {exc}")
        return USAGE
    print(f"pinned {name} to {args.fingerprint}")
    return OK


def _typed_path(written: str) -> Path:
    """The path typed after /send, ``~`` expanded: as written or, if nothing is there, unquoted
    as a shell would (terminals paste a dropped file quoted, or with its spaces escaped).
    CommandError if a ``~user`` names nobody."""
    path = _home_expanded(written)
    if not os.path.lexists(path):
        try:
            words = shlex.split(written)
        except ValueError:  # an unclosed quote: not shell quoting after all
            words = []
        if len(words) == 1 and words[0] != written:
            path = _home_expanded(words[0])
    return path


def _home_expanded(written: str) -> Path:
    """``written`` with a leading ``~`` or ``~user`` expanded; as written if that cannot be
    done but a file has that name (as a shell does); else CommandError."""
    try:
        return Path(written).expanduser()
    except RuntimeError:  # no such user, or no home folder at all
        if os.path.lexists(written):
            return Path(written)
        head = re.split(r"[\\/]", written, maxsplit=1)[0]
        if head == "~":
            raise CommandError(
                f"cannot find your home folder for {written}; give the full path"
            ) from None
        raise CommandError(
            f"there is no user {head[1:]!r} whose home folder {head} could be; "
            f"for your own, write ~/ (as in ~/{written[1:]})"
        ) from None


# --- chat ---------------------------------------------------------------------------------


def run_chat(args: argparse.Namespace) -> int:
    """``sealchat chat``: commands and messages from standard input, events on the output."""
    credentials = credentials_from(args)
    if credentials is None:
        return USAGE
    password, _, interactive = credentials
    term = Terminal(sys.stdout, args.user)

    async def main() -> int:
        reading_commands = trio.Event()
        options: dict[str, Any] = {
            "confirm_new_key": asker(interactive, until=reading_commands),
            "replies": False,  # a command shows its own answer, or why it was refused
        }
        if args.downloads is not None:
            options["downloads_dir"] = args.downloads
        async with connect(args.host, args.port, **options) as client:
            name = await client.login(args.user, password)
            reading_commands.set()
            term.say(f"* logged in to {client.server} as {safe(name)}; /help lists the commands")
            outgoing = Outgoing(term)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_show_events, client, term, outgoing)
                    nursery.start_soon(outgoing.run, client)
                    await _command_loop(client, term, outgoing)
                    await outgoing.finish(client)
                    nursery.cancel_scope.cancel()
            finally:
                code = outgoing.report()
        return code

    return run_session(main, credentials)


async def _show_events(client: ChatClient, term: Terminal, outgoing: Outgoing) -> None:
    """Print what arrives; end the session, with the error that says why, when the client
    gives up reconnecting."""
    async for event in client.events():
        if isinstance(event, LinkState) and not event.connected and not event.retry_in:
            assert client.gave_up_on is not None  # set before the client says it gave up
            raise client.gave_up_on
        if not outgoing.note(event):
            term.show(event)


async def _command_loop(client: ChatClient, term: Terminal, outgoing: Outgoing) -> None:
    """Run the lines typed until the end of input or /quit; a failed command is shown."""
    while True:
        line = await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
        if not line:
            return  # end of input
        line = line.rstrip("\r\n")  # a script saved on Windows ends its lines with CRLF
        if not line.strip():
            continue
        try:
            if await _command(client, term, outgoing, line):
                return
        except CommandError as exc:
            term.say(f"! {safe(str(exc))}")
        except BrokenPipeError:
            raise  # the output was closed: nothing more can be shown
        except (ClientError, OSError) as exc:
            term.say(f"! {safe(explain_failure(exc)[1])}")


_NOT_AFTER_MESSAGES = frozenset({"/help", "/quit", "/exit", "/msg"})
"""Commands that need not wait for the messages typed before them (/msg is one)."""


async def _command(client: ChatClient, term: Terminal, outgoing: Outgoing, line: str) -> bool:
    """Run one line; True means quit."""
    if line.startswith("//") or not line.startswith("/"):
        outgoing.add(line[1:] if line.startswith("//") else line, room=term.room)
        return False
    verb, _, rest = line.partition(" ")
    rest = rest.strip()
    needed = COMMANDS.get(verb, ("", ""))[0]
    if len(rest.split(maxsplit=1)) < len(needed.split()):
        term.say(f"! usage: {verb} {needed}")
        return False
    if verb not in _NOT_AFTER_MESSAGES:
        await outgoing.drained(client)  # it runs after the messages typed before it
    match verb:
        case "/quit" | "/exit":
            return True
        case "/help":
            term.say(HELP)
        case "/join":
            check_names(room=rest)
            members = await client.join(rest)
            term.room = rest
            term.say(f"* now in {safe(rest)}: {', '.join(safe(m.name) for m in members)}")
        case "/leave":
            check_names(room=rest)
            await client.leave(rest)
            if term.room == rest:
                term.room = "general"
            term.say(f"* left {safe(rest)}; now in {safe(term.room)}")
        case "/rooms":
            for room in await client.rooms():
                mark = "*" if room.joined else " "
                term.say(f"{mark} {safe(room.name)} ({room.members} members)")
        case "/who":
            members = await client.members(term.room)
            shown = [f"{safe(m.name)}{'' if m.online else ' (offline)'}" for m in members]
            term.say(f"* in {safe(term.room)}: {', '.join(shown)}")
        case "/msg":
            _direct(outgoing, rest)
        case "/send":
            await _share(client, term, rest)
        case "/files":
            for info in await client.files(room=term.room):
                term.say(f"  {safe(info.file_id)}  {shown_size(info.size):>9}  {safe(info.name)}")
        case "/get":
            progress = term.progress(f"getting {rest[:8]}")
            saved = await _while_online(client, partial(client.download, rest, progress=progress))
            term.say(f"* saved {safe(str(saved))}")
        case "/history":
            messages, _ = await client.history(room=term.room, limit=20)
            for message in messages:
                term.show(message)
        case _:
            term.say(f"! unknown command '{safe(line)}'; /help lists the commands")
    return False


def _direct(outgoing: Outgoing, rest: str) -> None:
    """/msg USER TEXT."""
    user, text = rest.split(maxsplit=1)
    try:
        check_names(user=user)
    except CommandError:
        outgoing.refuse(text)
        raise
    outgoing.add(text, to=user)


async def _while_online(client: ChatClient, transfer: Callable[[], Awaitable[T]]) -> T:
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


async def _share(client: ChatClient, term: Terminal, written: str) -> None:
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
            term.say(f"* {safe(path.name)} was shared already, as {safe(done.file_id)}")
            return
    progress = term.progress(f"sending {path.name}")
    try:
        info = await _while_online(
            client, partial(client.send_file, path, room=term.room, progress=progress)
        )
    except CommandError:
        term.cut_uploads.add(cut)
        raise
    term.cut_uploads.discard(cut)
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


def _require_online(client: ChatClient) -> None:
    """CommandError unless the session is logged in: a transfer started now would wait for
    the reconnect, and no later line would be read meanwhile."""
    if not client.online:
        raise CommandError(
            "not connected; the client is reconnecting (try again after '* reconnected')"
        )
