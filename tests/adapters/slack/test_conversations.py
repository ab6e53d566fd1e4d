"""What a Slack user sees: mentions answered in their thread, follow-ups, DMs, a thread read once to
seed the conversation, commands, failures as one sentence, and events the bot must ignore.

Real slack-bolt over HTTP mode against FakeSlackAPI, real Redis, the fake chat API.
"""

from __future__ import annotations

import math
import time
from typing import Any

from adapters.slack.bot import SEED_MAX_MESSAGES, SEED_MAX_PAGES, SEED_PAGE_SIZE
from adapters.slack.sink import ASSISTANT_STATUS, STREAMING_INDICATOR, WORKING_REACTION
from core.engine import APOLOGY_RATE_LIMITED, APOLOGY_UNAVAILABLE, INTERRUPTED_NOTE, RESET_REPLY
from core.profile import HistoryLimits
from tests.adapters.slack.conftest import MODEL_A, MODEL_B, RigFactory, SlackRig
from tests.fakes.chat_api import Behaviour, FakeChatAPI

WRITE_METHODS = ("chat.postMessage", "chat.update", "reactions.add", "chat.startStream")
LONG_THREAD = 350  # messages before the mention: more than one page of conversations.replies


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

    async def test_follow_up_typed_while_the_bot_answers(
        self, slack_rig: RigFactory, chat_api: FakeChatAPI
    ) -> None:
        """A plain follow-up sent while the first answer is still streaming (nothing saved yet) is
        answered after it, and its model request sees the first turn."""
        chat_api.script(MODEL_A, Behaviour(token_delay_s=0.02, chunk_chars=2), Behaviour())
        async with slack_rig() as rig:
            first = rig.mention_payload("<@UBOT> tell me a story")
            assert await rig.post(first) == 200
            await rig.fake.wait_for(lambda: bool(rig.fake.calls_to("chat.postMessage")))
            follow = rig.message_payload("and make it short", channel="C1", channel_type="channel",
                                         thread_ts=thread_of(first))
            sent_at = time.monotonic()
            assert await rig.post(follow) == 200
            await rig.bot.wait_idle()
            first_reply = rig.fake.bot_replies("C1", thread_of(first))[0]
            assert sent_at < max(c.at for c in rig.fake.calls_to("chat.update") if c.args["ts"] == first_reply.ts)
            assert len(chat_api.requests) == 2
            assert sent_contents(chat_api)[1] == "[useru1] tell me a story"
            assert "I have seen 2 user messages" in rig.replies(follow)[-1]

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

    async def test_thread_without_status_goes_straight_to_the_reaction(
        self, slack_rig: RigFactory, chat_api: FakeChatAPI
    ) -> None:
        """A DM thread that refused setStatus is not asked again: its next message gets the reaction
        at once; other DM threads still try the status."""
        async with slack_rig() as rig:
            parent = rig.fake.add_user_message("D1", "start")
            rig.fake.fail_next("assistant.threads.setStatus", status=200, error="invalid_thread")
            await rig.message("one", thread_ts=parent)
            await rig.message("two", thread_ts=parent)
            assert len(rig.fake.calls_to("assistant.threads.setStatus")) == 1
            assert len(rig.fake.calls_to("reactions.add")) == 2
            other = rig.fake.add_user_message("D1", "another topic")
            await rig.message("three", thread_ts=other)
            assert [c.args["status"] for c in rig.fake.calls_to("assistant.threads.setStatus")[1:]] == [
                ASSISTANT_STATUS, ""]

    async def test_app_without_status_never_asks_again(self, slack_rig: RigFactory, chat_api: FakeChatAPI) -> None:
        """A refusal that holds for the whole app (no assistant:write) stops setStatus in every thread."""
        async with slack_rig() as rig:
            rig.fake.fail_next("assistant.threads.setStatus", status=200, error="missing_scope")
            for topic in ("one", "two"):
                parent = rig.fake.add_user_message("D1", topic)
                await rig.message(f"about {topic}", thread_ts=parent)
            assert len(rig.fake.calls_to("assistant.threads.setStatus")) == 1
            assert len(rig.fake.calls_to("reactions.add")) == 2

    async def test_slow_status_falls_back_to_the_reaction(
        self, slack_rig: RigFactory, chat_api: FakeChatAPI
    ) -> None:
        """A setStatus that times out does not cost the working signal: the reaction goes up instead."""
        async with slack_rig(signal_timeout_s=0.2) as rig:
            rig.fake.delays["assistant.threads.setStatus"] = 0.5
            parent = rig.fake.add_user_message("D1", "start")
            payload = await rig.message("help me plan", thread_ts=parent)
            assert [c.args["name"] for c in rig.fake.calls_to("reactions.add")] == [WORKING_REACTION]
            assert rig.fake.reactions[("D1", payload["event"]["ts"])] == set()
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

    async def test_long_thread_seeds_its_latest_messages(
        self, slack_rig: RigFactory, chat_api: FakeChatAPI
    ) -> None:
        """A 350-message thread is read through page by page up to the mention, and the 50 messages
        right before the mention seed the conversation, not the thread's first ones."""
        async with slack_rig(profile={"history": HistoryLimits(max_messages=100)}) as rig:
            parent = rig.fake.add_user_message("C1", "message 0", user="U2")
            for n in range(1, LONG_THREAD):
                rig.fake.add_user_message("C1", f"message {n}", user="U2", thread_ts=parent)
            payload = rig.mention_payload("<@UBOT> summarise", thread_ts=parent)
            rig.fake.add_user_message("C1", "written after the mention", user="U2", thread_ts=parent)
            assert await rig.post(payload) == 200
            await rig.bot.wait_idle()
            seeded = sent_contents(chat_api)[1:-1]
            assert seeded == [f"[useru2] message {n}" for n in range(LONG_THREAD - SEED_MAX_MESSAGES, LONG_THREAD)]
            pages = rig.fake.calls_to("conversations.replies")
            assert len(pages) == math.ceil(LONG_THREAD / SEED_PAGE_SIZE)
            assert all(int(p.args["limit"]) <= 200 and p.args["latest"] == payload["event"]["ts"] for p in pages)

    async def test_thread_too_long_to_read_seeds_its_opening_message(
        self, slack_rig: RigFactory, chat_api: FakeChatAPI
    ) -> None:
        """A thread whose parent counts more replies than the reading bound is not read through: one
        page, and only the opening message (what the thread is about) seeds the conversation."""
        async with slack_rig() as rig:
            parent = rig.fake.add_user_message("C1", "the incident channel thread", user="U2")
            for n in range(SEED_PAGE_SIZE * SEED_MAX_PAGES):
                rig.fake.add_user_message("C1", f"update {n}", user="U2", thread_ts=parent)
            await rig.mention("<@UBOT> status?", thread_ts=parent)
            assert len(rig.fake.calls_to("conversations.replies")) == 1
            assert sent_contents(chat_api)[1:] == ["[useru2] the incident channel thread", "[useru1] status?"]


