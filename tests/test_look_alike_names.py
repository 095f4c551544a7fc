"""A new account's name may not look like another's: ``AIice`` (capital i) would pass for
``alice`` in most fonts, and its messages for hers."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sealchat.cli.main import main
from sealchat.core import Authenticated, LoginRejected, Register
from sealchat.core.hub import Hub, HubConfig
from sealchat.core.hub.effects import Deliver, Effect, HashPassword
from sealchat.core.hub.names import LOOK_ALIKES, look_alike_key, user_key
from sealchat.core.records import NAME_LOOKS_TAKEN, NAME_TAKEN
from sealchat.transports import sqlite_store
from sealchat.transports.sqlite_accounts import _LOOKS_TAKEN
from sealchat.transports.sqlite_schema import LOOK_ALIKE_KEY
from sealchat.transports.sqlite_store import SqliteStore

NOW = 1_000_000.0
PHC = "$argon2id$fake"
NAMES = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}", fullmatch=True)


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    store = SqliteStore(tmp_path, database=":memory:")
    for name in ("alice", "Mallory", "will"):
        store.add_user(name, user_key(name), PHC)
    return store


@pytest.mark.parametrize(
    ("name", "like"),
    [
        ("AIice", "alice"),  # capital i
        ("a1ice", "alice"),
        ("ALICE", "alice"),
        ("rnallory", "Mallory"),
        ("wiII", "will"),
        ("vvill", "will"),
        ("vw", "vvv"),  # "vv" overlaps itself: w is folded into vv, not vv into w
        ("vwv", "vvvv"),
        ("B0B", "bob"),
        ("bob", "BOB"),
    ],
)
def test_names_drawn_alike_have_one_look_alike_key(name: str, like: str) -> None:
    assert look_alike_key(user_key(name)) == look_alike_key(user_key(like))


@pytest.mark.parametrize(
    ("name", "other"), [("alice", "alice2"), ("bob", "bob_"), ("ann", "anne"), ("mo", "no")]
)
def test_names_drawn_apart_keep_apart(name: str, other: str) -> None:
    assert look_alike_key(user_key(name)) != look_alike_key(user_key(other))


@given(NAMES)
def test_the_index_expression_folds_as_look_alike_key_does(name: str) -> None:
    key = user_key(name)
    with sqlite3.connect(":memory:") as conn:
        (folded,) = conn.execute(f"SELECT {LOOK_ALIKE_KEY} FROM (SELECT ? AS key)", (key,))
    assert folded == (look_alike_key(key),)


def test_the_index_expression_applies_every_folding_in_its_order() -> None:
    # The SQL is written out (a migration is never edited); it must follow LOOK_ALIKES.
    expected = "key"
    for drawn, like in LOOK_ALIKES:
        expected = f"replace({expected}, '{drawn}', '{like}')"
    assert LOOK_ALIKE_KEY.replace(" ", "") == expected.replace(" ", "")


def test_the_store_finds_look_alikes_of_users_and_removed_accounts(store: SqliteStore) -> None:
    assert store.looks_taken("aiice")
    assert store.looks_taken("alice")  # a name looks like itself
    assert not store.looks_taken("alicia")
    store.add_user("Carol", "carol", PHC)
    assert store.remove_user("carol")
    assert store.looks_taken("caro1")  # the removed account's name is never given away


def test_the_look_up_uses_the_indexes(store: SqliteStore) -> None:
    plan = store._conn.execute(f"EXPLAIN QUERY PLAN {_LOOKS_TAKEN}", ("alice",)).fetchall()
    details = " ".join(row[-1] for row in plan)
    assert "SEARCH users USING INDEX users_by_look_alike" in details
    assert "SEARCH retired_names USING INDEX retired_names_by_look_alike" in details
    assert "SCAN users" not in details
    assert "SCAN retired_names" not in details


def test_a_v6_database_gets_the_indexes_and_keeps_look_alikes_it_had(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / sqlite_store.DB_FILE)
    conn.executescript("".join(sqlite_store.MIGRATIONS[:6]))
    conn.execute("PRAGMA user_version = 6")
    conn.execute(
        "INSERT INTO users VALUES ('alice', 'alice', 'h', 0, 0), ('aiice', 'AIice', 'h', 0, 0)"
    )
    conn.commit()
    conn.close()
    with SqliteStore(tmp_path) as s:
        assert s._conn.execute("PRAGMA user_version").fetchone()[0] == len(sqlite_store.MIGRATIONS)
        assert s.list_users() == ["AIice", "alice"]  # both stay: they were registered before
        assert s.looks_taken("a1ice")


def _register(hub: Hub, session: int, name: str) -> list[Effect]:
    hub.open_session(session, f"10.0.0.{session}", NOW)
    return hub.handle(session, Register(username=name, password="longenough"), NOW)


def _answer(effects: list[Effect], session: int) -> object:
    (answer,) = [e.record for e in effects if isinstance(e, Deliver) and session in e.sessions][:1]
    return answer


@pytest.mark.parametrize("name", ["AIice", "a1ice", "rnallory", "vviII"])
def test_registering_a_look_alike_is_refused_before_any_hash(store: SqliteStore, name: str) -> None:
    hub = Hub(store, HubConfig(open_registration=True))
    effects = _register(hub, 1, name)
    assert not any(isinstance(e, HashPassword) for e in effects)
    answer = _answer(effects, 1)
    assert isinstance(answer, LoginRejected)
    assert answer.reason == NAME_LOOKS_TAKEN
    assert store.get_user(user_key(name)) is None


def test_the_name_itself_is_still_said_to_be_taken(store: SqliteStore) -> None:
    hub = Hub(store, HubConfig(open_registration=True))
    answer = _answer(_register(hub, 1, "ALICE"), 1)
    assert isinstance(answer, LoginRejected)
    assert answer.reason == NAME_TAKEN


def test_a_look_alike_registered_while_the_password_was_hashed_wins(store: SqliteStore) -> None:
    hub = Hub(store, HubConfig(open_registration=True))
    (first,) = _register(hub, 1, "Olga")
    (second,) = _register(hub, 2, "0lga")  # both pass the first check, side by side
    assert isinstance(first, HashPassword)
    assert isinstance(second, HashPassword)
    done = hub.password_hashed(1, "Olga", PHC, NOW)
    assert isinstance(_answer(done, 1), Authenticated)
    answer = _answer(hub.password_hashed(2, "0lga", PHC, NOW), 2)
    assert isinstance(answer, LoginRejected)
    assert answer.reason == NAME_LOOKS_TAKEN
    assert store.get_user("0lga") is None


def _user_add(data_dir: Path, *args: str, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr("sys.stdin", io.StringIO("long enough\n"))
    return main(["user", "add", *args, "--password-stdin", "--data-dir", str(data_dir)])


def test_the_operator_is_warned_of_a_look_alike_and_may_add_it_all_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _user_add(tmp_path, "alice", monkeypatch=monkeypatch) == 0
    assert _user_add(tmp_path, "AIice", monkeypatch=monkeypatch) == 1
    err = capsys.readouterr().err
    assert "AIice looks like the name of another account" in err
    assert "--allow-look-alike" in err
    assert _user_add(tmp_path, "AIice", "--allow-look-alike", monkeypatch=monkeypatch) == 0
    with SqliteStore(tmp_path) as store:
        assert store.list_users() == ["AIice", "alice"]
    assert _user_add(tmp_path, "ALICE", monkeypatch=monkeypatch) == 1  # the name itself
    assert "ALICE exists; use 'user passwd'" in capsys.readouterr().err


def test_the_operator_sees_which_users_look_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with SqliteStore(tmp_path) as store:  # as a database from before the check may hold
        for name in ("alice", "bob", "AIice", "a1ice", "B0B", "carol"):
            store.add_user(name, user_key(name), PHC)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main(["user", "list", "--data-dir", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert out.split() == ["a1ice", "AIice", "alice", "B0B", "bob", "carol"]
    assert err.splitlines() == [
        "sealchat: a1ice, AIice, alice look alike: users could take one for another",
        "sealchat: B0B, bob look alike: users could take one for another",
    ]
