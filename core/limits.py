"""`TurnLimiter`: per-user limits and a per-app daily token budget, enforced in Redis across replicas.

Four limits, each off at 0 (the `[limits]` table of a bot definition; `TurnLimits` holds its defaults):
- `user_turns_in_flight`: answers one user may have in progress with one bot at once;
- `user_turns_per_minute`: turns one user may start with one bot in any 60 s (a sliding window);
- `max_input_chars`: a longer message is refused, never silently truncated;
- `daily_tokens`: tokens one app ID may spend per UTC day, as the chat API reported them (the same
  counters `lunos-bots usage` reads, so the budget and the report never disagree).

The two per-user limits are one Lua script over two keys that share a hash tag (one Cluster slot),
so two replicas admitting the same user's messages at the same moment cannot both slip past a limit.
An admitted turn holds an in-flight slot until it ends (`Admission.release`); a slot a crashed
replica never released lapses after `IN_FLIGHT_LEASE_S`.

When Redis fails the same arithmetic runs in this process (replicas then count separately), like
every other Redis-backed store: a Redis outage must not refuse every user.

Platform-neutral: it must not import adapters, bots or any platform library.
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from core.ports import ReplySink
from core.redis_circuit import RedisCircuit
from core.redis_keys import RedisKeys
from core.types import IncomingMessage
from core.usage import RedisUsage, day_of

log = structlog.get_logger(__name__)

DEFAULT_USER_TURNS_IN_FLIGHT = 2  # a follow-up while the first answer streams is normal; 60 at once is not
DEFAULT_USER_TURNS_PER_MINUTE = 10  # a fast typist's pace; a script's is far above it
DEFAULT_MAX_INPUT_CHARS = 8000  # ~2,000 tokens: a long question with a pasted log, within max_prompt_tokens
DEFAULT_DAILY_TOKENS = 0  # no budget unless one is set
RATE_WINDOW_S = 60.0  # `user_turns_per_minute` counts turns started in the last minute
# A slot is held for at most a turn's total deadline (180 s) plus rendering, like the conversation
# lock: a replica that dies mid-turn frees its user's slot by then.
IN_FLIGHT_LEASE_S = 300.0
LOCAL_USERS_MAX = 10_000  # users tracked in memory while Redis is down

LimitName = str  # one of LIMIT_NAMES
LIMIT_NAMES = ("user_turns_in_flight", "user_turns_per_minute", "max_input_chars", "daily_tokens")

# KEYS[1]: the user's turns in flight, a sorted set turn → lease expiry (s). KEYS[2]: the user's turns
# started in the window, a sorted set turn → start (s). ARGV: now, turn id, max in flight, max per
# window, window (s), lease (s); a max of 0 is no limit. Returns {0, 0} when admitted (the turn is
# counted in both sets), {1, 0} over the in-flight limit, {2, wait} over the rate limit.
ADMIT_SCRIPT = """
local now = tonumber(ARGV[1])
local turn = ARGV[2]
local max_in_flight = tonumber(ARGV[3])
local per_window = tonumber(ARGV[4])
local window = tonumber(ARGV[5])
local lease = tonumber(ARGV[6])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
if max_in_flight > 0 and redis.call('ZCARD', KEYS[1]) >= max_in_flight then
  return {1, '0'}
end
if per_window > 0 then
  if redis.call('ZCARD', KEYS[2]) >= per_window then
    local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
    return {2, tostring(tonumber(oldest[2]) + window - now)}
  end
  redis.call('ZADD', KEYS[2], now, turn)
  redis.call('PEXPIRE', KEYS[2], math.ceil(window * 1000) + 1000)
end
if max_in_flight > 0 then
  redis.call('ZADD', KEYS[1], now + lease, turn)
  redis.call('PEXPIRE', KEYS[1], math.ceil(lease * 1000) + 1000)
end
return {0, '0'}
"""


@dataclass(frozen=True)
class TurnLimits:
    """A bot's `[limits]` table. Each limit is off at 0."""

    user_turns_in_flight: int = DEFAULT_USER_TURNS_IN_FLIGHT
    user_turns_per_minute: int = DEFAULT_USER_TURNS_PER_MINUTE
    max_input_chars: int = DEFAULT_MAX_INPUT_CHARS
    daily_tokens: int = DEFAULT_DAILY_TOKENS


