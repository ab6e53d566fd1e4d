"""`Services`: what every command shares — Redis, the one chat client, key names — and how an
engine is built for a bot. An async context manager that closes everything it opened."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from types import TracebackType

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from bots.instrumentation import TimedChatClient
from bots.redis_connection import (
    REDIS_CONNECT_TIMEOUT_S,
    REDIS_HEALTH_CHECK_INTERVAL_S,
    REDIS_MAX_CONNECTIONS,
    REDIS_POOL_WAIT_S,
    REDIS_SOCKET_TIMEOUT_S,
    connect,
)
from bots.settings import RedisTLS, Settings, redact_url
from core.background import stop_task
from core.chat_api import ChatClient
from core.coordination import RedisCoordination
from core.engine import ConversationEngine
from core.feedback import AnswerRecord, RedisFeedback, Vote
from core.history import RedisHistory
from core.journal import JournalEntry, JournalSweeper, ReplyJournal
from core.limits import LimitName, TurnLimiter, TurnLimits
from core.personas import PersonaStore
from core.ports import TurnObserver
from core.profile import BotProfile
from core.redis_circuit import RedisCircuit
from core.redis_keys import RedisKeys
from core.tokens import TokenEstimator
from core.usage import RedisUsage
from core.write_behind import WriteBehind

log = structlog.get_logger(__name__)

__all__ = [  # the Redis client's tunables, where tests and benchmarks have always found them
    "REDIS_CONNECT_TIMEOUT_S", "REDIS_HEALTH_CHECK_INTERVAL_S", "REDIS_MAX_CONNECTIONS", "REDIS_POOL_WAIT_S",
    "REDIS_SOCKET_TIMEOUT_S", "Services", "connect_redis",
]


def connect_redis(url: str | None, tls: RedisTLS | None = None) -> tuple[Redis, bool]:
    """A client for `url` (a server, Sentinel or Cluster: `bots.redis_connection`), or the embedded
    in-process store when there is none. Returns (client, persistent)."""
    if url:
        return connect(url, tls), True
    import fakeredis  # only when no Redis is configured

    return fakeredis.FakeAsyncRedis(), False


async def redis_answers(redis: Redis) -> bool:
    return await redis_problem(redis) is None


async def redis_problem(redis: Redis) -> str | None:
    """None when Redis answers PING, else the cause in a few words ("connection refused")."""
    try:
        return None if await redis.ping() else "PING was not answered"
    except (RedisError, OSError) as exc:
        return describe_redis_error(exc)


def describe_redis_error(exc: BaseException) -> str:
    """The cause of a Redis failure in a few words, from the innermost OS error when there is one."""
    text = str(exc).lower()
    cause: BaseException | None = exc
    while cause is not None:  # redis-py wraps the OSError; its errno says the most
        if isinstance(cause, ConnectionRefusedError) or "connection refused" in text:
            return "connection refused"
        if isinstance(cause, TimeoutError) or "timeout" in text or "timed out" in text:
            return "timed out"
        cause = cause.__cause__ or cause.__context__
    if "authentication" in text or "noauth" in text or "wrongpass" in text or "invalid password" in text:
        return "authentication failed (check the password in REDIS_URL)"
    if "name or service not known" in text or "nodename nor servname" in text or "name resolution" in text:
        return "host name not found"
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


class CountedCircuit(RedisCircuit):
    """The process's `RedisCircuit`, counting the failures every store reports (for /metrics)."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 0

    def record_failure(self) -> None:
        self.failures += 1
        super().record_failure()


