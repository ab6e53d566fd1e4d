"""Fixtures of the fault suite: the fake chat API with this suite's key, the process's log pipeline
captured (with the runner's redaction), and a factory for a Slack or Discord bot under test."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest
import structlog
from redis.asyncio import Redis

from bots.logging_setup import NOISY_LIBRARIES, SecretRedactor, configure_logging
from core.redis_keys import RedisKeys
from tests.fakes.chat_api import Behaviour, FakeChatAPI
from tests.reliability.harness import SECRETS, Side, build_engine, chat_client, discord_side, slack_side

# Streams that last about half a second, so faults land while replies are in flight.
STREAMING = Behaviour(chunk_chars=24, token_delay_s=0.004)

SideFactory = Callable[[str], AbstractAsyncContextManager[Side]]


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    """Every log line of the test as the runner writes them (JSON, secrets redacted), DEBUG and up."""
    out = io.StringIO()
    touched = [logging.getLogger(), *(logging.getLogger(name) for name in NOISY_LIBRARIES)]
    levels = [logger.level for logger in touched]
    configure_logging(level="DEBUG", fmt="json", redactor=SecretRedactor(SECRETS), stream=out)
    try:
        yield out
    finally:
        logging.getLogger().handlers.clear()
        for logger, level in zip(touched, levels, strict=True):  # later tests' caplog sees what it expects
            logger.setLevel(level)
        structlog.reset_defaults()


@pytest.fixture
async def fault_api() -> AsyncIterator[FakeChatAPI]:
    async with FakeChatAPI(api_key=SECRETS[0]) as api:
        api.default_behaviour = STREAMING
        yield api


@pytest.fixture
def open_side(fault_api: FakeChatAPI, redis: Redis, keys: RedisKeys) -> SideFactory:
    """`async with open_side("slack" | "discord") as side:` a started bot on its fake platform."""

    @asynccontextmanager
    async def build(platform: str) -> AsyncIterator[Side]:
        chat = chat_client(fault_api.base_url)
        engine = build_engine(platform, chat, redis, keys)
        try:
            opener = slack_side if platform == "slack" else discord_side
            async with opener(engine, redis, keys) as side:
                yield side
        finally:
            await chat.aclose()

    return build
