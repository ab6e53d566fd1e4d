"""The terminal: `ConsoleBot`, which reads what you type, and two `ReplySink`s that show the answer.

`ConsoleBot` serves `lunos-bots chat` and the console bot of `lunos-bots run`. On a terminal the
answer is rendered as Markdown with `rich`, live while it streams; when stdout is a pipe or a file
it is printed as plain text, each piece as it arrives. Input is read line by line (a terminal or a
pipe). On a terminal, lines that arrive together (a paste) form one message, and a line ending in
`\\` continues on the next. `/help`, `/reset` and `/quit` are the commands; any other `/word` is
refused with that list. With `interactive_signals`, Ctrl-C stops the answer being written and a
second Ctrl-C (or one at the prompt) quits.
"""

from __future__ import annotations

import asyncio
import getpass
import re
import signal
import sys
import threading
import time
import uuid
from typing import TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.markdown import Markdown
from rich.text import Text

from core.background import stop_task
from core.engine import ConversationEngine, TurnOutcome
from core.platform import PlatformSpec, RuntimeContext, TableContext
from core.ports import BotRuntime, RenderLimits
from core.types import Author, Command, ConversationKey, IncomingMessage, ReplyInfo, parse_command

PLATFORM = "console"

CONSOLE_LIMITS = RenderLimits(
    max_chars=1_000_000,  # a terminal has no message limit; split never happens in practice
    split_chars=999_000,
    min_edit_interval_s=0.0,  # print every delta at once
    placeholder=None,
    streaming_indicator="",
    close_open_fences=False,  # we print only what was added, so nothing may be taken back
)
RICH_LIMITS = RenderLimits(
    max_chars=1_000_000,
    split_chars=999_000,
    min_edit_interval_s=0.05,  # the whole Markdown is re-rendered each time: ~20 frames a second is plenty
    placeholder=None,
    streaming_indicator=" ▍",
    close_open_fences=True,  # re-rendered whole, so a code block renders as one while it streams
)
RICH_REFRESH_PER_SECOND = 12
PROMPT = "you> "
CONTINUATION_PROMPT = "...> "
CONTINUATION = "\\"  # a line ending in this continues on the next
# Lines of one paste reach us within a few milliseconds of each other; nobody types Enter twice
# that fast. Only on a terminal: piped input is line by line, as documented.
PASTE_GAP_S = 0.03
COMMAND_PATTERN = re.compile(r"^/([A-Za-z][\w-]*)$")
QUIT_COMMANDS = frozenset({"/quit", "/exit"})  # the terminal's own; `help` and `reset` are core's
KNOWN_COMMANDS = ("/help", "/quit", "/reset")
STOPPED = "(stopped)"


def terminal_help(name: str, model: str) -> str:
    """What `/help` says in the terminal (the engine's help is written for chat platforms)."""
    return (
        f"You are talking to {name} (model {model}). Type a message and press Enter.\n"
        "  /reset   forget this conversation\n"
        "  /help    this text\n"
        "  /quit    leave (or Ctrl-D)\n"
        "A pasted block of lines is sent as one message; end a line with \\ to continue typing on\n"
        "the next line. Ctrl-C stops an answer while it is being written; Ctrl-C again quits.\n"
    )


class ConsoleSink:
    """Prints a reply to `out` as it grows: plain text, only what was added."""

    def __init__(self, out: TextIO, *, label: str) -> None:
        self._out = out
        self._label = label
        self._printed: dict[str, str] = {}
        self._frozen = False

    def freeze(self) -> None:
        """The user stopped this answer (Ctrl-C): what is on screen stays; later updates (the
        engine's closing note) are not shown, the console says "(stopped)" instead."""
        self._frozen = True

    @property
    def limits(self) -> RenderLimits:
        return CONSOLE_LIMITS

    async def start(self) -> None:
        self._out.write(f"{self._label}> ")
        self._out.flush()

    async def post(self, text: str) -> str:
        ref = str(len(self._printed))
        if self._frozen:
            return ref
        if self._printed:
            self._out.write("\n")
        self._printed[ref] = ""
        await self.edit(ref, text, final=False)
        return ref

    async def edit(self, ref: str, text: str, *, final: bool) -> None:
        if self._frozen:
            return
        before = self._printed.get(ref, "")
        added = text[len(before):] if text.startswith(before) else "\n" + text
        self._out.write(added)
        self._out.flush()
        self._printed[ref] = text

    async def finish(self) -> None:
        if not self._frozen:
            self._out.write("\n")
            self._out.flush()

    def close(self) -> None:
        if self._frozen:
            self._out.write("\n")
            self._out.flush()

    def footer(self, info: ReplyInfo) -> str | None:
        return f"(answered by {info.model})" if info.fallback_used else None

    def journal_target(self) -> dict[str, str] | None:
        return None  # a terminal's reply cannot be finished by another process


