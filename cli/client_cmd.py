"""``sealchat chat``, ``sealchat send``, ``sealchat fingerprint`` and ``sealchat trust``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import trio

from sealchat.core import Error as ServerError
from sealchat.core import (
    Event,
    FileInfo,
    Membership,
    Message,
    Presence,
    Typing,
    fingerprint,
)
from sealchat.transports.keyfile import public_bytes
from sealchat.transports.pinning import (
    KnownServers,
    ServerKeyChanged,
    ServerKeyUnknown,
    server_name,
)
from sealchat.transports.trio_client import (
    ChatClient,
    ClientError,
    LinkState,
    LoginFailed,
    TransferFailed,
    client_key,
    connect,
)

# Exit codes of the one-shot command (also used by chat for startup failures).
OK, FAILED, USAGE, UNREACHABLE, UNTRUSTED, LOGIN_FAILED, REFUSED = 0, 1, 2, 3, 4, 5, 6

HELP = """commands:
  TEXT               send TEXT to the current room
  /join ROOM         join (or create) ROOM and make it current
  /leave ROOM        leave ROOM
  /rooms             list rooms
  /who               who is in the current room, and who is online
  /msg USER TEXT     send a direct message
  /send PATH         share a file in the current room
  /files             files shared in the current room
  /get ID            download a shared file
  /history           recent messages of the current room
  /help              this help
  /quit              leave"""


def add_client_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    chat = commands.add_parser("chat", help="chat in the terminal")
    _connection_options(chat)
    chat.add_argument("--downloads", type=Path, default=None, help="where /get saves files")
    chat.set_defaults(handler=run_chat)

    send = commands.add_parser("send", help="send one message or file (for scripts and bots)")
    _connection_options(send)
    where = send.add_mutually_exclusive_group()
    where.add_argument("--room", default="general", help="room to send to (default general)")
    where.add_argument("--to", metavar="USER", help="send a direct message to USER instead")
    what = send.add_mutually_exclusive_group(required=True)
    what.add_argument("text", nargs="?", help="the message")
    what.add_argument("--file", type=Path, help="share this file instead of a message")
    send.set_defaults(handler=run_send)

    fp = commands.add_parser("fingerprint", help="print this installation's client key")
    fp.set_defaults(handler=run_fingerprint)

    trust = commands.add_parser("trust", help="pin a server key given to you out of band")
    trust.add_argument("server", metavar="HOST:PORT")
    trust.add_argument("fingerprint", metavar="SHA256:…")
    trust.set_defaults(handler=run_trust)


def _connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7878)
    parser.add_argument("--user", default=os.environ.get("USER", ""), help="user name")
    parser.add_argument(
        "--password-file",
        type=Path,
        help="read the password from this file (or set SEALCHAT_PASSWORD; "
        "otherwise you are asked without echo)",
    )


def run_fingerprint(_args: argparse.Namespace) -> int:
    print(fingerprint(public_bytes(client_key())))
    return OK


def run_trust(args: argparse.Namespace) -> int:
    host, sep, port = args.server.rpartition(":")
    if not sep or not port.isdigit() or not host:
        print("sealchat: give the server as HOST:PORT, e.g. chat.example.org:7878", file=sys.stderr)
        return USAGE
    name = server_name(host.strip("[]"), int(port))
    try:
        KnownServers().pin(name, args.fingerprint)
    except ValueError as exc:
        print(f"sealchat: {exc} (it looks like SHA256:…)", file=sys.stderr)
        return USAGE
    print(f"pinned {name} to {args.fingerprint}")
    return OK


def _password(args: argparse.Namespace, interactive: bool) -> str | None:
    if args.password_file is not None:
        try:
            return Path(args.password_file).read_text(encoding="utf-8").rstrip("\n")
        except OSError as exc:
            print(f"sealchat: cannot read {args.password_file}: {exc.strerror}", file=sys.stderr)
            return None
    if "SEALCHAT_PASSWORD" in os.environ:
        return os.environ["SEALCHAT_PASSWORD"]
    if interactive:
        import getpass

        return getpass.getpass(f"password for {args.user}: ")
    print(
        "sealchat: no password: use --password-file or SEALCHAT_PASSWORD "
        "(standard input is not a terminal, so nobody can be asked)",
        file=sys.stderr,
    )
    return None


def _asker(interactive: bool) -> Callable[[str, str], Awaitable[bool]] | None:
    """On first contact, ask on the terminal (never when standard input is not one)."""
    if not interactive:
        return None

    async def ask(server: str, fp: str) -> bool:
        def prompt() -> str:
            print(f"The server {server} is new to this computer. Its key fingerprint is")
            print(f"    {fp}")
            print("Check it with the server's operator before you trust it.")
            return input("Trust this server and remember it? [y/N] ")

        answer = await trio.to_thread.run_sync(prompt)
        return answer.strip().lower() in ("y", "yes")

    return ask


def _explain_failure(exc: BaseException) -> tuple[int, str]:
    """An exit code and a message saying what went wrong and what to do."""
    if isinstance(exc, ServerKeyChanged | ServerKeyUnknown):
        return UNTRUSTED, str(exc)
    if isinstance(exc, LoginFailed):
        return LOGIN_FAILED, f"login refused: {exc}"
    if isinstance(exc, TransferFailed):
        return REFUSED, f"refused: {exc}"
    if isinstance(exc, ClientError) and "cannot reach" in str(exc):
        return UNREACHABLE, str(exc)
    return FAILED, str(exc)


def _credentials(args: argparse.Namespace) -> tuple[str, bool] | None:
    """The password and whether a person can be asked things, or None (already explained)."""
    if not args.user:
        print("sealchat: give --user", file=sys.stderr)
        return None
    interactive = sys.stdin.isatty()
    password = _password(args, interactive)
    return None if password is None else (password, interactive)


def run_send(args: argparse.Namespace) -> int:
    credentials = _credentials(args)
    if credentials is None:
        return USAGE
    password, interactive = credentials

    async def main() -> int:
        async with connect(
            args.host, args.port, confirm_new_key=_asker(interactive), reconnect=False
        ) as client:
            await client.login(args.user, password)
            room = "" if args.to else args.room
            if args.file is not None:
                info = await client.send_file(args.file, room=room, to=args.to or "")
                print(f"shared {args.file.name} as {info.file_id}")
            else:
                client_id = await client.send_message(args.text, room=room, to=args.to or "")
                await _await_ack(client, client_id)
            return OK

    return _run(main)


async def _await_ack(client: ChatClient, client_id: str) -> None:
    """Wait until the server stored the message, or say why it refused."""
    with trio.fail_after(30):
        async for event in client.events():
            if isinstance(event, ServerError) and event.ref == client_id:
                raise TransferFailed(event.detail or event.code)
            if client.unacknowledged == 0:
                return
    raise ClientError("the connection closed before the server confirmed the message")


def _run(main: Callable[[], Awaitable[int]]) -> int:
    try:
        return trio.run(main)
    except (ClientError, ServerKeyChanged, ServerKeyUnknown, OSError) as exc:
        code, message = _explain_failure(exc)
        print(f"sealchat: {message}", file=sys.stderr)
        return code
    except trio.TooSlowError:
        print("sealchat: the server did not answer in time", file=sys.stderr)
        return FAILED
    except KeyboardInterrupt:
        return FAILED


# --- chat ---------------------------------------------------------------------------------


class Terminal:
    """What ``sealchat chat`` prints: one line per event, transfers as progress bars."""

    def __init__(self, out: TextIO, me: str) -> None:
        self.out = out
        self.me = me
        self.room = "general"
        self.tty = out.isatty()
        self._last_percent: dict[str, int] = {}

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def show(self, event: Event | LinkState) -> None:
        match event:
            case Message(file=FileInfo() as info):
                where = f"[{event.room}]" if event.room else "[direct]"
                self.say(
                    f"{_time(event.ts)} {where} {event.sender} shared {info.name!r} "
                    f"({_size(info.size)}) — /get {info.file_id}"
                )
            case Message():
                where = f"[{event.room}]" if event.room else f"[{event.sender} → {event.to}]"
                self.say(f"{_time(event.ts)} {where} {event.sender}: {event.text}")
            case Typing(active=True):
                where = event.room or "you"
                self.say(f"* {event.user} is typing… ({where})")
            case Presence():
                self.say(f"* {event.user} is {'online' if event.online else 'offline'}")
            case Membership():
                self.say(f"* {event.user} {'joined' if event.joined else 'left'} {event.room}")
            case ServerError():
                self.say(f"! {event.detail or event.code}")
            case LinkState(connected=False, retry_in=wait) if wait:
                self.say(f"! connection lost ({event.reason}); reconnecting in {wait:.1f} s…")
            case LinkState(connected=False):
                self.say(f"! disconnected: {event.reason}")
            case LinkState(connected=True):
                self.say("* reconnected")

    def progress(self, label: str) -> Callable[[int, int], None]:
        """A progress bar for one transfer."""

        def update(done: int, total: int) -> None:
            percent = 100 if total == 0 else done * 100 // total
            if self.tty:
                bar = "#" * (percent // 5)
                end = "\n" if percent == 100 else ""
                print(f"\r{label} [{bar:<20}] {percent:3d}%", end=end, file=self.out, flush=True)
            elif self._last_percent.get(label) != 100 and (
                percent == 100 or percent // 25 > self._last_percent.get(label, -1) // 25
            ):
                self.say(f"{label} {percent}%")
            self._last_percent[label] = percent

        return update


def run_chat(args: argparse.Namespace) -> int:
    credentials = _credentials(args)
    if credentials is None:
        return USAGE
    password, interactive = credentials
    term = Terminal(sys.stdout, args.user)

    async def main() -> int:
        options: dict[str, Any] = {"confirm_new_key": _asker(interactive)}
        if args.downloads is not None:
            options["downloads_dir"] = args.downloads
        async with connect(args.host, args.port, **options) as client:
            name = await client.login(args.user, password)
            term.say(f"* logged in to {client.server} as {name}; /help lists the commands")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_show_events, client, term)
                await _command_loop(client, term, nursery)
                nursery.cancel_scope.cancel()
        return OK

    return _run(main)


async def _show_events(client: ChatClient, term: Terminal) -> None:
    async for event in client.events():
        term.show(event)


async def _command_loop(client: ChatClient, term: Terminal, nursery: trio.Nursery) -> None:
    while True:
        line = await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
        if not line:
            return  # end of input
        line = line.rstrip("\n")
        if not line.strip():
            continue
        try:
            if await _command(client, term, nursery, line):
                return
        except (ClientError, OSError) as exc:
            term.say(f"! {_explain_failure(exc)[1]}")


async def _command(client: ChatClient, term: Terminal, nursery: trio.Nursery, line: str) -> bool:
    """Run one line; True means quit."""
    if not line.startswith("/"):
        await client.send_message(line, room=term.room)
        return False
    verb, _, rest = line.partition(" ")
    rest = rest.strip()
    match verb:
        case "/quit" | "/exit":
            return True
        case "/help":
            term.say(HELP)
        case "/join" if rest:
            members = await client.join(rest)
            term.room = rest
            term.say(f"* now in {rest}: {', '.join(m.name for m in members)}")
        case "/leave" if rest:
            await client.leave(rest)
            if term.room == rest:
                term.room = "general"
            term.say(f"* left {rest}; now in {term.room}")
        case "/rooms":
            for room in await client.rooms():
                mark = "*" if room.joined else " "
                term.say(f"{mark} {room.name} ({room.members} members)")
        case "/who":
            members = await client.members(term.room)
            shown = [f"{m.name}{'' if m.online else ' (offline)'}" for m in members]
            term.say(f"* in {term.room}: {', '.join(shown)}")
        case "/msg":
            user, _, text = rest.partition(" ")
            if not user or not text.strip():
                term.say("! usage: /msg USER TEXT")
            else:
                await client.send_message(text, to=user)
        case "/send" if rest:
            path = Path(rest).expanduser()
            if not path.is_file():
                term.say(f"! no such file: {path}")
            else:
                info = await client.send_file(
                    path, room=term.room, progress=term.progress(f"sending {path.name}")
                )
                term.say(f"* shared {path.name} as {info.file_id}")
        case "/files":
            for info in await client.files(room=term.room):
                term.say(f"  {info.file_id}  {_size(info.size):>9}  {info.name}")
        case "/get" if rest:
            saved = await client.download(rest, progress=term.progress(f"getting {rest[:8]}"))
            term.say(f"* saved {saved}")
        case "/history":
            messages, _ = await client.history(room=term.room, limit=20)
            for message in messages:
                term.show(message)
        case _:
            term.say(f"! unknown command {line!r}; /help lists the commands")
    return False


def _time(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%H:%M") if ts else "--:--"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)
