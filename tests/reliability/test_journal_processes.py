"""Replies that always finish, across real processes: a `lunos-bots run` replica killed with SIGKILL
mid-reply leaves its reply to the reply journal, and another replica (Slack: one already running;
Discord: one started afterwards) ends it, in place, with the interrupted note; exactly one reply
message remains, without the streaming cursor. Leases are shortened (JOURNAL_LEASE_S) so the
suite stays fast; the guarantee is the lease plus one sweep."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from redis.asyncio import Redis

from adapters.discord.sink import DISCORD_STREAMING_INDICATOR
from adapters.slack.sink import STREAMING_INDICATOR
from core.journal import INTERRUPTED_NOTE
from tests.adapters.discord.conftest import GENERAL, mention
from tests.bots.test_runner import RunProcess, free_port, run_env
from tests.fakes.chat_api import Behaviour, FakeChatAPI
from tests.fakes.discord_api import FakeDiscord
from tests.fakes.slack_api import FakeSlackAPI, app_mention_event, signed_headers

LEASE_S = 2.0
SWEEP_S = 0.25
FINALISED_WITHIN_S = 30.0  # the bound: the lease plus one sweep, with room for a slow machine
SLOW_ANSWER = Behaviour(text="A long answer that streams slowly. " * 40, chunk_chars=6, token_delay_s=0.05)
SIGNING_SECRET = "journal-signing-secret"
SLACK_TOKEN = "xoxb-journal"
DISCORD_TOKEN = "discord-token-for-journal-0123456789"
SLACK_BOT = """
name = "replica"
platform = "slack"
app_id = "lunos-replica"
model = "test/model-a"
[slack]
bot_token = "${SLACK_BOT_TOKEN}"
signing_secret = "${SLACK_SIGNING_SECRET}"
"""
DISCORD_BOT = """
name = "replica"
platform = "discord"
app_id = "lunos-replica"
model = "test/model-a"
[discord]
token = "${DISCORD_TOKEN}"
guild_ids = ["2000"]
"""


@pytest.fixture
async def prefix(redis: Redis) -> AsyncIterator[str]:
    """The replicas' shared key prefix; their keys are deleted afterwards."""
    value = f"lbtest-journal-{uuid.uuid4().hex[:8]}"
    yield value
    async for key in redis.scan_iter(match=f"{value}:*"):
        await redis.delete(key)


def journal_env(chat_api: FakeChatAPI, prefix: str, **extra: str) -> dict[str, str]:
    return run_env(chat_api, prefix, HOST="127.0.0.1", PORT=str(free_port()), JOURNAL_LEASE_S=str(LEASE_S),
                   JOURNAL_SWEEP_INTERVAL_S=str(SWEEP_S), **extra)


class TestKilledReplica:
    """SIGKILL mid-reply: no reply is left cut off."""

    async def test_slack_another_replica_finalises(
        self, chat_api: FakeChatAPI, prefix: str, tmp_path: Path
    ) -> None:
        """Two replicas behind one Redis; the one answering dies; the other ends the reply."""
        (tmp_path / "replica.toml").write_text(SLACK_BOT)
        chat_api.default_behaviour = SLOW_ANSWER
        async with FakeSlackAPI(bot_token=SLACK_TOKEN) as slack:
            tokens = {"SLACK_BOT_TOKEN": SLACK_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET,
                      "SLACK_API_URL": slack.base_url}
            env_a, env_b = journal_env(chat_api, prefix, **tokens), journal_env(chat_api, prefix, **tokens)
            replica_a = await RunProcess.start("--bots", str(tmp_path), env=env_a, stdin=None)
            replica_b = await RunProcess.start("--bots", str(tmp_path), env=env_b, stdin=None)
            try:
                await replica_a.wait_for_event("bot.started")
                await replica_b.wait_for_event("bot.started")
                payload = app_mention_event(text="<@UBOT> tell me everything", ts="1700000001.000100",
                                            event_id="EvJournal1")
                slack.seed_from_event(payload)
                body = json.dumps(payload).encode()
                url = f"http://127.0.0.1:{env_a['PORT']}/slack/replica/events"
                async with aiohttp.ClientSession() as http, http.post(
                    url, data=body, headers=signed_headers(body, SIGNING_SECRET)
                ) as response:
                    assert response.status == 200
                await slack.wait_for(lambda: any(m.edits for m in slack.bot_replies("C1", "1700000001.000100")),
                                     timeout=FINALISED_WITHIN_S)
                await replica_a.kill()  # SIGKILL: no goodbye, no final edit
                [message] = slack.bot_replies("C1", "1700000001.000100")
                assert message.text.endswith(STREAMING_INDICATOR), "cut off mid-reply"
                await slack.wait_for(lambda: message.text.endswith(INTERRUPTED_NOTE), timeout=FINALISED_WITHIN_S)
                assert [m.text for m in slack.bot_replies("C1", "1700000001.000100")] == [message.text]
                assert STREAMING_INDICATOR not in message.text
                await replica_b.wait_for_event("journal.finalised")
            finally:
                await replica_a.kill()
                await replica_b.kill()

    async def test_discord_the_next_process_finalises(
        self, chat_api: FakeChatAPI, prefix: str, tmp_path: Path
    ) -> None:
        """The only process dies mid-reply; the next one to start ends the reply it left."""
        (tmp_path / "replica.toml").write_text(DISCORD_BOT)
        chat_api.default_behaviour = SLOW_ANSWER
        async with FakeDiscord(expected_token=DISCORD_TOKEN) as fake:
            urls = {"DISCORD_TOKEN": DISCORD_TOKEN, "DISCORD_API_URL": fake.api_base,
                    "DISCORD_GATEWAY_URL": fake.gateway_url}
            first = await RunProcess.start("--bots", str(tmp_path), env=journal_env(chat_api, prefix, **urls),
                                           stdin=None)
            second: RunProcess | None = None
            try:
                await first.wait_for_event("bot.started")
                await fake.wait_for_identify(timeout=FINALISED_WITHIN_S)
                await fake.send_message_create(channel_id=GENERAL, content="<@1000> tell me", mentions=mention(fake))
                await fake.wait_for(lambda: any(m["content"].endswith(DISCORD_STREAMING_INDICATOR)
                                                and len(m["content"]) > 40 for m in fake.bot_messages(GENERAL)),
                                    timeout=FINALISED_WITHIN_S)
                await first.kill()
                second = await RunProcess.start("--bots", str(tmp_path), env=journal_env(chat_api, prefix, **urls),
                                                stdin=None)
                await fake.wait_for(lambda: all(m["content"].endswith(INTERRUPTED_NOTE)
                                                for m in fake.bot_messages(GENERAL)), timeout=FINALISED_WITHIN_S)
                [answer] = fake.bot_messages(GENERAL)
                assert DISCORD_STREAMING_INDICATOR not in answer["content"]
                assert fake.deleted_message_ids == []
            finally:
                await first.kill()
                if second is not None:
                    await second.kill()

