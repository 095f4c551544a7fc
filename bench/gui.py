"""Issue 5 benchmark: a 10,000-message history in the desktop client's transcript.

Measures the time to render the whole conversation (view-model to tagged text in the window,
until Tk has drawn it), next to the bare cost of inserting the same lines into a plain
``tk.Text`` in the same run; then the slowest frame while scrolling from the bottom to the
top; and the memory the rendered history adds. Needs a display: starts its own Xvfb when
``DISPLAY`` is not set.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tkinter as tk
from collections.abc import Iterator
from pathlib import Path

from bench.harness import Row
from sealchat.core import Message

COUNT = 10_000
TARGET_SECONDS = 1.0


@contextlib.contextmanager
def display() -> Iterator[None]:
    """A display to draw on: the current one, or a private Xvfb."""
    if os.environ.get("DISPLAY"):
        yield
        return
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        raise SystemExit("bench gui needs Xvfb (apt-get install xvfb) or a DISPLAY")
    for number in range(70, 90):
        if not Path(f"/tmp/.X11-unix/X{number}").exists():
            break
    process = subprocess.Popen(
        [xvfb, f":{number}", "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.environ["DISPLAY"] = f":{number}"
    try:
        for _ in range(100):
            if Path(f"/tmp/.X11-unix/X{number}").exists():
                break
            time.sleep(0.05)
        yield
    finally:
        del os.environ["DISPLAY"]
        process.terminate()
        process.wait()


def _messages() -> list[Message]:
    words = "the quick brown fox jumps over a lazy dog while sealchat keeps it secret".split()  # noqa: SIM905
    return [
        Message(
            text=" ".join(words[(i + k) % len(words)] for k in range(8 + i % 12)),
            room="general",
            id=i + 1,
            sender=("alice", "bob", "carol")[i % 3],
            ts=1_700_000_000 + i * 7.0,
        )
        for i in range(COUNT)
    ]


def _rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _render_once(messages: list[Message]) -> tuple[float, float, int]:
    """(seconds to render, slowest scroll frame in seconds, KiB of peak RSS added)."""
    from sealchat.gui.app import App
    from sealchat.gui.conversation import room_key
    from sealchat.gui.settings import Settings

    with tempfile.TemporaryDirectory() as folder:
        app = App(Settings(path=Path(folder) / "gui.json"))
        app.login_form.place_forget()
        app.chat.pack(fill="both", expand=True)
        app.update()
        before = _rss_kib()
        start = time.perf_counter()
        app.vm.logged_in("alice")
        for message in messages:
            app.vm.apply(message, 0.0)
        app.redraw(app.vm.select(room_key("general")))
        app.update()
        rendered = time.perf_counter() - start
        frames = []
        for step in range(20, -1, -1):
            tick = time.perf_counter()
            app.chat.transcript.yview_moveto(step / 20)
            app.update()
            frames.append(time.perf_counter() - tick)
        added = _rss_kib() - before
        app._destroy()
        return rendered, max(frames), added


def _bare_once(messages: list[Message]) -> float:
    root = tk.Tk()
    text = tk.Text(root)
    text.pack(fill="both", expand=True)
    root.update()
    start = time.perf_counter()
    for message in messages:
        text.insert("end", f"12:00  {message.sender}: {message.text}\n")
    text.see("end")
    root.update()
    elapsed = time.perf_counter() - start
    root.destroy()
    return elapsed


def run() -> list[Row]:
    messages = _messages()
    with display():
        ours, bare, frames, memory = [], [], [], []
        for _ in range(3):
            seconds, frame, added = _render_once(messages)
            ours.append(seconds)
            frames.append(frame)
            memory.append(added)
            bare.append(_bare_once(messages))
    mine, ceiling = statistics.median(ours), statistics.median(bare)
    print(
        f"GUI: {COUNT:,} messages rendered in {mine:.2f} s (target ≤ {TARGET_SECONDS:.0f} s), "
        f"bare tk.Text {ceiling:.2f} s; slowest scroll frame {max(frames) * 1e3:.0f} ms; "
        f"peak RSS added {statistics.median(memory) / 1024:.1f} MiB",
        file=sys.stderr,
    )
    return [
        Row(
            f"GUI: render {COUNT:,}-message history (target ≤ {TARGET_SECONDS:.0f} s: "
            f"{'ok' if mine <= TARGET_SECONDS else 'MISSED'}, {mine:.2f} s)",
            "msg/s",
            COUNT / mine,
            COUNT / ceiling,
            "bare tk.Text inserts",
        ),
        Row(
            "GUI: slowest frame scrolling the history",
            "frames/s",
            1 / max(frames),
            60.0,
            "60 Hz",
        ),
    ]
