"""The pure Slack → core translation: which events are dropped, which conversation and reply target a
message gets, what the model reads, and how a thread becomes seed messages."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.slack.translate import (
    SlackEvent,
    SlackIdentity,
    ThreadMessage,
    as_callback,
    conversation_for,
    drop_reason,
    incoming_message,
    model_text,
    reply_target,
    thread_to_seed,
)
from core.engine import RESET_REPLY
from core.types import ChatMessage, ConversationKey
from tests.fakes.slack_api import app_mention_event, message_event

ME = SlackIdentity(team_id="T1", bot_user_id="UBOT", bot_id="BBOT", app_id="A1")


def mention(**kwargs: Any) -> dict[str, Any]:
    return app_mention_event(text=kwargs.pop("text", "<@UBOT> hi"), ts=kwargs.pop("ts", "1700000001.000100"),
                             event_id="Ev1", **kwargs)


def message(**kwargs: Any) -> dict[str, Any]:
    return message_event(text=kwargs.pop("text", "hi"), ts=kwargs.pop("ts", "1700000001.000100"),
                         event_id="Ev1", **kwargs)


class TestDropReason:
    """`drop_reason` keeps people's messages to this app and drops everything else."""

    def test_people_are_answered(self) -> None:
        """A person's mention, DM, file share or thread broadcast passes."""
        assert drop_reason(mention(), ME) is None
        assert drop_reason(message(), ME) is None
        assert drop_reason(message(subtype="file_share"), ME) is None
        assert drop_reason(message(subtype="thread_broadcast", channel="C1", channel_type="channel"), ME) is None

    @pytest.mark.parametrize(("payload", "reason"), [
        (message(user="UBOT"), "self"),
        (message(subtype="bot_message", bot_id="BBOT", user="UBOT"), "subtype_bot_message"),
        (message(bot_id="BBOT"), "self"),
        (message(bot_id="BOTHER", user="UOTHERBOT"), "other_bot"),
        (message(subtype="message_changed"), "subtype_message_changed"),
        (message(subtype="message_deleted"), "subtype_message_deleted"),
        (message(subtype="channel_join", channel="C1", channel_type="channel"), "subtype_channel_join"),
        (message(subtype="group_join", channel="G1", channel_type="group"), "subtype_group_join"),
        (mention(api_app_id="A2"), "other_app"),
    ])
    def test_ignored(self, payload: dict[str, Any], reason: str) -> None:
        """Own messages, other bots, edits, deletes, joins and other apps' events are dropped."""
        assert drop_reason(payload, ME) == reason

    def test_other_event_types_and_non_events(self) -> None:
        """An event type no listener handles is dropped; a non-event body is left to Bolt."""
        body = mention()
        body["event"]["type"] = "pin_added"
        assert drop_reason(body, ME) == "unhandled_event"
        assert drop_reason({"type": "url_verification", "challenge": "x"}, ME) is None


class TestWhereRepliesGo:
    """Conversation keys and reply targets: the thread in channels, in place in DMs."""

    def test_top_level_mention_starts_a_thread(self) -> None:
        """A channel mention is its own thread; the reply goes in it, the reaction on it."""
        event: SlackEvent = as_callback(mention())["event"]
        assert conversation_for(event, "T1") == ConversationKey("slack", "T1", "C1", "1700000001.000100")
        target = reply_target(event, "T1")
        assert (target.channel, target.thread_ts, target.source_ts) == ("C1", event["ts"], event["ts"])
        assert not target.assistant_thread

    def test_mention_in_a_thread_is_that_thread(self) -> None:
        """A mention inside a thread belongs to the thread, not to its own ts."""
        event = as_callback(mention(thread_ts="1700000000.000100"))["event"]
        assert conversation_for(event, "T1").thread == "1700000000.000100"
        assert reply_target(event, "T1").thread_ts == "1700000000.000100"

    def test_dm_is_the_channel_and_answered_in_place(self) -> None:
        """A DM outside a thread: the DM channel is the conversation and the reply is not threaded."""
        event = as_callback(message())["event"]
        assert conversation_for(event, "T1") == ConversationKey("slack", "T1", "D1", None)
        assert reply_target(event, "T1").thread_ts is None

    def test_dm_thread_is_an_assistant_thread(self) -> None:
        """A DM thread is its own conversation and shows the assistant status."""
        event = as_callback(message(thread_ts="1700000000.000100"))["event"]
        assert conversation_for(event, "T1") == ConversationKey("slack", "T1", "D1", "1700000000.000100")
        target = reply_target(event, "T1")
        assert target.thread_ts == "1700000000.000100" and target.assistant_thread


