"""What a Discord user sees: DMs, mentions (of the bot or its role), reply chains and threads
answered in the right conversation, once even when Discord delivers a message twice, the typing
indicator, answers that ping no one, content without the privileged intent, and bots, webhooks and
replies to other people ignored.

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
BOT_ROLE = "4100"  # the bot's managed role in the fake's default guild
OWNER = "6000"
# What discord.py sends for `AllowedMentions(everyone=False, users=False, roles=False,
# replied_user=True)`: parse nothing from the text, ping only the author of the replied-to message.
PING_ONLY_THE_ASKER = {"parse": [], "replied_user": True}


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


class TestTyping:
    """"typing…" shows from the moment the bot heard the message until its answer appears."""

    async def test_typing_is_refreshed_until_the_first_token_and_never_after(
        self, fake: FakeDiscord, start_bot: BotStarter, chat_api: FakeChatAPI
    ) -> None:
        """Refreshed while the model thinks; once the answer is posted no trigger follows, though the
        answer keeps streaming."""
        words = " ".join(f"w{i}" for i in range(40))
        chat_api.script(A, Behaviour(text=words, ttft_s=0.3, chunk_chars=4, token_delay_s=0.02))
        running = await start_bot(typing_refresh_s=0.05)
        dm = fake.dm_channel_id(ALICE)
        sent = await fake.send_message_create(channel_id=dm, content="think hard")
        assert await running.outcomes.of(sent["id"]) == "answered"
        typing = fake.calls_matching("POST", f"/channels/{dm}/typing")
        first_post = fake.calls_matching("POST", f"/channels/{dm}/messages")[0]
        assert len(typing) >= 3  # refreshed while the model thought
        assert all(c.at < first_post.done_at for c in typing)
        assert [c for c in fake.calls_matching("PATCH", f"/channels/{dm}/messages/") if c.at > first_post.at]

    async def test_the_answer_waits_for_the_typing_trigger(
        self, fake: FakeDiscord, start_bot: BotStarter, chat_api: FakeChatAPI
    ) -> None:
        """Discord slow to take "typing…", the model instant: the answer is posted only once the
        trigger has landed, so no indicator shows under the finished answer."""
        chat_api.script(A, Behaviour(text="Instant."))
        running = await start_bot()
        dm = fake.dm_channel_id(ALICE)
        fake.delay_next("POST", f"/channels/{dm}/typing", 0.3)
        sent = await fake.send_message_create(channel_id=dm, content="quick one")
        assert await running.outcomes.of(sent["id"]) == "answered"
        [typing] = fake.calls_matching("POST", f"/channels/{dm}/typing")
        [post] = fake.calls_matching("POST", f"/channels/{dm}/messages")
        assert post.at >= typing.done_at


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

    async def test_mention_of_the_bot_role_is_answered(
        self, fake: FakeDiscord, start_bot: BotStarter, chat_api: FakeChatAPI
    ) -> None:
        """"@Bot" picked as the bot's managed role (`<@&role>`) is a mention: answered as a reply,
        with the role mention stripped from the prompt."""
        chat_api.script(A, Behaviour(text="Hello."))
        # With the message-content intent (asked for because of a respond_to_all channel elsewhere)
        # the text arrives whatever Discord does with role mentions for bots without it.
        running = await start_bot(respond_to_all=frozenset({int(BOT_CHAT)}))
        sent = await fake.send_message_create(channel_id=GENERAL, content=f"<@&{BOT_ROLE}> what's new?",
                                              mention_roles=[BOT_ROLE])
        assert await running.outcomes.of(sent["id"]) == "answered"
        assert [m["content"] for m in answer_chain(fake, GENERAL, sent["id"])] == ["Hello."]
        assert request_contents(chat_api.requests[-1].body)[-1] == "[Alice] what's new?"

    async def test_answers_ping_no_one_but_the_asker(
        self, fake: FakeDiscord, start_bot: BotStarter, chat_api: FakeChatAPI
    ) -> None:
        """An answer saying "@everyone", a role and a user: every post and edit of it tells Discord
        to ping nobody from the text, only the person it replies to."""
        chat_api.script(A, Behaviour(text="Hey @everyone, <@&4000> and <@6000>: look!", chunk_chars=8,
                                     token_delay_s=0.01))
        running = await start_bot()
        sent = await fake.send_message_create(channel_id=GENERAL, content="<@1000> announce it",
                                              mentions=mention(fake))
        assert await running.outcomes.of(sent["id"]) == "answered"
        writes = [c for c in fake.calls if c.method in ("POST", "PATCH")
                  and c.path.startswith(f"/channels/{GENERAL}/messages")]
        assert {c.method for c in writes} == {"POST", "PATCH"}
        assert all(c.json["allowed_mentions"] == PING_ONLY_THE_ASKER for c in writes), [c.json for c in writes]

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


    async def test_reply_to_another_person_is_not_for_the_bot(
        self, fake: FakeDiscord, start_bot: BotStarter, chat_api: FakeChatAPI
    ) -> None:
        """With the message-content intent on, replying to someone else (pinging them) in a channel
        is left alone: only replies to the bot continue a conversation."""
        running = await start_bot(respond_to_all=frozenset({int(BOT_CHAT)}))
        owner = fake.human(OWNER, "owner")
        question = await fake.send_message_create(channel_id=GENERAL, content="anyone around?", author=owner)
        assert await running.outcomes.of(question["id"]) == "ignored_not_addressed"
        reply = await fake.send_message_create(channel_id=GENERAL, content="yes, me", mentions=[owner],
                                               message_reference={"message_id": question["id"]})
        assert await running.outcomes.of(reply["id"]) == "ignored_not_addressed"
        assert chat_api.requests == [] and fake.bot_messages(GENERAL) == []


class TestRedelivery:
    """Discord may deliver a message twice; it is answered once."""

    async def test_a_redelivered_message_is_answered_once(
        self, fake: FakeDiscord, start_bot: BotStarter, chat_api: FakeChatAPI
    ) -> None:
        """The same MESSAGE_CREATE dispatched again (as a resumed gateway session replays it): one
        answer, one model request, and the repeat is a "duplicate"."""
        running = await start_bot()
        sent = await fake.send_message_create(channel_id=GENERAL, content="<@1000> hello", mentions=mention(fake))
        await fake.dispatch("MESSAGE_CREATE", sent)
        assert sorted(await running.outcomes.all_of(sent["id"], 2)) == ["answered", "duplicate"]
        assert len(answer_chain(fake, GENERAL, sent["id"])) == 1
        assert len(fake.bot_messages(GENERAL)) == 1 and len(chat_api.requests) == 1


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

    async def test_webhook_messages_are_ignored(
        self, fake: FakeDiscord, start_bot: BotStarter, chat_api: FakeChatAPI
    ) -> None:
        """A webhook's message (a bridge, or a proxy relaying a person) mentioning the bot causes no
        turn, though its author is not flagged as a bot."""
        running = await start_bot()
        hook = fake.human("7100", "Captain Hook")
        sent = await fake.send_message_create(channel_id=GENERAL, content="<@1000> hello", author=hook,
                                              mentions=mention(fake), webhook_id="7100")
        assert await running.outcomes.of(sent["id"]) == "ignored_bot"
        assert chat_api.requests == [] and fake.bot_messages(GENERAL) == []
