"""`Services`: what every command shares — Redis, the one chat client, key names — and how an
engine is built for a bot. An async context manager that closes everything it opened."""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from types import TracebackType

import structlog
from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import RedisError

from bots.settings import Settings, redact_url
from core.chat_api import ChatClient
from core.coordination import RedisCoordination
from core.engine import ConversationEngine
from core.history import RedisHistory
from core.ports import TurnObserver
from core.profile import BotProfile
from core.redis_circuit import RedisCircuit
from core.redis_keys import RedisKeys
from core.tokens import TokenEstimator
from core.usage import RedisUsage

log = structlog.get_logger(__name__)

REDIS_CONNECT_TIMEOUT_S = 2.0  # a down Redis must not stall a turn for long
REDIS_SOCKET_TIMEOUT_S = 5.0
REDIS_HEALTH_CHECK_INTERVAL_S = 30
# Turns wait for a free connection rather than fail: redis-py's default pool raises at 100, and
# a burst of replies would then look like an outage (benchmarks row 2b).
REDIS_MAX_CONNECTIONS = 500
REDIS_POOL_WAIT_S = 5.0


def connect_redis(url: str | None) -> tuple[Redis, bool]:
    """A client for `url`, or the embedded in-process store when there is none. Returns
    (client, persistent)."""
    if url:
        pool = BlockingConnectionPool.from_url(
            url, max_connections=REDIS_MAX_CONNECTIONS, timeout=REDIS_POOL_WAIT_S,
            socket_connect_timeout=REDIS_CONNECT_TIMEOUT_S, socket_timeout=REDIS_SOCKET_TIMEOUT_S,
            health_check_interval=REDIS_HEALTH_CHECK_INTERVAL_S,
        )
        client: Redis = Redis.from_pool(pool)
        return client, True
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
    circuit: RedisCircuit = field(default_factory=RedisCircuit)  # one per process, shared by every store
    _stack: AsyncExitStack = field(default_factory=AsyncExitStack)

    async def __aenter__(self) -> Services:
        self.redis, self.persistent = connect_redis(self.settings.redis_url)
        self._stack.push_async_callback(self.redis.aclose)
        self.keys = RedisKeys(self.settings.redis_prefix)
        self.chat = ChatClient(
            base_url=self.settings.base_url, api_key=self.settings.api_key or "",
            timeouts=self.settings.timeouts,
        )
        self._stack.push_async_callback(self.chat.aclose)
        self.coordination = RedisCoordination(self.redis, self.keys, self.circuit)
        self.usage = RedisUsage(self.redis, self.keys, circuit=self.circuit)
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

    def engine(self, profile: BotProfile, observer: TurnObserver | None = None) -> ConversationEngine:
        history = RedisHistory(self.redis, self.keys, profile.history, self.circuit, bot=profile.name)
        return ConversationEngine(
            profile, chat=self.chat, history=history,
            coordination=self.coordination, usage=self.usage, estimator=self.estimator, observer=observer,
        )

