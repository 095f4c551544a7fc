"""The exceptions of the sealchat protocol core."""


class ProtocolError(Exception):
    """Base class: the sealchat protocol was violated."""


class LocalProtocolError(ProtocolError):
    """This side misused the API: for example it sent a record the current state forbids."""


class RemoteProtocolError(ProtocolError):
    """The peer misbehaved: bad framing, failed decryption, a record it may not send."""
