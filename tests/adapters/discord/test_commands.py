"""Slash commands `/reset` and `/help`: registered per bot (guild-scoped or global) and answered
privately through real INTERACTION_CREATE events, their tokens kept out of the logs; `reset` typed
in a mention does the same."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from redis.asyncio import Redis

from adapters.discord.access import REFUSED_USER, AccessPolicy
from adapters.discord.bot import NOTHING_TO_RESET
from adapters.discord.redaction import REDACTED
from adapters.discord.translate import latest_ref
from core.engine import RESET_REPLY
from core.history import RedisHistory
from core.message_index import MessageIndex
from core.profile import HistoryLimits
from core.redis_keys import RedisKeys
from core.types import ConversationKey, Turn
from tests.adapters.discord.conftest import (
    ALICE,
    GENERAL,
    GUILD,
    WAIT_S,
    BotStarter,
    answer_chain,
    mention,
    request_contents,
)
from tests.fakes.chat_api import Behaviour, FakeChatAPI
from tests.fakes.discord_api import FakeDiscord

A = "test/model-a"
EPHEMERAL = 1 << 6


async def private_answer(fake: FakeDiscord, interaction: dict[str, Any]) -> dict[str, Any]:
    """The interaction's original response once it holds text (a deferred one starts empty)."""
    iid = interaction["id"]

    def answered() -> bool:
        original = fake.interaction_original(iid)
        return original is not None and bool(original["content"])

    await fake.wait_for(answered, WAIT_S)
    original = fake.interaction_original(iid)
    assert original is not None and original["flags"] & EPHEMERAL
    return original


class TestRegistration:
    """Commands are registered where the definition says."""

    async def test_guild_ids_register_in_those_guilds(self, fake: FakeDiscord, start_bot: BotStarter) -> None:
        """With guild_ids the commands are guild commands (available at once), not global."""
        await start_bot(guild_ids=(int(GUILD),))
        assert {c["name"] for c in fake.guild_commands[GUILD]} == {"reset", "help", "persona"}
        assert fake.global_commands == []

    async def test_no_guild_ids_register_globally(self, fake: FakeDiscord, start_bot: BotStarter) -> None:
        """Without guild_ids the commands are global."""
        await start_bot()
        assert {c["name"] for c in fake.global_commands} == {"reset", "help", "persona"}
        assert fake.guild_commands == {}

    async def test_a_refusing_guild_does_not_cost_the_next_its_commands(
        self, fake: FakeDiscord, start_bot: BotStarter
    ) -> None:
        """Registration in a guild that refuses (here one the bot is not in) fails alone: the guild
        listed after it still gets its commands."""
        running = await start_bot(guild_ids=(9999, int(GUILD)))
        assert [c.status for c in fake.calls_matching("PUT", "/guilds/9999/commands")] == [403]
        assert {c["name"] for c in fake.guild_commands[GUILD]} == {"reset", "help", "persona"}
        assert running.bot.ready


