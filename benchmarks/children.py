"""A server run in a child process and driven over a pipe, for the process-level benchmarks.

Each fake platform (chat API, Slack, Discord) and the Redis round-trip counter runs in its own
process, so neither the driver's load nor another fake's shares its event loop and its GIL: the
timestamps a fake records (`time.monotonic()`, one clock for every process on Linux) are taken
when the request really arrives. The child serves commands one at a time from its own event loop;
the parent's methods are async only so they do not stall the parent's loop.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from typing import Any

START_TIMEOUT_S = 60.0  # a spawned child imports aiohttp (and discord.py) afresh
CALL_TIMEOUT_S = 120.0  # the largest answer is every recorded call of a 1,000-conversation round

# The child's side: one coroutine per command name; each gets the command's arguments.
Commands = dict[str, Callable[..., Awaitable[Any]]]


async def serve_commands(conn: Connection, ready: Any, commands: Commands) -> None:
    """In the child: report `ready` to the parent, then answer commands until "stop" or EOF."""
    loop = asyncio.get_running_loop()
    conn.send(("ok", ready))
    while True:
        try:
            op, args = await loop.run_in_executor(None, conn.recv)
        except (EOFError, OSError):
            return  # the parent went away
        if op == "stop":
            conn.send(("ok", None))
            return
        try:
            result = await commands[op](*args)
        except Exception as exc:  # told to the parent rather than dying silently
            conn.send(("error", f"{op}: {exc!r}"))
            continue
        conn.send(("ok", result))


class Child:
    """A spawned process running `target(conn, *args)`; `call` sends it a command."""

    def __init__(self, name: str, target: Callable[..., None], *args: Any) -> None:
        self.name = name
        self._target = target
        self._args = args
        self._conn: Connection | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        self.ready: Any = None

    @property
    def pid(self) -> int:
        assert self._process is not None and self._process.pid is not None, f"{self.name} not started"
        return self._process.pid

    async def start(self) -> Any:
        ctx = multiprocessing.get_context("spawn")  # never fork a process that runs an event loop
        parent, child = ctx.Pipe()
        self._process = ctx.Process(target=self._target, args=(child, *self._args), name=self.name,
                                    daemon=True)
        self._process.start()
        child.close()
        self._conn = parent
        self.ready = await asyncio.to_thread(self._receive, START_TIMEOUT_S)
        return self.ready

    async def call(self, op: str, *args: Any) -> Any:
        return await asyncio.to_thread(self._call, op, args)

    async def stop(self) -> None:
        process, conn = self._process, self._conn
        if process is None or conn is None:
            return
        try:
            await asyncio.to_thread(self._call, "stop", ())
        except (RuntimeError, OSError, EOFError):
            pass
        await asyncio.to_thread(process.join, 5.0)
        if process.is_alive():
            process.terminate()  # only the child this object started
            await asyncio.to_thread(process.join, 5.0)
        conn.close()
        self._process = self._conn = None

    def _call(self, op: str, args: tuple[Any, ...]) -> Any:
        if self._conn is None:
            raise RuntimeError(f"{self.name} is not running")
        self._conn.send((op, args))
        return self._receive(CALL_TIMEOUT_S)

    def _receive(self, timeout: float) -> Any:
        assert self._conn is not None
        if not self._conn.poll(timeout):
            raise RuntimeError(f"{self.name} did not answer within {timeout:.0f} s")
        status, payload = self._conn.recv()
        if status != "ok":
            raise RuntimeError(f"{self.name} failed: {payload}")
        return payload
