"""Encoding and decoding of records: strict MessagePack, one rule set for both directions."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Final, Union, get_args, get_origin

import msgspec

from sealchat.core import limits
from sealchat.core.errors import LocalProtocolError
from sealchat.core.records import RECORD_TYPES, Record

_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[Record] = msgspec.msgpack.Decoder(
    Union[RECORD_TYPES]  # noqa: UP007  (Union over a runtime tuple of types)
)


def _viewing(record_type: type[Record]) -> type[msgspec.Struct]:
    """A twin of ``record_type`` whose ``bytes`` fields decode as views of the input, with
    the same limits: checking an outgoing record never copies its bulk data."""
    fields = []
    changed = False
    for field in msgspec.structs.fields(record_type):
        annotation = field.type
        if get_origin(annotation) is Annotated and get_args(annotation)[0] is bytes:
            annotation = Annotated[memoryview, *get_args(annotation)[1:]]
            changed = True
        default = msgspec.NODEFAULT if field.required else field.default
        fields.append((field.name, annotation, default))
    if not changed:
        return record_type
    config = record_type.__struct_config__
    return msgspec.defstruct(
        record_type.__name__, fields, tag=config.tag, array_like=True, kw_only=True, gc=config.gc
    )


# One checker per record type: cheaper than the union decoder, which must look up the tag.
_checkers = {t: msgspec.msgpack.Decoder(_viewing(t)) for t in RECORD_TYPES}


def encode_record(record: Record) -> bytes:
    """Encode ``record`` for sending, checking it against the same rules a receiver applies.

    Raises ``LocalProtocolError`` for a record that breaks a field limit or type (an integer
    past MessagePack's range, a list that contains itself, a view of bytes that are not
    contiguous included), or that is larger than one transport message can carry. The check
    runs the strict decoder over the encoding, so the sender enforces exactly what every
    receiver enforces.
    """
    checker = _checkers.get(type(record))
    if checker is None:
        raise LocalProtocolError(f"{type(record).__name__} is not a sealchat record")
    try:
        payload = _encoder.encode(record)
        checker.decode(payload)
    except (msgspec.ValidationError, TypeError, UnicodeError, OverflowError, BufferError) as exc:
        raise LocalProtocolError(
            f"invalid {type(record).__name__}: {_named(record, exc)}"
        ) from None
    except RecursionError:  # a container that contains itself, or nested past msgspec's depth
        raise LocalProtocolError(
            f"invalid {type(record).__name__}: nested too deep (does a list contain itself?)"
        ) from None
    if len(payload) > limits.MAX_RECORD:
        raise LocalProtocolError(
            f"{type(record).__name__} encodes to {len(payload)} bytes; "
            f"at most {limits.MAX_RECORD} fit in one message"
        )
    return payload


def _prefix(record_type: type[Record]) -> bytes:
    """The bytes every encoding of ``record_type`` begins with: the array header (its length
    is fixed, as every field is encoded, defaults too) and the tag."""
    config = record_type.__struct_config__
    if not config.array_like or config.omit_defaults or not isinstance(config.tag, str):
        raise TypeError(f"{record_type.__name__}: encodings without a fixed prefix")
    fields = len(record_type.__struct_fields__)
    encoded = _encoder.encode([config.tag, *[None] * fields])  # each None is one byte
    return encoded[: len(encoded) - fields]


PREFIXES: Final[dict[type[Record], bytes]] = {t: _prefix(t) for t in RECORD_TYPES}
r"""What each record type's encoding begins with (``b"\x99\xa3msg"`` for Message): a cheap
check that an encoding made beforehand is one of the record it is sent as."""


_AT_FIELD: Final = re.compile(r" - at `\$\[(\d+)\]`$")
"""msgspec's position of a top-level field in an error (element 0 of a record is its tag)."""


def _named(record: Record, error: Exception) -> str:
    """``error`` naming the field it is about (`limit`), not its position (`$[4]`)."""
    text = str(error)
    fields = type(record).__struct_fields__
    at = _AT_FIELD.search(text)
    if at is None or not 0 < int(at[1]) <= len(fields):
        return text
    return f"{text[: at.start()]} - in `{fields[int(at[1]) - 1]}`"


decode_record: Callable[[bytes], Record] = _decoder.decode
"""Decode one received record, from immutable ``bytes``: a chunk's data is a view of them.
Anything malformed raises one of ``DECODE_ERRORS``, which the connection turns into a
``RemoteProtocolError`` (no wrapper: this runs once per record)."""

DECODE_ERRORS: Final = (msgspec.DecodeError, UnicodeError, RecursionError)
"""What decoding a peer's bytes can raise (ValidationError is a DecodeError; RecursionError
is msgspec's depth limit, reached by an extra trailing element nested ~1,000 deep)."""
