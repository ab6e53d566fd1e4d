"""`RedisFeedback`: 👍 / 👎 on a bot's answers, counted per app ID, model and UTC day.

The engine remembers which messages hold an answer (`remember_answer`: message → app ID and the
model that wrote it). A reaction the adapter reports becomes a vote (`vote`): one per user per
answer, the latest reaction replacing an earlier one, removing the reaction removing the vote. The
counts live in the usage hash of the app ID and the vote's day (`<model>|feedback_up`,
`<model>|feedback_down`, `core.usage`), so `lunos-bots usage` shows them beside the tokens; the
app ID names the bot (`bots.definitions` refuses two bots with one app ID).

Platform-neutral: adapters translate their reactions (`+1`, `👍`…) into a `Vote` and name the
message by the same ref their sink returned from `post`. Redis trouble is logged, never raised:
feedback must not cost anyone an answer.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import structlog
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from core.redis_circuit import RedisCircuit
from core.redis_keys import RedisKeys
from core.usage import USAGE_TTL_S, day_of

log = structlog.get_logger(__name__)


class Vote(enum.Enum):
    UP = "up"
    DOWN = "down"

    @property
    def counter(self) -> str:
        """Its field in the usage hash, after `<model>|`."""
        return f"feedback_{self.value}"


# KEYS[1]: an answer's voters (user → "<vote>|<day>"). ARGV: user, vote, day, "add"/"remove", ttl.
# Returns the user's previous value ("" for none) and whether anything changed, atomically, so two
# replicas handling one user's quick add and remove agree on the counts.
VOTE_SCRIPT = """
local previous = redis.call('HGET', KEYS[1], ARGV[1]) or ''
local previous_vote = string.match(previous, '^([^|]*)') or ''
if ARGV[4] == 'add' then
  if previous_vote == ARGV[2] then return {previous, 0} end
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. '|' .. ARGV[3])
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[5]))
  return {previous, 1}
end
if previous_vote ~= ARGV[2] then return {previous, 0} end
redis.call('HDEL', KEYS[1], ARGV[1])
return {previous, 1}
"""

VoteOutcome = Literal["recorded", "removed", "unchanged", "not_an_answer", "unavailable"]


@dataclass(frozen=True)
class AnswerRecord:
    """What a message of the bot's answered: whose usage a vote on it counts under."""

    app_id: str
    model: str
    answer: str = ""  # the answer's first message: one vote per user per answer, however many parts

    def to_json(self) -> str:
        return json.dumps({"app_id": self.app_id, "model": self.model, "answer": self.answer},
                          separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> AnswerRecord | None:
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return None
        if not isinstance(data, dict):
            return None
        app_id, model, answer = data.get("app_id"), data.get("model"), data.get("answer", "")
        if not (isinstance(app_id, str) and app_id and isinstance(model, str) and model):
            return None
        return cls(app_id, model, answer if isinstance(answer, str) else "")


class RedisFeedback:
    """Remembers answers' messages and counts votes on them."""

    def __init__(
        self, redis: Redis, keys: RedisKeys, *, ttl_s: int, circuit: RedisCircuit | None = None,
        wall_clock: Callable[[], float] = time.time,
        on_vote: Callable[[AnswerRecord, Vote, bool], None] | None = None,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl_s = ttl_s  # how long an answer can be voted on: as long as its conversation lives
        self._circuit = circuit or RedisCircuit()
        self._wall_clock = wall_clock
        self._vote = redis.register_script(VOTE_SCRIPT)
        self._on_vote = on_vote  # told of every vote added (True) or removed (False): metrics

    async def remember_answer(
        self, bot: str, channel: str, refs: Sequence[str], record: AnswerRecord
    ) -> None:
        """Every message of one answer (`refs`, as the sink's `post` returned them) in `channel`; a
        vote on any of them is a vote on the answer."""
        if not refs or self._circuit.is_open:
            return
        value = dataclasses.replace(record, answer=record.answer or refs[0]).to_json()
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for ref in refs:
                    pipe.set(self._keys.feedback_answer(bot, channel, ref), value, ex=self._ttl_s)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self._circuit.record_failure()
            log.warning("feedback.degraded", op="remember", error=type(exc).__name__)
            return
        self._circuit.record_success()

    async def vote(
        self, bot: str, channel: str, ref: str, user: str, vote: Vote, *, added: bool
    ) -> VoteOutcome:
        """A user added (or removed) `vote` on message `ref`. Messages that are not one of the
        bot's remembered answers (a user's message, an expired answer) count nothing."""
        if self._circuit.is_open:
            return "unavailable"
        try:
            raw = await self._redis.get(self._keys.feedback_answer(bot, channel, ref))
            record = None if raw is None else AnswerRecord.from_json(raw)
            if record is None:
                return "not_an_answer"
            today = day_of(self._wall_clock())
            previous_raw, changed = await self._vote(
                keys=[self._keys.feedback_voters(bot, channel, record.answer or ref)],
                args=[user, vote.value, today, "add" if added else "remove", self._ttl_s],
            )
            if not int(changed):
                return "unchanged"
            previous = previous_raw.decode() if isinstance(previous_raw, bytes) else str(previous_raw)
            previous_vote, _, previous_day = previous.partition("|")
            async with self._redis.pipeline(transaction=False) as pipe:
                if added:
                    self._count(pipe, record, today, vote.counter, 1)
                    if previous_vote:  # the other thumb: the latest reaction is the user's vote
                        self._count(pipe, record, previous_day or today, f"feedback_{previous_vote}", -1)
                else:
                    self._count(pipe, record, previous_day or today, vote.counter, -1)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self._circuit.record_failure()
            log.warning("feedback.degraded", op="vote", error=type(exc).__name__)
            return "unavailable"
        self._circuit.record_success()
        if self._on_vote is not None:
            self._on_vote(record, vote, added)
            if added and previous_vote in (v.value for v in Vote):
                self._on_vote(record, Vote(previous_vote), False)
        outcome: VoteOutcome = "recorded" if added else "removed"
        log.info("feedback.vote", app_id=record.app_id, model=record.model, vote=vote.value,
                 outcome=outcome)
        return outcome

    def _count(self, pipe: Pipeline, record: AnswerRecord, day: str, counter: str, amount: int) -> None:
        name = self._keys.usage(record.app_id, day)
        pipe.hincrby(name, f"{record.model}|{counter}", amount)
        pipe.expire(name, USAGE_TTL_S)
