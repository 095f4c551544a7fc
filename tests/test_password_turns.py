"""Fair turns at the password checks: a login never waits behind another account's queue."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from sealchat.core.hub.names import user_key
from sealchat.transports import blocking_server, trio_server
from sealchat.transports.blocking_client import BlockingClient
from sealchat.transports.password_turns import ThreadTurns, TrioTurns, TurnTaking
from sealchat.transports.passwords import Argon2Params, verify_password
from tests.servers import KINDS, PASSWORD, running_server
from tests.test_conformance import wait_until


def test_a_turn_is_taken_at_once_while_one_is_free() -> None:
    turns: TurnTaking[str] = TurnTaking(2)
    assert turns.ask("mallory", "m1")
    assert turns.ask("mallory", "m2")
    assert not turns.ask("mallory", "m3")
    assert (turns.taken, turns.waiting) == (2, 1)


def test_freed_turns_go_to_the_accounts_in_turn() -> None:
    # Mallory queued five checks before alice and bob asked: each of them waits for one of
    # mallory's, not for all five.
    turns: TurnTaking[str] = TurnTaking(1)
    assert turns.ask("mallory", "m0")
    for n in range(1, 6):
        turns.ask("mallory", f"m{n}")
    turns.ask("alice", "a1")
    turns.ask("bob", "b1")
    turns.ask("alice", "a2")
    order = []
    while (waiter := turns.done()) is not None:
        order.append(waiter)
    assert order == ["m1", "a1", "b1", "m2", "a2", "m3", "m4", "m5"]
    assert (turns.taken, turns.waiting) == (0, 0)


def test_a_withdrawn_waiter_takes_no_turn() -> None:
    turns: TurnTaking[str] = TurnTaking(1)
    turns.ask("mallory", "m0")
    turns.ask("alice", "a1")
    turns.ask("bob", "b1")
    turns.withdraw("alice", "a1")
    assert turns.done() == "b1"
    assert turns.done() is None
    assert turns.taken == 0
    with pytest.raises(ValueError, match="at least 1"):
        TurnTaking(0)


async def test_trio_turns_are_fair_and_a_cancelled_wait_gives_its_place_up() -> None:
    turns = TrioTurns(1)
    order: list[str] = []
    first_in = trio.Event()
    let_go = trio.Event()

    async def check(key: str, name: str) -> None:
        async with turns.turn(key):
            order.append(name)
            if name == "m0":
                first_in.set()
                await let_go.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(check, "mallory", "m0")
        await first_in.wait()
        for n in range(1, 4):
            nursery.start_soon(check, "mallory", f"m{n}")
            await trio.testing.wait_all_tasks_blocked()
        gone = trio.CancelScope()

        async def leaves() -> None:
            with gone:
                await check("carol", "c1")

        nursery.start_soon(leaves)
        nursery.start_soon(check, "alice", "a1")
        await trio.testing.wait_all_tasks_blocked()
        assert turns.taking.waiting == 5
        gone.cancel()  # carol hung up while her check waited
        await trio.testing.wait_all_tasks_blocked()
        assert turns.taking.waiting == 4
        let_go.set()
    assert order == ["m0", "m1", "a1", "m2", "m3"]
    assert turns.taking.taken == 0


async def test_a_trio_turn_given_to_a_cancelled_waiter_passes_on() -> None:
    turns = TrioTurns(1)
    order: list[str] = []
    async with trio.open_nursery() as nursery:
        async with turns.turn("mallory"):
            cancelled = trio.CancelScope()

            async def given_then_cancelled() -> None:
                with cancelled:
                    async with turns.turn("carol"):
                        await trio.lowlevel.checkpoint()  # as the thread's start would be
                        order.append("c1")

            async def check(key: str, name: str) -> None:
                async with turns.turn(key):
                    order.append(name)

            nursery.start_soon(given_then_cancelled)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(check, "alice", "a1")
            await trio.testing.wait_all_tasks_blocked()
        # The turn went to carol's waiter, which is cancelled before it could use it.
        cancelled.cancel()
    assert order == ["a1"]
    assert (turns.taking.taken, turns.taking.waiting) == (0, 0)


def test_thread_turns_are_fair() -> None:
    turns = ThreadTurns(1)
    order: list[str] = []
    first_in, let_go = threading.Event(), threading.Event()

    def check(key: str, name: str) -> None:
        with turns.turn(key):
            order.append(name)
            if name == "m0":
                first_in.set()
                let_go.wait()

    threads = [threading.Thread(target=check, args=("mallory", "m0"))]
    threads[0].start()
    first_in.wait()
    for waiting, (key, name) in enumerate([("mallory", "m1"), ("mallory", "m2"), ("alice", "a1")]):
        threads.append(threading.Thread(target=check, args=(key, name)))
        threads[-1].start()
        wait_until(lambda n=waiting + 1: turns.taking.waiting == n, f"{name} waits")
    let_go.set()
    for thread in threads:
        thread.join()
    assert order == ["m0", "m1", "a1", "m2"]
    assert (turns.taking.taken, turns.taking.waiting) == (0, 0)


@contextmanager
def checks_in_order(monkeypatch: pytest.MonkeyPatch, kind: str) -> Iterator[dict[str, Any]]:
    """Record the order in which a ``kind`` server checks passwords (by the hash checked
    against), holding the first check until ``seen["let_go"]`` is set; ``seen["turns"]``
    is the server's turns."""
    module: Any = trio_server if kind == "trio" else blocking_server
    made = TrioTurns if kind == "trio" else ThreadTurns
    seen: dict[str, Any] = {"order": [], "let_go": threading.Event(), "entered": threading.Event()}

    def turns(slots: int) -> object:
        seen["turns"] = made(slots)
        return seen["turns"]

    def verify(password: str, phc: str | None, *, params: Argon2Params) -> bool:
        seen["order"].append(phc)
        if len(seen["order"]) == 1:
            seen["entered"].set()
            seen["let_go"].wait()
        return verify_password(password, phc, params=params)

    monkeypatch.setattr(module, "TrioTurns" if kind == "trio" else "ThreadTurns", turns)
    monkeypatch.setattr(module, "verify_password", verify)
    yield seen


