"""`RateBudget`: token buckets in Redis, shared by every replica, for a platform's per-method budgets.

A platform budget such as Slack's ~50 `chat.update` calls a minute per workspace is shared by every
reply in every process. One Lua script per reservation keeps a bucket consistent across replicas in a
single atomic round trip. It reserves rather than polls: a caller takes a token even from an empty
bucket and is told how long to wait, so waiters queue first come, first served instead of all retrying
at once. A caller that would rather skip than queue (an in-progress edit) passes `max_wait_s` and gets
None, with nothing taken, when the queue is longer than that.

Allocation on top of queueing: a budget too small for everyone (Slack's ~50 edits a minute for a
whole workspace) can be handed out as claims. `admit` gives a holder a claim only while the bucket
holds a token for every claim already out plus this one; `take_spare` spends a token only when one
is left over beyond those claims. So a claim's last call (a reply's final edit, via `reserve`) never
queues behind anyone's optional calls, and whoever is not admitted knows it at once and can do
without (post instead of edit). Claims expire unless renewed, so a crashed holder frees its claim.

When Redis fails the same arithmetic runs on a bucket in this process, so a replica alone still keeps
to the budget; replicas then no longer share it, and the platform's own 429s are the backstop.

Time is wall-clock seconds (`time.time`) passed in by the caller, not Redis's clock: replicas' clocks
agree to milliseconds (NTP), far below a bucket's refill interval, and tests can drive the clock.
This module is platform-neutral: it must not import adapters, bots or any platform library.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog
from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from core.redis_circuit import RedisCircuit
from core.redis_keys import RedisKeys

log = structlog.get_logger(__name__)


# Both scripts start here. KEYS[1]: the bucket, a hash {tokens, at}. ARGV: capacity, refill per
# second, now (s), then one argument of the script's own. Reads the bucket refilled up to `now`.
_REFILLED_BUCKET = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or capacity
local at = tonumber(state[2]) or now
if now > at then
  tokens = math.min(capacity, tokens + (now - at) * rate)
  at = now
end
"""
# Stores the bucket; the key expires once it would be full again, when dropping it changes nothing.
_STORE_BUCKET = """
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(at))
redis.call('PEXPIRE', KEYS[1], math.ceil((capacity - tokens) / rate * 1000) + 1000)
"""

# ARGV[4]: max wait (s, negative = unbounded). Tokens may go negative: that is the queue of
# reservations already handed out. Returns {1, wait} when a token was taken, {0, wait} when the wait
# exceeded the maximum (nothing taken).
RESERVE_SCRIPT = _REFILLED_BUCKET + """
local max_wait = tonumber(ARGV[4])
local wait = 0
if tokens - 1 < 0 then
  wait = (1 - tokens) / rate
end
if max_wait >= 0 and wait > max_wait then
  return {0, tostring(wait)}
end
tokens = tokens - 1
""" + _STORE_BUCKET + """
return {1, tostring(wait)}
"""

# ARGV[4]: hold (s). After a platform's 429 with Retry-After, empty the bucket deep enough that the
# next reservation waits at least `hold` seconds: every reply on every replica backs off at once.
# Never raises tokens (a deeper queue stays).
HOLD_SCRIPT = _REFILLED_BUCKET + """
local hold = tonumber(ARGV[4])
tokens = math.min(tokens, 1 - hold * rate)
""" + _STORE_BUCKET + """
return tostring(tokens)
"""


# KEYS[2]: the holders, a sorted set of holder → expiry (s). Drops expired claims, then counts.
_LIVE_HOLDERS = """
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local held = redis.call('ZCARD', KEYS[2])
local function claim(holder, expires)
  redis.call('ZADD', KEYS[2], expires, holder)
  redis.call('PEXPIRE', KEYS[2], math.ceil((expires - now) * 1000) + 1000)
end
"""

# ARGV[4]: holder, ARGV[5]: its claim's expiry (s). Returns 1 when the holder has a claim (renewed),
# 0 when the bucket cannot cover one more (nothing changes).
ADMIT_SCRIPT = _REFILLED_BUCKET + _LIVE_HOLDERS + """
local holder = ARGV[4]
local expires = tonumber(ARGV[5])
if redis.call('ZSCORE', KEYS[2], holder) then
  claim(holder, expires)
  return 1
end
if tokens < held + 1 then
  return 0
end
claim(holder, expires)
return 1
"""

