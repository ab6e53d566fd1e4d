"""Per-user limits and the per-app daily budget, enforced in Redis across two replicas (two engines,
each with its own Redis client, on one Redis): concurrency, the rate window, input size, the budget."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from redis.asyncio import Redis

from core.chat_api import ChatClient
from core.coordination import RedisCoordination
from core.engine import ConversationEngine
from core.history import RedisHistory
from core.limits import RATE_WINDOW_S, Refusal, TurnLimiter, TurnLimits
from core.redis_circuit import RedisCircuit
from core.redis_keys import RedisKeys
from core.types import Author, ConversationKey, IncomingMessage
from core.usage import RedisUsage, day_of
from tests.conftest import make_profile, redis_url
from tests.fakes.chat_api import Behaviour, FakeChatAPI
from tests.fakes.sinks import RecordingSink

WAIT_S = 10.0
A = "test/model-a"


@dataclass
class GatedSink(RecordingSink):
    """A sink whose reply holds still at `start` until `gate` opens: a turn in flight, on demand."""

    gate: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        await super().start()
        await self.gate.wait()


class Clock:
    """Wall-clock seconds the test moves by hand (shared by both replicas, as NTP would make it)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@dataclass
class Replica:
    engine: ConversationEngine
    usage: RedisUsage
    refusals: list[tuple[str, str]]


async def replica(redis: Redis, keys: RedisKeys, chat: ChatClient, limits: TurnLimits, clock: Clock) -> Replica:
    profile = make_profile()
    usage = RedisUsage(redis, keys, wall_clock=clock)
    refusals: list[tuple[str, str]] = []
    limiter = TurnLimiter(redis, keys, limits, bot=profile.name, app_id=profile.app_id, model=profile.model,
                          usage=usage, circuit=RedisCircuit(), wall_clock=clock,
                          on_refusal=lambda bot, limit: refusals.append((bot, limit)))
    engine = ConversationEngine(
        profile, chat=chat, history=RedisHistory(redis, keys, profile.history, bot=profile.name),
        coordination=RedisCoordination(redis, keys), usage=usage, limits=limiter,
    )
    return Replica(engine, usage, refusals)


@pytest.fixture
async def second_redis() -> AsyncIterator[Redis]:
    client: Redis = Redis.from_url(redis_url())
    yield client
    await client.aclose()


def message(text: str, user: str = "u1", conv: str | None = None) -> IncomingMessage:
    return IncomingMessage(
        bot="testbot", platform="test", conversation=ConversationKey("test", "w1", conv or uuid.uuid4().hex),
        author=Author(user, user), text=text, event_id=uuid.uuid4().hex,
        received_at=time.time(),
    )


async def pair(redis: Redis, second_redis: Redis, keys: RedisKeys, chat: ChatClient, limits: TurnLimits,
               clock: Clock) -> tuple[Replica, Replica]:
    return (await replica(redis, keys, chat, limits, clock),
            await replica(second_redis, keys, chat, limits, clock))


class TestConcurrency:
    """`user_turns_in_flight` counts a user's answers in progress on every replica."""

    async def test_third_turn_refused_across_replicas(
        self, redis: Redis, second_redis: Redis, keys: RedisKeys, chat_client: ChatClient,
        chat_api: FakeChatAPI,
    ) -> None:
        """Two turns held in flight, one per replica: the user's third is refused on either, another
        user is not, and once one turn ends the user is admitted again."""
        clock = Clock()
        one, two = await pair(redis, second_redis, keys, chat_client, TurnLimits(user_turns_per_minute=0), clock)
        held = [GatedSink(), GatedSink()]
        tasks = [asyncio.create_task(one.engine.handle(message("first"), held[0])),
                 asyncio.create_task(two.engine.handle(message("second"), held[1]))]
        async with asyncio.timeout(WAIT_S):
            await held[0].started.wait()
            await held[1].started.wait()
        refused = RecordingSink()
        outcome = await two.engine.handle(message("third"), refused)
        assert outcome.status == "refused"
        [text] = refused.final_texts
        assert "user_turns_in_flight" in text and "once one has finished" in text
        assert [c.kind for c in refused.calls] == ["post", "finish"]  # no working signal, one message
        assert two.refusals == [("testbot", "user_turns_in_flight")]
        other = await one.engine.handle(message("another user", user="u2"), RecordingSink())
        assert other.status == "answered"
        held[0].gate.set()
        async with asyncio.timeout(WAIT_S):
            assert (await tasks[0]).status == "answered"
        again = await one.engine.handle(message("fourth"), RecordingSink())
        assert again.status == "answered"
        held[1].gate.set()
        async with asyncio.timeout(WAIT_S):
            await tasks[1]
        assert len(chat_api.requests) == 4  # first, second, other user, fourth: never the refused one

    async def test_simultaneous_admissions_never_exceed_the_limit(
        self, redis: Redis, second_redis: Redis, keys: RedisKeys, chat_client: ChatClient,
    ) -> None:
        """Ten admissions raced from two replicas at once: exactly the limit is admitted (the script
        is atomic), and releasing frees the slots."""
        clock = Clock()
        one, two = await pair(redis, second_redis, keys, chat_client, TurnLimits(user_turns_per_minute=0), clock)
        limiters = [one.engine._limits, two.engine._limits]
        assert limiters[0] is not None and limiters[1] is not None
        verdicts = await asyncio.gather(*(limiters[i % 2].admit(message(f"m{i}")) for i in range(10)))  # type: ignore[union-attr]
        admitted = [v for v in verdicts if not isinstance(v, Refusal)]
        assert len(admitted) == 2
        for admission in admitted:
            await admission.release()
        assert not isinstance(await limiters[1].admit(message("after")), Refusal)  # type: ignore[union-attr]


