"""`lunos-bots chat` on a real terminal (a pseudo-terminal): Markdown rendered live, a paste sent as
one message, Ctrl-C stopping an answer and a second one quitting, and no log line on the screen."""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import re
import signal
import struct
import sys
import termios
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from tests.conftest import TEST_API_KEY, redis_url
from tests.fakes.chat_api import Behaviour, FakeChatAPI

ROOT = Path(__file__).resolve().parents[2]
MODEL = "openai/gpt-4.1-mini"  # bots/console.toml
FALLBACK = "google/gemini-2.0-flash"
WAIT_S = 20.0
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")
ROWS, COLUMNS = 40, 100


class Terminal:
    """`lunos-bots chat` with a pseudo-terminal as stdin, stdout and stderr."""

    def __init__(self, proc: asyncio.subprocess.Process, master: int) -> None:
        self.proc = proc
        self.master = master
        self.raw = b""
        self._changed = asyncio.Condition()
        asyncio.get_running_loop().add_reader(master, self._on_readable)

    @classmethod
    async def open(cls, env: dict[str, str]) -> Terminal:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bots.cli", "chat", cwd=ROOT, env=env, stdin=slave, stdout=slave,
            stderr=slave, start_new_session=True,
        )
        os.close(slave)
        return cls(proc, master)

    def _on_readable(self) -> None:
        try:
            data = os.read(self.master, 65536)
        except OSError:  # the child closed the terminal
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(self.master)
        self.raw += data
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    @property
    def screen(self) -> str:
        """Everything written so far, without colours and cursor movements."""
        return ANSI.sub("", self.raw.decode(errors="replace"))

    async def expect(self, text: str, *, after: int = 0) -> int:
        """Wait until `text` appears (past position `after` of `screen`); returns where it ends."""
        async with asyncio.timeout(WAIT_S), self._changed:
            await self._changed.wait_for(lambda: text in self.screen[after:])
        return self.screen.index(text, after) + len(text)

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    async def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.master)
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        os.close(self.master)


@pytest.fixture
async def terminal_env(redis: Redis, chat_api: FakeChatAPI, tmp_path: Path) -> AsyncIterator[dict[str, str]]:
    prefix = f"lbtest-tty-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LUNOS_", "SLACK_", "DISCORD_", "LOG_"))}
    env.update({"LUNOS_API_KEY": TEST_API_KEY, "LUNOS_BASE_URL": chat_api.base_url, "REDIS_URL": redis_url(),
                "REDIS_KEY_PREFIX": prefix, "TMPDIR": str(tmp_path), "TERM": "xterm-256color",
                "COLUMNS": str(COLUMNS), "LINES": str(ROWS)})
    env.pop("NO_COLOR", None)
    yield env
    async for key in redis.scan_iter(match=f"{prefix}:*"):
        await redis.delete(key)


@pytest.fixture
async def terminal(terminal_env: dict[str, str]) -> AsyncIterator[Terminal]:
    term = await Terminal.open(terminal_env)
    try:
        yield term
    finally:
        await term.close()


class TestTerminal:
    """What a person at a terminal sees."""

    async def test_markdown_is_rendered(self, terminal: Terminal, chat_api: FakeChatAPI) -> None:
        """**bold** and `code` reach the screen as styled text, not as asterisks and backticks."""
        chat_api.script(MODEL, Behaviour(text="This is **very bold** and `inline_code` here."))
        await terminal.expect("you> ")
        terminal.type("hello\n")
        end = await terminal.expect("here.")
        shown = terminal.screen[:end]
        assert "very bold" in shown and "**very bold**" not in shown
        assert "inline_code" in shown and "`inline_code`" not in shown
        assert b"\x1b[1m" in terminal.raw  # bold, as the terminal draws it

    async def test_a_paste_is_one_message(self, terminal: Terminal, chat_api: FakeChatAPI) -> None:
        """Three lines arriving together are one request, not three."""
        await terminal.expect("you> ")
        terminal.type("line one\nline two\nline three\n")
        await terminal.expect("You said:")
        await chat_api.wait_for_requests(1)
        [request] = chat_api.requests
        assert request.body is not None
        assert request.body["messages"][-1]["content"] == "line one\nline two\nline three"

    async def test_ctrl_c_stops_the_answer_then_quits(self, terminal: Terminal, chat_api: FakeChatAPI) -> None:
        """Ctrl-C while an answer streams: "(stopped)", the request is dropped and the prompt is back.
        Ctrl-C again at the prompt: the process ends."""
        chat_api.script(MODEL, Behaviour(text="word " * 400, token_delay_s=0.05))
        await terminal.expect("you> ")
        terminal.type("tell me everything\n")
        await terminal.expect("word word")
        terminal.proc.send_signal(signal.SIGINT)
        after = await terminal.expect("(stopped)")
        await terminal.expect("you> ", after=after)
        async with asyncio.timeout(WAIT_S):
            await chat_api.requests[0].finished.wait()
        assert chat_api.requests[0].client_disconnected
        terminal.proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(WAIT_S):
            code = await terminal.proc.wait()
        assert code == 0 and "Traceback" not in terminal.screen
        assert "interrupted" not in terminal.screen  # the user stopped it; the model did not fail

    async def test_log_lines_go_to_a_file(self, terminal: Terminal, chat_api: FakeChatAPI,
                                          terminal_env: dict[str, str]) -> None:
        """A model failing (a warning) is logged to the file the banner names, not on the screen."""
        chat_api.script(MODEL, Behaviour(kind="status", status=500))
        chat_api.script(FALLBACK, Behaviour(text="fallback answer"))
        await terminal.expect("you> ")
        terminal.type("hi\n")
        await terminal.expect("fallback answer")
        await terminal.expect("you> ", after=terminal.screen.index("fallback answer"))
        [log_file] = await asyncio.to_thread(lambda: list(Path(terminal_env["TMPDIR"]).glob("lunos-bots-chat-*.log")))
        assert f"logs: {log_file}" in terminal.screen
        assert "chat.attempt_failed" in await asyncio.to_thread(log_file.read_text)
        assert "chat.attempt_failed" not in terminal.screen and '"level"' not in terminal.screen