class TestAuthorNames:
    """People's names in multi-user prompts, looked up without delaying the working signal."""

    async def test_name_is_looked_up_after_the_working_signal(
        self, slack_rig: RigFactory, chat_api: FakeChatAPI
    ) -> None:
        """On a cold cache users.info runs after the reaction, and the first message already
        carries the person's name; later messages use the cache."""
        async with slack_rig() as rig:
            rig.fake.add_user("U1", display_name="ada")
            first = await rig.mention("<@UBOT> hi")
            (lookup,) = rig.fake.calls_to("users.info")
            assert lookup.at > rig.fake.calls_to("reactions.add")[0].at
            await rig.mention("<@UBOT> again", thread_ts=thread_of(first))
            assert sent_contents(chat_api, 0)[-1] == "[ada] hi"
            assert sent_contents(chat_api)[-1] == "[ada] again"
            assert len(rig.fake.calls_to("users.info")) == 1


class TestWordlessMessages:
    """A bare mention, or a file share with nothing readable in it, never reaches the model as an
    empty message. (A file with no words is a question about the file: test_files.py.)"""

    async def test_file_only_dm_and_bare_mention_get_help(self, slack_rig: RigFactory, chat_api: FakeChatAPI) -> None:
        """A file share without a word whose event carries no file, or a mention alone, is answered
        with the help text."""
        async with slack_rig() as rig:
            dm = await rig.message("", subtype="file_share")
            mention = await rig.mention("<@UBOT>")
            assert rig.replies(dm) == [rig.engine.help_text()]
            assert rig.replies(mention) == [rig.engine.help_text()]
            assert chat_api.requests == []

    async def test_file_only_thread_follow_up_is_ignored(
        self, slack_rig: RigFactory, chat_api: FakeChatAPI
    ) -> None:
        """In a thread the bot talks in, a file share with neither words nor a file is not for the bot."""
        async with slack_rig() as rig:
            first = await rig.mention("<@UBOT> hi")
            before = writes(rig)
            await rig.message("", channel="C1", channel_type="channel", thread_ts=thread_of(first),
                              subtype="file_share")
            assert len(chat_api.requests) == 1
            assert writes(rig) == before


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
