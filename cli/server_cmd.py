"""``sealchat server``, ``sealchat user …``, ``sealchat server-key`` and ``sealchat backup``."""

from __future__ import annotations

import argparse
import logging
import shlex
import shutil
import signal
import sqlite3
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path

import platformdirs
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from sealchat.cli.checks import byte_size, listening_port, path_argument, positive
from sealchat.cli.prompts import typed_twice
from sealchat.core import fingerprint
from sealchat.core.hub import Hub, HubConfig
from sealchat.core.hub.names import user_key, username_problem
from sealchat.core.sizes import counted, shown_size
from sealchat.transports.backup import BackupError, back_up
from sealchat.transports.folder_lock import FolderInUse
from sealchat.transports.keyfile import SERVER_KEY_FILE as KEY_FILE
from sealchat.transports.keyfile import (
    KeyFileError,
    ensure_private_dir,
    load_or_create_key,
    public_bytes,
)
from sealchat.transports.passwords import hash_password, verify_password
from sealchat.transports.server_config import ServerConfig
from sealchat.transports.sqlite_schema import SchemaVersionError
from sealchat.transports.sqlite_store import (
    DB_FILE,
    DatabaseUnreadable,
    SqliteStore,
    UnsafeDataDir,
    check_data_dir,
)

DEMO_USER = "esha"
DEMO_PASSWORD = "esha123"  # noqa: S105  (the original brief's public demo account, opt-in only)

log = logging.getLogger("sealchat.server")


DISK_FULL_BELOW = 1 << 20
"""Free bytes below which a data folder's disk counts as full."""


def default_data_dir() -> Path:
    """Where the server keeps its database, key and files unless told otherwise."""
    return Path(platformdirs.user_data_dir("sealchat", appauthor=False))


