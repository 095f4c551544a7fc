"""Records: encoding, limits, reprs that keep secrets, fingerprints, preambles."""

from __future__ import annotations

import base64
import gc
import hashlib
import os
from collections.abc import Callable

import msgspec
import pytest

from sealchat.core import (
    RECORD_TYPES,
    Authenticated,
    ChangePassword,
    FileChunk,
    FileOffer,
    HistoryRequest,
    KeysEstablished,
    LocalProtocolError,
    Login,
    Message,
    PeerKeyReceived,
    Record,
    Register,
    fingerprint,
)
from sealchat.core.codec import PREFIXES, decode_record, encode_record
from sealchat.core.limits import (
    MAX_CHUNK,
    MAX_CODE,
    MAX_FEATURES,
    MAX_LIST,
    MAX_RECORD,
    MAX_UINT,
    MAX_USERNAME,
)
from sealchat.core.preamble import PROTOCOL_VERSION, Version, encode_preamble, parse_preamble
from sealchat.core.records import FileInfo, file_chunks
from tests.samples import DIGEST, SAMPLES


@pytest.mark.parametrize("record_type", RECORD_TYPES, ids=lambda t: t.__name__)
def test_every_record_round_trips(record_type: type[Record]) -> None:
    record = SAMPLES[record_type]
    assert decode_record(encode_record(record)) == record


def test_encoding_is_a_tagged_array() -> None:
    encoded = encode_record(Message(text="hi", room="general"))
    assert msgspec.msgpack.decode(encoded)[:3] == ["msg", "hi", "general"]


def test_each_record_types_encodings_begin_with_its_own_prefix() -> None:
    """What lets ``Connection.send`` check an encoding made beforehand with a startswith."""
    assert PREFIXES[Message] == b"\x99\xa3msg"
    for record_type in RECORD_TYPES:
        config = record_type.__struct_config__
        assert config.array_like
        assert not config.omit_defaults  # every field encoded: the array's length is fixed
        sample = SAMPLES[record_type]
        defaults = msgspec.structs.replace(
            sample,
            **{
                field.name: field.default
                for field in msgspec.structs.fields(record_type)
                if not field.required
            },
        )
        for record in (sample, defaults):
            encoded = encode_record(record)
            owners = [t for t, prefix in PREFIXES.items() if encoded.startswith(prefix)]
            assert owners == [record_type]


def test_tags_are_unique() -> None:
    tags = [t.__struct_config__.tag for t in RECORD_TYPES]
    assert len(set(tags)) == len(tags)


@pytest.mark.parametrize("record", list(SAMPLES.values()), ids=lambda r: type(r).__name__)
def test_repr_never_shows_hidden_fields(record: Record) -> None:
    text = repr(record)
    assert text.startswith(type(record).__name__ + "(")
    for name in record._hidden | record._secret:
        value = getattr(record, name)
        if isinstance(value, str) and value:
            assert value not in text
        elif isinstance(value, bytes) and value:
            assert repr(value) not in text
            assert value.hex() not in text
    for name in record._secret:  # not even a password's length
        assert f"{name}=<hidden>" in text


def test_repr_hides_passwords_text_data_and_digests() -> None:
    for login_type in (Login, Register):
        login = login_type(username="esha", password="s3cret")
        name = login_type.__name__
        assert repr(login) == f"{name}(username='esha', password=<hidden>, announce=True)"
    assert "plaintext" not in repr(Message(text="plaintext", room="r"))
    assert "<9 chars>" in repr(Message(text="plaintext", room="r"))
    chunk = FileChunk(transfer=1, offset=0, data=b"confidential")
    assert "confidential" not in repr(chunk)
    assert "<12 bytes>" in repr(chunk)
    offer = FileOffer(transfer=1, name="a", size=1, sha256=DIGEST)
    assert DIGEST.hex() not in repr(offer)
    assert repr(DIGEST) not in repr(offer)
    assert "file=None" in repr(Message(text="x", room="r"))
    change = ChangePassword(old_password="old-s3cret", new_password="new-s3cret")
    assert repr(change) == "ChangePassword(old_password=<hidden>, new_password=<hidden>)"


def test_connection_events_show_fingerprints_not_keys() -> None:
    key = bytes(range(32))
    for event in (
        PeerKeyReceived(public_key=key, fingerprint=fingerprint(key)),
        KeysEstablished(peer_key=key, fingerprint=fingerprint(key), handshake_hash=key),
    ):
        assert repr(key) not in repr(event)
        assert key.hex() not in repr(event)
        assert fingerprint(key) in repr(event)
        assert event.__rich_repr__() == [("fingerprint", fingerprint(key))]