class TestReset:
    """`/reset` forgets the conversation it is used in."""

    async def test_reset_in_a_dm(
        self, fake: FakeDiscord, start_bot: BotStarter, chat_api: FakeChatAPI, redis: Redis,
        keys: RedisKeys,
    ) -> None:
        """After /reset in a DM the history is gone and the next message starts fresh."""
        chat_api.script(A, Behaviour(text="Noted: 42."), Behaviour(text="I don't know."))
        running = await start_bot()
        dm = fake.dm_channel_id(ALICE)
        history = keys.history("testbot", ConversationKey("discord", "dm", dm))
        sent = await fake.send_message_create(channel_id=dm, content="my number is 42")
        assert await running.outcomes.of(sent["id"]) == "answered"
        assert await redis.llen(history) == 2

        original = await private_answer(fake, await fake.send_interaction(name="reset", channel_id=dm))
        assert original["content"] == RESET_REPLY
        assert await redis.exists(history) == 0

        after = await fake.send_message_create(channel_id=dm, content="what is my number?")
        assert await running.outcomes.of(after["id"]) == "answered"
        assert request_contents(chat_api.requests[-1].body)[1:] == ["what is my number?"]

    async def test_reset_in_a_channel_forgets_your_latest_chain(
        self, fake: FakeDiscord, start_bot: BotStarter, redis: Redis, keys: RedisKeys
    ) -> None:
        """In a plain channel /reset forgets the reply chain you last talked to the bot in."""
        running = await start_bot(guild_ids=(int(GUILD),))
        sent = await fake.send_message_create(channel_id=GENERAL, content="<@1000> hi", mentions=mention(fake))
        assert await running.outcomes.of(sent["id"]) == "answered"
        history = keys.history("testbot", ConversationKey("discord", GUILD, GENERAL, sent["id"]))
        assert await redis.llen(history) == 2
        original = await private_answer(fake, await fake.send_interaction(name="reset", channel_id=GENERAL))
        assert original["content"] == RESET_REPLY
        assert await redis.exists(history) == 0

    async def test_reset_where_there_is_nothing_to_forget(self, fake: FakeDiscord, start_bot: BotStarter) -> None:
        """In a channel with no chain of yours, /reset says how conversations work there."""
        await start_bot()
        original = await private_answer(fake, await fake.send_interaction(name="reset", channel_id=GENERAL))
        assert original["content"] == NOTHING_TO_RESET

    async def test_reset_refused_for_a_denied_user(
        self, fake: FakeDiscord, start_bot: BotStarter, redis: Redis, keys: RedisKeys
    ) -> None:
        """A denied user gets the refusal, privately, and their latest chain keeps its history."""
        running = await start_bot(access=AccessPolicy(denied_users=frozenset({int(ALICE)})))
        chain = ConversationKey("discord", GUILD, GENERAL, "4242")  # from before the user was denied
        await MessageIndex(redis, keys, ttl_s=3600).remember(
            "testbot", [latest_ref(int(GENERAL), int(ALICE))], chain)
        await RedisHistory(redis, keys, HistoryLimits(), bot="testbot").append(
            chain, [Turn("user", "my number is 42"), Turn("assistant", "Noted.")])
        interaction = await fake.send_interaction(name="reset", channel_id=GENERAL)
        await fake.wait_for(lambda: interaction["id"] in fake.interaction_callbacks, WAIT_S)
        callback = fake.interaction_callbacks[interaction["id"]]
        assert callback["type"] == 4
        assert callback["data"]["content"] == REFUSED_USER and callback["data"]["flags"] & EPHEMERAL
        await running.bot.wait_idle()  # the command has run to its end
        assert await redis.llen(keys.history("testbot", chain)) == 2

    async def test_typed_reset_in_a_mention(
        self, fake: FakeDiscord, start_bot: BotStarter, redis: Redis, keys: RedisKeys
    ) -> None:
        """"@bot reset" in a channel forgets your latest chain too, answered as a reply."""
        running = await start_bot()
        sent = await fake.send_message_create(channel_id=GENERAL, content="<@1000> hi", mentions=mention(fake))
        assert await running.outcomes.of(sent["id"]) == "answered"
        history = keys.history("testbot", ConversationKey("discord", GUILD, GENERAL, sent["id"]))
        reset = await fake.send_message_create(channel_id=GENERAL, content="<@1000> reset",
                                               mentions=mention(fake))
        assert await running.outcomes.of(reset["id"]) == "command"
        assert [m["content"] for m in answer_chain(fake, GENERAL, reset["id"])] == [RESET_REPLY]
        assert await redis.exists(history) == 0


class TestHelp:
    """`/help`."""

    async def test_help_is_private(self, fake: FakeDiscord, start_bot: BotStarter) -> None:
        """The help text, visible only to the user who asked."""
        running = await start_bot(guild_ids=(int(GUILD),))
        interaction = await fake.send_interaction(name="help", channel_id=GENERAL)
        await fake.wait_for(lambda: interaction["id"] in fake.interaction_callbacks, WAIT_S)
        callback = fake.interaction_callbacks[interaction["id"]]
        assert callback["data"]["content"] == running.engine.help_text()
        assert callback["data"]["flags"] & EPHEMERAL


class TestInteractionTokens:
    """An interaction's token is a credential; discord.py's log lines never carry it."""

    async def test_tokens_are_redacted_from_discord_py_logs(
        self, fake: FakeDiscord, start_bot: BotStarter, caplog: pytest.LogCaptureFixture
    ) -> None:
        """/reset with its answer rate-limited once: discord.py logs the interaction event and the
        webhook URLs (and the 429), every one of them with the token replaced."""
        caplog.set_level(logging.DEBUG, logger="discord")
        running = await start_bot()
        dm = fake.dm_channel_id(ALICE)
        fake.fail_next("PATCH", "/webhooks/", status=429, retry_after=0.05)
        interaction = await fake.send_interaction(name="reset", channel_id=dm)
        assert (await private_answer(fake, interaction))["content"] == RESET_REPLY
        await running.bot.wait_idle()
        token = interaction["token"]
        lines = [r.getMessage() for r in caplog.records if r.name.startswith("discord")]
        assert any("rate limited" in line for line in lines)
        assert any(f"/webhooks/{fake.application_id}/{REDACTED}" in line for line in lines)
        assert any(f"/interactions/{interaction['id']}/{REDACTED}/callback" in line for line in lines)
        assert any(f"'token': '{REDACTED}'" in line for line in lines)  # the gateway event
        assert token not in caplog.text