def add_server_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``server``, ``user``, ``server-key`` and ``backup`` on the main parser."""
    server = commands.add_parser("server", help="run a sealchat server")
    server.add_argument("--host", default="127.0.0.1", help="address to listen on")
    server.add_argument(
        "--port", type=listening_port, default=7878, help="TCP port (default 7878; 0: any free one)"
    )
    _data_dir_option(server)
    server.add_argument(
        "--threads", action="store_true", help="one thread per client instead of trio"
    )
    server.add_argument(
        "--demo",
        action="store_true",
        help=f"create the public demo account {DEMO_USER}/{DEMO_PASSWORD} (never in production)",
    )
    server.add_argument(
        "--open-registration", action="store_true", help="let anyone create an account"
    )
    defaults = ServerConfig()
    server.add_argument("--max-connections", type=positive, default=defaults.max_connections)
    server.add_argument(
        "--max-connections-per-address",
        type=positive,
        default=defaults.max_connections_per_address,
        help="connections open at once from one IP address, or IPv6 /64 "
        f"(default {defaults.max_connections_per_address}; more if many users share a NAT)",
    )
    server.add_argument(
        "--max-unauthenticated-per-address",
        type=positive,
        default=defaults.max_unauthenticated_per_address,
        help="of those, connections not logged in yet "
        f"(default {defaults.max_unauthenticated_per_address})",
    )
    server.add_argument(
        "--address-connection-burst",
        type=positive,
        default=defaults.address_connection_burst,
        help="new connections one address may open at once "
        f"(default {defaults.address_connection_burst}; more if many users share a NAT)",
    )
    server.add_argument(
        "--address-connections-per-second",
        type=positive,
        default=int(defaults.address_connections_per_second),
        help="then, new connections one address may open a second "
        f"(default {defaults.address_connections_per_second:g})",
    )
    hub = defaults.hub
    server.add_argument(
        "--max-file-size",
        type=byte_size,
        default=hub.max_file_size,
        metavar="SIZE",
        help="the largest file users may share, like 500M or 8G, at most the quota "
        f"(default {shown_size(hub.max_file_size)})",
    )
    server.add_argument(
        "--user-quota",
        type=byte_size,
        default=hub.user_quota,
        metavar="SIZE",
        help="the files one user may keep on the server in all "
        f"(default {shown_size(hub.user_quota)})",
    )
    server.add_argument(
        "--message-quota",
        type=message_quota,
        default=hub.message_text_per_day,
        metavar="SIZE",
        help="the text of messages one user may have stored a day, like 100M "
        f"(default {shown_size(hub.message_text_per_day)})",
    )
    server.set_defaults(handler=run_server)

    user = commands.add_parser("user", help="manage accounts on this server's data")
    actions = user.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, text in (
        ("add", "create an account"),
        ("passwd", "change an account's password"),
        ("remove", "delete an account (its name stays reserved)"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("username")
        _data_dir_option(action)
        if name != "remove":
            action.add_argument(
                "--password-stdin",
                action="store_true",
                help="read the password from standard input (for scripts)",
            )
        if name == "add":
            action.add_argument(
                "--allow-look-alike",
                action="store_true",
                help="add the account even if its name looks like another's "
                "(AIice, with a capital i, next to alice)",
            )
        action.set_defaults(handler=run_user)
    listing = actions.add_parser("list", help="list accounts")
    _data_dir_option(listing)
    listing.set_defaults(handler=run_user)

    key = commands.add_parser("server-key", help="print the server key's fingerprint")
    _data_dir_option(key)
    key.set_defaults(handler=run_server_key)

    backup = commands.add_parser(
        "backup",
        help="copy the server's data to a new folder (safe while the server runs)",
        description="Copy the server's database, key and files to DEST, a new folder, as of "
        "one moment; safe while the server runs. DEST is itself a data folder: to restore, "
        "stop the server and start it with --data-dir DEST (or put DEST in place of the data "
        "folder). It holds the server's private key and every message: keep it private.",
    )
    backup.add_argument(
        "dest", type=path_argument, metavar="DEST", help="the backup folder to create"
    )
    _data_dir_option(backup)
    backup.set_defaults(handler=run_backup)


def _data_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=path_argument,
        default=None,
        help=f"server data folder (default {default_data_dir()})",
    )


class NoServerData(Exception):
    """The data folder given holds no server data (a mistyped ``--data-dir``, most likely)."""


def _data_dir(args: argparse.Namespace, *, create: bool = True, needs: str = "") -> Path:
    """The data folder, created (with its missing parents) private to this user whatever
    the umask; UnsafeDataDir if another user could change it. With ``create`` False it must
    exist and hold the file ``needs``: a command that only reads server data must not make
    a fresh, empty server where a folder name was mistyped."""
    path: Path = args.data_dir or default_data_dir()
    if path.exists() and not path.is_dir():
        raise NoServerData(f"{path} is a file, not a folder; give --data-dir a folder")
    if not create and not (path / needs).is_file():
        raise NoServerData(
            f"no server data in {path} (no {needs} there): check --data-dir, or start the "
            "server there first"
        )
    try:
        ensure_private_dir(path)
    except OSError as exc:  # a file on the way, no permission…
        raise NoServerData(f"cannot make the data folder {path}: {exc.strerror or exc}") from None
    check_data_dir(path)
    return path


def _explained(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """``handler``, saying on standard error (not in a traceback) why a data folder, its
    database or the server's key cannot be used as they are, and how to fix it."""

    @wraps(handler)
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except (
            UnsafeDataDir,
            KeyFileError,
            NoServerData,
            FolderInUse,
            DatabaseUnreadable,
            SchemaVersionError,
            BackupError,
        ) as exc:
            print(f"sealchat: {exc}", file=sys.stderr)
            return 1
        except OSError as exc:  # a read-only file system, a disk full, no permission…
            where = f" {exc.filename}" if exc.filename else ""
            print(f"sealchat: cannot use{where}: {exc.strerror or exc}", file=sys.stderr)
            return 1
        except sqlite3.OperationalError as exc:  # locked for too long, the disk full…
            data_dir = getattr(args, "data_dir", None) or default_data_dir()
            print(f"sealchat: cannot use the database in {data_dir}: {exc}", file=sys.stderr)
            if _disk_full(data_dir):  # which SQLite may call a "disk I/O error"
                print(f"sealchat: the disk of {data_dir} is full: free some space", file=sys.stderr)
            return 1
        except sqlite3.DatabaseError as exc:  # a damaged page, met past the opening checks
            if getattr(exc, "sqlite_errorname", None) not in ("SQLITE_CORRUPT", "SQLITE_NOTADB"):
                raise  # a bug's (a constraint, a misuse): its traceback, not "damaged"
            data_dir = getattr(args, "data_dir", None) or default_data_dir()
            print(
                f"sealchat: the database in {data_dir} is damaged ({exc}): restore it from a "
                "backup, or move it aside to start with an empty one",
                file=sys.stderr,
            )
            return 1

    return run


