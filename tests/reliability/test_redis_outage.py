"""Nothing lost in a Redis outage: a private redis-server (persistent, so it comes back with its
data) is stopped while conversations go on and started again; the turns answered meanwhile reach
history in order and usage equals what the chat API reported, through the production wiring
(`bots.services.Services`: one circuit, the write-behind buffer, the journal)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from bots.services import Services
from bots.settings import Settings
from core.types import ConversationKey, Turn
from tests.conftest import TEST_API_KEY, make_profile
from tests.core.test_engine import incoming
from tests.fakes.chat_api import Behaviour, FakeChatAPI, _usage
from tests.fakes.sinks import RecordingSink
from tests.reliability.test_platform_faults import PrivateRedis

PREFIX = "lbrel-outage"
CONVERSATIONS = 3


@pytest.fixture
async def durable_redis(tmp_path: Path) -> AsyncIterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)  # keeps its data across a stop
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


class TestRedisOutage:
    """Redis stopped under a few turns, then started again with its data."""

    async def test_outage_turns_are_saved_and_counted(self, durable_redis: PrivateRedis, chat_api: FakeChatAPI) -> None:
        """Every conversation's history and the usage totals end as if Redis had never stopped."""
        chat_api.default_behaviour = Behaviour(text="A fixed answer, so its tokens are known.", chunk_chars=50)
        settings = Settings.from_env({"REDIS_URL": durable_redis.url, "REDIS_KEY_PREFIX": PREFIX,
                                      "LUNOS_API_KEY": TEST_API_KEY, "LUNOS_BASE_URL": chat_api.base_url})
        profile = make_profile()
        conversations = [ConversationKey("test", "w1", f"c{i}") for i in range(CONVERSATIONS)]
        async with Services(settings) as services:
            engine = services.engine(profile)

            async def turn(round_: int) -> None:
                await asyncio.gather(*(engine.handle(incoming(f"question {round_} in {c.channel}", c), RecordingSink())
                                       for c in conversations))

            await turn(1)
            await durable_redis.stop()
            await turn(2)
            await turn(3)
            assert len(services.write_behind) > 0, "the outage turns wait in memory"
            await durable_redis.start()
            assert await services.redis.ping()
            services.circuit.record_success()  # what /readyz's successful PING does (tests/bots/test_runner.py)
            async with asyncio.timeout(10):
                await services.write_behind.drained()
            assert services.write_behind.dropped == 0

            redis: Redis = services.redis
            for conv in conversations:
                raw = await redis.lrange(services.keys.history(profile.name, conv), 0, -1)
                turns = [Turn.from_json(item) for item in raw]
                assert [(t.role, t.content.split(" in ")[0]) for t in turns if t is not None and t.role == "user"] == [
                    ("user", "question 1"), ("user", "question 2"), ("user", "question 3")]
                assert len(turns) == 6
            rows = await services.usage.read(days=1)
            reported = [_usage(r.body, r.behaviour.text or "") for r in chat_api.requests if r.behaviour]
            assert sum(r.requests for r in rows) == len(chat_api.requests) == 3 * CONVERSATIONS
            assert sum(r.prompt_tokens for r in rows) == sum(u["prompt_tokens"] for u in reported)
            assert sum(r.completion_tokens for r in rows) == sum(u["completion_tokens"] for u in reported)
