"""The pieces of the servers' connection limits on their own: what counts as one address, the
log that cannot flood, and the command line that sets the limits."""

from __future__ import annotations

import errno
import logging
from types import SimpleNamespace

import pytest

from sealchat.cli.main import build_parser
from sealchat.cli.server_cmd import server_config
from sealchat.core.limits import MAX_UINT
from sealchat.transports.server_config import ServerConfig
from sealchat.transports.server_limits import (
    TRIO_ACCEPT_LOG,
    ConnectionSlots,
    OncePerInterval,
    ThrottledLog,
    address_key,
    peer_name,
    quiet_trio_accept_log,
)


def test_one_ipv6_host_counts_as_one_address() -> None:
    # A host usually has a whole /64: counted one by one, its addresses would pass any cap.
    assert address_key("2001:db8:1:2::1") == address_key("2001:db8:1:2:ffff:ffff:ffff:ffff")
    assert address_key("2001:db8:1:2::1") != address_key("2001:db8:1:3::1")
    assert address_key("::ffff:192.0.2.7") == address_key("192.0.2.7") == "192.0.2.7"
    assert address_key("192.0.2.7") != address_key("192.0.2.8")
    assert address_key("fe80::1%eth0") == address_key("fe80::2%eth1")


def test_a_peer_is_named_by_its_address_and_port() -> None:
    def named(*address: object) -> str:
        return peer_name(SimpleNamespace(getpeername=lambda: address))

    assert named("192.0.2.7", 40000) == "192.0.2.7:40000"
    assert named("2001:db8::1", 40000, 0, 0) == "[2001:db8::1]:40000"

    def gone() -> None:
        raise OSError(errno.ENOTCONN, "Transport endpoint is not connected")

    assert peer_name(SimpleNamespace(getpeername=gone)) == "unknown"


def test_caps_count_by_address_and_forget_what_closed() -> None:
    slots = ConnectionSlots(
        ServerConfig(max_connections_per_address=3, max_unauthenticated_per_address=2)
    )
    host = "2001:db8::1"
    keys = [slots.admit(host, 0), slots.admit("2001:db8::2", 0)]
    assert None not in keys
    assert slots.admit("2001:db8::3", 0) is None  # two of the /64 not logged in yet
    slots.logged_in(keys[0])  # type: ignore[arg-type]
    third = slots.admit(host, 0)
    assert third is not None
    assert slots.admit(host, 0) is None  # three of the /64 open
    assert slots.admit("2001:db8:0:1::1", 0) is not None  # the next /64 is another address
    for key, logged_in in zip([*keys, third], [True, False, False], strict=True):
        slots.release(key, logged_in=logged_in)  # type: ignore[arg-type]
    assert slots.counts(host) == (0, 0)


def test_an_address_opens_new_connections_at_a_bounded_rate(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Each costs a handshake, and a peer may close it at once: the caps on connections open
    # at a time alone let one host keep the server busy with handshakes it gets for free.
    caplog.set_level(logging.INFO, logger="sealchat.server")
    now = [1000.0]
    slots = ConnectionSlots(
        ServerConfig(address_connections_per_second=2.0, address_connection_burst=3),
        clock=lambda: now[0],
    )
    for _ in range(3):  # the burst, each closed at once: never more than one open
        key = slots.admit("192.0.2.7", 0)
        assert key is not None
        slots.release(key, logged_in=False)
    assert slots.admit("192.0.2.7", 0) is None
    assert "faster than address_connections_per_second allows" in caplog.text
    assert slots.admit("192.0.2.8", 0) is not None  # another address has its own
    now[0] += 0.5  # one more after half a second at 2 a second
    assert slots.admit("192.0.2.7", 0) is not None
    assert slots.admit("192.0.2.7", 0) is None
    now[0] += 120.0  # refilled, then forgotten: as good as new
    assert slots.admit("192.0.2.7", 0) is not None
    assert len(slots._new._buckets) == 1


def test_refusals_are_logged_at_most_once_a_minute_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="sealchat.server")
    now = [1000.0]
    say = ThrottledLog(logging.INFO, interval=60.0, clock=lambda: now[0])
    for n in range(500):  # a flood of refusals in one second
        now[0] = 1000.0 + n / 500
        say("refused %s", "192.0.2.7")
    now[0] = 1061.0
    say("refused %s", "192.0.2.8")
    assert [r.getMessage() for r in caplog.records] == [
        "refused 192.0.2.7",
        "refused 192.0.2.8 (and 499 times more since the last such line)",
    ]


