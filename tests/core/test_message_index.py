"""`core.message_index.MessageIndex` on real Redis: remember, look up, expire, degrade.

(Platform-neutral; it lives here because the Discord adapter is its first user.)"""

from __future__ import annotations

import socket

from redis.asyncio import Redis

from core.message_index import MessageIndex
from core.redis_keys import RedisKeys
from core.types import ConversationKey

CHAIN = ConversationKey("discord", "2000", "3000", "42")


class TestMessageIndex:
    """Message ref → conversation."""

    async def test_remember_and_look_up(self, redis: Redis, keys: RedisKeys) -> None:
        """Every ref maps to the conversation, per bot, with the TTL set."""
        index = MessageIndex(redis, keys, ttl_s=600)
        await index.remember("bot-a", ["discord:msg:1", "discord:msg:2"], CHAIN)
        assert await index.conversation_of("bot-a", "discord:msg:1") == CHAIN
        assert await index.conversation_of("bot-a", "discord:msg:2") == CHAIN
        assert await index.conversation_of("bot-b", "discord:msg:1") is None
        assert await index.conversation_of("bot-a", "discord:msg:3") is None
        assert 0 < await redis.ttl(keys.message_conversation("bot-a", "discord:msg:1")) <= 600

    async def test_later_write_wins(self, redis: Redis, keys: RedisKeys) -> None:
        """Remembering a ref again moves it (the user's latest chain)."""
        index = MessageIndex(redis, keys, ttl_s=600)
        other = ConversationKey("discord", "2000", "3000", "99")
        await index.remember("bot", ["discord:latest:3000:5000"], CHAIN)
        await index.remember("bot", ["discord:latest:3000:5000"], other)
        assert await index.conversation_of("bot", "discord:latest:3000:5000") == other

    async def test_malformed_value_is_unknown(self, redis: Redis, keys: RedisKeys) -> None:
        """Garbage under a key reads as "unknown", not as an error."""
        await redis.set(keys.message_conversation("bot", "discord:msg:1"), "{not json")
        assert await MessageIndex(redis, keys, ttl_s=60).conversation_of("bot", "discord:msg:1") is None

    async def test_redis_down_degrades_quietly(self, keys: RedisKeys) -> None:
        """Nothing raises when Redis is unreachable; lookups say "unknown"."""
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        dead: Redis = Redis.from_url(f"redis://127.0.0.1:{port}/0", socket_connect_timeout=0.5)
        try:
            index = MessageIndex(dead, keys, ttl_s=60)
            await index.remember("bot", ["discord:msg:1"], CHAIN)
            assert await index.conversation_of("bot", "discord:msg:1") is None
        finally:
            await dead.aclose()

    def test_encoding_round_trip(self) -> None:
        """Keys with and without a thread survive encoding; wrong shapes decode to None."""
        for key in (CHAIN, ConversationKey("discord", "dm", "9000")):
            assert ConversationKey.from_json(key.to_json()) == key
        for raw in ('[]', '{"platform": "discord"}', '{"platform":"d","workspace":"w","channel":"c","thread":5}'):
            assert ConversationKey.from_json(raw) is None
