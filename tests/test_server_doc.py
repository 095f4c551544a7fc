"""docs/server.md, the operator's guide, agrees with the ``sealchat`` command it describes."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from sealchat.cli.main import build_parser
from sealchat.core.hub import HubConfig
from sealchat.core.sizes import shown_size

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "server.md"
TEXT = GUIDE.read_text(encoding="utf-8")


def _commands() -> list[list[str]]:
    """Every ``sealchat …`` command line in the guide's code blocks (the cron line and the
    systemd unit's too), as the arguments after ``sealchat``."""
    blocks = "\n".join(re.findall(r"^```\w*\n(.*?)^```", TEXT, flags=re.MULTILINE | re.DOTALL))
    lines = re.findall(r"(?:^|[\s/])sealchat (\w[^\n#]*)", blocks, flags=re.MULTILINE)
    return [shlex.split(line.replace("$(date +\\%F)", "today")) for line in lines]


def test_every_command_the_guide_gives_is_one_the_cli_takes() -> None:
    commands = _commands()
    assert len(commands) >= 8
    parser = build_parser()
    for words in commands:
        try:
            parser.parse_args(words)
        except SystemExit:  # pragma: no cover  (the failure names the command)
            pytest.fail(f"the guide gives `sealchat {shlex.join(words)}`, which the CLI refuses")


def test_the_limits_table_lists_every_server_option_with_its_default() -> None:
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    server = commands.choices["server"]
    rows = dict(re.findall(r"^\| `(--[a-z-]+)[^`]*` \| ([^|]+) \|", TEXT, flags=re.MULTILINE))
    limited = ("max_", "user_", "address_", "message_")
    limits = [a for a in server._actions if a.dest.startswith(limited)]
    assert sorted(rows) == sorted(a.option_strings[0] for a in limits)
    for action in limits:
        shown = rows[action.option_strings[0]].strip()
        if action.metavar == "SIZE":
            assert shown == shown_size(action.default).replace(".0 ", " "), action.dest
        else:
            assert shown == f"{action.default:,}", action.dest


def test_the_registration_limit_is_told_as_the_hub_applies_it() -> None:
    # A bucket of 5 refilled at 5 an hour lets 5 in at once and 5 more within the hour.
    found = re.search(r"\((\d+) at once from one address, then (\d+) an hour\)", TEXT)
    assert found is not None
    config = HubConfig()
    assert (int(found[1]), int(found[2])) == (
        config.registration_burst,
        config.registrations_per_hour,
    )


def test_the_folder_backups_go_to_is_made_for_the_service_user_first() -> None:
    # The service's user cannot create a folder under /srv: a backup there fails unless the
    # guide has it made first, the user's own.
    make = "install -d -o sealchat -g sealchat -m 700 "
    for command in re.finditer(r"sealchat backup (?:--data-dir \S+ )?(/\S+)/\S+", TEXT):
        made = TEXT.find(make + command[1])
        assert 0 <= made < command.start(), command[0]


def test_the_guide_says_both_servers_serve_an_uploader_during_its_read_back() -> None:
    # Both read back an upload on threads of their own: the uploader's connection is
    # answered during the check (tests/test_upload_checks_servers.py).
    (told,) = [p for p in TEXT.split("\n\n") if "read back from the disk" in p]
    told = " ".join(told.split())
    assert "Both servers (trio, and `--threads`) read on threads of their own" in told
    assert "the uploader's session goes on too" in told
    assert "own client thread" not in told
