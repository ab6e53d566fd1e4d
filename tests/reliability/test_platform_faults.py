"""Platform and store faults while several conversations stream at once: Slack's retried deliveries
and 429s on `chat.update`, Discord's 429s on edits, and a Redis restart in the middle of replies."""

from __future__ import annotations

import asyncio
import io
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from redis.asyncio import Redis

from bots.services import connect_redis
from core.redis_keys import RedisKeys
from tests.adapters.discord.conftest import GENERAL
from tests.fakes.chat_api import Behaviour, FakeChatAPI
from tests.reliability.conftest import SideFactory
from tests.reliability.harness import (
    SECRETS,
    Side,
    SlackSide,
    Workload,
    build_engine,
    chat_client,
    converse,
    discord_side,
    slack_side,
)
from tests.reliability.invariants import Report, Sent, check

CONVERSATIONS = 6
REDIS_START_TIMEOUT_S = 10.0
# Streams slow enough (about 1.5 s) that Redis can be stopped while every one of them is running.
SLOW_STREAM = Behaviour(chunk_chars=24, token_delay_s=0.012)


def finish(sent: list[Sent], api: FakeChatAPI, alive: bool, logs: io.StringIO) -> Report:
    report = check(sent, api.requests, alive=alive, log_text=logs.getvalue(), secrets=SECRETS)
    report.assert_clean()
    return report


class TestSlackRetries:
    """Slack redelivers an event it thinks was not acked (`X-Slack-Retry-Num`)."""

    async def test_retried_events_get_one_reply(self, open_side: SideFactory, fault_api: FakeChatAPI,
                                                captured_logs: io.StringIO) -> None:
        """Every event delivered three times — the retries at once or while its reply streams — is
        answered once, with one model call."""
        workload = Workload("slack", CONVERSATIONS)
        async with open_side("slack") as side:
            assert isinstance(side, SlackSide)
            sent = []
            for index in range(CONVERSATIONS):
                token, text = workload.text(index)
                sent.append(Sent("slack", workload.marker(index), token, text,
                                 handle=side.payload(workload.marker(index), text)))
            at_once, while_streaming = sent[::2], sent[1::2]
            statuses = await asyncio.gather(
                *(side.post(s.handle) for s in sent),
                *(side.post(s.handle, retry_num=1) for s in at_once),
            )
            await side.fake.wait_for_call("chat.postMessage", count=1)
            statuses += await asyncio.gather(
                *(side.post(s.handle, retry_num=n) for s in while_streaming for n in (1, 2)),
                *(side.post(s.handle, retry_num=2) for s in at_once),
            )
            assert set(statuses) == {200}
            await side.bot.wait_idle()
            side.read_replies(sent)
            alive = side.alive
        report = finish(sent, fault_api, alive, captured_logs)
        assert report.outcomes["answered"] == CONVERSATIONS
        assert len(fault_api.requests) == CONVERSATIONS


class TestPlatformRateLimits:
    """429s from the platform on the calls that grow and finish replies."""

    async def test_slack_429_on_chat_update(self, open_side: SideFactory, fault_api: FakeChatAPI,
                                            captured_logs: io.StringIO) -> None:
        """A run of 429s (Retry-After 1 s) on chat.update: replies still end complete, no cursor."""
        workload = Workload("slack", CONVERSATIONS)
        async with open_side("slack") as side:
            assert isinstance(side, SlackSide)
            side.fake.fail_next("chat.update", status=429, retry_after=1, times=4)
            sent = await converse(side, workload, 1)
            assert side.fake.calls_to("chat.update")[0].status == 429
            alive = side.alive
        report = finish(sent, fault_api, alive, captured_logs)
        assert report.outcomes["answered"] == CONVERSATIONS

    async def test_discord_429_on_edit(self, open_side: SideFactory, fault_api: FakeChatAPI,
                                       captured_logs: io.StringIO) -> None:
        """429s on message edits in the busy channel: discord.py waits them out, replies end complete."""
        workload = Workload("discord", CONVERSATIONS)
        async with open_side("discord") as side:
            side.fake.fail_next("PATCH", f"/channels/{GENERAL}/messages/", times=6, retry_after=0.1)
            sent = await converse(side, workload, 2)
            assert side.fake.rate_limited_count >= 6
            alive = side.alive
        report = finish(sent, fault_api, alive, captured_logs)
        assert report.outcomes["answered"] == 2 * CONVERSATIONS


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateRedis:
    """A redis-server of this test's own, on a free port. Never the shared server. Without a
    `directory` it keeps nothing: stopping it loses everything, as a restarted cache would; with
    one it keeps an append-only file there and comes back with its data."""

    def __init__(self, directory: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._directory = directory
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        persistence = (["--dir", str(self._directory), "--appendonly", "yes", "--appendfsync", "always"]
                       if self._directory is not None else ["--appendonly", "no"])
        self._process = await asyncio.create_subprocess_exec(
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", *persistence,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        assert self._process.stdout is not None
        async with asyncio.timeout(REDIS_START_TIMEOUT_S):
            while b"Ready to accept connections" not in await self._process.stdout.readline():
                pass

    async def stop(self) -> None:
        if self._process is not None and self._process.returncode is None:
            self._process.kill()
            await self._process.wait()
        self._process = None


@asynccontextmanager
async def private_redis() -> AsyncIterator[PrivateRedis]:
    server = PrivateRedis()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@asynccontextmanager
async def side_on(platform: str, api: FakeChatAPI, redis: Redis) -> AsyncIterator[Side]:
    chat = chat_client(api.base_url)
    keys = RedisKeys(f"lbrel-{uuid.uuid4().hex[:8]}")
    try:
        opener = slack_side if platform == "slack" else discord_side
        async with opener(build_engine(platform, chat, redis, keys), redis, keys) as side:
            yield side
    finally:
        await chat.aclose()


@pytest.mark.parametrize("platform", ["slack", "discord"])
class TestRedisRestart:
    """Redis dies while replies stream, stays down for a wave, and comes back empty."""

    async def test_replies_survive_a_redis_restart(self, platform: str, fault_api: FakeChatAPI,
                                                   captured_logs: io.StringIO) -> None:
        """Before, during, while down and after: every message answered once, nothing leaked."""
        workload = Workload(platform, CONVERSATIONS)
        async with private_redis() as server:
            redis, _ = connect_redis(server.url)  # the runner's client: its timeouts and pool
            try:
                async with side_on(platform, fault_api, redis) as side:
                    sent = await converse(side, workload, 1)
                    fault_api.default_behaviour = SLOW_STREAM
                    wave = asyncio.create_task(side.wave(workload, range(CONVERSATIONS)))
                    await fault_api.wait_for_requests(2 * CONVERSATIONS)
                    await server.stop()  # mid-stream: the turns cannot save their history
                    during = await wave
                    side.read_replies(during)
                    fault_api.default_behaviour = Behaviour(chunk_chars=24, token_delay_s=0.004)
                    sent += during + await converse(side, workload, 1)  # Redis still down
                    await server.start()  # back, and empty
                    sent += await converse(side, workload, 1)
                    alive = side.alive
            finally:
                await redis.aclose()
        report = finish(sent, fault_api, alive, captured_logs)
        assert report.outcomes["answered"] == 4 * CONVERSATIONS
