"""`RedisUsage`: prompt/completion tokens and requests per app ID, day (UTC) and model.

One hash per app ID and day; fields `<model>|requests`, `<model>|prompt_tokens`,
`<model>|completion_tokens`, `<model>|usage_unknown` (replies whose usage chunk was missing),
`<model>|fallbacks` (replies a fallback model answered; counted under the model that answered),
`<model>|failures` (turns no model could answer; under the bot's primary model) and
`<model>|refused:<limit>` (turns refused by a `[limits]` limit; under the primary model), and
`<model>|feedback_up` / `<model>|feedback_down` (👍 / 👎 on answers that model wrote, on the vote's
day; `core.feedback`).
The daily token budget (`core.limits`) reads the same hash, so it and `lunos-bots usage` agree.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from core.redis_circuit import RedisCircuit
from core.redis_keys import RedisKeys
from core.types import Usage
from core.write_behind import WriteBehind

log = structlog.get_logger(__name__)

USAGE_TTL_S = 400 * 24 * 3600  # a year of daily counters, plus a month of slack
REFUSED_PREFIX = "refused:"  # a counter `refused:<limit>`


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
    fallbacks: int = 0
    failures: int = 0
    refusals: Mapping[str, int] = field(default_factory=dict)  # limit → turns refused
    feedback_up: int = 0  # 👍 on this model's answers, voted this day
    feedback_down: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_json(self) -> dict[str, Any]:
        return {
            "app_id": self.app_id, "day": self.day, "model": self.model, "requests": self.requests,
            "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens, "usage_unknown": self.usage_unknown,
            "fallbacks": self.fallbacks, "failures": self.failures,
            "refusals": dict(sorted(self.refusals.items())),
            "feedback_up": self.feedback_up, "feedback_down": self.feedback_down,
        }


COUNTERS = ("requests", "prompt_tokens", "completion_tokens", "total_tokens", "usage_unknown", "fallbacks",
            "failures", "feedback_up", "feedback_down")


def usage_document(rows: Sequence[UsageRow], *, days: int, app_id: str | None, today: str) -> dict[str, Any]:
    """`lunos-bots usage --json`: the rows, plus totals per app ID and overall (README "Usage")."""

    def total(selected: Sequence[UsageRow]) -> dict[str, Any]:
        sums: dict[str, Any] = {name: 0 for name in COUNTERS}
        refusals: dict[str, int] = {}
        for row in selected:
            data = row.as_json()
            for name in COUNTERS:
                sums[name] += data[name]
            for limit, count in row.refusals.items():
                refusals[limit] = refusals.get(limit, 0) + count
        sums["refusals"] = dict(sorted(refusals.items()))
        return sums

    apps = sorted({r.app_id for r in rows})
    return {
        "days": days, "until": today, "app_id": app_id,
        "rows": [r.as_json() for r in rows],
        "apps": {a: total([r for r in rows if r.app_id == a]) for a in apps},
        "totals": total(rows),
    }


def day_of(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")


class RedisUsage:
    """Records and reads usage counters."""

    def __init__(
        self, redis: Redis, keys: RedisKeys, *, wall_clock: Callable[[], float] = time.time,
        circuit: RedisCircuit | None = None, write_behind: WriteBehind | None = None,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._wall_clock = wall_clock
        self._circuit = circuit or RedisCircuit()
        # With it, counts Redis cannot take wait and are replayed (under the day they happened).
        self._write_behind = write_behind

    async def record(self, app_id: str, model: str, usage: Usage | None, *, fallback: bool = False) -> None:
        """Count one reply; a Redis failure is logged, never raised (usage must not cost a reply)."""
        counts = {"requests": 1}
        if usage is None:
            counts["usage_unknown"] = 1
        else:
            counts["prompt_tokens"] = usage.prompt_tokens
            counts["completion_tokens"] = usage.completion_tokens
        if fallback:
            counts["fallbacks"] = 1
        await self._count(app_id, model, counts)

    async def record_failure(self, app_id: str, model: str) -> None:
        """Count a turn no model could answer (`model`: the bot's primary model)."""
        await self._count(app_id, model, {"failures": 1})

    async def record_refusal(self, app_id: str, model: str, limit: str) -> None:
        """Count a turn refused by `limit` (`model`: the bot's primary model)."""
        await self._count(app_id, model, {REFUSED_PREFIX + limit: 1})

    async def _count(self, app_id: str, model: str, counts: Mapping[str, int]) -> None:
        name = self._keys.usage(app_id, day_of(self._wall_clock()))

        async def write() -> None:
            async with self._redis.pipeline(transaction=True) as pipe:
                for counter, amount in counts.items():
                    pipe.hincrby(name, f"{model}|{counter}", amount)
                pipe.expire(name, USAGE_TTL_S)
                await pipe.execute()

        buffer = self._write_behind
        if buffer is not None and len(buffer):
            await buffer.flush()
        if self._circuit.is_open or (buffer is not None and len(buffer)):
            if buffer is not None:
                buffer.defer("usage", write)
            else:
                log.warning("usage.not_recorded", error="Redis failed recently")
            return
        try:
            await write()
        except (RedisError, OSError) as exc:
            self._circuit.record_failure()
            if buffer is not None:
                buffer.defer("usage", write)
            else:
                log.warning("usage.not_recorded", error=type(exc).__name__)

    async def tokens_on(self, app_id: str, day: str) -> int:
        """Prompt plus completion tokens `app_id` spent on `day`, every model together; 0 when Redis
        cannot say (a budget must not refuse everyone during an outage)."""
        if self._circuit.is_open:
            return 0
        try:
            fields = await self._redis.hgetall(self._keys.usage(app_id, day))
        except (RedisError, OSError) as exc:
            self._circuit.record_failure()
            log.warning("usage.budget_unknown", error=type(exc).__name__)
            return 0
        spent = 0
        for raw_field, raw_value in fields.items():
            field_name = raw_field.decode() if isinstance(raw_field, bytes) else str(raw_field)
            if field_name.endswith(("|prompt_tokens", "|completion_tokens")):
                spent += int(raw_value)
        return spent

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
                    fallbacks=counters.get("fallbacks", 0),
                    failures=counters.get("failures", 0),
                    feedback_up=counters.get("feedback_up", 0),
                    feedback_down=counters.get("feedback_down", 0),
                    refusals={k.removeprefix(REFUSED_PREFIX): v for k, v in counters.items()
                              if k.startswith(REFUSED_PREFIX)},
                ))
        rows.sort(key=lambda r: (r.day, r.app_id, r.model), reverse=True)
        return rows
