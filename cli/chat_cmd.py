"""``sealchat chat``: the session, and the commands typed in it."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from contextlib import suppress
from typing import Any

import trio

from sealchat.cli.chat_outgoing import Outgoing
from sealchat.cli.chat_reads import ReadsShown
from sealchat.cli.chat_terminal import START_ROOM, Terminal, failures_said
from sealchat.cli.chat_transfers import TransferFailures, Transfers, get, share
from sealchat.cli.checks import CommandError, check_names
from sealchat.cli.exit_codes import OUTPUT_CLOSED, USAGE, RegistrationRefused
from sealchat.cli.login import asker, credentials_from, run_session
from sealchat.cli.terminal_text import safe
from sealchat.core import Event, Message
from sealchat.core.sizes import counted, shown_size
from sealchat.transports.requests import ClientError, LoginFailed, typed_room
from sealchat.transports.trio_client import ChatClient, LinkState, connect

COMMANDS = {
    "/join": ("ROOM", "join (or create) ROOM and make it current"),
    "/leave": ("[ROOM]", "leave ROOM (the current room without one)"),
    "/rooms": ("", "list rooms"),
    "/who": ("", "who is in the current room, and who is online"),
    "/msg": ("USER TEXT", "send a direct message"),
    "/send": ("PATH", "share a file in the current room (in the background)"),
    "/files": ("", "files shared in the current room"),
    "/get": ("ID", "download a shared file (in the background)"),
    "/history": ("", "recent messages of the current room"),
    "/help": ("", "this help"),
    "/quit": ("", "end the chat (also Ctrl-D)"),
}
"""Chat commands: their arguments (in brackets: may be left out) and what they do."""
TERMINAL_LINE = 4095
"""The most bytes of a line a Linux terminal passes on (a pasted line is cut there)."""
SHOWN_CONVERSATIONS = 10
"""Direct conversations named at login (the most recent); the others are counted."""
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
and those typed while disconnected go after the reconnect. /send and /get run in
the background (a server takes a few at a time): the next lines are read meanwhile,
and each says when it ends. A transfer cut by a lost connection stops: the same
command resumes it later (or says the file got there). At the end of input or
/quit, the chat waits for the transfers under way, then for the messages not yet
stored (while they keep going, or up to 10 s for a reconnect), then names any never
confirmed (exit 7) or refused, by the server or as too long (exit 6), and each /send
or /get that failed and did not succeed when typed again (the same path, the same
id): cut or not connected (exit 7), refused by the server or too big (exit 6), a
file that cannot be read (exit 2), a download that could not be saved (exit 1).
The highest of these codes is the exit code."""


def run_chat(args: argparse.Namespace) -> int:
    """``sealchat chat``: commands and messages from standard input, events on the output."""
    if sys.stdout is None:  # started with its output closed (>&-): nothing could be shown
        return OUTPUT_CLOSED
    credentials = credentials_from(args, new_account=args.register)
    if credentials is None:
        return USAGE
    password, _, interactive = credentials
    term = Terminal(sys.stdout, args.user)

    async def main() -> int:
        reading_commands = trio.Event()
        options: dict[str, Any] = {
            "confirm_new_key": asker(interactive, until=reading_commands),
            "replies": False,  # a command shows its own answer, or why it was refused
            "sent_wait": 0,  # the chat has waited for its messages, saying so (finish)
        }
        if args.downloads is not None:
            options["downloads_dir"] = args.downloads
        async with connect(args.host, args.port, **options) as client:
            name = await _log_in(client, args.user, password, register=args.register)
            reading_commands.set()
            term.say(f"* logged in to {client.server} as {safe(name)}; /help lists the commands")
            if client.conversations:
                term.say(conversations_line(client.conversations))
            outgoing, failed_transfers = Outgoing(term), TransferFailures()
            reads = ReadsShown(name) if term.tty else None  # on a terminal, shown is read
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_show_events, client, term, outgoing, reads, nursery)
                    nursery.start_soon(outgoing.run, client)
                    if reads is not None:
                        nursery.start_soon(reads.tell_every_while, client)
                    transfers = Transfers(term, nursery, failed_transfers)
                    await _command_loop(client, term, outgoing, transfers)
                    await transfers.finish()
                    await outgoing.finish(client)
                    nursery.cancel_scope.cancel()
                _show_queued(client, term, outgoing, reads)
                if reads is not None:
                    await reads.tell(client)
            finally:
                code = max(outgoing.report(), failed_transfers.report())
        return code

    return run_session(main, credentials)


