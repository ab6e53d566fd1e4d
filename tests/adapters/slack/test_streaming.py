"""Streaming within Slack's limits: edits spaced per message and drawn from the workspace budget (no
429s with 40 replies at once), 429s honoured without losing the final text, long answers split into
several messages, and native streaming with its fallback to edits."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest
import structlog

from adapters.slack import EditPacing
from adapters.slack.bot import SLACK_429_RETRIES
from adapters.slack.sink import SLACK_MAX_CHARS, STREAMING_INDICATOR
from core.engine import ConversationEngine
from tests.adapters.slack.conftest import FAST_PACING, MODEL_A, RigFactory
from tests.fakes.chat_api import Behaviour, FakeChatAPI
from tests.fakes.slack_api import DEFAULT_POST_LIMIT, FakeSlackAPI

# The fake counts Slack's 60-second windows on a clock running 20× fast, and the bot's budget uses
# a 3-second window: Slack's per-minute limits, played out in seconds.
TIME_SCALE = 20.0
CONCURRENT_REPLIES = 40
UPDATE_LIMIT = 50  # chat.update: Tier 3, per minute per workspace
# The 40 replies take ~5 s; bypassing the budget makes slack-sdk sleep out the fake's Retry-After
# (tens of seconds), so past this the test fails with the 429 count rather than at pytest's timeout.
BURST_DEADLINE_S = 25.0
# More 429s in a row than slack-sdk's retries absorb: the sink's own retries (the only ones within a
# turn; core neither retries nor reposts) still make the final edit land in place.
UNABSORBED_429S = (SLACK_429_RETRIES + 1) + 1
HOLD_RETRY_AFTER_S = 1  # the Retry-After of the 429 that must hold back every reply
HOLD_GRACE_S = 0.15  # calls already given their turn before the 429 may still arrive this late
POSTS_PER_S = 5.0  # a channel's chat.postMessage budget in the pacing test, five times Slack's


def paragraphs(total_chars: int) -> str:
    """Plain prose of `total_chars`, with paragraph breaks for the renderer to split on."""
    sentence = "Slack threads keep a conversation in one place, so every answer lands where it was asked. "
    text, n = "", 0
    while len(text) < total_chars:
        n += 1
        text += sentence + ("\n\n" if n % 6 == 0 else "")
    return text[:total_chars]


class TestPacedEdits:
    """chat.update growth: spaced, budgeted, and the final edit always lands."""

    async def test_edits_of_one_message_are_a_second_apart(
        self, slack_rig: RigFactory, chat_api: FakeChatAPI, patient_engine: ConversationEngine
    ) -> None:
        """In-progress updates carry the indicator and come ≥ 1 s apart; the final text is exact."""
        text = paragraphs(400)
        chat_api.script(MODEL_A, Behaviour(text=text, token_delay_s=0.025, chunk_chars=4))  # ~2.5 s
        async with slack_rig(engine=patient_engine, min_edit_interval_s=1.0) as rig:
            payload = await rig.mention("<@UBOT> stream please")
            (message,) = rig.fake.bot_replies("C1", payload["event"]["ts"])
            assert message.text == text
            updates = rig.fake.calls_to("chat.update")
            times = [rig.fake.calls_to("chat.postMessage")[0].at] + [u.at for u in updates[:-1]]
            assert len(updates) >= 2
            assert all(later - earlier >= 0.95 for earlier, later in itertools.pairwise(times))
            assert all(t.endswith(STREAMING_INDICATOR) for t in message.text_history[:-1])

    async def test_forty_concurrent_replies_never_hit_429(
        self, slack_rig: RigFactory, chat_api: FakeChatAPI, patient_engine: ConversationEngine
    ) -> None:
        """40 replies streaming at once in one channel, with Slack's 50/min chat.update limit and its
        per-channel post limit on: every one completes, exact, and the fake never answers 429. The
        edit budget is allocated: a burst's worth of replies grow by edits (each final edit kept for
        it), the rest are delivered by posts; no reply waits in a queue of edits."""
        text = paragraphs(240)
        chat_api.script(MODEL_A, Behaviour(text=text, token_delay_s=0.01, chunk_chars=4))
        fake = FakeSlackAPI(rate_limits={"chat.update": UPDATE_LIMIT, "reactions.add": UPDATE_LIMIT,
                                         "reactions.remove": UPDATE_LIMIT},
                            post_limit=DEFAULT_POST_LIMIT, clock=lambda: time.monotonic() * TIME_SCALE)
        # Scaling time also scales the delay between taking a token and the call reaching the fake
        # 20-fold (a 100 ms hiccup of a busy test machine is 2 s of Slack time), so this run keeps 20%
        # unused instead of the default 10%, and posts a little under the fake's channel rate.
        pacing = EditPacing(per_window=UPDATE_LIMIT, window_s=60.0 / TIME_SCALE, headroom=0.2,
                            shed_after_s=2.0 / TIME_SCALE, posts_per_s=0.8 * TIME_SCALE, post_burst=2)
        async with fake, slack_rig(fake=fake, engine=patient_engine, pacing=pacing, min_edit_interval_s=0.02) as rig:
            payloads = [rig.mention_payload(f"<@UBOT> question {n}") for n in range(CONCURRENT_REPLIES)]
            statuses = await asyncio.gather(*(rig.post(p) for p in payloads))
            assert statuses == [200] * CONCURRENT_REPLIES
            try:
                async with asyncio.timeout(BURST_DEADLINE_S):
                    await rig.bot.wait_idle()
            except TimeoutError:
                pytest.fail(f"replies still running after {BURST_DEADLINE_S} s; "
                            f"the fake answered {fake.rate_limited_count} 429s")
            assert fake.rate_limited == []
            assert all(c.status == 200 for c in fake.calls_to("chat.update"))
            assert ["".join(rig.replies(p)) for p in payloads] == [text] * CONCURRENT_REPLIES
            edited = {c.args["ts"] for c in fake.calls_to("chat.update")}
            edited_replies = [p for p in payloads if any(m.ts in edited for m in
                                                         fake.bot_replies("C1", p["event"]["ts"]))]
            assert 0 < len(edited_replies) <= pacing.bucket().capacity
            for p in payloads:
                if p not in edited_replies:  # delivered by posts: never edited, never a cursor
                    assert all(m.edits == 0 for m in fake.bot_replies("C1", p["event"]["ts"]))
            assert not any(STREAMING_INDICATOR in m.text for m in fake.messages.values())

    async def test_429_retry_after_is_honoured(self, slack_rig: RigFactory, chat_api: FakeChatAPI) -> None:
        """A 429 on chat.update is retried after its Retry-After, and the final text lands."""
        chat_api.script(MODEL_A, Behaviour(text="Rate limits are a fact of life."))
        async with slack_rig() as rig:
            rig.fake.fail_next("chat.update", retry_after=1)
            payload = await rig.mention("<@UBOT> hi")
            assert rig.replies(payload) == ["Rate limits are a fact of life."]
            limited, landed = rig.fake.calls_to("chat.update")
            assert (limited.status, landed.status) == (429, 200)
            assert landed.at - limited.at >= 1.0

    async def test_repeated_429s_never_lose_the_final_edit(
        self, slack_rig: RigFactory, chat_api: FakeChatAPI
    ) -> None:
        """More 429s than slack-sdk's retries absorb: the sink keeps trying (budget, Retry-After)
        until the edit lands, so the reply stays one message."""
        chat_api.script(MODEL_A, Behaviour(text="Still here."))
        async with slack_rig() as rig:
            rig.fake.fail_next("chat.update", retry_after=0, times=UNABSORBED_429S)
            with structlog.testing.capture_logs() as logs:
                payload = await rig.mention("<@UBOT> hi")
            assert rig.replies(payload) == ["Still here."]
            assert len(rig.fake.calls_to("chat.postMessage")) == 1
            assert [c.status for c in rig.fake.calls_to("chat.update")] == [429] * UNABSORBED_429S + [200]
            assert [e["method"] for e in logs if e["event"] == "slack.call_retry"] == [
                "chat.update"] * (UNABSORBED_429S // (SLACK_429_RETRIES + 1))

    async def test_in_progress_edit_429_is_retried_inside_slack_sdk(
        self, slack_rig: RigFactory, chat_api: FakeChatAPI
    ) -> None:
        """A 429 on an in-progress edit is retried by slack-sdk's rate-limit handler after
        Retry-After with the same text, while the answer keeps growing."""
        chat_api.script(MODEL_A, Behaviour(text=paragraphs(600), token_delay_s=0.01, chunk_chars=4))
        async with slack_rig() as rig:
            rig.fake.fail_next("chat.update", retry_after=0)
            await rig.mention("<@UBOT> stream please")
            updates = rig.fake.calls_to("chat.update")
            limited, retried = updates[0], updates[1]
            assert (limited.status, retried.status) == (429, 200)
            assert retried.args == limited.args
            assert retried.args["markdown_text"].endswith(STREAMING_INDICATOR)

    async def test_a_429_holds_back_every_reply_on_every_replica(
        self, slack_rig: RigFactory, chat_api: FakeChatAPI
    ) -> None:
        """One reply's 429 on chat.update pushes the shared workspace bucket back by Retry-After: the
        other replica's reply sends no edit in that time, and both still complete."""
        text = paragraphs(600)
        chat_api.script(MODEL_A, Behaviour(text=text, token_delay_s=0.02, chunk_chars=4))  # ~3 s
        async with FakeSlackAPI() as fake, slack_rig(fake=fake) as one, slack_rig(fake=fake) as two:
            fake.fail_next("chat.update", retry_after=HOLD_RETRY_AFTER_S)
            to_one = one.mention_payload("<@UBOT> first")
            to_two = two.mention_payload("<@UBOT> second", ts=one.next_ts())  # its own thread
            assert await asyncio.gather(one.post(to_one), two.post(to_two)) == [200, 200]
            await asyncio.gather(one.bot.wait_idle(), two.bot.wait_idle())
            assert one.replies(to_one) == [text] and two.replies(to_two) == [text]
            updates = fake.calls_to("chat.update")
            limited = next(c for c in updates if c.status == 429)
            held = [c for c in updates
                    if limited.at + HOLD_GRACE_S < c.at < limited.at + HOLD_RETRY_AFTER_S - HOLD_GRACE_S]
            assert held == []
            assert any(c.at > limited.at + HOLD_RETRY_AFTER_S and c.args["ts"] != limited.args["ts"]
                       for c in updates)  # the other reply was still streaming after the hold

    async def test_continuation_posts_are_paced_per_channel(
        self, slack_rig: RigFactory, chat_api: FakeChatAPI
    ) -> None:
        """A long answer's later messages wait for the channel's chat.postMessage budget."""
        pacing = EditPacing(window_s=FAST_PACING.window_s, shed_after_s=FAST_PACING.shed_after_s,
                            posts_per_s=POSTS_PER_S, post_burst=1)
        chat_api.script(MODEL_A, Behaviour(text=paragraphs(12_000), chunk_chars=1_000))
        async with slack_rig(pacing=pacing) as rig:
            payload = await rig.mention("<@UBOT> write a lot")
            assert "".join(rig.replies(payload)) == paragraphs(12_000)
            posts = [c.at for c in rig.fake.calls_to("chat.postMessage")]
            assert len(posts) >= 4
            assert all(later - earlier >= 0.9 / POSTS_PER_S for earlier, later in itertools.pairwise(posts))

    async def test_ten_thousand_characters_become_several_messages(
        self, slack_rig: RigFactory, chat_api: FakeChatAPI
    ) -> None:
        """Split on clean boundaries in the same thread, each within Slack's limit, nothing lost."""
        text = paragraphs(10_000)
        chat_api.script(MODEL_A, Behaviour(text=text, chunk_chars=150))
        async with slack_rig() as rig:
            payload = await rig.mention("<@UBOT> write a lot")
            replies = rig.replies(payload)
            assert len(replies) >= 3
            assert "".join(replies) == text
            messages = rig.fake.bot_replies("C1", payload["event"]["ts"])
            assert all(len(t) <= SLACK_MAX_CHARS for m in messages for t in m.text_history)
            assert all(m.thread_ts == payload["event"]["ts"] for m in messages)


