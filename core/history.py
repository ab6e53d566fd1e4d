"""`RedisHistory`: conversation turns as a Redis list of JSON, one key per conversation.

Save is RPUSH + LTRIM + EXPIRE in one MULTI; load is one LRANGE. Redis errors become
`HistoryUnavailable`; the engine decides to go on without history.
"""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis
from redis.exceptions import RedisError

from core.errors import HistoryUnavailable
from core.profile import HistoryLimits
from core.redis_circuit import RedisCircuit
from core.redis_keys import RedisKeys
from core.types import ConversationKey, Turn


class RedisHistory:
    """History of one bot's conversations within `limits`."""

    def __init__(
        self, redis: Redis, keys: RedisKeys, limits: HistoryLimits, circuit: RedisCircuit | None = None,
        *, bot: str,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._limits = limits
        self._circuit = circuit or RedisCircuit()
        self._bot = bot

    def _skip_if_down(self, op: str) -> None:
        if self._circuit.is_open:
            raise HistoryUnavailable(f"cannot {op} history: Redis failed recently")

    def _failed(self, op: str, exc: Exception) -> HistoryUnavailable:
        self._circuit.record_failure()
        return HistoryUnavailable(f"cannot {op} history: {type(exc).__name__}")

    async def load(self, key: ConversationKey) -> list[Turn]:
        self._skip_if_down("load")
        try:
            raw = await self._redis.lrange(self._keys.history(self._bot, key), -self._limits.max_messages, -1)
        except (RedisError, OSError) as exc:
            raise self._failed("load", exc) from exc
        self._circuit.record_success()
        turns = [Turn.from_json(item) for item in raw]
        return [t for t in turns if t is not None]

    async def append(self, key: ConversationKey, turns: Sequence[Turn]) -> int:
        if not turns:
            return 0
        name = self._keys.history(self._bot, key)
        self._skip_if_down("save")
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.rpush(name, *(t.to_json() for t in turns))
                pipe.ltrim(name, -self._limits.max_messages, -1)
                pipe.expire(name, self._limits.ttl_s)
                length, _, _ = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise self._failed("save", exc) from exc
        return max(0, int(length) - self._limits.max_messages)

    async def clear(self, key: ConversationKey) -> None:
        self._skip_if_down("clear")
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(self._keys.history(self._bot, key))
                pipe.set(self._keys.reset_marker(self._bot, key), "1", ex=self._limits.ttl_s)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise self._failed("clear", exc) from exc

    async def exists(self, key: ConversationKey, *, or_in_progress: bool = False) -> bool:
        self._skip_if_down("read")
        names = [self._keys.history(self._bot, key), self._keys.reset_marker(self._bot, key)]
        if or_in_progress:
            names.append(self._keys.lock(self._bot, key))  # held while a turn is answered
        try:
            found = await self._redis.exists(*names)  # one slot: both keys share the hash tag
        except (RedisError, OSError) as exc:
            raise self._failed("read", exc) from exc
        return int(found) > 0
