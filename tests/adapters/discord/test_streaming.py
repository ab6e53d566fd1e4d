"""Answers growing by edits within Discord's limits: 2,000-character splits, edit pacing per channel,
429s and error 30046 absorbed, failures ending in an apology, answers Discord refuses or a moderator
deletes stopped without a repost, footers, and a graceful stop."""

from __future__ import annotations

import asyncio
import re
from itertools import pairwise

import pytest
from redis.asyncio import Redis

from adapters.discord.config import FooterSettings
from adapters.discord.sink import DISCORD_STREAMING_INDICATOR, FINAL_EDIT_ATTEMPTS
from core.engine import APOLOGY_UNAVAILABLE, INTERRUPTED_NOTE
from core.journal import JournalSweeper, ReplyJournal
from core.profile import HistoryLimits
from core.redis_keys import RedisKeys
from core.types import ConversationKey
from tests.adapters.discord.conftest import ALICE, GENERAL, GUILD, WAIT_S, BotStarter, answer_chain, mention
from tests.conftest import EngineFactory
from tests.fakes.chat_api import Behaviour, FakeChatAPI, RecordedRequest
from tests.fakes.discord_api import FakeDiscord

A, B = "test/model-a", "test/model-b"
# The pacer spaces an edit from the *end* of the previous one, so arrivals at the fake are at least
# the interval apart whatever the latency; this only absorbs float rounding of the two clocks' reads.
CLOCK_SLACK_S = 0.001


def long_answer() -> str:
    """About 5,000 characters: numbered lines, with a code block straddling the first split."""
    prose = [f"L{i:03d} The quick brown fox jumps over the lazy dog, sentence number {i}." for i in range(7)]
    code = [f"L{i:03d}     total += compute(value_{i})  # step {i}" for i in range(7, 53)]
    tail = [f"L{i:03d} And so the story continues with yet another line, number {i}." for i in range(53, 90)]
    text = "\n".join(prose) + "\n\n```python\n" + "\n".join(code) + "\n```\n" + "\n".join(tail)
    assert 4800 <= len(text) <= 5200, len(text)
    return text


def slow_answer() -> Behaviour:
    """An answer that streams for seconds: still going whenever a test interferes with it."""
    return Behaviour(text=" ".join(f"word{i}" for i in range(400)), chunk_chars=6, token_delay_s=0.02)


async def abandoned(request: RecordedRequest) -> bool:
    """Whether the bot hung up on this model stream before it ended."""
    await asyncio.wait_for(request.finished.wait(), WAIT_S)
    return request.client_disconnected


def numbered_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if re.match(r"\s*L\d{3} ", line)]


def paced_edit_gaps(fake: FakeDiscord, channel: str) -> list[float]:
    edits = [c for c in fake.calls if c.method == "PATCH" and c.path.startswith(f"/channels/{channel}/messages/")]
    return [b.at - a.at for a, b in pairwise(edits)]


class TestLongAnswers:
    """Past 2,000 characters an answer continues in further messages, nothing lost."""

    async def test_five_thousand_characters_make_three_balanced_messages(
        self, fake: FakeDiscord, start_bot: BotStarter, chat_api: FakeChatAPI
    ) -> None:
        """Three parts, each ≤ 2,000 characters with balanced fences, each replying to the previous
        one, and every line of the answer exactly once, in order."""
        text = long_answer()
        chat_api.script(A, Behaviour(text=text, chunk_chars=40))
        running = await start_bot()
        sent = await fake.send_message_create(channel_id=GENERAL, content="<@1000> tell me a story",
                                              mentions=mention(fake))
        assert await running.outcomes.of(sent["id"]) == "answered"
        parts = [m["content"] for m in answer_chain(fake, GENERAL, sent["id"])]
        assert len(parts) == 3
        assert len(fake.bot_messages(GENERAL)) == 3
        for part in parts:
            assert len(part) <= 2000
            assert part.count("```") % 2 == 0, part
            assert DISCORD_STREAMING_INDICATOR not in part
        assert parts[0].endswith("```") and parts[1].startswith("```python\n")  # closed and reopened
        assert numbered_lines("\n".join(parts)) == numbered_lines(text)
        assert "".join(parts).replace("```python\n", "").replace("```", "").replace("\n", "") == \
            text.replace("```python\n", "").replace("```", "").replace("\n", "")