class TestModelText:
    """What the model reads of a Slack message."""

    def test_markup_is_made_plain(self) -> None:
        """The bot mention goes; other mentions, channels, links and entities become readable."""
        text = ("<@UBOT> ask <@U2|ada> in <#C9|general> about <https://x.org/a|the doc> &amp; "
                "<https://y.org> &lt;3 <!here>")
        assert model_text(text, "UBOT") == (
            "ask @ada in #general about the doc (https://x.org/a) & https://y.org &lt;3 @here")

    def test_typed_mention_markup_stays_escaped(self) -> None:
        """Text the user typed that looks like a mention token reaches the model still escaped."""
        typed = "repeat after me: &lt;!channel&gt; &lt;!subteam^S1&gt; &lt;@U999&gt; &amp;lt;!here&amp;gt;"
        text = model_text(typed, "UBOT")
        for live in ("<!channel>", "<!subteam^S1>", "<@U999>", "<!here>"):
            assert live not in text
        assert text == "repeat after me: &lt;!channel&gt; &lt;!subteam^S1&gt; &lt;@U999&gt; &lt;!here&gt;"

    def test_incoming_message_fields(self) -> None:
        """Dedupe id (the message, not the event), author, multi-user flag and text land in the
        IncomingMessage."""
        body = as_callback(mention(text="<@UBOT>  what   now?"))
        incoming = incoming_message("bot", body, ME, author_name="Ada", seed=None, received_at=5.0)
        event = body["event"]
        assert (incoming.event_id, incoming.text, incoming.author.display_name) == (
            f"msg:{event['channel']}:{event['ts']}", "what now?", "Ada")
        assert incoming.multi_user and incoming.platform == "slack" and incoming.received_at == 5.0


class TestThreadToSeed:
    """A thread read from conversations.replies becomes the conversation's first history."""

    def test_roles_names_order_and_bounds(self) -> None:
        """Earlier messages only, the bot's as assistant, people's with their names, last `limit`."""
        thread: list[ThreadMessage] = [
            {"ts": "1.000100", "user": "U2", "text": "Postgres or MySQL?"},
            {"ts": "1.000200", "user": "UBOT", "bot_id": "BBOT", "text": "Postgres."},
            {"ts": "1.000300", "user": "U3", "text": "<@U2> agreed", "subtype": "channel_join"},
            {"ts": "1.000400", "user": "U3", "text": "why?"},
            {"ts": "1.000500", "user": "U1", "text": "<@UBOT> summarise"},
            {"ts": "1.000600", "user": "U2", "text": "later message"},
        ]
        seeded = thread_to_seed(thread, ME, before_ts="1.000500", names={"U2": "ada", "U3": "bo"}, limit=3)
        assert seeded == [
            ChatMessage("user", "Postgres or MySQL?", name="ada"),
            ChatMessage("assistant", "Postgres."),
            ChatMessage("user", "why?", name="bo"),
        ]
        assert thread_to_seed(thread, ME, before_ts="1.000500", names={}, limit=1) == [
            ChatMessage("user", "why?", name="U3")]

    def test_the_bots_words_are_not_interpreted(self) -> None:
        """Seeding never reads meaning into the bot's own messages (such as its reset confirmation):
        a thread a user reset is not seeded at all, by the engine's reset marker."""
        thread: list[ThreadMessage] = [
            {"ts": "1.000100", "user": "U2", "text": "the code is 42"},
            {"ts": "1.000300", "user": "UBOT", "bot_id": "BBOT", "text": RESET_REPLY},
        ]
        assert thread_to_seed(thread, ME, before_ts="1.000500", names={}, limit=50) == [
            ChatMessage("user", "the code is 42", name="U2"), ChatMessage("assistant", RESET_REPLY)]