class TestNativeStreaming:
    """`[slack] streaming = "native"`: chat.startStream / appendStream / stopStream, else edits."""

    async def test_native_stream(self, slack_rig: RigFactory, chat_api: FakeChatAPI) -> None:
        """The reply is one stream: started with the first text, appended, stopped; no edits."""
        text = paragraphs(300)
        chat_api.script(MODEL_A, Behaviour(text=text, token_delay_s=0.005, chunk_chars=4))
        async with slack_rig(streaming="native") as rig:
            payload = await rig.mention("<@UBOT> stream natively")
            (message,) = rig.fake.bot_replies("C1", payload["event"]["ts"])
            assert message.text == text and not message.streaming
            start = rig.fake.calls_to("chat.startStream")[0]
            assert (start.args["recipient_user_id"], start.args["recipient_team_id"]) == ("U1", "T1")
            assert len(rig.fake.calls_to("chat.appendStream")) >= 1
            assert len(rig.fake.calls_to("chat.stopStream")) == 1
            assert rig.fake.calls_to("chat.update") == [] and rig.fake.calls_to("chat.postMessage") == []

    async def test_expired_stream_falls_back_to_edits(self, slack_rig: RigFactory, chat_api: FakeChatAPI) -> None:
        """message_not_in_streaming_state mid-reply: the message is finished with chat.update."""
        text = paragraphs(300)
        chat_api.script(MODEL_A, Behaviour(text=text, token_delay_s=0.01, chunk_chars=4))
        async with slack_rig(streaming="native") as rig:
            payload = rig.mention_payload("<@UBOT> stream natively")
            assert await rig.post(payload) == 200
            await rig.fake.wait_for(lambda: bool(rig.fake.calls_to("chat.startStream")))
            rig.fake.native_streaming_error = "message_not_in_streaming_state"
            await rig.bot.wait_idle()
            assert rig.replies(payload) == [text]
            refused = [c for c in rig.fake.calls if c.response.get("error") == "message_not_in_streaming_state"]
            assert len(refused) == 1  # the stream is given up at the first refusal
            updates = rig.fake.calls_to("chat.update")
            assert updates[-1].args["markdown_text"] == text
            assert all(c.at > refused[0].at for c in updates)
            # The first update carries the text rendered before the fallback; later ones are edits'.
            growing = [c.args["markdown_text"] for c in updates[1:-1]]
            assert growing and all(t.endswith(STREAMING_INDICATOR) for t in growing), \
                "after the fallback the growing text shows the indicator, as any edited reply"

    async def test_stream_not_allowed_falls_back_to_posts(
        self, slack_rig: RigFactory, chat_api: FakeChatAPI
    ) -> None:
        """chat.startStream refused: the reply is posted and edited instead."""
        chat_api.script(MODEL_A, Behaviour(text="Plain edits then."))
        async with slack_rig(streaming="native") as rig:
            rig.fake.fail_next("chat.startStream", status=200, error="not_allowed")
            payload = await rig.mention("<@UBOT> hi")
            assert rig.replies(payload) == ["Plain edits then."]
            assert len(rig.fake.calls_to("chat.postMessage")) == 1

    async def test_stream_refused_for_good_is_not_reposted(
        self, slack_rig: RigFactory, chat_api: FakeChatAPI
    ) -> None:
        """chat.startStream answered channel_not_found: no fallback post either, the reply just stops."""
        chat_api.script(MODEL_A, Behaviour(text="Nowhere to go."))
        async with slack_rig(streaming="native") as rig:
            rig.fake.fail_next("chat.startStream", status=200, error="channel_not_found")
            await rig.mention("<@UBOT> hi")
            assert len(rig.fake.calls_to("chat.startStream")) == 1
            assert rig.fake.calls_to("chat.postMessage") == [] and rig.fake.calls_to("chat.update") == []

    async def test_long_native_answer_splits_without_loss(
        self, slack_rig: RigFactory, chat_api: FakeChatAPI
    ) -> None:
        """Streams only append: at a split the first message is stopped and set by chat.update."""
        text = paragraphs(8_000)
        chat_api.script(MODEL_A, Behaviour(text=text, chunk_chars=120, token_delay_s=0.002))
        async with slack_rig(streaming="native") as rig:
            payload = await rig.mention("<@UBOT> write a lot")
            replies = rig.replies(payload)
            assert len(replies) >= 3 and "".join(replies) == text
            assert not any(m.streaming for m in rig.fake.bot_replies("C1", payload["event"]["ts"]))

    async def test_dm_in_place_uses_edits(self, slack_rig: RigFactory, chat_api: FakeChatAPI) -> None:
        """A DM answered in place has no thread to stream into: posts and edits."""
        chat_api.script(MODEL_A, Behaviour(text="In place."))
        async with slack_rig(streaming="native") as rig:
            payload = await rig.message("hello")
            assert rig.replies(payload) == ["In place."]
            assert rig.fake.calls_to("chat.startStream") == []
