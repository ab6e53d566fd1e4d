"""What every engine benchmark shares: real Redis under a private prefix, the fake chat API,
engines wired like production, sinks that time-stamp the first visible text, and run sizes.

Redis comes from REDIS_URL (default redis://127.0.0.1:6379/0). Every run uses its own key prefix
and deletes only its own keys at the end; no database is ever flushed.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from dataclasses import dataclass
from types import TracebackType
from typing import IO

from redis.asyncio import Redis

from benchmarks.fake_api_process import FakeAPIProcess
from bots.logging_setup import SecretRedactor, configure_logging
from bots.services import REDIS_CONNECT_TIMEOUT_S, REDIS_HEALTH_CHECK_INTERVAL_S, REDIS_SOCKET_TIMEOUT_S
from core.chat_api import ChatClient
from core.coordination import RedisCoordination
from core.engine import ConversationEngine
from core.history import RedisHistory
from core.ports import RenderLimits
from core.profile import BotProfile, HistoryLimits
from core.redis_circuit import RedisCircuit
from core.redis_keys import RedisKeys
from core.types import Author, ConversationKey, IncomingMessage
from core.usage import RedisUsage
from tests.fakes.sinks import RecordingSink

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
# The engine benchmarks measure the healthy path, so their Redis pool fits 200 simultaneous turns.
# `bots.services.connect_redis` leaves redis-py's default (100 in redis-py 8); the burst check in
# `reply_latency.production_pool_burst` measures that wiring as it is.
BENCH_REDIS_MAX_CONNECTIONS = 1000
API_KEY = "sk-bench-0123456789abcdefghij"
BOT = "benchbot"
MODEL_A, MODEL_B, MODEL_C = "test/model-a", "test/model-b", "test/model-c"
# Discord's shape: 2000-character messages, split at 1900, an edit at most every 1.2 s.
DISCORD_LIKE_LIMITS = RenderLimits(
    max_chars=2000, split_chars=1900, min_edit_interval_s=1.2, placeholder="…", streaming_indicator=" ⚪"
)


def redis_url() -> str:
    return os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL


@dataclass(frozen=True)
class Sizes:
    """How much each benchmark does; `--quick` keeps the whole run under ~30 s."""

    first_text_turns: int
    concurrent_conversations: int
    concurrent_warmup: int  # conversations of the uncounted warm-up round
    concurrent_rounds: int
    ordering_messages: int
    ordering_rounds: int
    renderer_runs: int
    memory_replies: int
    memory_rounds: int
    client_runs: int


QUICK = Sizes(first_text_turns=60, concurrent_conversations=200, concurrent_warmup=50, concurrent_rounds=1,
              ordering_messages=20, ordering_rounds=1, renderer_runs=3, memory_replies=100,
              memory_rounds=1, client_runs=3)
FULL = Sizes(first_text_turns=500, concurrent_conversations=200, concurrent_warmup=200, concurrent_rounds=3,
             ordering_messages=20, ordering_rounds=5, renderer_runs=30, memory_replies=200,
             memory_rounds=3, client_runs=15)


class StampedEvent(asyncio.Event):
    """An `asyncio.Event` that remembers (perf_counter) when it was first set. Passed to
    `RecordingSink` as `first_text`/`finished`, it times what the user sees without a new fake."""

    at: float | None = None

    def set(self) -> None:
        if self.at is None:
            self.at = time.perf_counter()
        super().set()


@dataclass
class TimedSink:
    """A `RecordingSink` and its stamped events."""

    sink: RecordingSink
    first_text: StampedEvent
    finished: StampedEvent


def timed_sink(limits: RenderLimits = DISCORD_LIKE_LIMITS) -> TimedSink:
    first_text, finished = StampedEvent(), StampedEvent()
    sink = RecordingSink(limits=limits, first_text=first_text, finished=finished)
    return TimedSink(sink, first_text, finished)


def conversation(name: str) -> ConversationKey:
    return ConversationKey("bench", "w1", name)


def incoming(conv: ConversationKey, text: str) -> IncomingMessage:
    return IncomingMessage(
        bot=BOT, platform="bench", conversation=conv, author=Author("u1", "alice"), text=text,
        event_id=uuid.uuid4().hex, received_at=time.time(),
    )


def redis_client(max_connections: int) -> Redis:
    """A client configured like `bots.services.connect_redis`, with a pool of `max_connections`."""
    client: Redis = Redis.from_url(
        redis_url(), socket_connect_timeout=REDIS_CONNECT_TIMEOUT_S, socket_timeout=REDIS_SOCKET_TIMEOUT_S,
        health_check_interval=REDIS_HEALTH_CHECK_INTERVAL_S, max_connections=max_connections,
    )
    return client


def profile() -> BotProfile:
    return BotProfile(
        name=BOT, platform="bench", app_id="bench-app-1", model=MODEL_A, fallback_models=(MODEL_B,),
        system_prompt="You are a benchmark bot.", max_tokens=1024, history=HistoryLimits(),
    )


class Bench:
    """Redis, the fake API process and one shared `ChatClient`, as `bots.services` wires them
    (one `RedisCircuit` shared by every store; Redis timeouts as in production).

    Logging is configured as in production (JSON at INFO) but written to /dev/null, so each turn
    pays its real logging cost without flooding the table.
    """

    def __init__(self) -> None:
        self.keys = RedisKeys(f"lbbench-{uuid.uuid4().hex[:12]}")
        self.redis = redis_client(BENCH_REDIS_MAX_CONNECTIONS)
        self.fake = FakeAPIProcess(API_KEY)
        self.chat: ChatClient | None = None
        self.circuit = RedisCircuit()
        self.coordination = RedisCoordination(self.redis, self.keys, self.circuit)
        self.usage = RedisUsage(self.redis, self.keys, circuit=self.circuit)
        self.deleted_keys = 0
        self._log_stream: IO[str] | None = None

    async def __aenter__(self) -> Bench:
        self._log_stream = open(os.devnull, "w", encoding="utf-8")  # noqa: ASYNC230 (once, at setup)
        configure_logging(level="INFO", fmt="json", redactor=SecretRedactor([API_KEY]),
                          stream=self._log_stream)
        await self.redis.ping()
        base_url = await self.fake.start()
        self.chat = ChatClient(base_url=base_url, api_key=API_KEY)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self.chat is not None:
                await self.chat.aclose()
            await self.fake.stop()
            await self._delete_own_keys()
        finally:
            await self.redis.aclose()
            if self._log_stream is not None:
                self._log_stream.close()

    async def _delete_own_keys(self) -> None:
        batch: list[bytes] = []
        async for key in self.redis.scan_iter(match=f"{self.keys.prefix}:*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                self.deleted_keys += int(await self.redis.delete(*batch))
                batch.clear()
        if batch:
            self.deleted_keys += int(await self.redis.delete(*batch))

    def engine(self, redis: Redis | None = None) -> ConversationEngine:
        """A fresh engine for the benchmark bot (own token estimator, shared clients), on the
        bench's Redis client or on `redis` with its own circuit and stores."""
        assert self.chat is not None, "use Bench as an async context manager"
        bot = profile()
        if redis is None:
            history = RedisHistory(self.redis, self.keys, bot.history, self.circuit, bot=bot.name)
            return ConversationEngine(
                bot, chat=self.chat, history=history,
                coordination=self.coordination, usage=self.usage,
            )
        circuit = RedisCircuit()
        return ConversationEngine(
            bot, chat=self.chat, history=RedisHistory(redis, self.keys, bot.history, circuit, bot=bot.name),
            coordination=RedisCoordination(redis, self.keys, circuit),
            usage=RedisUsage(redis, self.keys, circuit=circuit),
        )

    def history(self) -> RedisHistory:
        return RedisHistory(self.redis, self.keys, profile().history, bot=profile().name)

    async def redis_version(self) -> str:
        info = await self.redis.info("server")
        return str(info.get("redis_version", "?"))
