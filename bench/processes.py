"""Child processes for the benchmarks that need more than one (client, server), and what
``/proc`` says about them.

The orchestrator starts every child with the ``spawn`` context and talks to it over a pipe:
it sends commands ``(kind, value)``, the child answers ``(kind, value)`` (or ``("ready",
value)`` once it has started, or ``("error", traceback)`` if it failed). A child that hears
nothing within its lifetime, or finds the pipe closed, takes it as ``("stop", None)``.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import traceback
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any

import trio

# --- the orchestrator's side ----------------------------------------------------------------


class Child:
    """A child process (``spawn``) and the parent's end of a pipe to it. The child runs
    ``target(pipe, *args)`` with ``env`` added to its environment; an exception in it is sent
    back as ``("error", traceback)``."""

    def __init__(self, target: Callable[..., None], *args: Any, env: dict[str, str] | None = None):
        ctx = multiprocessing.get_context("spawn")
        self.pipe, child_end = ctx.Pipe()
        self.process = ctx.Process(target=_child_main, args=(target, child_end, *args))
        self.process.daemon = True
        with _environment(env or {}):  # a spawned child inherits os.environ as it is now
            self.process.start()
        child_end.close()

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    def tell(self, kind: str, value: Any = None) -> None:
        """Send the command ``(kind, value)`` without waiting for an answer."""
        self.pipe.send((kind, value))

    def expect(self, tag: str, timeout: float = 120.0) -> Any:
        """The next message from the child, which must be ``(tag, value)``."""
        if not self.pipe.poll(timeout):
            raise TimeoutError(f"no {tag!r} from child {self.pid} within {timeout:.0f} s")
        kind, value = self.pipe.recv()
        if kind == "error":
            raise RuntimeError(f"child {self.pid} failed:\n{value}")
        if kind != tag:
            raise RuntimeError(f"child {self.pid} sent {kind!r}, expected {tag!r}")
        return value

    def ask(self, kind: str, value: Any = None, *, timeout: float = 120.0) -> Any:
        """Send ``(kind, value)`` and wait for the answer tagged ``kind``."""
        self.tell(kind, value)
        return self.expect(kind, timeout)

    def close(self) -> None:
        """Ask the child to stop; terminate, then kill, whatever does not."""
        with contextlib.suppress(OSError, ValueError):
            self.tell("stop")
        self.process.join(10)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        self.pipe.close()


class Children:
    """The children of one measurement: ``with Children() as children`` stops every one still
    running on the way out, the last started first."""

    def __init__(self) -> None:
        self._running: list[Child] = []

    def __enter__(self) -> Children:
        return self

    def __exit__(self, *exc: object) -> None:
        while self._running:
            self._running.pop().close()

    def spawn(
        self, target: Callable[..., None], *args: Any, env: dict[str, str] | None = None
    ) -> Child:
        """Start a child (see ``Child``) without waiting for it."""
        child = Child(target, *args, env=env)
        self._running.append(child)
        return child

    def start(
        self, target: Callable[..., None], *args: Any, env: dict[str, str] | None = None
    ) -> tuple[Child, Any]:
        """Start a child and wait for its ``("ready", value)``; returns both."""
        child = self.spawn(target, *args, env=env)
        return child, child.expect("ready", 120.0)

    def stop(self, *children: Child) -> None:
        """Stop these children now."""
        for child in children:
            self._running.remove(child)
            child.close()


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# --- the child's side -----------------------------------------------------------------------


def _child_main(target: Callable[..., None], pipe: Pipe, *args: Any) -> None:
    try:
        target(pipe, *args)
    except BaseException:
        with contextlib.suppress(OSError, ValueError):
            pipe.send(("error", traceback.format_exc()))


def next_command(pipe: Pipe, lifetime: float) -> tuple[str, Any]:
    """The orchestrator's next command; ``("stop", None)`` if it went away or sent nothing
    within ``lifetime`` seconds."""
    try:
        if pipe.poll(lifetime):
            kind, value = pipe.recv()
            return str(kind), value
    except (EOFError, OSError):
        pass
    return "stop", None


async def trio_next_command(pipe: Pipe, lifetime: float) -> tuple[str, Any]:
    """``next_command`` for a child running trio: waits in a worker thread."""
    return await trio.to_thread.run_sync(next_command, pipe, lifetime, abandon_on_cancel=True)


# --- /proc ----------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by ``pid`` (all its threads); NaN if unreadable
    (off Linux, or out of descriptors, say)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def vm_bytes(pid: int, field: str) -> int:
    """A memory figure of ``pid`` from ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``...), in
    bytes. Raises ``OSError`` if the file cannot be read, ``LookupError`` if it has no such
    line."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise LookupError(f"no {field} for {pid}")
