"""Bots under fault, in-process: a Slack app (HTTP mode, real slack-bolt) and a Discord bot (real
discord.py) on the fakes, real Redis and the fake chat API, and a driver that talks to them the way
users do. Shared by the fault suite and `soak`.

Conversations carry markers in their text (`Workload`), so the invariants checker can tell from a
chat request which conversation it serves and whose content it carries. Each "wave" sends one user
message in each of many conversations at once and waits — on the bot, never on a clock — until every
one of them is handled; replies are then read off the fake platform as users would see them.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
from aiohttp import web
from redis.asyncio import Redis

from adapters.discord import DiscordBot
from adapters.slack import EditPacing, SlackBot, SlackBotConfig
from core.chat_api import ChatClient, ChatTimeouts, RetryPolicy
from core.coordination import RedisCoordination
from core.engine import ConversationEngine
from core.history import RedisHistory
from core.message_index import MessageIndex
from core.profile import BotProfile, HistoryLimits
from core.rate_budget import RateBudget
from core.redis_circuit import RedisCircuit
from core.redis_keys import RedisKeys
from core.usage import RedisUsage
from tests.adapters.discord.conftest import GENERAL, TEST_CONFIG, Outcomes, answer_chain
from tests.fakes.discord_api import FakeDiscord, point_discord_py_at
from tests.fakes.slack_api import FakeSlackAPI, app_mention_event, signed_headers
from tests.reliability.invariants import Sent

API_KEY = "sk-reliability-0123456789abcdef"
SLACK_BOT_TOKEN = "xoxb-rel-fake"  # the fake Slack's token: short, so nothing like a real one
SLACK_SIGNING_SECRET = "reliability-signing-secret-42"
DISCORD_TOKEN = "discord-reliability-token.abc123"
SECRETS = (API_KEY, SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET, DISCORD_TOKEN)
MODEL_A, MODEL_B = "test/model-a", "test/model-b"
# Deadlines short enough that a hang costs about a second, long enough that a busy 2-core machine
# running ten streams does not turn into "model unavailable" by itself.
CHAT_TIMEOUTS = ChatTimeouts(connect_s=2.0, first_token_s=1.0, chunk_gap_s=1.0, total_s=30.0)
CHAT_RETRY = RetryPolicy(attempts_per_model=2, retry_after_cap_s=0.5, backoff_base_s=0.01, backoff_max_s=0.05)
# Slack's pacing scaled 20× (a minute's edit budget in 3 s, 20 posts a second per channel), as the
# adapter tests scale it; the budget itself is tested at scale in tests/adapters/slack.
SLACK_PACING = EditPacing(window_s=3.0, shed_after_s=0.1, posts_per_s=20.0)
SLACK_EDIT_INTERVAL_S = 0.05
DISCORD_EDIT_INTERVAL_S = 0.05
WAVE_TIMEOUT_S = 30.0  # a wave that has not been handled by then is a hang, reported as such
# Long enough to need two messages: Slack splits at 3,500 characters, Discord at 1,900.
LONG_TEXT_CHARS = {"slack": 3700, "discord": 1950}
FIRST_TS = 1_700_000_000


def chat_client(base_url: str) -> ChatClient:
    return ChatClient(base_url=base_url, api_key=API_KEY, timeouts=CHAT_TIMEOUTS, retry=CHAT_RETRY)


def build_engine(platform: str, chat: ChatClient, redis: Redis, keys: RedisKeys,
                 circuit: RedisCircuit | None = None) -> ConversationEngine:
    """An engine wired the way `bots.services.Services.engine` wires one."""
    circuit = circuit or RedisCircuit()
    profile = BotProfile(name=f"rel-{platform}", platform=platform, app_id=f"rel-{platform}-app",
                         model=MODEL_A, fallback_models=(MODEL_B,), system_prompt="You are a test bot.",
                         max_tokens=2048, history=HistoryLimits())
    history = RedisHistory(redis, keys, profile.history, circuit, bot=profile.name)
    return ConversationEngine(profile, chat=chat, history=history,
                              coordination=RedisCoordination(redis, keys, circuit),
                              usage=RedisUsage(redis, keys, circuit=circuit))


@dataclass
class Workload:
    """Conversations with markers: `conv<run>x<NNN>q` names a conversation in every text it sends."""

    platform: str
    conversations: int
    long_every: int = 3  # every n-th conversation sends messages long enough to split the reply; 0: none
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    turns: itertools.count[int] = field(default_factory=itertools.count)

    def marker(self, index: int) -> str:
        return f"conv{self.run}x{index:03d}q"

    def text(self, index: int) -> tuple[str, str]:
        """(token, text) of the next user message in conversation `index`."""
        token = f"{self.marker(index)}-turn{next(self.turns)}"
        if not self.long_every or index % self.long_every:
            return token, f"{token} please answer briefly"
        filler = " ".join(f"w{i}" for i in range(LONG_TEXT_CHARS[self.platform]))[: LONG_TEXT_CHARS[self.platform]]
        return token, f"{token} {filler.rsplit(' ', 1)[0]}"


class SlackSide:
    """A Slack app in HTTP mode on `FakeSlackAPI`, driven by signed Events API requests."""

    platform = "slack"

    def __init__(self, fake: FakeSlackAPI, bot: SlackBot, http: aiohttp.ClientSession, url: str) -> None:
        self.fake = fake
        self.bot = bot
        self.http = http
        self.url = url
        self.threads: dict[str, str] = {}  # conversation marker → thread ts
        self._ts = itertools.count(1)

    @property
    def alive(self) -> bool:
        return self.bot.ready

    def _next_ts(self) -> str:
        return f"{FIRST_TS + next(self._ts)}.000100"

    def payload(self, conversation: str, text: str) -> dict[str, Any]:
        """A channel mention: the first of a conversation opens its thread, later ones post in it."""
        ts = self._next_ts()
        thread = self.threads.setdefault(conversation, ts)
        payload = app_mention_event(
            text=f"<@{self.fake.bot_user_id}> {text}", channel="C1", user="U1", ts=ts,
            thread_ts=None if thread == ts else thread, team_id=self.fake.team_id,
            api_app_id=self.fake.app_id, event_id="Ev" + uuid.uuid4().hex[:12].upper(),
            bot_user_id=self.fake.bot_user_id,
        )
        self.fake.seed_from_event(payload)
        return payload

    async def post(self, payload: dict[str, Any], *, retry_num: int | None = None,
                   body: bytes | None = None, headers: dict[str, str] | None = None) -> int:
        raw = body if body is not None else json.dumps(payload).encode()
        signed = headers or signed_headers(raw, SLACK_SIGNING_SECRET, retry_num=retry_num,
                                           retry_reason="http_timeout" if retry_num else None)
        async with self.http.post(self.url, data=raw, headers=signed) as response:
            await response.read()
            return response.status

    async def wave(self, workload: Workload, conversations: Sequence[int]) -> list[Sent]:
        """One message in each conversation, all at once; returns once every one is handled."""
        sent = []
        for index in conversations:
            token, text = workload.text(index)
            sent.append(Sent("slack", workload.marker(index), token, text,
                             handle=self.payload(workload.marker(index), text)))
        statuses = await asyncio.gather(*(self.post(s.handle) for s in sent))
        assert set(statuses) == {200}, statuses
        async with asyncio.timeout(WAVE_TIMEOUT_S):
            await self.bot.wait_idle()
        return sent

    def read_replies(self, sent: Sequence[Sent]) -> None:
        """Fill in each message's replies: the bot's messages in its thread after it, before the next
        user message there."""
        for message in sent:
            event = message.handle["event"]
            thread = event.get("thread_ts") or event["ts"]
            later_asks = [float(m.ts) for m in self.fake.thread("C1", thread)
                          if m.bot_id is None and float(m.ts) > float(event["ts"])]
            until = min(later_asks, default=float("inf"))
            message.replies = [m.text for m in self.fake.bot_replies("C1", thread)
                               if float(event["ts"]) < float(m.ts) < until]


@asynccontextmanager
async def slack_side(engine: ConversationEngine, redis: Redis, keys: RedisKeys, *,
                     fake: FakeSlackAPI | None = None, stop_grace_s: float = 10.0) -> AsyncIterator[SlackSide]:
    """A started Slack bot on its own aiohttp server; stopped (and checked stoppable) on exit."""
    slack = fake or FakeSlackAPI(bot_token=SLACK_BOT_TOKEN)
    await slack.start()
    config = SlackBotConfig(bot_token=slack.bot_token, signing_secret=SLACK_SIGNING_SECRET,
                            api_url=slack.base_url, pacing=SLACK_PACING,
                            min_edit_interval_s=SLACK_EDIT_INTERVAL_S)
    bot = SlackBot(engine, config, budget=RateBudget(redis, keys), stop_grace_s=stop_grace_s)
    app = web.Application()
    bot.register_routes(app)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = int(runner.addresses[0][1])
    http = aiohttp.ClientSession()
    try:
        await bot.start()
        yield SlackSide(slack, bot, http, f"http://127.0.0.1:{port}{bot.events_path}")
    finally:
        await bot.stop()
        await http.close()
        await runner.cleanup()
        await slack.stop()


class DiscordSide:
    """A Discord bot on `FakeDiscord`, driven by gateway MESSAGE_CREATEs in one busy channel: each
    conversation is a reply chain, opened by a mention and continued by replying to the bot."""

    platform = "discord"

    def __init__(self, fake: FakeDiscord, bot: DiscordBot, outcomes: Outcomes) -> None:
        self.fake = fake
        self.bot = bot
        self.outcomes = outcomes
        self.last_part: dict[str, str] = {}  # conversation marker → the bot's last message there

    @property
    def alive(self) -> bool:
        return self.bot.ready

    async def send(self, conversation: str, text: str) -> dict[str, Any]:
        previous = self.last_part.get(conversation)
        return await self.fake.send_message_create(
            channel_id=GENERAL, content=f"<@{self.fake.bot_user_id}> {text}", mentions=[self.fake.bot_user],
            message_reference={"message_id": previous} if previous else None,
        )

    async def wave(self, workload: Workload, conversations: Sequence[int]) -> list[Sent]:
        sent = []
        for index in conversations:
            token, text = workload.text(index)
            message = await self.send(workload.marker(index), text)
            sent.append(Sent("discord", workload.marker(index), token, text, handle=message))
        async with asyncio.timeout(WAVE_TIMEOUT_S):
            await asyncio.gather(*(self.outcomes.all_of(s.handle["id"], 1) for s in sent))
        return sent

    def read_replies(self, sent: Sequence[Sent]) -> None:
        for message in sent:
            chain = answer_chain(self.fake, GENERAL, message.handle["id"])
            message.replies = [m["content"] for m in chain]
            if chain:
                self.last_part[message.conversation] = chain[-1]["id"]


@asynccontextmanager
async def discord_side(engine: ConversationEngine, redis: Redis, keys: RedisKeys,
                       **config: Any) -> AsyncIterator[DiscordSide]:
    """A ready Discord bot on a fresh `FakeDiscord`; stopped on exit."""
    async with FakeDiscord(expected_token=DISCORD_TOKEN) as fake:
        restore = point_discord_py_at(fake)
        outcomes = Outcomes()
        settings = replace(TEST_CONFIG, token=DISCORD_TOKEN, edit_interval_s=DISCORD_EDIT_INTERVAL_S, **config)
        bot = DiscordBot(engine, settings, index=MessageIndex(redis, keys, ttl_s=engine.profile.history.ttl_s),
                         coordination=RedisCoordination(redis, keys), observer=outcomes)
        try:
            await bot.start()
            await asyncio.wait_for(bot.wait_until_ready(), WAVE_TIMEOUT_S)
            yield DiscordSide(fake, bot, outcomes)
        finally:
            await bot.stop()
            restore()


Side = SlackSide | DiscordSide


async def converse(side: Side, workload: Workload, waves: int) -> list[Sent]:
    """`waves` rounds of one message in every conversation of `workload`; replies read after each
    round (a Discord conversation continues by replying to the bot's last message)."""
    everything: list[Sent] = []
    for _ in range(waves):
        sent = await side.wave(workload, range(workload.conversations))
        side.read_replies(sent)
        everything.extend(sent)
    return everything
