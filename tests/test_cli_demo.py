"""The ``sealchat demo`` command runs a real handshake and session."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sealchat.cli.main import main


def test_demo_shows_fingerprints_and_the_session(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert out.count("SHA256:") >= 2
    assert "Message(text=<16 chars>" in out
    assert "hello over Noise" not in out  # plaintext never printed
    assert "ConnectionClosed(reason='demo over', clean=True)" in out


def test_python_dash_m_sealchat_runs_the_cli() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sealchat", "--version"], capture_output=True, text=True, check=True
    )
    assert done.stdout.startswith("sealchat ")
