"""The terminal: a `ReplySink` that prints text as it arrives, and `ConsoleBot`, which reads lines.

`ConsoleBot` serves `lunos-bots chat` and the console bot of `lunos-bots run`: it reads stdin
line by line (a terminal or a pipe), sends each line through the engine and streams the answer
to stdout. `/reset` and `/help` are engine commands.
"""

from __future__ import annotations

import asyncio
import getpass
import sys
import threading
import time
import uuid
from typing import TextIO

from core.engine import ConversationEngine
from core.ports import RenderLimits
from core.types import Author, ConversationKey, IncomingMessage, ReplyInfo

CONSOLE_LIMITS = RenderLimits(
    max_chars=1_000_000,  # a terminal has no message limit; split never happens in practice
    split_chars=999_000,
    min_edit_interval_s=0.0,  # print every delta at once
    placeholder=None,
    streaming_indicator="",
    close_open_fences=False,  # we print only what was added, so nothing may be taken back
)
PROMPT = "you> "


class ConsoleSink:
    """Prints a reply to `out` as it grows."""

    def __init__(self, out: TextIO, *, label: str) -> None:
        self._out = out
        self._label = label
        self._printed: dict[str, str] = {}

    @property
    def limits(self) -> RenderLimits:
        return CONSOLE_LIMITS

    async def start(self) -> None:
        self._out.write(f"{self._label}> ")
        self._out.flush()

    async def post(self, text: str) -> str:
        ref = str(len(self._printed))
        if self._printed:
            self._out.write("\n")
        self._printed[ref] = ""
        await self.edit(ref, text, final=False)
        return ref

    async def edit(self, ref: str, text: str, *, final: bool) -> None:
        before = self._printed.get(ref, "")
        added = text[len(before):] if text.startswith(before) else "\n" + text
        self._out.write(added)
        self._out.flush()
        self._printed[ref] = text

    async def finish(self) -> None:
        self._out.write("\n")
        self._out.flush()

    def footer(self, info: ReplyInfo) -> str | None:
        return f"(answered by {info.model})" if info.fallback_used else None


class ConsoleBot:
    """One engine talking to the terminal. Stops at end of input."""

    def __init__(
        self,
        engine: ConversationEngine,
        *,
        stdin: TextIO | None = None,
        stdout: TextIO | None = None,
        user: str | None = None,
    ) -> None:
        self._engine = engine
        self._stdin = stdin or sys.stdin
        self._stdout = stdout or sys.stdout
        self._user = user or _local_user()
        self._task: asyncio.Task[None] | None = None
        self._ready = False
        self.finished = asyncio.Event()

    @property
    def name(self) -> str:
        return self._engine.profile.name

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def conversation(self) -> ConversationKey:
        return ConversationKey("console", "local", self._user, self.name)

    async def start(self) -> None:
        self._task = asyncio.create_task(self.serve(), name=f"console-{self.name}")

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def serve(self) -> None:
        """Answer every line of stdin, in order, until end of input."""
        interactive = self._stdin.isatty()
        lines: asyncio.Queue[str | None] = asyncio.Queue()
        _read_lines_in_thread(self._stdin, lines, asyncio.get_running_loop())
        self._ready = True
        try:
            if interactive:
                self._stdout.write(f"Talking to {self.name}. /help for commands, Ctrl-D to quit.\n")
            while True:
                if interactive:
                    self._stdout.write(PROMPT)
                    self._stdout.flush()
                line = await lines.get()
                if line is None:
                    return
                text = line.strip()
                if not text:
                    continue
                await self._engine.handle(self._message(text), ConsoleSink(self._stdout, label=self.name))
        finally:
            self._ready = False
            self.finished.set()

    def _message(self, text: str) -> IncomingMessage:
        message_id = uuid.uuid4().hex
        return IncomingMessage(
            bot=self.name, platform="console", conversation=self.conversation,
            author=Author(self._user, self._user), text=text, message_id=message_id,
            event_id=message_id, received_at=time.time(),
        )


def _local_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "local"


def _read_lines_in_thread(
    stream: TextIO, queue: asyncio.Queue[str | None], loop: asyncio.AbstractEventLoop
) -> None:
    """Blocking reads of a terminal or pipe in a daemon thread, so shutdown never waits on them."""

    def pump() -> None:
        try:
            for line in stream:
                loop.call_soon_threadsafe(queue.put_nowait, line)
        except (OSError, ValueError):
            pass
        finally:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, None)
            except RuntimeError:  # the loop is already closed at exit
                pass

    threading.Thread(target=pump, name="console-stdin", daemon=True).start()