def _disk_full(folder: Path) -> bool:
    """Whether the disk of ``folder`` has less room left than SQLite may need to open and
    change a database (a few pages, its -wal and -shm files)."""
    try:
        return shutil.disk_usage(folder).free < DISK_FULL_BELOW
    except OSError:
        return False


@_explained
def run_server_key(args: argparse.Namespace) -> int:
    key = load_or_create_key(_data_dir(args, create=False, needs=KEY_FILE) / KEY_FILE)
    print(fingerprint(public_bytes(key)))
    return 0


@_explained
def run_backup(args: argparse.Namespace) -> int:
    data_dir = _data_dir(args, create=False, needs=DB_FILE)
    before = signal.signal(signal.SIGTERM, _interrupt)  # so that back_up cleans up after it too
    try:
        report = back_up(data_dir, args.dest)
    except KeyboardInterrupt:  # back_up has removed what it had made
        print("\nsealchat: interrupted; no backup was made", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, before)
    uploads = report.uploads_in_progress
    print(
        f"backed up {data_dir} to {report.path}: {counted(report.users, 'user')}, "
        f"{counted(report.messages, 'message')}, {counted(report.files, 'file')} "
        f"({report.file_bytes / 1e6:,.1f} MB)"
        + (f", {counted(uploads, 'upload')} in progress" if uploads else "")
    )
    print(f"server key fingerprint {fingerprint(report.public_key)} (kept: clients trust it)")
    print(
        f"It holds the server's private key and every message: keep it private. To restore, "
        f"stop the server and start it with --data-dir {shlex.quote(str(report.path))}."
    )
    for folder in report.left_over:
        print(
            f"sealchat: {folder} was left by a backup that never finished (killed midway); it "
            "holds a copy of the server's key and messages: unless a backup is running there "
            f"now, remove it with: rm -r {shlex.quote(str(folder))}",
            file=sys.stderr,
        )
    if report.damaged:
        print(
            f"sealchat: {counted(len(report.damaged), 'file')} could not be backed up (the "
            "data folder lacks their bytes, or they no longer match their SHA-256): "
            + "; ".join(report.damaged)
            + ". Everything else is in the backup.",
            file=sys.stderr,
        )
        return 1
    return 0


def _interrupt(_signum: int, _frame: object) -> None:
    """A SIGTERM handled as Ctrl-C is."""
    raise KeyboardInterrupt


