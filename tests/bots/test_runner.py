"""`lunos-bots run`: which bots start, /healthz and /metrics, and a graceful stop on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import uuid
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from bots.definitions import parse_definition
from bots.metrics import Metrics
from bots.runner import HealthServer, choose_bots
from bots.services import Services
from bots.settings import Settings
from core.engine import INTERRUPTED_NOTE
from tests.conftest import TEST_API_KEY, redis_url
from tests.fakes.chat_api import Behaviour, FakeChatAPI

ROOT = Path(__file__).resolve().parents[2]
CONSOLE = ROOT / "bots" / "console.toml"
SLACK_EXAMPLE = ROOT / "bots" / "slack-example.toml.example"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class FakeRuntime:
    def __init__(self, name: str, ready: bool) -> None:
        self.name = name
        self.ready = ready
        self.started_event = asyncio.Event()

    async def start(self) -> None:
        self.started_event.set()

    async def stop(self) -> None: ...


class TestChooseBots:
    """Which definitions `run` starts."""

    def test_bots_without_credentials_are_skipped(self) -> None:
        """The Slack example without tokens is skipped; the console bot starts instead."""
        slack = parse_definition(SLACK_EXAMPLE, SLACK_EXAMPLE.read_text(), {})
        console = parse_definition(CONSOLE, CONSOLE.read_text(), {})
        assert choose_bots([slack, console], stdin_is_tty=False) == [console]

    def test_console_needs_a_terminal_when_others_run(self) -> None:
        """With a Slack bot able to start, the console bot runs only on a terminal."""
        env = {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s"}
        slack = parse_definition(SLACK_EXAMPLE, SLACK_EXAMPLE.read_text(), env)
        console = parse_definition(CONSOLE, CONSOLE.read_text(), {})
        assert choose_bots([slack, console], stdin_is_tty=False) == [slack]
        assert choose_bots([slack, console], stdin_is_tty=True) == [slack, console]


class TestHealth:
    """/healthz and /metrics on the shared HTTP server."""

    async def health(self, settings: Settings, runtimes: list[FakeRuntime]) -> tuple[int, dict[str, object], str]:
        async with Services(settings) as services:
            server = HealthServer(services, Metrics())
            server.watch(runtimes)
            port = await server.start("127.0.0.1", 0)
            try:
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                    health = await client.get("/healthz")
                    metrics = await client.get("/metrics")
            finally:
                await server.stop()
        return health.status_code, health.json(), metrics.text

    async def test_ready_bots_and_redis(self) -> None:
        """200 when every bot is ready and Redis answers; metrics say so too."""
        settings = replace(Settings.from_env({"REDIS_URL": redis_url()}))
        status, body, metrics = await self.health(settings, [FakeRuntime("a", True)])
        assert status == 200 and body == {"ok": True, "redis": True, "bots": {"a": True}}
        assert 'lunos_bot_ready{bot="a"} 1.0' in metrics and "lunos_redis_up 1.0" in metrics

    async def test_a_bot_not_ready(self) -> None:
        """503 when one bot is still connecting."""
        settings = Settings.from_env({"REDIS_URL": redis_url()})
        status, body, _ = await self.health(settings, [FakeRuntime("a", True), FakeRuntime("b", False)])
        assert status == 503 and body["bots"] == {"a": True, "b": False}

    async def test_redis_down(self) -> None:
        """503 with redis: false when Redis does not answer."""
        settings = Settings.from_env({"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
        status, body, metrics = await self.health(settings, [FakeRuntime("a", True)])
        assert status == 503 and body["redis"] is False
        assert "lunos_redis_up 0.0" in metrics


class TestStartFailures:
    """A bot that cannot start does not take the others down."""

    async def test_failed_start_is_skipped(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """One runtime raising in start() is logged and skipped; the others run until the stop signal."""
        import bots.runner as runner

        class Broken(FakeRuntime):
            async def start(self) -> None:
                raise RuntimeError("bad token")

        good = FakeRuntime("good", True)
        built = iter([Broken("broken", False), good])
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


class TestRunProcess:
    """The real `lunos-bots run` process."""

    async def test_console_only_run_serves_health_and_stops_gracefully(self, chat_api: FakeChatAPI) -> None:
        """With only an API key, run starts the console bot; SIGTERM mid-reply leaves a final text."""
        chat_api.script("openai/gpt-4.1-mini", Behaviour(text="a slow answer " * 200, token_delay_s=0.02))
        port = free_port()
        prefix = f"lbtest-run-{uuid.uuid4().hex[:8]}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LUNOS_", "SLACK_", "DISCORD_"))}
        env.update({"LUNOS_API_KEY": TEST_API_KEY, "LUNOS_BASE_URL": chat_api.base_url, "HOST": "127.0.0.1",
                    "PORT": str(port), "REDIS_URL": redis_url(), "REDIS_KEY_PREFIX": prefix, "LOG_FORMAT": "json"})
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bots.cli", "run", cwd=ROOT, env=env, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(b"tell me a long story\n")
            await proc.stdin.drain()
            async with asyncio.timeout(20):
                await proc.stdout.readuntil(b"a slow answer")
                async with httpx.AsyncClient() as client:
                    health = await client.get(f"http://127.0.0.1:{port}/healthz")
                assert health.status_code == 200, health.text
                assert health.json()["bots"] == {"console": True}
                proc.send_signal(signal.SIGTERM)
                rest = await proc.stdout.read()
                code = await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            redis = Redis.from_url(redis_url())
            async for key in redis.scan_iter(match=f"{prefix}:*"):
                await redis.delete(key)
            await redis.aclose()
        assert code == 0
        assert rest.decode().rstrip().endswith(INTERRUPTED_NOTE)
