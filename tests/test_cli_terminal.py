"""The terminal client's pieces, in-process: text made safe to print, and how failures are
classified (the subprocess tests are in test_cli_client.py)."""

from __future__ import annotations

import argparse
import io
import signal
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from sealchat.cli import (
    chat_cmd,
    chat_outgoing,
    chat_terminal,
    chat_transfers,
    exit_codes,
    login,
    send_cmd,
)
from sealchat.cli.chat_reads import ReadsShown
from sealchat.cli.terminal_text import safe, safe_message, tolerant_streams
from sealchat.core import FileInfo, HistoryEnd, MemberInfo, Message, RoomInfo
from sealchat.core.records import ACCOUNT_REMOVED
from sealchat.transports.pinning import ServerKeyChanged
from sealchat.transports.trio import MessageTooLong
from sealchat.transports.trio_client import (
    ClientError,
    Disconnected,
    LinkState,
    LoginFailed,
    TransferFailed,
    Unreachable,
    connect,
)


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b]0;pwned\x07", "\\x1b]0;pwned\\x07"),  # window title
        ("\x1b[2J\x1b[31mred", "\\x1b[2J\\x1b[31mred"),  # clear screen, colour
        ("a\rb\tc\x00d\x7fe", "a\\x0db\\x09c\\x00d\\x7fe"),  # C0 and DEL
        ("\x9b2J\x85", "\\x9b2J\\x85"),  # C1: CSI and NEL
        ("abc\u202edcba\u200b\ufeff", "abc\\u202edcba\\u200b\\ufeff"),  # bidi, zero width
        ("line\u2028sep\u2029", "line\\u2028sep\\u2029"),
        ("line\nfake", "line\\x0afake"),
        ("héllo wörld — 😀 日本 \\x1b", "héllo wörld — 😀 日本 \\x1b"),  # left alone
    ],
)
def test_safe_escapes_what_could_drive_the_terminal(raw: str, shown: str) -> None:
    assert safe(raw) == shown


def test_a_message_indents_its_lines_after_the_first() -> None:
    text = "first\n12:00 [general] esha: fake\r\nthird\x1b[2J"
    assert safe_message(text, indent="      ") == (
        "first\n      12:00 [general] esha: fake\n      third\\x1b[2J"
    )
    assert safe_message("one line", indent="  ") == "one line"


SCOTLAND = "\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f"


@pytest.mark.parametrize(
    "text",
    [
        f"flag {SCOTLAND}",  # a subdivision flag: its tag characters
        "co\u00adop",  # a soft hyphen
        "\u05e9\u05dc\u05d5\u05dd\u200f and \u200e",  # directional marks
        "tab\there\n\tindented",  # pasted code
    ],
)
def test_a_message_keeps_what_writing_needs(text: str) -> None:
    assert safe_message(text, indent="") == text


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b]0;pwned\x07", "\\x1b]0;pwned\\x07"),  # window title
        ("\t\x1b[2J\x1b[31mred", "\t\\x1b[2J\\x1b[31mred"),  # clear screen, colour
        ("a\rb\x00c\x7fd\x9b2J\x85", "a\\x0db\\x00c\\x7fd\\x9b2J\\x85"),  # C0, DEL, C1
        ("abc\u202edcba\u2066\u2028", "abc\\u202edcba\\u2066\\u2028"),  # bidi, separator
        ("\U0001f3f4\U000e0041\U000e007f", "\U0001f3f4\\U000e0041\\U000e007f"),  # no flag
    ],
)
def test_a_message_still_escapes_what_could_drive_the_terminal(raw: str, shown: str) -> None:
    assert safe_message(raw, indent="") == shown


def test_a_message_is_printed_with_what_writing_needs(capsys: pytest.CaptureFixture[str]) -> None:
    text = f"{SCOTLAND} co\u00adop \u05e9\u05dc\u05d5\u05dd\u200f\tthere\x1b[2J"
    term = chat_terminal.Terminal(sys.stdout, "alice")
    term.show(Message(text=text, room="general", sender="bob", id=1, ts=1.0))
    line = capsys.readouterr().out.rstrip("\n")
    assert line.endswith(f"[general] bob: {text[:-4]}\\x1b[2J")


