"""`tests.fakes.chat_api.FakeChatAPI`, served from a child process for the in-process benchmarks.

The fake is the one the tests use, unchanged; only where it runs differs. In-process, its aiohttp
handlers (JSON encoding and one socket write per chunk) would share the event loop and the GIL
with the engine being measured, and tracemalloc would count the server's buffers as the bot's
memory. In its own process it behaves like the real API: a remote peer. It runs on
`benchmarks.children.Child`, like the fakes of the process-level benchmarks; the parent scripts it
and reads back the request bodies it recorded, between measurements only.
"""

from __future__ import annotations

import asyncio
from multiprocessing.connection import Connection
from typing import Any

from benchmarks.bot_process import cpu_seconds
from benchmarks.children import Child, serve_commands
from tests.fakes.chat_api import Behaviour, FakeChatAPI


def _serve(conn: Connection, api_key: str) -> None:
    """Child entry point: the fake chat API, scripted and read over the pipe."""

    async def main() -> None:
        async with FakeChatAPI(api_key=api_key) as api:

            async def script(model: str, behaviours: tuple[Behaviour, ...]) -> None:
                api.script(model, *behaviours)

            async def bodies() -> list[dict[str, Any] | None]:
                return [r.body for r in api.requests]

            async def clear() -> None:
                api.requests.clear()

            await serve_commands(conn, api.base_url, {"script": script, "bodies": bodies, "clear": clear})

    asyncio.run(main())


class FakeAPIProcess:
    """The fake chat API in a child process. Methods are async only so they do not stall the
    loop; call them between measurements."""

    def __init__(self, api_key: str) -> None:
        self._child = Child("fake-chat-api", _serve, api_key)
        self.base_url = ""

    async def start(self) -> str:
        self.base_url = str(await self._child.start())
        return self.base_url

    async def script(self, model: str, *behaviours: Behaviour) -> None:
        """`FakeChatAPI.script` in the child."""
        await self._child.call("script", model, behaviours)

    async def bodies(self) -> list[dict[str, Any] | None]:
        """The JSON bodies of the chat-completions requests recorded since the last `clear`."""
        return list(await self._child.call("bodies"))

    async def clear(self) -> None:
        await self._child.call("clear")

    async def stop(self) -> None:
        await self._child.stop()

    def cpu_seconds(self) -> float | None:
        """CPU time (user + system) the child has used so far; None where /proc is missing."""
        try:
            return cpu_seconds(self._child.pid)
        except (OSError, AssertionError, IndexError):
            return None