def conversations_line(names: Sequence[str]) -> str:
    """The line naming the users of the user's direct conversations, the most recent first,
    as the login said them: up to SHOWN_CONVERSATIONS, and how many more."""
    shown = ", ".join(safe(name) for name in names[:SHOWN_CONVERSATIONS])
    more = len(names) - SHOWN_CONVERSATIONS
    return f"* direct conversations: {shown}" + (f" and {more} more" if more > 0 else "")


async def _log_in(client: ChatClient, user: str, password: str, *, register: bool) -> str:
    """Log in, or create the account and log in (RegistrationRefused if the server would
    not); returns the user name as the server spells it."""
    if not register:
        return await client.login(user, password)
    try:
        return await client.register(user, password)
    except LoginFailed as exc:
        raise RegistrationRefused(str(exc), exc.retry_after) from None


async def _show_events(
    client: ChatClient,
    term: Terminal,
    outgoing: Outgoing,
    reads: ReadsShown | None = None,
    nursery: trio.Nursery | None = None,
) -> None:
    """Print what arrives; end the session, with the error that says why, when the client
    gives up reconnecting. Back after an outage, check in ``nursery`` (if given) that the
    user is still in the current room."""
    async for event in client.events():
        if isinstance(event, LinkState) and not event.connected and not event.retry_in:
            assert client.gave_up_on is not None  # set before the client says it gave up
            raise client.gave_up_on
        if _take(event, term, outgoing, reads) and nursery is not None:
            nursery.start_soon(_still_in_room, client, term)


async def _still_in_room(client: ChatClient, term: Terminal) -> None:
    """Back after an outage: the current room may have been left on another device while
    this one was disconnected (its RoomLeft then never came). If so, say it, and go back to
    the start room, where what is typed goes from now on."""
    room = term.room
    if room == START_ROOM:
        return
    with suppress(ClientError):  # lost again: checked at the next reconnect
        rooms = await client.rooms()
        if term.room == room and not any(r.joined and r.name == room for r in rooms):
            term.room = START_ROOM
            term.say(
                f"* you are no longer in {safe(room)} (left on another device while this one "
                f"was disconnected); now in {START_ROOM}"
            )


def _take(
    event: Event | LinkState, term: Terminal, outgoing: Outgoing, reads: ReadsShown | None
) -> bool:
    """Show ``event``: what it says of the connection first, then the event itself, unless
    it concerns a message typed (``outgoing`` shows a refusal); a message shown is noted
    read in ``reads``, if given. Whether the connection is back after an outage with it."""
    back = term.follow_link(event)
    if reads is not None:
        reads.follow(event)
    if not outgoing.note(event):
        term.show(event)
        if reads is not None and isinstance(event, Message):
            reads.shown(event)
    return back


def _show_queued(
    client: ChatClient, term: Terminal, outgoing: Outgoing, reads: ReadsShown | None
) -> None:
    """Print the events that arrived before the session ended but were not printed yet: as
    it closes, the client tells the server that these messages reached the user (those the
    server had yet to send come at the next login)."""
    events = client.events()
    while True:
        try:
            event = events.receive_nowait()
        except trio.WouldBlock:
            return
        _take(event, term, outgoing, reads)


