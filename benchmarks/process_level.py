"""Benchmark of the real `lunos-bots run` process at the platform, from outside (issue 9).

Every party is its own process: a private `redis-server`, the fake chat API (fixed time to first
token, fixed delay per chunk), the fake Slack Web API (with Slack's per-workspace limits) or the fake
Discord REST + gateway (with per-route buckets), and the bot. The driver (this process) sends signed
Slack events over pre-opened keep-alive connections, or has the Discord fake dispatch gateway
MESSAGE_CREATEs, then reads back what every fake recorded. All timestamps are `time.monotonic()`,
one clock for every process on Linux.

Every conversation is started by a different user (the bot limits turns in flight per user).

Per conversation:
- added latency = first model text at the fake platform − event sent − the fake's time to first token;
- working signal = first platform call for the conversation − event sent;
- final lag = final text at the fake platform − last model text sent by the fake chat API.

Layouts. A bot token is one Slack workspace, so every Slack conversation is in the bot's workspace,
each in its own channel; the shared `chat.update` budget binds. Discord: one guild; latency rounds put
each conversation in its own channel, final-lag rounds `DISCORD_CONVERSATIONS_PER_CHANNEL` per channel
(Discord limits edits per channel). Latency rounds wait `LATENCY_FINALS_WAIT_S` at most for final
texts; the final-lag rounds wait for every one.
"""

from __future__ import annotations

import asyncio
import itertools
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.bot_process import (
    BotProcess,
    BotSpec,
    PrivateRedis,
    RssSampler,
    cpu_seconds,
    peak_rss_bytes,
    rss_bytes,
)
from benchmarks.children import Child
from benchmarks.fake_children import json_body, serve_chat_api, serve_discord, serve_redis_proxy, serve_slack
from tests.fakes.slack_api import app_mention_event, signed_headers

API_KEY = "sk-bench-process-0123456789abcdef"
MODEL = "bench/model"
TTFT_S = 0.2  # the fake chat API's time to first token, subtracted from the added latency
TOKEN_DELAY_S = 0.04  # between 8-character chunks: ~200 characters (~50 tokens) a second
CHUNK_CHARS = 8
NEXT_TURN_SLACK_DELAY_S = 3.0  # "Slack slow": every chat.update answered this late
ANSWER_CHARS = 800  # 100 chunks: a 4-second answer, several edits long, one message on both platforms
ANSWER = ("Streaming answers into chat threads, paced to what each platform allows. " * 20)[:ANSWER_CHARS]
SLACK_SIGNING_SECRET = "bench-signing-secret-0123456789"
SLACK_BOT_TOKEN = "xoxb-bench"  # a fake token for the fake Slack (short: nothing like a real one)
DISCORD_TOKEN = "bench.discord.token-0123456789"
DISCORD_BOT_ID = "1000"
# Slack's published limits, per app per workspace per minute, as the fake enforces them.
SLACK_RATE_LIMITS = {
    "chat.update": 50,  # Tier 3
    "reactions.add": 50,  # Tier 3
    "reactions.remove": 50,  # Tier 3
    "conversations.replies": 50,  # Tier 3
    "users.info": 100,  # Tier 4
    "assistant.threads.setStatus": 600,  # Tier 4-ish; not used by channel mentions
}
DISCORD_BUCKET_LIMIT = 5  # per route and channel ...
DISCORD_BUCKET_WINDOW_S = 5.0  # ... per 5 s: Discord's message create / edit limit per channel
SLACK_TEAM = "T1"  # the fake's workspace, the bot token's
DISCORD_CONVERSATIONS_PER_CHANNEL = 10
DISCORD_CHANNELS = 1000
LOG_DIR = Path(tempfile.gettempdir()) / "lunos-bench-logs"  # each bot process's log, kept for reading
SETTLE_S = 1.5  # after the last final text: reactions removed, logs written, before reading CPU
POLL_S = 0.25
ROUND_TIMEOUT_S = 120.0
FINAL_LAG_TIMEOUT_PER_REPLY_S = 2.5  # one workspace: ~45 final edits a minute get through
# After its answers have streamed, a latency round waits this long at most for their final texts:
# in one Slack workspace 1,000 final edits take ~25 minutes at Slack's rate, and the final-lag
# rounds measure exactly that. Later rounds may start while earlier final edits still drain.
LATENCY_FINALS_WAIT_S = 15.0
MESSAGE_WINDOW_S = 5.0  # per-message edit rate: the most edits in any 5 s, per second
WORKSPACE_WINDOW_S = 60.0  # per-workspace edit rate: the most edits in any minute


