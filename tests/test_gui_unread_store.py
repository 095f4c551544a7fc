"""The desktop client's file of unread messages, kept from one run to the next: private,
bounded, per server and account, and ignored when damaged."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from sealchat.gui.conversation import Remembered
from sealchat.gui.unread_store import (
    MAX_ACCOUNTS,
    MAX_CONVERSATIONS,
    MAX_UNREAD,
    UnreadStore,
    account_name,
)

ALICE = account_name("Chat.Example.org.", 7878, "Alice")
BOB = account_name("chat.example.org", 7878, "bob")
UNREAD = {
    "@bob": Remembered("Bob", read_up_to=3, unread=frozenset({4, 9})),
    "#random": Remembered("random", read_up_to=12),
}


def test_each_account_of_each_server_has_its_own_in_a_private_file(tmp_path: Path) -> None:
    assert ALICE == "alice@chat.example.org:7878"
    store = UnreadStore.beside(tmp_path / "config" / "gui.json")
    assert store.path == tmp_path / "config" / "unread.json"
    assert store.load(ALICE) == {}  # no file yet

    store.save(ALICE, UNREAD)
    store.save(BOB, {"@alice": Remembered("alice", unread=frozenset({5}))})

    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700
    assert [p.name for p in store.path.parent.iterdir()] == ["unread.json"]  # no temporary
    assert store.load(ALICE) == UNREAD
    assert store.load(BOB) == {"@alice": Remembered("alice", unread=frozenset({5}))}
    assert store.load(account_name("chat.example.org", 7879, "alice")) == {}

    store.save(ALICE, {})  # nothing left to remember
    assert store.load(ALICE) == {}
    assert set(json.loads(store.path.read_text(encoding="utf-8"))["accounts"]) == {BOB}


@pytest.mark.parametrize(
    "content",
    [
        "",
        "not json",
        "\xff\xfe",
        "[" * 100_000,
        "[]",
        '{"version": 2, "accounts": {}}',
        '{"version": 1, "accounts": []}',
        '{"version": 1, "accounts": {"alice@chat.example.org:7878": "x"}}',
    ],
)
def test_a_damaged_or_foreign_file_counts_as_empty(tmp_path: Path, content: str) -> None:
    store = UnreadStore(tmp_path / "unread.json")
    store.path.write_text(content, encoding="utf-8")
    assert store.load(ALICE) == {}
    store.save(ALICE, UNREAD)  # and is replaced
    assert store.load(ALICE) == UNREAD


def test_only_well_formed_entries_are_taken(tmp_path: Path) -> None:
    store = UnreadStore(tmp_path / "unread.json")
    good = {"title": "Bob", "read_up_to": 3, "unread": [4, 9]}
    entries = {
        "@bob": good,
        "@carol": good,  # named for another
        "#bob": {**good, "title": "bob"},  # a room named bob: fine
        "@dave": {"title": "dave", "read_up_to": -1, "unread": []},
        "@erin": {"title": "erin", "read_up_to": 0, "unread": [0]},
        "@fred": {"title": "fred", "read_up_to": True, "unread": []},
        "@gina": {"title": "gina", "read_up_to": 0, "unread": ["4"]},
        "@hans": {"title": "hans", "read_up_to": 0, "unread": [2**63]},
        "@ivan": {"title": "", "read_up_to": 0, "unread": []},
        "@jane": ["jane", 0, []],
        "#" + "r" * 65: {**good, "title": "r" * 65},  # names the server refuses
        "#bad\u202eroom": {**good, "title": "bad\u202eroom"},
        "@kim\x07": {**good, "title": "kim\x07"},
    }
    store.path.write_text(json.dumps({"version": 1, "accounts": {ALICE: entries}}))
    assert store.load(ALICE) == {
        "@bob": Remembered("Bob", read_up_to=3, unread=frozenset({4, 9})),
        "#bob": Remembered("bob", read_up_to=3, unread=frozenset({4, 9})),
    }


def test_the_newest_unread_of_the_latest_conversations_and_accounts_are_kept(
    tmp_path: Path,
) -> None:
    store = UnreadStore(tmp_path / "unread.json")
    many = {
        f"@user{n}": Remembered(f"user{n}", read_up_to=n, unread=frozenset(range(n, n + 2)))
        for n in range(1, MAX_CONVERSATIONS + 10)  # and bob: ten too many
    }
    many["@bob"] = Remembered("bob", unread=frozenset(range(10**6, 10**6 + MAX_UNREAD + 500)))
    store.save(ALICE, many)
    kept = store.load(ALICE)
    assert len(kept) == MAX_CONVERSATIONS
    assert "@user10" not in kept  # the ten whose messages are the oldest go
    assert "@user11" in kept
    assert kept["@bob"].unread == frozenset(range(10**6 + 500, 10**6 + MAX_UNREAD + 500))

    for n in range(MAX_ACCOUNTS):
        store.save(account_name("chat.example.org", 7878, f"user{n}"), UNREAD)
    assert store.load(ALICE) == {}  # saved the longest ago
    assert store.load(account_name("chat.example.org", 7878, "user0")) == UNREAD


def test_no_text_and_no_password_go_into_the_file(tmp_path: Path) -> None:
    assert set(Remembered.__dataclass_fields__) == {"title", "read_up_to", "unread"}
    store = UnreadStore(tmp_path / "unread.json")
    store.save(ALICE, UNREAD)
    assert json.loads(store.path.read_text(encoding="utf-8")) == {
        "version": 1,
        "accounts": {
            ALICE: {
                "@bob": {"title": "Bob", "read_up_to": 3, "unread": [4, 9]},
                "#random": {"title": "random", "read_up_to": 12, "unread": []},
            }
        },
    }