@dataclass(frozen=True)
class Refusal:
    """A turn refused by `limit`; `retry_after_s` is when trying again can succeed (None: when an
    answer in progress has finished, or at once with a shorter message)."""

    limit: LimitName
    value: int  # the limit's setting, for the message
    retry_after_s: float | None = None
    actual: int = 0  # the message's length, for `max_input_chars`

    @property
    def text(self) -> str:
        """The one short message the user sees: which limit, and when to try again."""
        if self.limit == "user_turns_in_flight":
            answers = "answer" if self.value == 1 else "answers"
            return (f"You already have {self.value} {answers} in progress with me (limit: "
                    "user_turns_in_flight). Please ask again once one has finished.")
        if self.limit == "user_turns_per_minute":
            return (f"You've sent me {self.value} messages in the last minute (limit: "
                    f"user_turns_per_minute). Please try again in {_duration(self.retry_after_s)}.")
        if self.limit == "max_input_chars":
            return (f"Your message is {self.actual:,} characters long; I accept at most {self.value:,} "
                    "(limit: max_input_chars). Please shorten it and send it again.")
        return (f"I've used today's budget of {self.value:,} tokens (limit: daily_tokens). It resets at "
                f"00:00 UTC; please try again in {_duration(self.retry_after_s)}.")

    async def deliver(self, sink: ReplySink) -> None:
        """Post the message in place (a thread reply, a Discord reply) and end the reply; a platform
        failure is logged, not raised (nothing else was going to be shown)."""
        try:
            await sink.post(self.text)
        except Exception as exc:  # the refusal is a courtesy; its failure must not crash the adapter
            log.warning("limits.refusal_not_shown", limit=self.limit, error=repr(exc))
        try:
            await sink.finish()
        except Exception as exc:
            log.warning("limits.refusal_not_finished", limit=self.limit, error=repr(exc))