@dataclass(frozen=True)
class ProcessSizes:
    """How much the process benchmark does."""

    levels: tuple[int, ...]
    rounds: dict[int, int]
    final_lag_levels: tuple[int, ...]
    redis_turns: int


QUICK = ProcessSizes(levels=(1, 50, 200), rounds={1: 8, 50: 1, 200: 1}, final_lag_levels=(50,), redis_turns=5)
FULL = ProcessSizes(levels=(1, 50, 200, 1000), rounds={1: 30, 50: 3, 200: 2, 1000: 1},
                    final_lag_levels=(50, 200), redis_turns=20)


@dataclass
class Conversation:
    """One user message and what became of it (monotonic seconds; None: never seen)."""

    tag: str
    key: tuple[str, str]  # Slack: (channel, event ts); Discord: (channel, trigger message id)
    workspace: str
    sent: float
    working: float | None = None
    first_text: float | None = None
    final: float | None = None
    edits: int = 0
    chat_arrived: float | None = None
    chat_first: float | None = None
    chat_last: float | None = None

    @property
    def added_latency(self) -> float | None:
        if self.first_text is None:
            return None
        return self.first_text - self.sent - TTFT_S

    @property
    def working_signal(self) -> float | None:
        return None if self.working is None else self.working - self.sent

    @property
    def final_lag(self) -> float | None:
        if self.final is None or self.chat_last is None:
            return None
        return self.final - self.chat_last

    @property
    def fake_ttft_late(self) -> float | None:
        """How much later than scripted the fake sent its first token (an overloaded fake)."""
        if self.chat_first is None or self.chat_arrived is None:
            return None
        return self.chat_first - self.chat_arrived - TTFT_S


@dataclass
class RoundResult:
    platform: str
    level: int
    kind: str  # "latency" or "final lag"
    conversations: list[Conversation]
    wall_s: float
    cpu_s: float
    rss_before: int
    rss_peak: int
    commands: dict[str, int]
    message_rate: float  # highest edits/s of one message (over MESSAGE_WINDOW_S)
    workspace_rate: float  # highest edits/min of one workspace (guild)
    channel_rate: float  # highest edits per 5 s in one channel (Discord's unit)
    ack_s: list[float] = field(default_factory=list)  # Slack: event → HTTP 200 from the bot
    rate_limited: dict[str, int] = field(default_factory=dict)  # 429s by method (route) in this round

    @property
    def complete(self) -> int:
        return sum(c.final is not None for c in self.conversations)


@dataclass
class PlatformResult:
    platform: str
    rounds: list[RoundResult] = field(default_factory=list)
    rate_limited: int = 0
    peak_rss: int = 0
    idle_rss: int = 0
    round_trips: dict[str, int] = field(default_factory=dict)
    round_trip_turns: int = 0
    round_trip_commands: dict[str, int] = field(default_factory=dict)
    bot_errors: dict[str, int] = field(default_factory=dict)
    exit_code: int | None = None
    fake_errors: list[str] = field(default_factory=list)
    # Slack under team load: a question asked right after a burst (its final-text lag), and the
    # next turn of a thread while Slack is slow to take the previous turn's final edit (the gap
    # between that turn's last token and the next turn's model request).
    after_burst_lag: float | None = None
    after_burst_level: int = 0
    next_turn_gap: float | None = None
    next_turn_slack_delay_s: float = 0.0