@dataclass
class Services:
    """Shared, process-wide collaborators. Build once per process."""

    settings: Settings
    redis: Redis = field(init=False)
    persistent: bool = field(init=False)
    chat: ChatClient = field(init=False)
    keys: RedisKeys = field(init=False)
    coordination: RedisCoordination = field(init=False)
    usage: RedisUsage = field(init=False)
    estimator: TokenEstimator = field(default_factory=TokenEstimator)
    circuit: RedisCircuit = field(default_factory=CountedCircuit)  # one per process, shared by every store
    journal: ReplyJournal = field(init=False)  # every reply in flight, with a lease (core.journal)
    write_behind: WriteBehind = field(init=False)  # writes a Redis outage holds back, replayed in order
    personas: PersonaStore = field(init=False)  # channels' own model, fallbacks, prompt (core.personas)
    _stack: AsyncExitStack = field(default_factory=AsyncExitStack)

    async def __aenter__(self) -> Services:
        self.redis, self.persistent = connect_redis(self.settings.redis_url, self.settings.redis_tls)
        self._stack.push_async_callback(self.redis.aclose)
        self.keys = RedisKeys(self.settings.redis_prefix)
        self.chat = TimedChatClient(  # times turns for /metrics; a plain ChatClient otherwise
            base_url=self.settings.base_url, api_key=self.settings.api_key or "",
            timeouts=self.settings.timeouts,
        )
        self._stack.push_async_callback(self.chat.aclose)
        self.coordination = RedisCoordination(self.redis, self.keys, self.circuit)
        self.write_behind = WriteBehind(self.circuit)
        self.usage = RedisUsage(self.redis, self.keys, circuit=self.circuit, write_behind=self.write_behind)
        self.personas = PersonaStore(self.redis, self.keys, circuit=self.circuit)
        self.journal = ReplyJournal(
            self.redis, self.keys, self.circuit, lease_s=self.settings.journal_lease_s,
            finalise_for_s=self.settings.journal_finalise_for_s,
        )
        replay = asyncio.create_task(self.write_behind.run(), name="write-behind")
        self._stack.push_async_callback(stop_task, replay)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()

    def announce_store(self) -> None:
        if self.persistent:
            log.info("redis.configured", url=redact_url(self.settings.redis_url or ""))
        else:
            log.warning("redis.embedded", note="REDIS_URL is unset: using the embedded in-process store; "
                        "history is NOT persistent and not shared between processes")

    async def redis_ready(self) -> str | None:
        """The readiness check's PING: None when Redis answers, else the cause. Its verdict is the
        freshest news about Redis, so it closes (or opens) the circuit every store shares at once."""
        problem = await redis_problem(self.redis)
        if problem is None:
            self.circuit.record_success()
        else:
            self.circuit.record_failure()
        return problem

    def limiter(self, profile: BotProfile, limits: TurnLimits,
                on_refusal: Callable[[str, LimitName], None] | None = None) -> TurnLimiter:
        return TurnLimiter(self.redis, self.keys, limits, bot=profile.name, app_id=profile.app_id,
                           model=profile.model, usage=self.usage, circuit=self.circuit, on_refusal=on_refusal)

    def engine(self, profile: BotProfile, observer: TurnObserver | None = None, *,
               limits: TurnLimits | None = None,
               on_refusal: Callable[[str, LimitName], None] | None = None,
               on_vote: Callable[[AnswerRecord, Vote, bool], None] | None = None,
               engine_type: Callable[..., ConversationEngine] = ConversationEngine) -> ConversationEngine:
        """An engine for one bot; with `limits`, its turns are admitted by a `TurnLimiter`.
        `engine_type`: e.g. the runner's `InstrumentedEngine`, measured for /metrics."""
        history = RedisHistory(self.redis, self.keys, profile.history, self.circuit, bot=profile.name,
                               write_behind=self.write_behind)
        limiter = self.limiter(profile, limits, on_refusal) if limits is not None else None
        return engine_type(
            profile, chat=self.chat, history=history,
            coordination=self.coordination, usage=self.usage, estimator=self.estimator, observer=observer,
            limits=limiter, journal=self.journal, personas=self.personas,
            feedback=RedisFeedback(self.redis, self.keys, ttl_s=profile.history.ttl_s, circuit=self.circuit,
                                   on_vote=on_vote),
        )

    def sweeper(
        self, on_outcome: Callable[[str, str], None] | None = None,
        on_abandoned: Callable[[JournalEntry], Awaitable[None]] | None = None,
    ) -> JournalSweeper:
        """Finalises the replies of this process's bots left by a dead or stuck owner; bots are
        added (`JournalSweeper.add`) as they start."""
        return JournalSweeper(self.journal, {}, interval_s=self.settings.journal_sweep_interval_s,
                              on_outcome=on_outcome, on_abandoned=on_abandoned)

