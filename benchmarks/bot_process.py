"""The real `lunos-bots run` as a separate process, a private Redis, and what the benchmark reads
about a process from /proc (CPU seconds, resident memory).

The bot is started exactly as an operator would: `.venv/bin/lunos-bots run --bots DIR --only NAME`
with its settings in the environment (README "Settings") and its log (JSON, INFO, as in production)
written to a file. Nothing of the bot runs in the benchmark's own process.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import aiohttp
from redis.asyncio import Redis

from core.background import stop_task

REDIS_START_TIMEOUT_S = 10.0
BOT_START_TIMEOUT_S = 60.0  # imports slack-bolt / discord.py, logs in, waits for the guild
BOT_STOP_TIMEOUT_S = 30.0  # SIGTERM: replies in flight are finished first
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used (its threads included)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    """Resident set size now (from /proc/<pid>/statm, the cheapest read)."""
    with open(f"/proc/{pid}/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * PAGE_BYTES


def peak_rss_bytes(pid: int) -> int:
    """VmHWM: the highest resident set size the process has had."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


class PrivateRedis:
    """A throwaway `redis-server` on a free port (no persistence), so `INFO commandstats` counts
    only the bot's commands."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._dir = tempfile.TemporaryDirectory(prefix="lunos-bench-redis-")
        self._process: subprocess.Popen[bytes] | None = None
        self.client: Redis | None = None
        self.version = "?"

    async def __aenter__(self) -> PrivateRedis:
        server = shutil.which("redis-server")
        if server is None:
            raise RuntimeError("the process benchmarks need redis-server on PATH (apt install redis-server)")
        self._process = subprocess.Popen(  # noqa: ASYNC220 (starting a server returns at once)
            [server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self._dir.name, "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.client = Redis.from_url(self.url)
        deadline = time.monotonic() + REDIS_START_TIMEOUT_S
        while True:
            try:
                await self.client.ping()
                break
            except OSError:
                if time.monotonic() > deadline or self._process.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                await asyncio.sleep(0.05)
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)
        self.version = str((await self.client.info("server")).get("redis_version", "?"))
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self.client is not None:
            await self.client.aclose()
        if self._process is not None:
            self._process.terminate()  # the server this object started
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
        self._dir.cleanup()

    async def commandstats(self) -> dict[str, int]:
        """Calls per command since the server started."""
        assert self.client is not None
        info = await self.client.info("commandstats")
        return {name.removeprefix("cmdstat_"): int(stats["calls"]) for name, stats in info.items()
                if isinstance(stats, dict)}

    async def delete_prefix(self, prefix: str) -> int:
        assert self.client is not None
        deleted = 0
        batch: list[bytes] = []
        async for key in self.client.scan_iter(match=f"{prefix}:*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                deleted += int(await self.client.delete(*batch))
                batch.clear()
        if batch:
            deleted += int(await self.client.delete(*batch))
        return deleted


@dataclass(frozen=True)
class BotSpec:
    """One bot definition file and the environment its `${VAR}`s read."""

    name: str
    toml: str
    env: dict[str, str]


def lunos_bots_executable() -> str:
    """`lunos-bots` beside the running interpreter (the venv's), else on PATH."""
    beside = Path(sys.executable).with_name("lunos-bots")
    if beside.exists():
        return str(beside)
    found = shutil.which("lunos-bots")
    if found is None:
        raise RuntimeError("lunos-bots is not installed: run `make install`")
    return found


class BotProcess:
    """`lunos-bots run --bots DIR --only NAME`, started and stopped (SIGTERM) by the benchmark."""

    def __init__(self, spec: BotSpec, env: dict[str, str]) -> None:
        self.spec = spec
        self.port = free_port()
        self._env = {**os.environ, **env, **spec.env, "HOST": "127.0.0.1", "PORT": str(self.port),
                     "LOG_FORMAT": "json", "LOG_LEVEL": "INFO"}
        self._dir = tempfile.TemporaryDirectory(prefix="lunos-bench-bots-")
        self.log_path = Path(self._dir.name) / "bot.log"
        self._process: subprocess.Popen[bytes] | None = None
        self.exit_code: int | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None, "not started"
        return self._process.pid

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        bots = Path(self._dir.name) / "bots"
        bots.mkdir()
        (bots / f"{self.spec.name}.toml").write_text(self.spec.toml, encoding="utf-8")
        log = open(self.log_path, "wb")  # noqa: ASYNC230 (once, at start; the child owns it)
        self._process = subprocess.Popen(  # noqa: ASYNC220 (starting the bot returns at once)
            [lunos_bots_executable(), "run", "--bots", str(bots), "--only", self.spec.name],
            env=self._env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        await self._wait_healthy()

    async def _wait_healthy(self) -> None:
        deadline = time.monotonic() + BOT_START_TIMEOUT_S
        async with aiohttp.ClientSession() as http:
            while True:
                if self._process is not None and self._process.poll() is not None:
                    raise RuntimeError(f"lunos-bots exited with {self._process.returncode}; "
                                       f"log:\n{self.log_tail()}")
                try:
                    async with http.get(f"{self.base_url}/healthz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"lunos-bots not healthy after {BOT_START_TIMEOUT_S:.0f} s; "
                                       f"log:\n{self.log_tail()}")
                await asyncio.sleep(0.1)

    async def stop(self) -> None:
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(process.wait, BOT_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()  # the process this object started
                await asyncio.to_thread(process.wait, 5)
        self.exit_code = process.returncode

    def cleanup(self, keep_log: Path | None = None) -> None:
        """Removes the bot's directory; its log is first copied to `keep_log`, if given."""
        if keep_log is not None and self.log_path.exists():
            keep_log.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(self.log_path, keep_log)
        self._dir.cleanup()

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
            return "\n".join(text.splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def count_log(self, *needles: str) -> dict[str, int]:
        """How many log lines contain each needle (e.g. an event name)."""
        counts = dict.fromkeys(needles, 0)
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as log:
                for line in log:
                    for needle in needles:
                        if needle in line:
                            counts[needle] += 1
        except OSError:
            pass
        return counts


class RssSampler:
    """Samples a process's RSS every `interval_s` in the background; `peak_since(mark)` reads it."""

    def __init__(self, pid: int, interval_s: float = 0.05) -> None:
        self._pid = pid
        self._interval_s = interval_s
        self.samples: list[tuple[float, int]] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="rss-sampler")

    async def stop(self) -> None:
        await stop_task(self._task)

    async def _run(self) -> None:
        while True:
            try:
                self.samples.append((time.monotonic(), rss_bytes(self._pid)))
            except OSError:
                return
            await asyncio.sleep(self._interval_s)

    def peak_between(self, start: float, end: float) -> int:
        inside = [rss for at, rss in self.samples if start <= at <= end]
        return max(inside) if inside else 0
