"""Slack under team load (many replies at once in one workspace), on a clock 20× fast with the fake
enforcing Slack's limits: the edit budget is allocated, not queued for; a reply after a burst is
not held up by it; no reply notifies anyone; bad requests and other teams' events get nowhere."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from adapters.slack import EditPacing
from adapters.slack.sink import STREAMING_INDICATOR, ZERO_WIDTH_SPACE, neutralise_mentions
from core.engine import ConversationEngine
from tests.adapters.slack.conftest import MODEL_A, SIGNING_SECRET, RigFactory
from tests.fakes.chat_api import Behaviour, FakeChatAPI
from tests.fakes.slack_api import DEFAULT_POST_LIMIT, FakeSlackAPI, signed_headers

TIME_SCALE = 20.0  # Slack's minute in 3 s
UPDATE_LIMIT = 50  # chat.update, reactions: Tier 3, per minute per workspace
LOOKUP_LIMIT = 100  # users.info: Tier 4
# The bursts: 50 and 200 mentions at once, each in its own channel of one workspace.
BURSTS = (50, 200)
DEADLINE_S = 40.0
# Every mass-mention form Slack turns into a notification.
MASS_MENTIONS = ("<!channel>", "<!here>", "<!everyone>", "<!subteam^S0123>", "<@U0999>", "<@W0999|bob>",
                 "<!here|here>")


def load_fake() -> FakeSlackAPI:
    return FakeSlackAPI(rate_limits={"chat.update": UPDATE_LIMIT, "reactions.add": UPDATE_LIMIT,
                                     "reactions.remove": UPDATE_LIMIT, "users.info": LOOKUP_LIMIT},
                        post_limit=DEFAULT_POST_LIMIT, clock=lambda: time.monotonic() * TIME_SCALE)


def load_pacing() -> EditPacing:
    # 20% headroom: a 100 ms hiccup of a busy test machine is 2 s on the fake's clock.
    return EditPacing(per_window=UPDATE_LIMIT, window_s=60.0 / TIME_SCALE, headroom=0.2,
                      shed_after_s=2.0 / TIME_SCALE, posts_per_s=0.8 * TIME_SCALE, post_burst=2)


class TestBurst:
    """Fifty people ask at once, in fifty channels of one workspace."""

    @pytest.mark.parametrize("burst", BURSTS)
    async def test_burst_is_allocated_and_a_later_reply_is_not_held_up(
        self, slack_rig: RigFactory, chat_api: FakeChatAPI, patient_engine: ConversationEngine, burst: int
    ) -> None:
        """Every reply ends exact with 0 × 429; no more replies grow by edits than the budget keeps a
        final edit for; once the burst's model streams have ended no progress edit is left queued;
        and a question asked right after gets its whole answer with nothing of the burst's before it.
        Redis is pooled like production: 200 replies wait for connections, they do not fail."""
        text = "Here is what I found.\n\n" + "It takes a few sentences to say. " * 12
        chat_api.script(MODEL_A, Behaviour(text=text, token_delay_s=0.01, chunk_chars=6))
        fake = load_fake()
        pacing = load_pacing()
        async with fake, slack_rig(fake=fake, engine=patient_engine, pacing=pacing,
                                   min_edit_interval_s=1.0 / TIME_SCALE) as rig:
            # Each asker is new to the bot: their names are looked up within users.info's budget.
            payloads = [rig.mention_payload(f"<@UBOT> question {n}", channel=f"C{n:03d}", user=f"U{n:03d}")
                        for n in range(burst)]
            assert await asyncio.gather(*(rig.post(p) for p in payloads)) == [200] * burst
            async with asyncio.timeout(DEADLINE_S):
                await chat_api.wait_for_requests(burst, timeout=DEADLINE_S)
                for request in chat_api.requests:
                    await request.finished.wait()
            streams_ended = time.monotonic() * TIME_SCALE
            late = rig.mention_payload("<@UBOT> one more", channel="CLATE")
            assert await rig.post(late) == 200
            async with asyncio.timeout(DEADLINE_S):
                await rig.bot.wait_idle()

            assert fake.rate_limited == []
            for p in [*payloads, late]:
                assert "".join(rig.replies(p)) == text
            updates = fake.calls_to("chat.update")
            edited = {c.args["ts"] for c in updates}
            edited_replies = [p for p in payloads
                              if any(m.ts in edited for m in fake.bot_replies(p["event"]["channel"], p["event"]["ts"]))]
            assert len(edited_replies) <= pacing.bucket().capacity
            late_reply = {m.ts for m in fake.bot_replies("CLATE", late["event"]["ts"])}
            late_updates = [c for c in updates if c.at > streams_ended and c.args["ts"] not in late_reply]
            assert all(not c.args["markdown_text"].endswith(STREAMING_INDICATOR) for c in late_updates), (
                "after the streams ended only final edits remain")
            assert len(late_updates) <= pacing.bucket().capacity
            assert not any(m.text.endswith(STREAMING_INDICATOR) for m in fake.messages.values())


class TestNoMassMentions:
    """Whatever the model says, the bot's messages notify no one."""

    @pytest.mark.parametrize("streaming", ["edits", "native"])
    async def test_model_output_cannot_notify(
        self, slack_rig: RigFactory, chat_api: FakeChatAPI, streaming: str
    ) -> None:
        """Every mention token in the model's answer reaches Slack broken, in posts, edits and streams."""
        answer = "Sure: " + " and ".join(MASS_MENTIONS) + " — also &lt;!channel&gt;. Done."
        chat_api.script(MODEL_A, Behaviour(text=answer, chunk_chars=2, token_delay_s=0.005))
        async with slack_rig(streaming=streaming) as rig:
            payload = await rig.mention("<@UBOT> say it", thread_ts=None)
            sent = [str(c.args.get("markdown_text") or "") for c in rig.fake.calls
                    if c.method in ("chat.postMessage", "chat.update", "chat.startStream",
                                    "chat.appendStream", "chat.stopStream")]
            streamed = "".join(str(c.args.get("markdown_text") or "") for c in rig.fake.calls
                               if c.method in ("chat.startStream", "chat.appendStream", "chat.stopStream"))
            for text in [*sent, streamed, *rig.replies(payload)]:
                for token in MASS_MENTIONS:
                    assert token not in text
                assert "&lt;!channel&gt;" not in text
            final = "".join(rig.replies(payload))
            assert final.replace(ZERO_WIDTH_SPACE, "") == answer, "the text reads the same"

    def test_neutralising_keeps_a_growing_text_a_prefix(self) -> None:
        """Native streams append: the neutralised form of any prefix is a prefix of the whole's."""
        whole = "a <!channel> b <@U1> c &lt;!here&gt; <https://x.org> d <"
        for cut in range(len(whole) + 1):
            assert neutralise_mentions(whole).startswith(neutralise_mentions(whole[:cut]))
        assert neutralise_mentions(neutralise_mentions(whole)) == neutralise_mentions(whole)
        assert "<https://x.org>" in neutralise_mentions(whole), "links are not mentions"


