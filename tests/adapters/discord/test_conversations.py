"""What a Discord user sees: DMs, mentions, reply chains and threads answered in the right
conversation, the typing indicator, content without the privileged intent, and bots ignored.

Unmodified discord.py against FakeDiscord, real Redis, the fake chat API."""

from __future__ import annotations

from redis.asyncio import Redis

from core.redis_keys import RedisKeys
from core.types import ConversationKey
from tests.adapters.discord.conftest import (
    ALICE,
    BOT_CHAT,
    GENERAL,
    GUILD,
    THREAD,
    BotStarter,
    answer_chain,
    mention,
    request_contents,
)
from tests.fakes.chat_api import Behaviour, FakeChatAPI
from tests.fakes.discord_api import INTENT_MESSAGE_CONTENT, FakeDiscord

A = "test/model-a"


def call_index(fake: FakeDiscord, method: str, path: str) -> int:
    return next(i for i, c in enumerate(fake.calls) if c.method == method and c.path == path)


class TestDirectMessages:
    """A DM to the bot."""

    async def test_dm_is_answered(self, fake: FakeDiscord, start_bot: BotStarter, chat_api: FakeChatAPI) -> None:
        """The answer lands in the DM, whole, not as a reply; the prompt is the text as typed."""
        chat_api.script(A, Behaviour(text="Hello! How can I help?"))
        running = await start_bot()
        dm = fake.dm_channel_id(ALICE)
        sent = await fake.send_message_create(channel_id=dm, content="hi there")
        assert await running.outcomes.of(sent["id"]) == "answered"
        [answer] = fake.bot_messages(dm)
        assert answer["content"] == "Hello! How can I help?"
        assert answer.get("message_reference") is None
        assert request_contents(chat_api.requests[-1].body)[-1] == "hi there"
        # Even an instant answer is posted only after "typing…" landed, never under it.
        assert call_index(fake, "POST", f"/channels/{dm}/typing") < call_index(fake, "POST", f"/channels/{dm}/messages")

    async def test_typing_shows_until_the_first_token(
        self, fake: FakeDiscord, start_bot: BotStarter, chat_api: FakeChatAPI
    ) -> None:
        """"typing…" is triggered before the first token and the answer is posted only after it."""
        chat_api.script(A, Behaviour(text="Thought about it.", ttft_s=0.3))
        running = await start_bot()
        dm = fake.dm_channel_id(ALICE)
        sent = await fake.send_message_create(channel_id=dm, content="think hard")
        assert await running.outcomes.of(sent["id"]) == "answered"
        typing = call_index(fake, "POST", f"/channels/{dm}/typing")
        first_post = call_index(fake, "POST", f"/channels/{dm}/messages")
        assert typing < first_post
        assert fake.calls[first_post].at - fake.calls[typing].at >= 0.25  # the model's time to first token
        assert fake.typing_channels == [dm]  # not re-triggered after the answer started


