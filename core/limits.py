"""Wire limits of protocol v1: every peer-supplied size is checked against one of these.

They are part of the wire contract (docs/protocol.md); a server may enforce lower limits of its
own (for example a shorter maximum message) but never higher ones.
"""

from typing import Final

PREAMBLE_SIZE: Final = 8
"""Bytes in the plaintext preamble each side sends first."""

MAX_FRAME: Final = 65535
"""Largest Noise message (the 4-byte length prefix is 1..MAX_FRAME)."""

TAG_SIZE: Final = 16
"""AES-GCM authentication tag appended to every encrypted Noise payload."""

MAX_RECORD: Final = MAX_FRAME - TAG_SIZE
"""Largest encoded record (plaintext of one transport message)."""

REKEY_INTERVAL: Final = 65536
"""A sender calls Noise Rekey() after each REKEY_INTERVAL messages it encrypted with a key."""

MAX_USERNAME: Final = 32
MAX_PASSWORD: Final = 1024
MAX_ROOM: Final = 64
MAX_TEXT: Final = 8000
"""Characters in one chat message (8000 code points encode to at most 32000 bytes)."""
MAX_REASON: Final = 500
MAX_CODE: Final = 32
MAX_ID: Final = 64
"""Characters in client message ids and server file ids."""
MAX_FILE_NAME: Final = 4096
"""Characters in a file name; names are display text only, never used as paths."""
MAX_CHUNK: Final = 60 * 1024
"""Bytes of file data in one FileChunk record."""
MAX_LIST: Final = 500
"""Items in one list-carrying record (member lists, room lists, file lists); longer lists are
sent as several records with ``more=True`` on all but the last (Authenticated names only the
most recent of a user's conversations)."""
MAX_FEATURES: Final = 8
"""Names in Authenticated's ``features``; each is at most MAX_CODE ASCII characters (so the
longest Authenticated still fits in a record)."""
MAX_HISTORY_PAGE: Final = 200
"""Messages one HistoryRequest may ask for."""
MAX_UINT: Final = 2**63 - 1
"""Largest integer on the wire (ids, offsets, sizes, nonces): SQLite's signed 64-bit range."""
MAX_TIMESTAMP: Final = 1e11
"""Largest timestamp or delay in seconds (about the year 5100): finite, never infinity."""
DIGEST_SIZE: Final = 32
"""Bytes of a SHA-256 digest."""