def test_the_server_command_sets_the_limits_per_address() -> None:
    args = build_parser().parse_args(
        [
            "server",
            "--max-connections-per-address",
            "500",
            "--max-unauthenticated-per-address",
            "64",
            "--address-connection-burst",
            "1000",
            "--address-connections-per-second",
            "50",
        ]
    )
    config = server_config(args)
    assert (config.max_connections_per_address, config.max_unauthenticated_per_address) == (500, 64)
    assert (config.address_connection_burst, config.address_connections_per_second) == (1000, 50)
    defaults = server_config(build_parser().parse_args(["server"]))
    for name in (
        "max_connections_per_address",
        "max_unauthenticated_per_address",
        "address_connection_burst",
        "address_connections_per_second",
    ):
        assert getattr(defaults, name) == getattr(ServerConfig(), name), name


def test_the_server_command_sets_the_file_limits_in_units_people_use(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = build_parser().parse_args(["server", "--max-file-size", "500M", "--user-quota", "1.5G"])
    hub = server_config(args).hub
    assert (hub.max_file_size, hub.user_quota) == (500 * 2**20, 3 * 2**29)
    defaults = server_config(build_parser().parse_args(["server"])).hub
    assert (defaults.max_file_size, defaults.user_quota) == (2 * 2**30, 10 * 2**30)
    bytes_only = server_config(build_parser().parse_args(["server", "--user-quota", "4096"]))
    assert bytes_only.hub.user_quota == 4096
    for bad in ("-5G", "2 lots", "1e9", "²K"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["server", f"--max-file-size={bad}"])
        assert f"{bad!r} is not a size: give bytes, or a number with K, M, G or T" in (
            capsys.readouterr().err
        )
    for bad in ("1.5", "0.5"):  # bytes come whole: not silently 1 byte, or refused as 0
        with pytest.raises(SystemExit):
            build_parser().parse_args(["server", f"--max-file-size={bad}"])
        assert f"{bad!r} is not a whole number of bytes" in capsys.readouterr().err


def test_the_server_command_sets_the_text_a_user_may_store_a_day(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = build_parser().parse_args(["server", "--message-quota", "100M"])
    assert server_config(args).hub.message_text_per_day == 100 * 2**20
    defaults = server_config(build_parser().parse_args(["server"])).hub
    assert defaults.message_text_per_day == 32 * 2**20
    with pytest.raises(SystemExit):
        build_parser().parse_args(["server", "--message-quota", "10K"])
    assert (
        "'10K' is less than the longest message takes: give at least 16,000 bytes"
        in capsys.readouterr().err
    )


def test_a_size_is_taken_exactly_and_one_past_what_the_wire_carries_is_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    exact = 2**53 + 1  # a float would make it 2**53
    args = build_parser().parse_args(["server", f"--max-file-size={exact}", "--user-quota=0.5K"])
    assert (args.max_file_size, args.user_quota) == (exact, 512)
    huge = "9" * 400  # a float of it is infinite
    for bad in ("0", huge, f"{huge}T", "9" * 5000, str(MAX_UINT + 1), "8388608T"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["server", f"--user-quota={bad}"])
        assert f"{bad!r} is out of range: give from 1 byte to 9,223,372,036,854,775,807" in (
            capsys.readouterr().err
        )


def test_no_file_over_the_quota_is_announced_as_one_users_may_share() -> None:
    # Clients learn max_file_size at login and check a file against it before reading it:
    # a file over the quota would be read whole, hashed and offered, then refused.
    args = build_parser().parse_args(["server", "--user-quota", "1G"])
    hub = server_config(args).hub
    assert (hub.max_file_size, hub.user_quota) == (2**30, 2**30)
    args = build_parser().parse_args(["server", "--max-file-size", "5G", "--user-quota", "20G"])
    assert server_config(args).hub.max_file_size == 5 * 2**30


def test_the_cap_on_logins_in_progress_can_bind_with_the_defaults() -> None:
    # An address's logins being checked are among its connections not logged in yet: with a
    # cap on those as high as on the logins, the logins' cap (and its "in progress" answer)
    # could never be reached.
    config = ServerConfig()
    assert config.hub.max_pending_logins < config.max_unauthenticated_per_address


def test_a_library_logger_that_retries_ten_times_a_second_is_heard_once_a_minute() -> None:
    now = [0.0]
    quiet = OncePerInterval(interval=60.0, clock=lambda: now[0])
    logger = logging.getLogger("tests.retrying")
    logger.addFilter(quiet)
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger.addHandler(Keep())
    logger.propagate = False
    for tick in range(1200):  # two minutes of retries, ten a second
        now[0] = tick / 10
        logger.error("accept returned EMFILE; retrying in %s seconds", 0.1)
    assert lines == [
        "accept returned EMFILE; retrying in 0.1 seconds",
        "accept returned EMFILE; retrying in 0.1 seconds (and 599 times more since the last)",
    ]


def test_the_trio_servers_accept_log_is_quieted_once() -> None:
    quiet_trio_accept_log()
    quiet_trio_accept_log()
    assert sum(isinstance(f, OncePerInterval) for f in TRIO_ACCEPT_LOG.filters) == 1
