"""Shared fixtures: real Redis under a private key prefix, the fake chat API, engines.

Redis comes from REDIS_URL (`make test` provides one). Every test gets its own key prefix and
deletes only its own keys afterwards; no database is ever flushed.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis.asyncio import BlockingConnectionPool, Redis

from bots.services import REDIS_MAX_CONNECTIONS, REDIS_POOL_WAIT_S
from core.chat_api import ChatClient, ChatTimeouts, RetryPolicy
from core.coordination import RedisCoordination
from core.engine import ConversationEngine
from core.feedback import RedisFeedback
from core.history import RedisHistory
from core.journal import ReplyJournal
from core.personas import PersonaStore
from core.profile import BotProfile, HistoryLimits
from core.redis_keys import RedisKeys
from core.usage import RedisUsage
from tests.fakes.chat_api import FakeChatAPI

DEFAULT_TEST_REDIS_URL = "redis://127.0.0.1:6379/0"
TEST_API_KEY = "sk-test-0123456789abcdefghij"
# Fast deadlines so timeout paths run in well under a second.
FAST_TIMEOUTS = ChatTimeouts(connect_s=2.0, first_token_s=0.5, chunk_gap_s=0.5, total_s=10.0)
FAST_RETRY = RetryPolicy(attempts_per_model=2, retry_after_cap_s=0.5, backoff_base_s=0.01, backoff_max_s=0.05)


def redis_url() -> str:
    return os.environ.get("REDIS_URL") or DEFAULT_TEST_REDIS_URL


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    # Pooled like production (`bots.services.connect_redis`): a burst of replies waits for a free
    # connection instead of failing at redis-py's default 100.
    pool = BlockingConnectionPool.from_url(redis_url(), max_connections=REDIS_MAX_CONNECTIONS,
                                           timeout=REDIS_POOL_WAIT_S)
    client: Redis = Redis.from_pool(pool)
    yield client
    await client.aclose()


@pytest.fixture
async def keys(redis: Redis) -> AsyncIterator[RedisKeys]:
    prefix = f"lbtest-{uuid.uuid4().hex[:12]}"
    yield RedisKeys(prefix)
    async for key in redis.scan_iter(match=f"{prefix}:*", count=500):
        await redis.delete(key)


@pytest.fixture
async def chat_api() -> AsyncIterator[FakeChatAPI]:
    async with FakeChatAPI(api_key=TEST_API_KEY) as api:
        yield api


@pytest.fixture
async def chat_client(chat_api: FakeChatAPI) -> AsyncIterator[ChatClient]:
    client = ChatClient(base_url=chat_api.base_url, api_key=TEST_API_KEY,
                        timeouts=FAST_TIMEOUTS, retry=FAST_RETRY)
    yield client
    await client.aclose()


def make_profile(**overrides: Any) -> BotProfile:
    values: dict[str, Any] = {
        "name": "testbot", "platform": "test", "app_id": "test-app-1", "model": "test/model-a",
        "fallback_models": ("test/model-b",), "system_prompt": "You are a test bot.", "max_tokens": 256,
        "history": HistoryLimits(),
    }
    values.update(overrides)
    return BotProfile(**values)


EngineFactory = Callable[..., ConversationEngine]


@pytest.fixture
def make_engine(chat_client: ChatClient, redis: Redis, keys: RedisKeys) -> EngineFactory:
    """Build an engine on real Redis and the fake chat API; keyword arguments override the profile."""

    def build(redis_client: Redis | None = None, journal: ReplyJournal | None = None,
              **overrides: Any) -> ConversationEngine:
        store = redis_client or redis
        profile = make_profile(**overrides)
        return ConversationEngine(
            profile, chat=chat_client, history=RedisHistory(store, keys, profile.history, bot=profile.name),
            coordination=RedisCoordination(store, keys), usage=RedisUsage(store, keys), journal=journal,
            personas=PersonaStore(store, keys),
            feedback=RedisFeedback(store, keys, ttl_s=profile.history.ttl_s),
        )

    return build
