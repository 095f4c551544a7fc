"""sealchat: a small self-hosted secure chat.

The code lives in subpackages: `sealchat.core` (the pure protocol), `sealchat.transports`
(memory, blocking-socket and trio I/O), `sealchat.gui` and `sealchat.cli`.
"""

__version__ = "0.1.0"
