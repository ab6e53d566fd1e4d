"""`RedisUsage`: prompt/completion tokens and requests per app ID, day (UTC) and model.

One hash per app ID and day; fields `<model>|requests`, `<model>|prompt_tokens`,
`<model>|completion_tokens`, `<model>|usage_unknown` (replies whose usage chunk was missing).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from core.redis_circuit import RedisCircuit
from core.redis_keys import RedisKeys
from core.types import Usage

log = structlog.get_logger(__name__)

USAGE_TTL_S = 400 * 24 * 3600  # a year of daily counters, plus a month of slack


@dataclass(frozen=True)
class UsageRow:
    """Totals of one app ID, day and model."""

    app_id: str
    day: str
    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    usage_unknown: int


def day_of(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")


class RedisUsage:
    """Records and reads usage counters."""

    def __init__(
        self, redis: Redis, keys: RedisKeys, *, wall_clock: Callable[[], float] = time.time,
        circuit: RedisCircuit | None = None,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._wall_clock = wall_clock
        self._circuit = circuit or RedisCircuit()

    async def record(self, app_id: str, model: str, usage: Usage | None) -> None:
        """Count one reply; a Redis failure is logged, never raised (usage must not cost a reply)."""
        name = self._keys.usage(app_id, day_of(self._wall_clock()))
        if self._circuit.is_open:
            log.warning("usage.not_recorded", error="Redis failed recently")
            return
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hincrby(name, f"{model}|requests", 1)
                if usage is None:
                    pipe.hincrby(name, f"{model}|usage_unknown", 1)
                else:
                    pipe.hincrby(name, f"{model}|prompt_tokens", usage.prompt_tokens)
                    pipe.hincrby(name, f"{model}|completion_tokens", usage.completion_tokens)
                pipe.expire(name, USAGE_TTL_S)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self._circuit.record_failure()
            log.warning("usage.not_recorded", error=type(exc).__name__)

    async def read(self, *, app_id: str | None = None, days: int = 7) -> list[UsageRow]:
        """Rows for the last `days` days (today included), newest day first."""
        today = datetime.fromtimestamp(self._wall_clock(), UTC).date()
        wanted_days = {(today - timedelta(days=n)).isoformat() for n in range(max(1, days))}
        if app_id is not None:
            names = [self._keys.usage(app_id, day) for day in sorted(wanted_days)]
        else:
            names = [
                k.decode() if isinstance(k, bytes) else str(k)
                async for k in self._redis.scan_iter(match=self._keys.usage_pattern(), count=500)
            ]
        rows: list[UsageRow] = []
        for name in names:
            parsed = self._keys.parse_usage(name)
            if parsed is None or parsed[1] not in wanted_days:
                continue
            fields = await self._redis.hgetall(name)
            per_model: dict[str, dict[str, int]] = {}
            for raw_field, raw_value in fields.items():
                field_name = raw_field.decode() if isinstance(raw_field, bytes) else str(raw_field)
                model, _, counter = field_name.rpartition("|")
                per_model.setdefault(model, {})[counter] = int(raw_value)
            for model, counters in per_model.items():
                rows.append(UsageRow(
                    app_id=parsed[0], day=parsed[1], model=model,
                    requests=counters.get("requests", 0),
                    prompt_tokens=counters.get("prompt_tokens", 0),
                    completion_tokens=counters.get("completion_tokens", 0),
                    usage_unknown=counters.get("usage_unknown", 0),
                ))
        rows.sort(key=lambda r: (r.day, r.app_id, r.model), reverse=True)
        return rows
