"""Server-key pinning: a ``known_servers`` file, trust on first use only with consent.

One line per server: ``host:port SHA256:fingerprint``. A server whose key is pinned must show
that key; a changed key is a hard failure that names both fingerprints and how to resolve it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from sealchat.core import PeerKeyReceived
from sealchat.transports.keyfile import ensure_private_dir

KNOWN_SERVERS = "known_servers"


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


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the pin file says about a key: ``pinned`` (matches), ``new`` or ``changed``."""

    status: str
    pinned: str | None


def server_name(host: str, port: int) -> str:
    """How a server is named in the pin file and in messages."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class KnownServers:
    """The pin file. Reads it afresh each time, so several clients can share it."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or config_dir() / KNOWN_SERVERS

    def __repr__(self) -> str:
        return f"KnownServers({str(self.path)!r})"

    def lookup(self, server: str) -> str | None:
        """The pinned fingerprint of ``server``, if any."""
        return self._read().get(server)

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
        """Pin (or re-pin) ``server`` to ``fingerprint``, atomically."""
        if not fingerprint.startswith("SHA256:") or " " in fingerprint:
            raise ValueError(f"not a sealchat fingerprint: {fingerprint!r}")
        entries = self._read()
        entries[server] = fingerprint
        ensure_private_dir(self.path.parent)
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        with open(temporary, "w", encoding="utf-8") as out:
            os.chmod(temporary, 0o600)
            out.writelines(f"{name} {fp}\n" for name, fp in sorted(entries.items()))
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, self.path)

    def _read(self) -> dict[str, str]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        entries = {}
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 2 and not line.startswith("#"):
                entries[parts[0]] = parts[1]
        return entries


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