class RichConsoleSink:
    """Renders a reply as Markdown on a terminal, re-drawn in place while it streams."""

    def __init__(self, console: Console, *, label: str) -> None:
        self._console = console
        self._label = label
        self._texts: dict[str, str] = {}
        self._live: Live | None = None
        self._frozen = False

    def freeze(self) -> None:
        """The user stopped this answer (Ctrl-C): keep what is shown, without the streaming
        indicator, and show no later update (the engine's closing note)."""
        self._frozen = True
        indicator = RICH_LIMITS.streaming_indicator
        self._texts = {ref: t.removesuffix(indicator) for ref, t in self._texts.items()}

    @property
    def limits(self) -> RenderLimits:
        return RICH_LIMITS

    async def start(self) -> None:
        self._live = Live(self._render(), console=self._console, refresh_per_second=RICH_REFRESH_PER_SECOND,
                          vertical_overflow="visible", transient=False)
        self._live.start()

    async def post(self, text: str) -> str:
        ref = str(len(self._texts))
        if not self._frozen:
            self._texts[ref] = text
            self._update()
        return ref

    async def edit(self, ref: str, text: str, *, final: bool) -> None:
        if not self._frozen:
            self._texts[ref] = text
            self._update()

    async def finish(self) -> None:
        self.close()

    def close(self) -> None:
        """Draw the last state and leave the live display (also after a Ctrl-C)."""
        if self._live is not None:
            self._live.update(self._render(), refresh=True)
            self._live.stop()
            self._live = None

    def footer(self, info: ReplyInfo) -> str | None:
        return f"*(answered by {info.model})*" if info.fallback_used else None

    def journal_target(self) -> dict[str, str] | None:
        return None  # a terminal's reply cannot be finished by another process

    def _update(self) -> None:
        if self._live is not None:
            self._live.update(self._render())

    def _render(self) -> Group:
        label = Text(f"{self._label}>", style="bold cyan")
        if not self._texts:
            return Group(label, Text("…", style="dim"))
        return Group(label, *(Markdown(t) for t in self._texts.values()))


