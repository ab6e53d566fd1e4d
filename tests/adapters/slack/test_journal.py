"""Slack replies that always finish: a Slack outage on the final edit is bridged by the reply
journal (the final text lands, in place, once Slack answers again), on a clock 20× fast."""

from __future__ import annotations

import asyncio
import time

from redis.asyncio import Redis

from core.journal import JournalSweeper, ReplyJournal
from core.redis_keys import RedisKeys
from core.types import Turn
from tests.adapters.slack.conftest import MODEL_A, RigFactory
from tests.adapters.slack.test_delivery import thread_key
from tests.conftest import EngineFactory
from tests.fakes.chat_api import Behaviour, FakeChatAPI
from tests.fakes.slack_api import FakeSlackAPI

TIME_SCALE = 20.0
OUTAGE_S = 30.0  # of Slack's time: 1.5 s here
SWEEP_INTERVAL_S = 0.05
SWEEP_BACKOFF_S = 0.1


class TestSlackOutage:
    """Slack answering 500 for 30 s around the final edit."""

    async def test_final_text_lands_after_the_outage_in_one_message(
        self, slack_rig: RigFactory, chat_api: FakeChatAPI, make_engine: EngineFactory, redis: Redis,
        keys: RedisKeys,
    ) -> None:
        """The sink's retries run out inside the outage; the journal keeps the reply and, once
        Slack answers, makes the one message show the final text. Nothing is posted twice and
        history holds exactly what the user sees."""
        answer = "The whole answer, which the outage must not cut off."
        chat_api.script(MODEL_A, Behaviour(text=answer, chunk_chars=8, token_delay_s=0.05))
        journal = ReplyJournal(redis, keys)
        engine = make_engine(journal=journal)
        fake = FakeSlackAPI(clock=lambda: time.monotonic() * TIME_SCALE)
        async with fake, slack_rig(fake=fake, engine=engine, retry_backoff_s=0.02) as rig:
            finalised = asyncio.Event()
            sweeper = JournalSweeper(journal, {engine.profile.name: rig.bot.finaliser()},
                                     interval_s=SWEEP_INTERVAL_S, backoff_s=SWEEP_BACKOFF_S,
                                     on_outcome=lambda bot, outcome: outcome == "finalised" and finalised.set())
            sweeper.start()
            try:
                payload = rig.mention_payload("<@UBOT> tell me")
                assert await rig.post(payload) == 200
                await fake.wait_for_call("chat.postMessage")
                fake.fail_for("chat.update", OUTAGE_S)
                fake.fail_for("chat.postMessage", OUTAGE_S)
                await rig.bot.wait_idle()
                [message] = fake.bot_replies("C1", payload["event"]["ts"])
                assert message.text != answer, "the outage outlasted the turn's own retries"
                async with asyncio.timeout(10):
                    await finalised.wait()
            finally:
                await sweeper.stop()
            assert [m.text for m in fake.bot_replies("C1", payload["event"]["ts"])] == [answer]
            assert all(c.status == 500 for c in fake.calls_to("chat.postMessage")[1:])
            stored = await redis.lrange(keys.history(engine.profile.name, thread_key(payload)), 0, -1)
            assert [Turn.from_json(raw).content for raw in stored] == ["tell me", answer]  # type: ignore[union-attr]
            assert await redis.zcard(keys.journal_due()) == 0, "the journal forgot the finished reply"