class TestHostileRequests:
    """What reaches the events endpoint from someone other than Slack-for-this-workspace."""

    async def test_bad_bodies_get_a_4xx(self, slack_rig: RigFactory, chat_api: FakeChatAPI) -> None:
        """Signed bodies that are not UTF-8, not JSON, or not an object get a 400, never a 500."""
        async with slack_rig() as rig:
            bodies = [b"\xff\xfe\x00garbage", b"{not json", b'{"type": "event_callback", "event": ',
                      "{\"type\": \"event_callback\", \"text\": \"\udcff\"}".encode("utf-8", "surrogatepass")]
            for body in bodies:
                headers = signed_headers(body, SIGNING_SECRET)
                async with rig.http.post(rig.url, data=body, headers=headers) as response:
                    assert 400 <= response.status < 500, body
            form = b"payload=%7Bnot-json"
            headers = {**signed_headers(form, SIGNING_SECRET), "Content-Type": "application/x-www-form-urlencoded"}
            async with rig.http.post(rig.url, data=form, headers=headers) as response:
                assert 400 <= response.status < 500
            assert chat_api.requests == []
            payload = await rig.mention("<@UBOT> still there?")  # and the bot still answers
            assert rig.replies(payload)

    async def test_another_teams_event_is_dropped(self, slack_rig: RigFactory, chat_api: FakeChatAPI) -> None:
        """An event for a workspace the bot's token does not belong to is acked and ignored."""
        async with slack_rig() as rig:
            payload = rig.mention_payload("<@UBOT> hi from elsewhere")
            payload["team_id"] = payload["context_team_id"] = "T_OTHER"
            for auth in payload["authorizations"]:
                auth["team_id"] = "T_OTHER"
            body = json.dumps(payload).encode()
            async with rig.http.post(rig.url, data=body, headers=signed_headers(body, SIGNING_SECRET)) as response:
                assert response.status == 200
            await rig.bot.wait_idle()
            assert chat_api.requests == [] and rig.fake.calls_to("chat.postMessage") == []
