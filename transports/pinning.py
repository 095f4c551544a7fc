"""Server-key pinning: a ``known_servers`` file, trust on first use only with consent.

One line per server: ``host:port SHA256:fingerprint``; host names are not case sensitive, and
``name.`` is ``name``, so the host is compared in lower case without a trailing dot (lines
written otherwise still count). A server whose key is pinned must show
that key; a changed key is a hard failure that names both fingerprints and how to resolve it.
Pinning changes only that server's line (other lines, comments included, stay as they are),
one writer at a time.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from sealchat.core import PeerKeyReceived
from sealchat.transports.keyfile import ensure_private_dir, replace_privately

try:
    import fcntl
except ImportError:  # Windows: writers are not serialised
    fcntl = None  # type: ignore[assignment]

KNOWN_SERVERS = "known_servers"
FINGERPRINT_FORMAT = "SHA256: followed by 43 characters of A-Z, a-z, 0-9, + and /"
"""What ``sealchat.core.fingerprint`` produces (unpadded base64 of a SHA-256), in words."""
_FINGERPRINT = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")


def config_dir() -> Path:
    """This user's sealchat settings folder (known servers, client key, preferences)."""
    return Path(platformdirs.user_config_dir("sealchat", appauthor=False))


class ServerKeyChanged(Exception):
    """The server shows a key other than the pinned one: possibly an attacker in between."""

    def __init__(self, server: str, pinned: str, shown: str, path: Path) -> None:
        self.server, self.pinned, self.shown, self.path = server, pinned, shown, path
        super().__init__(
            f"the key of {server} has CHANGED: pinned {pinned}, shown {shown}. Someone may be "
            f"intercepting the connection. If the server's operator confirms the new key, "
            f"run 'sealchat trust {server} {shown}' (or edit {path}); otherwise do not connect."
        )


class ServerKeyUnknown(Exception):
    """The server's key is not pinned and nobody was asked, or the user declined it."""

    def __init__(self, server: str, shown: str) -> None:
        self.server, self.shown = server, shown
        super().__init__(
            f"the key of {server} is not known: {shown}. Check this fingerprint with the "
            f"server's operator, then run 'sealchat trust {server} {shown}'"
        )


class UnsafePinFile(PermissionError):
    """The pin file could have been changed by someone other than this user."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the pin file says about a key: ``pinned`` (matches), ``new`` or ``changed``."""

    status: str
    pinned: str | None


def _host_name(host: str) -> str:
    """A host as servers are named: in lower case, without a trailing dot."""
    return host.lower().removesuffix(".")


def server_name(host: str, port: int) -> str:
    """How a server is named in the pin file and in messages (the host in lower case,
    without a trailing dot)."""
    host = _host_name(host)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _canonical(server: str) -> str:
    """``server`` (``host:port`` or ``[host]:port``) with its host as ``server_name`` writes
    it; anything else as it is."""
    host, sep, port = server.rpartition(":")
    if not sep:
        return server
    if host.startswith("[") and host.endswith("]"):
        return f"[{host[1:-1].lower()}]:{port}"
    return f"{_host_name(host)}:{port}"