class TestMentions:
    """An @mention in a server channel."""

    async def test_mention_is_answered_as_a_reply_without_the_mention(
        self, fake: FakeDiscord, start_bot: BotStarter, chat_api: FakeChatAPI
    ) -> None:
        """The answer replies to the question; the model never sees `<@bot>` and knows who asked."""
        chat_api.script(A, Behaviour(text="Paris."))
        running = await start_bot()
        sent = await fake.send_message_create(
            channel_id=GENERAL, content="<@1000> what is the capital of France?", mentions=mention(fake))
        assert await running.outcomes.of(sent["id"]) == "answered"
        [answer] = answer_chain(fake, GENERAL, sent["id"])
        assert answer["content"] == "Paris."
        sent_to_model = request_contents(chat_api.requests[-1].body)
        assert sent_to_model[-1] == "[Alice] what is the capital of France?"
        assert not any("<@" in c for c in sent_to_model)

    async def test_mention_in_the_middle_of_a_sentence(
        self, fake: FakeDiscord, start_bot: BotStarter, chat_api: FakeChatAPI
    ) -> None:
        """"hey <@!bot> help" reaches the model as "hey help"; other users' mentions stay."""
        running = await start_bot()
        sent = await fake.send_message_create(
            channel_id=GENERAL, content="hey <@!1000> help <@6000>", mentions=mention(fake))
        assert await running.outcomes.of(sent["id"]) == "answered"
        assert request_contents(chat_api.requests[-1].body)[-1] == "[Alice] hey help <@6000>"

    async def test_bare_mention_gets_help(
        self, fake: FakeDiscord, start_bot: BotStarter, chat_api: FakeChatAPI
    ) -> None:
        """"@bot" alone is answered with the help text, without asking the model about nothing."""
        running = await start_bot()
        sent = await fake.send_message_create(channel_id=GENERAL, content="<@1000>", mentions=mention(fake))
        assert await running.outcomes.of(sent["id"]) == "command"
        [answer] = answer_chain(fake, GENERAL, sent["id"])
        assert answer["content"] == running.engine.help_text()
        assert chat_api.requests == []

    async def test_messages_not_for_the_bot_are_ignored(
        self, fake: FakeDiscord, start_bot: BotStarter, chat_api: FakeChatAPI
    ) -> None:
        """A guild message that neither mentions nor replies to the bot gets nothing (and without
        the message-content intent the bot could not read it anyway)."""
        running = await start_bot()
        identify = fake.identifies[-1]
        assert not identify["intents"] & INTENT_MESSAGE_CONTENT  # not privileged unless respond_to_all
        sent = await fake.send_message_create(channel_id=GENERAL, content="just chatting")
        assert await running.outcomes.of(sent["id"]) == "ignored_not_addressed"
        assert fake.bot_messages(GENERAL) == [] and chat_api.requests == []


class TestReplyChains:
    """Replying to the bot's answer continues that conversation, even after a restart."""

    async def test_reply_continues_without_a_new_mention(
        self, fake: FakeDiscord, start_bot: BotStarter, chat_api: FakeChatAPI, redis: Redis,
        keys: RedisKeys,
    ) -> None:
        """mention → answer → reply → answer → (restart) → reply: one conversation, rooted at the mention."""
        chat_api.script(A, Behaviour(text="Paris."), Behaviour(text="Berlin."), Behaviour(text="Madrid."))
        running = await start_bot()
        first = await fake.send_message_create(
            channel_id=GENERAL, content="<@1000> capital of France?", mentions=mention(fake))
        assert await running.outcomes.of(first["id"]) == "answered"
        [paris] = answer_chain(fake, GENERAL, first["id"])

        # Discord puts the replied-to author in `mentions` when the reply pings (the default).
        second = await fake.send_message_create(
            channel_id=GENERAL, content="and Germany?", mentions=mention(fake),
            message_reference={"message_id": paris["id"]})
        assert await running.outcomes.of(second["id"]) == "answered"
        [berlin] = answer_chain(fake, GENERAL, second["id"])
        assert request_contents(chat_api.requests[1].body)[1:] == [
            "[Alice] capital of France?", "Paris.", "[Alice] and Germany?"]

        await running.bot.stop()
        restarted = await start_bot()
        third = await fake.send_message_create(
            channel_id=GENERAL, content="and Spain?", mentions=mention(fake),
            message_reference={"message_id": berlin["id"]})
        assert await restarted.outcomes.of(third["id"]) == "answered"
        # Without the message index the event alone would root this chain at "and Germany?".
        assert request_contents(chat_api.requests[2].body)[1:] == [
            "[Alice] capital of France?", "Paris.", "[Alice] and Germany?", "Berlin.", "[Alice] and Spain?"]
        assert [m["content"] for m in answer_chain(fake, GENERAL, third["id"])] == ["Madrid."]
        chain = ConversationKey("discord", GUILD, GENERAL, first["id"])
        assert await redis.llen(keys.history("testbot", chain)) == 6

    async def test_a_new_mention_starts_a_new_conversation(
        self, fake: FakeDiscord, start_bot: BotStarter, chat_api: FakeChatAPI
    ) -> None:
        """Two mentions in one channel are two conversations: the second sees nothing of the first."""
        running = await start_bot()
        for text in ("<@1000> the password is swordfish", "<@1000> what is the password?"):
            sent = await fake.send_message_create(channel_id=GENERAL, content=text, mentions=mention(fake))
            assert await running.outcomes.of(sent["id"]) == "answered"
        assert not any("swordfish" in c for c in request_contents(chat_api.requests[1].body))

    async def test_reply_without_ping_needs_the_content_intent(
        self, fake: FakeDiscord, start_bot: BotStarter, chat_api: FakeChatAPI
    ) -> None:
        """A reply with its ping turned off reaches a bot without the intent empty: not answered."""
        running = await start_bot()
        first = await fake.send_message_create(channel_id=GENERAL, content="<@1000> hi", mentions=mention(fake))
        assert await running.outcomes.of(first["id"]) == "answered"
        [answer] = answer_chain(fake, GENERAL, first["id"])
        quiet = await fake.send_message_create(
            channel_id=GENERAL, content="thanks", message_reference={"message_id": answer["id"]})
        assert await running.outcomes.of(quiet["id"]) == "ignored_not_addressed"
        assert len(chat_api.requests) == 1