def test_a_message_shows_every_extra_line_indented(capsys: pytest.CaptureFixture[str]) -> None:
    term = chat_terminal.Terminal(sys.stdout, "alice")
    term.show(
        Message(
            text="hi\n12:00 [general] esha: send me your password\x1b[2J",
            room="general\x1b[31m",
            sender="mallory\u202e",
            id=1,
            ts=1.0,
        )
    )
    day, *lines = capsys.readouterr().out.splitlines()
    assert day.startswith("-- ")
    assert len(lines) == 2
    assert lines[0].endswith("[general\\x1b[31m] mallory\\u202e: hi")
    assert lines[1] == f"{chat_terminal.INDENT}12:00 [general] esha: send me your password\\x1b[2J"


def on(day: int, hour: int, minute: int = 0) -> float:
    """The time of ``hour``:``minute`` (local time) on ``day`` November 2026."""
    return datetime(2026, 11, day, hour, minute).timestamp()


NOW = on(24, 9, 30)  # a Tuesday morning


def said(message_id: int, ts: float, text: str = "") -> Message:
    return Message(
        text=text or f"message {message_id}", room="general", sender="bob", id=message_id, ts=ts
    )


def test_a_message_of_another_day_than_the_last_one_shown_says_its_day_first(
    capsys: pytest.CaptureFixture[str],
) -> None:
    term = chat_terminal.Terminal(sys.stdout, "alice", clock=lambda: NOW)
    notes = FileInfo(file_id="a" * 32, name="notes.txt", size=10, sha256=bytes(32))
    for message in (
        said(1, on(10, 17, 5)),
        said(2, on(20, 23, 59)),
        said(3, on(21, 0, 0)),
        said(4, 0.0),  # a time unknown: no day, and the day goes on past it
        said(5, on(21, 8, 15)),
        said(6, on(23, 22, 0)),
        said(7, on(24, 7, 45)),
        Message(id=8, ts=on(24, 9), sender="bob", room="general", file=notes),
    ):
        term.show(message)
    assert capsys.readouterr().out.splitlines() == [
        "-- Tuesday 10 November --",
        "17:05 [general] bob: message 1",
        "-- Friday --",
        "23:59 [general] bob: message 2",
        "-- Saturday --",
        "00:00 [general] bob: message 3",
        "--:-- [general] bob: message 4",
        "08:15 [general] bob: message 5",
        "-- Yesterday --",
        "22:00 [general] bob: message 6",
        "-- Today --",
        "07:45 [general] bob: message 7",
        f"09:00 [general] bob shared 'notes.txt' (10 B) — /get {'a' * 32}",
    ]


def run_lines(client: Any, term: chat_terminal.Terminal, *lines: str) -> None:
    """Run ``lines`` as typed in a chat, then wait for the transfers they started."""

    async def main() -> None:
        outgoing = chat_outgoing.Outgoing(term)
        async with trio.open_nursery() as nursery:
            transfers = chat_transfers.Transfers(term, nursery)
            for line in lines:
                await chat_cmd._command(client, term, outgoing, transfers, line)
            await transfers.finish()

    trio.run(main)


def test_history_and_the_messages_after_it_say_their_days(
    capsys: pytest.CaptureFixture[str],
) -> None:
    class Client:
        async def history(self, *, room: str, limit: int) -> tuple[list[Message], bool]:
            return [said(1, on(22, 12)), said(2, on(23, 12)), said(3, on(24, 8))], False

    term = chat_terminal.Terminal(sys.stdout, "alice", clock=lambda: NOW)
    client: Any = Client()
    term.show(said(3, on(24, 8)))  # live, before /history
    run_lines(client, term, "/history")
    term.show(said(4, on(24, 9)))  # live again: today, as the last one listed
    assert capsys.readouterr().out.splitlines() == [
        "-- Today --",
        "08:00 [general] bob: message 3",
        "-- Sunday --",
        "12:00 [general] bob: message 1",
        "-- Yesterday --",
        "12:00 [general] bob: message 2",
        "-- Today --",
        "08:00 [general] bob: message 3",
        "09:00 [general] bob: message 4",
    ]


