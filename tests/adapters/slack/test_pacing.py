"""The per-workspace budget: `core.rate_budget.RateBudget` on real Redis (atomic across replicas,
reservations queued in order, a local fallback when Redis is down) and `EditPacing`'s arithmetic.

(`RateBudget` is platform-neutral; its tests live here because Slack's pacing is its one user.)
"""

from __future__ import annotations

import asyncio

import fakeredis
import pytest
from redis.asyncio import Redis

from adapters.slack.pacing import EditPacing, WorkspacePacer
from core.rate_budget import BucketSpec, RateBudget
from core.redis_circuit import REDIS_COOL_DOWN_S, RedisCircuit
from core.redis_keys import RedisKeys

SPEC = BucketSpec(capacity=2, refill_per_s=1.0)


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class TestRateBudget:
    """Token buckets in Redis."""

    async def test_burst_then_queue_in_order(self, redis: Redis, keys: RedisKeys) -> None:
        """The capacity goes at once; later callers are given increasing waits, one refill apart."""
        budget = RateBudget(redis, keys, clock=Clock())
        waits = [await budget.reserve("b", SPEC) for _ in range(5)]
        assert waits == pytest.approx([0.0, 0.0, 1.0, 2.0, 3.0])

    async def test_refills_with_time(self, redis: Redis, keys: RedisKeys) -> None:
        """Tokens come back at the refill rate, never beyond the capacity."""
        clock = Clock()
        budget = RateBudget(redis, keys, clock=clock)
        assert [await budget.reserve("b", SPEC) for _ in range(2)] == [0.0, 0.0]
        clock.now += 1.5
        assert await budget.reserve("b", SPEC) == 0.0
        assert await budget.reserve("b", SPEC) == pytest.approx(0.5)
        clock.now += 1000
        assert [await budget.reserve("b", SPEC) for _ in range(3)] == pytest.approx([0.0, 0.0, 1.0])

    async def test_max_wait_takes_nothing(self, redis: Redis, keys: RedisKeys) -> None:
        """A caller unwilling to wait that long gets None, and the queue is not lengthened."""
        budget = RateBudget(redis, keys, clock=Clock())
        await budget.reserve("b", SPEC)
        await budget.reserve("b", SPEC)
        assert await budget.reserve("b", SPEC, max_wait_s=0.5) is None
        assert await budget.reserve("b", SPEC, max_wait_s=1.0) == pytest.approx(1.0)
        assert await budget.reserve("b", SPEC) == pytest.approx(2.0)

    async def test_shared_by_replicas_atomically(self, redis: Redis, keys: RedisKeys) -> None:
        """Two processes' budgets hammering one bucket at once hand out each slot exactly once."""
        clock = Clock()
        replicas = [RateBudget(redis, keys, clock=clock), RateBudget(redis, keys, clock=clock)]
        spec = BucketSpec(capacity=5, refill_per_s=10.0)
        waits = await asyncio.gather(*(replicas[i % 2].reserve("shared", spec) for i in range(60)))
        expected = [0.0] * 5 + [n / 10 for n in range(1, 56)]
        assert sorted(w for w in waits if w is not None) == pytest.approx(expected)

    async def test_buckets_are_independent_and_expire(self, redis: Redis, keys: RedisKeys) -> None:
        """Names do not share tokens, and a bucket's key carries a TTL (no Redis garbage)."""
        budget = RateBudget(redis, keys, clock=Clock())
        await budget.reserve("one", SPEC)
        await budget.reserve("one", SPEC)
        assert await budget.reserve("two", SPEC) == 0.0
        ttl_ms = await redis.pttl(keys.bucket("one"))
        assert 0 < ttl_ms <= 3000

    async def test_local_fallback_when_redis_is_down(self, keys: RedisKeys) -> None:
        """With Redis unreachable the budget still paces this process and says it is degraded; it
        asks Redis again only once the process's Redis circuit lets it (after the cool-down, or at
        once when another store's call succeeded), and goes back to Redis once it answers."""
        server = fakeredis.FakeServer()
        store = fakeredis.FakeAsyncRedis(server=server)
        clock = Clock()
        circuit_clock = Clock(0.0)
        try:
            budget = RateBudget(store, keys, clock=clock, circuit=RedisCircuit(clock=circuit_clock))
            server.connected = False
            waits = [await budget.reserve("b", SPEC) for _ in range(4)]
            assert waits == pytest.approx([0.0, 0.0, 1.0, 2.0])
            assert budget.degraded
            assert await budget.reserve("b", SPEC, max_wait_s=0.1) is None
            server.connected = True
            assert await budget.reserve("b", SPEC) == pytest.approx(3.0)  # not asked again yet
            circuit_clock.now += REDIS_COOL_DOWN_S
            assert await budget.reserve("b", SPEC) == 0.0  # Redis's own bucket again
            assert not budget.degraded
        finally:
            await store.aclose()


