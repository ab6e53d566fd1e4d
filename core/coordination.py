"""`RedisCoordination`: event dedupe and per-conversation locks shared by every replica.

When Redis is down both degrade to this process alone (an in-memory dedupe window and asyncio
locks) rather than failing the turn: answering twice across replicas is better than not at all.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from redis.asyncio import Redis
from redis.exceptions import LockError, RedisError

from core.redis_circuit import RedisCircuit
from core.redis_keys import RedisKeys
from core.types import ConversationKey

log = structlog.get_logger(__name__)

EVENT_DEDUPE_TTL_S = 24 * 3600  # Slack retries for minutes, Discord redelivers on resume; a day is ample
LOCK_TIMEOUT_S = 300.0  # a turn's total deadline (180 s) plus rendering, so a crashed holder frees it
LOCK_WAIT_S = 290.0  # how long a turn waits for the previous one in its conversation
LOCK_POLL_S = 0.05  # redis-py's Lock polls; short so queued turns start promptly
LOCAL_DEDUPE_MAX = 10_000  # event ids remembered in memory while Redis is down


class RedisCoordination:
    """Dedupe and locks on Redis, falling back to this process when Redis fails."""

    def __init__(self, redis: Redis, keys: RedisKeys, circuit: RedisCircuit | None = None) -> None:
        self._redis = redis
        self._keys = keys
        self._circuit = circuit or RedisCircuit()
        self._local_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._local_events: OrderedDict[str, float] = OrderedDict()

    async def claim_event(self, bot: str, event_id: str) -> bool:
        name = self._keys.event(bot, event_id)
        if not self._claim_locally(name):
            return False
        if self._circuit.is_open:
            return True
        try:
            claimed = await self._redis.set(name, "1", nx=True, ex=EVENT_DEDUPE_TTL_S)
        except (RedisError, OSError) as exc:
            self._circuit.record_failure()
            log.warning("coordination.degraded", op="dedupe", error=type(exc).__name__)
            return True
        self._circuit.record_success()
        return bool(claimed)

    def _claim_locally(self, name: str) -> bool:
        now = time.monotonic()
        while self._local_events:
            oldest, at = next(iter(self._local_events.items()))
            if now - at < EVENT_DEDUPE_TTL_S and len(self._local_events) < LOCAL_DEDUPE_MAX:
                break
            del self._local_events[oldest]
        if name in self._local_events:
            return False
        self._local_events[name] = now
        return True

    @asynccontextmanager
    async def conversation_lock(self, bot: str, key: ConversationKey) -> AsyncIterator[None]:
        name = self._keys.lock(bot, key)
        local = self._local_locks.get(name)
        if local is None:
            local = asyncio.Lock()
            self._local_locks[name] = local
        # The local lock orders this process's turns FIFO; the Redis lock orders replicas.
        async with local:
            lock = self._redis.lock(
                name, timeout=LOCK_TIMEOUT_S, sleep=LOCK_POLL_S, blocking_timeout=LOCK_WAIT_S
            )
            acquired = False
            if not self._circuit.is_open:
                try:
                    acquired = bool(await lock.acquire())
                except (RedisError, OSError) as exc:
                    self._circuit.record_failure()
                    log.warning("coordination.degraded", op="lock", error=type(exc).__name__)
                if not acquired and not self._circuit.is_open:
                    log.warning("coordination.lock_not_acquired", conversation=str(key))
            try:
                yield
            finally:
                if acquired:
                    try:
                        await lock.release()
                    except (LockError, RedisError, OSError) as exc:
                        log.warning("coordination.lock_release_failed", error=type(exc).__name__)