def test_messages_replayed_at_login_say_their_days(capsys: pytest.CaptureFixture[str]) -> None:
    missed = [said(1, on(23, 18)), said(2, on(23, 19)), said(3, on(24, 8))]
    client: Any = _Replayed(missed)
    term = chat_terminal.Terminal(sys.stdout, "alice", clock=lambda: NOW)
    trio.run(chat_cmd._show_events, client, term, chat_outgoing.Outgoing(term))
    assert capsys.readouterr().out.splitlines() == [
        "-- Yesterday --",
        "18:00 [general] bob: message 1",
        "19:00 [general] bob: message 2",
        "-- Today --",
        "08:00 [general] bob: message 3",
    ]


def test_text_streams_never_fail_on_encoding(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.TextIOWrapper(io.BytesIO(), encoding="cp1252")
    err = io.TextIOWrapper(io.BytesIO(), encoding="cp1252")
    typed = io.TextIOWrapper(io.BytesIO(b"hello\n\xff\xfe bad\nworld\n"), encoding="utf-8")
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(sys, "stdin", typed)
    tolerant_streams()
    print("smile 😀", file=out, flush=True)
    print("smile 😀", file=err, flush=True)
    assert out.buffer.getvalue() == err.buffer.getvalue() == b"smile ?\n"  # type: ignore[attr-defined]
    # Bytes that are not UTF-8 are shown as such, and the lines after them still arrive.
    assert typed.readlines() == ["hello\n", "\ufffd\ufffd bad\n", "world\n"]


class _Dropped:
    """A client whose connection drops after login, before the server acknowledged."""

    unacknowledged = 1
    gave_up_on: Exception | None = None

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[Any](1)
        self._send.send_nowait(LinkState(connected=False, reason="the server went away"))

    def events(self) -> trio.MemoryReceiveChannel[Any]:
        return self._receive


def test_send_fails_at_once_when_the_connection_drops_before_the_ack() -> None:
    async def main() -> BaseException:
        with pytest.raises(ClientError) as caught:
            await send_cmd._await_ack(_Dropped(), "c1")  # type: ignore[arg-type]
        return caught.value

    exc = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    code, message = exit_codes.explain_failure(exc)
    assert code == exit_codes.LOST == 7
    assert "the server went away" in message


def test_a_connect_timeout_means_unreachable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))

    async def no_answer(*_args: object, **_options: object) -> None:
        await trio.sleep_forever()

    monkeypatch.setattr(trio, "open_tcp_stream", no_answer)

    async def main() -> None:
        async with connect("192.0.2.1", 7878):
            pass

    with pytest.raises(Unreachable) as caught:
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    code, message = exit_codes.explain_failure(caught.value)
    assert code == exit_codes.UNREACHABLE == 3
    assert message.startswith("cannot reach 192.0.2.1:7878")


def test_local_transfer_failures_are_not_called_refusals() -> None:
    try:
        try:
            raise OSError(28, "No space left on device")
        except OSError as exc:
            raise TransferFailed(str(exc)) from None
    except TransferFailed as local:
        code, message = exit_codes.explain_failure(local)
    assert code == exit_codes.FAILED
    assert message == "failed on this computer: [Errno 28] No space left on device"
    assert exit_codes.explain_failure(TransferFailed("no such file")) == (
        exit_codes.REFUSED,
        "refused: no such file",
    )