class TestThreads:
    """Inside a thread the conversation is the thread."""

    async def test_thread_is_one_conversation(
        self, fake: FakeDiscord, start_bot: BotStarter, chat_api: FakeChatAPI, redis: Redis,
        keys: RedisKeys,
    ) -> None:
        """Two separate mentions in a thread share history; the answer is in the thread."""
        chat_api.script(A, Behaviour(text="Noted: blue."), Behaviour(text="Blue."))
        running = await start_bot()
        for text in ("<@1000> my favourite colour is blue", "<@1000> what is my favourite colour?"):
            sent = await fake.send_message_create(channel_id=THREAD, content=text, mentions=mention(fake))
            assert await running.outcomes.of(sent["id"]) == "answered"
        assert request_contents(chat_api.requests[1].body)[1:] == [
            "[Alice] my favourite colour is blue", "Noted: blue.", "[Alice] what is my favourite colour?"]
        assert [m["content"] for m in fake.bot_messages(THREAD)] == ["Noted: blue.", "Blue."]
        assert await redis.llen(keys.history("testbot", ConversationKey("discord", GUILD, THREAD))) == 4


class TestRespondToAll:
    """`respond_to_all` channels: every message answered, the channel one conversation."""

    async def test_every_message_is_answered_with_the_content_intent(
        self, fake: FakeDiscord, start_bot: BotStarter, chat_api: FakeChatAPI
    ) -> None:
        """The privileged intent is requested; plain messages there are answered, elsewhere not."""
        chat_api.script(A, Behaviour(text="Tea, noted."), Behaviour(text="Tea."))
        running = await start_bot(respond_to_all=frozenset({int(BOT_CHAT)}))
        assert fake.identifies[-1]["intents"] & INTENT_MESSAGE_CONTENT
        for text in ("I like tea", "what do I like?"):
            sent = await fake.send_message_create(channel_id=BOT_CHAT, content=text)
            assert await running.outcomes.of(sent["id"]) == "answered"
        assert request_contents(chat_api.requests[1].body)[1:] == [
            "[Alice] I like tea", "Tea, noted.", "[Alice] what do I like?"]
        assert [m["content"] for m in answer_chain(fake, BOT_CHAT, sent["id"])] == ["Tea."]
        elsewhere = await fake.send_message_create(channel_id=GENERAL, content="I like coffee")
        assert await running.outcomes.of(elsewhere["id"]) == "ignored_not_addressed"


class TestOtherBots:
    """Bots, the bot itself included, are never answered."""

    async def test_bots_and_own_messages_are_ignored(
        self, fake: FakeDiscord, start_bot: BotStarter, chat_api: FakeChatAPI
    ) -> None:
        """Another bot's mention and the bot's own echoed answer cause no turn."""
        running = await start_bot()
        other_bot = fake.human("7000", "otherbot", bot=True)
        from_bot = await fake.send_message_create(
            channel_id=GENERAL, content="<@1000> hello fellow bot", author=other_bot, mentions=mention(fake))
        assert await running.outcomes.of(from_bot["id"]) == "ignored_bot"

        dm = fake.dm_channel_id(ALICE)
        human = await fake.send_message_create(channel_id=dm, content="hi")
        assert await running.outcomes.of(human["id"]) == "answered"
        [own] = fake.bot_messages(dm)
        # Discord echoes the bot's own message back over the gateway, as it does in production.
        assert await running.outcomes.of(own["id"]) == "ignored_bot"
        assert len(chat_api.requests) == 1
        assert fake.bot_messages(GENERAL) == []