# ARGV[4]: holder, ARGV[5]: expiry of its claim when renewed. Takes one token only when a token is
# left for every live claim (the caller's own included) afterwards: returns 1 (taken) or 0.
TAKE_SPARE_SCRIPT = _REFILLED_BUCKET + _LIVE_HOLDERS + """
local holder = ARGV[4]
if redis.call('ZSCORE', KEYS[2], holder) then
  claim(holder, tonumber(ARGV[5]))
end
if tokens - 1 < held then
  return 0
end
tokens = tokens - 1
""" + _STORE_BUCKET + """
return 1
"""


@dataclass(frozen=True)
class BucketSpec:
    """A bucket holding up to `capacity` tokens (the burst), refilled at `refill_per_s`.

    In any window of `w` seconds at most `capacity + refill_per_s * w` tokens are handed out.
    """

    capacity: float
    refill_per_s: float

    def __post_init__(self) -> None:
        if self.capacity < 1:
            raise ValueError(f"capacity must be at least 1 token, got {self.capacity}")
        if self.refill_per_s <= 0:
            raise ValueError(f"refill_per_s must be positive, got {self.refill_per_s}")


@dataclass
class _LocalBucket:
    tokens: float
    at: float
    holders: dict[str, float] = field(default_factory=dict)  # holder → claim expiry

    def refill(self, spec: BucketSpec, now: float) -> None:
        if now > self.at:
            self.tokens = min(spec.capacity, self.tokens + (now - self.at) * spec.refill_per_s)
            self.at = now

    def live_holders(self, now: float) -> int:
        for holder in [h for h, expires in self.holders.items() if expires <= now]:
            del self.holders[holder]
        return len(self.holders)


def _reserve_locally(
    bucket: _LocalBucket, spec: BucketSpec, now: float, max_wait_s: float | None
) -> float | None:
    """The Lua script's arithmetic on an in-process bucket (the fallback while Redis is down)."""
    tokens = bucket.tokens
    at = bucket.at
    if now > at:
        tokens = min(spec.capacity, tokens + (now - at) * spec.refill_per_s)
        at = now
    left = tokens - 1
    wait = -left / spec.refill_per_s if left < 0 else 0.0
    if max_wait_s is not None and wait > max_wait_s:
        return None
    bucket.tokens, bucket.at = left, at
    return wait


def _hold_locally(bucket: _LocalBucket, spec: BucketSpec, now: float, seconds: float) -> None:
    """The hold script's arithmetic on an in-process bucket."""
    if now > bucket.at:
        bucket.tokens = min(spec.capacity, bucket.tokens + (now - bucket.at) * spec.refill_per_s)
        bucket.at = now
    bucket.tokens = min(bucket.tokens, 1 - seconds * spec.refill_per_s)


