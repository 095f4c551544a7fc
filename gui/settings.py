"""What the desktop client remembers between runs: the theme and recent servers.

Never a password. Stored as JSON in the user's sealchat config folder, written atomically,
mode 0600.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sealchat.transports.keyfile import ensure_private_dir, replace_privately
from sealchat.transports.pinning import config_dir


@dataclass
class Server:
    host: str = "127.0.0.1"
    port: int = 7878
    username: str = ""


@dataclass
class Settings:
    theme: str = "dark"
    server: Server | None = None
    """The server remembered at the last login ("remember this server")."""
    path: Path = field(default_factory=lambda: config_dir() / "gui.json", repr=False)

    @classmethod
    def load(cls, path: Path | None = None) -> Settings:
        settings = cls() if path is None else cls(path=path)
        try:
            data = json.loads(settings.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return settings
        if not isinstance(data, dict):
            return settings
        if data.get("theme") in ("dark", "light"):
            settings.theme = data["theme"]
        server = data.get("server")
        if isinstance(server, dict):
            try:
                settings.server = Server(
                    host=str(server["host"]),
                    port=int(server["port"]),
                    username=str(server.get("username", "")),
                )
            except (KeyError, TypeError, ValueError):
                settings.server = None
        return settings

    def save(self) -> None:
        """Write the settings atomically, through a new private temporary file of a random
        name (as the pin file): never through a file or a link someone placed there."""
        ensure_private_dir(self.path.parent)
        data = {"theme": self.theme, "server": asdict(self.server) if self.server else None}
        replace_privately(self.path, json.dumps(data, indent=2).encode())