class TestRateWindow:
    """`user_turns_per_minute` is a sliding window over both replicas."""

    async def test_window_slides(
        self, redis: Redis, second_redis: Redis, keys: RedisKeys, chat_client: ChatClient, chat_api: FakeChatAPI,
    ) -> None:
        """Three turns a minute: turns alternate between replicas, the fourth is refused with the wait
        until the oldest leaves the window, and once the clock passes it a turn is admitted."""
        clock = Clock()
        one, two = await pair(redis, second_redis, keys, chat_client,
                              TurnLimits(user_turns_per_minute=3, user_turns_in_flight=0), clock)
        for i, rep in enumerate([one, two, one]):
            assert (await rep.engine.handle(message(f"turn {i}"), RecordingSink())).status == "answered"
            clock.now += 10
        refused = RecordingSink()
        assert (await two.engine.handle(message("too fast"), refused)).status == "refused"
        [text] = refused.final_texts
        assert "user_turns_per_minute" in text and "try again in 30 s" in text  # 60 - 30 s elapsed
        clock.now += RATE_WINDOW_S - 30 + 0.01  # the first turn leaves the window
        assert (await two.engine.handle(message("now"), RecordingSink())).status == "answered"
        assert (await one.engine.handle(message("but not again"), RecordingSink())).status == "refused"
        rows = await one.usage.read(app_id="test-app-1", days=1)
        [row] = rows
        assert row.requests == 4 and row.refusals == {"user_turns_per_minute": 2}


class TestInputSize:
    """`max_input_chars` refuses rather than truncates."""

    async def test_long_message_is_refused_whole(
        self, redis: Redis, second_redis: Redis, keys: RedisKeys, chat_client: ChatClient, chat_api: FakeChatAPI,
    ) -> None:
        """A message over the limit: refused with its length and the limit, no model call, nothing in
        history; commands are never refused."""
        clock = Clock()
        one, _ = await pair(redis, second_redis, keys, chat_client, TurnLimits(max_input_chars=100), clock)
        msg = message("x" * 101, conv="c-long")
        sink = RecordingSink()
        assert (await one.engine.handle(msg, sink)).status == "refused"
        assert "101 characters" in sink.final_texts[0] and "at most 100" in sink.final_texts[0]
        assert chat_api.requests == []
        assert not await one.engine.has_history(msg.conversation)
        assert (await one.engine.handle(message("help", conv="c-long"), RecordingSink())).status == "command"
        assert (await one.engine.handle(message("y" * 100), RecordingSink())).status == "answered"


class TestDailyBudget:
    """`daily_tokens` is per app ID and UTC day, read from the usage counters."""

    async def test_budget_spent_on_one_replica_refuses_on_the_other(
        self, redis: Redis, second_redis: Redis, keys: RedisKeys, chat_client: ChatClient, chat_api: FakeChatAPI,
    ) -> None:
        """Once the API-reported tokens of today reach the budget, every replica refuses, saying when
        it resets; the next UTC day the budget is fresh."""
        clock = Clock()
        one, two = await pair(redis, second_redis, keys, chat_client,
                              TurnLimits(daily_tokens=30, user_turns_per_minute=0), clock)
        chat_api.script(A, Behaviour(text="a" * 100))  # ≥ 26 completion tokens per reply
        assert (await one.engine.handle(message("q1"), RecordingSink())).status == "answered"
        spent = await two.usage.tokens_on("test-app-1", day_of(clock.now))
        assert spent >= 30
        sink = RecordingSink()
        assert (await two.engine.handle(message("q2"), sink)).status == "refused"
        assert "daily_tokens" in sink.final_texts[0] and "00:00 UTC" in sink.final_texts[0]
        assert len(chat_api.requests) == 1
        clock.now += 24 * 3600
        assert (await two.engine.handle(message("q3", user="u9"), RecordingSink())).status == "answered"


class TestDegraded:
    """With Redis down the limits still hold within one process."""

    async def test_local_counting_while_redis_is_down(self, keys: RedisKeys, chat_client: ChatClient) -> None:
        """A replica whose Redis is unreachable admits up to the limit in this process, never raises."""
        dead: Redis = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
        try:
            rep = await replica(dead, keys, chat_client, TurnLimits(user_turns_in_flight=1), Clock())
            limiter = rep.engine._limits
            assert limiter is not None
            first = await limiter.admit(message("a"))
            assert not isinstance(first, Refusal)
            second = await limiter.admit(message("b"))
            assert isinstance(second, Refusal) and second.limit == "user_turns_in_flight"
            await first.release()
            assert not isinstance(await limiter.admit(message("c")), Refusal)
        finally:
            await dead.aclose()