class RateBudget:
    """Named token buckets under one key prefix; each name is one budget (e.g. one method in one
    workspace), shared by every process using the same Redis and prefix."""

    def __init__(
        self, redis: Redis, keys: RedisKeys, *, clock: Callable[[], float] = time.time,
        circuit: RedisCircuit | None = None,
    ) -> None:
        self._redis = redis
        # The process's one Redis circuit (shared with history, locks, the journal): while it is
        # open, buckets are kept here without paying a failing call each time.
        self._circuit = circuit or RedisCircuit()
        self._keys = keys
        self._clock = clock
        self._script = redis.register_script(RESERVE_SCRIPT)
        self._hold_script = redis.register_script(HOLD_SCRIPT)
        self._admit_script = redis.register_script(ADMIT_SCRIPT)
        self._spare_script = redis.register_script(TAKE_SPARE_SCRIPT)
        self._local: dict[str, _LocalBucket] = {}
        self._degraded = False

    @property
    def degraded(self) -> bool:
        """True while Redis fails and buckets are kept in this process only."""
        return self._degraded

    async def reserve(self, name: str, spec: BucketSpec, *, max_wait_s: float | None = None) -> float | None:
        """Take one token of bucket `name`; returns how many seconds to wait before spending it.

        With `max_wait_s`, returns None instead (and takes nothing) when the wait would be longer.
        """
        now = self._clock()
        if self._circuit.is_open:
            return self._reserve_here(name, spec, now, max_wait_s)
        key = self._keys.bucket(name)
        try:
            reply = await self._script(
                keys=[key],
                args=[repr(spec.capacity), repr(spec.refill_per_s), repr(now),
                      repr(-1.0 if max_wait_s is None else max_wait_s)],
            )
            granted, wait = _parse_reply(reply)
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return self._reserve_here(name, spec, now, max_wait_s)
        self._answered()
        return wait if granted else None

    async def hold(self, name: str, spec: BucketSpec, seconds: float) -> None:
        """The platform said "retry after `seconds`": the next reservation of `name`, by anyone,
        waits at least that long. One atomic round trip."""
        now = self._clock()
        if not self._circuit.is_open:
            try:
                await self._hold_script(
                    keys=[self._keys.bucket(name)],
                    args=[repr(spec.capacity), repr(spec.refill_per_s), repr(now), repr(max(0.0, seconds))],
                )
                self._answered()
                return
            except (RedisError, OSError) as exc:
                self._failed(exc)
        bucket = self._local.setdefault(name, _LocalBucket(tokens=spec.capacity, at=now))
        _hold_locally(bucket, spec, now, max(0.0, seconds))

    async def admit(self, name: str, spec: BucketSpec, holder: str, *, ttl_s: float) -> bool:
        """Give `holder` a claim on one future token of `name` (or renew its claim) for `ttl_s`,
        if the bucket covers every claim out plus this one. One atomic round trip."""
        now = self._clock()
        reply = await self._allocation(self._admit_script, name, spec, now, holder, ttl_s)
        if reply is None:
            bucket = self._bucket_here(name, spec, now)
            bucket.refill(spec, now)
            held = bucket.live_holders(now)
            if holder not in bucket.holders and bucket.tokens < held + 1:
                return False
            bucket.holders[holder] = now + ttl_s
            return True
        return bool(reply)

    async def take_spare(self, name: str, spec: BucketSpec, holder: str, *, ttl_s: float) -> bool:
        """Spend one token of `name` now, only if one is left for every claim afterwards; renews
        `holder`'s claim when it has one. Never waits. One atomic round trip."""
        now = self._clock()
        reply = await self._allocation(self._spare_script, name, spec, now, holder, ttl_s)
        if reply is None:
            bucket = self._bucket_here(name, spec, now)
            bucket.refill(spec, now)
            held = bucket.live_holders(now)
            if holder in bucket.holders:
                bucket.holders[holder] = now + ttl_s
            if bucket.tokens - 1 < held:
                return False
            bucket.tokens -= 1
            return True
        return bool(reply)

    async def release(self, name: str, holder: str) -> None:
        """`holder` needs its claim no more (its last call was made, or it never will be)."""
        self._local.get(name, _LocalBucket(0.0, 0.0)).holders.pop(holder, None)
        if self._circuit.is_open:
            return
        try:
            await self._redis.zrem(self._keys.bucket_holders(name), holder)
        except (RedisError, OSError) as exc:
            log.info("rate_budget.release_failed", error=type(exc).__name__,
                     note="the claim expires by itself")

    async def _allocation(
        self, script: AsyncScript, name: str, spec: BucketSpec, now: float, holder: str, ttl_s: float
    ) -> int | None:
        """Run an allocation script; None while Redis is down (the caller runs it here instead)."""
        if self._circuit.is_open:
            return None
        try:
            reply = await script(
                keys=[self._keys.bucket(name), self._keys.bucket_holders(name)],
                args=[repr(spec.capacity), repr(spec.refill_per_s), repr(now), holder, repr(now + ttl_s)],
            )
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return None
        self._answered()
        return int(reply)

    def _failed(self, exc: BaseException) -> None:
        self._circuit.record_failure()
        if not self._degraded:
            log.warning("rate_budget.degraded", error=type(exc).__name__,
                        note="Redis failed: budgets are kept per process until it answers")
            self._degraded = True

    def _answered(self) -> None:
        self._circuit.record_success()
        if self._degraded:
            log.info("rate_budget.recovered")
            self._degraded = False

    def _bucket_here(self, name: str, spec: BucketSpec, now: float) -> _LocalBucket:
        return self._local.setdefault(name, _LocalBucket(tokens=spec.capacity, at=now))

    def _reserve_here(
        self, name: str, spec: BucketSpec, now: float, max_wait_s: float | None
    ) -> float | None:
        return _reserve_locally(self._bucket_here(name, spec, now), spec, now, max_wait_s)


def _parse_reply(reply: object) -> tuple[bool, float]:
    if not isinstance(reply, list | tuple) or len(reply) != 2:
        raise RedisError(f"unexpected reply from the bucket script: {reply!r}")
    granted, raw_wait = reply
    text = raw_wait.decode() if isinstance(raw_wait, bytes) else str(raw_wait)
    wait = float(text)
    if not math.isfinite(wait) or wait < 0:
        raise RedisError(f"unexpected wait from the bucket script: {text}")
    return bool(int(granted)), wait
