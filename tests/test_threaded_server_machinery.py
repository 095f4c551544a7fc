"""The threaded server's own machinery (the conformance suite checks what both servers do)."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from sealchat.core import Message, MessageAck
from sealchat.transports import blocking_server
from tests.servers import running_server


def test_a_keepalive_tick_passed_while_a_password_was_checked_keeps_the_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The connection's reader thread checks the password (or waits for the hub, or for the
    # peer to read its replies) past the moment its keepalive tick was due: the tick is run
    # late, and the connection goes on. (A wait of 0 had made its socket non-blocking: the
    # next read raised BlockingIOError and the user was dropped without a word.) The
    # server's clock jumps ahead during the check instead of the test waiting for the tick.
    ahead = 0.0

    def monotonic() -> float:
        return time.monotonic() + ahead

    clock = SimpleNamespace(monotonic=monotonic, time=time.time, sleep=time.sleep)
    monkeypatch.setattr(blocking_server, "time", clock)
    real_verify = blocking_server.verify_password

    def slow_verify(password: str, phc: str | None) -> bool:
        nonlocal ahead
        ok = real_verify(password, phc)
        ahead += 3 * 60.0  # past the first tick (handshake timeout + keepalive interval)
        return ok

    monkeypatch.setattr(blocking_server, "verify_password", slow_verify)
    with running_server("threads", tmp_path) as server, server.login("alice") as alice:
        assert ahead
        for n in range(3):
            alice.send(Message(text=f"still here {n}", room="general", client_id=f"c{n}"))
            assert alice.next(MessageAck).client_id == f"c{n}"
