"""`RedisHistory`: conversation turns as a Redis list of JSON, one key per conversation.

Save is RPUSH + LTRIM + EXPIRE in one MULTI; load is one LRANGE. Redis errors become
`HistoryUnavailable`; the engine decides to go on without history. With a `WriteBehind`, a save
Redis cannot take is kept and replayed in order once it answers (before this store's next read or
write), so a turn answered during an outage is not lost.
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
from core.write_behind import WriteBehind

# KEYS[1]: a history list. ARGV: reply id, new content. Rewrites the answer stored with that reply
# id (newest first), in place; returns 1, or 0 when it is not there (trimmed, expired, reset).
REVISE_SCRIPT = """
local items = redis.call('LRANGE', KEYS[1], 0, -1)
for i = #items, 1, -1 do
  local ok, turn = pcall(cjson.decode, items[i])
  if ok and type(turn) == 'table' and turn['reply'] == ARGV[1] then
    turn['content'] = ARGV[2]
    redis.call('LSET', KEYS[1], i - 1, cjson.encode(turn))
    return 1
  end
end
return 0
"""


class RedisHistory:
    """History of one bot's conversations within `limits`."""

    def __init__(
        self, redis: Redis, keys: RedisKeys, limits: HistoryLimits, circuit: RedisCircuit | None = None,
        *, bot: str, write_behind: WriteBehind | None = None,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._limits = limits
        self._circuit = circuit or RedisCircuit()
        self._bot = bot
        self._write_behind = write_behind
        self._revise = redis.register_script(REVISE_SCRIPT)

    async def revise(self, key: ConversationKey, reply: str, content: str) -> bool:
        """Replace the stored answer of journal reply `reply` with `content` (what the user saw)."""
        await self._catch_up()
        self._skip_if_down("revise")
        try:
            found = await self._revise(keys=[self._keys.history(self._bot, key)], args=[reply, content])
        except (RedisError, OSError) as exc:
            raise self._failed("revise", exc) from exc
        return bool(found)

    async def _catch_up(self) -> None:
        """Replay saves an outage held back, so what follows reads and writes after them."""
        if self._write_behind is not None and len(self._write_behind):
            await self._write_behind.flush()

    def _skip_if_down(self, op: str) -> None:
        if self._circuit.is_open:
            raise HistoryUnavailable(f"cannot {op} history: Redis failed recently")

    def _failed(self, op: str, exc: Exception) -> HistoryUnavailable:
        self._circuit.record_failure()
        return HistoryUnavailable(f"cannot {op} history: {type(exc).__name__}")

    async def load(self, key: ConversationKey) -> list[Turn]:
        await self._catch_up()
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
        payload = [t.to_json() for t in turns]

        marker = self._keys.reset_marker(self._bot, key)

        async def save() -> int:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.rpush(name, *payload)
                pipe.ltrim(name, -self._limits.max_messages, -1)
                pipe.expire(name, self._limits.ttl_s)
                # A reset is remembered as long as the conversation is: the engine never re-seeds a
                # conversation a user reset (no-op when it was never reset).
                pipe.expire(marker, self._limits.ttl_s)
                length, _, _, _ = await pipe.execute()
            return max(0, int(length) - self._limits.max_messages)

        await self._catch_up()
        if self._write_behind is not None and (self._circuit.is_open or len(self._write_behind)):
            self._write_behind.defer("history", save)  # behind what already waits, in order
            return 0
        self._skip_if_down("save")
        try:
            return await save()
        except (RedisError, OSError) as exc:
            if self._write_behind is None:
                raise self._failed("save", exc) from exc
            self._circuit.record_failure()
            self._write_behind.defer("history", save)
            return 0

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
        await self._catch_up()
        self._skip_if_down("read")
        names = [self._keys.history(self._bot, key), self._keys.reset_marker(self._bot, key)]
        if or_in_progress:
            names.append(self._keys.lock(self._bot, key))  # held while a turn is answered
        try:
            found = await self._redis.exists(*names)  # one slot: both keys share the hash tag
        except (RedisError, OSError) as exc:
            raise self._failed("read", exc) from exc
        return int(found) > 0