class KnownServers:
    """The pin file. Reads it afresh each time, so several clients can share it."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or config_dir() / KNOWN_SERVERS

    def __repr__(self) -> str:
        return f"KnownServers({str(self.path)!r})"

    def lookup(self, server: str) -> str | None:
        """The pinned fingerprint of ``server``, if any."""
        return self._read().get(_canonical(server))

    def check(self, server: str, fingerprint: str) -> Verdict:
        pinned = self.lookup(server)
        if pinned is None:
            return Verdict("new", None)
        return Verdict("pinned" if pinned == fingerprint else "changed", pinned)

    def require(self, server: str, fingerprint: str) -> bool:
        """True if ``fingerprint`` is pinned for ``server``, False if the server is new;
        ServerKeyChanged if another key is pinned."""
        verdict = self.check(server, fingerprint)
        if verdict.status == "changed":
            assert verdict.pinned is not None
            raise ServerKeyChanged(server, verdict.pinned, fingerprint, self.path)
        return verdict.status == "pinned"

    def pin(self, server: str, fingerprint: str) -> None:
        """Pin (or re-pin) ``server`` (``host:port``, as ``server_name`` writes it; the
        host's case does not matter) to ``fingerprint``, atomically: ValueError, saying what is
        wrong, if either is malformed. The server's line is replaced (or appended); the file's
        other lines stay as they are."""
        server = _canonical(server)
        _check_server(server)
        _check_fingerprint(fingerprint)
        ensure_private_dir(self.path.parent)
        with self._locked():
            lines, pinned = [], False
            for line in self._lines():
                entry = _entry(line)
                if entry is None or _canonical(entry[0]) != server:
                    lines.append(line)
                elif not pinned:  # in place, with the line's own ending; later duplicates go
                    ending = line[len(line.rstrip(b"\r\n")) :] or b"\n"
                    lines.append(f"{server} {fingerprint}".encode() + ending)
                    pinned = True
            if not pinned:
                if lines and not lines[-1].endswith((b"\n", b"\r")):
                    lines.append(b"\n")
                lines.append(f"{server} {fingerprint}\n".encode())
            replace_privately(self.path, b"".join(lines))

    def _read(self) -> dict[str, str]:
        entries = (_entry(line) for line in self._lines())
        return {_canonical(entry[0]): entry[1] for entry in entries if entry is not None}

    def _lines(self) -> list[bytes]:
        """The file's lines, each with its ending, exactly as they are on disk.

        UnsafePinFile (a PermissionError) if someone other than this user could have changed
        the file: a pin anyone can write protects nothing."""
        try:
            with open(self.path, "rb") as pins:
                _check_only_ours(self.path, os.fstat(pins.fileno()))
                return pins.read().splitlines(keepends=True)
        except FileNotFoundError:
            return []

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the lock file next to the pin file: one writer at a time (not on Windows)."""
        if fcntl is None:
            yield
            return
        lock = self.path.with_name(f".{self.path.name}.lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # released by closing
            yield
        finally:
            os.close(fd)


def _check_only_ours(path: Path, status: os.stat_result) -> None:
    """UnsafePinFile unless ``status`` (of ``path``) is a file of this user that no one else
    may write (on POSIX)."""
    if os.name != "posix":
        return
    if status.st_uid != os.geteuid():
        problem = "belongs to another user"
    elif status.st_mode & 0o022:
        problem = "can be changed by other users"
    else:
        return
    raise UnsafePinFile(
        f"the pin file {path} {problem}, so its pins cannot be trusted; check its contents, "
        f"then make it yours alone: chown $USER {path} && chmod 600 {path}"
    )


def _entry(line: bytes) -> tuple[str, str] | None:
    """The (server, fingerprint) of a pin line; None for a comment or anything else."""
    parts = line.decode("utf-8", "replace").split()
    if len(parts) == 2 and not parts[0].startswith("#"):
        return parts[0], parts[1]
    return None


def _blank_or_control(text: str) -> bool:
    """Whether ``text`` holds whitespace, control or other unprintable characters."""
    return any(c.isspace() or not c.isprintable() for c in text)


def _check_fingerprint(fingerprint: str) -> None:
    if _FINGERPRINT.fullmatch(fingerprint):
        return
    body = fingerprint.removeprefix("SHA256:")
    if body == fingerprint:
        problem = "it does not start with SHA256:"
    elif _blank_or_control(body):
        problem = "it contains spaces, tabs, line breaks or control characters"
    elif len(body) != 43:
        problem = f"it has {len(body)} characters after SHA256:, not 43"
    else:
        problem = "it has characters other than A-Z, a-z, 0-9, + and /"
    raise ValueError(
        f"not a sealchat fingerprint: {fingerprint!r} ({problem}); a fingerprint is "
        f"{FINGERPRINT_FORMAT}, as 'sealchat server-key' prints it on the server"
    )


def is_port(text: str) -> bool:
    """Whether ``text`` is a TCP port number (ASCII digits: "78\u00b2" is a digit string)."""
    return text.isascii() and text.isdigit() and 1 <= int(text) <= 65535


def _check_server(server: str) -> None:
    bracketed, sep, port = server.rpartition(":")
    host = bracketed[1:-1] if bracketed.startswith("[") and bracketed.endswith("]") else bracketed
    if not sep or not host:
        problem = "give it as HOST:PORT"
    elif _blank_or_control(host) or host.startswith("#"):
        problem = "the host contains spaces, control characters or a leading #"
    elif not is_port(port):
        problem = "the port is not a number from 1 to 65535"
    elif server != server_name(host, int(port)):
        problem = f"write it as {server_name(host, int(port))}"
    else:
        return
    raise ValueError(f"not a server to pin: {server!r} ({problem})")


def pinned(
    known: KnownServers, server: str, confirm: Callable[[str, str], bool] | None = None
) -> Callable[[PeerKeyReceived], bool]:
    """A key policy for the blocking client: pinned keys pass, a changed key raises
    ServerKeyChanged, a new one is pinned only if ``confirm(server, fingerprint)`` says so."""

    def decide(event: PeerKeyReceived) -> bool:
        if known.require(server, event.fingerprint):
            return True
        if confirm is None or not confirm(server, event.fingerprint):
            raise ServerKeyUnknown(server, event.fingerprint)
        known.pin(server, event.fingerprint)
        return True

    return decide