class TestEditPacing:
    """Edits are spaced per channel, across every reply streaming into it."""

    async def test_ten_concurrent_replies_share_one_channel_interval(
        self, fake: FakeDiscord, start_bot: BotStarter, chat_api: FakeChatAPI
    ) -> None:
        """Ten answers streaming at once into #general: consecutive edits there are never closer
        than the configured interval, and every answer still ends complete."""
        interval = 0.15
        text = " ".join(f"word{i}" for i in range(120))
        chat_api.script(A, Behaviour(text=text, chunk_chars=6, token_delay_s=0.01))
        running = await start_bot(edit_interval_s=interval)
        triggers = [
            await fake.send_message_create(channel_id=GENERAL, content=f"<@1000> question {i}",
                                           mentions=mention(fake))
            for i in range(10)
        ]
        outcomes = await asyncio.gather(*(running.outcomes.of(t["id"]) for t in triggers))
        assert outcomes == ["answered"] * 10
        for trigger in triggers:
            assert [m["content"] for m in answer_chain(fake, GENERAL, trigger["id"])] == [text]
        edits = fake.calls_matching("PATCH", f"/channels/{GENERAL}/messages/")
        assert len(edits) >= 20  # the pacing was exercised: streaming edits plus ten final ones
        assert len({c.path for c in edits}) == 10  # ... by all ten replies
        gaps = paced_edit_gaps(fake, GENERAL)
        assert min(gaps) >= interval - CLOCK_SLACK_S, sorted(gaps)[:5]

    async def test_channels_are_paced_independently(
        self, fake: FakeDiscord, start_bot: BotStarter, chat_api: FakeChatAPI
    ) -> None:
        """A reply in a DM does not wait for #general's budget: while #general's edit slot is held,
        the DM's answer streams and completes; #general's completes once the slot is free."""
        text = " ".join(f"w{i}" for i in range(60))
        chat_api.script(A, Behaviour(text=text, chunk_chars=4, token_delay_s=0.01))
        running = await start_bot(edit_interval_s=0.1)
        dm = fake.dm_channel_id(ALICE)
        async with running.bot.pacer.turn(int(GENERAL)):  # as if an edit there hung
            first = await fake.send_message_create(channel_id=GENERAL, content="<@1000> a", mentions=mention(fake))
            second = await fake.send_message_create(channel_id=dm, content="b")
            assert await running.outcomes.of(second["id"]) == "answered"
            assert fake.calls_matching("PATCH", f"/channels/{dm}/messages/")  # it grew by edits
            assert not fake.calls_matching("PATCH", f"/channels/{GENERAL}/messages/")
        assert await running.outcomes.of(first["id"]) == "answered"
        assert [m["content"] for m in answer_chain(fake, GENERAL, first["id"])] == [text]


class TestRateLimits:
    """429s and error 30046 never cost the answer."""

    async def test_429_on_edit_still_completes_and_slows_the_channel(
        self, fake: FakeDiscord, start_bot: BotStarter, chat_api: FakeChatAPI
    ) -> None:
        """Two 429s on an edit: discord.py waits and retries, the answer completes, and the channel's
        edits are spaced twice as far apart from then on."""
        interval = 0.05
        text = " ".join(f"token{i}" for i in range(80))
        chat_api.script(A, Behaviour(text=text, chunk_chars=6, token_delay_s=0.01))
        running = await start_bot(edit_interval_s=interval)
        fake.fail_next("PATCH", f"/channels/{GENERAL}/messages/", times=2, retry_after=0.05)
        sent = await fake.send_message_create(channel_id=GENERAL, content="<@1000> go", mentions=mention(fake))
        assert await running.outcomes.of(sent["id"]) == "answered"
        assert [m["content"] for m in answer_chain(fake, GENERAL, sent["id"])] == [text]
        assert fake.rate_limited_count == 2
        assert running.bot.pacer.slowdown(int(GENERAL)) == 2.0
        edits = fake.calls_matching("PATCH", f"/channels/{GENERAL}/messages/")
        first_429 = next(i for i, c in enumerate(edits) if c.status == 429)
        # From discord.py's in-place retry on, the channel's edits are twice as far apart.
        paced_after = edits[first_429 + 2:]
        assert len(paced_after) >= 3
        assert min(b.at - a.at for a, b in pairwise(paced_after)) >= 2 * interval - CLOCK_SLACK_S

    async def test_error_30046_continues_in_a_new_message(
        self, fake: FakeDiscord, start_bot: BotStarter, chat_api: FakeChatAPI
    ) -> None:
        """When Discord refuses further edits of a message, the answer moves to a new reply and the
        stale copy goes away: one complete answer, nothing shown twice."""
        text = " ".join(f"piece{i}" for i in range(60))
        chat_api.script(A, Behaviour(text=text, chunk_chars=6, token_delay_s=0.01))
        running = await start_bot()
        fake.fail_next("PATCH", f"/channels/{GENERAL}/messages/", status=400, code=30046)
        sent = await fake.send_message_create(channel_id=GENERAL, content="<@1000> go", mentions=mention(fake))
        assert await running.outcomes.of(sent["id"]) == "answered"
        [answer] = fake.bot_messages(GENERAL)
        assert answer["content"] == text
        assert answer["message_reference"]["message_id"] == sent["id"]
        assert len(fake.deleted_message_ids) == 1 and fake.deleted_message_ids[0] != answer["id"]
        assert fake.edit_counts.get(answer["id"], 0) >= 1  # editing carried on in the new message


