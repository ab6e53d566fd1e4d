"""A Slack bot under test: real slack-bolt and slack-sdk against `FakeSlackAPI`, real Redis (private
prefix), the fake chat API, and a real aiohttp server for HTTP mode.

`SlackRig` posts signed Events API requests and slash commands the way Slack does and waits on the
bot, never on sleeps. Its engine is `make_engine`'s: with channel personas and 👍 / 👎 feedback, like
production's (`bots.services.Services.engine`).
"""

from __future__ import annotations

import itertools
import json
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from redis.asyncio import Redis

from adapters.slack import EditPacing, SlackBot, SlackBotConfig
from core.chat_api import ChatClient, ChatTimeouts
from core.coordination import RedisCoordination
from core.engine import ConversationEngine
from core.history import RedisHistory
from core.rate_budget import RateBudget
from core.redis_keys import RedisKeys
from core.usage import RedisUsage
from tests.conftest import FAST_RETRY, TEST_API_KEY, EngineFactory, make_profile
from tests.fakes.chat_api import FakeChatAPI
from tests.fakes.slack_api import (
    FakeSlackAPI,
    app_mention_event,
    message_event,
    reaction_event,
    signed_headers,
)

SIGNING_SECRET = "test-signing-secret-0123"
MODEL_A, MODEL_B = "test/model-a", "test/model-b"
FIRST_TS = 1_700_000_000
# Tests edit every 50 ms instead of every second, so the workspace budget runs 20× faster too
# (Slack's minute in 3 s). The budget itself is tested at scale in test_streaming.py.
FAST_PACING = EditPacing(window_s=3.0, shed_after_s=0.1)
# Deadlines for tests that stream many replies at once: the shared FAST_TIMEOUTS (0.5 s to the first
# token) would turn a busy test machine into "model unavailable" rather than test Slack pacing.
PATIENT_TIMEOUTS = ChatTimeouts(connect_s=5.0, first_token_s=10.0, chunk_gap_s=10.0, total_s=50.0)


