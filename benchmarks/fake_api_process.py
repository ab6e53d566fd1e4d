"""`tests.fakes.chat_api.FakeChatAPI`, served from a child process for the benchmarks.

The fake is the one the tests use, unchanged; only where it runs differs. In-process, its aiohttp
handlers (JSON encoding and one socket write per chunk) would share the event loop and the GIL
with the engine being measured, and tracemalloc would count the server's buffers as the bot's
memory. In its own process it behaves like the real API: a remote peer. The parent scripts it
and reads back the request bodies it recorded over a pipe, between measurements only.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from multiprocessing.connection import Connection
from typing import Any

from tests.fakes.chat_api import Behaviour, FakeChatAPI

START_TIMEOUT_S = 30.0  # spawning imports aiohttp afresh; generous on a loaded CI box
CALL_TIMEOUT_S = 30.0  # answering a script/bodies command; bodies of a full run are a few MB


def _serve(conn: Connection, api_key: str) -> None:
    """Child process entry point."""
    asyncio.run(_serve_async(conn, api_key))


async def _serve_async(conn: Connection, api_key: str) -> None:
    loop = asyncio.get_running_loop()
    async with FakeChatAPI(api_key=api_key) as api:
        conn.send(("ok", api.base_url))
        while True:
            try:
                command: tuple[Any, ...] = await loop.run_in_executor(None, conn.recv)
            except (EOFError, OSError):
                return  # the parent went away
            op = command[0]
            try:
                payload: Any = None
                if op == "stop":
                    conn.send(("ok", None))
                    return
                if op == "script":
                    api.script(command[1], *command[2])
                elif op == "bodies":
                    payload = [r.body for r in api.requests]
                elif op == "clear":
                    api.requests.clear()
                else:
                    raise ValueError(f"unknown command {op!r}")
            except Exception as exc:  # report to the parent rather than dying silently
                conn.send(("error", repr(exc)))
                continue
            conn.send(("ok", payload))


class FakeAPIProcess:
    """The fake chat API in a child process. Methods are async only so they do not stall the
    loop; call them between measurements."""

    def __init__(self, api_key: str) -> None:
        self._api_key = api_key
        self._conn: Connection | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        self.base_url = ""

    async def start(self) -> str:
        ctx = multiprocessing.get_context("spawn")  # never fork a process that runs an event loop
        parent, child = ctx.Pipe()
        self._process = ctx.Process(
            target=_serve, args=(child, self._api_key), name="fake-chat-api", daemon=True
        )
        self._process.start()
        child.close()
        self._conn = parent
        self.base_url = str(await asyncio.to_thread(self._receive, START_TIMEOUT_S))
        return self.base_url

    async def script(self, model: str, *behaviours: Behaviour) -> None:
        """`FakeChatAPI.script` in the child."""
        await asyncio.to_thread(self._call, "script", model, behaviours)

    async def bodies(self) -> list[dict[str, Any] | None]:
        """The JSON bodies of the chat-completions requests recorded since the last `clear`."""
        result = await asyncio.to_thread(self._call, "bodies")
        return list(result)

    async def clear(self) -> None:
        await asyncio.to_thread(self._call, "clear")

    async def stop(self) -> None:
        process, conn = self._process, self._conn
        if process is None or conn is None:
            return
        try:
            await asyncio.to_thread(self._call, "stop")
        except (RuntimeError, OSError, EOFError):
            pass
        await asyncio.to_thread(process.join, 5.0)
        if process.is_alive():
            process.terminate()  # only the child this object started
            await asyncio.to_thread(process.join, 5.0)
        conn.close()
        self._process = self._conn = None

    def cpu_seconds(self) -> float | None:
        """CPU time (user + system) the child has used so far; None where /proc is missing."""
        if self._process is None or self._process.pid is None:
            return None
        try:
            with open(f"/proc/{self._process.pid}/stat", encoding="ascii") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def _call(self, *command: Any) -> Any:
        if self._conn is None:
            raise RuntimeError("fake chat API process is not running")
        self._conn.send(command)
        return self._receive(CALL_TIMEOUT_S)

    def _receive(self, timeout: float) -> Any:
        assert self._conn is not None
        if not self._conn.poll(timeout):
            raise RuntimeError(f"fake chat API process did not answer within {timeout:.0f} s")
        status, payload = self._conn.recv()
        if status != "ok":
            raise RuntimeError(f"fake chat API process failed: {payload}")
        return payload
