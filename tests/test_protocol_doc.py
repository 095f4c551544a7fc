"""docs/protocol.md must agree with the code: constants, limits, record tables and examples.

The wire spec is written by hand; these tests make it fail loudly when the code moves on and the
document does not (a renamed field, a new record, a changed limit, a stale hex example).
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import msgspec
import pytest

from sealchat.core import (
    RECORD_TYPES,
    FileInfo,
    MemberInfo,
    ReadMarker,
    RoomInfo,
    State,
    fingerprint,
    limits,
)
from sealchat.core.codec import decode_record, encode_record
from sealchat.core.connection import (
    HANDSHAKE_TIMEOUT,
    KEEPALIVE_INTERVAL,
    MAX_RECEIVE_BUFFER,
    NOISE_PROTOCOL,
)
from sealchat.core.hub import HubConfig
from sealchat.core.preamble import MAGIC, encode_preamble
from sealchat.core.records import Record
from sealchat.core.state import TRANSITIONS
from sealchat.transports.server_config import WRITE_SLICE, ServerConfig
from tests.samples import SAMPLES

DOC = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text(encoding="utf-8")
ITEM_TYPES = (FileInfo, RoomInfo, MemberInfo, ReadMarker)
HEX_BLOCK = re.compile(r"^```hex\n(.*?)^```", re.MULTILINE | re.DOTALL)


# --- reading the document -----------------------------------------------------------------


def section(heading: str) -> str:
    """The text under the one heading matching ``heading`` (a regex for the whole heading
    line), up to the next heading of the same or a higher level."""
    matches = list(re.finditer(rf"^(#+) {heading}$", DOC, re.MULTILINE))
    assert len(matches) == 1, f"expected one heading matching {heading!r}, got {len(matches)}"
    match = matches[0]
    level = len(match.group(1))
    end = re.compile(rf"^#{{1,{level}}} ", re.MULTILINE).search(DOC, match.end())
    return DOC[match.end() : end.start() if end else len(DOC)]


def record_heading(record_type: type[Record]) -> str:
    tag = record_type.__struct_config__.tag
    return rf"[\d.]+ `{re.escape(str(tag))}` — {record_type.__name__}"


def record_section(record_type: type[Record]) -> str:
    return section(record_heading(record_type))


def table_rows(text: str) -> list[list[str]]:
    """The cells of every field-table row (rows whose first cell is a position number)."""
    rows = []
    for line in text.splitlines():
        if re.match(r"^\| \d+ \|", line):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def bullet(text: str, label: str) -> str:
    """The value of a ``- **label:** value`` line."""
    match = re.search(rf"^- \*\*{label}:\*\* (.+)$", text, re.MULTILINE)
    assert match, f"no '{label}' line"
    return match.group(1)


def table_value(name: str) -> str:
    """The value cell of the row for constant ``name`` in a constants table."""
    match = re.search(rf"^\| `{name}` \| ([^|]+) \|", DOC, re.MULTILINE)
    assert match, f"{name} is missing from the constants tables"
    return match.group(1).strip()


# --- what the code says -------------------------------------------------------------------


def type_text(t: msgspec.inspect.Type) -> str:
    """How the field tables name a type."""
    if isinstance(t, msgspec.inspect.ListType | msgspec.inspect.VarTupleType):
        return f"array of {type_text(t.item_type)}"
    if isinstance(t, msgspec.inspect.StructType):
        return t.cls.__name__
    if isinstance(t, msgspec.inspect.UnionType):
        return " or ".join(type_text(member) for member in t.types)
    names = {
        msgspec.inspect.StrType: "str",
        msgspec.inspect.BytesType: "bin",
        msgspec.inspect.MemoryViewType: "bin",
        msgspec.inspect.IntType: "int",
        msgspec.inspect.FloatType: "float",
        msgspec.inspect.BoolType: "bool",
        msgspec.inspect.NoneType: "nil",
    }
    return names[type(t)]


def limit_text(t: msgspec.inspect.Type) -> str:
    """How the field tables state a type's limits."""
    if isinstance(t, msgspec.inspect.StrType):
        return f"≤ {t.max_length} code points"
    if isinstance(t, msgspec.inspect.BytesType | msgspec.inspect.MemoryViewType):
        if t.min_length == t.max_length:
            return f"exactly {t.max_length} bytes"
        return f"≤ {t.max_length} bytes"
    if isinstance(t, msgspec.inspect.IntType):
        upper = "2^63\N{MINUS SIGN}1" if t.le == limits.MAX_UINT else str(t.le)
        return f"{t.ge} … {upper}"
    if isinstance(t, msgspec.inspect.FloatType):
        return f"{t.ge:g} … {t.le:.0e}".replace("e+", "e")
    if isinstance(t, msgspec.inspect.ListType | msgspec.inspect.VarTupleType):
        item = limit_text(t.item_type)
        return f"≤ {t.max_length} items" + ("" if item == "—" else f", each {item}")
    return "—"


