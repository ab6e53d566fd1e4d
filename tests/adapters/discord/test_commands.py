"""Slash commands `/reset` and `/help`: registered per bot (guild-scoped or global) and answered
privately through real INTERACTION_CREATE events; `reset` typed in a mention does the same."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from adapters.discord.access import REFUSED_USER, AccessPolicy
from adapters.discord.bot import NOTHING_TO_RESET
from core.engine import RESET_REPLY
from core.redis_keys import RedisKeys
from core.types import ConversationKey
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
        assert {c["name"] for c in fake.guild_commands[GUILD]} == {"reset", "help"}
        assert fake.global_commands == []

    async def test_no_guild_ids_register_globally(self, fake: FakeDiscord, start_bot: BotStarter) -> None:
        """Without guild_ids the commands are global."""
        await start_bot()
        assert {c["name"] for c in fake.global_commands} == {"reset", "help"}
        assert fake.guild_commands == {}


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

    async def test_reset_refused_for_a_denied_user(self, fake: FakeDiscord, start_bot: BotStarter) -> None:
        """A denied user gets the refusal, privately, and nothing is reset."""
        await start_bot(access=AccessPolicy(denied_users=frozenset({int(ALICE)})))
        interaction = await fake.send_interaction(name="reset", channel_id=GENERAL)
        await fake.wait_for(lambda: interaction["id"] in fake.interaction_callbacks, WAIT_S)
        callback = fake.interaction_callbacks[interaction["id"]]
        assert callback["type"] == 4
        assert callback["data"]["content"] == REFUSED_USER and callback["data"]["flags"] & EPHEMERAL

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
