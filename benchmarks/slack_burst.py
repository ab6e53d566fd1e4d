"""Benchmark: a burst of simultaneous Slack mentions in one workspace, through the real adapter.

N signed app_mention events hit one `SlackBot` (HTTP mode) at once; the fake Slack enforces
chat.update's 50-a-minute limit on a clock running `--scale` times fast (the bot's budget window is
scaled to match), the fake chat API streams every answer. Reports, per reply, the time from the event
to the working reaction, to the first text and to the final text, plus chat.update calls and 429s.
Reactions draw on their own shared budget and are skipped when their turn is over 0.3 s away, so a
large burst shows the reaction on some replies only (the count is reported).

    REDIS_URL=redis://127.0.0.1:6379/0 python -m benchmarks.slack_burst --replies 50
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
import uuid

import aiohttp
from aiohttp import web
from redis.asyncio import Redis

from adapters.slack import EditPacing, SlackBot, SlackBotConfig
from adapters.slack.pacing import SLACK_POSTS_PER_CHANNEL_PER_S
from core.chat_api import ChatClient
from core.coordination import RedisCoordination
from core.engine import ConversationEngine
from core.history import RedisHistory
from core.profile import BotProfile
from core.rate_budget import RateBudget
from core.redis_keys import RedisKeys
from core.usage import RedisUsage
from tests.fakes.chat_api import Behaviour, FakeChatAPI
from tests.fakes.slack_api import FakeSlackAPI, app_mention_event, signed_headers

SECRET = "bench-signing-secret"
API_KEY = "sk-bench-0123456789"
UPDATE_LIMIT = 50  # chat.update, per minute per workspace (Tier 3)


def percentiles(values: list[float]) -> str:
    if not values:
        return "none"
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return f"p50 {statistics.median(ordered) * 1000:7.0f} ms   p95 {p95 * 1000:7.0f} ms"


async def run(replies: int, scale: float, answer_chars: int) -> None:
    keys = RedisKeys(f"lbbench-{uuid.uuid4().hex[:8]}")
    redis: Redis = Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    fake = FakeSlackAPI(rate_limits={"chat.update": UPDATE_LIMIT}, clock=lambda: time.monotonic() * scale)
    text = ("Streaming answers into Slack threads, paced to the workspace budget. " * 100)[:answer_chars]
    async with FakeChatAPI(api_key=API_KEY) as chat_api, fake:
        chat_api.script("bench/model", Behaviour(text=text, token_delay_s=0.02, chunk_chars=6))
        chat = ChatClient(base_url=chat_api.base_url, api_key=API_KEY)
        profile = BotProfile(name="bench", platform="slack", app_id="bench-app", model="bench/model")
        engine = ConversationEngine(
            profile, chat=chat, history=RedisHistory(redis, keys, profile.history, bot=profile.name),
            coordination=RedisCoordination(redis, keys), usage=RedisUsage(redis, keys),
        )
        config = SlackBotConfig(
            bot_token=fake.bot_token, signing_secret=SECRET, api_url=fake.base_url,
            pacing=EditPacing(per_window=UPDATE_LIMIT, window_s=60.0 / scale, shed_after_s=2.0 / scale,
                              posts_per_s=SLACK_POSTS_PER_CHANNEL_PER_S * scale),
            min_edit_interval_s=1.0 / scale,
        )
        bot = SlackBot(engine, config, budget=RateBudget(redis, keys))
        app = web.Application()
        bot.register_routes(app)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}{bot.events_path}"
        await bot.start()
        try:
            async with aiohttp.ClientSession() as http:
                sent: dict[str, float] = {}

                async def mention(n: int) -> None:
                    ts = f"{1_700_000_000 + n}.000100"
                    payload = app_mention_event(text=f"<@UBOT> question {n}", ts=ts, event_id=f"EvB{n}")
                    fake.seed_from_event(payload)
                    body = json.dumps(payload).encode()
                    sent[ts] = time.monotonic() * scale
                    async with http.post(url, data=body, headers=signed_headers(body, SECRET)) as response:
                        response.raise_for_status()

                started = time.monotonic()
                await asyncio.gather(*(mention(n) for n in range(replies)))
                await bot.wait_idle()
                elapsed = time.monotonic() - started
        finally:
            await bot.stop()
            await runner.cleanup()
            await chat.aclose()
            async for key in redis.scan_iter(match=f"{keys.prefix}:*"):
                await redis.delete(key)
            await redis.aclose()

    def real(seconds_scaled: float) -> float:
        return seconds_scaled / scale

    def finished_at(thread_ts: str) -> float:
        """When the last message of the reply in `thread_ts` got its final text."""
        refs = {m.ts for m in fake.bot_replies("C1", thread_ts)}
        return max(c.at for c in fake.calls if c.args.get("thread_ts") == thread_ts
                   or (c.method == "chat.update" and c.args["ts"] in refs))

    reaction = [real(c.at - sent[c.args["timestamp"]]) for c in fake.calls_to("reactions.add")]
    first = [real(c.at - sent[c.args["thread_ts"]]) for c in fake.calls_to("chat.postMessage")]
    final = [real(finished_at(ts) - sent[ts]) for ts in sent]
    complete = sum(1 for ts in sent if fake.bot_replies("C1", ts)[-1].text == text)
    print(f"{replies} replies of {answer_chars} chars, Slack's minute played in {60 / scale:.2f} s")
    print(f"  working reaction  {percentiles(reaction)}   (shown on {len(reaction)}/{replies})")
    print(f"  first text        {percentiles(first)}")
    print(f"  final text        {percentiles(final)}   (in real seconds; ×{scale:g} on Slack's clock)")
    print(f"  complete {complete}/{replies}   chat.update calls {len(fake.calls_to('chat.update'))}   "
          f"429s {fake.rate_limited_count}   wall time {elapsed:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replies", type=int, default=50)
    parser.add_argument("--scale", type=float, default=20.0, help="how many times faster Slack's clock runs")
    parser.add_argument("--answer-chars", type=int, default=600)
    args = parser.parse_args()
    asyncio.run(run(args.replies, args.scale, args.answer_chars))


if __name__ == "__main__":
    main()