@_explained
def run_user(args: argparse.Namespace) -> int:
    data_dir = _data_dir(args, create=args.action == "add", needs=DB_FILE)
    store = SqliteStore(data_dir, beside_server=True)  # the server may be running
    try:
        if args.action == "list":
            for name in store.list_users():
                print(name)
            for names in store.look_alike_users():  # on stderr: the list stays one per line
                print(
                    f"sealchat: {', '.join(names)} look alike: users could take one for another",
                    file=sys.stderr,
                )
            return 0
        key = user_key(args.username)
        if args.action == "remove":
            if not store.remove_user(key, keep_room=HubConfig().default_room):
                print(f"sealchat: there is no user {args.username}", file=sys.stderr)
                return 1
            print(
                f"removed {args.username}; the name stays reserved for its messages and files, "
                "so no new account can take it"
            )
            return 0
        problem = username_problem(args.username)
        if problem:
            print(f"sealchat: {problem}", file=sys.stderr)
            return 2
        if args.action == "add" and store.is_retired(key):
            _say_retired(args.username)
            return 1
        if args.action == "add" and store.get_user(key) is not None:
            _say_exists(args.username)
            return 1
        if args.action == "add" and not args.allow_look_alike and store.looks_taken(key):
            print(
                f"sealchat: {args.username} looks like the name of another account (or of a "
                "removed one), so users could take one for the other; choose another name, or "
                "add --allow-look-alike to add it all the same",
                file=sys.stderr,
            )
            return 1
        if not _may_read_password(args):
            return 2
        try:
            password = _read_new_password(args.password_stdin)
        except EOFError:
            print("\nsealchat: no password given; nothing changed", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("\nsealchat: interrupted; nothing changed", file=sys.stderr)
            return 130
        if password is None:
            return 2
        phc = hash_password(password)
        if args.action == "add":
            if not store.add_user(args.username, key, phc):
                if store.is_retired(key):  # removed while the password was read
                    _say_retired(args.username)
                else:  # added meanwhile
                    _say_exists(args.username)
                return 1
            print(f"added {args.username}")
        else:
            if not store.set_password(key, phc):
                print(f"sealchat: there is no user {args.username}", file=sys.stderr)
                return 1
            print(f"changed the password of {args.username}")
        return 0
    finally:
        store.close()


def _say_exists(username: str) -> None:
    print(f"sealchat: {username} exists; use 'user passwd'", file=sys.stderr)


def _say_retired(username: str) -> None:
    print(
        f"sealchat: {username} belonged to a removed account, whose messages and files keep "
        "the name; choose another name",
        file=sys.stderr,
    )


def _may_read_password(args: argparse.Namespace) -> bool:
    """Whether the new password can be read as asked; if not, say how (a prompt needs a
    terminal: a script pipes the password with --password-stdin)."""
    if args.password_stdin or (sys.stdin is not None and sys.stdin.isatty()):
        return True
    print(
        "sealchat: standard input is not a terminal, so no password can be typed; "
        "pipe it in with --password-stdin",
        file=sys.stderr,
    )
    return False


def _read_new_password(from_stdin: bool) -> str | None:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            print("sealchat: no password came on standard input; nothing changed", file=sys.stderr)
            return None
    else:
        typed = typed_twice("new password: ")
        if typed is None:
            print("sealchat: the passwords differ; nothing changed", file=sys.stderr)
            return None
        password = typed
    if len(password) < HubConfig().min_password_chars:
        print(
            f"sealchat: a password needs at least {HubConfig().min_password_chars} characters",
            file=sys.stderr,
        )
        return None
    return password


def message_quota(text: str) -> int:
    """A ``--message-quota`` (argparse's type): a size that holds the longest message."""
    size = byte_size(text)
    longest = 4 * HubConfig().max_message_chars  # UTF-8 bytes of the longest message
    if size < longest:
        raise argparse.ArgumentTypeError(
            f"{text!r} is less than the longest message takes: give at least {longest:,} bytes"
        )
    return size


def server_config(args: argparse.Namespace) -> ServerConfig:
    """The settings ``sealchat server`` runs with."""
    return ServerConfig(
        host=args.host,
        port=args.port,
        max_connections=args.max_connections,
        max_connections_per_address=args.max_connections_per_address,
        max_unauthenticated_per_address=args.max_unauthenticated_per_address,
        address_connection_burst=args.address_connection_burst,
        address_connections_per_second=args.address_connections_per_second,
        hub=HubConfig(
            open_registration=args.open_registration,
            max_file_size=min(args.max_file_size, args.user_quota),  # what may be stored
            user_quota=args.user_quota,
            message_text_per_day=args.message_quota,
        ),
    )


@_explained
def run_server(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    data_dir = _data_dir(args)
    key = load_or_create_key(data_dir / KEY_FILE)
    store = SqliteStore(data_dir)
    try:  # the servers close it when they stop; whatever happens, it is let go
        if args.demo:
            _ensure_demo_account(store)
        elif _has_demo_password(store):
            _refuse_demo_account(data_dir)
            return 1
        config = server_config(args)
        hub = Hub(store, config.hub)
        log.info("data folder %s", data_dir)
        log.info("server key fingerprint %s", fingerprint(public_bytes(key)))
        if args.threads:
            from sealchat.transports.blocking_server import ThreadedServer

            threaded = ThreadedServer(hub, key, config)
            try:
                address = threaded.bind()
            except OSError as exc:
                return _cannot_listen(config, exc)
            _say_listening([address], "one thread per client")

            for signum in _stop_signals()[1:]:  # SIGINT is Ctrl-C: KeyboardInterrupt
                signal.signal(signum, _stopped_by)
            try:
                threaded.serve_forever()
            except (KeyboardInterrupt, _StoppedBy) as exc:
                # Stopped here, not in the handler: that interrupts the accepting thread,
                # which may hold a lock that stop() takes.
                name = exc.signal.name if isinstance(exc, _StoppedBy) else "SIGINT"
                log.info("%s: shutting down", name)
                threaded.stop()
            log.info("stopped")
            return 0
        return _run_trio(hub, key, config)
    finally:
        store.close()


class _StoppedBy(BaseException):
    """A signal that stops the threaded server, raised in its accepting thread as Ctrl-C
    raises KeyboardInterrupt."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signal = signal.Signals(signum)


def _stopped_by(signum: int, _frame: object) -> None:
    raise _StoppedBy(signum)


def _stop_signals() -> tuple[signal.Signals, ...]:
    """What stops a server cleanly (its clients told why, then "stopped" logged): Ctrl-C, a
    service manager's SIGTERM, and the hang-up of the terminal it runs in, unless it was
    started to ignore that (``nohup``), as it then keeps doing."""
    stops = (signal.SIGINT, signal.SIGTERM)
    if sys.platform == "win32" or signal.getsignal(signal.SIGHUP) is signal.SIG_IGN:
        return stops
    return (*stops, signal.SIGHUP)


def _cannot_listen(config: ServerConfig, exc: OSError) -> int:
    """Say why the server could not listen (a port in use, a host name unknown…)."""
    where = _shown_address(config.host, config.port)
    log.error("cannot listen on %s: %s", where, exc.strerror or exc)
    return 1


def _say_listening(addresses: list[tuple[str, int]], kind: str) -> None:
    where = ", ".join(_shown_address(host, port) for host, port in addresses)
    log.info("listening on %s (%s)", where, kind)


def _shown_address(host: str, port: int) -> str:
    """``host:port``, an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _run_trio(hub: Hub, key: X25519PrivateKey, config: ServerConfig) -> int:
    import trio

    from sealchat.transports.trio_server import TrioServer

    server = TrioServer(hub, key, config)

    async def main() -> int:
        async with trio.open_nursery() as nursery:
            with trio.open_signal_receiver(*_stop_signals()) as signals:
                try:
                    listeners = await nursery.start(server.serve)
                except OSError as exc:
                    with trio.CancelScope(shield=True):
                        await trio.to_thread.run_sync(hub.store.close)
                    return _cannot_listen(config, exc)
                _say_listening([s.socket.getsockname()[:2] for s in listeners], "trio")
                async for signum in signals:
                    log.info("%s: shutting down", signal.Signals(signum).name)
                    server.stop()
                    break
        log.info("stopped")
        return 0

    # Ctrl-C outside the signal receiver (while starting, or a second one while stopping)
    # is raised at a checkpoint of main, never inside trio's bookkeeping (see run_trio in
    # sealchat.cli.login), where it could leave a nursery a task that never runs.
    return trio.run(main, restrict_keyboard_interrupt_to_checkpoints=True)


def _has_demo_password(store: SqliteStore) -> bool:
    """Whether the demo account (left by an earlier ``--demo``) still has the public demo
    password: then anyone can log in."""
    row = store.get_user(user_key(DEMO_USER))
    return row is not None and verify_password(DEMO_PASSWORD, row.password_hash)


def _refuse_demo_account(data_dir: Path) -> None:
    """Say why the server does not start, and what to do."""
    account = f"{DEMO_USER} --data-dir {shlex.quote(str(data_dir))}"
    log.error(
        "not starting: the data folder %s has the demo account %r with the public demo "
        "password from the README (left by an earlier --demo), so anyone could log in with "
        "it. Remove it with 'sealchat user remove %s', or give it a password of its own with "
        "'sealchat user passwd %s'; to run the demo on purpose, start with --demo.",
        data_dir,
        DEMO_USER,
        account,
        account,
    )


def _ensure_demo_account(store: SqliteStore) -> None:
    banner = "!" * 72
    key = user_key(DEMO_USER)
    if store.get_user(key) is not None:
        if not _has_demo_password(store):  # its password was changed: the operator's choice
            log.warning(
                "demo account: user %r exists with a password of its own, not the demo "
                "password from the README; it is left as it is",
                DEMO_USER,
            )
            return
        created = "exists"
    elif store.is_retired(key):
        log.warning("no demo account: the name %r belonged to a removed account", DEMO_USER)
        return
    else:
        store.add_user(DEMO_USER, key, hash_password(DEMO_PASSWORD))
        created = "created"
    log.warning(banner)
    log.warning(
        "DEMO ACCOUNT %s: user %r with the public demo password from the README. "
        "Anyone can log in with it.",
        created,
        DEMO_USER,
    )
    log.warning("Do not run --demo on a server others can reach.")
    log.warning(banner)