class TestFailures:
    """When no model answers, the user gets an apology and never a placeholder."""

    async def test_all_models_failing_leaves_an_apology(
        self, fake: FakeDiscord, start_bot: BotStarter, chat_api: FakeChatAPI
    ) -> None:
        """Both models 503: one message, the apology, and it never showed anything else."""
        chat_api.script(A, Behaviour(kind="status", status=503))
        chat_api.script(B, Behaviour(kind="status", status=503))
        running = await start_bot()
        sent = await fake.send_message_create(channel_id=GENERAL, content="<@1000> hi", mentions=mention(fake))
        assert await running.outcomes.of(sent["id"]) == "failed"
        [answer] = answer_chain(fake, GENERAL, sent["id"])
        assert answer["content"] == APOLOGY_UNAVAILABLE
        assert fake.content_history[answer["id"]] == [APOLOGY_UNAVAILABLE]
        assert len(fake.bot_messages(GENERAL)) == 1
        assert {r.model for r in chat_api.requests} == {A, B}


class TestFooters:
    """The small note under an answer, per the bot's settings."""

    async def test_fallback_is_mentioned_without_the_model_name_by_default(
        self, fake: FakeDiscord, start_bot: BotStarter, chat_api: FakeChatAPI
    ) -> None:
        """Model A down, model B answers: "answered by a fallback model", no model name."""
        chat_api.script(A, Behaviour(kind="status", status=503))
        chat_api.script(B, Behaviour(text="From the backup."))
        running = await start_bot()
        sent = await fake.send_message_create(channel_id=GENERAL, content="<@1000> hi", mentions=mention(fake))
        assert await running.outcomes.of(sent["id"]) == "answered"
        [answer] = answer_chain(fake, GENERAL, sent["id"])
        assert answer["content"] == "From the backup.\n\n-# answered by a fallback model"

    async def test_model_name_when_enabled(
        self, fake: FakeDiscord, start_bot: BotStarter, chat_api: FakeChatAPI
    ) -> None:
        """`footer_model`: every answer names its model."""
        chat_api.script(A, Behaviour(text="Hi."))
        running = await start_bot(footer=FooterSettings(show_model=True))
        sent = await fake.send_message_create(channel_id=GENERAL, content="<@1000> hi", mentions=mention(fake))
        assert await running.outcomes.of(sent["id"]) == "answered"
        [answer] = answer_chain(fake, GENERAL, sent["id"])
        assert answer["content"] == "Hi.\n\n-# model: `test/model-a`"

    async def test_trimmed_context_is_mentioned(
        self, fake: FakeDiscord, start_bot: BotStarter, make_engine: EngineFactory, chat_api: FakeChatAPI
    ) -> None:
        """When earlier turns no longer fit the prompt budget, the answer says so."""
        chat_api.script(A, Behaviour(text="Long story noted."), Behaviour(text="Short answer."))
        engine = make_engine(platform="discord", history=HistoryLimits(max_prompt_tokens=80))
        running = await start_bot(engine=engine)
        dm = fake.dm_channel_id(ALICE)
        first = await fake.send_message_create(channel_id=dm, content="a long story " * 30)
        assert await running.outcomes.of(first["id"]) == "answered"
        second = await fake.send_message_create(channel_id=dm, content="and?")
        assert await running.outcomes.of(second["id"]) == "answered"
        assert [m["content"] for m in fake.bot_messages(dm)] == [
            "Long story noted.", "Short answer.\n\n-# older messages were left out to fit the model's context"]

    async def test_no_footer_for_a_plain_answer(
        self, fake: FakeDiscord, start_bot: BotStarter, chat_api: FakeChatAPI
    ) -> None:
        """The default settings add nothing when the first model answered with full context."""
        chat_api.script(A, Behaviour(text="Hi."))
        running = await start_bot()
        sent = await fake.send_message_create(channel_id=GENERAL, content="<@1000> hi", mentions=mention(fake))
        assert await running.outcomes.of(sent["id"]) == "answered"
        assert [m["content"] for m in answer_chain(fake, GENERAL, sent["id"])] == ["Hi."]