class ConsoleBot:
    """One engine talking to the terminal. Stops at end of input (or `/quit`)."""

    def __init__(
        self,
        engine: ConversationEngine,
        *,
        stdin: TextIO | None = None,
        stdout: TextIO | None = None,
        user: str | None = None,
        interactive_signals: bool = False,
        banner_note: str | None = None,
        rich_output: bool | None = None,
    ) -> None:
        self._engine = engine
        self._stdin = stdin or sys.stdin
        self._stdout = stdout or sys.stdout
        self._user = user or _local_user()
        self._interactive_signals = interactive_signals
        self._banner_note = banner_note
        self._rich = _isatty(self._stdout) if rich_output is None else rich_output
        self._console = Console(file=self._stdout, force_terminal=self._rich or None, highlight=False)
        self._task: asyncio.Task[None] | None = None
        self._sink: RichConsoleSink | ConsoleSink | None = None
        self._answer: asyncio.Task[TurnOutcome] | None = None
        self._stopping_answer = False
        self._lines: asyncio.Queue[str | None] = asyncio.Queue()
        self._quit = asyncio.Event()
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
        return ConversationKey(PLATFORM, "local", self._user, self.name)

    async def start(self) -> None:
        self._task = asyncio.create_task(self.serve(), name=f"console-{self.name}")

    async def stop(self) -> None:
        await stop_task(self._task)

    async def serve(self) -> None:
        """Answer every message of stdin, in order, until end of input."""
        interactive = _isatty(self._stdin)
        loop = asyncio.get_running_loop()
        _read_lines_in_thread(self._stdin, self._lines, loop)
        if self._interactive_signals:
            loop.add_signal_handler(signal.SIGINT, self.interrupt)
        self._ready = True
        try:
            if interactive:
                self._write(f"Talking to {self.name}. /help for commands, Ctrl-D to quit.\n")
                if self._banner_note:
                    self._write(f"({self._banner_note})\n")
            while not self._quit.is_set():
                text = await self._next_message(interactive)
                if text is None:
                    return
                if not text:
                    continue
                if not await self._command(text):
                    await self._ask(text)
        finally:
            if self._interactive_signals:
                loop.remove_signal_handler(signal.SIGINT)
            self._ready = False
            self.finished.set()

    def interrupt(self) -> None:
        """Ctrl-C: stop the answer being written; with none (or a second time), quit."""
        answer = self._answer
        if answer is not None and not answer.done() and not self._stopping_answer:
            self._stopping_answer = True
            if self._sink is not None:
                self._sink.freeze()
            answer.cancel()
            return
        self._quit.set()
        self._lines.put_nowait(None)
        if answer is not None and not answer.done():
            answer.cancel()

    async def _next_message(self, interactive: bool) -> str | None:
        """One message: a line, the lines of a paste, or lines joined by a trailing backslash."""
        parts: list[str] = []
        prompt = PROMPT
        while True:
            if interactive:
                self._write(prompt)
            line = await self._lines.get()
            if line is None:
                return "\n".join(parts).strip() if parts else None
            lines = [line]
            if interactive:
                lines += await self._rest_of_paste()
            block = "".join(lines).rstrip("\r\n")
            if block.endswith(CONTINUATION):
                parts.append(block[: -len(CONTINUATION)])
                prompt = CONTINUATION_PROMPT
                continue
            parts.append(block)
            return "\n".join(parts).strip()

    async def _rest_of_paste(self) -> list[str]:
        more: list[str] = []
        while True:
            try:
                line = await asyncio.wait_for(self._lines.get(), PASTE_GAP_S)
            except TimeoutError:
                return more
            if line is None:  # end of input right after the paste: answer it, then stop
                self._lines.put_nowait(None)
                return more
            more.append(line)

    async def _command(self, text: str) -> bool:
        """Handle a terminal command; False when `text` is for the engine (a message for the
        model, or `reset`, which the engine carries out)."""
        command = parse_command(text)
        if command is Command.HELP:  # the terminal's own help: the engine's is written for chat platforms
            self._write(terminal_help(self.name, self._engine.profile.model))
            return True
        if command is Command.RESET:
            return False
        if text.lower() in QUIT_COMMANDS:
            self._quit.set()
            return True
        match = COMMAND_PATTERN.match(text)
        if match is None:
            return False
        self._write(f"unknown command /{match.group(1)}; commands: {', '.join(KNOWN_COMMANDS)}\n")
        return True

    async def _ask(self, text: str) -> None:
        sink: RichConsoleSink | ConsoleSink
        if self._rich:
            sink = RichConsoleSink(self._console, label=self.name)
        else:
            sink = ConsoleSink(self._stdout, label=self.name)
        self._sink = sink
        self._stopping_answer = False
        turn = self._engine.handle(self._message(text), sink)
        answer: asyncio.Task[TurnOutcome] = asyncio.create_task(turn)
        self._answer = answer
        try:
            await asyncio.wait({answer})
        except asyncio.CancelledError:  # the bot itself is being stopped: end the answer too
            await stop_task(answer)
            raise
        finally:
            self._answer = None
            self._sink = None
            sink.close()
        if answer.cancelled():
            self._write(f"{STOPPED}\n")
            return
        error = answer.exception()
        if error is not None:  # a bug in the engine: let it show
            raise error

    def _write(self, text: str) -> None:
        self._stdout.write(text)
        self._stdout.flush()

    def _message(self, text: str) -> IncomingMessage:
        return IncomingMessage(
            bot=self.name, platform=PLATFORM, conversation=self.conversation,
            author=Author(self._user, self._user), text=text, event_id=uuid.uuid4().hex,
            received_at=time.time(),
        )


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


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
        except (OSError, ValueError, RuntimeError):  # RuntimeError: the loop closed
            pass
        finally:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, None)
            except RuntimeError:  # the loop is already closed at exit
                pass

    threading.Thread(target=pump, name="console-stdin", daemon=True).start()


def _no_table(context: TableContext) -> None:
    """The `[console]` table has nothing to configure."""
    return None


def _build_console_bot(context: RuntimeContext, config: None) -> BotRuntime:
    return ConsoleBot(context.engine)


CONSOLE: PlatformSpec[None] = PlatformSpec(
    name=PLATFORM, configure=_no_table, build=_build_console_bot, terminal=True)
