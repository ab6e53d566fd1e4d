"""Fixtures for the Discord adapter: the fake Discord (REST + gateway) with discord.py pointed at it,
and a factory that starts a `DiscordBot` on real Redis and the fake chat API, waits until it is
ready, and stops it afterwards. `Outcomes` lets a test wait for what became of a message (and, in
`RunningBot.reactions`, of a reaction)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from redis.asyncio import Redis

from adapters.discord import DiscordBot, DiscordConfig
from core.coordination import RedisCoordination
from core.engine import ConversationEngine
from core.message_index import MessageIndex
from core.redis_keys import RedisKeys
from tests.conftest import EngineFactory
from tests.fakes.discord_api import FakeDiscord, point_discord_py_at

WAIT_S = 10.0  # generous: a slow CI machine, never a sleep
TEST_EDIT_INTERVAL_S = 0.05  # fast tests; the pacing test sets its own
TEST_CONFIG = DiscordConfig(token="fake-token", guild_ready_timeout_s=0.1, edit_interval_s=TEST_EDIT_INTERVAL_S)
GENERAL, BOT_CHAT, CATEGORY, THREAD, GUILD = "3000", "3001", "2999", "3100", "2000"
ALICE = "5000"
BOT_ID = "1000"


@dataclass
class Outcomes:
    """A `MessageObserver` that tests can wait on. A message delivered twice (a gateway resume
    replays events) has one outcome per delivery, in order."""

    by_id: dict[int, list[str]] = field(default_factory=dict)
    _changed: dict[int, asyncio.Event] = field(default_factory=dict)

    def message_handled(self, message_id: int, outcome: str) -> None:
        self.by_id.setdefault(message_id, []).append(outcome)
        # Wake whoever waits on this message; a later waiter gets a fresh event.
        self._changed.pop(message_id, asyncio.Event()).set()

    async def of(self, message_id: str | int) -> str:
        """What became of the message (its first delivery), once the bot is done with it."""
        return (await self.all_of(message_id, 1))[0]

    async def all_of(self, message_id: str | int, deliveries: int) -> list[str]:
        """The outcomes of the message's first `deliveries` deliveries, once there are that many."""
        key = int(message_id)
        async with asyncio.timeout(WAIT_S):
            while len(self.by_id.get(key, [])) < deliveries:
                await self._changed.setdefault(key, asyncio.Event()).wait()
        return self.by_id[key][:deliveries]


@dataclass
class RunningBot:
    bot: DiscordBot
    outcomes: Outcomes
    engine: ConversationEngine
    config: DiscordConfig
    reactions: Outcomes = field(default_factory=Outcomes)  # keyed by the reacted-to message


BotStarter = Callable[..., Awaitable[RunningBot]]


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as server:
        restore = point_discord_py_at(server)
        try:
            yield server
        finally:
            restore()


@pytest.fixture
async def start_bot(
    fake: FakeDiscord, make_engine: EngineFactory, redis: Redis, keys: RedisKeys
) -> AsyncIterator[BotStarter]:
    """`await start_bot(**DiscordConfig overrides, engine=...)`: a ready bot on the `fake` server
    (which is set up first and so torn down after every bot has stopped)."""
    running: list[DiscordBot] = []

    async def start(*, engine: ConversationEngine | None = None, **overrides: Any) -> RunningBot:
        config = replace(TEST_CONFIG, **overrides)
        engine = engine or make_engine(platform="discord")
        outcomes, reactions = Outcomes(), Outcomes()
        bot = DiscordBot(
            engine, config, index=MessageIndex(redis, keys, ttl_s=engine.profile.history.ttl_s),
            coordination=RedisCoordination(redis, keys), observer=outcomes, reactions=reactions,
        )
        running.append(bot)
        await bot.start()
        await asyncio.wait_for(bot.wait_until_ready(), WAIT_S)
        return RunningBot(bot, outcomes, engine, config, reactions)

    yield start
    for bot in running:
        await bot.stop()


def answer_chain(fake: FakeDiscord, channel_id: str, trigger_id: str) -> list[dict[str, Any]]:
    """The bot's messages answering `trigger_id`: the reply to it, then each reply to the previous part."""
    parts: list[dict[str, Any]] = []
    target = trigger_id
    while True:
        nxt = next((m for m in fake.bot_messages(channel_id)
                    if (m.get("message_reference") or {}).get("message_id") == target), None)
        if nxt is None:
            return parts
        parts.append(nxt)
        target = nxt["id"]


def request_contents(body: dict[str, Any] | None) -> list[str]:
    """The `content` of every message the chat API was sent in one request."""
    assert body is not None
    return [str(m["content"]) for m in body["messages"]]


def mention(fake: FakeDiscord) -> list[dict[str, Any]]:
    """The `mentions` array of a message that @mentions the bot (or replies to it with the ping on)."""
    return [fake.bot_user]