class TestStop:
    """Shutdown finishes the replies in flight before disconnecting."""

    async def test_stop_lets_the_answer_finish(
        self, fake: FakeDiscord, start_bot: BotStarter, chat_api: FakeChatAPI
    ) -> None:
        """stop() mid-answer: the answer still completes, then the bot is disconnected and ignores
        anything new."""
        text = " ".join(f"part{i}" for i in range(50))
        chat_api.script(A, Behaviour(text=text, chunk_chars=5, token_delay_s=0.01))
        running = await start_bot()
        dm = fake.dm_channel_id(ALICE)
        sent = await fake.send_message_create(channel_id=dm, content="long one please")
        await fake.wait_for(lambda: bool(fake.bot_messages(dm)), WAIT_S)
        assert chat_api.open_streams == 1  # genuinely mid-answer
        await running.bot.stop()
        assert await running.outcomes.of(sent["id"]) == "answered"
        assert [m["content"] for m in fake.bot_messages(dm)] == [text]
        assert not running.bot.ready and running.bot.client.is_closed()

    async def test_replies_cut_short_in_one_channel_all_end_final(
        self, fake: FakeDiscord, start_bot: BotStarter, chat_api: FakeChatAPI
    ) -> None:
        """Ten answers streaming into one channel outlive a short grace: each still ends in its final
        state (the interruption note, no streaming indicator) although their final edits would
        queue far longer than the shutdown allows if spaced, and each is reported "interrupted"."""
        chat_api.script(A, slow_answer())
        interval = 0.5  # ten final edits this far apart would take 5 s
        running = await start_bot(edit_interval_s=interval, stop_grace_s=0.2)
        triggers = [
            await fake.send_message_create(channel_id=GENERAL, content=f"<@1000> question {i}",
                                           mentions=mention(fake))
            for i in range(10)
        ]
        await fake.wait_for(lambda: len(fake.bot_messages(GENERAL)) == 10, WAIT_S)
        assert chat_api.open_streams == 10  # genuinely mid-answer
        await running.bot.stop()
        outcomes = await asyncio.gather(*(running.outcomes.of(t["id"]) for t in triggers))
        assert outcomes == ["interrupted"] * 10
        for trigger in triggers:
            [answer] = answer_chain(fake, GENERAL, trigger["id"])
            assert answer["content"].endswith(INTERRUPTED_NOTE), answer["content"][-60:]
            assert DISCORD_STREAMING_INDICATOR not in answer["content"]
        last_edit_at: dict[str, float] = {}
        for call in fake.calls_matching("PATCH", f"/channels/{GENERAL}/messages/"):
            last_edit_at[call.path] = call.at
        assert len(last_edit_at) == 10
        assert max(last_edit_at.values()) - min(last_edit_at.values()) < interval  # not spaced
        assert running.bot.client.is_closed()


