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


CLAIM_TTL_S = 60.0


class TestAllocation:
    """Claims: a holder's final call never queues behind anyone's optional calls."""

    async def test_admits_only_what_the_bucket_can_cover(self, redis: Redis, keys: RedisKeys) -> None:
        """With 5 tokens, 5 holders are admitted across replicas and the sixth is turned away at once."""
        clock = Clock()
        replica_a, replica_b = RateBudget(redis, keys, clock=clock), RateBudget(redis, keys, clock=clock)
        admitted = [await (replica_a if i % 2 else replica_b).admit("b", SPEC, f"r{i}", ttl_s=CLAIM_TTL_S)
                    for i in range(6)]
        assert admitted == [True] * 5 + [False]
        assert await replica_a.admit("b", SPEC, "r0", ttl_s=CLAIM_TTL_S), "a holder's renewal is no new claim"

    async def test_spare_tokens_leave_one_for_every_claim(self, redis: Redis, keys: RedisKeys) -> None:
        """Optional calls take only what the claims do not need; the claims' calls then go at once."""
        clock = Clock()
        budget = RateBudget(redis, keys, clock=clock)
        assert await budget.admit("b", SPEC, "r1", ttl_s=CLAIM_TTL_S)
        assert await budget.admit("b", SPEC, "r2", ttl_s=CLAIM_TTL_S)
        spent = [await budget.take_spare("b", SPEC, "r1", ttl_s=CLAIM_TTL_S) for _ in range(4)]
        assert spent == [True, True, True, False]
        assert await budget.reserve("b", SPEC) == pytest.approx(0.0)  # r1's final call
        await budget.release("b", "r1")
        assert await budget.reserve("b", SPEC) == pytest.approx(0.0)  # r2's final call
        await budget.release("b", "r2")
        assert not await budget.admit("b", SPEC, "r3", ttl_s=CLAIM_TTL_S), "the bucket is empty now"
        clock.now += 1.0
        assert await budget.admit("b", SPEC, "r3", ttl_s=CLAIM_TTL_S)

    async def test_claims_of_a_crashed_holder_expire(self, redis: Redis, keys: RedisKeys) -> None:
        """A claim never renewed or released stops counting after its ttl."""
        clock = Clock()
        budget = RateBudget(redis, keys, clock=clock)
        for i in range(5):
            assert await budget.admit("b", SPEC, f"gone{i}", ttl_s=10.0)
        assert not await budget.take_spare("b", SPEC, "other", ttl_s=10.0)
        clock.now += 10.0
        assert await budget.take_spare("b", SPEC, "other", ttl_s=10.0)

    async def test_renewal_keeps_a_claim_alive(self, redis: Redis, keys: RedisKeys) -> None:
        """A holder that keeps asking for spare tokens keeps its claim past the first ttl."""
        clock = Clock()
        budget = RateBudget(redis, keys, clock=clock)
        for i in range(5):
            assert await budget.admit("b", SPEC, f"r{i}", ttl_s=10.0)
        clock.now += 8.0
        await budget.take_spare("b", SPEC, "r0", ttl_s=10.0)
        clock.now += 8.0
        assert await budget.admit("b", SPEC, "new1", ttl_s=10.0)  # r1..r4 expired, 5 tokens again
        assert await budget.admit("b", SPEC, "new2", ttl_s=10.0)
        assert await budget.admit("b", SPEC, "new3", ttl_s=10.0)
        assert await budget.admit("b", SPEC, "new4", ttl_s=10.0)
        assert not await budget.admit("b", SPEC, "new5", ttl_s=10.0), "r0 still holds its claim"

    async def test_local_fallback_allocates_too(self, keys: RedisKeys) -> None:
        """With Redis down the claims are kept in this process with the same rules."""
        redis = dead_redis()
        try:
            budget = RateBudget(redis, keys, clock=Clock())
            assert [await budget.admit("b", SPEC, f"r{i}", ttl_s=CLAIM_TTL_S) for i in range(6)] == (
                [True] * 5 + [False])
            assert not await budget.take_spare("b", SPEC, "r0", ttl_s=CLAIM_TTL_S)
            await budget.release("b", "r0")
            assert await budget.take_spare("b", SPEC, "r1", ttl_s=CLAIM_TTL_S)
            assert budget.degraded
        finally:
            await redis.aclose()
