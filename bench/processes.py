"""Child processes for the benchmarks that need more than one (client, server), what they
share (the command loop, a sealchat server), and what ``/proc`` says about them.

The orchestrator starts every child with the ``spawn`` context and talks to it over a pipe:
it sends commands ``(kind, value)``, the child answers ``(kind, value)`` (or ``("ready",
value)`` once it has started, or ``("error", traceback)`` if it failed). A child that hears
nothing within its lifetime, or finds the pipe closed, takes it as ``("stop", None)``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import traceback
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from bench.harness import HOST, PASSWORD

if TYPE_CHECKING:
    from sealchat.transports.server_config import ServerConfig

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


def _next_command(pipe: Pipe, lifetime: float) -> tuple[str, Any]:
    """The orchestrator's next command; ``("stop", None)`` if it went away or sent nothing
    within ``lifetime`` seconds."""
    try:
        if pipe.poll(lifetime):
            kind, value = pipe.recv()
            return str(kind), value
    except (EOFError, OSError):
        pass
    return "stop", None


def answer(
    pipe: Pipe, lifetime: float, handlers: Mapping[str, Callable[[Any], Any]], end: str = "stop"
) -> None:
    """Answer each command ``(kind, value)`` with ``(kind, handlers[kind](value))`` until the
    command ``end``; any other kind (``"stop"`` too, if it is not ``end``) raises."""
    while (command := _next_command(pipe, lifetime))[0] != end:
        kind, value = command
        if kind not in handlers:
            raise ValueError(f"unexpected command {kind!r}")
        pipe.send((kind, handlers[kind](value)))


async def trio_answer(
    pipe: Pipe,
    lifetime: float,
    handlers: Mapping[str, Callable[[Any], Awaitable[Any]]],
    end: str = "stop",
) -> None:
    """``answer`` for a child running trio, with async handlers."""
    while (command := await _trio_next_command(pipe, lifetime))[0] != end:
        kind, value = command
        if kind not in handlers:
            raise ValueError(f"unexpected command {kind!r}")
        pipe.send((kind, await handlers[kind](value)))


async def _trio_next_command(pipe: Pipe, lifetime: float) -> tuple[str, Any]:
    """``_next_command`` waiting in a worker thread."""
    return await trio.to_thread.run_sync(_next_command, pipe, lifetime, abandon_on_cancel=True)


def serve_sealchat(
    pipe: Pipe,
    data_dir: str,
    users: Iterable[str],
    config: ServerConfig,
    lifetime: float,
    *,
    threads: bool = False,
) -> None:
    """A sealchat server child: the trio server (with ``threads``, the threaded one) on a
    SqliteStore in ``data_dir`` holding ``users`` (password PASSWORD), set up by ``config``
    but on HOST at a free port and with CHEAP Argon2id. Sends ``("ready", port)``, then
    answers each "count" with the number of connections until "stop"."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from sealchat.core.hub import Hub
    from sealchat.core.hub.names import user_key
    from sealchat.transports.blocking_server import ThreadedServer
    from sealchat.transports.passwords import CHEAP, hash_password
    from sealchat.transports.sqlite_store import SqliteStore
    from sealchat.transports.trio_server import TrioServer

    store = SqliteStore(Path(data_dir))
    phc = hash_password(PASSWORD, params=CHEAP)  # one hash for all: verifying costs the same
    for name in users:
        store.add_user(name, user_key(name), phc)
    config = dataclasses.replace(config, host=HOST, port=0, argon2=CHEAP)
    hub, key = Hub(store, config.hub), X25519PrivateKey.generate()
    if threads:
        threaded = ThreadedServer(hub, key, config)
        try:
            _, port = threaded.start()
            pipe.send(("ready", port))
            answer(pipe, lifetime, {"count": lambda _: threaded.connections})
        finally:
            threaded.stop()
        return
    server = TrioServer(hub, key, config)

    async def count(_: object) -> int:
        return server.connections

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(server.serve)
            pipe.send(("ready", listeners[0].socket.getsockname()[1]))
            await trio_answer(pipe, lifetime, {"count": count})
            server.stop()

    trio.run(main)


# --- /proc ----------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by ``pid`` (all its threads); NaN if unreadable
    (off Linux, or out of descriptors, say)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """The CPU seconds (see ``cpu_seconds``) some processes, by label, used since the meter
    was made."""

    def __init__(self, pids: Mapping[str, int]) -> None:
        self.pids = dict(pids)
        self.start = {label: cpu_seconds(pid) for label, pid in self.pids.items()}

    def used(self, per: float = 1.0) -> dict[str, float]:
        """CPU seconds each process has used so far, by label, divided by ``per``."""
        return {
            label: (cpu_seconds(pid) - self.start[label]) / per for label, pid in self.pids.items()
        }


def vm_bytes(pid: int, field: str) -> int:
    """A memory figure of ``pid`` from ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``...), in
    bytes. Raises ``OSError`` if the file cannot be read, ``LookupError`` if it has no such
    line."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise LookupError(f"no {field} for {pid}")
