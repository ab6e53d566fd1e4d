"""RateBudget.hold: after a platform's 429, every later reservation waits out its Retry-After."""

from __future__ import annotations

import socket

import pytest
from redis.asyncio import Redis

from core.rate_budget import BucketSpec, RateBudget
from core.redis_keys import RedisKeys

SPEC = BucketSpec(capacity=5, refill_per_s=1.0)


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def dead_redis() -> Redis:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return Redis.from_url(f"redis://127.0.0.1:{port}/0", socket_connect_timeout=0.2)


class TestHold:
    """One atomic hold instead of spending tokens until the queue is long enough."""

    async def test_next_reservation_waits_the_hold(self, redis: Redis, keys: RedisKeys) -> None:
        """A full bucket held for 3 s makes the next caller — on any replica — wait 3 s, then 4 s."""
        clock = Clock()
        replica_a, replica_b = RateBudget(redis, keys, clock=clock), RateBudget(redis, keys, clock=clock)
        await replica_a.hold("b", SPEC, 3.0)
        assert await replica_b.reserve("b", SPEC) == pytest.approx(3.0)
        assert await replica_a.reserve("b", SPEC) == pytest.approx(4.0)

    async def test_hold_never_shortens_a_queue(self, redis: Redis, keys: RedisKeys) -> None:
        """A short hold on a bucket already queued further out changes nothing."""
        budget = RateBudget(redis, keys, clock=Clock())
        for _ in range(10):
            await budget.reserve("b", SPEC)  # 5 at once, then 1..5 s of queue
        await budget.hold("b", SPEC, 1.0)
        assert await budget.reserve("b", SPEC) == pytest.approx(6.0)

    async def test_time_pays_off_the_hold(self, redis: Redis, keys: RedisKeys) -> None:
        """After the hold has passed, tokens refill as usual."""
        clock = Clock()
        budget = RateBudget(redis, keys, clock=clock)
        await budget.hold("b", SPEC, 2.0)
        clock.now += 2.0
        assert await budget.reserve("b", SPEC) == pytest.approx(0.0)

    async def test_local_fallback_holds_too(self, keys: RedisKeys) -> None:
        """With Redis down the same arithmetic runs in this process."""
        redis = dead_redis()
        try:
            budget = RateBudget(redis, keys, clock=Clock())
            await budget.hold("b", SPEC, 3.0)
            assert budget.degraded
            assert await budget.reserve("b", SPEC) == pytest.approx(3.0)
        finally:
            await redis.aclose()
