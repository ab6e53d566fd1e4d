"""`RateBudget`: token buckets in Redis, shared by every replica, for a platform's per-method budgets.

A platform budget such as Slack's ~50 `chat.update` calls a minute per workspace is shared by every
reply in every process. One Lua script per reservation keeps a bucket consistent across replicas in a
single atomic round trip. It reserves rather than polls: a caller takes a token even from an empty
bucket and is told how long to wait, so waiters queue first come, first served instead of all retrying
at once. A caller that would rather skip than queue (an in-progress edit) passes `max_wait_s` and gets
None, with nothing taken, when the queue is longer than that.

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
from dataclasses import dataclass

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from core.redis_keys import RedisKeys

log = structlog.get_logger(__name__)

# While Redis is down, ask it again this often rather than on every call: a failing call can take
# seconds (connect timeout, client retries), which would stall every paced edit.
REDIS_RETRY_INTERVAL_S = 5.0

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

    def __init__(self, redis: Redis, keys: RedisKeys, *, clock: Callable[[], float] = time.time) -> None:
        self._redis = redis
        self._keys = keys
        self._clock = clock
        self._script = redis.register_script(RESERVE_SCRIPT)
        self._hold_script = redis.register_script(HOLD_SCRIPT)
        self._local: dict[str, _LocalBucket] = {}
        self._degraded = False
        self._retry_redis_at = 0.0

    @property
    def degraded(self) -> bool:
        """True while Redis fails and buckets are kept in this process only."""
        return self._degraded

    async def reserve(self, name: str, spec: BucketSpec, *, max_wait_s: float | None = None) -> float | None:
        """Take one token of bucket `name`; returns how many seconds to wait before spending it.

        With `max_wait_s`, returns None instead (and takes nothing) when the wait would be longer.
        """
        now = self._clock()
        if self._degraded and now < self._retry_redis_at:
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
            if not self._degraded:
                log.warning("rate_budget.degraded", error=type(exc).__name__,
                            note="Redis failed: budgets are kept per process until it answers")
                self._degraded = True
            self._retry_redis_at = now + REDIS_RETRY_INTERVAL_S
            return self._reserve_here(name, spec, now, max_wait_s)
        if self._degraded:
            log.info("rate_budget.recovered")
            self._degraded = False
        return wait if granted else None

    async def hold(self, name: str, spec: BucketSpec, seconds: float) -> None:
        """The platform said "retry after `seconds`": the next reservation of `name`, by anyone,
        waits at least that long. One atomic round trip."""
        now = self._clock()
        if not (self._degraded and now < self._retry_redis_at):
            try:
                await self._hold_script(
                    keys=[self._keys.bucket(name)],
                    args=[repr(spec.capacity), repr(spec.refill_per_s), repr(now), repr(max(0.0, seconds))],
                )
                return
            except (RedisError, OSError) as exc:
                if not self._degraded:
                    log.warning("rate_budget.degraded", error=type(exc).__name__)
                    self._degraded = True
                self._retry_redis_at = now + REDIS_RETRY_INTERVAL_S
        bucket = self._local.setdefault(name, _LocalBucket(tokens=spec.capacity, at=now))
        _hold_locally(bucket, spec, now, max(0.0, seconds))

    def _reserve_here(
        self, name: str, spec: BucketSpec, now: float, max_wait_s: float | None
    ) -> float | None:
        bucket = self._local.setdefault(name, _LocalBucket(tokens=spec.capacity, at=now))
        return _reserve_locally(bucket, spec, now, max_wait_s)


def _parse_reply(reply: object) -> tuple[bool, float]:
    if not isinstance(reply, list | tuple) or len(reply) != 2:
        raise RedisError(f"unexpected reply from the bucket script: {reply!r}")
    granted, raw_wait = reply
    text = raw_wait.decode() if isinstance(raw_wait, bytes) else str(raw_wait)
    wait = float(text)
    if not math.isfinite(wait) or wait < 0:
        raise RedisError(f"unexpected wait from the bucket script: {text}")
    return bool(int(granted)), wait
