"""`lunos-bots run`: which bots start, /healthz and /metrics, retries of a failed start, one clear
line for everyday mistakes, and a stop on SIGTERM/SIGINT that always comes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import discord.gateway
import discord.http
import httpx
import pytest
from aiohttp import web
from redis.asyncio import Redis
from structlog.testing import capture_logs

from bots.definitions import parse_definition
from bots.metrics import Metrics
from bots.platforms import build_runtime
from bots.runner import BotSupervisor, HealthServer, choose_bots
from bots.services import Services
from bots.settings import Settings
from core.engine import INTERRUPTED_NOTE
from core.errors import PlatformError
from core.redis_keys import RedisKeys
from tests.conftest import TEST_API_KEY, redis_url
from tests.fakes.chat_api import Behaviour, FakeChatAPI
from tests.fakes.discord_api import FakeDiscord
from tests.fakes.slack_api import FakeSlackAPI

ROOT = Path(__file__).resolve().parents[2]
CONSOLE = ROOT / "bots" / "console.toml"
SLACK_EXAMPLE = ROOT / "bots" / "slack-example.toml.example"
WAIT_S = 20.0  # generous upper bound for a subprocess to reach a state; never a speed assertion
SOCKET_BOT = """
name = "sockets"
platform = "slack"
app_id = "lunos-sockets"
model = "test/model-a"
[slack]
bot_token = "${SLACK_BOT_TOKEN}"
app_token = "${SLACK_APP_TOKEN}"
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_env(chat_api: FakeChatAPI | None, prefix: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LUNOS_", "SLACK_", "DISCORD_")) and k not in ("HOST", "PORT")}
    env.update({"REDIS_URL": redis_url(), "REDIS_KEY_PREFIX": prefix, "LOG_FORMAT": "json"})
    if chat_api is not None:
        env.update({"LUNOS_API_KEY": TEST_API_KEY, "LUNOS_BASE_URL": chat_api.base_url})
    env.update(extra)
    return env


@pytest.fixture
async def prefix(redis: Redis) -> AsyncIterator[str]:
    value = f"lbtest-run-{uuid.uuid4().hex[:8]}"
    yield value
    async for key in redis.scan_iter(match=f"{value}:*"):
        await redis.delete(key)


def pause_until(paused: asyncio.Event) -> Callable[[asyncio.Event, float], Awaitable[None]]:
    """A supervisor pause that signals `paused` (the first retry is due) and waits for the stop."""

    async def pause(stop: asyncio.Event, seconds: float) -> None:
        paused.set()
        await stop.wait()

    return pause


class FakeRuntime:
    def __init__(self, name: str, ready: bool, failures: int = 0) -> None:
        self.name = name
        self.ready = ready
        self.failures = failures
        self.started_event = asyncio.Event()
        self.attempts = 0

    async def start(self) -> None:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise RuntimeError(f"bad token (attempt {self.attempts})")
        self.ready = True
        self.started_event.set()

    async def stop(self) -> None: ...


class TestChooseBots:
    """Which definitions `run` starts."""

    def test_bots_without_credentials_are_skipped(self) -> None:
        """The Slack example without tokens is skipped; the console bot starts when it has input."""
        slack = parse_definition(SLACK_EXAMPLE, SLACK_EXAMPLE.read_text(), {})
        console = parse_definition(CONSOLE, CONSOLE.read_text(), {})
        assert choose_bots([slack, console], console_input=True) == [console]

    def test_console_needs_input(self) -> None:
        """Without a terminal (or piped input) the console bot never starts, whatever else runs."""
        env = {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s"}
        slack = parse_definition(SLACK_EXAMPLE, SLACK_EXAMPLE.read_text(), env)
        console = parse_definition(CONSOLE, CONSOLE.read_text(), {})
        assert choose_bots([slack, console], console_input=False) == [slack]
        assert choose_bots([slack, console], console_input=True) == [slack, console]
        assert choose_bots([console], console_input=False) == []


class TestHealth:
    """/healthz (liveness), /readyz (readiness) and /metrics on the shared HTTP server."""

    async def health(self, settings: Settings, runtimes: list[Any]
                     ) -> tuple[int, dict[str, object], int, dict[str, object], str]:
        async with Services(settings) as services:
            server = HealthServer(services, Metrics())
            server.watch(runtimes)
            port = await server.start("127.0.0.1", 0)
            try:
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                    live = await client.get("/healthz")
                    ready = await client.get("/readyz")
                    metrics = await client.get("/metrics")
            finally:
                await server.stop()
        return live.status_code, live.json(), ready.status_code, ready.json(), metrics.text

    async def test_ready_bots_and_redis(self) -> None:
        """200 on both when every bot is ready and Redis answers; metrics say so too."""
        settings = replace(Settings.from_env({"REDIS_URL": redis_url()}))
        live, _, status, body, metrics = await self.health(settings, [FakeRuntime("a", True)])
        assert live == 200 and status == 200 and body == {"ok": True, "redis": True, "bots": {"a": True}}
        assert 'lunos_bot_ready{bot="a"} 1.0' in metrics and "lunos_redis_up 1.0" in metrics

    async def test_a_bot_not_ready(self) -> None:
        """/readyz 503 when one bot is still connecting; the process is alive all the same."""
        settings = Settings.from_env({"REDIS_URL": redis_url()})
        live, _, status, body, _ = await self.health(settings, [FakeRuntime("a", True), FakeRuntime("b", False)])
        assert live == 200 and status == 503 and body["bots"] == {"a": True, "b": False}

    async def test_redis_down(self) -> None:
        """/healthz 200 and /readyz 503 with the cause while Redis does not answer: a liveness probe
        must not restart pods over a Redis outage."""
        settings = Settings.from_env({"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
        live, live_body, status, body, metrics = await self.health(settings, [FakeRuntime("a", True)])
        assert live == 200 and live_body == {"ok": True, "bots": {"a": True}}  # no Redis in liveness
        assert status == 503 and body["redis"] is False and body["redis_error"] == "connection refused"
        assert "lunos_redis_up 0.0" in metrics and "lunos_redis_circuit_open 1.0" in metrics

    async def test_readiness_ping_closes_the_circuit(self) -> None:
        """A readiness PING that Redis answers closes the shared circuit at once (and a failed one
        opens it), so every store goes back to Redis without waiting out the cool-down."""
        settings = Settings.from_env({"REDIS_URL": redis_url()})
        async with Services(settings) as services:
            services.circuit.record_failure()
            assert services.circuit.is_open
            assert await services.redis_ready() is None
            assert not services.circuit.is_open
        down = Settings.from_env({"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
        async with Services(down) as services:
            assert await services.redis_ready() == "connection refused"
            assert services.circuit.is_open

    async def test_a_failed_start_is_visible(self) -> None:
        """A supervisor retrying a failed start: /readyz 503 with the error in start_failures, ready 0
        in metrics, /healthz still 200."""
        stop, paused = asyncio.Event(), asyncio.Event()
        supervisor = BotSupervisor(FakeRuntime("broken", False, failures=99), stop, pause=pause_until(paused))
        task = asyncio.create_task(supervisor.run())
        try:
            async with asyncio.timeout(WAIT_S):
                await paused.wait()
            settings = Settings.from_env({"REDIS_URL": redis_url()})
            live, _, status, body, metrics = await self.health(settings, [supervisor])
        finally:
            stop.set()
            await task
        assert live == 200 and status == 503 and body["bots"] == {"broken": False}
        assert body["start_failures"] == {"broken": {"attempts": 1, "error": "bad token (attempt 1)"}}
        assert 'lunos_bot_ready{bot="broken"} 0.0' in metrics


class TestSupervisor:
    """A failed start is retried with capped backoff, one log line per attempt."""

    async def test_retries_until_started(self) -> None:
        """Two failures, then a start: three attempts, two start_failed lines with growing delays."""
        runtime = FakeRuntime("flaky", False, failures=2)
        supervisor = BotSupervisor(runtime, asyncio.Event(), first_retry_s=0.01, max_retry_s=0.015)
        with capture_logs() as logs:
            async with asyncio.timeout(WAIT_S):
                await supervisor.run()
        failed = [e for e in logs if e["event"] == "bot.start_failed"]
        assert [e["attempt"] for e in failed] == [1, 2]
        assert [e["retry_in_s"] for e in failed] == [0.0, 0.0]  # rounded; the cap is exercised below
        assert [e["event"] for e in logs][-1] == "bot.started" and supervisor.ready
        assert supervisor.failure() is None

    async def test_backoff_doubles_up_to_the_cap(self) -> None:
        """Delays 1, 2, 4, 4 … with a cap of 4 (observed through the log lines, not the clock)."""
        waits: list[float] = []

        async def pause(stop: asyncio.Event, seconds: float) -> None:
            waits.append(seconds)
            if len(waits) == 5:
                stop.set()

        supervisor = BotSupervisor(FakeRuntime("down", False, failures=99), asyncio.Event(), first_retry_s=1,
                                   max_retry_s=4, pause=pause)
        await supervisor.run()
        assert waits == [1, 2, 4, 4, 4] and supervisor.attempts == 5

    async def test_a_hanging_start_counts_as_failed(self) -> None:
        """A start that never returns is cut at the start timeout and retried."""

        class Hangs(FakeRuntime):
            async def start(self) -> None:
                self.attempts += 1
                await asyncio.Event().wait()

        stop, paused = asyncio.Event(), asyncio.Event()
        supervisor = BotSupervisor(Hangs("hangs", False), stop, timeout_s=0.01, pause=pause_until(paused))
        with capture_logs() as logs:
            task = asyncio.create_task(supervisor.run())
            async with asyncio.timeout(WAIT_S):
                await paused.wait()
            stop.set()
            await task
        [line] = [e for e in logs if e["event"] == "bot.start_failed"]
        assert "did not finish" in line["error"] and line["error_type"] == "TimeoutError"


class TestStartFailures:
    """A bot that cannot start does not take the others down."""

    async def test_failed_start_is_skipped(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """One runtime raising in start() is logged and retried; the others run until the stop signal."""
        import bots.runner as runner

        good = FakeRuntime("good", True)
        built = iter([FakeRuntime("broken", False, failures=99), good])
        monkeypatch.setattr(runner, "build_runtime", lambda *args: next(built))
        env = {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s"}
        first = parse_definition(SLACK_EXAMPLE, SLACK_EXAMPLE.read_text(), env)
        second = replace(first, profile=replace(first.profile, name="second"))
        settings = Settings.from_env({"REDIS_URL": redis_url(), "HOST": "127.0.0.1", "PORT": "0"})
        async with Services(settings) as services:
            task = asyncio.create_task(runner.run_bots(services, [first, second]))
            async with asyncio.timeout(10):
                await good.started_event.wait()
                os.kill(os.getpid(), signal.SIGTERM)
                assert await task == 0


class RunProcess:
    """A `lunos-bots run` subprocess whose stderr log lines are collected as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._new = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, *args: str, env: dict[str, str], stdin: int | None = asyncio.subprocess.PIPE) -> RunProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bots.cli", "run", *args, cwd=ROOT, env=env, stdin=stdin,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            async with self._new:
                self.lines.append(raw.decode())
                self._new.notify_all()
        async with self._new:
            self._new.notify_all()

    def events(self, name: str) -> list[dict[str, Any]]:
        found = []
        for line in self.lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == name:
                found.append(event)
        return found

    async def wait_for_event(self, name: str, count: int = 1) -> list[dict[str, Any]]:
        async with asyncio.timeout(WAIT_S), self._new:
            await self._new.wait_for(lambda: len(self.events(name)) >= count or self._reader.done())
        found = self.events(name)
        assert len(found) >= count, "".join(self.lines)
        return found

    async def finish(self, sig: int | None = None) -> int:
        if sig is not None:
            self.proc.send_signal(sig)
        async with asyncio.timeout(WAIT_S):
            code = await self.proc.wait()
            await self._reader
        return code

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        self._reader.cancel()


class TestRunProcess:
    """The real `lunos-bots run` process."""

    async def test_console_only_run_serves_health_and_stops_gracefully(
        self, chat_api: FakeChatAPI, prefix: str
    ) -> None:
        """With only an API key and piped input, run starts the console bot (HTTP because PORT is set);
        SIGTERM mid-reply leaves a final text."""
        chat_api.script("openai/gpt-4.1-mini", Behaviour(text="a slow answer " * 200, token_delay_s=0.02))
        port = free_port()
        env = run_env(chat_api, prefix, HOST="127.0.0.1", PORT=str(port))
        run = await RunProcess.start(env=env)
        proc = run.proc
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(b"tell me a long story\n")
            await proc.stdin.drain()
            async with asyncio.timeout(WAIT_S):
                await proc.stdout.readuntil(b"a slow answer")
                async with httpx.AsyncClient() as client:
                    health = await client.get(f"http://127.0.0.1:{port}/readyz")
                assert health.status_code == 200, health.text
                assert health.json()["bots"] == {"console": True}
                proc.send_signal(signal.SIGTERM)
                rest = await proc.stdout.read()
            code = await run.finish()
        finally:
            await run.kill()
        assert code == 0
        assert rest.decode().rstrip().endswith(INTERRUPTED_NOTE)

    async def test_console_alone_binds_no_port(self, chat_api: FakeChatAPI, prefix: str) -> None:
        """Without PORT/HOST, the terminal bot alone starts no HTTP server (nothing on 0.0.0.0:8080)."""
        run = await RunProcess.start(env=run_env(chat_api, prefix))
        assert run.proc.stdin is not None
        try:
            run.proc.stdin.write(b"hello\n")
            run.proc.stdin.close()
            code = await run.finish()
        finally:
            await run.kill()
        assert code == 0 and run.events("bot.started") and not run.events("http.listening")

    @pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
    async def test_rejected_app_token_is_a_start_failure_and_signals_stop_it(
        self, chat_api: FakeChatAPI, prefix: str, tmp_path: Path, sig: int
    ) -> None:
        """Socket Mode with an app token Slack refuses: one bot.start_failed line naming app_token, no
        traceback, /readyz 503 (/healthz 200) and lunos_bot_ready 0, and SIGTERM/SIGINT end the process."""
        (tmp_path / "sockets.toml").write_text(SOCKET_BOT)
        async with FakeSlackAPI() as fake:
            port = free_port()
            env = run_env(chat_api, prefix, HOST="127.0.0.1", PORT=str(port), SLACK_API_URL=fake.base_url,
                          SLACK_BOT_TOKEN=fake.bot_token, SLACK_APP_TOKEN="xapp-revoked-token-123")
            run = await RunProcess.start("--bots", str(tmp_path), env=env, stdin=asyncio.subprocess.DEVNULL)
            try:
                [failed] = await run.wait_for_event("bot.start_failed")
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                    live = await client.get("/healthz")
                    health = await client.get("/readyz")
                    metrics = (await client.get("/metrics")).text
                code = await run.finish(sig)
            finally:
                await run.kill()
            assert fake.socket_connections == 0
        assert failed["bot"] == "sockets" and "app_token rejected" in failed["error"]
        assert "invalid_auth" in failed["error"] and failed["retry_in_s"] > 0
        assert live.status_code == 200
        assert health.status_code == 503 and health.json()["bots"] == {"sockets": False}
        assert "app_token rejected" in health.json()["start_failures"]["sockets"]["error"]
        assert 'lunos_bot_ready{bot="sockets"} 0.0' in metrics
        assert code == 0 and run.events("run.stopping")
        stderr = "".join(run.lines)
        assert "Traceback" not in stderr and "xapp-revoked-token-123" not in stderr

    async def test_socket_mode_starts_with_a_good_app_token(
        self, chat_api: FakeChatAPI, prefix: str, tmp_path: Path
    ) -> None:
        """The app-token check costs one apps.connections.open and the bot connects as before."""
        (tmp_path / "sockets.toml").write_text(SOCKET_BOT)
        async with FakeSlackAPI() as fake:
            env = run_env(chat_api, prefix, HOST="127.0.0.1", PORT=str(free_port()), SLACK_API_URL=fake.base_url,
                          SLACK_BOT_TOKEN=fake.bot_token, SLACK_APP_TOKEN=fake.app_token)
            run = await RunProcess.start("--bots", str(tmp_path), env=env, stdin=asyncio.subprocess.DEVNULL)
            try:
                await run.wait_for_event("bot.started")
                assert fake.socket_connections == 1
                code = await run.finish(signal.SIGTERM)
            finally:
                await run.kill()
        assert code == 0 and not run.events("bot.start_failed")
        noise = [line for line in run.lines if '"level": "warning"' in line]
        assert noise == [], noise

    async def test_busy_port_is_one_line(self, chat_api: FakeChatAPI, prefix: str) -> None:
        """PORT already taken: one line naming PORT and the fix, exit 2, no traceback."""
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            run = await RunProcess.start(env=run_env(chat_api, prefix, HOST="127.0.0.1", PORT=str(port)))
            try:
                code = await run.finish()
            finally:
                await run.kill()
        last = run.lines[-1].strip()
        assert code == 2 and last.startswith(f"lunos-bots: PORT={port}: port {port} on 127.0.0.1 is already in use")
        assert "free port" in last and "Traceback" not in "".join(run.lines)

    async def test_nothing_to_run_without_a_terminal(self, chat_api: FakeChatAPI, prefix: str) -> None:
        """Only the console bot and stdin is /dev/null (a container): say so and exit non-zero."""
        run = await RunProcess.start(env=run_env(chat_api, prefix), stdin=asyncio.subprocess.DEVNULL)
        try:
            code = await run.finish()
        finally:
            await run.kill()
        last = run.lines[-1].strip()
        assert code == 2 and last.startswith("lunos-bots: nothing to run:") and "terminal" in last
        assert not run.events("bot.started")

    async def test_empty_bots_dir(self, chat_api: FakeChatAPI, prefix: str, tmp_path: Path) -> None:
        """An empty --bots directory is named as such."""
        run = await RunProcess.start("--bots", str(tmp_path), env=run_env(chat_api, prefix))
        try:
            code = await run.finish()
        finally:
            await run.kill()
        assert code == 2 and run.lines[-1].strip().startswith(f"lunos-bots: no bot definitions in {tmp_path}")


DISCORD_BOT = """
name = "helper"
platform = "discord"
app_id = "lunos-helper"
model = "test/model-a"
[discord]
token = "${DISCORD_TOKEN}"
guild_ids = ["2000"]
"""
DISCORD_TOKEN = "discord-token-for-runner-0123456789"


class TestDiscordRun:
    """A Discord bot under `run`: a quiet start, and a start that can be tried again."""

    async def test_starts_without_voice_warnings(self, chat_api: FakeChatAPI, prefix: str, tmp_path: Path) -> None:
        """discord.py's PyNaCl/davey warnings (voice is never used) do not reach the log."""
        (tmp_path / "helper.toml").write_text(DISCORD_BOT)
        async with FakeDiscord(expected_token=DISCORD_TOKEN) as fake:
            env = run_env(chat_api, prefix, HOST="127.0.0.1", PORT=str(free_port()), DISCORD_TOKEN=DISCORD_TOKEN,
                          DISCORD_API_URL=fake.api_base, DISCORD_GATEWAY_URL=fake.gateway_url)
            run = await RunProcess.start("--bots", str(tmp_path), env=env, stdin=asyncio.subprocess.DEVNULL)
            try:
                await run.wait_for_event("bot.started")
                code = await run.finish(signal.SIGTERM)
            finally:
                await run.kill()
        warnings = [line for line in run.lines if '"level": "warning"' in line or "voice" in line]
        assert code == 0 and warnings == []

    async def test_a_failed_login_can_be_retried(self, chat_api: FakeChatAPI, keys: RedisKeys) -> None:
        """Discord refuses the token, then accepts it (fixed, or Discord back): the same bot starts."""
        base, gateway = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
        try:
            async with FakeDiscord(expected_token="some-other-token-000") as fake:
                definition = parse_definition(Path("helper.toml"), DISCORD_BOT, {"DISCORD_TOKEN": DISCORD_TOKEN})
                settings = Settings.from_env({
                    "LUNOS_API_KEY": TEST_API_KEY, "LUNOS_BASE_URL": chat_api.base_url, "REDIS_URL": redis_url(),
                    "REDIS_KEY_PREFIX": keys.prefix, "DISCORD_API_URL": fake.api_base,
                    "DISCORD_GATEWAY_URL": fake.gateway_url,
                })
                async with Services(settings) as services:
                    bot = build_runtime(definition, services.engine(definition.profile), services,
                                            web.Application())
                    with pytest.raises(PlatformError, match="rejected the bot token"):
                        await bot.start()
                    fake.expected_token = DISCORD_TOKEN
                    try:
                        await bot.start()  # logged in: the token was accepted this time
                        assert len(fake.identifies) <= 1 and not bot.client.is_closed()  # type: ignore[attr-defined]
                    finally:
                        await bot.stop()
        finally:
            discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = base, gateway
