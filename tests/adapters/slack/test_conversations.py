"""What a Slack user sees: mentions answered in their thread, follow-ups, DMs, a thread read once to
seed the conversation, commands, failures as one sentence, and events the bot must ignore.

Real slack-bolt over HTTP mode against FakeSlackAPI, real Redis, the fake chat API.
"""

from __future__ import annotations

from typing import Any

from adapters.slack.sink import ASSISTANT_STATUS, STREAMING_INDICATOR, WORKING_REACTION
from core.engine import APOLOGY_RATE_LIMITED, APOLOGY_UNAVAILABLE, INTERRUPTED_NOTE, RESET_REPLY
from tests.adapters.slack.conftest import MODEL_A, MODEL_B, RigFactory, SlackRig
from tests.fakes.chat_api import Behaviour, FakeChatAPI

WRITE_METHODS = ("chat.postMessage", "chat.update", "reactions.add", "chat.startStream")


def sent_contents(chat_api: FakeChatAPI, index: int = -1) -> list[str]:
    body = chat_api.requests[index].body
    assert body is not None
    return [str(m["content"]) for m in body["messages"]]


def thread_of(payload: dict[str, Any]) -> str:
    event = payload["event"]
    return str(event.get("thread_ts") or event["ts"])


def writes(rig: SlackRig) -> int:
    return sum(len(rig.fake.calls_to(m)) for m in WRITE_METHODS)


class TestThreadedReplies:
    """Channel mentions and the threads they start."""

    async def test_mention_is_answered_in_its_thread(self, slack_rig: RigFactory, chat_api: FakeChatAPI) -> None:
        """The final text in the thread is exactly the model's Markdown, sent as markdown_text, and
        the working reaction comes and goes."""
        answer = "Use `git rebase -i`, then **squash** the commits:\n\n- one\n- two"
        chat_api.script(MODEL_A, Behaviour(text=answer))
        async with slack_rig() as rig:
            payload = await rig.mention("<@UBOT> how do I squash commits?")
            assert rig.replies(payload) == [answer]
            post = rig.fake.calls_to("chat.postMessage")[0]
            assert post.args["thread_ts"] == payload["event"]["ts"]
            assert "markdown_text" in post.args and "text" not in post.args
            assert all("markdown_text" in c.args for c in rig.fake.calls_to("chat.update"))
            assert [c.args["name"] for c in rig.fake.calls_to("reactions.add")] == [WORKING_REACTION]
            assert rig.fake.reactions[("C1", payload["event"]["ts"])] == set()
            assert sent_contents(chat_api)[-1] == "[useru1] how do I squash commits?"

    async def test_multi_turn_in_a_thread(self, slack_rig: RigFactory, chat_api: FakeChatAPI) -> None:
        """A second mention in the thread is answered there, and the model sees the first turn."""
        async with slack_rig() as rig:
            first = await rig.mention("<@UBOT> my name is Ada")
            second = await rig.mention("<@UBOT> what is my name?", thread_ts=thread_of(first))
            assert sent_contents(chat_api)[1:] == [
                "[useru1] my name is Ada",
                "You said: [useru1] my name is Ada. (I have seen 1 user messages in this conversation.)",
                "[useru1] what is my name?",
            ]
            replies = rig.replies(second)
            assert len(replies) == 2 and "I have seen 2 user messages" in replies[1]

    async def test_follow_up_without_mention(self, slack_rig: RigFactory, chat_api: FakeChatAPI) -> None:
        """In a thread the bot answered, a plain message is answered too."""
        async with slack_rig() as rig:
            first = await rig.mention("<@UBOT> hi")
            follow = await rig.message("and another thing", channel="C1", channel_type="channel",
                                       thread_ts=thread_of(first))
            assert len(chat_api.requests) == 2
            assert "I have seen 2 user messages" in rig.replies(follow)[-1]

    async def test_require_mention(self, slack_rig: RigFactory, chat_api: FakeChatAPI) -> None:
        """With require_mention, a plain follow-up is left alone; a mention still works."""
        async with slack_rig(require_mention=True) as rig:
            first = await rig.mention("<@UBOT> hi")
            await rig.message("no mention here", channel="C1", channel_type="channel", thread_ts=thread_of(first))
            assert len(chat_api.requests) == 1
            await rig.mention("<@UBOT> now?", thread_ts=thread_of(first))
            assert len(chat_api.requests) == 2

    async def test_other_threads_and_channel_chatter_are_ignored(
        self, slack_rig: RigFactory, chat_api: FakeChatAPI
    ) -> None:
        """Messages in threads the bot never spoke in, and top-level channel messages, get nothing."""
        async with slack_rig() as rig:
            parent = rig.fake.add_user_message("C1", "team lunch?", user="U2")
            await rig.message("sure", channel="C1", channel_type="channel", thread_ts=parent)
            await rig.message("good morning all", channel="C1", channel_type="channel")
            assert chat_api.requests == []
            assert writes(rig) == 0

    async def test_mention_and_its_message_twin_answer_once(
        self, slack_rig: RigFactory, chat_api: FakeChatAPI
    ) -> None:
        """Slack sends a mention in a thread as app_mention and as message: one answer."""
        async with slack_rig() as rig:
            first = await rig.mention("<@UBOT> hi")
            ts = rig.next_ts()
            mention = rig.mention_payload("<@UBOT> again", thread_ts=thread_of(first), ts=ts)
            twin = rig.message_payload("<@UBOT> again", channel="C1", channel_type="channel",
                                       thread_ts=thread_of(first), ts=ts)
            assert await rig.post(twin) == 200
            assert await rig.post(mention) == 200
            await rig.bot.wait_idle()
            assert len(chat_api.requests) == 2
            assert len(rig.replies(first)) == 2