@dataclass
class SlackRig:
    """One running Slack bot in HTTP mode, its fake Slack, and helpers to talk to it like Slack."""

    fake: FakeSlackAPI
    bot: SlackBot
    engine: ConversationEngine
    http: aiohttp.ClientSession
    base_url: str
    _ts: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def url(self) -> str:
        return self.base_url + self.bot.events_path

    def next_ts(self) -> str:
        return f"{FIRST_TS + next(self._ts)}.000100"

    async def post(self, payload: dict[str, Any], *, secret: str = SIGNING_SECRET, retry_num: int | None = None,
                   timestamp: int | None = None) -> int:
        """POST an Events API body, signed like Slack; returns the HTTP status."""
        body = json.dumps(payload).encode()
        headers = signed_headers(body, secret, timestamp=timestamp, retry_num=retry_num,
                                 retry_reason="http_timeout" if retry_num else None)
        async with self.http.post(self.url, data=body, headers=headers) as response:
            await response.read()
            return response.status

    def mention_payload(self, text: str = "<@UBOT> hello", *, channel: str = "C1", user: str = "U1",
                        thread_ts: str | None = None, ts: str | None = None,
                        event_id: str | None = None, files: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        payload = app_mention_event(
            text=text, channel=channel, user=user, ts=ts or self.next_ts(), thread_ts=thread_ts,
            team_id=self.fake.team_id, api_app_id=self.fake.app_id, event_id=event_id or new_event_id(),
            bot_user_id=self.fake.bot_user_id, files=files,
        )
        self.fake.seed_from_event(payload)  # Slack has the message the event is about
        return payload

    def message_payload(self, text: str, *, channel: str = "D1", channel_type: str = "im", user: str = "U1",
                        thread_ts: str | None = None, ts: str | None = None, event_id: str | None = None,
                        subtype: str | None = None, bot_id: str | None = None,
                        files: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        payload = message_event(
            text=text, channel=channel, channel_type=channel_type, user=user, ts=ts or self.next_ts(),
            thread_ts=thread_ts, team_id=self.fake.team_id, api_app_id=self.fake.app_id,
            event_id=event_id or new_event_id(), bot_user_id=self.fake.bot_user_id, subtype=subtype,
            bot_id=bot_id, files=files,
        )
        self.fake.seed_from_event(payload)
        return payload

    async def mention(self, text: str = "<@UBOT> hello", **kwargs: Any) -> dict[str, Any]:
        """An app_mention, posted and answered; returns the payload."""
        payload = self.mention_payload(text, **kwargs)
        assert await self.post(payload) == 200
        await self.bot.wait_idle()
        return payload

    async def message(self, text: str, **kwargs: Any) -> dict[str, Any]:
        """A message event (DM by default), posted and answered; returns the payload."""
        payload = self.message_payload(text, **kwargs)
        assert await self.post(payload) == 200
        await self.bot.wait_idle()
        return payload

    def reaction_payload(self, reaction: str, *, channel: str, ts: str, user: str = "U1", added: bool = True,
                         item_user: str | None = "UBOT", event_id: str | None = None) -> dict[str, Any]:
        return reaction_event(
            reaction=reaction, channel=channel, ts=ts, user=user, item_user=item_user, added=added,
            team_id=self.fake.team_id, api_app_id=self.fake.app_id, event_id=event_id or new_event_id(),
            bot_user_id=self.fake.bot_user_id,
        )

    async def react(self, reaction: str, **kwargs: Any) -> dict[str, Any]:
        """A reaction_added (or, with `added=False`, reaction_removed) event, posted and handled."""
        payload = self.reaction_payload(reaction, **kwargs)
        assert await self.post(payload) == 200
        await self.bot.wait_idle()
        return payload

    async def post_command(self, fields: dict[str, str], *, secret: str = SIGNING_SECRET) -> int:
        """POST a slash command's form, signed like Slack; returns the HTTP status."""
        body = urllib.parse.urlencode(fields).encode()
        headers = signed_headers(body, secret, content_type="application/x-www-form-urlencoded")
        async with self.http.post(self.url, data=body, headers=headers) as response:
            await response.read()
            return response.status

    async def command(self, text: str, *, user: str = "U1", channel: str = "C1") -> str:
        """`/lunos <text>` typed by `user` in `channel`; returns what the bot answered (ephemerally)."""
        fields = self.fake.slash_command(text, user=user, channel=channel)
        assert await self.post_command(fields) == 200
        await self.bot.wait_idle()
        (answer,) = self.fake.responses_to(fields)
        return answer.text

    def replies(self, payload: dict[str, Any]) -> list[str]:
        """The bot's messages answering `payload`'s event, as a user finally sees them."""
        event = payload["event"]
        thread = event.get("thread_ts") or event["ts"]
        if event["channel"].startswith("D") and "thread_ts" not in event:
            after = [m for m in self.fake.bot_replies(event["channel"])
                     if m.thread_ts is None and float(m.ts) > float(event["ts"])]
            return [m.text for m in after]
        return [m.text for m in self.fake.bot_replies(event["channel"], thread)]


def new_event_id() -> str:
    return "Ev" + uuid.uuid4().hex[:12].upper()


RigFactory = Callable[..., AbstractAsyncContextManager[SlackRig]]


@pytest.fixture
async def patient_engine(chat_api: FakeChatAPI, redis: Redis, keys: RedisKeys) -> AsyncIterator[ConversationEngine]:
    """An engine like `make_engine()`'s, with chat deadlines that tolerate a loaded machine."""
    client = ChatClient(base_url=chat_api.base_url, api_key=TEST_API_KEY, timeouts=PATIENT_TIMEOUTS,
                        retry=FAST_RETRY)
    profile = make_profile()
    yield ConversationEngine(
        profile, chat=client, history=RedisHistory(redis, keys, profile.history, bot=profile.name),
        coordination=RedisCoordination(redis, keys), usage=RedisUsage(redis, keys),
    )
    await client.aclose()


@pytest.fixture
def slack_rig(make_engine: EngineFactory, redis: Redis, keys: RedisKeys) -> RigFactory:
    """`async with slack_rig(**options) as rig:` — options: `fake` (a started FakeSlackAPI to share),
    `fake_options` (FakeSlackAPI kwargs), `engine` (an engine to reuse, as a second replica would),
    `profile` (engine profile overrides), `stop_grace_s`; anything else is a SlackBotConfig field."""

    @asynccontextmanager
    async def build(*, fake: FakeSlackAPI | None = None, fake_options: dict[str, Any] | None = None,
                    engine: ConversationEngine | None = None, profile: dict[str, Any] | None = None,
                    stop_grace_s: float = 5.0, **config: Any) -> AsyncIterator[SlackRig]:
        own_fake = fake is None
        slack = fake or FakeSlackAPI(**(fake_options or {}))
        if own_fake:
            await slack.start()
        options: dict[str, Any] = {"min_edit_interval_s": 0.05, "pacing": FAST_PACING, **config}
        bot_config = SlackBotConfig(bot_token=slack.bot_token, signing_secret=SIGNING_SECRET,
                                    api_url=slack.base_url, **options)
        chosen_engine = engine or make_engine(**(profile or {}))
        bot = SlackBot(chosen_engine, bot_config, budget=RateBudget(redis, keys), stop_grace_s=stop_grace_s)
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
            yield SlackRig(slack, bot, chosen_engine, http, f"http://127.0.0.1:{port}")
        finally:
            await bot.stop()
            await http.close()
            await runner.cleanup()
            if own_fake:
                await slack.stop()

    return build

