"""The hub on its own: users changing their own password (ChangePassword, protocol §9.13)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sealchat.core import (
    Authenticated,
    ChangePassword,
    Error,
    Login,
    LoginRejected,
    Message,
    MessageAck,
    PasswordChanged,
    Presence,
)
from sealchat.core.hub import (
    ACCOUNT_REMOVED,
    PASSWORD_CHANGED,
    Disconnect,
    Effect,
    HashPassword,
    Hub,
    HubConfig,
    VerifyPassword,
)
from sealchat.core.hub.names import user_key
from sealchat.core.records import PASSWORD_REF
from sealchat.transports.sqlite_store import SqliteStore
from tests.test_hub import (
    NOW,
    hub_with,
    logged_in,
    password_changed_by_an_administrator,
    records,
    removed_by_an_administrator,
)

NEW = "$argon2id$changed"


def with_users(store: SqliteStore) -> SqliteStore:
    for name in ("Alice", "bob"):
        store.add_user(name, user_key(name), "$argon2id$fake")
    return store


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    return with_users(SqliteStore(tmp_path, database=":memory:"))


@pytest.fixture
def shared_store(tmp_path: Path) -> SqliteStore:
    """A store on a database file that another connection (the operator's) can change too."""
    return with_users(SqliteStore(tmp_path))


def password_hash(store: SqliteStore, key: str) -> str:
    user = store.get_user(key)
    assert user is not None
    return user.password_hash


def ask(hub: Hub, session: int, old: str = "pw", new: str = "new-password") -> list[Effect]:
    return hub.handle(session, ChangePassword(old_password=old, new_password=new), NOW)


def refusal(effects: list[Effect], session: int) -> Error:
    (error,) = records(effects, session)
    assert isinstance(error, Error)
    assert error.ref == PASSWORD_REF
    return error


def disconnects(effects: list[Effect]) -> list[tuple[int, str]]:
    return [(e.session, e.reason) for e in effects if isinstance(e, Disconnect)]


def test_a_change_keeps_this_session_and_logs_out_the_users_others(store: SqliteStore) -> None:
    hub = hub_with(store, "alice", "bob", "bob")
    (check,) = ask(hub, 2)
    assert isinstance(check, VerifyPassword)
    assert (check.session, check.password, check.password_hash) == (2, "pw", "$argon2id$fake")
    (hashing,) = hub.password_verified(2, "bob", True, NOW)
    assert isinstance(hashing, HashPassword)
    assert (hashing.session, hashing.password) == (2, "new-password")
    effects = hub.password_hashed(2, "bob", NEW, NOW)
    assert records(effects, 2) == [PasswordChanged()]
    assert disconnects(effects) == [(3, PASSWORD_CHANGED)]
    assert records(effects, 1) == []  # bob is still online, on session 2
    user = store.get_user("bob")
    assert user is not None
    assert (user.password_hash, user.password_generation) == (NEW, 1)
    assert disconnects(hub.tick(NOW + 1)) == []  # session 2 is at the new generation
    sent = hub.handle(2, Message(text="still here", room="general", client_id="b1"), NOW + 1)
    assert MessageAck(client_id="b1", id=1, ts=NOW + 1) in records(sent, 2)
    assert hub.is_online("bob")


def test_a_wrong_old_password_counts_as_a_failed_login(store: SqliteStore) -> None:
    hub = hub_with(store, "alice", "bob", config=HubConfig(free_login_failures=2))
    for expected in (
        "the current password is wrong",
        "the current password is wrong; try again in 1 s",
    ):
        ask(hub, 2, old="a guess")
        error = refusal(hub.password_verified(2, "bob", False, NOW), 2)
        assert (error.code, error.detail) == ("wrong_password", expected)
    # The back-off blocks the next change without a password check...
    error = refusal(ask(hub, 2), 2)
    assert error.code == "rate_limited"
    assert error.detail == "too many failed attempts; try again in 1 s"
    # ...and logins, from its address and (to the account) from elsewhere, as failed logins do.
    for session, address in ((3, "10.0.0.2"), (4, "192.0.2.9")):
        hub.open_session(session, address, NOW)
        (reply,) = records(hub.handle(session, Login(username="bob", password="pw"), NOW), session)
        assert isinstance(reply, LoginRejected)
        assert reply.retry_after == 1.0
    assert password_hash(store, "bob") == "$argon2id$fake"


def test_a_new_password_too_short_is_refused_before_any_check(store: SqliteStore) -> None:
    hub = hub_with(store, "alice", "bob", config=HubConfig(address_login_burst=2))
    error = refusal(ask(hub, 2, new="short"), 2)
    assert (error.code, error.detail) == ("bad_password", "a password needs at least 8 characters")
    assert isinstance(ask(hub, 2)[0], VerifyPassword)  # the refusal took no check


def test_changes_take_from_the_logins_allowances(store: SqliteStore) -> None:
    hub = hub_with(store, "alice", "bob", config=HubConfig(address_login_burst=2))
    ask(hub, 2)  # the login took one check from the address, this the second
    hub.password_verified(2, "bob", True, NOW)
    hub.password_hashed(2, "bob", NEW, NOW)
    error = refusal(ask(hub, 2), 2)
    assert error.code == "rate_limited"
    assert error.detail == "too many logins from your address; try again in 1 s"


def test_one_change_at_a_time_on_a_session(store: SqliteStore) -> None:
    hub = hub_with(store, "alice", "bob")
    ask(hub, 2)
    error = refusal(ask(hub, 2), 2)
    assert (error.code, error.detail) == ("in_progress", "a password change is already in progress")
    assert isinstance(hub.password_verified(2, "bob", True, NOW)[0], HashPassword)


def test_a_change_before_logging_in_ends_the_session(store: SqliteStore) -> None:
    hub = Hub(store)
    hub.open_session(1, "10.0.0.1", NOW)
    assert ask(hub, 1) == [Disconnect(1, "log in first")]


def test_the_logins_password_checks_are_not_taken_for_a_change(store: SqliteStore) -> None:
    hub = hub_with(store, "alice")
    hub.open_session(2, "10.0.0.2", NOW)
    hub.handle(2, Login(username="bob", password="pw"), NOW)
    assert isinstance(records(hub.password_verified(2, "bob", True, NOW), 2)[0], Authenticated)


def test_of_two_changes_at_once_the_first_stored_wins(store: SqliteStore) -> None:
    hub = hub_with(store, "alice", "bob", "bob")
    for session in (2, 3):
        ask(hub, session, new=f"new-password-{session}")
        assert isinstance(hub.password_verified(session, "bob", True, NOW)[0], HashPassword)
    effects = hub.password_hashed(3, "bob", "$argon2id$of-3", NOW)
    assert records(effects, 3) == [PasswordChanged()]
    assert disconnects(effects) == [(2, PASSWORD_CHANGED)]
    assert hub.password_hashed(2, "bob", "$argon2id$of-2", NOW) == []  # its session is gone
    assert password_hash(store, "bob") == "$argon2id$of-3"


@pytest.mark.parametrize("while_", ["checked", "hashed"])
def test_the_operators_change_during_a_change_ends_the_session_and_wins(
    tmp_path: Path, shared_store: SqliteStore, while_: str
) -> None:
    hub = hub_with(shared_store, "alice", "bob")
    ask(hub, 2)
    if while_ == "hashed":
        assert isinstance(hub.password_verified(2, "bob", True, NOW)[0], HashPassword)
    password_changed_by_an_administrator(tmp_path, "bob")
    if while_ == "hashed":
        effects = hub.password_hashed(2, "bob", NEW, NOW)
    else:
        effects = hub.password_verified(2, "bob", True, NOW)
    assert disconnects(effects) == [(2, PASSWORD_CHANGED)]
    assert records(effects, 2) == []
    assert records(effects, 1) == [Presence(user="bob", online=False)]
    assert password_hash(shared_store, "bob") == "$argon2id$new"  # the operator's


def test_an_account_removed_during_a_change_is_logged_out_and_stays_removed(
    tmp_path: Path, shared_store: SqliteStore
) -> None:
    hub = hub_with(shared_store, "alice", "bob")
    ask(hub, 2)
    removed_by_an_administrator(tmp_path, "bob")
    effects = hub.password_verified(2, "bob", True, NOW)
    assert disconnects(effects) == [(2, ACCOUNT_REMOVED)]
    assert not any(isinstance(e, HashPassword) for e in effects)
    assert shared_store.get_user("bob") is None


@pytest.mark.parametrize("while_", ["checked", "hashed"])
def test_a_change_whose_session_closed_is_dropped(store: SqliteStore, while_: str) -> None:
    hub = hub_with(store, "alice", "bob")
    ask(hub, 2)
    if while_ == "hashed":
        hub.password_verified(2, "bob", True, NOW)
    hub.close_session(2, NOW)
    if while_ == "hashed":
        assert hub.password_hashed(2, "bob", NEW, NOW) == []
    else:
        assert hub.password_verified(2, "bob", True, NOW) == []
    user = store.get_user("bob")
    assert user is not None
    assert (user.password_hash, user.password_generation) == ("$argon2id$fake", 0)
    logged_in(hub, 3, "bob")  # with the old password, still


def test_a_right_old_password_checked_while_a_block_began_is_refused(store: SqliteStore) -> None:
    hub = hub_with(store, "alice", "bob", config=HubConfig(free_login_failures=1))
    hub.open_session(3, "10.0.0.2", NOW)  # bob again, from the same address
    hub.handle(3, Login(username="bob", password="pw"), NOW)
    hub.password_verified(3, "bob", True, NOW)
    ask(hub, 2)  # the right password, checked...
    ask(hub, 3, old="a guess")  # ...alongside a wrong one, whose failure starts a block
    hub.password_verified(3, "bob", False, NOW)
    error = refusal(hub.password_verified(2, "bob", True, NOW), 2)
    assert error.code == "rate_limited"
    assert error.detail == "too many failed attempts; try again in 1 s"
    assert password_hash(store, "bob") == "$argon2id$fake"


def test_a_change_being_checked_counts_as_a_login_in_progress(store: SqliteStore) -> None:
    hub = hub_with(store, "alice", config=HubConfig(max_pending_logins=1))
    ask(hub, 1)
    hub.open_session(2, "10.0.0.1", NOW)  # alice's address
    (reply,) = records(hub.handle(2, Login(username="bob", password="pw"), NOW), 2)
    assert isinstance(reply, LoginRejected)
    assert "in progress" in reply.reason