def default_from_cell(cell: str) -> object:
    """A Default cell as a Python value (``required`` stays a string)."""
    if cell == "required":
        return cell
    value = cell.strip("`")
    return None if value == "nil" else json.loads(value)


def allowed_states(record_type: type[Record]) -> list[str]:
    return [state.name for state in State if (state, record_type) in TRANSITIONS]


def senders(record_type: type[Record]) -> str:
    roles = {role.value for role in record_type.sent_by}
    return "client and server" if len(roles) == 2 else roles.pop()


def check_field_table(struct_type: type[msgspec.Struct], text: str, first: int) -> None:
    fields = msgspec.inspect.type_info(struct_type).fields  # type: ignore[attr-defined]
    rows = table_rows(text)
    assert [row[1].strip("`") for row in rows] == [f.name for f in fields], "field names/order"
    for position, (row, field) in enumerate(zip(rows, fields, strict=True), start=first):
        where = f"{struct_type.__name__}.{field.name}"
        assert row[0] == str(position), f"{where}: position"
        assert row[2] == type_text(field.type), f"{where}: type"
        assert row[4] == limit_text(field.type), f"{where}: limits"
        default = default_from_cell(row[3])
        if field.required:
            assert default == "required", f"{where}: should be required"
        else:
            expected = field.default
            if isinstance(expected, tuple):  # an array, written as a list is
                expected = list(expected)
            assert default == expected, f"{where}: default"
            assert type(default) is type(expected), f"{where}: default type"


# --- tests --------------------------------------------------------------------------------


def test_records_appear_in_code_order() -> None:
    positions = [re.search(rf"^#+ {record_heading(t)}$", DOC, re.MULTILINE) for t in RECORD_TYPES]
    assert all(positions), "every record type needs its own heading"
    starts = [match.start() for match in positions if match]
    assert starts == sorted(starts)


def test_catalogue_lists_every_record_with_sender_and_phases() -> None:
    catalogue = section(r"6\.5 Record catalogue")
    for record_type in RECORD_TYPES:
        tag = record_type.__struct_config__.tag
        match = re.search(
            rf"^\| `{re.escape(str(tag))}` \| {record_type.__name__} \| ([^|]+) \| ([^|]+) \|$",
            catalogue,
            re.MULTILINE,
        )
        assert match, f"{record_type.__name__} is missing from the catalogue"
        assert match.group(1).strip() == senders(record_type)
        assert match.group(2).strip().startswith(", ".join(allowed_states(record_type)))


@pytest.mark.parametrize("record_type", RECORD_TYPES, ids=lambda t: t.__name__)
def test_record_section_matches_code(record_type: type[Record]) -> None:
    text = record_section(record_type)
    assert bullet(text, "Sent by") == senders(record_type)
    allowed = bullet(text, "Allowed in")
    assert allowed.split(";")[0].split(", ") == allowed_states(record_type)
    for (state, moved), next_state in TRANSITIONS.items():
        if moved is record_type and next_state is not state:
            assert f"moves the connection to {next_state.name}" in allowed
    check_field_table(record_type, text, first=1)


@pytest.mark.parametrize("item_type", ITEM_TYPES, ids=lambda t: t.__name__)
def test_nested_item_section_matches_code(item_type: type[msgspec.Struct]) -> None:
    check_field_table(item_type, section(rf"[\d.]+ {item_type.__name__}"), first=0)