class TestEditPacing:
    """The bucket derived from Slack's published limit."""

    @pytest.mark.parametrize("pacing", [
        EditPacing(), EditPacing(per_window=20), EditPacing(per_window=2), EditPacing(window_s=1.0, burst=50),
    ])
    def test_no_window_exceeds_the_usable_budget(self, pacing: EditPacing) -> None:
        """burst + rate × window stays within the limit minus the headroom."""
        spec = pacing.bucket()
        usable = pacing.per_window * (1 - pacing.headroom)
        assert spec.capacity + spec.refill_per_s * pacing.window_s == pytest.approx(usable)
        assert spec.capacity <= usable / 2 or spec.capacity == 1

    def test_default_is_slacks_tier_3(self) -> None:
        """50 chat.update calls a minute, 45 spent, 10 of them as a burst (10 replies' final edits)."""
        spec = EditPacing().bucket()
        assert (spec.capacity, spec.refill_per_s) == (10, pytest.approx(35 / 60))

    async def test_pacer_sheds_in_progress_edits_but_not_final_ones(self, redis: Redis, keys: RedisKeys) -> None:
        """Past the shed horizon an in-progress edit is refused at once; a final one waits its turn."""
        pacing = EditPacing(per_window=4, window_s=0.2, headroom=0.0, burst=2, shed_after_s=0.01)
        pacer = WorkspacePacer(RateBudget(redis, keys), pacing, app_id="A1", team_id="T1")
        assert await pacer.wait_for_turn("chat.update", must_land=False)
        assert await pacer.wait_for_turn("chat.update", must_land=False)
        assert not await pacer.wait_for_turn("chat.update", must_land=False)
        assert await pacer.wait_for_turn("chat.update", must_land=True)  # waits ~0.1 s, then goes
        assert await redis.exists(keys.bucket("slack:A1:T1:chat.update"))

    async def test_hold_backs_off_every_replica(self, redis: Redis, keys: RedisKeys) -> None:
        """After one replica holds a method back by Retry-After, another replica's next turn is at
        least that far away, and an in-progress edit is shed; other methods are untouched."""
        clock = Clock()
        one = WorkspacePacer(RateBudget(redis, keys, clock=clock), EditPacing(), app_id="A1", team_id="T1")
        two = WorkspacePacer(RateBudget(redis, keys, clock=clock), EditPacing(), app_id="A1", team_id="T1")
        await one.hold("chat.update", 30.0)
        wait = await two.reserve("chat.update", must_land=True)
        assert wait is not None and wait >= 30.0
        assert await two.reserve("chat.update", must_land=False) is None
        assert await two.reserve("reactions.add", must_land=False) == 0.0

    async def test_posts_queue_per_channel(self, redis: Redis, keys: RedisKeys) -> None:
        """Every post takes its channel's turn (a burst, then one a second), so a busy channel gets
        no 429; other channels are not affected."""
        clock = Clock()
        pacing = EditPacing(posts_per_s=1.0, post_burst=3, headroom=0.0)
        budget = RateBudget(redis, keys, clock=clock)
        pacer = WorkspacePacer(budget, pacing, app_id="A1", team_id="T1")
        async with asyncio.timeout(0.5):  # the clock stands still: any wait would be a real second
            for _ in range(3):
                await pacer.wait_to_post("C1")
        assert await budget.reserve("slack:A1:T1:chat.postMessage:C1", pacing.post_bucket()) == pytest.approx(1.0)
        assert EditPacing().post_bucket().refill_per_s < 1.0, "by default posts keep under Slack's rate"
        assert await budget.reserve("slack:A1:T1:chat.postMessage:C2", pacing.post_bucket()) == 0.0

    async def test_edits_are_allocated_not_queued(self, redis: Redis, keys: RedisKeys) -> None:
        """Replies are admitted to grow by edits while a final edit is kept for each; the rest are
        told at once, and progress edits never take an admitted reply's final edit."""
        clock = Clock()
        pacing = EditPacing()
        replicas = [WorkspacePacer(RateBudget(redis, keys, clock=clock), pacing, app_id="A1", team_id="T1")
                    for _ in range(2)]
        admitted = [await replicas[i % 2].admit_edits("chat.update", f"r{i}") for i in range(12)]
        assert admitted.count(True) == int(pacing.bucket().capacity)
        assert admitted[-1] is False
        assert not await replicas[0].spare_turn("chat.update", "r0"), "every token is some reply's final edit"
        for i in range(int(pacing.bucket().capacity)):
            assert await replicas[1].reserve("chat.update", must_land=True) == 0.0  # final edits: at once
            await replicas[0].release_edits("chat.update", f"r{i}")