def test_pretty_printers_see_what_repr_shows() -> None:
    # rich (its pretty printer, its tracebacks' locals, its log handler) asks for
    # __rich_repr__ before repr; msgspec's gives every field, the password too.
    login = Login(username="esha", password="s3cret")
    assert (
        repr(dict(login.__rich_repr__()))
        == "{'username': 'esha', 'password': <hidden>, 'announce': True}"
    )
    for record in SAMPLES.values():
        fields = ", ".join(f"{name}={value!r}" for name, value in record.__rich_repr__())
        assert f"{type(record).__name__}({fields})" == repr(record)
    info = FileInfo(file_id="f", name="a", size=1, sha256=DIGEST)
    assert repr(DIGEST) not in repr(info.__rich_repr__())


@pytest.mark.parametrize("record_type", RECORD_TYPES, ids=lambda t: t.__name__)
def test_records_are_left_out_of_garbage_collection(record_type: type[Record]) -> None:
    # Immutable and acyclic, so the collector need not scan the many a server holds; decoded
    # records (and the sender's check of them) are built the same way.
    record = SAMPLES[record_type]
    assert not gc.is_tracked(record)
    assert not gc.is_tracked(decode_record(encode_record(record)))


def test_records_are_immutable_and_keyword_only() -> None:
    message = Message(text="hi", room="general")
    with pytest.raises(AttributeError):
        message.text = "changed"  # type: ignore[misc]
    with pytest.raises(TypeError):
        Message("hi")  # type: ignore[misc]


def test_login_and_authenticated_need_only_the_documented_keywords() -> None:
    assert Login(username="esha", password="pw").username == "esha"
    assert Authenticated(username="esha").username == "esha"


def test_an_authenticated_of_an_older_server_says_nothing_of_conversations_or_files() -> None:
    older = decode_record(msgspec.msgpack.encode(["auth", "esha"]))
    assert older == Authenticated(username="esha", conversations=(), max_file_size=0)
    assert older.features == ()  # an older server takes no ChangePassword
    assert older.max_message_chars == 0


class _OlderAuthenticated(msgspec.Struct, tag="auth", array_like=True):
    """Authenticated as a client from before ``max_message_chars`` decodes it."""

    username: str
    conversations: tuple[str, ...] = ()
    max_file_size: int = 0
    features: tuple[str, ...] = ()


def test_the_message_limit_is_appended_to_authenticated_so_older_peers_get_on() -> None:
    older_server = msgspec.msgpack.encode(["auth", "esha", [], 1000, ["change-password"]])
    said = decode_record(older_server)
    assert isinstance(said, Authenticated)
    assert (said.max_file_size, said.features, said.max_message_chars) == (
        1000,
        ("change-password",),
        0,  # not said
    )
    newer = encode_record(
        Authenticated(username="esha", max_file_size=1000, max_message_chars=4000)
    )
    assert msgspec.msgpack.decode(newer) == ["auth", "esha", [], 1000, [], 4000]
    older_client = msgspec.msgpack.decode(newer, type=_OlderAuthenticated)
    assert older_client == _OlderAuthenticated(username="esha", max_file_size=1000)


def test_an_authenticated_listing_the_most_conversations_of_the_longest_names_fits() -> None:
    longest = "\U0001f600" * MAX_USERNAME  # 4 bytes a code point: the longest encoding
    names = tuple(longest for _ in range(MAX_LIST))
    features = tuple("f" * MAX_CODE for _ in range(MAX_FEATURES))
    record = Authenticated(
        username=longest,
        conversations=names,
        max_file_size=MAX_UINT,
        features=features,
        max_message_chars=MAX_UINT,
    )
    assert len(encode_record(record)) <= MAX_RECORD
    assert decode_record(encode_record(record)) == record
    with pytest.raises(LocalProtocolError, match="invalid"):
        encode_record(Authenticated(username="esha", conversations=(*names, "one more")))


