"""`WriteBehind`: the writes a Redis outage would lose, kept in this process and replayed in order.

While Redis is down (or the shared circuit is open) a turn is still answered; its history append
and its usage counts cannot be written. They wait here, oldest first, and are replayed as soon as
Redis answers again: by the next store call that finds the buffer non-empty (before its own read or
write, so a conversation's turns land in the order they were answered and a read sees them), or by
`run`'s periodic attempt. Past `max_items` the oldest are dropped, each with a log line and counted
in `dropped`. One per process, shared by every store; platform-neutral.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable

import structlog
from redis.exceptions import RedisError

from core.redis_circuit import RedisCircuit

log = structlog.get_logger(__name__)

WRITE_BEHIND_MAX_ITEMS = 10_000  # about 10,000 turns' appends; the oldest go first beyond that
WRITE_BEHIND_RETRY_S = 1.0  # how often `run` tries to replay while writes wait

Write = Callable[[], Awaitable[object]]


class WriteBehind:
    """Deferred writes, replayed first come, first served."""

    def __init__(self, circuit: RedisCircuit, *, max_items: int = WRITE_BEHIND_MAX_ITEMS) -> None:
        self._circuit = circuit
        self._max_items = max_items
        self._writes: deque[tuple[str, Write]] = deque()
        self._lock = asyncio.Lock()  # one replay at a time keeps the order
        self._empty = asyncio.Event()
        self._empty.set()
        self.dropped = 0
        self.replayed = 0

    def __len__(self) -> int:
        return len(self._writes)

    def defer(self, what: str, write: Write) -> None:
        """Keep `write` (e.g. "history" or "usage") for when Redis answers again."""
        self._writes.append((what, write))
        self._empty.clear()
        while len(self._writes) > self._max_items:
            lost, _ = self._writes.popleft()
            self.dropped += 1
            log.error("write_behind.dropped", what=lost, bound=self._max_items,
                      note="Redis has been down too long: the oldest unsaved write is lost")
        if len(self._writes) == 1:
            log.warning("write_behind.buffering", what=what, note="Redis is down: writes wait in memory")

    async def flush(self) -> bool:
        """Replay what waits, in order; True when nothing waits any more. Stops at the first
        failure (the circuit opens again) and keeps the rest."""
        if not self._writes:
            return True
        if self._circuit.is_open:
            return False
        async with self._lock:
            while self._writes:
                what, write = self._writes[0]
                try:
                    await write()
                except (RedisError, OSError) as exc:
                    self._circuit.record_failure()
                    log.warning("write_behind.replay_failed", what=what, error=type(exc).__name__,
                                waiting=len(self._writes))
                    return False
                self._writes.popleft()
                self.replayed += 1
            self._empty.set()
            self._circuit.record_success()
            log.info("write_behind.replayed", total=self.replayed)
        return True

    async def drained(self) -> None:
        """Until nothing waits (tests, and a graceful stop that wants its writes out)."""
        await self._empty.wait()

    async def run(self, interval_s: float = WRITE_BEHIND_RETRY_S) -> None:
        """Replay whenever something waits and Redis may answer; until cancelled."""
        while True:
            await asyncio.sleep(interval_s)
            if self._writes:
                await self.flush()
