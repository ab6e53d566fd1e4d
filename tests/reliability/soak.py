"""`make soak`: about 1,000 turns on a Slack app and a Discord bot (in-process, on the fakes, real
Redis), with faults mixed in at random from a fixed seed, and the invariants printed as counts.

    python -m tests.reliability.soak [--turns 1000] [--seed 9] [--conversations 20]

Each wave sends one message in each of `--conversations` conversations at once; every conversation
draws a fault for the wave (a chat API fault from the fault suite, or none), and some waves also
get a platform fault (Slack 429s on chat.update and retried deliveries; Discord 429s on edits).
Conversations run five turns, then fresh ones start. Exit code 1 when any invariant broke.
Needs Redis at REDIS_URL (default 127.0.0.1:6379); it touches only its own key prefix.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import os
import random
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence

import structlog
from redis.asyncio import Redis

from bots.logging_setup import SecretRedactor, configure_logging
from core.redis_keys import RedisKeys
from tests.adapters.discord.conftest import GENERAL
from tests.fakes.chat_api import Behaviour, FakeChatAPI, RecordedRequest, default_reply
from tests.reliability.faults import CHAT_FAULTS, Ask, ChatFault
from tests.reliability.harness import (
    API_KEY,
    SECRETS,
    Side,
    SlackSide,
    Workload,
    build_engine,
    chat_client,
    discord_side,
    slack_side,
)
from tests.reliability.invariants import Report, Sent, asked_text, check

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
TURNS_PER_CONVERSATION = 5
HEALTHY_SHARE = 0.5  # half the conversation-waves run without a chat fault
PLATFORM_FAULT_SHARE = 0.25  # a quarter of the waves also get a platform fault
STREAMING = Behaviour(chunk_chars=24, token_delay_s=0.004)


class FaultPlan:
    """Which chat fault each conversation of the current wave gets, as `FakeChatAPI.chooser`."""

    def __init__(self, api: FakeChatAPI) -> None:
        self.api = api
        self.faults: dict[str, tuple[ChatFault, bool]] = {}  # marker → (fault, every model fails)
        api.chooser = self.choose

    def choose(self, record: RecordedRequest) -> Behaviour | None:
        asked = asked_text(record)
        hit = next((fault for marker, fault in self.faults.items() if marker in asked), None)
        if hit is None:
            return None
        attempt = sum(1 for r in self.api.requests if r.model == record.model and asked_text(r) == asked)
        fault, total = hit
        return fault(Ask(record.model, attempt, default_reply(record.body), total))


async def slack_retries(side: SlackSide, sent: Sequence[Sent]) -> None:
    """Slack redelivering events it thinks were not acked."""
    await asyncio.gather(*(side.post(s.handle, retry_num=1) for s in sent))


async def run_wave(side: Side, workload: Workload, plan: FaultPlan, rng: random.Random,
                   drawn: Counter[str]) -> list[Sent]:
    plan.faults = {}
    for index in range(workload.conversations):
        name = "none" if rng.random() < HEALTHY_SHARE else rng.choice(sorted(CHAT_FAULTS))
        drawn[f"chat:{name}"] += 1
        if name != "none":
            plan.faults[workload.marker(index)] = (CHAT_FAULTS[name], rng.random() < 0.2)
    platform_fault = rng.random() < PLATFORM_FAULT_SHARE
    if isinstance(side, SlackSide):
        if platform_fault:
            drawn["slack:429 on chat.update"] += 1
            side.fake.fail_next("chat.update", status=429, retry_after=1, times=rng.randint(1, 3))
        retried = rng.random() < PLATFORM_FAULT_SHARE
        if retried:
            drawn["slack:retried deliveries"] += 1
        sent = await side.wave(workload, range(workload.conversations))
        if retried:
            await slack_retries(side, sent)
            await side.bot.wait_idle()
    else:
        if platform_fault:
            drawn["discord:429 on edit"] += 1
            side.fake.fail_next("PATCH", f"/channels/{GENERAL}/messages/", times=rng.randint(1, 4),
                                retry_after=0.05)
        sent = await side.wave(workload, range(workload.conversations))
    side.read_replies(sent)
    return sent


async def soak(turns: int, seed: int, conversations: int) -> Report:
    rng = random.Random(seed)
    redis: Redis = Redis.from_url(os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL)
    prefix = f"lbsoak-{uuid.uuid4().hex[:8]}"
    keys = RedisKeys(prefix)
    logs = io.StringIO()
    configure_logging(level="INFO", fmt="json", redactor=SecretRedactor(SECRETS), stream=logs)
    total = Report()
    drawn: Counter[str] = Counter()
    started = time.monotonic()
    try:
        async with FakeChatAPI(api_key=API_KEY) as api:
            api.default_behaviour = STREAMING
            plan = FaultPlan(api)
            chat = chat_client(api.base_url)
            try:
                for platform in ("slack", "discord"):
                    share = turns // 2
                    opener = slack_side if platform == "slack" else discord_side
                    async with opener(build_engine(platform, chat, redis, keys), redis, keys) as side:
                        sent: list[Sent] = []
                        while len(sent) < share:
                            workload = Workload(platform, conversations)
                            for _ in range(TURNS_PER_CONVERSATION):
                                if len(sent) >= share:
                                    break
                                sent += await run_wave(side, workload, plan, rng, drawn)
                        alive = side.alive
                    report = check(sent, api.requests, alive=alive, log_text=logs.getvalue(), secrets=SECRETS)
                    print(f"{platform}: {len(sent)} turns, {len(report.violations)} kinds of violation",
                          file=sys.stderr)
                    total.merge(report)
            finally:
                await chat.aclose()
    finally:
        logging.getLogger().handlers.clear()
        structlog.reset_defaults()
        async for key in redis.scan_iter(match=f"{prefix}:*", count=500):
            await redis.delete(key)
        await redis.aclose()
    elapsed = time.monotonic() - started
    print(f"soak: seed {seed}, {total.messages} turns in {elapsed:.0f} s, {conversations} conversations "
          "at once per platform")
    print("faults drawn (per conversation-wave, and per wave for platform faults):")
    for name, count in sorted(drawn.items()):
        print(f"  {name:<36} {count}")
    for line in total.lines():
        print(line)
    return total


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.soak", description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=9)
    parser.add_argument("--conversations", type=int, default=20)
    args = parser.parse_args(argv)
    report = asyncio.run(soak(args.turns, args.seed, args.conversations))
    return 0 if report.clean else 1


if __name__ == "__main__":
    sys.exit(main())
