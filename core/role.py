"""Which end of a connection this is."""

from enum import Enum


class Role(Enum):
    """The client initiates the Noise handshake; the server responds."""

    CLIENT = "client"
    SERVER = "server"

    @property
    def peer(self) -> "Role":
        """The role at the other end."""
        return Role.SERVER if self is Role.CLIENT else Role.CLIENT