class TestDirectMessages:
    """DMs are answered in place; DM threads are assistant threads."""

    async def test_dm_is_answered_in_place(self, slack_rig: RigFactory, chat_api: FakeChatAPI) -> None:
        """No thread, no name prefix (one person), and the next DM continues the conversation."""
        async with slack_rig() as rig:
            first = await rig.message("hello")
            second = await rig.message("again")
            replies = rig.fake.bot_replies("D1")
            assert [m.thread_ts for m in replies] == [None, None]
            assert rig.replies(first)[0].startswith("You said: hello.")
            assert "I have seen 2 user messages" in rig.replies(second)[-1]
            assert sent_contents(chat_api)[-1] == "again"

    async def test_dm_thread_shows_assistant_status(self, slack_rig: RigFactory, chat_api: FakeChatAPI) -> None:
        """In a DM thread the working signal is assistant.threads.setStatus, cleared afterwards."""
        async with slack_rig() as rig:
            parent = rig.fake.add_user_message("D1", "start")
            payload = await rig.message("help me plan", thread_ts=parent)
            statuses = [c.args["status"] for c in rig.fake.calls_to("assistant.threads.setStatus")]
            assert statuses == [ASSISTANT_STATUS, ""]
            assert rig.fake.calls_to("reactions.add") == []
            assert rig.replies(payload)[0].startswith("You said: help me plan.")


class TestSeeding:
    """Mentioned midway into a thread, the bot reads it once."""

    async def test_mid_thread_mention_reads_the_thread_once(
        self, slack_rig: RigFactory, chat_api: FakeChatAPI
    ) -> None:
        """Earlier messages reach the model with their authors' names; the next turn does not re-read."""
        async with slack_rig() as rig:
            rig.fake.add_user("U2", display_name="ada")
            rig.fake.add_user("U3", real_name="Bo Berg", display_name="")
            parent = rig.fake.add_user_message("C1", "Postgres or MySQL for the new service?", user="U2")
            rig.fake.add_user_message("C1", "Postgres: better JSON support", user="U3", thread_ts=parent)
            await rig.mention("<@UBOT> what did we decide?", thread_ts=parent)
            assert sent_contents(chat_api)[1:] == [
                "[ada] Postgres or MySQL for the new service?",
                "[Bo Berg] Postgres: better JSON support",
                "[useru1] what did we decide?",
            ]
            replies_calls = rig.fake.calls_to("conversations.replies")
            assert len(replies_calls) == 1 and int(replies_calls[0].args["limit"]) <= 200
            await rig.mention("<@UBOT> and why?", thread_ts=parent)
            assert len(rig.fake.calls_to("conversations.replies")) == 1
            assert sent_contents(chat_api)[1:3] == sent_contents(chat_api, 0)[1:3]


