"""`MessageIndex`: which conversation a platform message belongs to, remembered in Redis.

A reply to one of the bot's messages continues that message's conversation — after a restart, and
on whichever replica or shard receives the reply — because the adapter remembers every message it
posts (and the message that asked) as `SET key conversation EX ttl`. Adapters choose the `ref`
strings (platform-qualified, e.g. `discord:msg:<id>`); this module never interprets them.

Platform-neutral: it must not import adapters, bots or any platform library. Redis trouble is
logged and degrades to "unknown" (the adapter then falls back to what the platform event says),
never to a failed turn.
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from core.redis_circuit import RedisCircuit
from core.redis_keys import RedisKeys
from core.types import ConversationKey

log = structlog.get_logger(__name__)


class MessageIndex:
    """Message ref → conversation, per bot, for as long as the conversation's history lives."""

    def __init__(
        self, redis: Redis, keys: RedisKeys, *, ttl_s: int, circuit: RedisCircuit | None = None,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be positive, got {ttl_s}")
        self._redis = redis
        self._keys = keys
        self._ttl_s = ttl_s
        self._circuit = circuit or RedisCircuit()  # the process's one circuit, shared by every store

    async def remember(self, bot: str, refs: Sequence[str], conversation: ConversationKey) -> None:
        """Map every ref to `conversation` in one round trip; later writes win."""
        if not refs or self._circuit.is_open:
            return
        value = conversation.to_json()
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for ref in refs:
                    pipe.set(self._keys.message_conversation(bot, ref), value, ex=self._ttl_s)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self._circuit.record_failure()
            log.warning("message_index.degraded", op="remember", error=type(exc).__name__)
            return
        self._circuit.record_success()

    async def conversation_of(self, bot: str, ref: str) -> ConversationKey | None:
        """The conversation `ref` was remembered in, or None (unknown, expired or Redis down)."""
        if self._circuit.is_open:
            return None
        try:
            raw = await self._redis.get(self._keys.message_conversation(bot, ref))
        except (RedisError, OSError) as exc:
            self._circuit.record_failure()
            log.warning("message_index.degraded", op="lookup", error=type(exc).__name__)
            return None
        self._circuit.record_success()
        return None if raw is None else ConversationKey.from_json(raw)