def _window_max(times: Sequence[float], window: float) -> int:
    """The most of `times` inside any half-open window of `window` seconds."""
    ordered = sorted(times)
    best = 0
    start = 0
    for end, at in enumerate(ordered):
        while at - ordered[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def _bot_spec(platform: str, app_id: str) -> BotSpec:
    if platform == "slack":
        return BotSpec(name="benchslack", env={"BENCH_SLACK_BOT_TOKEN": SLACK_BOT_TOKEN,
                                                "BENCH_SLACK_SIGNING_SECRET": SLACK_SIGNING_SECRET},
                       toml=f"""
name = "benchslack"
platform = "slack"
app_id = "{app_id}"
model = "{MODEL}"
system_prompt = "You are a benchmark bot."

[slack]
bot_token = "${{BENCH_SLACK_BOT_TOKEN}}"
signing_secret = "${{BENCH_SLACK_SIGNING_SECRET}}"
""")
    return BotSpec(name="benchdiscord", env={"BENCH_DISCORD_TOKEN": DISCORD_TOKEN}, toml=f"""
name = "benchdiscord"
platform = "discord"
app_id = "{app_id}"
model = "{MODEL}"
system_prompt = "You are a benchmark bot."

[discord]
token = "${{BENCH_DISCORD_TOKEN}}"
guild_ids = ["2000"]
""")


class _SlackEvents:
    """Signed Events API requests over pre-opened keep-alive connections: the send time of each
    event is taken right before its bytes are handed to the socket, so no driver-side queueing
    (connection set-up, a client's pool limit) is counted as the bot's latency."""

    def __init__(self, port: int, path: str) -> None:
        self._port = port
        self._path = path
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def _ensure(self, count: int) -> None:
        self._idle = [(r, w) for r, w in self._idle if not r.at_eof() and not w.is_closing()]
        missing = count - len(self._idle)
        for start in range(0, missing, 50):  # a few at a time: no SYN burst at the bot's listener
            opened = await asyncio.gather(*(asyncio.open_connection("127.0.0.1", self._port)
                                            for _ in range(min(50, missing - start))))
            self._idle.extend(opened)

    def _request(self, payload: dict[str, Any]) -> bytes:
        body = json_body(payload)
        headers = signed_headers(body, SLACK_SIGNING_SECRET)
        head = [f"POST {self._path} HTTP/1.1", f"Host: 127.0.0.1:{self._port}",
                f"Content-Length: {len(body)}", "Connection: keep-alive"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        return ("\r\n".join(head) + "\r\n\r\n").encode() + body

    async def send(self, payloads: Sequence[dict[str, Any]]) -> tuple[list[float], list[float]]:
        """Sends every payload at once; returns (send times, ack durations)."""
        await self._ensure(len(payloads))
        requests = [self._request(p) for p in payloads]  # signed before the clock starts
        connections = self._idle[:len(payloads)]
        self._idle = self._idle[len(payloads):]
        sent: list[float] = []
        for (_, writer), request in zip(connections, requests, strict=True):
            sent.append(time.monotonic())
            writer.write(request)

        async def ack(index: int) -> float:
            reader, writer = connections[index]
            head = await reader.readuntil(b"\r\n\r\n")
            done = time.monotonic()
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if length:
                await reader.readexactly(length)
            if status != 200:
                raise RuntimeError(f"the bot answered an event with HTTP {status}")
            self._idle.append((reader, writer))
            return done - sent[index]

        acks = await asyncio.gather(*(ack(i) for i in range(len(payloads))))
        return sent, list(acks)

    def close(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()


class PlatformBench:
    """One platform's fakes and bot process; `run_round` is one burst of conversations."""

    def __init__(self, platform: str, redis: PrivateRedis, chat: Child, chat_url: str, *,
                 redis_url: str | None = None) -> None:
        self.platform = platform
        self.redis = redis
        self.chat = chat
        self.chat_url = chat_url
        self.redis_url = redis_url or redis.url
        self.prefix = f"lbbench{platform}{int(time.time())}"
        self.fake: Child | None = None
        self.bot: BotProcess | None = None
        self.sampler: RssSampler | None = None
        self._events: _SlackEvents | None = None
        self._numbers = itertools.count(1)
        self._app_id = "A1"

    async def __aenter__(self) -> PlatformBench:
        env = {"LUNOS_API_KEY": API_KEY, "LUNOS_BASE_URL": self.chat_url, "REDIS_URL": self.redis_url,
               "REDIS_KEY_PREFIX": self.prefix}
        if self.platform == "slack":
            self.fake = Child("fake-slack", serve_slack, SLACK_RATE_LIMITS, ANSWER, SLACK_BOT_TOKEN)
            ready = await self.fake.start()
            self._app_id = ready["app_id"]
            env["SLACK_API_URL"] = ready["base_url"]
        else:
            self.fake = Child("fake-discord", serve_discord, DISCORD_CHANNELS, DISCORD_BUCKET_LIMIT,
                              DISCORD_BUCKET_WINDOW_S, ANSWER)
            ready = await self.fake.start()
            env["DISCORD_API_URL"] = ready["api_base"]
            env["DISCORD_GATEWAY_URL"] = ready["gateway_url"]
        self.bot = BotProcess(_bot_spec(self.platform, f"bench-{self.platform}" if self.platform == "discord"
                                        else "bench-slack"), env)
        await self.bot.start()
        if self.platform == "discord":
            await self.fake.call("wait_ready", 30.0)
        else:
            self._events = _SlackEvents(self.bot.port, f"/slack/{self.bot.spec.name}/events")
        self.sampler = RssSampler(self.bot.pid)
        self.sampler.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.sampler is not None:
            await self.sampler.stop()
        if self._events is not None:
            self._events.close()
        if self.bot is not None:
            await self.bot.stop()
            self.bot.cleanup(keep_log=LOG_DIR / f"{self.platform}-{self.prefix}.log")
        if self.fake is not None:
            await self.fake.stop()
        await self.redis.delete_prefix(self.prefix)

    # -- one round ---------------------------------------------------------------------------

    async def run_round(self, level: int, *, one_workspace: bool) -> RoundResult:
        assert self.bot is not None and self.fake is not None and self.sampler is not None
        await self.fake.call("clear")
        await self.chat.call("clear")
        commands_before = await self.redis.commandstats()
        rss_before = rss_bytes(self.bot.pid)
        cpu_before = cpu_seconds(self.bot.pid)
        started = time.monotonic()
        if self.platform == "slack":
            conversations, acks = await self._send_slack(level, one_workspace)
        else:
            conversations, acks = await self._send_discord(level, one_workspace), []
        # Polling, not an event: answers and finals are counted in other processes.
        deadline = started + ROUND_TIMEOUT_S + 0.1 * level
        while await self.chat.call("done") < level and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(POLL_S)
        # A latency round waits a little for the final texts; a final-lag round for all of them.
        finals_wait = FINAL_LAG_TIMEOUT_PER_REPLY_S * level if one_workspace else LATENCY_FINALS_WAIT_S
        deadline = time.monotonic() + finals_wait
        while await self.fake.call("finals") < level and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(POLL_S)
        finished = time.monotonic()
        await asyncio.sleep(SETTLE_S)
        cpu_s = cpu_seconds(self.bot.pid) - cpu_before
        commands_after = await self.redis.commandstats()
        commands = {k: v - commands_before.get(k, 0) for k, v in commands_after.items()
                    if v - commands_before.get(k, 0) > 0}
        calls = await self.fake.call("calls")
        stamps = await self.chat.call("stamps")
        by_tag = {c.tag: c for c in conversations}
        for tag, arrived, first, last in stamps:
            conv = by_tag.get(tag)
            if conv is not None:
                conv.chat_arrived, conv.chat_first, conv.chat_last = arrived, first, last
        if self.platform == "slack":
            rates = self._read_slack(conversations, calls)
        else:
            rates = self._read_discord(conversations, calls)
        limited: dict[str, int] = defaultdict(int)
        for call in calls:
            if call[-1] == 429:
                limited[str(call[0])] += 1
        return RoundResult(
            platform=self.platform, level=level, kind="final lag" if one_workspace else "latency",
            conversations=conversations, wall_s=finished - started, cpu_s=cpu_s, rss_before=rss_before,
            rss_peak=self.sampler.peak_between(started, finished + SETTLE_S), commands=commands,
            message_rate=rates[0], workspace_rate=rates[1], channel_rate=rates[2], ack_s=acks,
            rate_limited=dict(limited),
        )

    async def after_burst(self, level: int) -> float | None:
        """`level` questions at once in one workspace; as soon as their model streams have ended
        (their final states may still be on their way), one more: its final-text lag."""
        assert self.fake is not None
        await self.chat.call("clear")
        await self._send_slack(level, True)
        deadline = time.monotonic() + ROUND_TIMEOUT_S + 0.1 * level
        while await self.chat.call("done") < level and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(POLL_S)
        late = await self.run_round(1, one_workspace=True)
        return late.conversations[0].final_lag

    async def next_turn_gap(self, slack_delay_s: float) -> float | None:
        """Two questions in one thread, the second asked while the first streams, with Slack
        answering chat.update `slack_delay_s` late: seconds from the first turn's last token to the
        second turn's model request (the conversation lock must not wait for the final edit)."""
        assert self.fake is not None and self._events is not None
        await self.fake.call("clear")
        await self.chat.call("clear")
        await self.fake.call("delay", "chat.update", slack_delay_s)
        try:
            digits = SLACK_TEAM[1:]
            n1, n2 = next(self._numbers), next(self._numbers)
            ts1, ts2 = f"{1_800_000_000 + n1}.000100", f"{1_800_000_000 + n2}.000100"
            common = {"channel": f"C{digits}9999", "user": f"U{n1:07d}", "team_id": f"T{digits}",
                      "api_app_id": self._app_id}
            await self._events.send([app_mention_event(text=f"<@UBOT> question [q{n1}]", ts=ts1,
                                                       event_id=f"EvBench{n1}", **common)])
            deadline = time.monotonic() + ROUND_TIMEOUT_S
            while not await self._stamp(f"q{n1}") and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(POLL_S)
            await self._events.send([app_mention_event(text=f"<@UBOT> and then? [q{n2}]", ts=ts2,
                                                       thread_ts=ts1, event_id=f"EvBench{n2}", **common)])
            while await self.chat.call("done") < 2 and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(POLL_S)
            first, second = await self._stamp(f"q{n1}"), await self._stamp(f"q{n2}")
        finally:
            await self.fake.call("delay", "chat.update", 0.0)
        if first is None or second is None or first[3] is None:
            return None
        return float(second[1]) - float(first[3])

    async def _stamp(self, tag: str) -> tuple[Any, ...] | None:
        """(tag, request arrived, first text, last text) at the fake chat API, or None."""
        for stamp in await self.chat.call("stamps"):
            if stamp[0] == tag:
                return tuple(stamp)
        return None

    async def _send_slack(self, level: int, one_workspace: bool) -> tuple[list[Conversation], list[float]]:
        assert self._events is not None
        # One bot token is one workspace (the bot drops other teams' events): every conversation is
        # in the bot's workspace, each in its own channel.
        digits = SLACK_TEAM[1:]
        payloads: list[dict[str, Any]] = []
        conversations: list[Conversation] = []
        for i in range(level):
            n = next(self._numbers)
            channel = f"C{digits}{i:04d}"
            ts = f"{1_800_000_000 + n}.000100"
            payloads.append(app_mention_event(
                text=f"<@UBOT> question [q{n}]", channel=channel, user=f"U{n:07d}", ts=ts,
                team_id=f"T{digits}", api_app_id=self._app_id, event_id=f"EvBench{n}"))
            conversations.append(Conversation(tag=f"q{n}", key=(channel, ts), workspace=f"T{digits}",
                                              sent=0.0))
        sent, acks = await self._events.send(payloads)
        for conv, at in zip(conversations, sent, strict=True):
            conv.sent = at
        return conversations, acks

    async def _send_discord(self, level: int, one_guild: bool) -> list[Conversation]:
        assert self.fake is not None
        per_channel = DISCORD_CONVERSATIONS_PER_CHANNEL if one_guild else 1
        events: list[tuple[str, str, str]] = []
        tags: list[str] = []
        for i in range(level):
            n = next(self._numbers)
            channel = str(100_000 + (i // per_channel) % DISCORD_CHANNELS)
            events.append((channel, f"<@{DISCORD_BOT_ID}> question [q{n}]", str(700_000 + n)))
            tags.append(f"q{n}")
        sent = await self.fake.call("send", events)
        return [Conversation(tag=tag, key=(event[0], message_id), workspace="2000", sent=at)
                for tag, event, (message_id, at) in zip(tags, events, sent, strict=True)]

    @staticmethod
    def _read_slack(conversations: list[Conversation], calls: list[tuple[Any, ...]]
                    ) -> tuple[float, float, float]:
        by_thread = {c.key: c for c in conversations}
        by_message: dict[tuple[str, str], Conversation] = {}
        edit_times: dict[tuple[str, str], list[float]] = defaultdict(list)
        workspace_edits: dict[str, list[float]] = defaultdict(list)
        for method, channel, ts, thread_ts, reaction_ts, chars, final, at, status in calls:
            conv: Conversation | None = None
            if method == "chat.postMessage":
                conv = by_thread.get((channel, thread_ts))
                if conv is not None and status == 200 and ts:
                    by_message[(channel, ts)] = conv
            elif method == "chat.update":
                conv = by_message.get((channel, ts))
                if conv is not None:
                    conv.edits += 1
                    edit_times[(channel, ts)].append(at)
                    workspace_edits[conv.workspace].append(at)
            elif method in ("reactions.add", "assistant.threads.setStatus"):
                conv = by_thread.get((channel, reaction_ts or thread_ts))
            if conv is None:
                continue
            if conv.working is None or at < conv.working:
                conv.working = at
            if method in ("chat.postMessage", "chat.update") and status == 200:
                if chars and conv.first_text is None:
                    conv.first_text = at
                if final and conv.final is None:
                    conv.final = at
        return _rates(edit_times, workspace_edits, {})

    @staticmethod
    def _read_discord(conversations: list[Conversation], calls: list[tuple[Any, ...]]
                      ) -> tuple[float, float, float]:
        by_trigger = {c.key[1]: c for c in conversations}
        by_message: dict[str, Conversation] = {}
        by_channel: dict[str, list[Conversation]] = defaultdict(list)
        for conv in conversations:
            by_channel[conv.key[0]].append(conv)
        edit_times: dict[str, list[float]] = defaultdict(list)
        guild_edits: dict[str, list[float]] = defaultdict(list)
        channel_edits: dict[str, list[float]] = defaultdict(list)
        for kind, channel, message_id, replied_to, chars, final, at, status in calls:
            conv: Conversation | None = None
            if kind == "typing":
                for candidate in by_channel.get(channel, []):
                    if candidate.sent <= at and candidate.working is None:
                        candidate.working = at
                continue
            if kind == "post":
                conv = by_trigger.get(str(replied_to)) if replied_to is not None else None
                if conv is not None and status == 200 and message_id:
                    by_message[str(message_id)] = conv
            elif kind == "edit":
                conv = by_message.get(str(message_id))
                if conv is not None:
                    conv.edits += 1
                    edit_times[str(message_id)].append(at)
                    guild_edits[conv.workspace].append(at)
                    channel_edits[channel].append(at)
            if conv is None:
                continue
            if conv.working is None or at < conv.working:
                conv.working = at
            if status == 200:
                if chars and conv.first_text is None:
                    conv.first_text = at
                if final and conv.final is None:
                    conv.final = at
        return _rates(edit_times, guild_edits, channel_edits)


def _rates(per_message: dict[Any, list[float]], per_workspace: dict[str, list[float]],
           per_channel: dict[str, list[float]]) -> tuple[float, float, float]:
    message = max((_window_max(t, MESSAGE_WINDOW_S) for t in per_message.values()), default=0)
    workspace = max((_window_max(t, WORKSPACE_WINDOW_S) for t in per_workspace.values()), default=0)
    channel = max((_window_max(t, DISCORD_BUCKET_WINDOW_S) for t in per_channel.values()), default=0)
    return message / MESSAGE_WINDOW_S, float(workspace), float(channel)


async def run_platform(platform: str, sizes: ProcessSizes, redis: PrivateRedis, chat: Child, chat_url: str,
                       *, log: Any) -> PlatformResult:
    """Every latency level, then the one-workspace final-lag rounds, then the Redis round-trip count."""
    result = PlatformResult(platform)
    async with PlatformBench(platform, redis, chat, chat_url) as bench:
        assert bench.bot is not None and bench.fake is not None
        await bench.run_round(1, one_workspace=False)  # uncounted: connections, caches, Lua scripts
        result.idle_rss = rss_bytes(bench.bot.pid)
        # Final-lag rounds first: they wait for every final text, so they start from a quiet budget.
        for level in sizes.final_lag_levels:
            outcome = await bench.run_round(level, one_workspace=True)
            result.rounds.append(outcome)
            log(f"  {platform} final lag {level:>5} (one workspace): {outcome.complete}/{level} "
                f"final in {outcome.wall_s:.1f} s")
        for level in sizes.levels:
            for round_no in range(sizes.rounds.get(level, 1)):
                outcome = await bench.run_round(level, one_workspace=False)
                result.rounds.append(outcome)
                log(f"  {platform} latency {level:>5} round {round_no + 1}: "
                    f"{outcome.complete}/{level} final in {outcome.wall_s:.1f} s")
        if platform == "slack":
            burst = sizes.final_lag_levels[0]
            result.after_burst_lag, result.after_burst_level = await bench.after_burst(burst), burst
            result.next_turn_slack_delay_s = NEXT_TURN_SLACK_DELAY_S
            result.next_turn_gap = await bench.next_turn_gap(NEXT_TURN_SLACK_DELAY_S)
            log(f"  {platform} after a burst of {burst}: final lag {result.after_burst_lag}; next turn gap "
                f"{result.next_turn_gap} with chat.update {NEXT_TURN_SLACK_DELAY_S:g} s late")
        result.rate_limited = int(await bench.fake.call("rate_limited"))
        if platform == "discord":
            result.fake_errors = list(await bench.fake.call("internal_errors"))
        result.peak_rss = peak_rss_bytes(bench.bot.pid)
        result.bot_errors = bench.bot.count_log('"level": "error"', '"level": "warning"', "Traceback")
    result.exit_code = bench.bot.exit_code if bench.bot is not None else None
    await _count_round_trips(platform, sizes, redis, chat, chat_url, result, log=log)
    return result


async def _count_round_trips(platform: str, sizes: ProcessSizes, redis: PrivateRedis, chat: Child,
                             chat_url: str, result: PlatformResult, *, log: Any) -> None:
    """A second bot process whose Redis traffic passes a counting proxy: one turn at a time."""
    proxy = Child("redis-proxy", serve_redis_proxy, redis.port)
    proxy_port = await proxy.start()
    try:
        async with PlatformBench(platform, redis, chat, chat_url,
                                 redis_url=f"redis://127.0.0.1:{proxy_port}/0") as bench:
            await bench.run_round(1, one_workspace=False)  # warm: connections, name cache, scripts
            await proxy.call("reset")
            before = await redis.commandstats()
            for _ in range(sizes.redis_turns):
                await bench.run_round(1, one_workspace=False)
            after = await redis.commandstats()
            result.round_trips = dict(await proxy.call("counts"))
            result.round_trip_turns = sizes.redis_turns
            result.round_trip_commands = {k: v - before.get(k, 0) for k, v in after.items()
                                          if v - before.get(k, 0) > 0}
        log(f"  {platform} Redis round trips counted over {sizes.redis_turns} turns")
    finally:
        await proxy.stop()


async def start_chat_api() -> tuple[Child, str]:
    chat = Child("fake-chat-api", serve_chat_api, API_KEY, MODEL,
                 {"text": ANSWER, "ttft_s": TTFT_S, "token_delay_s": TOKEN_DELAY_S,
                  "chunk_chars": CHUNK_CHARS})
    url = await chat.start()
    return chat, str(url)