class TestCommands:
    """`help` and `reset` typed to the bot."""

    async def test_help_and_reset(self, slack_rig: RigFactory, chat_api: FakeChatAPI) -> None:
        """help answers without the model; reset forgets the thread so the next turn starts fresh."""
        async with slack_rig() as rig:
            helped = await rig.mention("<@UBOT> help")
            assert rig.replies(helped) == [rig.engine.help_text()]
            assert chat_api.requests == []
            first = await rig.mention("<@UBOT> remember 42")
            reset = await rig.mention("<@UBOT> reset", thread_ts=thread_of(first))
            assert rig.replies(reset)[-1] == RESET_REPLY
            after = await rig.mention("<@UBOT> what number?", thread_ts=thread_of(first))
            assert "I have seen 1 user messages" in rig.replies(after)[-1]


class TestFailures:
    """Errors read as one short sentence, and nothing is left half-done."""

    async def test_all_models_failing_is_one_apology(self, slack_rig: RigFactory, chat_api: FakeChatAPI) -> None:
        """The only text ever shown is the apology; no indicator, no placeholder, no reaction left."""
        for model in (MODEL_A, MODEL_B):
            chat_api.script(model, Behaviour(kind="status", status=503))
        async with slack_rig() as rig:
            payload = await rig.mention("<@UBOT> anyone there?")
            assert rig.replies(payload) == [APOLOGY_UNAVAILABLE]
            message = rig.fake.bot_replies("C1", thread_of(payload))[0]
            assert message.text_history == [APOLOGY_UNAVAILABLE]
            assert rig.fake.reactions[("C1", payload["event"]["ts"])] == set()

    async def test_rate_limited_models_say_so(self, slack_rig: RigFactory, chat_api: FakeChatAPI) -> None:
        """Every model answering 429 reads as the rate-limit sentence, in the thread."""
        for model in (MODEL_A, MODEL_B):
            chat_api.script(model, Behaviour(kind="status", status=429, retry_after=0.01))
        async with slack_rig() as rig:
            payload = await rig.mention("<@UBOT> busy?")
            assert rig.replies(payload) == [APOLOGY_RATE_LIMITED]

    async def test_interrupted_answer_keeps_its_text_and_a_note(
        self, slack_rig: RigFactory, chat_api: FakeChatAPI
    ) -> None:
        """A stream that dies with no model to continue it leaves the text shown plus a note, without
        the streaming indicator."""
        text = "The first part of the answer arrives, and then"
        chat_api.script(MODEL_A, Behaviour(kind="die", text=text + " more", die_after_chars=len(text)))
        chat_api.script(MODEL_B, Behaviour(kind="status", status=503))
        async with slack_rig() as rig:
            payload = await rig.mention("<@UBOT> explain")
            (final,) = rig.replies(payload)
            assert final.startswith(text + "\n\n" + INTERRUPTED_NOTE)
            assert STREAMING_INDICATOR not in final


class TestIgnoredEvents:
    """Own messages, other bots, edits, deletes, joins and other apps never reach the model."""

    async def test_ignored_events(self, slack_rig: RigFactory, chat_api: FakeChatAPI) -> None:
        """Each is acknowledged with 200 (so Slack does not retry) and dropped by the middleware."""
        async with slack_rig() as rig:
            payloads = [
                rig.message_payload("my own words", user="UBOT"),
                rig.message_payload("beep", subtype="bot_message", bot_id="BOTHER", user="UOTHER"),
                rig.message_payload("beep", bot_id="BOTHER", user="UOTHER"),
                rig.message_payload("edited", subtype="message_changed"),
                rig.message_payload("", subtype="message_deleted"),
                rig.message_payload("joined", channel="C1", channel_type="channel", subtype="channel_join"),
                rig.mention_payload("<@UBOT> hi"),
            ]
            payloads[-1]["api_app_id"] = "A_OTHER"
            for payload in payloads:
                assert await rig.post(payload) == 200
            await rig.bot.wait_idle()
            assert chat_api.requests == []
            assert writes(rig) == 0
            middleware = rig.bot.middleware
            assert middleware is not None
            assert middleware.dropped == {
                "self": 1, "subtype_bot_message": 1, "other_bot": 1, "subtype_message_changed": 1,
                "subtype_message_deleted": 1, "subtype_channel_join": 1, "other_app": 1,
            }
