"""`channel_memory` channels: every mention continues the channel's one conversation, each user's
turn attributed by name; the bot still answers only mentions and replies. Elsewhere a fresh mention
starts a new reply chain, as before.

Unmodified discord.py against FakeDiscord, real Redis, the fake chat API."""

from __future__ import annotations

from redis.asyncio import Redis

from core.engine import RESET_REPLY
from core.redis_keys import RedisKeys
from core.types import ConversationKey
from tests.adapters.discord.conftest import (
    BOT_CHAT,
    CATEGORY,
    GENERAL,
    GUILD,
    BotStarter,
    answer_chain,
    mention,
    request_contents,
)
from tests.adapters.discord.test_commands import private_answer
from tests.fakes.chat_api import Behaviour, FakeChatAPI
from tests.fakes.discord_api import INTENT_MESSAGE_CONTENT, FakeDiscord

A = "test/model-a"
OWNER = "6000"


class TestChannelMemory:
    async def test_two_users_share_the_channel_conversation(
        self, fake: FakeDiscord, start_bot: BotStarter, chat_api: FakeChatAPI, redis: Redis,
        keys: RedisKeys,
    ) -> None:
        """Alice, then the owner, each mention the bot afresh (no reply): the owner's request holds
        Alice's turn and its answer, both attributed; one history for the channel."""
        chat_api.script(A, Behaviour(text="Tea, noted."), Behaviour(text="Alice likes tea."))
        running = await start_bot(channel_memory=frozenset({int(GENERAL)}))
        assert not fake.identifies[-1]["intents"] & INTENT_MESSAGE_CONTENT  # mentions only: not privileged
        first = await fake.send_message_create(channel_id=GENERAL, content="<@1000> I like tea",
                                               mentions=mention(fake))
        assert await running.outcomes.of(first["id"]) == "answered"
        second = await fake.send_message_create(channel_id=GENERAL, content="<@1000> what does Alice like?",
                                                mentions=mention(fake), author=fake.human(OWNER, "owner"))
        assert await running.outcomes.of(second["id"]) == "answered"
        assert request_contents(chat_api.requests[1].body)[1:] == [
            "[Alice] I like tea", "Tea, noted.", "[Owner] what does Alice like?"]
        assert [m["content"] for m in answer_chain(fake, GENERAL, second["id"])] == ["Alice likes tea."]
        assert await redis.llen(keys.history("testbot", ConversationKey("discord", GUILD, GENERAL))) == 4

        chatter = await fake.send_message_create(channel_id=GENERAL, content="no mention here")
        assert await running.outcomes.of(chatter["id"]) == "ignored_not_addressed"

    async def test_a_category_covers_its_channels_and_reset_forgets_the_channel(
        self, fake: FakeDiscord, start_bot: BotStarter, chat_api: FakeChatAPI, redis: Redis,
        keys: RedisKeys,
    ) -> None:
        """A listed category makes its channels shared; /reset there forgets the whole channel's
        conversation."""
        running = await start_bot(channel_memory=frozenset({int(CATEGORY)}))
        sent = await fake.send_message_create(channel_id=BOT_CHAT, content="<@1000> hi", mentions=mention(fake))
        assert await running.outcomes.of(sent["id"]) == "answered"
        history = keys.history("testbot", ConversationKey("discord", GUILD, BOT_CHAT))
        assert await redis.llen(history) == 2
        interaction = await fake.send_interaction(name="reset", channel_id=BOT_CHAT)
        assert (await private_answer(fake, interaction))["content"] == RESET_REPLY
        assert await redis.exists(history) == 0

    async def test_elsewhere_a_fresh_mention_starts_a_new_conversation(
        self, fake: FakeDiscord, start_bot: BotStarter, chat_api: FakeChatAPI
    ) -> None:
        """In a channel not listed, the second mention (no reply) does not see the first."""
        running = await start_bot(channel_memory=frozenset({int(GENERAL)}))
        for text in ("<@1000> I like tea", "<@1000> what do I like?"):
            sent = await fake.send_message_create(channel_id=BOT_CHAT, content=text, mentions=mention(fake))
            assert await running.outcomes.of(sent["id"]) == "answered"
        assert request_contents(chat_api.requests[1].body)[1:] == ["[Alice] what do I like?"]
