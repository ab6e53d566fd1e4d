"""`SlackReplySink` on its own against the fake Slack: the working signal is best effort and never
holds up a reply or its turn."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from redis.asyncio import Redis
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.pacing import WorkspacePacer
from adapters.slack.sink import WORKING_REACTION, SlackReplySink
from adapters.slack.translate import ReplyTarget
from core.rate_budget import RateBudget
from core.redis_keys import RedisKeys
from tests.adapters.slack.conftest import FAST_PACING
from tests.fakes.slack_api import FakeSlackAPI

TARGET = ReplyTarget(channel="C1", thread_ts="1700000001.000100", source_ts="1700000001.000100", team_id="T1",
                     user_id="U1", assistant_thread=False)
SLOW_SLACK_S = 5.0  # a Slack call this slow would be felt by anyone waiting on it
PROMPT_S = 0.5  # "at once", with room for a busy test machine


class TestWorkingSignalCleanUp:
    """Clearing the reaction: after the turn, one call, no retries."""

    async def test_finish_hands_the_clean_up_over_and_it_tries_once(self, redis: Redis, keys: RedisKeys) -> None:
        """finish() returns at once although reactions.remove is slow; the clean-up it hands to the
        bot then makes a single call, even when Slack answers 429."""
        async with FakeSlackAPI() as fake:
            client = AsyncWebClient(token=fake.bot_token, base_url=fake.base_url, retry_handlers=[])
            pacer = WorkspacePacer(RateBudget(redis, keys), FAST_PACING, app_id="A1", team_id="T1")
            later: list[Coroutine[Any, Any, None]] = []
            sink = SlackReplySink(TARGET, client=client, signal_client=client, pacer=pacer,
                                  background=later.append)
            await sink.start()
            ref = await sink.post("Done.")
            await sink.edit(ref, "Done.", final=True)
            await fake.wait_for_call("reactions.add")
            fake.delays["reactions.remove"] = SLOW_SLACK_S
            async with asyncio.timeout(PROMPT_S):
                await sink.finish()
            assert len(later) == 1 and fake.calls_to("reactions.remove") == []
            fake.delays.clear()
            fake.fail_next("reactions.remove", retry_after=0)
            await later[0]
            assert [(c.status, c.args["name"]) for c in fake.calls_to("reactions.remove")] == [
                (429, WORKING_REACTION)]