@pytest.mark.parametrize("record_type", RECORD_TYPES, ids=lambda t: t.__name__)
def test_hex_example_decodes_to_the_sample(record_type: type[Record]) -> None:
    blocks = HEX_BLOCK.findall(record_section(record_type))
    assert len(blocks) == 1, "one hex example per record"
    encoded = bytes.fromhex(blocks[0])
    assert decode_record(encoded) == SAMPLES[record_type]
    assert encoded == encode_record(SAMPLES[record_type]), "the example is what we send"


def test_no_unchecked_hex_examples() -> None:
    assert len(HEX_BLOCK.findall(DOC)) == len(RECORD_TYPES)


def test_every_limit_is_stated_with_its_value() -> None:
    constants = {
        name: value
        for name, value in vars(limits).items()
        if name.isupper() and isinstance(value, int)
    }
    assert {"MAX_FRAME", "MAX_RECORD", "REKEY_INTERVAL", "MAX_UINT"} <= set(constants)
    for name, value in constants.items():
        assert table_value(name) == str(value), name


def test_every_hub_setting_is_stated_with_its_default() -> None:
    for field in dataclasses.fields(HubConfig):
        default = field.default
        expected = str(default).lower() if isinstance(default, bool) else str(default)
        assert table_value(field.name).split()[0].strip("`") == expected, field.name


def test_every_server_setting_is_stated_with_its_default() -> None:
    unstated = {"host", "argon2", "hub"}  # the listening address; not numbers for peers
    for field in dataclasses.fields(ServerConfig):
        if field.name in unstated:
            continue
        stated = table_value(field.name).split()[0]
        assert stated == str(field.default), field.name


def test_the_slowest_reader_kept_is_stated() -> None:
    # A peer must take a slice of its output every write_timeout (9.1, 9.12).
    kib = f"{WRITE_SLICE // 1024} KiB"
    rate = f"about {WRITE_SLICE / ServerConfig().write_timeout / 1000:.1f} KB/s"
    row = DOC[DOC.index("| `write_timeout` |") :].split("\n", 1)[0]
    assert f"slices of at most {kib} ({WRITE_SLICE} bytes)" in row
    assert f"at least {kib} every" in row
    assert rate in row
    closing = section(r"9\.12 Disconnections the server initiates")
    assert f"(at most {kib}; the output is written in such slices)" in closing
    assert f"at least {kib} every" in closing
    assert rate in closing


def test_connection_defaults_are_stated() -> None:
    assert table_value("HANDSHAKE_TIMEOUT") == f"{HANDSHAKE_TIMEOUT} s"
    assert table_value("KEEPALIVE_INTERVAL") == f"{KEEPALIVE_INTERVAL} s"
    assert table_value("MAX_RECEIVE_BUFFER") == f"{MAX_RECEIVE_BUFFER} bytes"


def test_preamble_and_noise_name() -> None:
    assert f'`b"{MAGIC.decode()}"`' in DOC
    assert encode_preamble().hex(" ") in DOC
    assert NOISE_PROTOCOL in DOC


def test_fingerprint_example() -> None:
    shown = set(re.findall(r"SHA256:[A-Za-z0-9+/]{43}\b", DOC))
    assert shown == {fingerprint(bytes(32))}
    assert b"sealchat static key v1\x00".hex(" ") in DOC


def test_every_state_is_described_and_drawn() -> None:
    diagram = re.search(r"```mermaid\nstateDiagram-v2\n(.*?)```", DOC, re.DOTALL)
    assert diagram
    for state in State:
        assert re.search(rf"^\| {state.name} \|", DOC, re.MULTILINE), state.name
        assert re.search(rf"\b{state.name}\b", diagram.group(1)), state.name


def test_the_spec_says_the_reference_servers_serve_an_uploader_during_its_read_back() -> None:
    # tests/test_upload_checks_servers.py: both answer the uploader's later requests during
    # the read.
    text = " ".join(DOC.split())
    assert "The session goes on meanwhile" not in text
    assert (
        "both reference servers (trio, and `sealchat server --threads`) read on threads of "
        "their own and do" in text
    )
    assert "reads on the connection's own thread" not in text