@pytest.mark.parametrize(
    "record",
    [
        Message(text="x" * 8001, room="r"),
        Message(text="x", room="r" * 65),
        Login(username="u" * 33, password="p"),
        FileChunk(transfer=1, offset=0, data=bytes(60 * 1024 + 1)),
        FileChunk(transfer=-1, offset=0, data=b""),
        FileOffer(transfer=1, name="a", size=1, sha256=b"short"),
        ChangePassword(old_password="p" * 1025, new_password="new-password"),
        ChangePassword(old_password="old-password", new_password="p" * 1025),
        Authenticated(username="esha", features=("f",) * 9),
        Authenticated(username="esha", features=("Change-Password",)),
    ],
    ids=[
        "text",
        "room",
        "username",
        "chunk",
        "negative",
        "digest",
        "old-password",
        "new-password",
        "features",
        "feature-name",
    ],
)
def test_limits_are_enforced_when_sending(record: Record) -> None:
    with pytest.raises(LocalProtocolError, match="invalid"):
        encode_record(record)


def _containing_itself() -> Authenticated:
    features: list[object] = []
    features.append(features)
    return Authenticated(username="esha", features=features)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: Message(text="hi", room="r", id=2**70), "can't serialize ints"),
        (lambda: Message(text="hi", room="r", id=-(2**70)), "can't serialize ints"),
        (_containing_itself, "nested too deep"),
        (
            lambda: FileChunk(transfer=1, offset=0, data=memoryview(b"abcdef")[::2]),
            "not C-contiguous",
        ),
    ],
    ids=["huge-int", "huge-negative-int", "list-containing-itself", "strided-view"],
)
def test_what_msgpack_cannot_encode_is_refused_as_invalid(
    make: Callable[[], Record], error: str
) -> None:
    """Not an OverflowError, RecursionError or BufferError: callers (and the transports'
    ``put``) catch LocalProtocolError only."""
    with pytest.raises(LocalProtocolError, match=f"^invalid {type(make()).__name__}: .*{error}"):
        encode_record(make())


def test_a_record_refused_when_sending_names_the_field() -> None:
    with pytest.raises(
        LocalProtocolError, match=r"^invalid HistoryRequest: .* <= 200 - in `limit`$"
    ):
        encode_record(HistoryRequest(room="general", limit=500))
    with pytest.raises(LocalProtocolError, match=r"length <= 64 - in `room`$"):
        encode_record(Message(text="hi", room="r" * 65))


def test_only_records_of_the_protocol_can_be_encoded() -> None:
    class Shout(Message, tag="shout"):
        pass

    with pytest.raises(LocalProtocolError, match="Shout is not a sealchat record"):
        encode_record(Shout(text="HI", room="general"))
    with pytest.raises(LocalProtocolError, match="str is not a sealchat record"):
        encode_record("hi")  # type: ignore[arg-type]


def test_a_file_is_cut_into_chunks_and_received_as_views_never_copies() -> None:
    block = os.urandom(3 * MAX_CHUNK + 5)
    chunks = list(file_chunks(7, 100, block))
    assert [(c.transfer, c.offset, len(c.data)) for c in chunks] == [
        (7, 100, MAX_CHUNK),
        (7, 100 + MAX_CHUNK, MAX_CHUNK),
        (7, 100 + 2 * MAX_CHUNK, MAX_CHUNK),
        (7, 100 + 3 * MAX_CHUNK, 5),
    ]
    assert b"".join(c.data for c in chunks) == block
    assert all(c.data.obj is block and c.data.readonly for c in chunks)

    payload = encode_record(chunks[1])
    received = decode_record(payload)
    assert isinstance(received, FileChunk)
    assert received == chunks[1]
    assert isinstance(received.data, memoryview)
    assert received.data.obj is payload  # a view of the decrypted record: immutable bytes
    assert received.data.readonly
    assert (
        hashlib.sha256(received.data).digest()
        == hashlib.sha256(block[MAX_CHUNK:][:MAX_CHUNK]).digest()
    )


def test_limits_are_enforced_when_receiving() -> None:
    payload = msgspec.msgpack.encode(["chunk", 1, 0, bytes(60 * 1024 + 1)])
    with pytest.raises(msgspec.ValidationError, match="length <= 61440"):
        decode_record(payload)


def test_fingerprint_is_openssh_style_and_domain_separated() -> None:
    key = bytes(32)
    fp = fingerprint(key)
    assert fp.startswith("SHA256:")
    assert "=" not in fp
    raw = base64.b64decode(fp[7:] + "=")
    assert len(raw) == 32
    assert raw != hashlib.sha256(key).digest()  # not a bare hash of the key
    assert fingerprint(bytes(31) + b"\x01") != fp


def test_preamble_layout() -> None:
    assert encode_preamble() == b"SLCH\x01\x00\x00\x00"
    assert parse_preamble(b"SLCH\x01\x05\x00\x00", peer="server") == Version(1, 5)
    assert str(PROTOCOL_VERSION) == "1.0"