async def _command_loop(
    client: ChatClient, term: Terminal, outgoing: Outgoing, transfers: Transfers
) -> None:
    """Run the lines typed until the end of input or /quit; a failed command is shown."""
    if sys.stdin is None:  # started with its input closed (<&-): at its end already
        return
    on_terminal = sys.stdin.isatty()
    while True:
        line = await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
        if not line:
            return  # end of input
        line = line.rstrip("\r\n")  # a script saved on Windows ends its lines with CRLF
        if not line.strip():
            continue
        if on_terminal and _cut_by_the_terminal(line):
            outgoing.refuse(line)
            term.say(
                f"! not sent: the terminal passes on at most {TERMINAL_LINE} bytes of a line, "
                "and cut this one there; send a longer text with 'sealchat send' or a pipe"
            )
            continue
        with failures_said(term):
            if await _command(client, term, outgoing, transfers, line):
                return


def _cut_by_the_terminal(line: str) -> bool:
    """Whether a Linux terminal cut ``line`` at its limit: its line editor passes on the
    first TERMINAL_LINE bytes of a longer one (a character cut in two is one replacement
    character here, up to 2 bytes more)."""
    encoding = sys.stdin.encoding or "utf-8"
    return sys.platform == "linux" and len(line.encode(encoding, "replace")) >= TERMINAL_LINE


_NOT_AFTER_MESSAGES = frozenset({"/help", "/quit", "/exit", "/msg"})
"""Commands that need not wait for the messages typed before them (/msg is one)."""


async def _command(
    client: ChatClient, term: Terminal, outgoing: Outgoing, transfers: Transfers, line: str
) -> bool:
    """Run one line; True means quit. /send and /get start their transfer and return."""
    if line.startswith("//") or not line.startswith("/"):
        text = line[1:] if line.startswith("//") else line
        outgoing.add(text, room=term.room, limit=client.max_message_chars)
        return False
    verb, _, rest = line.partition(" ")
    rest = rest.strip()
    needed = COMMANDS.get(verb, ("", ""))[0]
    required = [word for word in needed.split() if not word.startswith("[")]
    if len(rest.split(maxsplit=1)) < len(required):
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
            await _join(client, term, typed_room(rest))
        case "/leave":
            await _leave(client, term, typed_room(rest) if rest else term.room)
        case "/rooms":
            for room in await client.rooms():
                mark = "*" if room.joined else " "
                term.say(f"{mark} {safe(room.name)} ({counted(room.members, 'member')})")
        case "/who":
            members = await client.members(term.room)
            shown = [f"{safe(m.name)}{'' if m.online else ' (offline)'}" for m in members]
            term.say(f"* in {safe(term.room)}: {', '.join(shown)}")
        case "/msg":
            _direct(outgoing, rest, client.max_message_chars)
        case "/send":
            share(client, term, transfers, rest)
        case "/files":
            files = await client.files(room=term.room)
            if not files:
                term.say(f"* no files shared in {safe(term.room)}")
            for info in files:
                term.remember_file(info)
                term.say(f"  {safe(info.file_id)}  {shown_size(info.size):>9}  {safe(info.name)}")
        case "/get":
            get(client, term, transfers, rest)
        case "/history":
            messages, _ = await client.history(room=term.room, limit=20)
            if not messages:
                term.say(f"* no messages in {safe(term.room)} yet")
            for message in messages:
                term.show(message)
        case _:
            term.say(f"! unknown command '{safe(line)}'; /help lists the commands")
    return False


async def _join(client: ChatClient, term: Terminal, room: str) -> None:
    """/join ROOM: join it (creating it) and make it the current room."""
    check_names(room=room)
    members = await client.join(room)
    term.room = room
    term.say(f"* now in {safe(room)}: {', '.join(safe(m.name) for m in members)}")


async def _leave(client: ChatClient, term: Terminal, room: str) -> None:
    """/leave [ROOM]: leave it (the current room); the current room is general again if it
    was that one."""
    check_names(room=room)
    await client.leave(room)
    if term.room == room:
        term.room = START_ROOM
    term.say(f"* left {safe(room)}; now in {safe(term.room)}")


def _direct(outgoing: Outgoing, rest: str, limit: int) -> None:
    """/msg USER TEXT (``limit``: the most characters the server takes, 0 if not said)."""
    user, text = rest.split(maxsplit=1)
    try:
        check_names(user=user)
    except CommandError:
        outgoing.refuse(text)
        raise
    outgoing.add(text, to=user, limit=limit)
