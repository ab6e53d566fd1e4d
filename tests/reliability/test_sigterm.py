"""SIGTERM mid-stream to the real `lunos-bots run` process serving a Slack app in HTTP mode: intake
closes (503, so Slack retries elsewhere), every reply in flight ends in a final state, the process
exits 0, and its log lines hold no key or token."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from pathlib import Path

import aiohttp
from redis.asyncio import Redis

from tests.conftest import redis_url
from tests.fakes.chat_api import Behaviour, FakeChatAPI
from tests.fakes.slack_api import FakeSlackAPI, app_mention_event, signed_headers
from tests.reliability.harness import (
    API_KEY,
    FIRST_TS,
    MODEL_A,
    MODEL_B,
    SECRETS,
    SLACK_BOT_TOKEN,
    SLACK_SIGNING_SECRET,
    Workload,
)
from tests.reliability.invariants import Sent, check
from tests.reliability.test_platform_faults import free_port

ROOT = Path(__file__).resolve().parents[2]
CONVERSATIONS = 5
PROCESS_TIMEOUT_S = 30.0
# About 2 s of streaming per reply: SIGTERM lands while every one of them is growing.
SLOW_ANSWER = Behaviour(chunk_chars=8, token_delay_s=0.08)
BOT = "relproc"
DEFINITION = f"""
name = "{BOT}"
platform = "slack"
app_id = "rel-slack-process"
model = "{MODEL_A}"
fallback_models = ["{MODEL_B}"]

[slack]
bot_token = "${{SLACK_BOT_TOKEN}}"
signing_secret = "${{SLACK_SIGNING_SECRET}}"
"""


class LogWatcher:
    """Reads a process's stderr line by line; tests wait for a log event by name."""

    def __init__(self, stream: asyncio.StreamReader) -> None:
        self.lines: list[str] = []
        self._stream = stream
        self._changed = asyncio.Condition()
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while line := await self._stream.readline():
            async with self._changed:
                self.lines.append(line.decode(errors="replace"))
                self._changed.notify_all()

    def events(self) -> list[str]:
        found = []
        for line in self.lines:
            try:
                found.append(str(json.loads(line).get("event")))
            except ValueError:
                continue
        return found

    async def wait_for(self, event: str) -> None:
        async with asyncio.timeout(PROCESS_TIMEOUT_S), self._changed:
            await self._changed.wait_for(lambda: event in self.events())


class TestSigterm:
    """A graceful stop of the real process with replies streaming."""

    async def test_sigterm_mid_stream(self, tmp_path: Path) -> None:
        """Five replies streaming when SIGTERM arrives: all five end complete, a new event gets 503,
        exit code 0, no secret in the process's logs."""
        (tmp_path / f"{BOT}.toml").write_text(DEFINITION)
        port, prefix = free_port(), f"lbrel-proc-{uuid.uuid4().hex[:8]}"
        async with FakeChatAPI(api_key=API_KEY) as api, FakeSlackAPI(bot_token=SLACK_BOT_TOKEN) as slack:
            api.default_behaviour = SLOW_ANSWER
            env = {k: v for k, v in os.environ.items() if not k.startswith(("LUNOS_", "SLACK_", "DISCORD_"))}
            env.update({
                "LUNOS_API_KEY": API_KEY, "LUNOS_BASE_URL": api.base_url, "SLACK_API_URL": slack.base_url,
                "SLACK_BOT_TOKEN": SLACK_BOT_TOKEN, "SLACK_SIGNING_SECRET": SLACK_SIGNING_SECRET,
                "HOST": "127.0.0.1", "PORT": str(port), "REDIS_URL": redis_url(), "REDIS_KEY_PREFIX": prefix,
                "LOG_FORMAT": "json", "LOG_LEVEL": "DEBUG",
            })
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bots.cli", "run", "--bots", str(tmp_path), cwd=ROOT, env=env,
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            assert proc.stderr is not None
            logs = LogWatcher(proc.stderr)
            url = f"http://127.0.0.1:{port}/slack/{BOT}/events"
            workload = Workload("slack", CONVERSATIONS, long_every=0)
            try:
                await logs.wait_for("bot.started")
                sent = [self.event(slack, workload, i) for i in range(CONVERSATIONS)]
                async with aiohttp.ClientSession() as http:
                    assert await asyncio.gather(*(self.post(http, url, s.handle) for s in sent)) == [200] * 5
                    async with asyncio.timeout(PROCESS_TIMEOUT_S):
                        await slack.wait_for_call("chat.postMessage", count=CONVERSATIONS)
                    assert all(not r.finished.is_set() for r in api.requests)  # every reply is streaming
                    proc.send_signal(signal.SIGTERM)
                    await logs.wait_for("slack.intake_closed")  # after run.stopping and the sweeper's stop
                    late = self.event(slack, workload, CONVERSATIONS)
                    assert await self.post(http, url, late.handle) == 503
                async with asyncio.timeout(PROCESS_TIMEOUT_S):
                    code = await proc.wait()
                    await logs.task
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
                await self.forget(prefix)
            for message in sent:
                event = message.handle["event"]
                message.replies = [m.text for m in slack.bot_replies(event["channel"], event["ts"])]
            report = check(sent, api.requests, alive=code == 0, log_text="".join(logs.lines), secrets=SECRETS)
        report.assert_clean()
        assert report.outcomes["answered"] == CONVERSATIONS
        assert len(api.requests) == CONVERSATIONS  # the refused event never reached the model

    @staticmethod
    def event(slack: FakeSlackAPI, workload: Workload, index: int) -> Sent:
        """A mention by a user of its own in a channel of its own: posts are paced per channel, every
        first post should be out before the signal, and no user is over their turns-in-flight limit."""
        token, text = workload.text(index)
        ts = f"{FIRST_TS + index + 1}.{uuid.uuid4().int % 10**6:06d}"
        payload = app_mention_event(
            text=f"<@{slack.bot_user_id}> {text}", channel=f"C{index + 1}", user=f"U{index + 1}", ts=ts,
            team_id=slack.team_id,
            api_app_id=slack.app_id, event_id="Ev" + uuid.uuid4().hex[:12].upper(),
            bot_user_id=slack.bot_user_id,
        )
        slack.seed_from_event(payload)
        return Sent("slack", workload.marker(index), token, text, handle=payload)

    @staticmethod
    async def post(http: aiohttp.ClientSession, url: str, payload: dict[str, object]) -> int:
        body = json.dumps(payload).encode()
        async with http.post(url, data=body, headers=signed_headers(body, SLACK_SIGNING_SECRET)) as response:
            await response.read()
            return response.status

    @staticmethod
    async def forget(prefix: str) -> None:
        redis = Redis.from_url(redis_url())
        async for key in redis.scan_iter(match=f"{prefix}:*"):
            await redis.delete(key)
        await redis.aclose()