def test_a_message_over_the_servers_limit_is_refused_as_typed_and_not_queued() -> None:
    outgoing = chat_outgoing.Outgoing(chat_terminal.Terminal(io.StringIO(), "alice"))
    with pytest.raises(MessageTooLong) as refused:
        outgoing.add("x" * 101, room="general", limit=100)
    assert exit_codes.explain_failure(refused.value) == (
        exit_codes.REFUSED,
        "refused: the message has 101 characters; at most 100 fit in one message",
    )
    outgoing.add("y" * 100, room="general", limit=100)
    assert [typed.text for typed in outgoing.queued] == ["y" * 100]
    assert outgoing.refused == ["x" * 101]


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (LoginFailed("invalid username or password"), exit_codes.LOGIN_FAILED),
        (ServerKeyChanged("h:1", "SHA256:old", "SHA256:new", Path("known_servers")), 4),
    ],
)
def test_a_chat_ends_when_the_client_gives_up(
    error: Exception, code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    client = _Dropped()  # its LinkState has no retry_in: the client gave up
    client.gave_up_on = error
    term = chat_terminal.Terminal(sys.stdout, "alice")
    with pytest.raises(Exception) as caught:  # noqa: PT011
        trio.run(chat_cmd._show_events, client, term, chat_outgoing.Outgoing(term))
    assert exit_codes.explain_failure(caught.value)[0] == code
    assert capsys.readouterr().out == ""  # no "! disconnected" line to go on after


def test_a_refused_login_says_when_to_retry_or_where_the_password_came_from() -> None:
    busy = LoginFailed("too many failed logins", retry_after=29.2)
    assert exit_codes.explain_failure(busy, "SEALCHAT_PASSWORD") == (
        exit_codes.LOGIN_FAILED,
        "login refused: too many failed logins; try again in 30 s",
    )
    # The server's reason says when already: once, as the server said it.
    said = LoginFailed("too many failed attempts; try again in 0 s", retry_after=0.4)
    assert exit_codes.explain_failure(said, "SEALCHAT_PASSWORD") == (
        exit_codes.LOGIN_FAILED,
        "login refused: too many failed attempts; try again in 0 s",
    )
    wrong = LoginFailed("invalid username or password")
    assert exit_codes.explain_failure(wrong, "--password-file pw.txt")[1] == (
        "login refused: invalid username or password (the password came from "
        "--password-file pw.txt)"
    )
    assert exit_codes.explain_failure(wrong)[1] == "login refused: invalid username or password"
    # No password can help a removed account: where it came from would only mislead.
    removed = LoginFailed(ACCOUNT_REMOVED)
    assert exit_codes.explain_failure(removed, "SEALCHAT_PASSWORD")[1] == (
        "login refused: your account was removed"
    )


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_message_naming_the_user_is_bold_with_the_bell_on_a_terminal_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setattr(chat_terminal.sys, "platform", "linux")

    def shown(out: io.StringIO, sender: str, text: str) -> str:
        term = chat_terminal.Terminal(out, "alice")
        term.show(Message(text=text, room="general", sender=sender, ts=0.0))
        return out.getvalue().split("\n")[-2]

    assert shown(_Tty(), "bob", "@Alice look") == (
        "\x1b[1m--:-- [general] bob: @Alice look\x1b[0m\a"
    )
    assert shown(_Tty(), "bob", "malice") == "--:-- [general] bob: malice"
    assert shown(_Tty(), "Alice", "alice here") == "--:-- [general] Alice: alice here"
    assert shown(io.StringIO(), "bob", "@alice look") == "--:-- [general] bob: @alice look"
    # What the peer wrote cannot end the bold early: its escape codes are shown, not run.
    assert shown(_Tty(), "bob", "alice \x1b[0m") == (
        "\x1b[1m--:-- [general] bob: alice \\x1b[0m\x1b[0m\a"
    )
    # A terminal that asks for no codes gets the bell alone.
    for variable, value in (("NO_COLOR", "1"), ("TERM", "dumb")):
        with monkeypatch.context() as patch:
            patch.setenv(variable, value)
            assert shown(_Tty(), "bob", "alice?") == "--:-- [general] bob: alice?\a"


def test_a_burst_of_mentions_rings_the_bell_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    now = [1000.0]
    out = _Tty()
    term = chat_terminal.Terminal(out, "alice", clock=lambda: now[0])
    for n, at in enumerate((1000.0, 1001.0, 1009.0, 1011.0)):  # a replay, then one later
        now[0] = at
        term.show(Message(text=f"alice {n}", room="general", sender="bob", ts=0.0))
    assert [line.endswith("\a") for line in out.getvalue().split("\n")[:-1]] == [
        True,
        False,
        False,
        True,
    ]


def test_lines_printed_during_a_transfer_never_land_on_its_progress_bar() -> None:
    out = _Tty()
    term = chat_terminal.Terminal(out, "alice")
    update = term.progress("report.pdf")
    update(50, 100)
    term.say("12:00 [general] bob: hi")
    update(250, 100)  # a server reporting more than it announced: still at most 100 %
    term.say("* saved report.pdf")
    lines = [line.rsplit("\r", 1)[-1] for line in out.getvalue().split("\n")]
    assert lines == [
        "report.pdf [##########          ]  50%",
        "12:00 [general] bob: hi",
        "report.pdf [####################] 100%",
        "* saved report.pdf",
        "",
    ]


def test_transfers_at_once_say_their_progress_in_whole_lines_at_milestones() -> None:
    # Several transfers, and messages arriving: a line each time one passes 25, 50, 75 or
    # 100 %, never a line left open that the next output (or what is typed) would land on.
    out = _Tty()
    term = chat_terminal.Terminal(out, "alice")
    sending, getting = term.progress("sending a.pdf"), term.progress("getting b.zip")
    sending(0, 400)
    getting(10, 100)
    sending(90, 400)  # 22 %: no milestone passed
    term.say("12:00 [general] bob: hi")
    getting(60, 100)
    sending(400, 400)
    sending(400, 400)  # done once
    getting(100, 100)
    assert out.getvalue() == (
        "sending a.pdf [                    ]   0%\n"
        "getting b.zip [##                  ]  10%\n"
        "12:00 [general] bob: hi\n"
        "getting b.zip [############        ]  60%\n"
        "sending a.pdf [####################] 100%\n"
        "getting b.zip [####################] 100%\n"
    )


def test_no_key_question_once_the_chat_reads_its_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    # A reconnect meeting an unknown key must not ask: the command loop is reading standard
    # input too, and the answer would become a chat message.
    typed = io.StringIO("y\ny\n")
    monkeypatch.setattr(sys, "stdin", typed)

    async def main() -> tuple[bool | None, bool | None]:
        reading = trio.Event()
        ask = login.asker(True, until=reading)
        assert ask is not None
        before = await ask("example.org:7878", "SHA256:" + "A" * 43)
        reading.set()
        return before, await ask("example.org:7878", "SHA256:" + "A" * 43)

    assert trio.run(main) == (True, False)
    assert typed.read() == "y\n"  # the second answer was never read


def test_a_connection_lost_at_any_point_exits_with_its_own_code() -> None:
    # Lost during the login (a request under way) or for good: both are "the connection was
    # lost", exit 7, not a generic failure.
    from sealchat.transports import trio_client, trio_link

    for lost in (trio_link.LinkLost("the connection was lost"), Disconnected("gone")):
        assert exit_codes.explain_failure(lost)[0] == exit_codes.LOST == 7
    closed = trio_client.ConnectionLost("the server closed the connection: server full")
    assert exit_codes.explain_failure(closed)[0] == exit_codes.LOST


def test_the_password_and_typed_messages_never_show_in_a_repr(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A repr lands in logs, debuggers and tracebacks' locals: like the core's records, these
    # show how long a message is, never what it is, and nothing of a password, not even its
    # length.
    monkeypatch.setenv("SEALCHAT_PASSWORD", "hunter2-SECRET")
    monkeypatch.setattr(sys, "stdin", io.StringIO())
    args = argparse.Namespace(user="alice", password_file=None)
    credentials = login.credentials_from(args)
    assert credentials is not None
    assert credentials.password == "hunter2-SECRET"  # still there for the login
    shown = repr(credentials)
    assert "hunter2" not in shown
    assert "password=<hidden>" in shown
    assert "14" not in shown
    assert "SEALCHAT_PASSWORD" in shown  # where it came from is no secret
    typed = chat_outgoing._Typed("PLAINTEXT-MESSAGE", "general", "")
    assert "PLAINTEXT" not in repr(typed)
    assert repr(typed) == "_Typed(text=<17 chars>, room='general', to='')"


def test_ctrl_c_reaches_a_session_only_at_a_checkpoint() -> None:
    # By default trio raises KeyboardInterrupt in whatever code runs when Ctrl-C comes: in
    # nursery.start_soon it left the chat's nursery a child that never ran, so that leaving
    # the nursery waited forever (a chat interrupted right after logging in hung so). Here
    # Ctrl-C comes just before a task is started: the start must run to its end, and the
    # interrupt end the session at the next checkpoint, its tasks cancelled.
    steps: list[str] = []

    async def child() -> None:
        try:
            await trio.sleep_forever()
        finally:
            steps.append("child cancelled")

    async def main() -> int:
        async with trio.open_nursery() as nursery:
            signal.raise_signal(signal.SIGINT)  # handled before raise_signal returns
            nursery.start_soon(child)
            steps.append("started")
        return exit_codes.OK

    credentials = login.Credentials("secret", "SEALCHAT_PASSWORD", interactive=False)
    with pytest.raises(BaseExceptionGroup) as caught:  # from the nursery (guarded takes it)
        login.run_session(main, credentials)
    assert caught.group_contains(KeyboardInterrupt)
    assert steps == ["started", "child cancelled"]


def test_get_takes_only_the_file_as_it_was_shown() -> None:
    # /get ID hands the client the file as the terminal showed it (announced, listed), so a
    # server that offers something else (a larger size: a full disk) is refused.
    term = chat_terminal.Terminal(io.StringIO(), "alice")
    announced = FileInfo(file_id="a" * 32, name="notes.txt", size=10, sha256=bytes(32))
    listed = FileInfo(file_id="b" * 32, name="plan.txt", size=20, sha256=b"\1" * 32)
    term.show(Message(id=1, ts=1.0, sender="bob", room="general", file=announced))
    asked: list[tuple[str, FileInfo | None]] = []

    class Client:
        online = True

        async def files(self, *, room: str = "", peer: str = "") -> list[FileInfo]:
            return [listed]

        async def download(
            self, file_id: str, *, progress: Any, expected: FileInfo | None = None
        ) -> Path:
            asked.append((file_id, expected))
            return Path("saved")

    client: Any = Client()
    run_lines(client, term, "/files", f"/get {'a' * 32}", f"/get {'b' * 32}", f"/get {'c' * 32}")
    assert sorted(asked, key=lambda each: each[0]) == [
        ("a" * 32, announced),
        ("b" * 32, listed),
        ("c" * 32, None),
    ]  # the downloads run at once, in any order


def test_rooms_say_member_or_members(capsys: pytest.CaptureFixture[str]) -> None:
    class Client:
        async def rooms(self) -> list[RoomInfo]:
            return [RoomInfo(name="solo", members=1, joined=True), RoomInfo(name="dev", members=2)]

    term = chat_terminal.Terminal(sys.stdout, "alice")
    client: Any = Client()
    run_lines(client, term, "/rooms")
    assert capsys.readouterr().out == "* solo (1 member)\n  dev (2 members)\n"


@pytest.mark.parametrize(
    ("texts", "said"),
    [
        (
            ["lost one"],
            "1 message may not have been delivered (the server never confirmed it; look before "
            "sending again): 'lost one'",
        ),
        (
            ["lost one", "lost two"],
            "2 messages may not have been delivered (the server never confirmed them; look "
            "before sending again): 'lost one', 'lost two'",
        ),
    ],
)
def test_messages_never_delivered_are_it_or_them(
    texts: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    outgoing = chat_outgoing.Outgoing(chat_terminal.Terminal(io.StringIO(), "alice"))
    for text in texts:
        outgoing.add(text, room="general")
    assert outgoing.report() == exit_codes.LOST
    assert capsys.readouterr().err == f"sealchat: {said}\n"


def test_room_names_typed_in_capitals_are_lowercased(capsys: pytest.CaptureFixture[str]) -> None:
    # Room names are lowercase on the wire; the desktop client takes "Dev" as "dev" too.
    asked: list[tuple[str, str]] = []

    class Client:
        async def join(self, room: str) -> list[MemberInfo]:
            asked.append(("join", room))
            return [MemberInfo(name="alice", online=True)]

        async def leave(self, room: str) -> None:
            asked.append(("leave", room))

    term = chat_terminal.Terminal(sys.stdout, "alice")
    client: Any = Client()
    run_lines(client, term, "/join Dev", "/leave DEV")
    assert asked == [("join", "dev"), ("leave", "dev")]
    assert capsys.readouterr().out == "* now in dev: alice\n* left dev; now in general\n"


def test_leave_without_a_room_leaves_the_current_one(capsys: pytest.CaptureFixture[str]) -> None:
    left: list[str] = []

    class Client:
        async def join(self, room: str) -> list[MemberInfo]:
            return [MemberInfo(name="alice", online=True)]

        async def leave(self, room: str) -> None:
            left.append(room)

    term = chat_terminal.Terminal(sys.stdout, "alice")
    client: Any = Client()
    run_lines(client, term, "/join books", "/leave", "/leave  ")
    assert left == ["books", "general"]  # then general: the server says it cannot be left
    assert capsys.readouterr().out.splitlines()[1] == "* left books; now in general"


class _Replayed:
    """A client whose events() brings ``events``, then ends."""

    gave_up_on: Exception | None = None

    def __init__(self, events: list[Any]) -> None:
        send, self._receive = trio.open_memory_channel[Any](len(events))
        for event in events:
            send.send_nowait(event)
        send.close()

    def events(self) -> trio.MemoryReceiveChannel[Any]:
        return self._receive


def test_an_outage_is_said_once_and_the_reconnect_before_what_was_missed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    unreachable = "cannot reach 127.0.0.1:7979: all attempts to connect failed"
    missed = [Message(id=n, sender="bob", room="general", text=f"missed {n}") for n in (1, 2)]
    client: Any = _Replayed(
        [
            LinkState(connected=False, reason="the server is shutting down", retry_in=0.7),
            *(LinkState(connected=False, reason=unreachable, retry_in=w) for w in (0.6, 2.2, 4)),
            *missed,  # the client replays what was missed before it says it is back
            LinkState(connected=True),
            LinkState(connected=False, reason="the connection was lost", retry_in=0.5),
            LinkState(connected=True),
        ]
    )
    term = chat_terminal.Terminal(sys.stdout, "alice")
    trio.run(chat_cmd._show_events, client, term, chat_outgoing.Outgoing(term))
    assert capsys.readouterr().out.splitlines() == [
        "! connection lost (the server is shutting down); reconnecting in 0.7 s…",
        f"! still reconnecting: {unreachable}",
        "* reconnected",
        "--:-- [general] bob: missed 1",
        "--:-- [general] bob: missed 2",
        "! connection lost (the connection was lost); reconnecting in 0.5 s…",
        "* reconnected",
    ]


async def test_what_a_chat_showed_is_told_read_once_per_conversation() -> None:
    told: list[tuple[int, str, str]] = []

    class Client:
        async def mark_read(self, up_to: int, *, room: str = "", peer: str = "") -> bool:
            told.append((up_to, room, peer))
            return True

    reads = ReadsShown("Alice")
    reads.shown(Message(text="caught up on", room="general", id=1, sender="bob"))
    reads.follow(HistoryEnd(more=False))  # the end of the login's replay
    for shown in (
        Message(text="a", room="general", id=3, sender="bob"),
        Message(text="b", room="general", id=5, sender="carol"),
        Message(text="c", to="alice", id=4, sender="bob"),  # to the user: with its sender
        Message(text="d", to="Dave", id=7, sender="alice"),  # the user's own: with whom it went to
    ):
        reads.shown(shown)
    await reads.tell(Client())  # type: ignore[arg-type]
    assert sorted(told) == [(4, "", "bob"), (5, "general", ""), (7, "", "Dave")]
    await reads.tell(Client())  # type: ignore[arg-type]
    assert len(told) == 3  # nothing new shown: nothing told again
    reads.follow(LinkState(connected=False, reason="reset", retry_in=1.0))
    reads.shown(Message(text="caught up on", room="general", id=9, sender="bob"))
    await reads.tell(Client())  # type: ignore[arg-type]
    assert len(told) == 3  # the reconnect's replay is not told read either