@pytest.mark.parametrize("kind", KINDS)
def test_a_login_does_not_wait_behind_another_accounts_logins(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Mallory logs in five times at once, then alice once, with one password thread: alice's
    # password is checked after the check running and one more of mallory's, not sixth.
    with (
        checks_in_order(monkeypatch, kind) as seen,
        running_server(kind, tmp_path, users=("mallory", "alice"), password_threads=1) as server,
    ):
        hashes = {
            server.hub.store.get_user(user_key(name)).password_hash: name  # type: ignore[union-attr]
            for name in ("mallory", "alice")
        }
        clients = [server.client() for _ in range(6)]
        logged_in: list[str] = []

        def log_in(client: BlockingClient, name: str) -> None:
            logged_in.append(client.login(name, PASSWORD))

        logins = [
            threading.Thread(target=log_in, args=(client, name))
            for client, name in zip(clients, ["mallory"] * 5 + ["alice"], strict=True)
        ]
        try:
            logins[0].start()
            seen["entered"].wait()
            for n, login in enumerate(logins[1:], start=1):
                login.start()
                wait_until(lambda n=n: seen["turns"].taking.waiting == n, "the login waits")
            seen["let_go"].set()
            for login in logins:
                login.join()
            assert sorted(logged_in) == ["alice"] + ["mallory"] * 5
        finally:
            seen["let_go"].set()
            for client in clients:
                client.close()
    assert [hashes[phc] for phc in seen["order"]] == ["mallory"] * 2 + ["alice"] + ["mallory"] * 3


def test_the_threaded_server_checks_no_password_for_a_client_gone_while_it_waited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its reader thread waits for a turn and cannot see the peer hang up: the check ran all
    # the same, an Argon2 for no one (the trio server drops a gone peer's check).
    users = ("mallory", "alice")
    with (
        checks_in_order(monkeypatch, "threads") as seen,
        running_server("threads", tmp_path, users=users, password_threads=1) as server,
    ):
        alices = server.hub.store.get_user("alice")
        assert alices is not None
        mallory, alice = server.client(), server.client()

        def log_in_then_hang_up() -> None:
            with suppress(Exception):
                alice.login("alice", PASSWORD)

        logins = [
            threading.Thread(target=mallory.login, args=("mallory", PASSWORD)),
            threading.Thread(target=log_in_then_hang_up),
        ]
        try:
            logins[0].start()
            seen["entered"].wait()
            logins[1].start()
            wait_until(lambda: seen["turns"].taking.waiting == 1, "alice's login waits")
            alice._sock.shutdown(socket.SHUT_RDWR)  # she hangs up (killed: no Bye)
            seen["let_go"].set()
            for login in logins:
                login.join()
            turns = seen["turns"].taking
            wait_until(lambda: (turns.taken, turns.waiting) == (0, 0), "the turns are free")
        finally:
            seen["let_go"].set()
            mallory.close()
            alice.close()
    assert len(seen["order"]) == 1  # mallory's
    assert alices.password_hash not in seen["order"]