def _duration(seconds: float | None) -> str:
    total = max(1, int(seconds + 0.999)) if seconds is not None else 1
    if total < 90:
        return f"{total} s"
    if total < 3600:
        return f"{(total + 59) // 60} min"
    hours, minutes = divmod((total + 59) // 60, 60)
    return f"{hours} h {minutes} min"


@dataclass
class Admission:
    """An admitted turn. It holds one of its user's in-flight slots until `release`."""

    limiter: TurnLimiter
    user_key: str  # this process's counters
    slot_key: str  # the Redis sorted set of the user's turns in flight
    turn: str
    local: bool  # counted in this process (Redis was down)
    released: bool = False

    async def release(self) -> None:
        if not self.released:
            self.released = True
            await self.limiter.release(self)


@dataclass
class _LocalUser:
    in_flight: dict[str, float] = field(default_factory=dict)  # turn → lease expiry
    started: deque[float] = field(default_factory=deque)  # start times within the window


class TurnLimiter:
    """The limits of one bot (`bot`, spending `app_id`'s budget), shared by every replica through Redis."""

    def __init__(
        self, redis: Redis, keys: RedisKeys, limits: TurnLimits, *, bot: str, app_id: str, model: str,
        usage: RedisUsage, circuit: RedisCircuit | None = None,
        on_refusal: Callable[[str, LimitName], None] | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.limits = limits
        self._redis = redis
        self._keys = keys
        self._bot = bot
        self._app_id = app_id
        self._model = model
        self._usage = usage
        self._circuit = circuit or RedisCircuit()
        self._on_refusal = on_refusal
        self._clock = wall_clock
        self._script = redis.register_script(ADMIT_SCRIPT)
        self._local: dict[str, _LocalUser] = {}

    async def admit(self, message: IncomingMessage) -> Admission | Refusal:
        """Admit `message`'s turn or say which limit refuses it. A refusal is counted (usage and the
        `on_refusal` metric) before it is returned; nothing else is changed by it."""
        verdict = await self._check(message)
        if isinstance(verdict, Refusal):
            log.info("turn.refused", limit=verdict.limit, user=message.author.id,
                     retry_after_s=None if verdict.retry_after_s is None else round(verdict.retry_after_s, 1))
            if self._on_refusal is not None:
                self._on_refusal(self._bot, verdict.limit)
            await self._usage.record_refusal(self._app_id, self._model, verdict.limit)
        return verdict

    async def _check(self, message: IncomingMessage) -> Admission | Refusal:
        limits = self.limits
        if limits.max_input_chars and len(message.text) > limits.max_input_chars:
            return Refusal("max_input_chars", limits.max_input_chars, actual=len(message.text))
        now = self._clock()
        if limits.daily_tokens:
            spent = await self._usage.tokens_on(self._app_id, day_of(now))
            if spent >= limits.daily_tokens:
                return Refusal("daily_tokens", limits.daily_tokens, retry_after_s=_until_utc_midnight(now))
        user_key = f"{self._bot}|{message.author.id}"
        slot_key = self._keys.user_turns_in_flight(self._bot, message.author.id)
        turn = uuid.uuid4().hex
        if not (limits.user_turns_in_flight or limits.user_turns_per_minute):
            return Admission(self, user_key, slot_key, turn, local=True, released=True)
        if not self._circuit.is_open:
            try:
                reply = await self._script(
                    keys=[slot_key, self._keys.user_turns_started(self._bot, message.author.id)],
                    args=[repr(now), turn, limits.user_turns_in_flight, limits.user_turns_per_minute,
                          repr(RATE_WINDOW_S), repr(IN_FLIGHT_LEASE_S)],
                )
                code, wait = int(reply[0]), float(reply[1])
            except (RedisError, OSError, ValueError, IndexError, TypeError) as exc:
                self._circuit.record_failure()
                log.warning("limits.degraded", error=type(exc).__name__,
                            note="Redis failed: limits are counted per process until it answers")
            else:
                self._circuit.record_success()
                return self._verdict(code, wait, user_key, slot_key, turn, local=False)
        code, wait = self._admit_here(user_key, turn, now)
        return self._verdict(code, wait, user_key, slot_key, turn, local=True)

    def _verdict(self, code: int, wait: float, user_key: str, slot_key: str, turn: str, *,
                 local: bool) -> Admission | Refusal:
        if code == 1:
            return Refusal("user_turns_in_flight", self.limits.user_turns_in_flight)
        if code == 2:
            return Refusal("user_turns_per_minute", self.limits.user_turns_per_minute,
                           retry_after_s=max(0.0, wait))
        return Admission(self, user_key, slot_key, turn, local=local)

    def _admit_here(self, user_key: str, turn: str, now: float) -> tuple[int, float]:
        """The script's arithmetic on this process's counters."""
        if user_key not in self._local and len(self._local) >= LOCAL_USERS_MAX:
            self._local.pop(next(iter(self._local)))
        user = self._local.setdefault(user_key, _LocalUser())
        for done in [t for t, expires in user.in_flight.items() if expires <= now]:
            del user.in_flight[done]
        while user.started and user.started[0] <= now - RATE_WINDOW_S:
            user.started.popleft()
        limits = self.limits
        if limits.user_turns_in_flight and len(user.in_flight) >= limits.user_turns_in_flight:
            return 1, 0.0
        if limits.user_turns_per_minute:
            if len(user.started) >= limits.user_turns_per_minute:
                return 2, user.started[0] + RATE_WINDOW_S - now
            user.started.append(now)
        if limits.user_turns_in_flight:
            user.in_flight[turn] = now + IN_FLIGHT_LEASE_S
        return 0, 0.0

    async def release(self, admission: Admission) -> None:
        """Free the admission's in-flight slot (the turn has ended)."""
        user = self._local.get(admission.user_key)
        if user is not None:
            user.in_flight.pop(admission.turn, None)
        if admission.local or self._circuit.is_open:
            return
        try:
            await self._redis.zrem(admission.slot_key, admission.turn)
        except (RedisError, OSError) as exc:
            self._circuit.record_failure()
            log.warning("limits.release_failed", error=type(exc).__name__, note="the slot lapses by itself")


def _until_utc_midnight(now: float) -> float:
    today = datetime.fromtimestamp(now, UTC).date()
    midnight = datetime(today.year, today.month, today.day, tzinfo=UTC) + timedelta(days=1)
    return midnight.timestamp() - now