class TestUndeliverable:
    """An answer Discord refuses for good stops at once: no retry, no repost, not remembered."""

    @pytest.mark.parametrize(("status", "code"), [
        (403, 50013),  # Missing Permissions
        (404, 10003),  # Unknown Channel
        (400, 50083),  # archived thread
    ])
    async def test_refused_post_stops_the_reply(
        self, fake: FakeDiscord, start_bot: BotStarter, chat_api: FakeChatAPI, redis: Redis,
        keys: RedisKeys, status: int, code: int,
    ) -> None:
        """The first post is refused: one request only, nothing shown, the model stream abandoned,
        the turn "failed" and not saved."""
        chat_api.script(A, slow_answer())
        running = await start_bot()
        fake.fail_next("POST", f"/channels/{GENERAL}/messages", status=status, code=code)
        sent = await fake.send_message_create(channel_id=GENERAL, content="<@1000> hi", mentions=mention(fake))
        assert await running.outcomes.of(sent["id"]) == "failed"
        assert fake.bot_messages(GENERAL) == []
        assert [c.status for c in fake.calls_matching("POST", f"/channels/{GENERAL}/messages")] == [status]
        assert await abandoned(chat_api.requests[0])
        chain = ConversationKey("discord", GUILD, GENERAL, sent["id"])
        assert await redis.exists(keys.history("testbot", chain)) == 0

    async def test_reply_refused_without_read_message_history_is_posted_plainly(
        self, fake: FakeDiscord, start_bot: BotStarter, chat_api: FakeChatAPI
    ) -> None:
        """Discord refuses the reply arrow (160002): the answer is posted without one, and so are
        its further parts, without asking again; nothing is lost."""
        text = long_answer()
        chat_api.script(A, Behaviour(text=text, chunk_chars=40))
        running = await start_bot()
        fake.fail_next("POST", f"/channels/{GENERAL}/messages", status=400, code=160002)
        sent = await fake.send_message_create(channel_id=GENERAL, content="<@1000> story", mentions=mention(fake))
        assert await running.outcomes.of(sent["id"]) == "answered"
        posts = fake.calls_matching("POST", f"/channels/{GENERAL}/messages")
        assert [c.status for c in posts] == [400, 200, 200, 200]
        assert "message_reference" in posts[0].json
        assert not any("message_reference" in c.json for c in posts[1:])
        parts = [m["content"] for m in fake.bot_messages(GENERAL)]
        assert len(parts) == 3 and numbered_lines("\n".join(parts)) == numbered_lines(text)


class TestDeletedAnswers:
    """A moderator's deletion is respected; a final edit that merely failed is redone in place."""

    async def test_answer_deleted_mid_stream_is_not_reposted(
        self, fake: FakeDiscord, start_bot: BotStarter, chat_api: FakeChatAPI, redis: Redis,
        keys: RedisKeys,
    ) -> None:
        """The next edit meets 404/10008: the reply stops there, with one 404 and no new post, the
        model stream is abandoned and the turn is not saved."""
        chat_api.script(A, slow_answer())
        running = await start_bot()
        sent = await fake.send_message_create(channel_id=GENERAL, content="<@1000> hi", mentions=mention(fake))
        await fake.wait_for(lambda: bool(fake.bot_messages(GENERAL)), WAIT_S)
        [answer] = fake.bot_messages(GENERAL)
        await fake.delete_message(answer["id"])
        assert await running.outcomes.of(sent["id"]) == "failed"
        assert fake.bot_messages(GENERAL) == []
        assert len(fake.calls_matching("POST", f"/channels/{GENERAL}/messages")) == 1
        edits = fake.calls_matching("PATCH", f"/channels/{GENERAL}/messages/")
        assert [c.status for c in edits if c.status != 200] == [404]
        assert await abandoned(chat_api.requests[0])
        chain = ConversationKey("discord", GUILD, GENERAL, sent["id"])
        assert await redis.exists(keys.history("testbot", chain)) == 0

    async def test_failed_final_edit_is_left_to_the_journal_not_reposted(
        self, fake: FakeDiscord, start_bot: BotStarter, chat_api: FakeChatAPI, make_engine: EngineFactory,
        redis: Redis, keys: RedisKeys,
    ) -> None:
        """The final edit fails (not for good): nothing is posted anew; the turn is deferred to the
        reply journal, whose sweeper makes the one answer show its final text, in place."""
        chat_api.script(A, Behaviour(text="A short answer.", chunk_chars=100))
        journal = ReplyJournal(redis, keys)
        running = await start_bot(engine=make_engine(platform="discord", journal=journal))
        fake.fail_next("PATCH", f"/channels/{GENERAL}/messages/", status=400, times=FINAL_EDIT_ATTEMPTS)
        sent = await fake.send_message_create(channel_id=GENERAL, content="<@1000> hi", mentions=mention(fake))
        assert await running.outcomes.of(sent["id"]) == "deferred"
        [answer] = fake.bot_messages(GENERAL)
        assert answer["content"].endswith(DISCORD_STREAMING_INDICATOR)
        assert await JournalSweeper(journal, {"testbot": running.bot.finaliser()}).sweep() == 1
        [answer] = fake.bot_messages(GENERAL)
        assert answer["content"] == "A short answer."
        assert answer["message_reference"]["message_id"] == sent["id"]
        assert fake.deleted_message_ids == []
